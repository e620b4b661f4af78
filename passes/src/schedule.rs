//! Memory scheduling: the order in which the runtime evaluates a managed HE module, chosen to
//! lower the peak memory of live values.
//!
//! Contract:
//!
//! * A schedule is a permutation of the module's node ids in which every node comes after its
//!   operands ([`is_valid`] checks it).
//! * Memory model ([`peak_of`]): a ciphertext or plaintext value is live from the step that
//!   computes it to the step of its last user; values nobody uses (outputs' `output` nodes) take
//!   no memory. A value takes [`hecc_ir::he::Type::bytes`] (the size function the report and
//!   the executor use too). Keys are a constant added on top.
//! * [`schedule`] evaluates several strategies ([`Strategy`]): the plain topological order, a
//!   greedy list scheduler that at each step runs the ready node with the best net effect on
//!   live bytes (bytes freed minus bytes allocated, ties to the lowest id), and the
//!   output-driven depth-first order. It keeps the one with the lowest peak and refuses, with
//!   [`ScheduleError::OverBudget`], when even that exceeds the budget.

use hecc_ir::he::{live_profile, InputResidency, Module, Op, ValueId};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// How a schedule was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// The module's plain topological order (`petgraph::algo::toposort`, the order the report's
    /// "peak live ciphertexts" line assumes).
    Topological,
    /// Greedy list scheduling on the net change of live bytes.
    Greedy,
    /// Depth-first from each output in turn (operands before users, outputs in order).
    DepthFirst,
    /// Depth-first, and after each step every user that became ready runs at once when that
    /// does not add live bytes; the `mac`s of a dense layer (one operand list) run together
    /// when together they free at least what they make. A layer split into chunks
    /// ([`crate::he::split_wide_macs`]) then holds one chunk of operands and its partial sums.
    Eager,
}

impl Strategy {
    /// Kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Topological => "topological",
            Strategy::Greedy => "greedy",
            Strategy::DepthFirst => "depth-first",
            Strategy::Eager => "eager depth-first",
        }
    }
}

/// Peak memory of one order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peak {
    /// Most values live at once.
    pub values: u64,
    /// Most bytes of live values at once (without keys).
    pub bytes: u64,
}

/// The chosen schedule and what it costs, for the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSummary {
    /// Strategy of the chosen order.
    pub strategy: String,
    /// Peak of live ciphertexts and plaintexts in the chosen order.
    pub peak: Peak,
    /// Peak in plain topological order.
    pub topological: Peak,
    /// Bytes of the evaluation keys (constant during the run).
    pub key_bytes: u64,
    /// Estimated peak memory: `peak.bytes + key_bytes`.
    pub total_bytes: u64,
    /// The budget that was checked, if any.
    pub budget: Option<u64>,
    /// A run of this schedule that keeps its live values within a budget (`hecc run
    /// --spill-budget`): what it holds and moves to disk, when such a budget was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill: Option<SpillSummary>,
    /// Dense layers split into partial sums for this order, when that lowered the peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitSummary>,
}

/// Dense layers split into chunks ([`crate::he::split_wide_macs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// Operands per partial `mac`.
    pub chunk: u64,
    /// `mac` nodes split.
    pub macs: u64,
    /// Nodes added (partial `mac`s and additions).
    pub added: u64,
}

/// The spill traffic of a schedule run within a budget of live values
/// ([`hecc_ir::he::spill_profile`], the model the executor's spill store follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpillSummary {
    /// Bytes of live values the run may keep in memory.
    pub budget: u64,
    /// Most bytes of live values it holds (one step's operands and result always are).
    pub held_bytes: u64,
    /// Bytes it writes to disk, and how many values.
    pub written_bytes: u64,
    /// Values written.
    pub values_written: u64,
    /// Bytes it reads back.
    pub read_bytes: u64,
    /// Most bytes in spill files at once: the disk the run needs beside its inputs.
    #[serde(default)]
    pub disk_bytes: u64,
    /// The largest single step's need: no budget holds less.
    pub floor_bytes: u64,
}

