//! ONNX's own backend node tests (`onnx.backend.test.case.node`), run through hecc's ONNX
//! importer and plaintext evaluator.
//!
//! The fixtures are in `tests/fixtures/onnx_node/` (see its README): one single-node model per
//! case, every operator input a graph input. Here graph input 0 stays the data input and every
//! other graph input becomes an initializer (as weights, pads, shapes and axes are in a real
//! model). hecc reads the first dimension of input 0 as the batch and drops it.
//!
//! Each case gets one status:
//!
//! * `matched`: imported, and output 0 equals the reference within
//!   `tol * max(1, max |ref|)` (`tol` = 1e-4, or 1e-3 when the reference is float16);
//! * `head-dropped`: imported, but the node is a trailing Softmax/LogSoftmax/Sigmoid that hecc
//!   drops by design (its outputs are the scores before the head); the output equals the head's
//!   input;
//! * `refused`: the importer returned an error (the reason is its message);
//! * `eval-error`: imported, but the evaluator returned an error;
//! * `mismatch`: imported and evaluated, but the answer is wrong (a bug);
//! * `panic`: the importer or evaluator panicked (a bug);
//! * `fixture-error`: the case's files could not be read.
//!
//! With `HECC_UPDATE_NODE_RESULTS=1` the statuses are written to `results.tsv` and a per-op
//! summary to `TABLE.md`; otherwise they are compared with the committed `results.tsv` and
//! every changed status is listed. `mismatch`, `panic` and `fixture-error` always fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use hecc_ir::front::onnx::{parse_onnx, proto};
use hecc_ir::front::FrontError;
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Op, Tensor};
use ndarray::IxDyn;
use prost::Message;

const UPDATE_VAR: &str = "HECC_UPDATE_NODE_RESULTS";

/// Statuses that are bugs (in hecc or in the fixtures) whatever `results.tsv` says.
const FAILING: &[&str] = &["mismatch", "panic", "fixture-error"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/onnx_node")
}

// ---------------------------------------------------------------------------------------------
// npy (format 1.0/2.0, little-endian, C order)

/// One `.npy` array: its numpy dtype code (`f4`, `i8`, `b1` ...), shape, raw little-endian
/// payload and values as `f64`.
struct Npy {
    code: String,
    shape: Vec<usize>,
    raw: Vec<u8>,
    values: Vec<f64>,
}

