//! Mutation fuzzing of the front ends: the reference YAML specs (`models/*.yaml`,
//! `models/beaa/*.yaml`), the ONNX fixtures (`models/onnx/**/*.onnx` and the single-node models
//! of `tests/fixtures/onnx_node`, their extra inputs made initializers) and the weight files
//! (safetensors, npy, npz) are mutated at random (byte flips, truncation, inserted random bytes,
//! duplicated or removed slices; in YAML text, numbers replaced by huge, negative, NaN or
//! infinite values and `shape:` lists replaced; in decoded ONNX models, dimensions, attributes,
//! initializer values, op types and node inputs changed) and loaded through
//! `hecc_ir::front::load_model` (from a file in a scratch directory) or the weight readers.
//! Loading must return `Ok` or `Err`, never panic, and finish within a few seconds.
//!
//! A panic fails the test, naming the fixture and the mutations (proptest then shrinks them).
//!
//! Each property runs a small number of cases by default, so that the file takes well under a
//! minute in release mode; set `HECC_FUZZ_CASES=N` to run `N` cases per property instead, e.g.
//! `HECC_FUZZ_CASES=20000 cargo test -p hecc-ir --release --test fuzz_front`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hecc_ir::front::onnx::proto;
use hecc_ir::front::weights::{read_npy, read_npz, read_safetensors};
use hecc_ir::front::{load_model, onnx::SUPPORTED_OPS};
use hecc_ir::tensor::limits::{check_activation, MAX_PARAMETERS};
use hecc_ir::tensor::verify;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;

/// Longest a single load may take.
const SLOW: Duration = Duration::from_secs(10);

fn cases(default: u32) -> u32 {
    std::env::var("HECC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == ext));
    v.sort();
    v
}

/// A scratch directory holding copies of the reference weights, so that specs written there
/// find `<stem>.safetensors` next to them.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz_front");
        std::fs::create_dir_all(&d).expect("create scratch directory");
        for dir in [root().join("models"), root().join("models/beaa")] {
            for p in files(&dir, "safetensors") {
                if let Some(name) = p.file_name() {
                    std::fs::copy(&p, d.join(name)).expect("copy weights");
                }
            }
        }
        d
    })
}

/// `(file name, text)` of the reference specs.
fn yaml_corpus() -> &'static [(String, String)] {
    static C: OnceLock<Vec<(String, String)>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = Vec::new();
        for dir in [root().join("models"), root().join("models/beaa")] {
            for p in files(&dir, "yaml") {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                v.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
        assert!(v.len() >= 5, "reference specs not found");
        v
    })
}

/// The dtype code of an `.npy` file's header (`f4`, `i8` ...).
fn npy_code(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes.get(..bytes.len().min(256))?);
    let at = text.find("'descr'")?;
    let rest = &text[at + 7..];
    let q = rest.find('\'')?;
    let code: String = rest[q + 1..].chars().take_while(|&c| c != '\'').collect();
    Some(code.trim_start_matches(['<', '|', '=']).to_string())
}

/// A single-node ONNX fixture with graph inputs 1.. turned into initializers (as in
/// `onnx_node.rs`), encoded.
fn node_fixture(dir: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(dir.join("model.onnx")).ok()?;
    let mut model = proto::ModelProto::decode(bytes.as_slice()).ok()?;
    let graph = model.graph.as_mut()?;
    let mut inits = Vec::new();
    for (i, vi) in graph.input.iter().enumerate().skip(1) {
        let raw = std::fs::read(dir.join(format!("input_{i}.npy"))).ok()?;
        let t = read_npy(&raw).ok()?;
        let dims = t.shape().iter().map(|&d| d as i64).collect();
        let vals: Vec<f64> = t.iter().copied().collect();
        let float = matches!(npy_code(&raw)?.as_str(), "f2" | "f4" | "f8");
        inits.push(if float {
            proto::TensorProto {
                name: vi.name.clone(),
                dims,
                data_type: 11,
                double_data: vals,
                ..Default::default()
            }
        } else {
            proto::TensorProto {
                name: vi.name.clone(),
                dims,
                data_type: 7,
                int64_data: vals.iter().map(|&v| v as i64).collect(),
                ..Default::default()
            }
        });
    }
    graph.initializer.extend(inits);
    graph.input.truncate(1);
    Some(model.encode_to_vec())
}