/// The spill traffic of running `order` with at most `budget` bytes of live values in memory,
/// its inputs read from their file on demand (as `hecc run --spill-dir` reads them).
pub fn spill_summary(m: &Module, order: &[ValueId], log_n: u32, budget: u64) -> SpillSummary {
    let ids: Vec<u32> = order.iter().map(|v| v.0).collect();
    let p = hecc_ir::he::spill_profile(m, &ids, log_n, budget, InputResidency::OnDemand);
    SpillSummary {
        budget,
        held_bytes: p.held_bytes,
        written_bytes: p.written_bytes,
        values_written: p.values_written,
        read_bytes: p.read_bytes,
        disk_bytes: p.disk_bytes,
        floor_bytes: p.floor_bytes,
    }
}

/// A schedule: node order and its summary.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Node ids in evaluation order.
    pub order: Vec<ValueId>,
    /// The summary.
    pub summary: ScheduleSummary,
}

/// Why no schedule could be produced.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ScheduleError {
    /// The module has a cycle.
    #[error("the circuit has a cycle; it cannot be scheduled")]
    #[diagnostic(code(hecc::schedule::cycle))]
    Cycle,
    /// Even the best schedule needs more memory than the budget.
    #[error(
        "the best schedule ({strategy}) needs {needed} bytes at its peak ({values} live values, {keys} bytes of keys), over the memory budget of {budget} bytes"
    )]
    #[diagnostic(
        code(hecc::schedule::budget),
        help("raise --memory-budget, compile with a smaller ring (fewer levels) or a layout with fewer ciphertexts")
    )]
    OverBudget {
        /// Strategy of the best order.
        strategy: String,
        /// Bytes needed (values + keys).
        needed: u64,
        /// Live values at the peak.
        values: u64,
        /// Key bytes included.
        keys: u64,
        /// The budget.
        budget: u64,
    },
}

/// Bytes of value `v`.
fn value_bytes(m: &Module, v: ValueId, log_n: u32) -> u64 {
    m.ty(v).map_or(0, |ty| ty.bytes(log_n))
}

/// The module's dependence graph in dense arrays (index = node id), built once per module.
struct Dag {
    /// Node ids present.
    ids: Vec<u32>,
    /// Whether an id is present.
    present: Vec<bool>,
    /// Operands in slot order (duplicates kept).
    ops: Vec<Vec<u32>>,
    /// Users (once per operand slot).
    users: Vec<Vec<u32>>,
    /// Bytes of each value.
    bytes: Vec<u64>,
    /// Whether the node is an `output`.
    is_output: Vec<bool>,
    /// Dense group of each `mac` sharing its operand list with another (`u32::MAX`: none).
    group: Vec<u32>,
    /// Members of each dense group.
    members: Vec<Vec<u32>>,
}

impl Dag {
    fn new(m: &Module, log_n: u32) -> Dag {
        let ids: Vec<u32> = m.ids().map(|v| v.0).collect();
        let n = ids.iter().max().map_or(0, |&x| x as usize + 1);
        let mut d = Dag {
            ids,
            present: vec![false; n],
            ops: vec![Vec::new(); n],
            users: vec![Vec::new(); n],
            bytes: vec![0; n],
            is_output: vec![false; n],
            group: vec![u32::MAX; n],
            members: Vec::new(),
        };
        for &i in &d.ids {
            let v = ValueId(i);
            let k = i as usize;
            d.present[k] = true;
            d.ops[k] = m.operands(v).into_iter().map(|o| o.0).collect();
            d.bytes[k] = value_bytes(m, v, log_n);
            d.is_output[k] = matches!(m.node(v).map(|n| &n.op), Some(Op::Output { .. }));
        }
        let mut lists: HashMap<&[u32], Vec<u32>> = HashMap::new();
        for &i in &d.ids {
            if matches!(m.node(ValueId(i)).map(|x| &x.op), Some(Op::Mac(_))) {
                lists.entry(&d.ops[i as usize]).or_default().push(i);
            }
        }
        let mut members: Vec<Vec<u32>> = lists.into_values().filter(|g| g.len() > 1).collect();
        members.sort_unstable();
        for (g, ms) in members.iter().enumerate() {
            for &v in ms {
                d.group[v as usize] = g as u32;
            }
        }
        d.members = members;
        for &i in &d.ids {
            for j in 0..d.ops[i as usize].len() {
                let o = d.ops[i as usize][j] as usize;
                if o < n {
                    d.users[o].push(i);
                }
            }
        }
        d
    }

