//! `hecc approx`: build one approximation of ReLU, sign or max, report its degree, depth,
//! multiplications and measured error, and optionally plot it against the exact function (SVG).

use crate::compile::parse_activation;
use hecc_passes::approx::{ActivationApprox, ApproxForm, CompositeSign, EvalCost};
use miette::{miette, Result};
use std::fmt::Write;

/// What `hecc approx` computed.
pub struct ApproxResult {
    /// The summary text.
    pub text: String,
    /// The SVG plot, if requested.
    pub svg: Option<String>,
}

fn cost_line(c: &EvalCost) -> String {
    format!(
        "depth {}  ct*ct mults {}  relinearizations {}  scalar mults {}  additions {}",
        c.depth, c.ct_mults, c.relins, c.scalar_mults, c.additions
    )
}

/// Runs the command: `activation` is `relu`, `sign` or `max`; `method` a policy as for
/// `hecc compile --activation` (sign and max take `minimax:..` only).
pub fn approx(activation: &str, method: &str, range: f64, plot: bool) -> Result<ApproxResult> {
    let mut text = String::new();
    match activation {
        "relu" | "max" => {
            let m = parse_activation(method)?;
            let a = ActivationApprox::relu(&m, range)?;
            let (what, b) = if activation == "max" {
                // max(a, b) = b + relu(a - b): one ReLU of the difference, over [-range, range].
                ("max(a, b) = b + relu(a - b), |a - b| <=", range)
            } else {
                ("relu on [-B, B], B =", range)
            };
            let _ = writeln!(text, "{what} {b}");
            let _ = writeln!(text, "method {}  degrees {:?}", a.method, a.degrees);
            if let ApproxForm::SignBased(cs) = &a.form {
                let _ =
                    writeln!(
                    text,
                    "composite sign: eps 2^{:.1}  stage errors {:?}  sign error {:.3e} (2^{:.2})",
                    cs.eps.log2(),
                    cs.stage_errors.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>(),
                    cs.max_error,
                    cs.max_error.log2()
                );
            }
            let _ = writeln!(text, "{}", cost_line(&a.cost));
            let _ = writeln!(
                text,
                "max |approx - relu| on [-{b}, {b}]: {:.4e} (2^{:.2}; relative to B: 2^{:.2})",
                a.max_error,
                a.max_error.log2(),
                (a.max_error / b).log2()
            );
            let svg = plot.then(|| {
                svg_plot(
                    |x| a.eval(x),
                    |x| x.max(0.0),
                    -b,
                    b,
                    &format!("{} vs ReLU", a.method),
                )
            });
            Ok(ApproxResult { text, svg })
        }
        "sign" => {
            let (name, arg) = crate::compile::split_policy(method)?;
            if name != "minimax" {
                return Err(miette!(
                    "sign is approximated by `minimax:ALPHA` or `minimax:D1,D2,..` only"
                ));
            }
            let cs = if arg.contains(',') {
                let degrees = arg
                    .split(',')
                    .map(|d| crate::compile::parse_degree(method, d))
                    .collect::<Result<Vec<_>>>()?;
                CompositeSign::with_degrees(1.0 / range, &degrees)?
            } else {
                let alpha: f64 = if arg.is_empty() {
                    10.0
                } else {
                    crate::compile::parse_alpha(method, arg)?
                };
                CompositeSign::for_precision(alpha, 2f64.powf(-alpha))?
            };
            let _ = writeln!(
                text,
                "sign on [-1, -eps] U [eps, 1], eps = {:.3e} (2^{:.2})",
                cs.eps,
                cs.eps.log2()
            );
            let _ = writeln!(
                text,
                "degrees {:?}  stage errors {:?}",
                cs.degrees,
                cs.stage_errors
                    .iter()
                    .map(|e| format!("{e:.3e}"))
                    .collect::<Vec<_>>()
            );
            let _ = writeln!(text, "{}", cost_line(&cs.cost));
            let _ = writeln!(
                text,
                "max |p - sign| on [eps, 1]: {:.4e} (2^{:.2})",
                cs.max_error,
                cs.max_error.log2()
            );
            let svg = plot.then(|| {
                svg_plot(
                    |x| cs.eval(x),
                    |x: f64| x.signum(),
                    -1.0,
                    1.0,
                    "composite minimax vs sign",
                )
            });
            Ok(ApproxResult { text, svg })
        }
        other => Err(miette!(
            "unknown activation `{other}` (expected relu, sign or max)"
        )),
    }
}

/// A self-contained SVG line plot of `f` (approximation, blue) and `g` (exact, grey) on `[lo, hi]`.
pub fn svg_plot(
    f: impl Fn(f64) -> f64,
    g: impl Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    title: &str,
) -> String {
    let (w, h, pad) = (720.0, 420.0, 48.0);
    let n = 1200;
    let xs: Vec<f64> = (0..=n)
        .map(|i| lo + (hi - lo) * i as f64 / n as f64)
        .collect();
    let fy: Vec<f64> = xs.iter().map(|&x| f(x)).collect();
    let gy: Vec<f64> = xs.iter().map(|&x| g(x)).collect();
    let finite = fy.iter().chain(&gy).copied().filter(|v| v.is_finite());
    let (mut ymin, mut ymax) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !(ymin.is_finite() && ymax.is_finite()) || ymin == ymax {
        ymin = -1.0;
        ymax = 1.0;
    }
    let margin = 0.05 * (ymax - ymin);
    let (ymin, ymax) = (ymin - margin, ymax + margin);
    let px = |x: f64| pad + (x - lo) / (hi - lo) * (w - 2.0 * pad);
    let py = |y: f64| h - pad - (y.clamp(ymin, ymax) - ymin) / (ymax - ymin) * (h - 2.0 * pad);
    let path = |ys: &[f64]| {
        xs.iter()
            .zip(ys)
            .enumerate()
            .fold(String::new(), |mut s, (i, (&x, &y))| {
                let _ = write!(
                    s,
                    "{}{:.2},{:.2} ",
                    if i == 0 { "M" } else { "L" },
                    px(x),
                    py(y)
                );
                s
            })
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
        pad,
        py(0.0),
        w - pad,
        py(0.0)
    );
    let _ = writeln!(
        s,
        r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
        px(0.0f64.clamp(lo, hi)),
        pad,
        px(0.0f64.clamp(lo, hi)),
        h - pad
    );
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#888" stroke-width="3"/>"##,
        path(&gy)
    );
    let _ = writeln!(
        s,
        r##"<path d="{}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>"##,
        path(&fy)
    );
    let _ = writeln!(
        s,
        r#"<text x="{pad}" y="28" font-family="sans-serif" font-size="16">{title}</text>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{pad}" y="{}" font-family="sans-serif" font-size="12">x in [{lo}, {hi}], y in [{ymin:.3}, {ymax:.3}]</text>"#,
        h - 14.0
    );
    let _ = writeln!(s, "</svg>");
    s
}
