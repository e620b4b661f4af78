//! Splitting wide dense layers into chunks, so a run need not hold all their operands at once.
//!
//! A dense layer lowers to several `mac` nodes over one shared operand list (a convolution of
//! the channel layout: every output channel sums the same masked, rotated copies of its input
//! channels). Every operand stays alive until the last of those nodes has run, so the layer's
//! peak is its whole operand list: 4,608 ciphertexts of 10 MiB for SqueezeNet's `conv2` at
//! `N = 2^16`. [`split_wide_macs`] rewrites each member as a chain of additions of partial
//! `mac`s over consecutive chunks of the list; the members' partial `mac`s over one chunk
//! share that chunk, so an order that computes a chunk's operands and then its partial sums
//! lets the chunk die before the next one is made.
//!
//! Contract: the result computes the same ciphertexts bit for bit (a `mac` is an exact sum of
//! integer multiples of its operands modulo each prime, and so is a sum of partial `mac`s with
//! the same encoded coefficients); types, levels and scales are unchanged; the bias, if any,
//! goes to the first chunk. Only groups of at least two `mac`s sharing an operand list longer
//! than the chunk are split.

use hecc_ir::he::{HeError, Module, Op, ValueId};
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

/// What [`split_wide_macs`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Groups of `mac`s sharing an operand list that were split.
    pub groups: usize,
    /// `mac` nodes replaced.
    pub macs: usize,
    /// Nodes added (partial `mac`s and additions).
    pub added: usize,
}

/// Splits every `mac` that shares its operand list (longer than `chunk`) with another `mac`
/// into partial `mac`s of at most `chunk` operands, summed in order.
pub fn split_wide_macs(m: &mut Module, chunk: usize) -> Result<SplitStats, HeError> {
    let chunk = chunk.max(1);
    let groups = wide_groups(m, chunk);
    split_groups(m, &groups, chunk)
}

/// [`split_wide_macs`] on a copy of `m`, made only when there is something to split (`None`
/// otherwise): the compiler compares both circuits without copying ones that never change.
pub fn split_wide_macs_copy(
    m: &Module,
    chunk: usize,
) -> Result<Option<(Module, SplitStats)>, HeError> {
    let chunk = chunk.max(1);
    let groups = wide_groups(m, chunk);
    if groups.is_empty() {
        return Ok(None);
    }
    let mut out = m.clone();
    let st = split_groups(&mut out, &groups, chunk)?;
    Ok(Some((out, st)))
}

/// The groups of at least two `mac`s over one operand set longer than `chunk`, in order of
/// their first member. Members may list the same operands in different orders; their terms
/// are chunked in operand id order so every member's chunks are the same.
fn wide_groups(m: &Module, chunk: usize) -> Vec<Vec<ValueId>> {
    let mut groups: HashMap<Vec<ValueId>, Vec<ValueId>> = HashMap::new();
    for v in m.ids() {
        if let Some(Op::Mac(_)) = m.node(v).map(|n| &n.op) {
            let mut ops = m.operands(v);
            if ops.len() > chunk {
                ops.sort_unstable();
                groups.entry(ops).or_default().push(v);
            }
        }
    }
    let mut groups: Vec<Vec<ValueId>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort_by_key(|g| g[0]);
    groups
}

