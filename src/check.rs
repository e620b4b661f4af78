//! `hecc check`: load a model (YAML spec or ONNX), verify it and summarise it.
//!
//! [`check_model`] returns a [`CheckReport`] (its `Display` is the summary the CLI prints:
//! layers with shapes and parameter counts, totals, and activation counts by kind and
//! granularity) or the front end's [`FrontError`] diagnostic. Nothing here prints.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hecc_ir::front::{load_model, FrontError};
use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::{verify, Graph, Op};

/// A verified model and its inferred shapes.
#[derive(Debug)]
pub struct CheckReport {
    /// The model as given on the command line.
    pub source: String,
    /// The verified graph.
    pub graph: Graph,
    /// Per-node output shapes.
    pub shapes: Shapes,
}

/// Loads and verifies the model at `path`.
pub fn check_model(path: &Path) -> Result<CheckReport, FrontError> {
    let graph = load_model(path)?;
    let shapes = verify(&graph).map_err(|errors| FrontError::Invalid {
        model: graph.name.clone(),
        src: None,
        problems: errors.into_iter().map(Into::into).collect(),
    })?;
    Ok(CheckReport {
        source: path.display().to_string(),
        graph,
        shapes,
    })
}

/// Activation statistics: per kind (`square`, `relu`, `poly`, `quadratic/<granularity>`), the
/// number of layers and of element evaluations per image.
pub fn activation_counts(g: &Graph, shapes: &Shapes) -> BTreeMap<String, (usize, usize)> {
    let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for id in g.node_ids() {
        let Some(n) = g.node(id) else { continue };
        let key = match &n.op {
            Op::Quadratic { granularity, .. } => format!("quadratic/{granularity}"),
            Op::Poly { coeffs } => format!("poly/degree-{}", coeffs.len().saturating_sub(1)),
            op if op.is_activation() => op.mnemonic().to_string(),
            _ => continue,
        };
        let e = m.entry(key).or_default();
        e.0 += 1;
        e.1 += shapes.get(&id).map(|s| s.numel()).unwrap_or(0);
    }
    m
}

impl CheckReport {
    /// Parameters read by node `id` (sum of the sizes of the weights it names).
    fn node_params(&self, op: &Op) -> usize {
        op.weight_refs()
            .iter()
            .filter_map(|(_, w)| self.graph.weights.get(*w))
            .map(|t| t.len())
            .sum()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.graph;
        writeln!(f, "model `{}` ({})", g.name, self.source)?;
        if let Some(norm) = g.input_normalization() {
            let range = norm
                .range
                .map(|[lo, hi]| format!(", range [{lo}, {hi}]"))
                .unwrap_or_default();
            writeln!(
                f,
                "input normalisation: mean {:?}, std {:?}{range}",
                norm.mean, norm.std
            )?;
        }
        writeln!(f)?;
        let order = g.topo_order().unwrap_or_default();
        let name_w = order
            .iter()
            .filter_map(|&id| g.node(id).map(|n| n.name.len()))
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "  {:<5} {:<name_w$}  {:<18} {:<16} {:>10}",
            "id", "name", "op", "output", "params"
        )?;
        for &id in &order {
            let Some(n) = g.node(id) else { continue };
            let op = match &n.op {
                Op::Quadratic { granularity, .. } => format!("quadratic/{granularity}"),
                op => op.mnemonic().to_string(),
            };
            let shape = self
                .shapes
                .get(&id)
                .map(|s| s.to_string())
                .unwrap_or_default();
            writeln!(
                f,
                "  {:<5} {:<name_w$}  {:<18} {:<16} {:>10}",
                id.to_string(),
                n.name,
                op,
                shape,
                self.node_params(&n.op)
            )?;
        }
        writeln!(f)?;
        let outs: Vec<String> = g
            .outputs
            .iter()
            .filter_map(|&o| {
                let n = g.node(o)?;
                Some(format!(
                    "{} {}",
                    n.name,
                    self.shapes
                        .get(&o)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ))
            })
            .collect();
        writeln!(f, "outputs: {}", outs.join(", "))?;
        writeln!(
            f,
            "nodes: {}, weight tensors: {}, parameters: {}",
            g.node_count(),
            g.weights.len(),
            g.parameter_count()
        )?;
        let acts = activation_counts(g, &self.shapes);
        if acts.is_empty() {
            writeln!(f, "activations: none")?;
        } else {
            writeln!(f, "activations (layers, elements per image):")?;
            for (k, (layers, elems)) in acts {
                writeln!(f, "  {k:<20} {layers:>3} layer(s) {elems:>8} element(s)")?;
            }
        }
        if !g.notes.is_empty() {
            writeln!(f, "import rewrites:")?;
            for n in &g.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        Ok(())
    }
}
