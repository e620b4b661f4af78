//! The YAML model-spec front end (format described in `docs/design/spec.md`).
//!
//! [`parse_spec`] turns spec text into a verified [`Graph`]. Syntax, type and unknown-key errors
//! come from serde_yaml with their location ([`FrontError::Yaml`]); semantic problems (unknown
//! op, bad or inapplicable attribute, undefined input, duplicate name, graph errors from the
//! verifier, unreadable weights file) are all collected into one [`FrontError::Invalid`], each
//! labelled at the node's `name:` entry (or the offending key) in the source. A node whose op
//! could not be understood is left out together with the nodes depending on it, so a single
//! mistake does not produce a cascade of follow-up errors.
//!
//! Numeric attributes that multiply the data (`factor`, poly `coeffs`, `epsilon`, the input
//! `mean`) must be finite and within
//! [`MAX_WEIGHT_MAGNITUDE`](crate::tensor::limits::MAX_WEIGHT_MAGNITUDE), and the input `std`
//! positive (see [`check_input_std`]). An otherwise valid spec whose weights file holds
//! tensors `<layer>.<param>` of layers the spec does not have is refused: that is usually a
//! truncated spec, or one written for another weights file.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use serde::Deserialize;

use super::weights::load_weights;
use super::{suggest, FrontError, Problem, SpecError};
use crate::tensor::limits::{check_activation, check_input_std, check_multipliers, fmt_value};
use crate::tensor::op::MNEMONICS;
use crate::tensor::verify::analyze;
use crate::tensor::{
    DanglingOperand, Granularity, Graph, GraphError, NodeId, Normalization, Op, Shape, Span,
};

/// A number or a list of numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<f64> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `k` or `[a, b]` or `[a, b, c, d]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Ints {
    One(usize),
    Many(Vec<usize>),
}

/// `true`/`false` or a weight name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BoolOrName {
    Bool(bool),
    Name(String),
}

/// Poly coefficients (a list) or a quadratic's coefficient-tensor name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Coeffs {
    List(Vec<f64>),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    name: Option<String>,
    shape: Vec<usize>,
    mean: Option<OneOrMany>,
    std: Option<OneOrMany>,
    range: Option<[f64; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    name: String,
    op: String,
    inputs: Option<Vec<String>>,
    out_channels: Option<usize>,
    out_features: Option<usize>,
    kernel: Option<Ints>,
    stride: Option<Ints>,
    padding: Option<Ints>,
    groups: Option<usize>,
    weight: Option<String>,
    bias: Option<BoolOrName>,
    gamma: Option<String>,
    beta: Option<String>,
    mean: Option<String>,
    var: Option<String>,
    epsilon: Option<f64>,
    shape: Option<Vec<usize>>,
    axis: Option<usize>,
    factor: Option<f64>,
    coeffs: Option<Coeffs>,
    granularity: Option<String>,
    /// Free text, ignored.
    #[allow(dead_code)]
    doc: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    input: InputSpec,
    weights: Option<String>,
    layers: Option<Vec<NodeSpec>>,
    graph: Option<Vec<NodeSpec>>,
    outputs: Option<Vec<String>>,
}

/// Byte spans of the spec source: node `name:` values and keys inside a node's text.
struct SourceMap<'a> {
    src: &'a str,
}

impl<'a> SourceMap<'a> {
    /// Span of a top-level key (`key:` at column 0).
    fn top_key(&self, key: &str) -> Option<Span> {
        let mut off = 0;
        for line in self.src.split_inclusive('\n') {
            if line.starts_with(&format!("{key}:")) {
                return Some(Span::new(off, key.len()));
            }
            off += line.len();
        }
        None
    }

    /// The span of the scalar after `key:` within `region`, e.g. the value of `weights:`.
    fn value_after(&self, region: (usize, usize), key: &str) -> Option<Span> {
        let k = self.key_in(region, key)?;
        let rest = &self.src[k.offset + k.len..region.1];
        let rest_trim = rest.strip_prefix(':')?;
        let lead = rest_trim.len() - rest_trim.trim_start_matches([' ', '\t']).len();
        let start = k.offset + k.len + 1 + lead;
        let tail = &self.src[start..region.1];
        let len = tail.find(['\n', ',', '}', '#']).unwrap_or(tail.len());
        let token = tail[..len].trim_end();
        Some(Span::new(start, token.len().max(1)))
    }