fn split_groups(
    m: &mut Module,
    groups: &[Vec<ValueId>],
    chunk: usize,
) -> Result<SplitStats, HeError> {
    // Each member's terms in operand id order (the same chunks for every member).
    type Work = (
        ValueId,
        Vec<(ValueId, f64)>,
        Option<f64>,
        hecc_ir::he::LogScale,
    );
    let mut work: Vec<Work> = Vec::new();
    for members in groups {
        for &v in members {
            let Some(Op::Mac(a)) = m.node(v).map(|n| &n.op) else {
                continue;
            };
            let mut terms: Vec<(ValueId, f64)> = m
                .operands(v)
                .into_iter()
                .zip(a.coeffs.iter().copied())
                .collect();
            terms.sort_by_key(|t| t.0);
            work.push((v, terms, a.bias, a.log_scale));
        }
    }
    let mut stats = SplitStats {
        groups: groups.len(),
        ..SplitStats::default()
    };
    // The members' operand edges go first, newest member first: each is then at the head of
    // its operand's list of uses, so unlinking it is cheap (removing a node with a thousand
    // operands, each with a thousand uses, walks those lists otherwise).
    let mut by_id: Vec<ValueId> = work.iter().map(|w| w.0).collect();
    by_id.sort_unstable();
    for &v in by_id.iter().rev() {
        let g = m.graph_mut();
        while let Some(e) = g
            .edges_directed(v.node(), petgraph::Direction::Incoming)
            .next()
            .map(|e| e.id())
        {
            g.remove_edge(e);
        }
    }
    for (v, terms, bias0, log_scale) in work {
        let mut acc: Option<ValueId> = None;
        for (i, part) in terms.chunks(chunk).enumerate() {
            let bias = if i == 0 { bias0 } else { None };
            let p = m.mac(part, bias, log_scale)?;
            stats.added += 1;
            acc = Some(match acc {
                None => p,
                Some(s) => {
                    stats.added += 1;
                    m.add(s, p)?
                }
            });
        }
        if let Some(sum) = acc {
            m.replace_uses(v, sum)?;
            m.remove(v);
            stats.macs += 1;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly
    use super::*;
    use crate::schedule::{depth_first, eager, is_valid, peak_of, schedule};
    use hecc_ir::he::interp::interpret;
    use hecc_ir::he::{verify, Layout, Level, LogScale, Meta, Params, VerifyOptions};

    const SOURCES: usize = 4;
    const OPERANDS: usize = 200;
    const OUTPUTS: usize = 8;

    /// `OUTPUTS` dense sums over one set of `OPERANDS` rescaled products of a few inputs, each
    /// output listing the set in its own order (as the channel lowering does).
    fn dense() -> Module {
        let mut m = Module::new(Meta {
            name: "dense".into(),
            batch: 4,
            log_scale: LogScale(40.0),
        });
        m.params = Some(Params {
            log_n: 12,
            primes: vec![(1 << 60) - 93, (1 << 40) - 87, (1 << 40) - 195],
        });
        let b = m.add_layout("batch", Layout::BATCH).unwrap();
        let xs: Vec<ValueId> = (0..SOURCES)
            .map(|i| {
                m.input("x", i as u32, Level(2), LogScale(40.0), 4, b)
                    .unwrap()
            })
            .collect();
        let ops: Vec<ValueId> = (0..OPERANDS)
            .map(|i| {
                let t = m
                    .mac(
                        &[(xs[i % SOURCES], 0.5 + i as f64 / 100.0)],
                        None,
                        LogScale(40.0),
                    )
                    .unwrap();
                m.rescale(t).unwrap()
            })
            .collect();
        for k in 0..OUTPUTS {
            let mut terms: Vec<(ValueId, f64)> = ops
                .iter()
                .enumerate()
                .map(|(i, &o)| (o, ((i * 7 + k * 13) % 11) as f64 / 10.0 - 0.5))
                .collect();
            terms.rotate_left(k * 17);
            let y = m
                .mac(&terms, Some(0.25 * k as f64), LogScale(40.0))
                .unwrap();
            m.output(y, "y", k as u32).unwrap();
        }
        m
    }

    fn run(m: &Module) -> Vec<(u32, Vec<f64>)> {
        let mut outs: Vec<(u32, Vec<f64>)> = interpret(m, |_, i, _, _| {
            Some(
                (0..4)
                    .map(|s| (i as f64 + 1.0) * 0.1 - s as f64 * 0.05)
                    .collect(),
            )
        })
        .unwrap()
        .into_iter()
        .map(|o| (o.index, o.slots))
        .collect();
        outs.sort_by_key(|o| o.0);
        outs
    }

    #[test]
    fn split_layers_compute_the_same_and_the_eager_order_holds_one_chunk() {
        let m = dense();
        let mut s = m.clone();
        let st = split_wide_macs(&mut s, 32).unwrap();
        assert_eq!(st.groups, 1);
        assert_eq!(st.macs, OUTPUTS);
        // 7 partial macs (200 = 6 * 32 + 8) and 6 additions per output.
        assert_eq!(st.added, OUTPUTS * 13);
        verify(&s, &VerifyOptions::STRICT).unwrap();
        for (a, b) in run(&m).iter().zip(run(&s)) {
            assert_eq!(a.0, b.0);
            for (x, y) in a.1.iter().zip(&b.1) {
                assert!((x - y).abs() < 1e-9, "{x} vs {y}");
            }
        }
        // Unsplit, every order holds all the operands at once; split, the eager order holds
        // a chunk, the partial sums and the inputs.
        let dfs = depth_first(&m).unwrap();
        assert!(peak_of(&m, &dfs, 12).values >= OPERANDS as u64);
        let e = eager(&s, 12).unwrap();
        assert!(is_valid(&s, &e));
        let p = peak_of(&s, &e, 12);
        assert!(p.values <= (SOURCES + 32 + 2 * OUTPUTS + 2) as u64, "{p:?}");
        let chosen = schedule(&s, 12, 0, None).unwrap();
        assert!(chosen.summary.peak.bytes <= p.bytes);
        // Nothing to split: no change.
        let mut again = s.clone();
        assert_eq!(
            split_wide_macs(&mut again, 32).unwrap(),
            SplitStats::default()
        );
    }
}