/// `(name, bytes)` of the ONNX fixtures.
fn onnx_corpus() -> &'static [(String, Vec<u8>)] {
    static C: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = Vec::new();
        for dir in [
            root().join("models/onnx"),
            root().join("models/onnx/export"),
        ] {
            for p in files(&dir, "onnx") {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                v.push((name, std::fs::read(&p).unwrap()));
            }
        }
        let nodes = root().join("tests/fixtures/onnx_node");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nodes)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.retain(|d| d.join("model.onnx").exists());
        dirs.sort();
        for d in dirs {
            if let Some(b) = node_fixture(&d) {
                let name = d.file_name().unwrap().to_string_lossy().to_string();
                v.push((name, b));
            }
        }
        assert!(v.len() >= 5, "ONNX fixtures not found");
        v
    })
}

/// A stored (uncompressed) zip of `.npy` members, as `numpy.savez` writes (CRCs left 0: the
/// reader does not check them).
fn npz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in members {
        let offset = out.len() as u32;
        let mut local = vec![0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        local.extend_from_slice(&0u32.to_le_bytes()); // crc
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(data.len() as u32).to_le_bytes());
        local.extend_from_slice(&(name.len() as u16).to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(data);
        let mut c = vec![0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c.extend_from_slice(&0u32.to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.extend_from_slice(&c);
    }
    let cd_at = out.len() as u32;
    out.extend_from_slice(&central);
    let n = members.len() as u16;
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// `(name, bytes)` of weight files: the small reference safetensors, the fixture `.npy` arrays
/// and an `.npz` of them.
fn weights_corpus() -> &'static [(String, Vec<u8>)] {
    static C: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = Vec::new();
        for name in ["survey_relu.safetensors", "cryptonets.safetensors"] {
            v.push((
                name.to_string(),
                std::fs::read(root().join("models").join(name)).unwrap(),
            ));
        }
        let npys: Vec<(String, Vec<u8>)> = files(&root().join("models/onnx"), "npy")
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                (name, std::fs::read(p).unwrap())
            })
            .collect();
        let members: Vec<(&str, Vec<u8>)> =
            npys.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        let z = npz(&members);
        assert_eq!(read_npz(&z).map(|w| w.len()).ok(), Some(members.len()));
        v.extend(npys);
        v.push(("fixtures.npz".into(), z));
        v
    })
}

// ---------------------------------------------------------------------------------------------
// Mutations

#[derive(Debug, Clone)]
enum ByteMut {
    Flip(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Duplicate(Index, Index, Index),
    Remove(Index, Index),
}

fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..).prop_map(|(i, x)| ByteMut::Flip(i, x)),
        1 => any::<Index>().prop_map(ByteMut::Truncate),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| ByteMut::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, b, c)| ByteMut::Duplicate(a, b, c)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ByteMut::Remove(a, b)),
    ]
}

fn apply_bytes(b: &mut Vec<u8>, m: &ByteMut) {
    if b.is_empty() {
        return;
    }
    let n = b.len();
    match m {
        ByteMut::Flip(i, x) => b[i.index(n)] ^= x,
        ByteMut::Truncate(i) => b.truncate(i.index(n)),
        ByteMut::Insert(i, bytes) => {
            let at = i.index(n + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        ByteMut::Duplicate(from, len, to) => {
            let s = from.index(n);
            let e = s + 1 + len.index((n - s).min(4096));
            let slice = b[s..e].to_vec();
            let at = to.index(n + 1);
            b.splice(at..at, slice);
        }
        ByteMut::Remove(from, len) => {
            let s = from.index(n);
            let e = s + 1 + len.index((n - s).min(4096));
            b.drain(s..e);
        }
    }
}

/// Replacements for numbers in YAML text.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "-0.0",
    "0.5",
    "65536",
    "16777216",
    "16777217",
    "1000000000",
    "4294967296",
    "1000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e308",
    "-1e308",
    "1e-320",
    "3e38",
    ".nan",
    ".inf",
    "-.inf",
    "NaN",
    "~",
    "[]",
    "[1, 2]",
    "\"7\"",
];

/// Replacements for `shape:` lists.
const SHAPES: &[&str] = &[
    "[]",
    "[0]",
    "[1]",
    "[784]",
    "[3, 32]",
    "[1, 28, 28, 1]",
    "[16777216]",
    "[1000000000]",
    "[1, 100000, 100000]",
    "[4096, 4096, 4096]",
    "[18446744073709551615, 2]",
    "[-3, 28, 28]",
];

#[derive(Debug, Clone)]
enum TextMut {
    Bytes(ByteMut),
    Number(Index, Index),
    Shape(Index, Index),
    DeleteLine(Index),
    DuplicateLine(Index, Index),
}

fn text_mut() -> impl Strategy<Value = TextMut> {
    prop_oneof![
        2 => byte_mut().prop_map(TextMut::Bytes),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextMut::Number(a, b)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextMut::Shape(a, b)),
        1 => any::<Index>().prop_map(TextMut::DeleteLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextMut::DuplicateLine(a, b)),
    ]
}