    /// Span of `key` (followed by `:`) as a whole word in `region`.
    fn key_in(&self, region: (usize, usize), key: &str) -> Option<Span> {
        let text = self.src.get(region.0..region.1)?;
        let mut from = 0;
        while let Some(p) = text[from..].find(key) {
            let at = from + p;
            let before_ok = at == 0
                || !text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let after = &text[at + key.len()..];
            if before_ok && after.trim_start_matches([' ', '\t']).starts_with(':') {
                return Some(Span::new(region.0 + at, key.len()));
            }
            from = at + key.len();
        }
        None
    }

    /// Span of the word `word` in `region` (for input references).
    fn word_in(&self, region: (usize, usize), word: &str) -> Option<Span> {
        let text = self.src.get(region.0..region.1)?;
        let is_id = |c: char| c.is_alphanumeric() || c == '_' || c == '.' || c == '-';
        let mut from = 0;
        while let Some(p) = text[from..].find(word) {
            let at = from + p;
            let before = text[..at].chars().next_back();
            let after = text[at + word.len()..].chars().next();
            if !before.is_some_and(is_id) && !after.is_some_and(is_id) {
                return Some(Span::new(region.0 + at, word.len()));
            }
            from = at + word.len().max(1);
        }
        None
    }

    /// Spans of each node's `name:` value, found in order after `start`.
    fn node_spans(&self, names: &[&str], start: usize) -> Vec<Option<Span>> {
        let mut cursor = start;
        names
            .iter()
            .map(|name| {
                let found = self.find_name_entry(name, cursor);
                if let Some(s) = found {
                    cursor = s.offset + s.len;
                }
                found
            })
            .collect()
    }

    fn find_name_entry(&self, name: &str, from: usize) -> Option<Span> {
        let mut pos = from;
        while let Some(p) = self.src.get(pos..)?.find("name:") {
            let at = pos + p;
            let before = self.src[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                pos = at + 5;
                continue;
            }
            let val = self.value_after((at, self.src.len()), "name")?;
            let text = self.src[val.offset..val.offset + val.len].trim_matches(['"', '\'']);
            if text == name {
                return Some(val);
            }
            pos = at + 5;
        }
        None
    }
}

fn yaml_error(e: serde_yaml::Error, src: &str, name: &str) -> FrontError {
    let mut message = e.to_string();
    // serde_yaml appends " at line L column C"; the label shows the location instead.
    if let Some(p) = message.find(" at line ") {
        message.truncate(p);
    }
    // Offset from line and column (libyaml counts columns in characters).
    let span = e.location().map(|l| {
        let line_start = src
            .split_inclusive('\n')
            .take(l.line().saturating_sub(1))
            .map(str::len)
            .sum::<usize>();
        let line = &src[line_start..];
        let off = line_start
            + line
                .char_indices()
                .nth(l.column().saturating_sub(1))
                .map(|(i, _)| i)
                .unwrap_or(line.len());
        let len = src[off..]
            .find(['\n', ',', '}', ']'])
            .unwrap_or(src.len() - off)
            .min(40);
        SourceSpan::new(off.into(), len)
    });
    FrontError::Yaml {
        message,
        src: Arc::new(NamedSource::new(name, src.to_string())),
        span,
    }
}

/// Parses a YAML model spec named `name` (used in diagnostics). Weights are read from the
/// `weights:` path (relative to `base_dir`) or, by default, `<stem>.safetensors` then
/// `<stem>.npz` next to the spec, where `<stem>` is the file stem of `name`.
pub fn parse_spec(src: &str, name: &str, base_dir: Option<&Path>) -> Result<Graph, FrontError> {
    parse_impl(src, name, base_dir, true)
}

/// Parses a spec without loading any weights file and without reporting missing weights (the
/// graph's weight table stays empty). Used to generate weights for a spec and to inspect
/// shapes; every other check is done as in [`parse_spec`].
pub fn parse_spec_structure(src: &str, name: &str) -> Result<Graph, FrontError> {
    parse_impl(src, name, None, false)
}

