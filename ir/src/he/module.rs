//! The HE module: graph, constant pool, layout table, names, parameters and
//! metadata, plus the typed builders.
//!
//! Contract: the graph is a `StableDiGraph<HeNode, Operand>` whose edges run
//! from an operand to its user and are weighted by the operand slot. Removing
//! nodes keeps the other ids stable. The builders check operand kinds, slot
//! counts, layouts and sizes and compute the result type; they do not require
//! operand levels or scales to match (the graph may be built before level
//! management, see [`super::VerifyOptions`]): a binary op's result takes the
//! minimum operand level and the first operand's scale.

use super::error::{HeError, NodeErrorKind, Site};
use super::op::{ConstId, MacAttrs, NameId, Op, Opcode};
use super::types::{Kind, Layout, LayoutId, Level, LogScale, Type};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A value (node) of the HE graph, printed `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The petgraph index.
    pub fn node(self) -> NodeIndex<u32> {
        NodeIndex::new(self.0 as usize)
    }

    /// From a petgraph index.
    pub fn from_node(n: NodeIndex<u32>) -> ValueId {
        ValueId(n.index() as u32)
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Edge weight: which operand slot of the user the source value fills
/// (0 = first/left operand, 1 = second/right, `i` = i-th operand of a `mac`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Operand(pub u32);

/// A node: an op and its result type.
#[derive(Clone, Debug, PartialEq)]
pub struct HeNode {
    /// The operation.
    pub op: Op,
    /// The result type.
    pub ty: Type,
}

/// Encryption parameters, when known.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Params {
    /// log2 of the ring degree N (a ciphertext has N/2 slots).
    pub log_n: u32,
    /// The ciphertext primes `q_0 .. q_L`; a value at level `l` uses `q_0 ..= q_l`
    /// and rescaling it divides by `q_l`.
    pub primes: Vec<u64>,
}

/// What a `bootstrap` does in this module: the contract of the runtime's bootstrapper that
/// the compiler placed bootstraps for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootInfo {
    /// Level of a bootstrapped value (the levels left to the network after a bootstrap).
    pub out_level: Level,
    /// Log-scale a bootstrap's operand must have (within [`BootInfo::SCALE_TOLERANCE`]).
    pub in_log_scale: LogScale,
    /// Log-scale of a bootstrapped value whose operand was exactly at `in_log_scale`; an
    /// operand off by `d` bits gives a result off by the same `d` bits.
    pub out_log_scale: LogScale,
    /// Levels a bootstrap uses above `out_level` (the chain has `out_level + depth + 1` primes).
    pub depth: u32,
    /// Bound on the magnitude of every slot of a bootstrap's operand (garbage slots included).
    pub message_bound: f64,
    /// Slots the bootstrap refreshes (`N/2` full; fewer is a sparse bootstrap whose operand
    /// repeats with that period).
    pub slots: u32,
}

impl BootInfo {
    /// How far (bits) a bootstrap's operand may be from `in_log_scale`: the drift that real
    /// primes leave on a managed value, which the bootstrap carries to its result.
    pub const SCALE_TOLERANCE: f64 = 0.05;

    /// The log-scale of a bootstrap of an operand at log-scale `s`.
    pub fn result_log_scale(&self, s: LogScale) -> LogScale {
        LogScale(self.out_log_scale.0 + (s.0 - self.in_log_scale.0))
    }
}

/// Module metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// Model name.
    pub name: String,
    /// Number of images processed at once (batch packing).
    pub batch: u32,
    /// Default log-scale: the scale fresh values are encoded at, and the bits a
    /// rescale removes when the primes are not known.
    pub log_scale: LogScale,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            name: String::from("module"),
            batch: 1,
            log_scale: LogScale(40.0),
        }
    }
}

/// A plaintext vector of the constant pool. Held in the compact form of
/// [`super::compact::Tiled`] when that is much smaller than the vector (the channel layout's
/// masks and coefficient vectors are a few runs per image: LeNet-5's channel plan has 1.2 GiB of
/// them written out), and expanded when read.
#[derive(Clone, Debug)]
pub struct Constant {
    repr: ConstRepr,
}

#[derive(Clone, Debug)]
enum ConstRepr {
    Dense(Vec<f64>),
    Tiled(super::compact::Tiled),
}

impl Constant {
    /// The constant `values`, compact when its tiled form gives back exactly the same bits and
    /// writes at most an eighth of the slots.
    pub fn new(values: Vec<f64>) -> Constant {
        let t = super::compact::Tiled::of(&values);
        let compact = t.written().saturating_mul(8) <= values.len()
            && t.expand().is_some_and(|e| same_bits(&e, &values));
        Constant {
            repr: if compact {
                ConstRepr::Tiled(t)
            } else {
                ConstRepr::Dense(values)
            },
        }
    }

    /// The slot values.
    pub fn values(&self) -> std::borrow::Cow<'_, [f64]> {
        match &self.repr {
            ConstRepr::Dense(v) => std::borrow::Cow::Borrowed(v),
            // Checked to expand when it was made.
            ConstRepr::Tiled(t) => std::borrow::Cow::Owned(t.expand().unwrap_or_default()),
        }
    }

    /// Slots.
    pub fn len(&self) -> usize {
        match &self.repr {
            ConstRepr::Dense(v) => v.len(),
            ConstRepr::Tiled(t) => t.len,
        }
    }

    /// Whether it has no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is held in the compact form.
    pub fn is_compact(&self) -> bool {
        matches!(self.repr, ConstRepr::Tiled(_))
    }
}

impl PartialEq for Constant {
    fn eq(&self, other: &Constant) -> bool {
        self.values() == other.values()
    }
}

/// An HE circuit.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// Metadata.
    pub meta: Meta,
    /// Encryption parameters, when chosen.
    pub params: Option<Params>,
    /// Bootstrap parameters, when the circuit may refresh values.
    pub boot: Option<BootInfo>,
    graph: StableDiGraph<HeNode, Operand>,
    layouts: Vec<(String, Layout)>,
    constants: Vec<Constant>,
    const_index: HashMap<u64, Vec<ConstId>>,
    names: Vec<String>,
    name_index: HashMap<String, NameId>,
}

/// Whether `s` is an identifier of the text form (`[A-Za-z_][A-Za-z0-9_]*`
/// and not a keyword-like float word).
pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && s != "inf" && s != "NaN"
}

fn hash_values(values: &[f64]) -> u64 {
    let mut h = DefaultHasher::new();
    values.len().hash(&mut h);
    for v in values {
        v.to_bits().hash(&mut h);
    }
    h.finish()
}

fn same_bits(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl Module {
    /// An empty module.
    pub fn new(meta: Meta) -> Module {
        Module {
            meta,
            ..Module::default()
        }
    }

    // ----- tables -------------------------------------------------------

    /// Adds a layout under `name` (an identifier, unique in the module).
    pub fn add_layout(&mut self, name: &str, layout: Layout) -> Result<LayoutId, HeError> {
        if !is_ident(name) {
            return Err(HeError::BadLayoutName(name.to_string()));
        }
        if self.layouts.iter().any(|(n, _)| n == name) {
            return Err(HeError::DuplicateLayout(name.to_string()));
        }
        self.layouts.push((name.to_string(), layout));
        Ok(LayoutId(self.layouts.len() as u32 - 1))
    }

    /// The layout with this id.
    pub fn layout(&self, id: LayoutId) -> Option<&Layout> {
        self.layouts.get(id.0 as usize).map(|(_, l)| l)
    }

    /// The name of the layout with this id.
    pub fn layout_name(&self, id: LayoutId) -> Option<&str> {
        self.layouts.get(id.0 as usize).map(|(n, _)| n.as_str())
    }

    /// Finds a layout by name.
    pub fn layout_by_name(&self, name: &str) -> Option<LayoutId> {
        self.layouts
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| LayoutId(i as u32))
    }

    /// The layout table, in id order.
    pub fn layouts(&self) -> impl Iterator<Item = (LayoutId, &str, &Layout)> + '_ {
        self.layouts
            .iter()
            .enumerate()
            .map(|(i, (n, l))| (LayoutId(i as u32), n.as_str(), l))
    }

    /// The layout-table name under which the layout of output `name`, index `index` is
    /// recorded: `out_<index>_<name>` with every character of `name` that is not ASCII
    /// alphanumeric replaced by `_`.
    pub fn output_layout_name(name: &str, index: u32) -> String {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("out_{index}_{clean}")
    }

    /// Records where the elements of output `name`, index `index` are in that output's slots
    /// when this differs from the layout of the output value's type (the channel layout's
    /// outputs: their value type keeps the circuit's working layout). The layout is added to
    /// the table under [`Module::output_layout_name`]; the printer and parser keep it.
    pub fn set_output_layout(
        &mut self,
        name: &str,
        index: u32,
        layout: Layout,
    ) -> Result<LayoutId, HeError> {
        self.add_layout(&Module::output_layout_name(name, index), layout)
    }

    /// The layout of output `name`, index `index`: the one recorded by
    /// [`Module::set_output_layout`] if any, else the layout of the output value's type.
    /// `None` when there is no such output.
    pub fn output_layout(&self, name: &str, index: u32) -> Option<&Layout> {
        if let Some(id) = self.layout_by_name(&Module::output_layout_name(name, index)) {
            return self.layout(id);
        }
        let (v, _, _) = self
            .outputs()
            .into_iter()
            .find(|(_, n, i)| *n == name && *i == index)?;
        self.layout(self.ty(v)?.layout())
    }

    /// Adds a vector to the constant pool, returning the id of an identical
    /// (bit-for-bit) vector if one is already there.
    pub fn add_constant(&mut self, values: Vec<f64>) -> ConstId {
        let h = hash_values(&values);
        if let Some(ids) = self.const_index.get(&h) {
            for id in ids {
                if same_bits(&self.constants[id.0 as usize].values(), &values) {
                    return *id;
                }
            }
        }
        self.push_constant(values)
    }

    /// Appends a vector to the pool without deduplication (used by the parser,
    /// which must keep the ids it reads).
    pub fn push_constant(&mut self, values: Vec<f64>) -> ConstId {
        let id = ConstId(self.constants.len() as u32);
        let h = hash_values(&values);
        self.constants.push(Constant::new(values));
        self.const_index.entry(h).or_default().push(id);
        id
    }

    /// Appends a copy of another module's constant without deduplication, in the form it is
    /// held in.
    pub fn push_constant_copy(&mut self, c: &Constant) -> ConstId {
        let id = ConstId(self.constants.len() as u32);
        let h = hash_values(&c.values());
        self.constants.push(c.clone());
        self.const_index.entry(h).or_default().push(id);
        id
    }

    /// A constant of the pool.
    pub fn constant(&self, id: ConstId) -> Option<&Constant> {
        self.constants.get(id.0 as usize)
    }

    /// The constant pool, in id order.
    pub fn constants(&self) -> impl Iterator<Item = (ConstId, &Constant)> + '_ {
        self.constants
            .iter()
            .enumerate()
            .map(|(i, c)| (ConstId(i as u32), c))
    }

    /// Interns an input/output name.
    pub fn intern(&mut self, name: &str) -> NameId {
        if let Some(id) = self.name_index.get(name) {
            return *id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(name.to_string());
        self.name_index.insert(name.to_string(), id);
        id
    }

    /// An interned name.
    pub fn name(&self, id: NameId) -> Option<&str> {
        self.names.get(id.0 as usize).map(String::as_str)
    }

    /// The bits a rescale at `level` removes: `log2(q_level)` when the primes
    /// are known, the module's default log-scale otherwise.
    pub fn rescale_bits(&self, level: Level) -> f64 {
        match &self.params {
            Some(p) => match p.primes.get(level.0 as usize) {
                Some(&q) if q > 1 => (q as f64).log2(),
                _ => self.meta.log_scale.0,
            },
            None => self.meta.log_scale.0,
        }
    }

    // ----- graph access ---------------------------------------------------

    /// The underlying graph (read-only).
    pub fn graph(&self) -> &StableDiGraph<HeNode, Operand> {
        &self.graph
    }

    /// The underlying graph, for transforms. Run the verifier afterwards.
    pub fn graph_mut(&mut self) -> &mut StableDiGraph<HeNode, Operand> {
        &mut self.graph
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// True when the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// A node.
    pub fn node(&self, v: ValueId) -> Option<&HeNode> {
        self.graph.node_weight(v.node())
    }

    /// A node, mutably.
    pub fn node_mut(&mut self, v: ValueId) -> Option<&mut HeNode> {
        self.graph.node_weight_mut(v.node())
    }

    /// The type of a value.
    pub fn ty(&self, v: ValueId) -> Option<Type> {
        self.node(v).map(|n| n.ty)
    }

    /// All value ids in increasing index order.
    pub fn ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.graph.node_indices().map(ValueId::from_node)
    }

    /// The nodes in a deterministic topological order (operands first, ties
    /// broken by smaller id), or a `Cycle` error listing the nodes that could
    /// not be ordered (on a cycle or downstream of one).
    pub fn topo_order(&self) -> Result<Vec<ValueId>, HeError> {
        let (order, rest) = self.topo_partition();
        if rest.is_empty() {
            Ok(order)
        } else {
            Err(HeError::Cycle { nodes: rest })
        }
    }

    /// Whether every operand has a smaller id than its user: then the id order is a
    /// topological order and the graph has no cycle. One pass over the edges in storage order.
    pub fn ids_are_topological(&self) -> bool {
        use petgraph::visit::IntoEdgeReferences;
        (&self.graph)
            .edge_references()
            .all(|e| e.source().index() < e.target().index())
    }

    /// Kahn's algorithm with ties broken by smaller id: the nodes it can order,
    /// and the others (on or downstream of a cycle) in id order.
    pub fn topo_partition(&self) -> (Vec<ValueId>, Vec<ValueId>) {
        use petgraph::visit::NodeIndexable;
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // With topological ids the smallest ready id is always the next id, so Kahn's order is
        // the id order; skip the heap and the per-node edge walks.
        if self.ids_are_topological() {
            return (self.ids().collect(), Vec::new());
        }
        let g = &self.graph;
        let mut indeg = vec![0usize; g.node_bound()];
        for n in g.node_indices() {
            indeg[n.index()] = g.edges_directed(n, Direction::Incoming).count();
        }
        let mut ready: BinaryHeap<Reverse<u32>> = g
            .node_indices()
            .filter(|n| indeg[n.index()] == 0)
            .map(|n| Reverse(n.index() as u32))
            .collect();
        let mut order = Vec::with_capacity(g.node_count());
        while let Some(Reverse(i)) = ready.pop() {
            let v = ValueId(i);
            order.push(v);
            for e in g.edges_directed(v.node(), Direction::Outgoing) {
                let t = e.target().index();
                if indeg[t] > 0 {
                    indeg[t] -= 1;
                    if indeg[t] == 0 {
                        ready.push(Reverse(t as u32));
                    }
                }
            }
        }
        if order.len() == g.node_count() {
            return (order, Vec::new());
        }
        let mut placed = vec![false; g.node_bound()];
        for v in &order {
            placed[v.0 as usize] = true;
        }
        let rest = self.ids().filter(|v| !placed[v.0 as usize]).collect();
        (order, rest)
    }

    /// The operands of `v` as `(slot, value)` pairs sorted by slot (duplicates
    /// and gaps are kept so that the verifier can report them).
    pub fn operand_slots(&self, v: ValueId) -> Vec<(u32, ValueId)> {
        let mut ops: Vec<(u32, ValueId)> = self
            .graph
            .edges_directed(v.node(), Direction::Incoming)
            .map(|e| (e.weight().0, ValueId::from_node(e.source())))
            .collect();
        ops.sort_unstable();
        ops
    }

    /// The operands of `v` in slot order.
    pub fn operands(&self, v: ValueId) -> Vec<ValueId> {
        self.operand_slots(v).into_iter().map(|(_, o)| o).collect()
    }

    /// The users of `v` (each user once per operand slot it fills).
    pub fn users(&self, v: ValueId) -> Vec<ValueId> {
        let mut us: Vec<ValueId> = self
            .graph
            .edges_directed(v.node(), Direction::Outgoing)
            .map(|e| ValueId::from_node(e.target()))
            .collect();
        us.sort_unstable();
        us
    }

    /// Redirects every use of `old` to `new`. `new` keeps its own operands.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) -> Result<(), HeError> {
        for v in [old, new] {
            if self.node(v).is_none() {
                return Err(HeError::UnknownValue(v));
            }
        }
        let uses: Vec<_> = self
            .graph
            .edges_directed(old.node(), Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, target, slot) in uses {
            self.graph.remove_edge(e);
            self.graph.add_edge(new.node(), target, slot);
        }
        Ok(())
    }

    /// Removes a node and its edges; users of it are left with a missing
    /// operand slot, which the verifier reports.
    pub fn remove(&mut self, v: ValueId) -> Option<HeNode> {
        self.graph.remove_node(v.node())
    }

    /// Input nodes `(value, name, index)` in id order.
    pub fn inputs(&self) -> Vec<(ValueId, &str, u32)> {
        self.ids()
            .filter_map(|v| match self.node(v).map(|n| &n.op) {
                Some(Op::Input { name, index }) => {
                    Some((v, self.name(*name).unwrap_or("?"), *index))
                }
                _ => None,
            })
            .collect()
    }

    /// Output nodes `(value, name, index)` in id order.
    pub fn outputs(&self) -> Vec<(ValueId, &str, u32)> {
        self.ids()
            .filter_map(|v| match self.node(v).map(|n| &n.op) {
                Some(Op::Output { name, index }) => {
                    Some((v, self.name(*name).unwrap_or("?"), *index))
                }
                _ => None,
            })
            .collect()
    }

    // ----- building ---------------------------------------------------------

    /// Adds a node with the given type, without inferring or checking it
    /// (the parser and transforms use this; run the verifier afterwards).
    /// Fails only if an operand does not exist.
    pub fn push_typed(
        &mut self,
        op: Op,
        operands: &[ValueId],
        ty: Type,
    ) -> Result<ValueId, HeError> {
        for &o in operands {
            if self.node(o).is_none() {
                return Err(HeError::UnknownValue(o));
            }
        }
        let n = self.graph.add_node(HeNode { op, ty });
        for (slot, &o) in operands.iter().enumerate() {
            self.graph.add_edge(o.node(), n, Operand(slot as u32));
        }
        Ok(ValueId::from_node(n))
    }

    /// Adds a node whose type is inferred from its operands with
    /// [`Module::infer_type`] (not for `input`/`encode`, which have their own builders).
    pub fn push(&mut self, op: Op, operands: &[ValueId]) -> Result<ValueId, HeError> {
        let code = op.opcode();
        let mut tys = Vec::with_capacity(operands.len());
        for &o in operands {
            tys.push(self.ty(o).ok_or(HeError::UnknownValue(o))?);
        }
        let ty = self.infer_type(&op, &tys).map_err(|kind| HeError::Node {
            site: Site::New(code),
            kind,
        })?;
        self.push_typed(op, operands, ty)
    }

    /// Computes the result type of `op` applied to operands of types `tys`.
    ///
    /// Checks arity, operand kinds, slot counts, layouts and sizes, and the
    /// op-specific rules (rescale above level 0, drop_level downwards, one scalar
    /// per mac operand, relinearize of size 3). Level and scale agreement between
    /// operands is *not* required here (see [`super::verify()`]); the result takes the
    /// minimum level and the first operand's log-scale. `input` and `encode`
    /// have no operands to infer from and report `NotInferable`.
    pub fn infer_type(&self, op: &Op, tys: &[Type]) -> Result<Type, NodeErrorKind> {
        let info = op.info();
        if !info.arity.accepts(tys.len()) {
            return Err(NodeErrorKind::Arity {
                expected: info.arity,
                found: tys.len(),
            });
        }
        for (slot, t) in tys.iter().enumerate() {
            let expected = match info.arity {
                super::op::Arity::Variadic { .. } => info.operands.first().copied(),
                super::op::Arity::Fixed(_) => info.operands.get(slot).copied(),
            }
            .unwrap_or(Kind::Cipher);
            if t.kind() != expected {
                return Err(NodeErrorKind::OperandKind {
                    slot: slot as u32,
                    expected,
                    found: t.kind(),
                });
            }
            if self.layout(t.layout()).is_none() {
                return Err(NodeErrorKind::UnknownLayout(t.layout()));
            }
        }
        let first = match tys.first() {
            Some(t) => *t,
            None => return Err(NodeErrorKind::NotInferable),
        };
        for t in tys.iter().skip(1) {
            if t.slots() != first.slots() {
                return Err(NodeErrorKind::SlotsMismatch {
                    first: first.slots(),
                    other: t.slots(),
                });
            }
            if t.layout() != first.layout() {
                return Err(NodeErrorKind::LayoutMismatch {
                    first: first.layout(),
                    other: t.layout(),
                });
            }
        }
        let min_level = tys.iter().map(Type::level).min().unwrap_or(first.level());
        let max_size = tys.iter().map(Type::size).max().unwrap_or(2);
        let base = first.with_level(min_level);
        let need_size2 = |tys: &[Type]| -> Result<(), NodeErrorKind> {
            for (slot, t) in tys.iter().enumerate() {
                if t.size() != 2 {
                    return Err(NodeErrorKind::NeedsRelinearized {
                        slot: slot as u32,
                        size: t.size(),
                    });
                }
            }
            Ok(())
        };
        let scaled = |extra: f64| base.with_log_scale(LogScale(first.log_scale().0 + extra));
        // The arity check above guarantees a second operand for binary ops.
        let second_scale = tys.get(1).map_or(0.0, |t| t.log_scale().0);
        let ty = match op {
            Op::Input { .. } | Op::Encode { .. } => return Err(NodeErrorKind::NotInferable),
            Op::Add | Op::Sub | Op::AddPlain | Op::SubPlain => base.with_size(max_size),
            Op::Negate | Op::AddScalar { .. } | Op::MulInteger { .. } | Op::Output { .. } => base,
            Op::Mul => {
                need_size2(tys)?;
                scaled(second_scale).with_size(3)
            }
            Op::Square => {
                need_size2(tys)?;
                scaled(first.log_scale().0).with_size(3)
            }
            Op::MulPlain => scaled(second_scale),
            Op::MulScalar { log_scale, .. } => scaled(log_scale.0),
            Op::Mac(attrs) => {
                if attrs.coeffs.len() != tys.len() {
                    return Err(NodeErrorKind::CoeffCount {
                        coeffs: attrs.coeffs.len(),
                        operands: tys.len(),
                    });
                }
                scaled(attrs.log_scale.0).with_size(max_size)
            }
            Op::Relinearize => {
                if first.size() != 3 {
                    return Err(NodeErrorKind::NothingToRelinearize { size: first.size() });
                }
                base.with_size(2)
            }
            Op::Rescale => {
                if first.level().0 == 0 {
                    return Err(NodeErrorKind::RescaleAtLevelZero);
                }
                let bits = self.rescale_bits(first.level());
                base.with_level(Level(first.level().0 - 1))
                    .with_log_scale(LogScale(first.log_scale().0 - bits))
            }
            Op::DropLevel { to } => {
                if *to > first.level() {
                    return Err(NodeErrorKind::DropLevelUp {
                        from: first.level(),
                        to: *to,
                    });
                }
                base.with_level(*to)
            }
            Op::Rotate { .. } | Op::Conjugate => {
                need_size2(tys)?;
                base
            }
            Op::Bootstrap => {
                need_size2(tys)?;
                let boot = self.boot.ok_or(NodeErrorKind::NoBootstrapParameters)?;
                if !first
                    .log_scale()
                    .close_to(boot.in_log_scale, BootInfo::SCALE_TOLERANCE)
                {
                    return Err(NodeErrorKind::BootstrapScale {
                        expected: boot.in_log_scale,
                        found: first.log_scale(),
                    });
                }
                base.with_level(boot.out_level)
                    .with_log_scale(boot.result_log_scale(first.log_scale()))
            }
        };
        Ok(ty)
    }

    /// Adds a fresh ciphertext carrying element `index` of input `name`.
    pub fn input(
        &mut self,
        name: &str,
        index: u32,
        level: Level,
        log_scale: LogScale,
        slots: u32,
        layout: LayoutId,
    ) -> Result<ValueId, HeError> {
        let site = Site::New(Opcode::Input);
        self.check_new_type(site, slots, layout)?;
        let name = self.intern(name);
        self.push_typed(
            Op::Input { name, index },
            &[],
            Type::cipher(level, log_scale, slots, layout),
        )
    }

    /// Adds a plaintext encoding pool constant `constant` (its length is the
    /// slot count).
    pub fn encode(
        &mut self,
        constant: ConstId,
        level: Level,
        log_scale: LogScale,
        layout: LayoutId,
    ) -> Result<ValueId, HeError> {
        let site = Site::New(Opcode::Encode);
        let len = self
            .constant(constant)
            .ok_or(HeError::Node {
                site,
                kind: NodeErrorKind::UnknownConst(constant),
            })?
            .len();
        let slots = u32::try_from(len).map_err(|_| HeError::Node {
            site,
            kind: NodeErrorKind::ConstLength {
                id: constant,
                len,
                slots: u32::MAX,
            },
        })?;
        self.check_new_type(site, slots, layout)?;
        self.push_typed(
            Op::Encode { constant },
            &[],
            Type::plain(level, log_scale, slots, layout),
        )
    }

    fn check_new_type(&self, site: Site, slots: u32, layout: LayoutId) -> Result<(), HeError> {
        if slots == 0 {
            return Err(HeError::Node {
                site,
                kind: NodeErrorKind::ZeroSlots,
            });
        }
        if self.layout(layout).is_none() {
            return Err(HeError::Node {
                site,
                kind: NodeErrorKind::UnknownLayout(layout),
            });
        }
        Ok(())
    }

    /// `a + b` (ciphertexts).
    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Add, &[a, b])
    }

    /// `a - b` (ciphertexts).
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Sub, &[a, b])
    }

    /// `-a`.
    pub fn negate(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Negate, &[a])
    }

    /// Ciphertext `a` plus plaintext `p`.
    pub fn add_plain(&mut self, a: ValueId, p: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::AddPlain, &[a, p])
    }

    /// Ciphertext `a` minus plaintext `p`.
    pub fn sub_plain(&mut self, a: ValueId, p: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::SubPlain, &[a, p])
    }

    /// `a + c` for a real constant `c`.
    pub fn add_scalar(&mut self, a: ValueId, c: f64) -> Result<ValueId, HeError> {
        self.push(Op::AddScalar { value: c }, &[a])
    }

    /// `a * b` (ciphertexts): size 3, scales add.
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Mul, &[a, b])
    }

    /// `a * a`.
    pub fn square(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Square, &[a])
    }

    /// Ciphertext `a` times plaintext `p`.
    pub fn mul_plain(&mut self, a: ValueId, p: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::MulPlain, &[a, p])
    }

    /// `a * c` with `c` encoded at `log_scale`.
    pub fn mul_scalar(
        &mut self,
        a: ValueId,
        c: f64,
        log_scale: LogScale,
    ) -> Result<ValueId, HeError> {
        self.push(
            Op::MulScalar {
                value: c,
                log_scale,
            },
            &[a],
        )
    }

    /// `a` refreshed by a bootstrap (the module needs [`Module::boot`]).
    pub fn bootstrap(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Bootstrap, &[a])
    }

    /// `a * k` for an integer `k`.
    pub fn mul_integer(&mut self, a: ValueId, k: i64) -> Result<ValueId, HeError> {
        self.push(Op::MulInteger { factor: k }, &[a])
    }

    /// `sum_i c_i * x_i + bias` over `terms = [(x_i, c_i)]`, scalars encoded at `log_scale`.
    pub fn mac(
        &mut self,
        terms: &[(ValueId, f64)],
        bias: Option<f64>,
        log_scale: LogScale,
    ) -> Result<ValueId, HeError> {
        let operands: Vec<ValueId> = terms.iter().map(|t| t.0).collect();
        let coeffs: Vec<f64> = terms.iter().map(|t| t.1).collect();
        self.push(
            Op::Mac(Box::new(MacAttrs {
                coeffs,
                bias,
                log_scale,
            })),
            &operands,
        )
    }

    /// Relinearizes a size-3 ciphertext.
    pub fn relinearize(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Relinearize, &[a])
    }

    /// Rescales: one level down, scale divided by the level's prime.
    pub fn rescale(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Rescale, &[a])
    }

    /// Drops `a` to level `to`.
    pub fn drop_level(&mut self, a: ValueId, to: Level) -> Result<ValueId, HeError> {
        self.push(Op::DropLevel { to }, &[a])
    }

    /// Rotates `a` by `k` slots (slot `i` of the result = slot `i + k` of `a`).
    pub fn rotate(&mut self, a: ValueId, k: i32) -> Result<ValueId, HeError> {
        self.push(Op::Rotate { steps: k }, &[a])
    }

    /// Conjugates `a`.
    pub fn conjugate(&mut self, a: ValueId) -> Result<ValueId, HeError> {
        self.push(Op::Conjugate, &[a])
    }

    /// Marks `a` as element `index` of output `name`.
    pub fn output(&mut self, a: ValueId, name: &str, index: u32) -> Result<ValueId, HeError> {
        let name = self.intern(name);
        self.push(Op::Output { name, index }, &[a])
    }
}
