//! Plaintext evaluation of a model with and without its activations approximated: the logits
//! of `hecc eval`, the agreement `hecc infer` reports, and the choice `--activation auto`
//! makes.
//!
//! The approximated model is evaluated by [`hecc_passes::approx::tensor::eval_approx`], which
//! computes what the lowered circuit computes (same polynomials, same ranges), so its agreement
//! with the exact model is the best an encrypted run can reach. Nothing here prints.

use hecc_ir::tensor::{Graph, Tensor};
use hecc_passes::approx::tensor::eval_approx;
use hecc_passes::approx::ActivationApprox;
use hecc_passes::lower::ActivationPolicy;
use hecc_passes::ranges::{sites, SiteKind};
use miette::{miette, Result};

use crate::compile::{activation_policy, ActivationChoice, CompileOptions};
use crate::images::{argmax_rows, Images};

/// Images per plaintext batch.
const CHUNK: usize = 500;

/// Policies `--activation auto` tries, shallowest first after sorting by depth.
pub const AUTO_CANDIDATES: &[&str] = &[
    "square",
    "least-squares:4",
    "least-squares:8",
    "chebyshev:15",
    "minimax:7",
    "minimax:10",
    "chebyshev:31",
    "minimax:13",
    "minimax:15,15,27",
];

/// Share of calibration images whose prediction `--activation auto` must keep.
pub const AUTO_AGREEMENT: f64 = 0.99;

/// One evaluation of a model on a set of images.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The activation policy, `None` for the exact model.
    pub policy: Option<String>,
    /// Largest depth of one approximated activation.
    pub depth: Option<u32>,
    /// Logits, image-major (`images * classes`).
    pub logits: Vec<f64>,
    /// Values per image.
    pub classes: usize,
    /// Argmax per image.
    pub predictions: Vec<usize>,
    /// Activation inputs outside their approximation's range, and inputs checked.
    pub outside: (usize, usize),
    /// How the policy was chosen (`--activation auto`), if it was.
    pub note: Option<String>,
}

impl Evaluation {
    /// Images whose prediction equals `other`'s.
    pub fn agreement(&self, other: &Evaluation) -> usize {
        self.predictions
            .iter()
            .zip(&other.predictions)
            .filter(|(a, b)| a == b)
            .count()
    }

    /// Images predicted as labelled.
    pub fn correct(&self, labels: &[usize]) -> usize {
        self.predictions
            .iter()
            .zip(labels)
            .filter(|(a, b)| a == b)
            .count()
    }

    /// Largest `|a - b|` between two evaluations' logits; NaN if either has a non-finite
    /// logit (an approximation evaluated far outside its range overflows).
    pub fn max_abs_diff(&self, other: &Evaluation) -> f64 {
        self.logits
            .iter()
            .zip(&other.logits)
            .fold(0.0f64, |m, (a, b)| {
                let d = (a - b).abs();
                if m.is_nan() || !d.is_finite() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            })
    }
}

/// True if `g` has activations (`relu`, `max_pool`) that need an approximation.
pub fn needs_approximation(g: &Graph) -> Result<bool> {
    Ok(!sites(g)?.is_empty())
}

fn chunks(images: &Images, shape: &[usize]) -> Result<Vec<Tensor>> {
    (0..images.count)
        .step_by(CHUNK)
        .map(|start| {
            let part = images.slice(start, CHUNK);
            let mut dims = vec![part.count];
            dims.extend_from_slice(shape);
            Tensor::from_shape_vec(dims, part.data).map_err(|e| miette!("images: {e}"))
        })
        .collect()
}

fn choose<'a>(
    policy: &'a ActivationPolicy,
    site: &hecc_passes::ranges::Site,
) -> Option<&'a ActivationApprox> {
    policy.per_node.get(&site.name).or(match site.kind {
        SiteKind::Relu => policy.relu.as_ref(),
        _ => policy.max.as_ref(),
    })
}

/// Evaluates `g` on `images` (in the model input's domain) with the activation policy of
/// `opts` (`opts.activation` must not be `auto`), or exactly when `opts.activation` is `None`.
pub fn evaluate(g: &Graph, images: &Images, opts: &CompileOptions) -> Result<Evaluation> {
    let shape = crate::compile::input_tensor(g)?.shape;
    let parts = chunks(images, &shape)?;
    let policy = match &opts.activation {
        Some(_) => Some(activation_policy(g, opts)?.0),
        None => None,
    };
    let mut logits = Vec::new();
    let mut outside = (0, 0);
    let mut classes = 0;
    for x in &parts {
        let n = x.shape().first().copied().unwrap_or(0);
        let out = match &policy {
            Some(p) => {
                let e = eval_approx(g, std::slice::from_ref(x), |s| choose(p, s))?;
                for c in &e.checks {
                    outside.0 += c.outside;
                    outside.1 += c.checked;
                }
                e.outputs
            }
            None => hecc_ir::tensor::eval::eval_batch(g, std::slice::from_ref(x))?,
        };
        let out = out
            .into_iter()
            .next()
            .ok_or_else(|| miette!("the model has no output"))?;
        classes = out.len() / n.max(1);
        logits.extend(out.iter().copied());
    }
    let depth = policy.as_ref().and_then(|p| {
        p.per_node
            .values()
            .chain(p.relu.iter())
            .chain(p.max.iter())
            .map(|a| a.cost.depth)
            .max()
    });
    Ok(Evaluation {
        policy: opts.activation.as_ref().map(|a| a.to_string()),
        depth,
        predictions: argmax_rows(&logits, classes.max(1)),
        logits,
        classes,
        outside,
        note: None,
    })
}