fn parse_impl(
    src: &str,
    name: &str,
    base_dir: Option<&Path>,
    load: bool,
) -> Result<Graph, FrontError> {
    let spec: SpecFile = serde_yaml::from_str(src).map_err(|e| yaml_error(e, src, name))?;
    let map = SourceMap { src };
    let mut problems: Vec<Problem> = Vec::new();
    let structure = |message: String, span: Option<Span>, help: Option<&str>| {
        Problem::Spec(SpecError::Structure {
            message,
            span: span.map(Into::into),
            help: help.map(str::to_string),
        })
    };

    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .to_string();
    let model_name = spec.name.clone().unwrap_or_else(|| stem.clone());
    let mut g = Graph::new(model_name.clone());

    // Node list: exactly one of `layers:` and `graph:`.
    let (nodes, explicit_inputs, list_key) = match (spec.layers, spec.graph) {
        (Some(l), None) => (l, false, "layers"),
        (None, Some(gr)) => (gr, true, "graph"),
        (Some(l), Some(_)) => {
            problems.push(structure(
                "the spec has both `layers:` and `graph:`".into(),
                map.top_key("graph"),
                Some(
                    "use `layers:` for a sequential network or `graph:` for named inputs, not both",
                ),
            ));
            (l, false, "layers")
        }
        (None, None) => {
            problems.push(structure(
                "the spec has neither `layers:` nor `graph:`".into(),
                None,
                Some("add a `layers:` list (sequential) or a `graph:` list (nodes with `inputs:`)"),
            ));
            (Vec::new(), false, "layers")
        }
    };
    let list_start = map.top_key(list_key).map(|s| s.offset).unwrap_or(0);

    // Input node.
    let input_region = map
        .top_key("input")
        .map(|s| (s.offset, src.len()))
        .unwrap_or((0, src.len()));
    let input_span = map.top_key("input");
    let input_name = spec.input.name.clone().unwrap_or_else(|| "input".into());
    let problems_before_input = problems.len();
    if spec.input.shape.is_empty() || spec.input.shape.contains(&0) {
        problems.push(structure(
            format!(
                "input `shape` {:?} must be non-empty with positive dimensions",
                spec.input.shape
            ),
            map.key_in(input_region, "shape").or(input_span),
            Some("e.g. `shape: [3, 32, 32]` (C, H, W) or `shape: [784]`"),
        ));
    } else if let Err(m) = check_activation(&spec.input.shape) {
        problems.push(structure(
            format!("input `{input_name}`: `shape` is too large: {m}"),
            map.key_in(input_region, "shape").or(input_span),
            Some("hecc refuses inputs this large before allocating them (see hecc_ir::tensor::limits)"),
        ));
    }
    let c = spec.input.shape.first().copied().unwrap_or(1);
    let mean = spec
        .input
        .mean
        .map(OneOrMany::into_vec)
        .unwrap_or(vec![0.0]);
    let std = spec.input.std.map(OneOrMany::into_vec).unwrap_or(vec![1.0]);
    for (key, v) in [("mean", &mean), ("std", &std)] {
        if v.len() != 1 && v.len() != c {
            problems.push(structure(
                format!(
                    "input `{key}` has {} values; expected 1 or one per channel ({c})",
                    v.len()
                ),
                map.key_in(input_region, key).or(input_span),
                None,
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            problems.push(structure(
                format!("input `{key}` must be finite"),
                map.key_in(input_region, key).or(input_span),
                None,
            ));
        }
    }
    // The input node multiplies by `1 / std` and adds `-mean / std`: bounded magnitudes and a
    // positive std (non-finite values were reported above).
    for (key, v) in [("mean", &mean), ("std", &std)] {
        if !v.iter().all(|x| x.is_finite()) {
            continue;
        }
        let r = if key == "mean" {
            check_multipliers(key, v, v.len() > 1)
        } else {
            check_input_std(key, v)
        };
        if let Err(m) = r {
            problems.push(structure(
                format!("input {m}"),
                map.key_in(input_region, key).or(input_span),
                None,
            ));
        }
    }
    if let Some([lo, hi]) = spec.input.range {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            problems.push(structure(
                format!("input `range` [{lo}, {hi}] must be finite with lo < hi"),
                map.key_in(input_region, "range").or(input_span),
                None,
            ));
        }
    }
    let input_reported = problems.len() > problems_before_input;
    let input_id = g.add_node_spanned(
        input_name.clone(),
        Op::Input {
            shape: Shape(spec.input.shape.clone()),
            norm: Normalization {
                mean,
                std,
                range: spec.input.range,
            },
        },
        &[],
        input_span,
    );

    // Spans and regions of nodes.
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let spans = map.node_spans(&names, list_start);
    let regions: Vec<(usize, usize)> = (0..nodes.len())
        .map(|i| {
            let start = spans[i].map(|s| s.offset).unwrap_or(list_start);
            // The entry may start before `name:` (e.g. `- op: relu\n  name: r`): back up to
            // the list item dash.
            let start = src[..start]
                .rfind("- ")
                .filter(|&d| d >= list_start)
                .unwrap_or(start);
            let end = spans[i + 1..]
                .iter()
                .flatten()
                .next()
                .map(|s| src[..s.offset].rfind("- ").unwrap_or(s.offset))
                .unwrap_or(src.len());
            (start, end.max(start))
        })
        .collect();

    // Operand names of each node (explicit, or the previous node in `layers:`).
    let operand_names: Vec<Vec<String>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match &n.inputs {
            Some(v) => v.clone(),
            None if explicit_inputs => Vec::new(),
            None if i == 0 => vec![input_name.clone()],
            None => vec![nodes[i - 1].name.clone()],
        })
        .collect();

    // Ops.
    let mut failed: HashSet<String> = HashSet::new();
    let mut ops: Vec<Option<Op>> = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let inputs_missing = explicit_inputs && n.inputs.is_none();
        if inputs_missing {
            problems.push(Problem::Spec(SpecError::Attribute {
                node: n.name.clone(),
                op: n.op.clone(),
                message: "missing `inputs` (required in the `graph:` form)".into(),
                span: spans[i].map(Into::into),
                label: "no `inputs:`".into(),
                help: Some("list the operand node names, e.g. `inputs: [conv1]`".into()),
            }));
        }
        match build_op(n, &map, regions[i], spans[i]) {
            Ok(op) if !inputs_missing => ops.push(Some(op)),
            Ok(_) => {
                failed.insert(n.name.clone());
                ops.push(None);
            }
            Err(errs) => {
                problems.extend(errs);
                failed.insert(n.name.clone());
                ops.push(None);
            }
        }
    }
    // Nodes depending on a failed node are left out silently (no cascade).
    loop {
        let before = failed.len();
        for (i, n) in nodes.iter().enumerate() {
            if !failed.contains(&n.name) && operand_names[i].iter().any(|o| failed.contains(o)) {
                failed.insert(n.name.clone());
            }
        }
        if failed.len() == before {
            break;
        }
    }

    // Build nodes, then edges by name (forward references are allowed, so cycles are
    // representable and reported by the verifier).
    let mut ids: HashMap<String, NodeId> = HashMap::new();
    ids.insert(input_name.clone(), input_id);
    let mut node_ids: Vec<Option<NodeId>> = Vec::with_capacity(nodes.len());
    for (i, (n, op)) in nodes.iter().zip(ops).enumerate() {
        match op {
            Some(op) if !failed.contains(&n.name) => {
                let id = g.add_node_spanned(n.name.clone(), op, &[], spans[i]);
                ids.entry(n.name.clone()).or_insert(id);
                node_ids.push(Some(id));
            }
            _ => node_ids.push(None),
        }
    }
    for (i, id) in node_ids.iter().enumerate() {
        let Some(id) = *id else { continue };
        for (slot, o) in operand_names[i].iter().enumerate() {
            match ids.get(o) {
                Some(&src_id) => g.connect(src_id, id, slot as u32),
                None => g.dangling.push(DanglingOperand {
                    node: id,
                    slot: slot as u32,
                    reference: o.clone(),
                    span: map
                        .key_in(regions[i], "inputs")
                        .and_then(|k| map.word_in((k.offset, regions[i].1), o))
                        .or(spans[i]),
                }),
            }
        }
    }

    // Outputs.
    match &spec.outputs {
        Some(outs) => {
            let region = map
                .top_key("outputs")
                .map(|s| (s.offset, src.len()))
                .unwrap_or((0, src.len()));
            for (index, o) in outs.iter().enumerate() {
                match ids.get(o) {
                    Some(&id) => g.add_output(id),
                    None if failed.contains(o) => {}
                    None => problems.push(Problem::Graph(GraphError::DanglingOutput {
                        index,
                        reference: o.clone(),
                        span: map.word_in(region, o).map(Into::into),
                    })),
                }
            }
        }
        None => {
            if let Some(last) = node_ids.last() {
                if let Some(id) = last {
                    g.add_output(*id);
                }
            } else {
                g.add_output(input_id);
            }
        }
    }

    // Weights.
    let needs_weights = g
        .node_ids()
        .any(|id| g.node(id).is_some_and(|n| !n.op.weight_refs().is_empty()));
    let mut weights_ok = load;
    let base = base_dir.unwrap_or(Path::new(""));
    let weights_path = match &spec.weights {
        Some(p) => Some((p.clone(), true)),
        None => ["safetensors", "npz"]
            .iter()
            .map(|ext| format!("{stem}.{ext}"))
            .find(|p| base.join(p).exists())
            .map(|p| (p, false))
            .or_else(|| needs_weights.then(|| (format!("{stem}.safetensors"), false))),
    };
    let mut loaded: Option<(String, bool)> = None;
    if let Some((p, explicit)) = weights_path.filter(|_| load) {
        match load_weights(&base.join(&p)) {
            Ok(w) => {
                g.weights = w;
                loaded = Some((p.clone(), explicit));
            }
            Err(source) => {
                weights_ok = false;
                problems.push(Problem::Spec(SpecError::WeightsFile {
                    path: p.clone(),
                    source,
                    span: if explicit {
                        map.top_key("weights")
                            .and_then(|k| map.value_after((k.offset, src.len()), "weights"))
                            .map(Into::into)
                    } else {
                        None
                    },
                    help: (!explicit).then(|| {
                        "weights default to `<spec stem>.safetensors` (or `.npz`) next to the \
                         spec; set `weights:` to use another file"
                            .to_string()
                    }),
                }));
            }
        }
    }

    // Verify.
    let (_, errors) = analyze(&g);
    problems.extend(
        errors
            .into_iter()
            .filter(|e| weights_ok || !matches!(e, GraphError::MissingWeight { .. }))
            // Normalisation problems were reported above with the offending key.
            .filter(|e| {
                !(input_reported
                    && matches!(e, GraphError::InvalidAttribute { id, .. }
                        | GraphError::TooLarge { id, .. } if *id == input_id))
            })
            // With a node left out, the missing default output is a follow-up error.
            .filter(|e| failed.is_empty() || !matches!(e, GraphError::NoOutputs))
            .map(Problem::Graph),
    );
    // Tensors of layers the spec does not have (checked on an otherwise valid spec: a node
    // left out for another problem would make its weights look unused).
    if let Some((p, explicit)) = loaded.filter(|_| problems.is_empty()) {
        let mut layers: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        layers.insert(input_name.as_str());
        if let Some(problem) = unused_weights(&g, &layers, &p) {
            let span = explicit
                .then(|| {
                    map.top_key("weights")
                        .and_then(|k| map.value_after((k.offset, src.len()), "weights"))
                })
                .flatten();
            problems.push(Problem::Spec(SpecError::Structure {
                message: problem.0,
                span: span.map(Into::into),
                help: Some(problem.1),
            }));
        }
    }
    // Report in source order (unlocated problems last).
    problems.sort_by_key(|p| first_offset(p).unwrap_or(usize::MAX));
    if problems.is_empty() {
        Ok(g)
    } else {
        Err(FrontError::Invalid {
            model: model_name,
            src: Some(Arc::new(NamedSource::new(name, src.to_string()))),
            problems,
        })
    }
}

