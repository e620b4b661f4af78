//! A compact description of constant-pool vectors: a pattern of non-zero runs repeated with a
//! period, zero elsewhere (the masks, diagonals and per-element coefficient vectors of the
//! channel layout are a few runs per image, tiled over the images side by side).
//!
//! Contract: [`Tiled::of`] finds a description of any vector, and [`Tiled::expand`] gives back
//! exactly the same vector, bit for bit (only `+0.0` is treated as the implicit filler; `-0.0`
//! and `NaN` are written out). The text form, read and written by the HE printer and parser, is
//!
//! ```text
//! tile(len = 8192, period = 1024, count = 8) {0: [0.5, 1.0 * 28], 40: [-2.0]}
//! ```
//!
//! meaning: a vector of `len` zeros, then for each repetition `r < count` and each run
//! `start: [items]`, the items written from slot `r * period + start` on; an item `v * k`
//! stands for `k` copies of `v`. Runs are sorted, do not overlap and end within the period;
//! `period * count <= len`.

/// One run of a [`Tiled`] vector: items from `start` on, each `(value, repeat)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Offset of the first item within the period.
    pub start: usize,
    /// The values, each repeated the given number of times (at least 1).
    pub items: Vec<(f64, usize)>,
}

impl Run {
    /// Slots the run covers (saturating).
    pub fn len(&self) -> usize {
        self.items
            .iter()
            .fold(0usize, |a, &(_, k)| a.saturating_add(k))
    }

    /// True when the run covers no slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A vector described as runs repeated with a period (see the module note).
#[derive(Clone, Debug, PartialEq)]
pub struct Tiled {
    /// Length of the vector.
    pub len: usize,
    /// Distance between repetitions.
    pub period: usize,
    /// Number of repetitions.
    pub count: usize,
    /// The runs of one repetition, sorted by start.
    pub runs: Vec<Run>,
}

/// Zero runs shorter than this inside non-zero data are written out rather than splitting the
/// run (a new run costs its `start:` and brackets).
const MIN_GAP: usize = 4;

fn is_fill(x: f64) -> bool {
    x.to_bits() == 0
}

impl Tiled {
    /// The description of `v`: the shortest period `p` (a power of two) whose first `count >= 2`
    /// repetitions make up `v` followed only by zeros, or the whole vector once.
    pub fn of(v: &[f64]) -> Tiled {
        let n = v.len();
        let (period, count) = best_period(v);
        let runs = runs_of(&v[..period.min(n)]);
        Tiled {
            len: n,
            period,
            count,
            runs,
        }
    }

    /// Checks the structural rules; returns a message for the first broken one.
    pub fn check(&self) -> Result<(), String> {
        if self.count > 0
            && self
                .period
                .checked_mul(self.count)
                .is_none_or(|t| t > self.len)
        {
            return Err(format!(
                "period {} x count {} exceeds the length {}",
                self.period, self.count, self.len
            ));
        }
        let mut end = 0;
        for r in &self.runs {
            if r.start < end {
                return Err(format!("run at {} overlaps the previous run", r.start));
            }
            if r.items.iter().any(|&(_, k)| k == 0) {
                return Err(format!("run at {} has an item repeated 0 times", r.start));
            }
            end = r
                .items
                .iter()
                .try_fold(r.start, |a, &(_, k)| a.checked_add(k))
                .filter(|&e| e <= self.period)
                .ok_or_else(|| {
                    format!("run at {} ends past the period {}", r.start, self.period)
                })?;
            if end > self.period {
                return Err(format!(
                    "run at {} ends at {end}, past the period {}",
                    r.start, self.period
                ));
            }
        }
        Ok(())
    }

    /// The vector described; `None` if the description breaks the rules of [`Tiled::check`].
    pub fn expand(&self) -> Option<Vec<f64>> {
        self.check().ok()?;
        let mut v = vec![0.0; self.len];
        for r in 0..self.count {
            for run in &self.runs {
                let mut at = r * self.period + run.start;
                for &(x, k) in &run.items {
                    v[at..at + k].fill(x);
                    at += k;
                }
            }
        }
        Some(v)
    }