/// What `--activation auto` tried and chose.
#[derive(Clone, Debug)]
pub struct AutoChoice {
    /// The chosen policy.
    pub chosen: String,
    /// Every candidate: policy, depth of one activation, images agreeing with the exact model.
    pub tried: Vec<(String, u32, usize)>,
    /// Calibration images.
    pub images: usize,
    /// True if the chosen policy reaches [`AUTO_AGREEMENT`].
    pub meets_target: bool,
}

/// Resolves `--activation auto`: the shallowest candidate (fewest multiplications on a tie)
/// whose plaintext predictions agree with the exact model's on at least [`AUTO_AGREEMENT`] of
/// the calibration images; if none does, the one that agrees most. Needs calibration images.
pub fn resolve_auto(g: &Graph, opts: &CompileOptions) -> Result<(CompileOptions, AutoChoice)> {
    let cal = opts.calibration.as_ref().ok_or_else(|| {
        miette!(
            help = "`hecc infer` uses its input images; `hecc compile` needs --calibrate IMAGES",
            "--activation auto needs calibration images to compare approximations with the exact model"
        )
    })?;
    let shape = crate::compile::input_tensor(g)?.shape;
    let per: usize = shape.iter().product::<usize>().max(1);
    let data: Vec<f64> = cal.samples.iter().copied().collect();
    let images = Images {
        count: data.len() / per,
        per_image: per,
        data,
    };
    let exact = evaluate(
        g,
        &images,
        &CompileOptions {
            activation: None,
            ..opts.clone()
        },
    )?;
    // Candidates by depth, then ct-ct multiplications.
    let mut ranked = Vec::new();
    for c in AUTO_CANDIDATES {
        let method = crate::compile::parse_activation(c)?;
        let a = ActivationApprox::relu(&method, opts.relu_range)?;
        ranked.push((a.cost.depth, a.cost.ct_mults, *c));
    }
    ranked.sort();
    let mut tried = Vec::new();
    let mut best: Option<(usize, String)> = None;
    let target = (AUTO_AGREEMENT * images.count as f64).ceil() as usize;
    for (depth, _, c) in ranked {
        let o = CompileOptions {
            activation: Some(ActivationChoice::parse(c)?),
            ..opts.clone()
        };
        let e = evaluate(g, &images, &o)?;
        let agree = e.agreement(&exact);
        tried.push((c.to_string(), depth, agree));
        if best.as_ref().is_none_or(|(b, _)| agree > *b) {
            best = Some((agree, c.to_string()));
        }
        if agree >= target {
            break;
        }
    }
    // The chosen candidate last, so its agreement is `tried.last()`.
    if let Some((_, c)) = &best {
        if let Some(i) = tried.iter().position(|t| &t.0 == c) {
            let t = tried.remove(i);
            tried.push(t);
        }
    }
    let (agree, chosen) = best.ok_or_else(|| miette!("no candidate policy"))?;
    Ok((
        CompileOptions {
            activation: Some(ActivationChoice::parse(&chosen)?),
            ..opts.clone()
        },
        AutoChoice {
            chosen,
            tried,
            images: images.count,
            meets_target: agree >= target,
        },
    ))
}

/// `opts` with `--activation auto` replaced by the policy it chooses (and a note saying how),
/// unchanged otherwise.
pub fn resolve_activation(
    g: &Graph,
    opts: &CompileOptions,
) -> Result<(CompileOptions, Option<AutoChoice>)> {
    if !opts.activation_is_auto() {
        return Ok((opts.clone(), None));
    }
    if !needs_approximation(g)? {
        let mut o = opts.clone();
        o.activation = None;
        return Ok((o, None));
    }
    let (mut o, choice) = resolve_auto(g, opts)?;
    let agree = choice.tried.last().map_or(0, |t| t.2);
    o.auto_note = Some(format!(
        "chosen by auto: {agree}/{} calibration images keep the exact model's prediction{}",
        choice.images,
        if choice.meets_target {
            ""
        } else {
            "; below the 99% target"
        }
    ));
    Ok((o, Some(choice)))
}