/// `(element size, ONNX TensorProto data_type)` of a numpy dtype code.
fn dtype_info(code: &str) -> Option<(usize, i32)> {
    Some(match code {
        "f4" => (4, 1),
        "u1" => (1, 2),
        "i1" => (1, 3),
        "u2" => (2, 4),
        "i2" => (2, 5),
        "i4" => (4, 6),
        "i8" => (8, 7),
        "b1" => (1, 9),
        "f2" => (2, 10),
        "f8" => (8, 11),
        "u4" => (4, 12),
        "u8" => (8, 13),
        _ => return None,
    })
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

fn decode(code: &str, raw: &[u8]) -> Vec<f64> {
    fn le<const N: usize>(raw: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    match code {
        "f2" => le::<2>(raw, |b| f16_to_f64(u16::from_le_bytes(b))),
        "f4" => le::<4>(raw, |b| f64::from(f32::from_le_bytes(b))),
        "f8" => le::<8>(raw, f64::from_le_bytes),
        "i1" => raw.iter().map(|&b| f64::from(b as i8)).collect(),
        "u1" | "b1" => raw.iter().map(|&b| f64::from(b)).collect(),
        "i2" => le::<2>(raw, |b| f64::from(i16::from_le_bytes(b))),
        "u2" => le::<2>(raw, |b| f64::from(u16::from_le_bytes(b))),
        "i4" => le::<4>(raw, |b| f64::from(i32::from_le_bytes(b))),
        "u4" => le::<4>(raw, |b| f64::from(u32::from_le_bytes(b))),
        "i8" => le::<8>(raw, |b| i64::from_le_bytes(b) as f64),
        "u8" => le::<8>(raw, |b| u64::from_le_bytes(b) as f64),
        _ => Vec::new(),
    }
}

/// The text after `'key':` in the header's dict literal.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header.find(&format!("'{key}'"))?;
    let rest = &header[pos + key.len() + 2..];
    Some(rest[rest.find(':')? + 1..].trim_start())
}

fn read_npy(path: &Path) -> Result<Npy, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let err = |m: &str| format!("{}: {m}", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(err("not an npy file"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 => {
            let b = bytes.get(8..12).ok_or_else(|| err("truncated header"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(err(&format!("npy format version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| err("bad header"))?;
    let descr = header_value(header, "descr")
        .and_then(|d| d.strip_prefix('\''))
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| err("no descr"))?;
    let code = match descr.split_at(descr.len().min(1)) {
        ("<" | "|", code) => code,
        _ => return Err(err(&format!("unsupported dtype {descr}"))),
    };
    let (size, _) = dtype_info(code).ok_or_else(|| err(&format!("unsupported dtype {descr}")))?;
    if header_value(header, "fortran_order").is_none_or(|v| !v.starts_with("False")) {
        return Err(err("only C-order arrays are supported"));
    }
    let shape_txt = header_value(header, "shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| err("no shape"))?;
    let shape = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<usize>().map_err(|_| err("bad shape")))
        .collect::<Result<Vec<_>, _>>()?;
    let n: usize = shape.iter().product();
    let raw = bytes
        .get(start + hlen..start + hlen + n * size)
        .ok_or_else(|| err("truncated data"))?
        .to_vec();
    Ok(Npy {
        values: decode(code, &raw),
        code: code.to_string(),
        shape,
        raw,
    })
}

// ---------------------------------------------------------------------------------------------
// One case

struct Outcome {
    status: &'static str,
    reason: String,
}

impl Outcome {
    fn new(status: &'static str, reason: impl Into<String>) -> Self {
        Outcome {
            status,
            reason: reason.into(),
        }
    }
}

/// One line, no tabs, at most `max` characters.
fn shorten(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        line
    } else {
        let mut t: String = line.chars().take(max - 3).collect();
        t.push_str("...");
        t
    }
}

/// The importer's error as one short line: the message of an ONNX model/node error (without
/// the constant path/node prefix), the op types of an unsupported-op error, or the Display text
/// plus the first problem of an `Invalid` error.
fn front_reason(e: &FrontError) -> String {
    let s = match e {
        FrontError::OnnxModel { message, .. } | FrontError::OnnxNode { message, .. } => {
            message.clone()
        }
        FrontError::OnnxUnsupported { nodes, .. } => format!(
            "unsupported op: {}",
            nodes
                .iter()
                .map(|(_, op)| op.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => {
            let mut s = e.to_string();
            let problems = e.problems();
            if let Some(p) = problems.first() {
                let _ = write!(s, ": {p}");
                if problems.len() > 1 {
                    let _ = write!(s, " (+{} more)", problems.len() - 1);
                }
            }
            s
        }
    };
    shorten(&s, 100)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

/// Largest `|a - b|` (NaN equals NaN, equal infinities are equal; any other NaN or infinity
/// mismatch counts as infinite error).
fn max_err(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&a, &b)| {
            if a == b || (a.is_nan() && b.is_nan()) {
                0.0
            } else if a.is_finite() && b.is_finite() {
                (a - b).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

fn run_case(dir: &Path) -> Outcome {
    let fixture = |m: String| Outcome::new("fixture-error", shorten(&m, 100));
    let bytes = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return fixture(format!("model.onnx: {e}")),
    };
    let mut model = match proto::ModelProto::decode(bytes.as_slice()) {
        Ok(m) => m,
        Err(e) => return fixture(format!("model.onnx: {e}")),
    };
    let Some(graph) = model.graph.as_mut() else {
        return fixture("model.onnx has no graph".into());
    };
    let mut inputs = Vec::new();
    for i in 0..graph.input.len() {
        match read_npy(&dir.join(format!("input_{i}.npy"))) {
            Ok(a) => inputs.push(a),
            Err(e) => return fixture(e),
        }
    }
    let n_outputs = graph.output.len();
    // Graph inputs 1.. become initializers.
    for (vi, a) in graph.input.iter().zip(&inputs).skip(1) {
        let Some((_, data_type)) = dtype_info(&a.code) else {
            return fixture(format!("input `{}`: dtype {}", vi.name, a.code));
        };
        graph.initializer.push(proto::TensorProto {
            name: vi.name.clone(),
            dims: a.shape.iter().map(|&d| d as i64).collect(),
            data_type,
            raw_data: a.raw.clone(),
            ..Default::default()
        });
    }
    graph.input.truncate(1);
    let bytes = model.encode_to_vec();

    let g = match catch_unwind(|| parse_onnx(&bytes, "model.onnx")) {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return Outcome::new("refused", front_reason(&e)),
        Err(p) => {
            return Outcome::new(
                "panic",
                shorten(&format!("import: {}", panic_text(&*p)), 100),
            )
        }
    };
    let mut feed = Vec::new();
    if !g.inputs.is_empty() {
        let Some(x) = inputs.first() else {
            return fixture("the imported graph has an input, the model none".into());
        };
        // hecc's per-image input shape (a 1-D `[C, L]` input is held as `[C, 1, L]`).
        let mut dims = x.shape.first().map(|&n| vec![n]).unwrap_or_default();
        match g.inputs.first().and_then(|&id| g.node(id)).map(|n| &n.op) {
            Some(Op::Input { shape, .. }) => dims.extend_from_slice(&shape.0),
            _ => return Outcome::new("eval-error", "graph input 0 is not an input node"),
        }
        match Tensor::from_shape_vec(IxDyn(&dims), x.values.clone()) {
            Ok(t) => feed.push(t),
            Err(_) => {
                return Outcome::new(
                    "eval-error",
                    format!(
                        "input_0 {:?} does not fit hecc's input shape {dims:?}",
                        x.shape
                    ),
                )
            }
        }
    }
    let outs = match catch_unwind(AssertUnwindSafe(|| eval_batch(&g, &feed))) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Outcome::new("eval-error", shorten(&e.to_string(), 100)),
        Err(p) => {
            return Outcome::new("panic", shorten(&format!("eval: {}", panic_text(&*p)), 100))
        }
    };
    let want = match read_npy(&dir.join("output_0.npy")) {
        Ok(a) => a,
        Err(e) => return fixture(e),
    };
    let Some(got) = outs.first() else {
        return Outcome::new("mismatch", "the imported graph has no output");
    };
    let extra = if n_outputs > 1 {
        format!(" (output 0 of {n_outputs} compared)")
    } else {
        String::new()
    };
    // A trailing Softmax/LogSoftmax/Sigmoid is dropped by design: compare with its input.
    let head = g
        .notes
        .iter()
        .find(|n| n.starts_with("trailing `") && n.contains(") dropped"));
    let (reference, ref_shape, tol) = match (head, inputs.first()) {
        (Some(_), Some(x)) => (&x.values, &x.shape, 1e-12),
        _ => (
            &want.values,
            &want.shape,
            if want.code == "f2" { 1e-3 } else { 1e-4 },
        ),
    };
    let got_vals: Vec<f64> = got.iter().copied().collect();
    if got_vals.len() != reference.len() {
        return Outcome::new(
            "mismatch",
            format!(
                "hecc gives shape {:?} ({} values), expected {:?} ({} values){extra}",
                got.shape(),
                got_vals.len(),
                ref_shape,
                reference.len()
            ),
        );
    }
    let scale = reference
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, v| m.max(v.abs()));
    let err = max_err(&got_vals, reference);
    if err > tol * scale {
        let worst = got_vals
            .iter()
            .zip(reference.iter())
            .enumerate()
            .map(|(i, (&a, &b))| (i, a, b, max_err(&[a], &[b])))
            .fold((0, 0.0, 0.0, -1.0), |m, x| if x.3 > m.3 { x } else { m });
        return Outcome::new(
            "mismatch",
            format!(
                "max err {err:.3e} (scale {scale:.3}): at flat index {} hecc {:.6} vs ref {:.6}{}{extra}",
                worst.0,
                worst.1,
                worst.2,
                if head.is_some() { " (vs the dropped head's input)" } else { "" }
            ),
        );
    }
    let Some(note) = head else {
        return Outcome::new("matched", format!("max err {err:.1e}{extra}"));
    };
    // The dropped head's contract: each image's argmax (over its flattened outputs, as hecc
    // reads the scores) is the reference's.
    if want.values.len() != got_vals.len() {
        return Outcome::new(
            "mismatch",
            format!(
                "head dropped, but hecc gives {} values, the reference {}",
                got_vals.len(),
                want.values.len()
            ),
        );
    }
    let n = got.shape().first().copied().unwrap_or(1).max(1);
    let per = got_vals.len() / n;
    for b in 0..n {
        let (h, r) = (
            &got_vals[b * per..(b + 1) * per],
            &want.values[b * per..(b + 1) * per],
        );
        let hi = argmax(h);
        let ri = argmax(r);
        if let (Some(hi), Some(ri)) = (hi, ri) {
            if r[hi] < r[ri] - 1e-6 * r[ri].abs().max(1.0) {
                return Outcome::new(
                    "mismatch",
                    format!(
                        "head dropped but argmax changes: image {b} of {n}, hecc picks index {hi} \
                         (ref {:.4}), reference max at {ri} ({:.4})",
                        r[hi], r[ri]
                    ),
                );
            }
        }
    }
    Outcome::new("head-dropped", shorten(note, 100))
}

/// Index of the first largest value (NaN never wins).
fn argmax(v: &[f64]) -> Option<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| !x.is_nan())
        .fold(None, |m: Option<(usize, f64)>, (i, &x)| match m {
            Some((_, y)) if y >= x => m,
            _ => Some((i, x)),
        })
        .map(|(i, _)| i)
}

// ---------------------------------------------------------------------------------------------
// Grouping refusal reasons for the table

/// A short group name for a refusal reason.
fn short_reason(reason: &str) -> String {
    const GROUPS: &[(&str, &str)] = &[
        ("has an integer element type", "int input dtype"),
        ("needs fixed positive dimensions", "zero-length input dim"),
        ("(it does not depend on the input)", "output is constant"),
        (
            "does not broadcast to the input",
            "constant varies along the batch axis",
        ),
        (
            "varies within a channel",
            "constant neither scalar nor per-channel",
        ),
        (
            "is not broadcastable as",
            "constant varies along the batch axis",
        ),
        (
            "is a constant; a computed tensor is expected",
            "constant operand",
        ),
        ("mixes the batch axis", "moves the batch axis"),
        ("does not hold the", "reshape target moves the batch axis"),
        ("cannot infer -1", "reshape target moves the batch axis"),
        ("moves data between axes", "Transpose moves data"),
        ("only the spatial axes", "reduces non-spatial axes"),
        (
            "count_include_pad = 0",
            "count_include_pad = 0 with padding",
        ),
        (
            "ceil_mode = 1 makes the last windows partial",
            "ceil_mode partial windows",
        ),
        ("are not supported for pooling", "pooling dilations"),
        ("only zero padding is supported", "non-zero pad value"),
        ("only Pow with exponent 1 or 2", "exponent not 1 or 2"),
        ("mask output of Dropout", "mask output"),
        ("Indices output of MaxPool", "Indices output"),
        ("must be 2-D", "B not 2-D"),
        ("unsupported op type", "only folded on constants"),
    ];
    if let Some((_, g)) = GROUPS.iter().find(|(k, _)| reason.contains(k)) {
        return (*g).to_string();
    }
    if let Some(i) = reason.find("got rank ") {
        let rank: usize = reason[i + 9..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0);
        return if rank > 4 {
            "input rank > 4"
        } else {
            "input rank < 2"
        }
        .into();
    }
    // The importer's own message, up to its first clause.
    let cut = reason
        .find(['(', ';', ':'])
        .filter(|&i| i > 10)
        .map_or(reason, |i| reason[..i].trim_end());
    shorten(cut, 60)
}

// ---------------------------------------------------------------------------------------------
// The test

struct Row {
    case: String,
    op: String,
    outcome: Outcome,
}

fn write_table(rows: &[Row]) -> String {
    let mut per_op: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        per_op.entry(r.op.as_str()).or_default().push(r);
    }
    let count = |rs: &[&Row], s: &str| rs.iter().filter(|r| r.outcome.status == s).count();
    let all: Vec<&Row> = rows.iter().collect();
    let mut t = String::new();
    let _ = writeln!(t, "# ONNX backend node tests through hecc\n");
    let _ = writeln!(
        t,
        "Generated by `{UPDATE_VAR}=1 cargo test --release -p hecc-ir --test onnx_node` from the \
         fixtures in this folder (see README.md); per-case statuses are in `results.tsv`. Graph \
         input 0 is the data input (its first dimension is the batch), every other input is an \
         initializer. `accepted` = imported; `matched` = equals the reference output 0 (within \
         1e-4, 1e-3 for float16, relative to max(1, max |ref|)); `head dropped` = a trailing \
         Softmax/Sigmoid that hecc drops by design, output checked equal to its input.\n"
    );
    let statuses = [
        "matched",
        "head-dropped",
        "mismatch",
        "eval-error",
        "refused",
        "panic",
        "fixture-error",
    ];
    let _ = writeln!(
        t,
        "Totals: {} cases, {} accepted; {}.\n",
        all.len(),
        all.len() - count(&all, "refused") - count(&all, "fixture-error"),
        statuses
            .iter()
            .map(|s| format!("{} {s}", count(&all, s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        t,
        "| op | cases | accepted | matched | head dropped | mismatch | eval error | refused | \
         refusal reasons |"
    );
    let _ = writeln!(t, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (op, rs) in &per_op {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for r in rs.iter().filter(|r| r.outcome.status == "refused") {
            *reasons.entry(short_reason(&r.outcome.reason)).or_default() += 1;
        }
        let reasons = reasons
            .iter()
            .map(|(k, n)| format!("{} ({n})", k.replace('|', "\\|")))
            .collect::<Vec<_>>()
            .join("; ");
        let refused = count(rs, "refused");
        let _ = writeln!(
            t,
            "| {op} | {} | {} | {} | {} | {} | {} | {refused} | {reasons} |",
            rs.len(),
            rs.len() - refused - count(rs, "fixture-error"),
            count(rs, "matched"),
            count(rs, "head-dropped"),
            count(rs, "mismatch"),
            count(rs, "eval-error"),
        );
    }
    let bad: Vec<&&Row> = all
        .iter()
        .filter(|r| ["mismatch", "eval-error", "panic"].contains(&r.outcome.status))
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(t, "\n## Accepted but not matched\n");
        for r in bad {
            let _ = writeln!(
                t,
                "- `{}` ({}): {}: {}",
                r.case, r.op, r.outcome.status, r.outcome.reason
            );
        }
    }
    t
}

#[test]
fn onnx_backend_node_tests() {
    let start = Instant::now();
    let root = fixtures();
    let manifest =
        std::fs::read_to_string(root.join("manifest.tsv")).expect("read onnx_node/manifest.tsv");
    let mut rows = Vec::new();
    for line in manifest.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (case, op) = (cols[0].to_string(), cols.get(1).copied().unwrap_or("?"));
        let outcome = run_case(&root.join(&case));
        rows.push(Row {
            case,
            op: op.to_string(),
            outcome,
        });
    }
    assert!(!rows.is_empty(), "manifest.tsv lists no case");

    let mut tsv = String::from("case\top_type\tstatus\treason\n");
    for r in &rows {
        let reason = r.outcome.reason.replace(['\t', '\n'], " ");
        let _ = writeln!(tsv, "{}\t{}\t{}\t{reason}", r.case, r.op, r.outcome.status);
    }
    let results_path = root.join("results.tsv");
    let mut failures = Vec::new();
    if std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1") {
        std::fs::write(&results_path, &tsv).expect("write results.tsv");
        std::fs::write(root.join("TABLE.md"), write_table(&rows)).expect("write TABLE.md");
    } else {
        let committed = std::fs::read_to_string(&results_path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}; run with {UPDATE_VAR}=1 to create it",
                results_path.display()
            )
        });
        let old: BTreeMap<&str, &str> = committed
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut c = l.split('\t');
                Some((c.next()?, c.nth(1)?))
            })
            .collect();
        let mut seen = BTreeSet::new();
        for r in &rows {
            seen.insert(r.case.as_str());
            match old.get(r.case.as_str()) {
                Some(&s) if s == r.outcome.status => {}
                Some(&s) => failures.push(format!(
                    "{}: {s} -> {} ({})",
                    r.case, r.outcome.status, r.outcome.reason
                )),
                None => failures.push(format!(
                    "{}: new case, now {} ({})",
                    r.case, r.outcome.status, r.outcome.reason
                )),
            }
        }
        for case in old.keys().filter(|c| !seen.contains(*c)) {
            failures.push(format!("{case}: in results.tsv but not in manifest.tsv"));
        }
        if !failures.is_empty() {
            failures.insert(
                0,
                format!(
                    "statuses changed since results.tsv (regenerate with {UPDATE_VAR}=1 if \
                     intended):"
                ),
            );
        }
    }
    let bugs: Vec<String> = rows
        .iter()
        .filter(|r| FAILING.contains(&r.outcome.status))
        .map(|r| {
            format!(
                "{} ({}): {}: {}",
                r.case, r.op, r.outcome.status, r.outcome.reason
            )
        })
        .collect();
    if !bugs.is_empty() {
        failures.push(format!(
            "{} case(s) accepted with a wrong answer or broken:",
            bugs.len()
        ));
        failures.extend(bugs);
    }
    eprintln!("onnx_node: {} cases in {:.2?}", rows.len(), start.elapsed());
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
