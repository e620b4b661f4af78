//! `hecc survey`: the ReLU-approximation survey's experiment on real data.
//!
//! A model trained with exact activations is evaluated in plaintext on a whole test set with
//! its `relu`/`max_pool` nodes replaced, at inference only, by each approximation method. The
//! replacements are built by the compiler's own code path ([`crate::compile::activation_policy`]:
//! ranges calibrated on training images, one approximation per activation node fitted on its
//! own `[-B, B]`) and evaluated by [`hecc_passes::approx::tensor::eval_approx`], which computes
//! what the lowered circuit computes. The result is a table: method, degrees, depth and
//! ct-ct multiplications of one activation, measured maximum error on `[-B, B]`, test inputs
//! outside the range, accuracy. Nothing is printed here; [`render`] makes the text.

use std::path::{Path, PathBuf};

use hecc_ir::tensor::{Graph, Tensor};
use hecc_passes::approx::tensor::eval_approx;
use hecc_passes::ranges::{check_ranges, ActivationRange};
use miette::{miette, Result};

use crate::compile::{
    activation_policy, input_tensor, ActivationChoice, Calibration, CompileOptions,
};
use crate::images::{argmax_rows, load_images, load_labels, Images};

/// One method of the survey: a table label and an activation policy (`hecc compile
/// --activation`), or `None` for the exact activation.
#[derive(Clone, Debug, PartialEq)]
pub struct SurveyMethod {
    /// Label in the table.
    pub label: String,
    /// The policy, `None` = exact ReLU.
    pub policy: Option<String>,
}

/// The survey's methods as reported in `docs/approximations.md`: exact ReLU, square, least squares and
/// Taylor (softplus) and CryptoDL-style of degree 8, composite minimax "small" (alpha = 7 bits,
/// degrees chosen for minimal depth) and "large" (Lee et al.'s degrees (15, 15, 27)).
pub fn default_methods() -> Vec<SurveyMethod> {
    let m = |label: &str, policy: Option<&str>| SurveyMethod {
        label: label.into(),
        policy: policy.map(String::from),
    };
    vec![
        m("ReLU (exact)", None),
        m("square", Some("square")),
        m("least squares", Some("least-squares:8")),
        m("Taylor (softplus)", Some("taylor:8")),
        m("CryptoDL-style", Some("cryptodl:8")),
        m("minimax small", Some("minimax:7")),
        m("minimax large", Some("minimax:15,15,27")),
    ]
}

/// Options of `hecc survey`.
#[derive(Clone, Debug)]
pub struct SurveyOptions {
    /// Dataset directory with `train-images-idx3-ubyte`, `t10k-images-idx3-ubyte` and
    /// `t10k-labels-idx1-ubyte`.
    pub data: PathBuf,
    /// Training images used for range calibration.
    pub calibrate_count: usize,
    /// Relative margin added to each calibrated bound.
    pub margin: f64,
    /// Evaluate only the first N test images (default: all).
    pub limit: Option<usize>,
    /// The methods, in table order.
    pub methods: Vec<SurveyMethod>,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct SurveyRow {
    /// The method.
    pub method: SurveyMethod,
    /// Degree(s) of the approximation (stage degrees for minimax), empty for exact ReLU.
    pub degrees: Vec<usize>,
    /// Multiplicative depth of one activation (input scaling folded upstream).
    pub depth: Option<u32>,
    /// Ciphertext-ciphertext products of one activation.
    pub ct_mults: Option<usize>,
    /// Largest measured `|approx - relu|` on `[-B, B]` over the activation nodes.
    pub max_error: Option<f64>,
    /// Activation inputs of the test set outside their range, and inputs checked.
    pub outside: (usize, usize),
    /// Correct predictions.
    pub correct: usize,
    /// Test images.
    pub total: usize,
}

impl SurveyRow {
    /// Accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.total.max(1) as f64
    }
}

/// The survey's results.
#[derive(Clone, Debug)]
pub struct Survey {
    /// Model name.
    pub model: String,
    /// The calibrated ranges (the `B` every approximation is fitted on).
    pub ranges: Vec<ActivationRange>,
    /// Calibration images used.
    pub calibration_images: usize,
    /// One row per method.
    pub rows: Vec<SurveyRow>,
}

fn images_tensor(images: &Images, shape: &[usize]) -> Result<Tensor> {
    let mut dims = vec![images.count];
    dims.extend_from_slice(shape);
    Tensor::from_shape_vec(dims, images.data.clone()).map_err(|e| miette!("images: {e}"))
}

/// Evaluation chunk (images per plaintext batch).
const CHUNK: usize = 1000;

/// Runs the survey on the model at `model`.
pub fn survey(model: &Path, opts: &SurveyOptions) -> Result<Survey> {
    let g = hecc_ir::front::load_model(model)?;
    survey_graph(&g, opts)
}

