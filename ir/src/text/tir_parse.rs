//! Recursive-descent parser of the tensor-graph text form (`.tir`).
//!
//! Contract: [`parse_graph`] reads what [`super::print_graph`] writes and
//! returns a [`ParsedGraph`]: the graph with the same node ids (holes
//! included), names, ops, attributes, operand order, inputs and outputs, but
//! an empty weight table, plus the declared weight shapes. Attach the tensors
//! with [`ParsedGraph::into_graph`]. Shape annotations (`: [..]` after a node)
//! are accepted and ignored (the verifier recomputes them). Every node gets its
//! source span. Any input either parses or yields a [`TextError`] at the
//! offending token; the parser never panics.
//!
//! Grammar (informal):
//!
//! ```text
//! graph   := 'graph' STRING 'inputs' ids 'outputs' ids weight* node*
//! ids     := '[' ('%N'),* ']'
//! weight  := 'weight' STRING ':' dims
//! node    := '%N' '=' MNEMONIC STRING '(' ('%N'),* ')' attrs? (':' dims)?
//! attrs   := '{' (IDENT '=' value),* '}'
//! value   := NUM | STRING | IDENT | '[' value,* ']'
//! dims    := '[' INT,* ']'
//! ```

use super::cursor::Cursor;
use super::error::TextError;
use super::lexer::Tok;
use super::tir_print::{print_graph_with, WeightShapes};
use crate::tensor::{Granularity, Graph, Node, NodeId, Normalization, Op, Shape, Span, Weights};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// How many unused ids (holes) a text may leave below its highest id.
const MAX_HOLES: usize = 1 << 20;

/// A parsed tensor graph whose weights are declared but not attached.
#[derive(Clone, Debug)]
pub struct ParsedGraph {
    /// The graph (its weight table is empty).
    pub graph: Graph,
    /// Declared weights: name and shape, in name order.
    pub weights: WeightShapes,
}

/// A weight that does not match its declaration in [`ParsedGraph::into_graph`].
#[derive(Clone, Debug, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum BindError {
    /// A declared weight was not supplied.
    #[error("weight `{0}` is declared but not supplied")]
    #[diagnostic(code(hecc::text::missing_weight))]
    Missing(String),
    /// A supplied weight has another shape than declared.
    #[error("weight `{name}` is declared {declared} but supplied with shape {found}")]
    #[diagnostic(code(hecc::text::weight_shape))]
    Shape {
        /// Weight name.
        name: String,
        /// Declared shape.
        declared: Shape,
        /// Supplied shape.
        found: Shape,
    },
}

impl ParsedGraph {
    /// Attaches weight tensors: every declared weight must be present with its
    /// declared shape (all mismatches are returned); undeclared extra weights
    /// are kept as well.
    pub fn into_graph(self, weights: Weights) -> Result<Graph, Vec<BindError>> {
        let mut errors = Vec::new();
        for (name, declared) in &self.weights {
            match weights.get(name) {
                None => errors.push(BindError::Missing(name.clone())),
                Some(t) if t.shape() != declared.0.as_slice() => errors.push(BindError::Shape {
                    name: name.clone(),
                    declared: declared.clone(),
                    found: Shape(t.shape().to_vec()),
                }),
                Some(_) => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut g = self.graph;
        g.weights = weights;
        Ok(g)
    }
}

impl fmt::Display for ParsedGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_graph_with(&self.graph, &self.weights))
    }
}