    /// Values written out in the text form (items, not slots): a measure of its size.
    pub fn written(&self) -> usize {
        self.runs.iter().map(|r| r.items.len() + 1).sum()
    }
}

/// `(period, count)`: the smallest power-of-two period whose leading repetitions (at least 2)
/// make up `v` with only zeros after them; `(len, 1)` if none does.
fn best_period(v: &[f64]) -> (usize, usize) {
    let n = v.len();
    let mut p = 1;
    while p <= n / 2 {
        // Leading repetitions of v[..p].
        let mut k = 1;
        'reps: while (k + 1) * p <= n {
            let (a, b) = (&v[..p], &v[k * p..(k + 1) * p]);
            for (x, y) in a.iter().zip(b) {
                if x.to_bits() != y.to_bits() {
                    break 'reps;
                }
            }
            k += 1;
        }
        if k >= 2 && v[k * p..].iter().all(|&x| is_fill(x)) {
            return (p, k);
        }
        p *= 2;
    }
    (n, usize::from(n > 0))
}

/// Runs of one period: maximal stretches of non-filler values, merging gaps shorter than
/// [`MIN_GAP`], with equal neighbours collapsed into `(value, repeat)`.
fn runs_of(v: &[f64]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < v.len() {
        if is_fill(v[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        // Extend while the next non-filler value is within MIN_GAP.
        loop {
            let mut j = end;
            while j < v.len() && is_fill(v[j]) && j - end < MIN_GAP {
                j += 1;
            }
            if j < v.len() && !is_fill(v[j]) {
                end = j + 1;
            } else {
                break;
            }
        }
        let mut items: Vec<(f64, usize)> = Vec::new();
        for &x in &v[start..end] {
            match items.last_mut() {
                Some((y, k)) if y.to_bits() == x.to_bits() => *k += 1,
                _ => items.push((x, 1)),
            }
        }
        runs.push(Run { start, items });
        i = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &[f64]) -> Tiled {
        let t = Tiled::of(v);
        t.check().unwrap();
        let back = t.expand().unwrap();
        assert_eq!(back.len(), v.len());
        for (a, b) in back.iter().zip(v) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        t
    }

    #[test]
    fn tiled_masks_compress() {
        // A 28-slot mask and two coefficients in a 64-slot image, 8 images.
        let mut v = vec![0.0; 512];
        for img in 0..8 {
            for j in 0..28 {
                v[img * 64 + 3 + j] = 1.0;
            }
            v[img * 64 + 40] = 0.25;
            v[img * 64 + 42] = -0.0;
        }
        let t = round_trip(&v);
        assert_eq!((t.period, t.count), (64, 8));
        assert_eq!(t.runs.len(), 2);
        assert_eq!(t.runs[0].items, vec![(1.0, 28)]);
        assert!(t.written() < 10);
    }

    #[test]
    fn partial_batches_and_irregular_vectors() {
        // Three of four images filled: the tail is zero.
        let mut v = vec![0.0; 64];
        for img in 0..3 {
            v[img * 16 + 1] = 2.0;
            v[img * 16 + 2] = 3.5;
        }
        let t = round_trip(&v);
        assert_eq!((t.period, t.count), (16, 3));
        // No period: written once.
        let w: Vec<f64> = (0..50).map(|i| (i * i % 7) as f64 - 3.0).collect();
        let t = round_trip(&w);
        assert_eq!((t.period, t.count), (50, 1));
        // Edge cases.
        round_trip(&[]);
        round_trip(&[0.0; 9]);
        round_trip(&[f64::NAN, 1.0, f64::INFINITY, -0.0]);
        // A vector whose second half differs is not periodic.
        let mut u = vec![1.0; 32];
        u[20] = 2.0;
        round_trip(&u);
    }

    #[test]
    fn bad_descriptions_are_refused() {
        let t = Tiled {
            len: 8,
            period: 4,
            count: 3,
            runs: vec![],
        };
        assert!(t.expand().is_none());
        let t = Tiled {
            len: 8,
            period: 4,
            count: 2,
            runs: vec![Run {
                start: 2,
                items: vec![(1.0, 3)],
            }],
        };
        assert!(t.check().unwrap_err().contains("past the period"));
        let t = Tiled {
            len: 8,
            period: 4,
            count: 2,
            runs: vec![Run {
                start: 1,
                items: vec![(1.0, usize::MAX), (2.0, usize::MAX)],
            }],
        };
        assert!(t.check().unwrap_err().contains("past the period"));
        let t = Tiled {
            len: 8,
            period: 4,
            count: 2,
            runs: vec![
                Run {
                    start: 0,
                    items: vec![(1.0, 2)],
                },
                Run {
                    start: 1,
                    items: vec![(1.0, 1)],
                },
            ],
        };
        assert!(t.check().unwrap_err().contains("overlaps"));
    }
}