/// Byte ranges of the numbers in `s`.
fn numbers(s: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let starts = s[i].is_ascii_digit()
            && (i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_'));
        if starts {
            let b = if i > 0 && s[i - 1] == b'-' { i - 1 } else { i };
            let mut e = i;
            while e < s.len() && (s[e].is_ascii_digit() || matches!(s[e], b'.' | b'e' | b'-')) {
                e += 1;
            }
            v.push((b, e));
            i = e;
        } else {
            i += 1;
        }
    }
    v
}

fn apply_text(b: &mut Vec<u8>, m: &TextMut) {
    match m {
        TextMut::Bytes(m) => {
            apply_bytes(b, m);
            // Keep the text UTF-8, so that it reaches the parser (invalid UTF-8 is an I/O
            // error of `load_model`).
            if std::str::from_utf8(b).is_err() {
                *b = String::from_utf8_lossy(b).into_owned().into_bytes();
            }
        }
        TextMut::Number(which, with) => {
            let nums = numbers(b);
            if !nums.is_empty() {
                let (s, e) = nums[which.index(nums.len())];
                b.splice(s..e, NUMBERS[with.index(NUMBERS.len())].bytes());
            }
        }
        TextMut::Shape(which, with) => {
            let text = String::from_utf8_lossy(b).to_string();
            let spots: Vec<usize> = text.match_indices("shape:").map(|(i, _)| i + 6).collect();
            if !spots.is_empty() {
                let s = spots[which.index(spots.len())];
                let e = text[s..].find(['\n', '}']).map_or(text.len(), |k| s + k);
                let e = text[s..e].rfind(']').map_or(e, |k| s + k + 1);
                let shape = format!(" {}", SHAPES[with.index(SHAPES.len())]);
                b.splice(s..e, shape.bytes());
            }
        }
        TextMut::DeleteLine(which) | TextMut::DuplicateLine(which, _) => {
            let lines: Vec<Vec<u8>> = b
                .split_inclusive(|&c| c == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            if lines.is_empty() {
                return;
            }
            let i = which.index(lines.len());
            let mut out = lines.clone();
            match m {
                TextMut::DuplicateLine(_, to) => {
                    let at = to.index(lines.len() + 1);
                    out.insert(at, lines[i].clone());
                }
                _ => {
                    out.remove(i);
                }
            }
            *b = out.concat();
        }
    }
}

/// Interesting integers for ONNX dimensions and attributes.
const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    -2,
    7,
    64,
    1 << 24,
    (1 << 24) + 1,
    1 << 31,
    1 << 40,
    1_000_000_000_000,
    i64::MAX,
    i64::MIN,
];

/// Interesting values for ONNX initializer elements.
const VALUES: &[f64] = &[
    0.0,
    -1.0,
    1e-45,
    3e38,
    -3e38,
    4294967297.0,
    1e300,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e12,
    -1e12,
];

#[derive(Debug, Clone)]
enum OnnxMut {
    Bytes(ByteMut),
    InputDim(Index, Index),
    InitDim(Index, Index, Index),
    InitValue(Index, Index, Index),
    InitTruncate(Index),
    AttrInt(Index, Index, Index),
    OpType(Index, Index),
    DropInput(Index, Index),
    RewireInput(Index, Index, Index),
}

fn onnx_mut() -> impl Strategy<Value = OnnxMut> {
    let i = || any::<Index>();
    prop_oneof![
        2 => byte_mut().prop_map(OnnxMut::Bytes),
        2 => (i(), i()).prop_map(|(a, b)| OnnxMut::InputDim(a, b)),
        2 => (i(), i(), i()).prop_map(|(a, b, c)| OnnxMut::InitDim(a, b, c)),
        2 => (i(), i(), i()).prop_map(|(a, b, c)| OnnxMut::InitValue(a, b, c)),
        1 => i().prop_map(OnnxMut::InitTruncate),
        3 => (i(), i(), i()).prop_map(|(a, b, c)| OnnxMut::AttrInt(a, b, c)),
        1 => (i(), i()).prop_map(|(a, b)| OnnxMut::OpType(a, b)),
        1 => (i(), i()).prop_map(|(a, b)| OnnxMut::DropInput(a, b)),
        1 => (i(), i(), i()).prop_map(|(a, b, c)| OnnxMut::RewireInput(a, b, c)),
    ]
}