/// Runs the survey on a loaded model.
pub fn survey_graph(g: &Graph, opts: &SurveyOptions) -> Result<Survey> {
    let input = input_tensor(g)?;
    let train = load_images(&opts.data.join("train-images-idx3-ubyte"), &input)?
        .take(opts.calibrate_count.max(1));
    let test = load_images(&opts.data.join("t10k-images-idx3-ubyte"), &input)?;
    let test = test.take(opts.limit.unwrap_or(test.count));
    let labels = load_labels(&opts.data.join("t10k-labels-idx1-ubyte"))?;
    if labels.len() < test.count {
        return Err(miette!(
            "{} test labels for {} test images",
            labels.len(),
            test.count
        ));
    }
    let calibration = Calibration {
        samples: images_tensor(&train, &input.shape)?,
        margin: opts.margin,
    };
    let chunks: Vec<Tensor> = (0..test.count)
        .step_by(CHUNK)
        .map(|start| {
            let n = CHUNK.min(test.count - start);
            let part = Images {
                count: n,
                per_image: test.per_image,
                data: test.data[start * test.per_image..(start + n) * test.per_image].to_vec(),
            };
            images_tensor(&part, &input.shape)
        })
        .collect::<Result<_>>()?;
    let mut ranges = Vec::new();
    let mut rows = Vec::new();
    for method in &opts.methods {
        let copts = CompileOptions {
            activation: Some(ActivationChoice::parse(
                method.policy.as_deref().unwrap_or("square"),
            )?),
            calibration: Some(calibration.clone()),
            ..Default::default()
        };
        let (policy, calibrated) = activation_policy(g, &copts)?;
        ranges = calibrated;
        let approxes: Vec<_> = policy.per_node.values().collect();
        let mut row = SurveyRow {
            method: method.clone(),
            degrees: Vec::new(),
            depth: None,
            ct_mults: None,
            max_error: None,
            outside: (0, 0),
            correct: 0,
            total: test.count,
        };
        if method.policy.is_some() {
            if let Some(a) = approxes.first() {
                row.degrees = a.degrees.clone();
            }
            row.depth = approxes.iter().map(|a| a.cost.depth).max();
            row.ct_mults = approxes.iter().map(|a| a.cost.ct_mults).max();
            row.max_error = approxes.iter().map(|a| a.max_error).reduce(f64::max);
        }
        let mut offset = 0;
        for x in &chunks {
            let n = x.shape().first().copied().unwrap_or(0);
            let (outputs, checks) = match &method.policy {
                Some(_) => {
                    let e =
                        eval_approx(g, std::slice::from_ref(x), |s| policy.per_node.get(&s.name))?;
                    (e.outputs, e.checks)
                }
                None => (
                    hecc_ir::tensor::eval::eval_batch(g, std::slice::from_ref(x))?,
                    check_ranges(g, std::slice::from_ref(x), &ranges)?,
                ),
            };
            for c in &checks {
                row.outside.0 += c.outside;
                row.outside.1 += c.checked;
            }
            let out = outputs
                .first()
                .ok_or_else(|| miette!("the model has no output"))?;
            let classes = out.len() / n.max(1);
            let flat: Vec<f64> = out.iter().copied().collect();
            let pred = argmax_rows(&flat, classes);
            row.correct += pred
                .iter()
                .zip(&labels[offset..offset + n])
                .filter(|(p, l)| p == l)
                .count();
            offset += n;
        }
        rows.push(row);
    }
    Ok(Survey {
        model: g.name.clone(),
        ranges,
        calibration_images: train.count,
        rows,
    })
}

/// The survey's own accuracies (Table 1), by row label, for the side-by-side column.
pub fn paper_accuracy(label: &str) -> Option<f64> {
    Some(match label {
        "ReLU (exact)" => 96.60,
        "square" => 72.04,
        "least squares" => 58.27,
        "Taylor (softplus)" => 42.54,
        "CryptoDL-style" => 73.73,
        "minimax small" => 95.53,
        "minimax large" => 96.60,
        _ => return None,
    })
}

/// Renders the survey as a Markdown table, with the calibrated ranges above it.
pub fn render(s: &Survey) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}: ranges calibrated on {} training images",
        s.model, s.calibration_images
    );
    for r in &s.ranges {
        let _ = writeln!(
            out,
            "  {} ({}): inputs in [{:.3}, {:.3}], bound {:.3}, B = {:.3}",
            r.node, r.op, r.min, r.max, r.bound, r.range
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| method | policy | degree(s) | depth | ct-ct mults | max error on [-B, B] | test inputs out of range | accuracy | survey |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in &s.rows {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let degrees = if r.degrees.is_empty() {
            "-".to_string()
        } else {
            r.degrees
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {:.2}% ({}/{}) | {} |",
            r.method.label,
            r.method.policy.as_deref().unwrap_or("relu"),
            degrees,
            opt(r.depth.map(|d| d.to_string())),
            opt(r.ct_mults.map(|d| d.to_string())),
            opt(r.max_error.map(|e| format!("{e:.3e}"))),
            r.outside.0,
            r.outside.1,
            r.accuracy(),
            r.correct,
            r.total,
            paper_accuracy(&r.method.label).map_or("-".into(), |a| format!("{a:.2}%"))
        );
    }
    out
}