/// The tensors of `g`'s weight table that no node reads and whose name is `<layer>.<param>`
/// for a `<layer>` that is not a node of the spec (`layers`): weights left over from layers the
/// spec does not have, which usually means a truncated spec or one written for another weights
/// file. Returns the message and the help, or `None`. Other unused tensors (a `<layer>.<param>`
/// of an existing layer that names another tensor, or a name without a dot) are allowed: a
/// weights file may hold alternatives or bookkeeping (`bn.num_batches_tracked`).
fn unused_weights(g: &Graph, layers: &HashSet<&str>, path: &str) -> Option<(String, String)> {
    let used: HashSet<&str> = g
        .node_ids()
        .filter_map(|id| g.node(id))
        .flat_map(|n| n.op.weight_refs().into_iter().map(|(_, w)| w))
        .collect();
    fn missing_layer<'a>(name: &'a str, layers: &HashSet<&str>) -> Option<&'a str> {
        name.rsplit_once('.')
            .map(|(layer, _)| layer)
            .filter(|layer| !layer.is_empty() && !layers.contains(layer))
    }
    let unused: Vec<&str> = g
        .weights
        .keys()
        .map(String::as_str)
        .filter(|w| !used.contains(w) && missing_layer(w, layers).is_some())
        .collect();
    if unused.is_empty() {
        return None;
    }
    const SHOWN: usize = 10;
    let mut list: Vec<String> = unused
        .iter()
        .take(SHOWN)
        .map(|w| format!("`{w}`"))
        .collect();
    if unused.len() > SHOWN {
        list.push(format!("and {} more", unused.len() - SHOWN));
    }
    let mut absent: Vec<&str> = Vec::new();
    for l in unused.iter().filter_map(|w| missing_layer(w, layers)) {
        if !absent.contains(&l) {
            absent.push(l);
        }
    }
    let absent: Vec<String> = absent
        .iter()
        .take(SHOWN)
        .map(|l| format!("`{l}`"))
        .collect();
    Some((
        format!(
            "weights file `{path}` has {} tensor(s) no layer uses: {}",
            unused.len(),
            list.join(", ")
        ),
        format!(
            "the spec has no layer {}: it may be truncated, or written for another weights \
             file; add the missing layers or remove their tensors from the weights file",
            absent.join(", ")
        ),
    ))
}