#[derive(Clone, Debug)]
enum Value<'s> {
    Num(&'s str),
    Str(String),
    Ident(&'s str),
    List(Vec<(Value<'s>, Range<usize>)>),
}

struct Attrs<'s> {
    items: Vec<(&'s str, Value<'s>, Range<usize>, bool)>,
    at: Range<usize>,
    op: &'s str,
}

impl<'s> Attrs<'s> {
    fn take(
        &mut self,
        c: &Cursor<'_>,
        key: &str,
    ) -> Result<Option<(Value<'s>, Range<usize>)>, TextError> {
        let mut found = None;
        for item in self.items.iter_mut() {
            if item.0 == key {
                if item.3 {
                    return Err(
                        c.error_at(item.2.clone(), format!("attribute `{key}` is given twice"))
                    );
                }
                item.3 = true;
                found = Some((item.1.clone(), item.2.clone()));
            }
        }
        Ok(found)
    }

    fn req(&mut self, c: &Cursor<'_>, key: &str) -> Result<(Value<'s>, Range<usize>), TextError> {
        self.take(c, key)?.ok_or_else(|| {
            c.error_at(
                self.at.clone(),
                format!("`{}` needs attribute `{key}`", self.op),
            )
        })
    }

    fn finish(self, c: &Cursor<'_>) -> Result<(), TextError> {
        match self.items.iter().find(|i| !i.3) {
            Some(i) => Err(c.error_at(
                i.2.clone(),
                format!("unknown attribute `{}` for `{}`", i.0, self.op),
            )),
            None => Ok(()),
        }
    }
}

fn as_usize(
    c: &Cursor<'_>,
    v: &Value<'_>,
    span: &Range<usize>,
    key: &str,
) -> Result<usize, TextError> {
    match v {
        Value::Num(t) => t.parse::<usize>().map_err(|_| {
            c.error_at(
                span.clone(),
                format!("`{key}` must be a non-negative integer, found `{t}`"),
            )
        }),
        _ => Err(c.error_at(
            span.clone(),
            format!("`{key}` must be a non-negative integer"),
        )),
    }
}

fn as_f64(c: &Cursor<'_>, v: &Value<'_>, span: &Range<usize>, key: &str) -> Result<f64, TextError> {
    match v {
        Value::Num(t) => t.parse::<f64>().map_err(|_| {
            c.error_at(
                span.clone(),
                format!("`{key}` must be a number, found `{t}`"),
            )
        }),
        _ => Err(c.error_at(span.clone(), format!("`{key}` must be a number"))),
    }
}

fn as_list<'a, 's>(
    c: &Cursor<'_>,
    v: &'a Value<'s>,
    span: &Range<usize>,
    key: &str,
) -> Result<&'a [(Value<'s>, Range<usize>)], TextError> {
    match v {
        Value::List(items) => Ok(items),
        _ => Err(c.error_at(span.clone(), format!("`{key}` must be a list `[..]`"))),
    }
}

fn as_usizes(
    c: &Cursor<'_>,
    v: &Value<'_>,
    span: &Range<usize>,
    key: &str,
) -> Result<Vec<usize>, TextError> {
    as_list(c, v, span, key)?
        .iter()
        .map(|(x, s)| as_usize(c, x, s, key))
        .collect()
}

fn as_f64s(
    c: &Cursor<'_>,
    v: &Value<'_>,
    span: &Range<usize>,
    key: &str,
) -> Result<Vec<f64>, TextError> {
    as_list(c, v, span, key)?
        .iter()
        .map(|(x, s)| as_f64(c, x, s, key))
        .collect()
}

fn as_array<const N: usize>(
    c: &Cursor<'_>,
    v: &Value<'_>,
    span: &Range<usize>,
    key: &str,
) -> Result<[usize; N], TextError> {
    let xs = as_usizes(c, v, span, key)?;
    <[usize; N]>::try_from(xs.as_slice()).map_err(|_| {
        c.error_at(
            span.clone(),
            format!("`{key}` must have {N} entries, found {}", xs.len()),
        )
    })
}

fn as_string(
    c: &Cursor<'_>,
    v: &Value<'_>,
    span: &Range<usize>,
    key: &str,
) -> Result<String, TextError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(c.error_at(span.clone(), format!("`{key}` must be a string"))),
    }
}

fn parse_value<'s>(
    c: &mut Cursor<'s>,
    depth: usize,
) -> Result<(Value<'s>, Range<usize>), TextError> {
    let start = c.span().start;
    if depth > 32 {
        return Err(c.error_at(c.span(), "lists are nested too deeply"));
    }
    let v = match c.peek() {
        Some(Tok::Number(t)) => {
            c.bump();
            Value::Num(t)
        }
        Some(Tok::Str(_)) => Value::Str(c.string("a string")?.0),
        Some(Tok::Ident(t)) => {
            c.bump();
            Value::Ident(t)
        }
        Some(Tok::LBracket) => {
            c.bump();
            let mut items = Vec::new();
            if !c.eat(Tok::RBracket) {
                loop {
                    items.push(parse_value(c, depth + 1)?);
                    if c.eat(Tok::RBracket) {
                        break;
                    }
                    c.expect(Tok::Comma)?;
                }
            }
            Value::List(items)
        }
        _ => return Err(c.expected("an attribute value (number, string, name or list)")),
    };
    Ok((v, start..c.prev_end()))
}

fn parse_dims(c: &mut Cursor<'_>) -> Result<Shape, TextError> {
    c.expect(Tok::LBracket)?;
    let mut dims = Vec::new();
    if !c.eat(Tok::RBracket) {
        loop {
            dims.push(c.int::<usize>("a dimension")?);
            if c.eat(Tok::RBracket) {
                break;
            }
            c.expect(Tok::Comma)?;
        }
    }
    Ok(Shape(dims))
}

fn parse_ids(c: &mut Cursor<'_>) -> Result<Vec<(u32, Range<usize>)>, TextError> {
    c.expect(Tok::LBracket)?;
    let mut ids = Vec::new();
    if !c.eat(Tok::RBracket) {
        loop {
            ids.push(c.value_ref()?);
            if c.eat(Tok::RBracket) {
                break;
            }
            c.expect(Tok::Comma)?;
        }
    }
    Ok(ids)
}

