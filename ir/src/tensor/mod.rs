//! The tensor graph: a neural network as the user wrote it.
//!
//! # Types
//!
//! * [`Graph`] owns a [`petgraph::stable_graph::StableDiGraph`] of [`Node`]s whose edges carry
//!   an [`Operand`] (the operand slot of the consuming node, so `concat` and `add` keep their
//!   operand order), the list of graph [`inputs`](Graph::inputs) and
//!   [`outputs`](Graph::outputs), and the [`Weights`] table (named [`Tensor`]s).
//! * [`NodeId`] is a `u32` newtype that prints as `%N` (the petgraph index). It stays valid when
//!   other nodes are removed (stable graph).
//! * [`Node`] = source name (kept from the YAML spec or ONNX file), [`Op`] and an optional
//!   [`Span`] into the source text.
//! * [`Op`] is defined once in [`op`], with each variant's attributes, `mnemonic()` (the snake_case
//!   name used by the YAML spec, the text form and the diagnostics) and arity. Weights are
//!   referenced by name; the graph's [`Weights`] table holds the data.
//! * [`Shape`]: per-image shapes *without* batch dimension: `[C, H, W]` for images, `[F]` after
//!   `flatten`.
//!
//! # Semantics
//!
//! Values are `f64` tensors. An `input` node receives the raw image (values in the declared
//! [`Normalization::range`]) and outputs `(x - mean[c]) / std[c]`. Every other op is a pure
//! function of its operands (in slot order) and the weights it names; see [`Op`] for each one.
//! The reference semantics is the plaintext evaluator [`eval::eval`].
//!
//! # Contract
//!
//! The builder ([`Graph::add_node`]) never fails and never panics; every structural, shape and
//! weight problem is reported, all at once, by [`verify::verify`], which also returns the
//! inferred shapes. Graphs that pass the verifier can be evaluated and lowered; their shapes and
//! weights are within the [`limits`].

pub mod eval;
pub mod limits;
pub mod op;
pub mod shape;
pub mod verify;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

pub use op::{Arity, Granularity, Op};
pub use shape::Shape;
pub use verify::{verify, GraphError};

/// A dense `f64` tensor of any rank (weights, images, activations).
pub type Tensor = ndarray::ArrayD<f64>;

/// The weight table of a graph: tensors by name (e.g. `conv1.weight`).
pub type Weights = BTreeMap<String, Tensor>;

/// Identifies a node of a [`Graph`]; prints as `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The petgraph index of this node.
    pub fn index(self) -> NodeIndex<u32> {
        NodeIndex::new(self.0 as usize)
    }
}

impl From<NodeIndex<u32>> for NodeId {
    fn from(ix: NodeIndex<u32>) -> Self {
        NodeId(ix.index() as u32)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Edge weight: the operand slot (0-based) of the consuming node fed by this edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Operand(pub u32);

/// A byte range `offset .. offset + len` in the source text a node came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// Byte offset of the first byte.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Span {
    /// A span of `len` bytes starting at `offset`.
    pub fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        miette::SourceSpan::new(s.offset.into(), s.len)
    }
}

/// One operation of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name from the source (YAML layer name, ONNX node name); unique within a graph.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Where the node was defined in the source text, if known.
    pub span: Option<Span>,
}

/// Per-channel (or scalar) input normalisation and the raw value range of an `input` node.
///
/// The input node computes `(x - mean[c]) / std[c]`; `mean` and `std` have length 1 (applies to
/// every channel) or `C`. `range` is the interval the raw values lie in (e.g. `[0, 1]` or
/// `[0, 255]`), used by later passes for range analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// Mean subtracted per channel (length 1 or C).
    pub mean: Vec<f64>,
    /// Standard deviation divided by per channel (length 1 or C).
    pub std: Vec<f64>,
    /// Raw value range `[lo, hi]` of the input, if declared.
    pub range: Option<[f64; 2]>,
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization {
            mean: vec![0.0],
            std: vec![1.0],
            range: None,
        }
    }
}

impl Normalization {
    /// True if this normalisation is the identity (mean 0, std 1 on every channel).
    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }
}

/// An operand of some node that could not be resolved when the graph was built (a name not
/// defined in the source, or a [`NodeId`] not in the graph). Reported by the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DanglingOperand {
    /// The consuming node.
    pub node: NodeId,
    /// Its operand slot.
    pub slot: u32,
    /// What the source referred to (a node name, or `%N`).
    pub reference: String,
    /// Where the reference is written in the source, if known.
    pub span: Option<Span>,
}

/// A tensor graph: nodes, operand edges, inputs, outputs and weights.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Name of the model (from the spec or ONNX graph name).
    pub name: String,
    /// Nodes and operand edges (edge `a -> b` with weight `Operand(i)`: `a` is operand `i` of `b`).
    pub graph: StableDiGraph<Node, Operand, u32>,
    /// The `input` nodes, in declaration order.
    pub inputs: Vec<NodeId>,
    /// The output nodes, in order.
    pub outputs: Vec<NodeId>,
    /// Named weight tensors referenced by ops.
    pub weights: Weights,
    /// Operands that could not be resolved while building; reported by the verifier.
    pub dangling: Vec<DanglingOperand>,
    /// What the front end rewrote while importing (folded shape arithmetic, removed no-ops,
    /// dropped trailing Softmax ...), one sentence each, for `hecc check` and the report.
    pub notes: Vec<String>,
}