/// Offset of the first label of a problem, for sorting.
fn first_offset(p: &Problem) -> Option<usize> {
    use miette::Diagnostic;
    p.labels()?.map(|l| l.offset()).min()
}

/// Builds the op of one node spec, or every problem with it.
fn build_op(
    n: &NodeSpec,
    map: &SourceMap<'_>,
    region: (usize, usize),
    name_span: Option<Span>,
) -> Result<Op, Vec<Problem>> {
    let mut errs: Vec<Problem> = Vec::new();
    let key_span = |k: &str| map.key_in(region, k).or(name_span).map(SourceSpan::from);
    let attr_err = |key: &str, message: String, label: &str, help: Option<String>| {
        Problem::Spec(SpecError::Attribute {
            node: n.name.clone(),
            op: n.op.clone(),
            message,
            span: key_span(key),
            label: label.to_string(),
            help,
        })
    };

    if !MNEMONICS.contains(&n.op.as_str()) {
        let help = match suggest(&n.op, MNEMONICS) {
            Some(s) => format!("did you mean `{s}`? known ops: {}", MNEMONICS.join(", ")),
            None => format!("known ops: {}", MNEMONICS.join(", ")),
        };
        return Err(vec![Problem::Graph(GraphError::UnknownOp {
            node: n.name.clone(),
            op: n.op.clone(),
            help: Some(help),
            span: map.value_after(region, "op").or(name_span).map(Into::into),
        })]);
    }

    // Attributes present, and those the op accepts.
    let present: Vec<(&str, bool)> = vec![
        ("out_channels", n.out_channels.is_some()),
        ("out_features", n.out_features.is_some()),
        ("kernel", n.kernel.is_some()),
        ("stride", n.stride.is_some()),
        ("padding", n.padding.is_some()),
        ("groups", n.groups.is_some()),
        ("weight", n.weight.is_some()),
        ("bias", n.bias.is_some()),
        ("gamma", n.gamma.is_some()),
        ("beta", n.beta.is_some()),
        ("mean", n.mean.is_some()),
        ("var", n.var.is_some()),
        ("epsilon", n.epsilon.is_some()),
        ("shape", n.shape.is_some()),
        ("axis", n.axis.is_some()),
        ("factor", n.factor.is_some()),
        ("coeffs", n.coeffs.is_some()),
        ("granularity", n.granularity.is_some()),
    ];
    let accepted: &[&str] = match n.op.as_str() {
        "conv2d" => &[
            "out_channels",
            "kernel",
            "stride",
            "padding",
            "groups",
            "weight",
            "bias",
        ],
        "batch_norm" => &["gamma", "beta", "mean", "var", "epsilon"],
        "dense" => &["out_features", "weight", "bias"],
        "reshape" => &["shape"],
        "avg_pool" | "max_pool" => &["kernel", "stride", "padding"],
        "concat" => &["axis"],
        "scale" => &["factor"],
        "poly" => &["coeffs"],
        "quadratic" => &["granularity", "coeffs"],
        _ => &[],
    };
    for (k, is) in &present {
        if *is && !accepted.contains(k) {
            errs.push(attr_err(
                k,
                format!("attribute `{k}` does not apply to `{}`", n.op),
                "not an attribute of this op",
                Some(if accepted.is_empty() {
                    format!("`{}` takes no attributes", n.op)
                } else {
                    format!("`{}` accepts: {}", n.op, accepted.join(", "))
                }),
            ));
        }
    }

    let pair =
        |key: &str, v: &Option<Ints>, default: Option<[usize; 2]>, errs: &mut Vec<Problem>| match v
        {
            None => default,
            Some(Ints::One(k)) => Some([*k, *k]),
            Some(Ints::Many(v)) if v.len() == 2 => Some([v[0], v[1]]),
            Some(Ints::Many(v)) => {
                errs.push(attr_err(
                    key,
                    format!(
                        "`{key}` must be an integer or a pair [h, w], got {} values",
                        v.len()
                    ),
                    "malformed",
                    None,
                ));
                None
            }
        };
    let padding = |errs: &mut Vec<Problem>| -> [usize; 4] {
        match &n.padding {
            None => [0; 4],
            Some(Ints::One(p)) => [*p; 4],
            Some(Ints::Many(v)) if v.len() == 2 => [v[0], v[1], v[0], v[1]],
            Some(Ints::Many(v)) if v.len() == 4 => [v[0], v[1], v[2], v[3]],
            Some(Ints::Many(v)) => {
                errs.push(attr_err(
                    "padding",
                    format!(
                        "`padding` must be p, [ph, pw] or [top, left, bottom, right], got {} values",
                        v.len()
                    ),
                    "malformed",
                    None,
                ));
                [0; 4]
            }
        }
    };
    let required = |key: &str, errs: &mut Vec<Problem>| {
        errs.push(attr_err(
            key,
            format!("`{}` requires attribute `{key}`", n.op),
            "missing attribute",
            None,
        ));
    };
    let positive = |key: &str, v: usize, errs: &mut Vec<Problem>| {
        if v == 0 {
            errs.push(attr_err(
                key,
                format!("`{key}` must be at least 1"),
                "zero",
                None,
            ));
        }
    };
    let wname = |explicit: &Option<String>, suffix: &str| {
        explicit
            .clone()
            .unwrap_or_else(|| format!("{}.{suffix}", n.name))
    };
    let bias = match &n.bias {
        None | Some(BoolOrName::Bool(true)) => Some(format!("{}.bias", n.name)),
        Some(BoolOrName::Bool(false)) => None,
        Some(BoolOrName::Name(s)) => Some(s.clone()),
    };

    let op = match n.op.as_str() {
        "input" => {
            errs.push(attr_err(
                "op",
                "`input` nodes are declared by the top-level `input:` key".into(),
                "not allowed here",
                None,
            ));
            None
        }
        "conv2d" => {
            let kernel = pair("kernel", &n.kernel, None, &mut errs);
            if n.kernel.is_none() {
                required("kernel", &mut errs);
            }
            let stride = pair("stride", &n.stride, Some([1, 1]), &mut errs);
            let padding = padding(&mut errs);
            if n.out_channels.is_none() {
                required("out_channels", &mut errs);
            }
            for (k, v) in [("stride", stride), ("kernel", kernel)] {
                if let Some([a, b]) = v {
                    positive(k, a.min(b), &mut errs);
                }
            }
            if let Some(oc) = n.out_channels {
                positive("out_channels", oc, &mut errs);
            }
            if let Some(gr) = n.groups {
                positive("groups", gr, &mut errs);
            }
            match (kernel, stride, n.out_channels) {
                (Some(kernel), Some(stride), Some(out_channels)) => Some(Op::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups: n.groups.unwrap_or(1),
                    weight: wname(&n.weight, "weight"),
                    bias,
                }),
                _ => None,
            }
        }
        "batch_norm" => {
            let epsilon = n.epsilon.unwrap_or(1e-5);
            if epsilon < 0.0 {
                errs.push(attr_err(
                    "epsilon",
                    format!("`epsilon` must be non-negative, got {}", fmt_value(epsilon)),
                    "invalid",
                    None,
                ));
            } else if let Err(m) = check_multipliers("epsilon", &[epsilon], false) {
                errs.push(attr_err("epsilon", m, "invalid", None));
            }
            Some(Op::BatchNorm {
                gamma: wname(&n.gamma, "weight"),
                beta: wname(&n.beta, "bias"),
                mean: wname(&n.mean, "running_mean"),
                var: wname(&n.var, "running_var"),
                epsilon,
            })
        }
        "dense" => match n.out_features {
            None => {
                required("out_features", &mut errs);
                None
            }
            Some(out_features) => {
                positive("out_features", out_features, &mut errs);
                Some(Op::Dense {
                    out_features,
                    weight: wname(&n.weight, "weight"),
                    bias,
                })
            }
        },
        "flatten" => Some(Op::Flatten),
        "reshape" => match &n.shape {
            None => {
                required("shape", &mut errs);
                None
            }
            Some(s) => Some(Op::Reshape {
                shape: Shape(s.clone()),
            }),
        },
        "avg_pool" | "max_pool" => {
            let kernel = pair("kernel", &n.kernel, None, &mut errs);
            if n.kernel.is_none() {
                required("kernel", &mut errs);
            }
            let stride = pair("stride", &n.stride, kernel, &mut errs);
            let padding = padding(&mut errs);
            for (k, v) in [("stride", stride), ("kernel", kernel)] {
                if let Some([a, b]) = v {
                    positive(k, a.min(b), &mut errs);
                }
            }
            match (kernel, stride) {
                (Some(kernel), Some(stride)) if n.op == "avg_pool" => Some(Op::AvgPool {
                    kernel,
                    stride,
                    padding,
                }),
                (Some(kernel), Some(stride)) => Some(Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                }),
                _ => None,
            }
        }
        "global_avg_pool" => Some(Op::GlobalAvgPool),
        "concat" => Some(Op::Concat {
            axis: n.axis.unwrap_or(0),
        }),
        "add" => Some(Op::Add),
        "scale" => match n.factor {
            None => {
                required("factor", &mut errs);
                None
            }
            Some(factor) => match check_multipliers("factor", &[factor], false) {
                Ok(()) => Some(Op::Scale { factor }),
                Err(m) => {
                    errs.push(attr_err("factor", m, "invalid factor", None));
                    None
                }
            },
        },
        "relu" => Some(Op::Relu),
        "square" => Some(Op::Square),
        "poly" => match &n.coeffs {
            Some(Coeffs::List(c)) if !c.is_empty() => match check_multipliers("coeffs", c, true) {
                Ok(()) => Some(Op::Poly { coeffs: c.clone() }),
                Err(m) => {
                    errs.push(attr_err("coeffs", m, "invalid coefficient", None));
                    None
                }
            },
            Some(_) => {
                errs.push(attr_err(
                    "coeffs",
                    "`poly` needs `coeffs` as a non-empty list of numbers (ascending powers)"
                        .into(),
                    "expected a list of numbers",
                    None,
                ));
                None
            }
            None => {
                required("coeffs", &mut errs);
                None
            }
        },
        "quadratic" => {
            let granularity = match n.granularity.as_deref().map(|s| (s, Granularity::parse(s))) {
                None => {
                    required("granularity", &mut errs);
                    None
                }
                Some((_, Some(gr))) => Some(gr),
                Some((s, None)) => {
                    errs.push(attr_err(
                        "granularity",
                        format!("unknown granularity `{s}`"),
                        "unknown granularity",
                        Some("expected `layer`, `channel` or `element`".into()),
                    ));
                    None
                }
            };
            let coeffs = match &n.coeffs {
                None => Some(format!("{}.coeffs", n.name)),
                Some(Coeffs::Name(s)) => Some(s.clone()),
                Some(Coeffs::List(_)) => {
                    errs.push(attr_err(
                        "coeffs",
                        "`quadratic` takes `coeffs` as a weight name (the [3, ...] tensor), \
                         not a list"
                            .into(),
                        "expected a weight name",
                        Some("for fixed coefficients use `op: poly`".into()),
                    ));
                    None
                }
            };
            match (granularity, coeffs) {
                (Some(granularity), Some(coeffs)) => Some(Op::Quadratic {
                    granularity,
                    coeffs,
                }),
                _ => None,
            }
        }
        _ => None,
    };
    match op {
        Some(op) if errs.is_empty() => Ok(op),
        _ => Err(errs),
    }
}