fn apply_onnx(b: &mut Vec<u8>, m: &OnnxMut) {
    if let OnnxMut::Bytes(m) = m {
        apply_bytes(b, m);
        return;
    }
    let Ok(mut model) = proto::ModelProto::decode(b.as_slice()) else {
        return;
    };
    let Some(g) = model.graph.as_mut() else {
        return;
    };
    let pick = |ix: &Index, n: usize| (n > 0).then(|| ix.index(n));
    match m {
        OnnxMut::Bytes(_) => {}
        OnnxMut::InputDim(d, v) => {
            let dims: Vec<&mut proto::Dimension> = g
                .input
                .iter_mut()
                .filter_map(|vi| vi.r#type.as_mut()?.tensor_type.as_mut()?.shape.as_mut())
                .flat_map(|s| s.dim.iter_mut())
                .collect();
            let n = dims.len();
            if let Some(k) = pick(d, n) {
                if let Some(dim) = dims.into_iter().nth(k) {
                    dim.dim_value = Some(INTS[v.index(INTS.len())]);
                }
            }
        }
        OnnxMut::InitDim(t, d, v) => {
            if let Some(t) = pick(t, g.initializer.len()).map(|k| &mut g.initializer[k]) {
                match pick(d, t.dims.len()) {
                    Some(k) => t.dims[k] = INTS[v.index(INTS.len())],
                    None => t.dims.push(INTS[v.index(INTS.len())]),
                }
            }
        }
        OnnxMut::InitValue(t, e, v) => {
            if let Some(t) = pick(t, g.initializer.len()).map(|k| &mut g.initializer[k]) {
                let x = VALUES[v.index(VALUES.len())];
                if let Some(k) = pick(e, t.float_data.len()) {
                    t.float_data[k] = x as f32;
                } else if let Some(k) = pick(e, t.double_data.len()) {
                    t.double_data[k] = x;
                } else if let Some(k) = pick(e, t.int64_data.len()) {
                    t.int64_data[k] = INTS[v.index(INTS.len())];
                } else if t.data_type == 1 {
                    if let Some(k) = pick(e, t.raw_data.len() / 4) {
                        t.raw_data[4 * k..4 * k + 4].copy_from_slice(&(x as f32).to_le_bytes());
                    }
                } else if t.data_type == 7 {
                    if let Some(k) = pick(e, t.raw_data.len() / 8) {
                        let y = INTS[v.index(INTS.len())];
                        t.raw_data[8 * k..8 * k + 8].copy_from_slice(&y.to_le_bytes());
                    }
                }
            }
        }
        OnnxMut::InitTruncate(t) => {
            if let Some(t) = pick(t, g.initializer.len()).map(|k| &mut g.initializer[k]) {
                t.raw_data.truncate(t.raw_data.len() / 2);
                t.float_data.pop();
                t.double_data.pop();
                t.int64_data.pop();
            }
        }
        OnnxMut::AttrInt(nd, a, v) => {
            if let Some(n) = pick(nd, g.node.len()).map(|k| &mut g.node[k]) {
                if let Some(at) = pick(a, n.attribute.len()).map(|k| &mut n.attribute[k]) {
                    let x = INTS[v.index(INTS.len())];
                    match pick(v, at.ints.len()) {
                        Some(k) => at.ints[k] = x,
                        None => at.i = x,
                    }
                    at.f = x as f32;
                }
            }
        }
        OnnxMut::OpType(nd, op) => {
            if let Some(n) = pick(nd, g.node.len()).map(|k| &mut g.node[k]) {
                n.op_type = SUPPORTED_OPS[op.index(SUPPORTED_OPS.len())].to_string();
            }
        }
        OnnxMut::DropInput(nd, i) => {
            if let Some(n) = pick(nd, g.node.len()).map(|k| &mut g.node[k]) {
                if let Some(k) = pick(i, n.input.len()) {
                    n.input.remove(k);
                }
            }
        }
        OnnxMut::RewireInput(nd, i, src) => {
            let names: Vec<String> = g
                .node
                .iter()
                .flat_map(|n| n.output.iter().cloned())
                .chain(g.initializer.iter().map(|t| t.name.clone()))
                .chain(g.input.iter().map(|v| v.name.clone()))
                .collect();
            if let (Some(n), Some(s)) = (
                pick(nd, g.node.len()).map(|k| &mut g.node[k]),
                pick(src, names.len()),
            ) {
                if let Some(k) = pick(i, n.input.len()) {
                    n.input[k] = names[s].clone();
                }
            }
        }
    }
    *b = model.encode_to_vec();
}

// ---------------------------------------------------------------------------------------------
// Running one case

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `f`, failing the case (with `what` in the message) if it panics or is slow.
fn guarded<T>(what: &dyn Fn() -> String, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| TestCaseError::fail(format!("{} panicked: {}", what(), panic_text(&*p))))?;
    let took = t.elapsed();
    if took > SLOW {
        return Err(TestCaseError::fail(format!("{} took {took:?}", what())));
    }
    Ok(r)
}