/// `hecc eval`: the exact model and each policy on the same images.
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Model name.
    pub model: String,
    /// Images evaluated.
    pub images: usize,
    /// Labels, when given.
    pub labels: Option<Vec<usize>>,
    /// The exact model first, then one row per policy.
    pub rows: Vec<Evaluation>,
    /// The activation ranges were calibrated on the evaluated images themselves (no
    /// `--calibrate` and no `--relu-range` given).
    pub self_calibrated: bool,
    /// Seconds spent evaluating.
    pub seconds: f64,
}

/// Evaluates `g` on the images at `input` (the first `limit`), exactly and with each policy
/// in `policies` (`auto` resolved on `base`'s calibration images or on these images).
pub fn eval_model(
    g: &Graph,
    input: &std::path::Path,
    labels: Option<&std::path::Path>,
    policies: &[String],
    limit: Option<usize>,
    base: &CompileOptions,
) -> Result<EvalReport> {
    let t = std::time::Instant::now();
    let spec = crate::compile::input_tensor(g)?;
    let all = crate::images::load_images(input, &spec)?;
    if let Some(n) = limit.filter(|&n| n > all.count) {
        return Err(miette::miette!(
            "--limit {n}: {} holds only {} images",
            input.display(),
            all.count
        ));
    }
    let mut images = all.take(limit.unwrap_or(all.count));
    crate::images::check_input_range(&mut images, &spec, false)?;
    let labels = labels
        .map(|p| crate::images::load_labels_for(p, images.count))
        .transpose()?;
    let exact = CompileOptions {
        activation: None,
        ..base.clone()
    };
    let mut rows = vec![evaluate(g, &images, &exact)?];
    // Without --calibrate or --relu-range, ranges come from the images evaluated: a fixed
    // default range would measure the range, not the approximation.
    let mut base = base.clone();
    let self_calibrated =
        !policies.is_empty() && base.calibration.is_none() && !base.range_override;
    if self_calibrated {
        base.calibration = Some(crate::compile::Calibration::from_images(
            &images,
            &spec.shape,
            1000,
        )?);
    }
    for p in policies {
        let o = CompileOptions {
            activation: Some(ActivationChoice::parse(p)?),
            ..base.clone()
        };
        let o = resolve_activation(g, &o)?.0;
        let mut e = evaluate(g, &images, &o)?;
        e.note = o.auto_note.clone();
        rows.push(e);
    }
    Ok(EvalReport {
        model: g.name.clone(),
        images: images.count,
        labels,
        rows,
        self_calibrated,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The text of `hecc eval`.
pub fn render(r: &EvalReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let exact = &r.rows[0];
    let _ = writeln!(
        out,
        "model {}: {} images, {} outputs each, plaintext ({:.2} s)",
        r.model, r.images, exact.classes, r.seconds
    );
    let _ = writeln!(
        out,
        "{:<20} {:>5} {:>9} {:>14} {:>14} {:>14}",
        "activations", "depth", "accuracy", "agree w/ exact", "max |dlogit|", "out of range"
    );
    for e in &r.rows {
        let acc = r.labels.as_ref().map_or("-".to_string(), |l| {
            format!(
                "{:.2}%",
                100.0 * e.correct(l) as f64 / r.images.max(1) as f64
            )
        });
        let label = e.policy.clone().unwrap_or_else(|| "exact".into());
        let _ = writeln!(
            out,
            "{:<20} {:>5} {:>9} {:>14} {:>14} {:>14}",
            label,
            e.depth.map_or("-".into(), |d| d.to_string()),
            acc,
            format!("{}/{}", e.agreement(exact), r.images),
            if e.policy.is_some() {
                let d = e.max_abs_diff(exact);
                if d.is_nan() {
                    "overflow".into()
                } else {
                    format!("{d:.3e}")
                }
            } else {
                "-".into()
            },
            if e.outside.1 > 0 {
                format!("{}/{}", e.outside.0, e.outside.1)
            } else {
                "-".into()
            }
        );
    }
    for e in &r.rows {
        if let (Some(p), Some(n)) = (&e.policy, &e.note) {
            let _ = writeln!(out, "auto -> {p}: {n}");
        }
    }
    if r.self_calibrated {
        let _ = writeln!(
            out,
            "activation ranges calibrated on these images (give --calibrate or --relu-range to fix them)"
        );
    }
    if r.rows.iter().any(|e| e.outside.0 > 0) {
        let _ = writeln!(
            out,
            "warning: activation inputs outside the approximation's range: its output there is \
             meaningless; widen the range (--relu-range, --range-margin) or calibrate on more images"
        );
    }
    let shown = r.images.min(3);
    for i in 0..shown {
        let row = &exact.logits[i * exact.classes..(i + 1) * exact.classes];
        let vals: Vec<String> = row.iter().take(10).map(|v| format!("{v:.4}")).collect();
        let _ = writeln!(
            out,
            "image {i}: exact logits [{}{}] -> {}",
            vals.join(", "),
            if row.len() > 10 { ", ..." } else { "" },
            exact.predictions[i]
        );
    }
    out
}
