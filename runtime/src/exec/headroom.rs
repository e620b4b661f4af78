//! How far a run may get ahead of its schedule without holding more than the schedule's peak.
//!
//! The schedule (a plan's memory-aware order, or the topological order) has a memory profile:
//! the bytes of live values at each position, inputs alive from the start, a value counted
//! from its own position until its last user's. Its maximum is the plan's estimate. A parallel
//! run starts nodes before their position; each such result is an *extra* that the schedule
//! does not hold until it reaches that position. Starting a node at position `q` while the
//! schedule has only reached the frontier `f` is safe when, at every position in `[f, q)`, the
//! profile plus the extras alive then (at most the current ones plus this result) stays within
//! the cap. Extras stop counting once the frontier passes their position (the profile counts
//! them from there on) or when they are freed.
//!
//! With the cap at the profile's peak the run holds what the plan estimated, up to the sizes
//! that the model and the backend agree on (one size function, [`hecc_ir::he::Type::bytes`]),
//! while everything the profile leaves room for still runs in parallel.

use hecc_ir::he::{live_profile, Module};
use std::collections::BTreeMap;

/// The schedule's memory profile and the extras of the run so far.
pub(crate) struct Headroom {
    /// Bytes the profile plus extras may reach.
    cap: u64,
    /// The profile's peak.
    peak: u64,
    /// Segment tree of the profile's maxima (leaves at `size..size + len`).
    tree: Vec<u64>,
    size: usize,
    /// Results made ahead of the frontier and still alive: `(position, tie) -> bytes`.
    ahead: BTreeMap<(u32, u32), u64>,
    ahead_bytes: u64,
}

impl Headroom {
    /// The profile ([`hecc_ir::he::live_profile`], the memory model the plan's estimate comes
    /// from) of the order given by `priority` (`(position, tie)` per node id, ties greater than
    /// 0 for nodes outside the schedule) over `len` positions, in a ring of degree `2^log_n`.
    /// `cap`: `None` = the profile's peak plus `slack` of it.
    pub(crate) fn new(
        m: &Module,
        priority: &[(u32, u32)],
        len: usize,
        log_n: u32,
        cap: Option<u64>,
        slack: f64,
    ) -> Headroom {
        // Positions without a node of the module hold an id that is none (they compute nothing).
        let mut order: Vec<u32> = vec![u32::MAX; len];
        for v in m.ids() {
            if let Some(&(p, 0)) = priority.get(v.0 as usize) {
                if let Some(slot) = order.get_mut(p as usize) {
                    *slot = v.0;
                }
            }
        }
        let profile: Vec<u64> = live_profile(m, &order, log_n)
            .iter()
            .map(|l| l.bytes)
            .collect();
        Headroom::from_profile(&profile, cap, slack)
    }

    /// The headroom of a memory profile (bytes live at each position); `cap` as in
    /// [`Headroom::new`].
    fn from_profile(profile: &[u64], cap: Option<u64>, slack: f64) -> Headroom {
        let peak = profile.iter().copied().max().unwrap_or(0);
        let size = profile.len().next_power_of_two().max(1);
        let mut tree = vec![0u64; 2 * size];
        tree[size..size + profile.len()].copy_from_slice(profile);
        for i in (1..size).rev() {
            tree[i] = tree[2 * i].max(tree[2 * i + 1]);
        }
        let cap = cap.unwrap_or_else(|| peak.saturating_add((peak as f64 * slack) as u64));
        Headroom {
            cap,
            peak,
            tree,
            size,
            ahead: BTreeMap::new(),
            ahead_bytes: 0,
        }
    }

    /// The profile's peak (what the schedule alone holds at most).
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// The largest profile value over positions `[from, to)`.
    fn range_max(&self, from: usize, to: usize) -> u64 {
        let (mut lo, mut hi) = (from + self.size, to.min(self.size) + self.size);
        let mut best = 0;
        while lo < hi {
            if lo & 1 == 1 {
                best = best.max(self.tree[lo]);
                lo += 1;
            }
            if hi & 1 == 1 {
                hi -= 1;
                best = best.max(self.tree[hi]);
            }
            lo /= 2;
            hi /= 2;
        }
        best
    }

    /// Whether a node at `key` may start now, with the schedule's frontier at `frontier` and
    /// `pending` bytes of results already admitted ahead of it in this wavefront. Nodes at or
    /// behind the frontier, and nodes outside the schedule, always may.
    pub(crate) fn allows(&self, frontier: usize, key: (u32, u32), pending: u64) -> bool {
        let pos = key.0 as usize;
        if pos <= frontier || key.1 != 0 {
            return true;
        }
        self.ahead_bytes
            .saturating_add(pending)
            .saturating_add(self.range_max(frontier, pos))
            <= self.cap
    }

    /// A result made at `key` while the frontier was at `frontier`.
    pub(crate) fn made(&mut self, frontier: usize, key: (u32, u32), bytes: u64) {
        if key.0 as usize > frontier && key.1 == 0 {
            self.ahead_bytes += bytes;
            self.ahead.insert(key, bytes);
        }
    }

    /// The value at `key` was freed.
    pub(crate) fn freed(&mut self, key: (u32, u32)) {
        if let Some(b) = self.ahead.remove(&key) {
            self.ahead_bytes = self.ahead_bytes.saturating_sub(b);
        }
    }

    /// The frontier moved to `frontier`: results at earlier positions are the profile's now.
    pub(crate) fn advance(&mut self, frontier: usize) {
        while let Some((&key, &b)) = self.ahead.first_key_value() {
            if key.0 as usize >= frontier {
                break;
            }
            self.ahead.remove(&key);
            self.ahead_bytes = self.ahead_bytes.saturating_sub(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_maxima_match_a_scan() {
        let len: usize = 37;
        let profile: Vec<u64> = (0..len as u64).map(|i| (i * 7919) % 101).collect();
        let h = Headroom::from_profile(&profile, Some(0), 0.0);
        for from in 0..len {
            for to in from..=len {
                let want = profile[from..to].iter().copied().max().unwrap_or(0);
                assert_eq!(h.range_max(from, to), want, "[{from}, {to})");
            }
        }
    }

    #[test]
    fn extras_count_until_the_frontier_passes_them_or_they_are_freed() {
        let mut h = Headroom::from_profile(&[60, 10, 20, 0], Some(100), 0.0);
        // Profile [60, 10, 20, 0]: at frontier 0, a 30-byte result at position 2 would sit on
        // top of position 0's 60 bytes (90 <= 100); a second one would not fit.
        assert!(h.allows(0, (2, 0), 0));
        h.made(0, (2, 0), 30);
        assert!(!h.allows(0, (3, 0), 30));
        assert!(h.allows(0, (0, 0), 1000), "the frontier itself always runs");
        assert!(
            h.allows(0, (3, 5), 1000),
            "nodes outside the schedule always run"
        );
        h.advance(1);
        assert!(h.allows(1, (3, 0), 30), "20 + 30 + 30 at positions 1 and 2");
        h.advance(3);
        assert_eq!(h.ahead_bytes, 0);
        h.made(3, (5, 0), 8);
        h.freed((5, 0));
        assert_eq!(h.ahead_bytes, 0);
    }
}