    fn topological(&self) -> Result<Vec<u32>, ScheduleError> {
        let mut indeg: Vec<usize> = self.ops.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<u32>> = self
            .ids
            .iter()
            .filter(|&&i| indeg[i as usize] == 0)
            .map(|&i| Reverse(i))
            .collect();
        let mut order = Vec::with_capacity(self.ids.len());
        while let Some(Reverse(v)) = ready.pop() {
            order.push(v);
            for &u in &self.users[v as usize] {
                let d = &mut indeg[u as usize];
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(u));
                }
            }
        }
        if order.len() != self.ids.len() {
            return Err(ScheduleError::Cycle);
        }
        Ok(order)
    }

    /// Net bytes freed by running `v` now.
    fn gain(&self, v: u32, remaining: &[usize], scratch: &mut Vec<u32>) -> i64 {
        scratch.clear();
        scratch.extend_from_slice(&self.ops[v as usize]);
        scratch.sort_unstable();
        let mut freed = 0i64;
        let mut i = 0;
        while i < scratch.len() {
            let o = scratch[i];
            let mut j = i;
            while j < scratch.len() && scratch[j] == o {
                j += 1;
            }
            if remaining[o as usize] == j - i {
                freed += self.bytes[o as usize] as i64;
            }
            i = j;
        }
        let alloc = if self.users[v as usize].is_empty() {
            0
        } else {
            self.bytes[v as usize] as i64
        };
        freed - alloc
    }

    fn greedy(&self) -> Result<Vec<u32>, ScheduleError> {
        let mut remaining: Vec<usize> = self.users.iter().map(Vec::len).collect();
        let mut indeg: Vec<usize> = self.ops.iter().map(Vec::len).collect();
        let mut scratch = Vec::new();
        let mut heap: BinaryHeap<(i64, Reverse<u32>)> = BinaryHeap::new();
        for &v in &self.ids {
            if indeg[v as usize] == 0 {
                heap.push((self.gain(v, &remaining, &mut scratch), Reverse(v)));
            }
        }
        let mut order = Vec::with_capacity(self.ids.len());
        while let Some((g, Reverse(v))) = heap.pop() {
            let now = self.gain(v, &remaining, &mut scratch);
            if now > g {
                heap.push((now, Reverse(v)));
                continue;
            }
            order.push(v);
            for &o in &self.ops[v as usize] {
                let r = &mut remaining[o as usize];
                *r = r.saturating_sub(1);
            }
            for &u in &self.users[v as usize] {
                let d = &mut indeg[u as usize];
                *d -= 1;
                if *d == 0 {
                    heap.push((self.gain(u, &remaining, &mut scratch), Reverse(u)));
                }
            }
        }
        if order.len() != self.ids.len() {
            return Err(ScheduleError::Cycle);
        }
        Ok(order)
    }

    /// Bytes a dense group frees net of what it makes, if all its members ran now.
    fn group_gain(&self, g: usize, remaining: &[usize]) -> i64 {
        let ms = &self.members[g];
        let ops = &self.ops[ms[0] as usize];
        let mut uses: HashMap<u32, usize> = HashMap::with_capacity(ops.len());
        for &o in ops {
            *uses.entry(o).or_default() += ms.len();
        }
        let freed: i64 = uses
            .iter()
            .filter(|&(&o, &k)| remaining[o as usize] == k)
            .map(|(&o, _)| self.bytes[o as usize] as i64)
            .sum();
        let made: i64 = ms
            .iter()
            .filter(|&&v| !self.users[v as usize].is_empty())
            .map(|&v| self.bytes[v as usize] as i64)
            .sum();
        freed - made
    }

    /// The depth-first walk from the outputs (then anything not reached, in topological order):
    /// operands in slot order before their user. With `eager`, after each step the users that
    /// became ready run at once when that adds no live bytes, a dense group's members together.
    fn walk(&self, eager: bool) -> Result<Vec<u32>, ScheduleError> {
        let topo = self.topological()?;
        let mut w = Walk {
            placed: vec![false; self.present.len()],
            remaining: self.users.iter().map(Vec::len).collect(),
            missing: self.ops.iter().map(Vec::len).collect(),
            order: Vec::with_capacity(self.ids.len()),
            ready: Vec::new(),
        };
        let mut scratch = Vec::new();
        let roots = self
            .ids
            .iter()
            .copied()
            .filter(|&v| self.is_output[v as usize])
            .chain(topo.iter().copied());
        let mut stack: Vec<(u32, bool)> = Vec::new();
        for root in roots {
            if w.placed[root as usize] {
                continue;
            }
            // Iterative post-order (acyclic: `topological` succeeded).
            stack.push((root, false));
            while let Some((v, expanded)) = stack.pop() {
                if w.placed[v as usize] {
                    continue;
                }
                if !expanded {
                    stack.push((v, true));
                    for &o in self.ops[v as usize].iter().rev() {
                        if !w.placed[o as usize] {
                            stack.push((o, false));
                        }
                    }
                    continue;
                }
                w.place(self, v);
                if !eager {
                    w.ready.clear();
                    continue;
                }
                while let Some(u) = w.ready.pop() {
                    if w.placed[u as usize] {
                        continue;
                    }
                    let g = self.group[u as usize];
                    if g != u32::MAX {
                        let ms = &self.members[g as usize];
                        if ms
                            .iter()
                            .all(|&m| w.missing[m as usize] == 0 && !w.placed[m as usize])
                            && self.group_gain(g as usize, &w.remaining) >= 0
                        {
                            for &m in ms {
                                w.place(self, m);
                            }
                        }
                    } else if self.gain(u, &w.remaining, &mut scratch) >= 0 {
                        w.place(self, u);
                    }
                }
            }
        }
        Ok(w.order)
    }
}

