//! Writing trained weights and specs, and checking them against the reference evaluator.
//!
//! [`weights_bytes`] serialises a trained graph's weight table as `f32` safetensors under the
//! spec's names. When training changed the network's structure (a `--granularity` override),
//! [`spec_yaml`] writes an equivalent spec in the general `graph:` form that names the weights
//! file, so the trained model loads with `hecc_ir::front::load_model` without conversion.
//! [`eval_predictions`] runs [`hecc_ir::tensor::eval::eval_batch`] on a dataset: the check that
//! exported weights reproduce the trainer's predictions.

use std::fmt::Write as _;

use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op};

use crate::data::Dataset;
use crate::TrainError;

/// The weight table of `graph` as `f32` safetensors bytes.
pub fn weights_bytes(graph: &Graph) -> Result<Vec<u8>, TrainError> {
    hecc_ir::front::weights::write_safetensors_f32(&graph.weights).map_err(|e| TrainError::Weight {
        name: "*".into(),
        message: e.to_string(),
    })
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn fnum(x: f64) -> String {
    // `{:?}` keeps a decimal point and round-trips f64.
    format!("{x:?}")
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A YAML spec (general `graph:` form) equivalent to `graph`, reading its weights from
/// `weights_file` (relative to the spec's directory).
pub fn spec_yaml(
    graph: &Graph,
    weights_file: &str,
    description: &str,
) -> Result<String, TrainError> {
    let order = graph
        .topo_order()
        .ok_or_else(|| TrainError::Graph("the graph has a cycle".into()))?;
    let mut s = String::new();
    let w = |s: &mut String, t: String| {
        s.push_str(&t);
    };
    w(&mut s, format!("name: {}\n", quote(&graph.name)));
    w(&mut s, format!("description: {}\n", quote(description)));
    let input = graph
        .inputs
        .first()
        .and_then(|&i| graph.node(i))
        .ok_or_else(|| TrainError::Graph("the graph has no input".into()))?;
    let Op::Input { shape, norm } = &input.op else {
        return Err(TrainError::Graph(
            "the first input is not an input node".into(),
        ));
    };
    w(&mut s, "input:\n".into());
    w(&mut s, format!("  name: {}\n", quote(&input.name)));
    w(&mut s, format!("  shape: {}\n", list(shape)));
    let fl = |v: &[f64]| list(&v.iter().map(|x| fnum(*x)).collect::<Vec<_>>());
    w(&mut s, format!("  mean: {}\n", fl(&norm.mean)));
    w(&mut s, format!("  std: {}\n", fl(&norm.std)));
    if let Some(r) = norm.range {
        w(&mut s, format!("  range: {}\n", fl(&r)));
    }
    w(&mut s, format!("weights: {}\n", quote(weights_file)));
    w(&mut s, "graph:\n".into());
    for id in order {
        let node = graph
            .node(id)
            .ok_or_else(|| TrainError::Graph(format!("missing node {id}")))?;
        if matches!(node.op, Op::Input { .. }) {
            continue;
        }
        let inputs: Vec<String> = graph
            .operand_ids(id)
            .iter()
            .filter_map(|&o| graph.node(o).map(|n| quote(&n.name)))
            .collect();
        let mut line = format!(
            "  - {{ name: {}, op: {}, inputs: {}",
            quote(&node.name),
            node.op.mnemonic(),
            list(&inputs)
        );
        let bias = |b: &Option<String>| match b {
            Some(n) => quote(n),
            None => "false".into(),
        };
        let _ = match &node.op {
            Op::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                weight,
                bias: b,
            } => write!(
                line,
                ", out_channels: {out_channels}, kernel: {}, stride: {}, padding: {}, groups: {groups}, weight: {}, bias: {}",
                list(kernel),
                list(stride),
                list(padding),
                quote(weight),
                bias(b)
            ),
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => write!(
                line,
                ", gamma: {}, beta: {}, mean: {}, var: {}, epsilon: {}",
                quote(gamma),
                quote(beta),
                quote(mean),
                quote(var),
                fnum(*epsilon)
            ),
            Op::Dense {
                out_features,
                weight,
                bias: b,
            } => write!(
                line,
                ", out_features: {out_features}, weight: {}, bias: {}",
                quote(weight),
                bias(b)
            ),
            Op::Reshape { shape } => write!(line, ", shape: {}", list(shape)),
            Op::AvgPool {
                kernel,
                stride,
                padding,
            }
            | Op::MaxPool {
                kernel,
                stride,
                padding,
            } => write!(
                line,
                ", kernel: {}, stride: {}, padding: {}",
                list(kernel),
                list(stride),
                list(padding)
            ),
            Op::Concat { axis } => write!(line, ", axis: {axis}"),
            Op::Scale { factor } => write!(line, ", factor: {}", fnum(*factor)),
            Op::Poly { coeffs } => write!(line, ", coeffs: {}", fl(coeffs)),
            Op::Quadratic {
                granularity,
                coeffs,
            } => write!(line, ", granularity: {granularity}, coeffs: {}", quote(coeffs)),
            _ => Ok(()),
        };
        line.push_str(" }\n");
        s.push_str(&line);
    }
    let outs: Vec<String> = graph
        .outputs
        .iter()
        .filter_map(|&o| graph.node(o).map(|n| quote(&n.name)))
        .collect();
    w(&mut s, format!("outputs: {}\n", list(&outs)));
    Ok(s)
}

/// Predictions of the reference evaluator (`eval_batch`, `f64`) for every image of `ds`
/// (first graph output, argmax), computed in chunks of `chunk` images.
pub fn eval_predictions(
    graph: &Graph,
    ds: &Dataset,
    chunk: usize,
) -> Result<Vec<usize>, TrainError> {
    let mut out = Vec::with_capacity(ds.len());
    let mut start = 0;
    while start < ds.len() {
        let part = ds.slice(start, chunk.max(1));
        let x = part.to_ndarray()?;
        let res = eval_batch(graph, &[x]).map_err(|e| TrainError::Graph(e.to_string()))?;
        let z = res
            .first()
            .ok_or_else(|| TrainError::Graph("the graph has no output".into()))?;
        let k = z.shape().get(1).copied().unwrap_or(0);
        let flat: Vec<f64> = z.iter().copied().collect();
        for row in flat.chunks(k.max(1)) {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            out.push(best);
        }
        start += part.len();
    }
    Ok(out)
}