struct RawNode {
    id: u32,
    node: Node,
    operands: Vec<(u32, Range<usize>)>,
}

/// Parses a tensor graph.
pub fn parse_graph(src: &str) -> Result<ParsedGraph, TextError> {
    let mut c = Cursor::new(src)?;
    c.keyword("graph")?;
    let (name, _) = c.string("the graph name (a string)")?;
    c.keyword("inputs")?;
    let inputs = parse_ids(&mut c)?;
    c.keyword("outputs")?;
    let outputs = parse_ids(&mut c)?;
    let mut weights = WeightShapes::new();
    while c.eat_keyword("weight") {
        let (wname, wspan) = c.string("the weight name (a string)")?;
        c.expect(Tok::Colon)?;
        let shape = parse_dims(&mut c)?;
        if weights.insert(wname.clone(), shape).is_some() {
            return Err(c.error_at(wspan, format!("weight `{wname}` is declared twice")));
        }
    }
    let mut raw: Vec<RawNode> = Vec::new();
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while !c.at_end() {
        let start = c.span().start;
        let (id, idspan) =
            match c.peek() {
                Some(Tok::Value(_)) => c.value_ref()?,
                _ => return Err(c.expected(
                    "a node definition `%N = ...` (graph, inputs, outputs and weights come first)",
                )),
            };
        if let Some(&first) = seen.get(&id) {
            let (line, _) = super::error::line_col(src, first);
            return Err(c.error_at(
                idspan,
                format!("node %{id} is already defined on line {line}"),
            ));
        }
        seen.insert(id, start);
        c.expect(Tok::Eq)?;
        let (mn, mspan) = c.ident("an op mnemonic")?;
        let (nname, _) = c.string("the node name (a string)")?;
        let mut operands = Vec::new();
        c.expect(Tok::LParen)?;
        if !c.eat(Tok::RParen) {
            loop {
                operands.push(c.value_ref()?);
                if c.eat(Tok::RParen) {
                    break;
                }
                c.expect(Tok::Comma)?;
            }
        }
        let mut items = Vec::new();
        if c.eat(Tok::LBrace) && !c.eat(Tok::RBrace) {
            loop {
                let (k, kspan) = c.ident("an attribute name")?;
                c.expect(Tok::Eq)?;
                let (v, vspan) = parse_value(&mut c, 0)?;
                items.push((k, v, kspan.start..vspan.end, false));
                if c.eat(Tok::RBrace) {
                    break;
                }
                c.expect(Tok::Comma)?;
            }
        }
        let attrs = Attrs {
            items,
            at: mspan.clone(),
            op: mn,
        };
        let op = build_op(&c, mn, mspan, attrs)?;
        if c.eat(Tok::Colon) {
            parse_dims(&mut c)?;
        }
        let end = c.prev_end();
        raw.push(RawNode {
            id,
            node: Node {
                name: nname,
                op,
                span: Some(Span::new(start, end - start)),
            },
            operands,
        });
    }
    let graph = build(&c, name, raw, inputs, outputs)?;
    Ok(ParsedGraph { graph, weights })
}

fn build(
    c: &Cursor<'_>,
    name: String,
    raw: Vec<RawNode>,
    inputs: Vec<(u32, Range<usize>)>,
    outputs: Vec<(u32, Range<usize>)>,
) -> Result<Graph, TextError> {
    let max = raw.iter().map(|n| n.id as usize + 1).max().unwrap_or(0);
    if max > raw.len() + MAX_HOLES {
        let worst = raw
            .iter()
            .max_by_key(|n| n.id)
            .and_then(|n| n.node.span)
            .map(|s| s.offset..s.offset + s.len)
            .unwrap_or(0..0);
        return Err(c.error_at(
            worst,
            format!("node ids are too sparse (more than {MAX_HOLES} unused ids)"),
        ));
    }
    let mut defined = vec![false; max];
    for n in &raw {
        defined[n.id as usize] = true;
    }
    let check = |r: u32, span: &Range<usize>| -> Result<(), TextError> {
        if defined.get(r as usize).copied().unwrap_or(false) {
            Ok(())
        } else {
            Err(c.error_at(span.clone(), format!("node %{r} is not defined")))
        }
    };
    for n in &raw {
        for (r, s) in &n.operands {
            check(*r, s)?;
        }
    }
    for (r, s) in inputs.iter().chain(outputs.iter()) {
        check(*r, s)?;
    }
    let mut by_id: Vec<Option<RawNode>> = (0..max).map(|_| None).collect();
    for n in raw {
        let i = n.id as usize;
        by_id[i] = Some(n);
    }
    let mut g = Graph::new(name);
    let mut holes = Vec::new();
    let mut edges = Vec::new();
    for (i, slot) in by_id.into_iter().enumerate() {
        let node = match slot {
            Some(n) => {
                for (k, (r, _)) in n.operands.iter().enumerate() {
                    edges.push((*r, i as u32, k as u32));
                }
                n.node
            }
            None => {
                holes.push(i);
                Node {
                    name: String::new(),
                    op: Op::Flatten,
                    span: None,
                }
            }
        };
        let ix = g.graph.add_node(node);
        if ix.index() != i {
            return Err(c.error_at(0..0, "internal: node ids could not be recreated"));
        }
    }
    for (from, to, slot) in edges {
        g.connect(NodeId(from), NodeId(to), slot);
    }
    for h in holes {
        g.graph.remove_node(NodeId(h as u32).index());
    }
    g.inputs = inputs.into_iter().map(|(r, _)| NodeId(r)).collect();
    g.outputs = outputs.into_iter().map(|(r, _)| NodeId(r)).collect();
    Ok(g)
}