/// Writes `bytes` as `name` in the scratch directory and loads it with `load_model`; every
/// error must render.
fn load_bytes(name: &str, bytes: &[u8], what: &dyn Fn() -> String) -> Result<(), TestCaseError> {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let r = guarded(what, || load_model(&path))?;
    if let Ok(g) = &r {
        // What loads is verified and within the limits.
        let shapes = verify(g);
        prop_assert!(
            shapes.is_ok(),
            "{}: loaded but does not verify: {shapes:?}",
            what()
        );
        for s in shapes.iter().flat_map(|s| s.values()) {
            prop_assert!(
                check_activation(s).is_ok(),
                "{}: shape {s} beyond the limits",
                what()
            );
        }
        prop_assert!(g.parameter_count() <= MAX_PARAMETERS, "{}", what());
    }
    if let Err(e) = r {
        let mut out = String::new();
        guarded(what, || {
            miette::NarratableReportHandler::new()
                .render_report(&mut out, &e)
                .ok()
        })?;
        prop_assert!(!out.is_empty(), "{}: empty diagnostic", what());
    }
    Ok(())
}

#[test]
fn unmutated_fixtures_load() {
    for dir in [root().join("models"), root().join("models/beaa")] {
        for p in files(&dir, "yaml") {
            let r = load_model(&p);
            // Specs whose weights are not committed (squeezenet28, resnet8_28) are skipped.
            let has_weights = ["safetensors", "npz"]
                .iter()
                .any(|x| p.with_extension(x).exists());
            if has_weights {
                assert!(r.is_ok(), "{}: {:?}", p.display(), r.err());
            }
        }
    }
    let onnx = onnx_corpus();
    assert!(onnx.iter().any(|(n, _)| n == "cnn.onnx"));
    for (name, bytes) in weights_corpus() {
        let ok = if name.ends_with(".safetensors") {
            read_safetensors(bytes).is_ok()
        } else if name.ends_with(".npz") {
            read_npz(bytes).is_ok()
        } else {
            read_npy(bytes).is_ok()
        };
        assert!(ok, "{name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), ..ProptestConfig::default() })]

    #[test]
    fn mutated_yaml_specs_never_panic(
        which in any::<Index>(),
        muts in prop::collection::vec(text_mut(), 1..4),
    ) {
        // Written under the fixture's name, so that its default weights are found; only this
        // property writes specs.
        let corpus = yaml_corpus();
        let (name, text) = &corpus[which.index(corpus.len())];
        let mut b = text.clone().into_bytes();
        for m in &muts {
            apply_text(&mut b, m);
        }
        let what = || format!("{name} with {muts:?}");
        load_bytes(name, &b, &what)?;
    }

    #[test]
    fn mutated_onnx_models_never_panic(
        which in any::<Index>(),
        muts in prop::collection::vec(onnx_mut(), 1..4),
    ) {
        let corpus = onnx_corpus();
        let (name, bytes) = &corpus[which.index(corpus.len())];
        let mut b = bytes.clone();
        for m in &muts {
            apply_onnx(&mut b, m);
        }
        let what = || format!("{name} with {muts:?}");
        load_bytes("fuzz-model.onnx", &b, &what)?;
    }

    #[test]
    fn mutated_weight_files_never_panic(
        which in any::<Index>(),
        muts in prop::collection::vec(byte_mut(), 1..4),
    ) {
        let corpus = weights_corpus();
        let (name, bytes) = &corpus[which.index(corpus.len())];
        let mut b = bytes.clone();
        for m in &muts {
            apply_bytes(&mut b, m);
        }
        let what = || format!("{name} with {muts:?}");
        if name.ends_with(".safetensors") {
            let _ = guarded(&what, || read_safetensors(&b).is_ok())?;
        } else if name.ends_with(".npz") {
            let _ = guarded(&what, || read_npz(&b).is_ok())?;
        } else {
            let _ = guarded(&what, || read_npy(&b).is_ok())?;
        }
    }
}
