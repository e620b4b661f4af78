//! Text renderings of runs and `infer` results for the CLI.

use super::*;

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_string(),
        |b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
    )
}

/// Renders the executor's report: per stage, nodes, wall time and memory.
pub fn render_run(r: &RunReport, images: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>7} {:>6} {:>9} {:>9} {:>10} {:>10} {:>7}",
        "stage", "nodes", "waves", "time", "cpu", "rss", "peak rss", "live ct"
    );
    for s in &r.stages {
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>6} {:>8.3}s {:>8.2}s {:>10} {:>10} {:>7}",
            s.name,
            s.nodes,
            s.wavefronts,
            s.seconds,
            s.cpu_seconds.unwrap_or(f64::NAN),
            mib(s.rss_bytes),
            mib(s.peak_rss_bytes),
            s.live_ciphertexts
        );
    }
    let per = if images > 0 {
        r.seconds / images as f64 * 1e3
    } else {
        f64::NAN
    };
    let _ = writeln!(
        out,
        "run: {} nodes in {:.2} s ({per:.3} ms per image over {images} images), peak memory {}, \
         at most {} live ciphertexts ({}), {} hoisted rotations, {} allocator trims",
        r.nodes,
        r.seconds,
        mib(r.peak_rss_bytes),
        r.peak_live_ciphertexts,
        mib(Some(r.peak_live_bytes)),
        r.hoisted_rotations,
        r.memory_trims
    );
    if let Some(sp) = &r.spill {
        let budget = if sp.budget == u64::MAX {
            "none".to_string()
        } else {
            mib(Some(sp.budget))
        };
        let _ = writeln!(
            out,
            "spill: budget {budget}, {} values written ({}), {} read back ({}), at most {} on \
             disk, {:.2} s of file work, {} checkpoints{}",
            sp.values_written,
            mib(Some(sp.bytes_written)),
            sp.values_read,
            mib(Some(sp.bytes_read)),
            mib(Some(sp.peak_disk_bytes)),
            sp.io_seconds,
            sp.checkpoints,
            if sp.resumed_nodes > 0 {
                format!(", resumed with {} nodes done", sp.resumed_nodes)
            } else {
                String::new()
            }
        );
    }
    out
}

/// Renders the result of `hecc infer`.
pub fn render_infer(r: &InferReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}  N=2^{} ({} slots)  security {}  images {}{}",
        r.model,
        r.log_n,
        1u64 << (r.log_n - 1),
        r.security,
        r.images,
        if r.runs > 1 {
            format!(" in {} runs of at most {} images", r.runs, r.batch)
        } else {
            String::new()
        }
    );
    let shown: Vec<String> = r
        .predictions
        .iter()
        .take(32)
        .map(|p| p.to_string())
        .collect();
    let _ = writeln!(
        out,
        "predictions: {}{}",
        shown.join(" "),
        if r.predictions.len() > 32 { " ..." } else { "" }
    );
    if let Some(c) = r.correct {
        let _ = writeln!(
            out,
            "accuracy: {c}/{} = {:.2}%",
            r.images,
            100.0 * c as f64 / r.images.max(1) as f64
        );
    }
    if let Some(a) = &r.approximation {
        let _ = writeln!(
            out,
            "approximation `{}` (plaintext): {}/{} images keep the exact model's prediction{}",
            a.policy,
            a.agree,
            a.images,
            match a.correct {
                Some((e, p)) => format!(
                    "; accuracy exact {:.2}%, approximated {:.2}%",
                    100.0 * e as f64 / a.images.max(1) as f64,
                    100.0 * p as f64 / a.images.max(1) as f64
                ),
                None => String::new(),
            }
        );
    }
    out.push_str(&render_run(&r.run, r.images));
    if let Some((values, total)) = r.estimate {
        let _ = writeln!(
            out,
            "memory: plan estimate {} of live values ({} with keys); measured {} of live values, \
             peak resident {}",
            mib(Some(values)),
            mib(Some(total)),
            mib(Some(r.run.peak_live_bytes)),
            mib(r.run.peak_rss_bytes)
        );
    }
    let [c, k, e, x, d] = r.phase_seconds;
    if r.runs == 1 && r.capacity > r.images {
        let _ = writeln!(
            out,
            "compiled with --batch {0}, the same run would hold {0} images (one slot each): {1:.3} ms per image",
            r.capacity,
            x / r.capacity as f64 * 1e3
        );
    }
    let _ = writeln!(
        out,
        "time: compile {c:.2} s, keygen {k:.2} s, encrypt {e:.2} s, run {x:.2} s, decrypt {d:.2} s; \
         total {:.2} s, amortized {:.3} ms per image (run only {:.3} ms)",
        r.total_seconds(),
        r.total_seconds() / r.images.max(1) as f64 * 1e3,
        x / r.images.max(1) as f64 * 1e3
    );
    if let Some(v) = &r.verification {
        let _ = writeln!(out, "verification against the plaintext reference:");
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>12} {:>12} {:>6}",
            "stage", "values", "max |err|", "max |ref|", "bits"
        );
        for s in v.stages.iter().chain(std::iter::once(&v.output)) {
            let _ = writeln!(
                out,
                "  {:<28} {:>8} {:>12.3e} {:>12.3e} {:>6.1}",
                s.name,
                s.values,
                s.max_abs_error,
                s.max_abs_value,
                s.bits()
            );
        }
        let _ = writeln!(
            out,
            "  tensor model: max |err| {:.3e} ({:.1} bits); argmax agreement {}/{}",
            v.tensor_max_abs_error,
            precision_bits(v.tensor_max_abs_error),
            v.argmax_agree,
            r.images
        );
        out.push_str(&render_range_checks(&v.ranges));
    }
    out
}

/// Warning lines for activations whose inputs left their range (nothing when all are inside).
pub fn render_range_checks(checks: &[hecc_passes::ranges::RangeCheck]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in checks.iter().filter(|c| c.outside > 0) {
        let what = if c.op == "max_pool" {
            "window spreads"
        } else {
            "inputs"
        };
        let _ = writeln!(
            out,
            "warning: activation `{}` ({}): {} of {} {what} outside [-{:.4}, {:.4}] (worst {:.4}); \
             the approximation is not valid there",
            c.node, c.op, c.outside, c.checked, c.range, c.range, c.worst
        );
    }
    out
}