fn build_op(
    c: &Cursor<'_>,
    mn: &str,
    mspan: Range<usize>,
    mut a: Attrs<'_>,
) -> Result<Op, TextError> {
    macro_rules! get {
        (usize $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_usize(c, &v, &s, $k)?
        }};
        (f64 $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_f64(c, &v, &s, $k)?
        }};
        (usizes $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_usizes(c, &v, &s, $k)?
        }};
        (f64s $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_f64s(c, &v, &s, $k)?
        }};
        (arr $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_array(c, &v, &s, $k)?
        }};
        (string $k:literal) => {{
            let (v, s) = a.req(c, $k)?;
            as_string(c, &v, &s, $k)?
        }};
        (opt_string $k:literal) => {{
            match a.take(c, $k)? {
                Some((v, s)) => Some(as_string(c, &v, &s, $k)?),
                None => None,
            }
        }};
    }
    let op = match mn {
        "input" => {
            let shape = Shape(get!(usizes "shape"));
            let mean = get!(f64s "mean");
            let std = get!(f64s "std");
            let range = match a.take(c, "range")? {
                Some((v, s)) => {
                    let r = as_f64s(c, &v, &s, "range")?;
                    Some(<[f64; 2]>::try_from(r.as_slice()).map_err(|_| {
                        c.error_at(
                            s.clone(),
                            format!("`range` must have 2 entries, found {}", r.len()),
                        )
                    })?)
                }
                None => None,
            };
            Op::Input {
                shape,
                norm: Normalization { mean, std, range },
            }
        }
        "conv2d" => Op::Conv2d {
            out_channels: get!(usize "out_channels"),
            kernel: get!(arr "kernel"),
            stride: get!(arr "stride"),
            padding: get!(arr "padding"),
            groups: get!(usize "groups"),
            weight: get!(string "weight"),
            bias: get!(opt_string "bias"),
        },
        "batch_norm" => Op::BatchNorm {
            gamma: get!(string "gamma"),
            beta: get!(string "beta"),
            mean: get!(string "mean"),
            var: get!(string "var"),
            epsilon: get!(f64 "epsilon"),
        },
        "dense" => Op::Dense {
            out_features: get!(usize "out_features"),
            weight: get!(string "weight"),
            bias: get!(opt_string "bias"),
        },
        "flatten" => Op::Flatten,
        "reshape" => Op::Reshape {
            shape: Shape(get!(usizes "shape")),
        },
        "avg_pool" => Op::AvgPool {
            kernel: get!(arr "kernel"),
            stride: get!(arr "stride"),
            padding: get!(arr "padding"),
        },
        "global_avg_pool" => Op::GlobalAvgPool,
        "max_pool" => Op::MaxPool {
            kernel: get!(arr "kernel"),
            stride: get!(arr "stride"),
            padding: get!(arr "padding"),
        },
        "concat" => Op::Concat {
            axis: get!(usize "axis"),
        },
        "add" => Op::Add,
        "scale" => Op::Scale {
            factor: get!(f64 "factor"),
        },
        "relu" => Op::Relu,
        "square" => Op::Square,
        "poly" => Op::Poly {
            coeffs: get!(f64s "coeffs"),
        },
        "quadratic" => {
            let (v, s) = a.req(c, "granularity")?;
            let granularity = match v {
                Value::Ident(t) => Granularity::parse(t),
                _ => None,
            }
            .ok_or_else(|| {
                c.error_at(s, "`granularity` must be `layer`, `channel` or `element`")
            })?;
            Op::Quadratic {
                granularity,
                coeffs: get!(string "coeffs"),
            }
        }
        other => {
            return Err(c.error_at(
                mspan,
                format!(
                    "unknown op `{other}` (known: {})",
                    crate::tensor::op::MNEMONICS.join(", ")
                ),
            ))
        }
    };
    a.finish(c)?;
    Ok(op)
}