/// The state of [`Dag::walk`].
struct Walk {
    placed: Vec<bool>,
    /// Users not placed yet, per value.
    remaining: Vec<usize>,
    /// Operands not placed yet, per node.
    missing: Vec<usize>,
    order: Vec<u32>,
    /// Nodes whose operands all became placed.
    ready: Vec<u32>,
}

impl Walk {
    fn place(&mut self, d: &Dag, v: u32) {
        self.placed[v as usize] = true;
        self.order.push(v);
        for &o in &d.ops[v as usize] {
            self.remaining[o as usize] -= 1;
        }
        for &u in &d.users[v as usize] {
            self.missing[u as usize] -= 1;
            if self.missing[u as usize] == 0 {
                self.ready.push(u);
            }
        }
    }
}

fn ids(order: Vec<u32>) -> Vec<ValueId> {
    order.into_iter().map(ValueId).collect()
}

/// Whether `order` lists every node once, each after its operands.
pub fn is_valid(m: &Module, order: &[ValueId]) -> bool {
    if order.len() != m.len() {
        return false;
    }
    let mut pos: HashMap<ValueId, usize> = HashMap::with_capacity(order.len());
    for (i, &v) in order.iter().enumerate() {
        if m.node(v).is_none() || pos.insert(v, i).is_some() {
            return false;
        }
    }
    order.iter().enumerate().all(|(i, &v)| {
        m.operands(v)
            .iter()
            .all(|o| pos.get(o).is_some_and(|&p| p < i))
    })
}