impl Graph {
    /// An empty graph named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Adds a node computing `op` on `inputs` (in operand-slot order) and returns its id.
    ///
    /// `input` ops are appended to [`Graph::inputs`]. Never fails: an operand id that is not in
    /// the graph is recorded in [`Graph::dangling`] and reported by the verifier, as are
    /// duplicate names and wrong arity.
    pub fn add_node(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> NodeId {
        self.add_node_spanned(name, op, inputs, None)
    }

    /// Like [`Graph::add_node`], recording the node's source span.
    pub fn add_node_spanned(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[NodeId],
        span: Option<Span>,
    ) -> NodeId {
        let is_input = matches!(op, Op::Input { .. });
        let ix = self.graph.add_node(Node {
            name: name.into(),
            op,
            span,
        });
        let id = NodeId::from(ix);
        for (slot, &src) in inputs.iter().enumerate() {
            self.connect(src, id, slot as u32);
        }
        if is_input {
            self.inputs.push(id);
        }
        id
    }

    /// Makes `src` operand `slot` of `dst`. If either node is missing, the operand is recorded
    /// as dangling instead (reported by the verifier).
    pub fn connect(&mut self, src: NodeId, dst: NodeId, slot: u32) {
        if self.graph.contains_node(src.index()) && self.graph.contains_node(dst.index()) {
            self.graph.add_edge(src.index(), dst.index(), Operand(slot));
        } else {
            self.dangling.push(DanglingOperand {
                node: dst,
                slot,
                reference: src.to_string(),
                span: None,
            });
        }
    }

    /// Marks `id` as a graph output.
    pub fn add_output(&mut self, id: NodeId) {
        self.outputs.push(id);
    }

    /// Stores a weight tensor under `name`, replacing any previous one.
    pub fn add_weight(&mut self, name: impl Into<String>, t: Tensor) {
        self.weights.insert(name.into(), t);
    }

    /// The node `id`, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.graph.node_weight(id.index())
    }

    /// Mutable access to the node `id`, if it exists.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.graph.node_weight_mut(id.index())
    }

    /// All node ids, in index order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.node_indices().map(NodeId::from)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// The first node called `name`, if any.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.graph
            .node_indices()
            .find(|&i| self.graph[i].name == name)
            .map(NodeId::from)
    }

    /// The operands of `id` sorted by slot, as `(slot, producer)`.
    pub fn operands(&self, id: NodeId) -> Vec<(u32, NodeId)> {
        if !self.graph.contains_node(id.index()) {
            return Vec::new();
        }
        let mut v: Vec<(u32, NodeId)> = self
            .graph
            .edges_directed(id.index(), Direction::Incoming)
            .map(|e| (e.weight().0, NodeId::from(e.source())))
            .collect();
        v.sort();
        v
    }

    /// The producers of `id`'s operands in slot order.
    pub fn operand_ids(&self, id: NodeId) -> Vec<NodeId> {
        self.operands(id).into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes consuming `id`'s value (each once per use), as `(consumer, slot)`.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32)> {
        if !self.graph.contains_node(id.index()) {
            return Vec::new();
        }
        let mut v: Vec<(NodeId, u32)> = self
            .graph
            .edges_directed(id.index(), Direction::Outgoing)
            .map(|e| (NodeId::from(e.target()), e.weight().0))
            .collect();
        v.sort();
        v
    }

    /// Nodes in a topological order (operands before users), or `None` if the graph has a cycle.
    /// Ties are broken by node index, so the order is deterministic.
    pub fn topo_order(&self) -> Option<Vec<NodeId>> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indeg: HashMap<NodeIndex<u32>, usize> = HashMap::new();
        for i in self.graph.node_indices() {
            indeg.insert(i, self.graph.edges_directed(i, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<Reverse<u32>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(i, _)| Reverse(i.index() as u32))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(i)) = ready.pop() {
            let ix = NodeIndex::new(i as usize);
            order.push(NodeId(i));
            for e in self.graph.edges_directed(ix, Direction::Outgoing) {
                if let Some(d) = indeg.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(Reverse(e.target().index() as u32));
                    }
                }
            }
        }
        (order.len() == self.graph.node_count()).then_some(order)
    }

    /// The input normalisation of the first `input` node, if there is one.
    pub fn input_normalization(&self) -> Option<&Normalization> {
        self.inputs.first().and_then(|&i| match &self.node(i)?.op {
            Op::Input { norm, .. } => Some(norm),
            _ => None,
        })
    }

    /// Total number of scalar parameters in the weight table.
    pub fn parameter_count(&self) -> usize {
        self.weights.values().map(|t| t.len()).sum()
    }
}