/// Peak live values and bytes when `m` runs in `order` (which must be valid).
pub fn peak_of(m: &Module, order: &[ValueId], log_n: u32) -> Peak {
    let o: Vec<u32> = order.iter().map(|v| v.0).collect();
    peak(m, &o, log_n)
}

/// The peak of [`hecc_ir::he::live_profile`]: the memory model's one definition.
fn peak(m: &Module, order: &[u32], log_n: u32) -> Peak {
    live_profile(m, order, log_n)
        .iter()
        .fold(Peak::default(), |p, l| Peak {
            values: p.values.max(l.values),
            bytes: p.bytes.max(l.bytes),
        })
}

/// The plain topological order (`petgraph::algo::toposort`).
pub fn topological(m: &Module) -> Result<Vec<ValueId>, ScheduleError> {
    petgraph::algo::toposort(m.graph(), None)
        .map(|o| o.into_iter().map(ValueId::from_node).collect())
        .map_err(|_| ScheduleError::Cycle)
}

/// Greedy list scheduling: among ready nodes, run the one that frees the most bytes net of what
/// it allocates (priorities are refreshed lazily: they only grow as other users of an operand
/// run, so a popped node whose priority is stale is pushed back with its current one).
pub fn greedy(m: &Module, log_n: u32) -> Result<Vec<ValueId>, ScheduleError> {
    Dag::new(m, log_n).greedy().map(ids)
}

/// Depth-first order: for each `output` node in id order, its operands (recursively, in slot
/// order) before it; then anything not reached, in topological order.
pub fn depth_first(m: &Module) -> Result<Vec<ValueId>, ScheduleError> {
    Dag::new(m, 0).walk(false).map(ids)
}

/// Depth-first order with ready users run eagerly ([`Strategy::Eager`]).
pub fn eager(m: &Module, log_n: u32) -> Result<Vec<ValueId>, ScheduleError> {
    Dag::new(m, log_n).walk(true).map(ids)
}

/// Chooses the order with the lowest peak bytes among the strategies and checks it against
/// `budget` (bytes of live values plus `key_bytes`).
pub fn schedule(
    m: &Module,
    log_n: u32,
    key_bytes: u64,
    budget: Option<u64>,
) -> Result<Schedule, ScheduleError> {
    let dag = Dag::new(m, log_n);
    let topo: Vec<u32> = topological(m)?.into_iter().map(|v| v.0).collect();
    let topo_peak = peak(m, &topo, log_n);
    let mut best = (Strategy::Topological, topo, topo_peak);
    for (s, order) in [
        (Strategy::Greedy, dag.greedy()?),
        (Strategy::DepthFirst, dag.walk(false)?),
        (Strategy::Eager, dag.walk(true)?),
    ] {
        let p = peak(m, &order, log_n);
        if p.bytes < best.2.bytes {
            best = (s, order, p);
        }
    }
    let (strategy, order, peak) = best;
    let summary = ScheduleSummary {
        strategy: strategy.name().into(),
        peak,
        topological: topo_peak,
        key_bytes,
        total_bytes: peak.bytes + key_bytes,
        budget,
        spill: None,
        split: None,
    };
    if let Some(b) = budget {
        check_budget(&summary, b)?;
    }
    Ok(Schedule {
        order: ids(order),
        summary,
    })
}

/// Checks a schedule's peak (values and keys) against `budget`, as [`schedule`] does.
pub fn check_budget(s: &ScheduleSummary, budget: u64) -> Result<(), ScheduleError> {
    if s.total_bytes > budget {
        return Err(ScheduleError::OverBudget {
            strategy: s.strategy.clone(),
            needed: s.total_bytes,
            values: s.peak.values,
            keys: s.key_bytes,
            budget,
        });
    }
    Ok(())
}
