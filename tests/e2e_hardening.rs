//! Hardening of the client/server flow, through the `hecc` binary as a user runs it: keys bound
//! to their owner (two keygens of one plan never mix), results bound to their request (edited
//! outputs refused even with a recomputed checksum), plans that cannot be downgraded or edited,
//! secret key permissions, input range and count checks, output paths checked before work, and
//! `kill -9` during encrypt and run leaving no partial or stray file.
//!
//! Small insecure parameters (`--insecure`, N = 2^12) keep it fast; one test checks that such a
//! plan is refused without the flag. Run with `cargo test --release --test e2e_hardening`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::run::{Container, FileKind, InputsMeta, OutputsMeta, EVAL_KEYS_FILE, SECRET_KEY_FILE};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn images() -> PathBuf {
    root().join("models/data/mnist-t10k-first256-images-idx3-ubyte")
}

fn hecc<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(args)
        .output()
        .expect("hecc runs")
}

/// Runs hecc and returns stdout and stderr; panics unless it succeeds.
fn ok<S: AsRef<OsStr>>(args: &[S]) -> (String, String) {
    let o = hecc(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "hecc failed:\n{err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

/// Diagnostics as one line: the renderer wraps long messages over lines with a margin.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '│')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs hecc and returns stderr (as one line); panics unless it fails cleanly (exit 1, no
/// panic).
fn refused<S: AsRef<OsStr>>(args: &[S]) -> String {
    let o = hecc(args);
    let err = one_line(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "expected a refusal:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// One plan (insecure, four images per run), two key sets of it, one encrypted batch and its
/// result, shared by the tests (read only).
struct Fixture {
    dir: PathBuf,
    plan: PathBuf,
    keys: PathBuf,
    keys2: PathBuf,
    x: PathBuf,
    y: PathBuf,
    predictions: String,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hecc-hardening-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let plan = dir.join("plan.json");
        let model = s(&root().join("models/cryptonets.yaml"));
        let (_, err) = ok(&[
            "compile",
            &model,
            "--layout",
            "batch",
            "--batch",
            "4",
            "--insecure",
            "-o",
            &s(&plan),
        ]);
        assert!(err.contains("NOT 128-bit secure"), "{err}");
        let keys = dir.join("keys");
        let keys2 = dir.join("keys2");
        for k in [&keys, &keys2] {
            ok(&["keygen", &s(&plan), "-o", &s(k), "--insecure"]);
        }
        let x = dir.join("x.ct");
        let y = dir.join("y.ct");
        ok(&[
            "encrypt",
            &s(&plan),
            "--keys",
            &s(&keys),
            "--input",
            &s(&images()),
            "--limit",
            "4",
            "-o",
            &s(&x),
            "--insecure",
        ]);
        ok(&[
            "run",
            &s(&plan),
            &s(&x),
            "--eval-keys",
            &s(&keys.join(EVAL_KEYS_FILE)),
            "-o",
            &s(&y),
            "--quiet",
            "--insecure",
        ]);
        let (out, _) = ok(&[
            "decrypt",
            &s(&y),
            "--secret-key",
            &s(&keys.join(SECRET_KEY_FILE)),
            "-o",
            &s(&dir.join("l.npy")),
            "--request",
            &s(&x),
            "--insecure",
        ]);
        let predictions = out.lines().next().unwrap_or_default().to_string();
        assert_eq!(predictions, "predictions (4 images): 7 2 1 0");
        Fixture {
            dir,
            plan,
            keys,
            keys2,
            x,
            y,
            predictions,
        }
    })
}

/// Number of tests in this file: the last one to finish removes the fixture's directory.
const TESTS: usize = 7;

/// Counts a finished test (passed or failed) when dropped.
struct Finished;

impl Drop for Finished {
    fn drop(&mut self) {
        static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        if DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == TESTS {
            if let Some(f) = FIXTURE.get() {
                let _ = std::fs::remove_dir_all(&f.dir);
            }
        }
    }
}

/// A fresh directory for one test's own files, and the guard counting the test as finished.
fn scratch(tag: &str) -> (PathBuf, Finished) {
    let guard = Finished;
    let d = fixture().dir.join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    (d, guard)
}

#[test]
fn keys_of_another_keygen_are_refused_naming_both_ids() {
    let f = fixture();
    let (d, _finished) = scratch("mixup");
    // The server runs with the evaluation keys of another keygen of the same plan.
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&f.x),
        "--eval-keys",
        &s(&f.keys2.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d.join("y.ct")),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("made with other keys (key id"), "{err}");
    assert!(!d.join("y.ct").exists());
    // The client decrypts with the secret key of another keygen.
    let err = refused(&[
        "decrypt",
        &s(&f.y),
        "--secret-key",
        &s(&f.keys2.join(SECRET_KEY_FILE)),
        "-o",
        &s(&d.join("l.npy")),
        "--insecure",
    ]);
    assert!(err.contains("made with other keys (key id"), "{err}");
    assert!(!d.join("l.npy").exists(), "nothing written on error");
    // Encrypting with the other keys and running with the first: refused too.
    let x2 = d.join("x2.ct");
    ok(&[
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&f.keys2),
        "--input",
        &s(&images()),
        "--limit",
        "2",
        "-o",
        &s(&x2),
        "--insecure",
    ]);
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&x2),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d.join("y2.ct")),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("other keys"), "{err}");
    // A key directory holding the secret key of one keygen and the evaluation keys of another.
    let mixed = d.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(f.keys2.join(SECRET_KEY_FILE), mixed.join(SECRET_KEY_FILE)).unwrap();
    std::fs::copy(f.keys.join(EVAL_KEYS_FILE), mixed.join(EVAL_KEYS_FILE)).unwrap();
    let err = refused(&[
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&mixed),
        "--input",
        &s(&images()),
        "--limit",
        "2",
        "-o",
        &s(&d.join("x3.ct")),
        "--insecure",
    ]);
    assert!(err.contains("come from different keygens"), "{err}");
}

/// Rewrites the outputs file `from` into `to` with its metadata changed by `edit` and a
/// recomputed checksum (what a malicious server can do).
fn edit_outputs(from: &Path, to: &Path, edit: impl Fn(&mut OutputsMeta, &mut Vec<Vec<u8>>)) {
    let bytes = std::fs::read(from).unwrap();
    let mut c = Container::from_bytes(&bytes, FileKind::Outputs, "y").unwrap();
    let mut meta: OutputsMeta = serde_json::from_slice(&c.sections[1]).unwrap();
    let mut cts = c.sections.split_off(2);
    edit(&mut meta, &mut cts);
    c.sections[1] = serde_json::to_vec(&meta).unwrap();
    c.sections.extend(cts);
    std::fs::write(to, c.to_bytes()).unwrap();
}

#[test]
fn outputs_edited_by_the_server_are_refused_even_with_a_valid_checksum() {
    let f = fixture();
    let (d, _finished) = scratch("edited");
    let sk = s(&f.keys.join(SECRET_KEY_FILE));
    type Edit = Box<dyn Fn(&mut OutputsMeta, &mut Vec<Vec<u8>>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "fewer images",
            Box::new(|m, _| m.images = 3),
            "holds 3 images, the request sent 4",
        ),
        (
            "2^40 images",
            Box::new(|m, _| m.images = 1 << 40),
            "claims 1099511627776 images",
        ),
        (
            "count in the record too",
            Box::new(|m, _| {
                m.images = 3;
                m.request.images = 3;
            }),
            "does not carry this client's tag",
        ),
        (
            "elements reordered",
            Box::new(|m, cts| {
                m.elements.swap(0, 1);
                cts.swap(0, 1);
            }),
            "not those of the plan",
        ),
        (
            "elements removed",
            Box::new(|m, cts| {
                m.elements.clear();
                cts.clear();
            }),
            "not those of the plan",
        ),
        (
            "model renamed",
            Box::new(|m, _| m.model = "other".into()),
            "names model `other`",
        ),
    ];
    for (what, edit, want) in cases {
        let y = d.join("y-edited.ct");
        edit_outputs(&f.y, &y, edit);
        let err = refused(&[
            "decrypt",
            &s(&y),
            "--secret-key",
            &sk,
            "-o",
            &s(&d.join("l.npy")),
            "--insecure",
        ]);
        assert!(err.contains(want), "{what}: {err}");
    }
    // Metadata that is not byte for byte what hecc writes (here: padded) is refused.
    let bytes = std::fs::read(&f.y).unwrap();
    let mut c = Container::from_bytes(&bytes, FileKind::Outputs, "y").unwrap();
    c.sections[1].extend_from_slice(b"    ");
    let y = d.join("y-padded.ct");
    std::fs::write(&y, c.to_bytes()).unwrap();
    let err = refused(&[
        "decrypt",
        &s(&y),
        "--secret-key",
        &sk,
        "-o",
        &s(&d.join("l.npy")),
        "--insecure",
    ]);
    assert!(err.contains("metadata is not as hecc writes it"), "{err}");
    // Inputs whose ciphertexts were reordered would compute on the wrong elements: the server
    // refuses them.
    let bytes = std::fs::read(&f.x).unwrap();
    let mut c = Container::from_bytes(&bytes, FileKind::Inputs, "x").unwrap();
    let mut meta: InputsMeta = serde_json::from_slice(&c.sections[0]).unwrap();
    meta.elements.swap(0, 1);
    c.sections[0] = serde_json::to_vec(&meta).unwrap();
    let x = d.join("x-swapped.ct");
    std::fs::write(&x, c.to_bytes()).unwrap();
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d.join("y3.ct")),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("not in the plan's input order"), "{err}");
    // A genuine result checked against another request: refused.
    let x2 = d.join("x2.ct");
    ok(&[
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&f.keys),
        "--input",
        &s(&images()),
        "--limit",
        "4",
        "-o",
        &s(&x2),
        "--insecure",
    ]);
    let err = refused(&[
        "decrypt",
        &s(&f.y),
        "--secret-key",
        &sk,
        "-o",
        &s(&d.join("l.npy")),
        "--request",
        &s(&x2),
        "--insecure",
    ]);
    assert!(err.contains("does not answer the request"), "{err}");
}

/// Edits the plan's JSON text with `edit`; with `reseal`, recomputes its integrity digest.
fn edit_plan(to: &Path, reseal: bool, edit: impl Fn(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(&fixture().plan).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    let text = if reseal {
        let p: hecc_passes::plan::Plan = serde_json::from_value(v).unwrap();
        p.to_json().unwrap()
    } else {
        serde_json::to_string_pretty(&v).unwrap()
    };
    std::fs::write(to, text).unwrap();
}

#[test]
fn edited_and_insecure_plans_are_refused() {
    let f = fixture();
    let (d, _finished) = scratch("plans");
    // Without --insecure, a plan below 128-bit security is refused by every command.
    let err = refused(&["report", &s(&f.plan)]);
    assert!(err.contains("below 128-bit security"), "{err}");
    let err = refused(&["keygen", &s(&f.plan), "-o", &s(&d.join("k"))]);
    assert!(err.contains("below 128-bit security"), "{err}");
    // A field claiming 128-bit security does not make the parameters secure.
    let p = d.join("claims.json");
    edit_plan(&p, true, |v| {
        v["params"]["security"] = "Bits128".into();
        v["report"]["params"]["security"] = "Bits128".into();
    });
    let err = refused(&["keygen", &s(&p), "-o", &s(&d.join("k"))]);
    assert!(err.contains("claims 128-bit security"), "{err}");
    // Edits without a new digest: the security label, the input range, the memory estimate.
    for (what, edit) in [
        (
            "security",
            Box::new(|v: &mut serde_json::Value| v["params"]["security"] = "Bits256".into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "range",
            Box::new(|v: &mut serde_json::Value| {
                v["inputs"][0]["range"] = serde_json::json!([0.0, 1e30])
            }),
        ),
        (
            "memory",
            Box::new(|v: &mut serde_json::Value| v["report"]["schedule"]["total_bytes"] = 1.into()),
        ),
    ] {
        let p = d.join(format!("{what}.json"));
        edit_plan(&p, false, edit);
        let err = refused(&["report", &s(&p), "--insecure"]);
        assert!(
            err.contains("modified after it was compiled"),
            "{what}: {err}"
        );
    }
    // Resealed edits are plans of their own: the keys and ciphertexts of the original are
    // refused with them.
    let p = d.join("resealed.json");
    edit_plan(&p, true, |v| {
        v["inputs"][0]["range"] = serde_json::json!([0.0, 2.0])
    });
    let err = refused(&[
        "run",
        &s(&p),
        &s(&f.x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d.join("y.ct")),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("made for another plan"), "{err}");
    // A field out of its type's range is named.
    let p = d.join("batch.json");
    edit_plan(&p, false, |v| v["batch"] = (1u64 << 40).into());
    let err = refused(&["report", &s(&p), "--insecure"]);
    assert!(err.contains("field `batch`"), "{err}");
    // And a resealed absurd batch is refused by its limit.
    let p = d.join("batch2.json");
    edit_plan(&p, true, |v| v["batch"] = 100000.into());
    let err = refused(&["keygen", &s(&p), "-o", &s(&d.join("k")), "--insecure"]);
    assert!(err.contains("plan field `batch`"), "{err}");
}

#[test]
fn secret_keys_are_private_and_shared_ones_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.keys), 0o700, "key directory");
    assert_eq!(mode(&f.keys.join(SECRET_KEY_FILE)), 0o600, "secret key");
    let (d, _finished) = scratch("perms");
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let sk = keys.join(SECRET_KEY_FILE);
    std::fs::copy(f.keys.join(SECRET_KEY_FILE), &sk).unwrap();
    std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s(&d.join("l.npy"));
    let err = refused(&[
        "decrypt",
        &s(&f.y),
        "--secret-key",
        &s(&sk),
        "-o",
        &out,
        "--insecure",
    ]);
    assert!(
        err.contains("accessible by other users (mode 644)"),
        "{err}"
    );
    let err = refused(&[
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&keys),
        "--input",
        &s(&images()),
        "--limit",
        "1",
        "-o",
        &s(&d.join("x.ct")),
        "--insecure",
    ]);
    assert!(err.contains("accessible by other users"), "{err}");
    let (text, _) = ok(&[
        "decrypt",
        &s(&f.y),
        "--secret-key",
        &s(&sk),
        "-o",
        &out,
        "--allow-shared-key",
        "--insecure",
    ]);
    assert!(text.starts_with(&f.predictions), "{text}");
}

fn write_npy(path: &Path, n: usize, fill: impl Fn(usize) -> f64) {
    let values: Vec<f64> = (0..n * 784).map(fill).collect();
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({n}, 1, 28, 28), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn inputs_out_of_range_non_finite_or_empty_are_refused() {
    let f = fixture();
    let (d, _finished) = scratch("inputs");
    let x = s(&d.join("x.ct"));
    let enc = |input: &Path, extra: &[&str]| {
        let mut a = vec![
            "encrypt".to_string(),
            s(&f.plan),
            "--keys".into(),
            s(&f.keys),
            "--input".into(),
            s(input),
            "-o".into(),
            x.clone(),
            "--insecure".into(),
        ];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    for (tag, value) in [("huge", 1e30), ("big", 1e6), ("negative", -1e4)] {
        let p = d.join(format!("{tag}.npy"));
        write_npy(&p, 2, |k| if k == 900 { value } else { 0.5 });
        let err = refused(&enc(&p, &[]));
        assert!(
            err.contains("outside the model input") && err.contains("image 1, element 116"),
            "{tag}: {err}"
        );
        assert!(!d.join("x.ct").exists());
    }
    // --clamp clamps with a warning.
    let p = d.join("big.npy");
    let (_, err) = ok(&enc(&p, &["--clamp"]));
    assert!(err.contains("were clamped"), "{err}");
    // A NaN is reported with its image and element.
    let p = d.join("nan.npy");
    write_npy(&p, 2, |k| if k == 790 { f64::NAN } else { 0.5 });
    let err = refused(&enc(&p, &[]));
    assert!(err.contains("NaN at image 1, element 6"), "{err}");
    // Nothing to encrypt is an error, not "0 images encrypted" (clap refuses it: exit 2).
    let o = hecc(&enc(&images(), &["--limit", "0"]));
    let err = one_line(&String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--limit") && err.contains("at least 1"),
        "{err}"
    );
    // Fewer images than asked for is refused, not quietly fewer.
    let err = refused(&enc(&images(), &["--skip", "255", "--limit", "4"]));
    assert!(err.contains("only 1 images after --skip 255"), "{err}");
}

#[test]
fn output_paths_are_checked_before_any_work() {
    let f = fixture();
    let (d, _finished) = scratch("paths");
    let t = std::time::Instant::now();
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&f.x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("is a directory"), "{err}");
    let err = refused(&[
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&f.keys),
        "--input",
        &s(&images()),
        "-o",
        &s(&d.join("missing/x.ct")),
        "--insecure",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    // An output that is one of the command's own inputs (under any name) is refused, and the
    // input is left as it was.
    let x = d.join("x.ct");
    std::fs::copy(&f.x, &x).unwrap();
    let before = std::fs::read(&x).unwrap();
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&d.join(".").join("x.ct")),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("is also an input"), "{err}");
    assert_eq!(std::fs::read(&x).unwrap(), before);
    let plan = d.join("plan.json");
    std::fs::copy(&f.plan, &plan).unwrap();
    let err = refused(&[
        "encrypt",
        &s(&plan),
        "--keys",
        &s(&f.keys),
        "--input",
        &s(&images()),
        "--limit",
        "4",
        "-o",
        &s(&plan),
        "--insecure",
    ]);
    assert!(err.contains("is also an input"), "{err}");
    // A device, pipe or socket is never replaced by an output file.
    let fifo = d.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let err = refused(&[
        "run",
        &s(&f.plan),
        &s(&f.x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&fifo),
        "--quiet",
        "--insecure",
    ]);
    assert!(err.contains("not a regular file"), "{err}");
    // keygen does not replace the keys of an earlier keygen unless told to.
    let keys = d.join("keys");
    ok(&["keygen", &s(&f.plan), "-o", &s(&keys), "--insecure"]);
    let secret = std::fs::read(keys.join(SECRET_KEY_FILE)).unwrap();
    let err = refused(&["keygen", &s(&f.plan), "-o", &s(&keys), "--insecure"]);
    assert!(
        err.contains("already holds keys") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(keys.join(SECRET_KEY_FILE)).unwrap(), secret);
    ok(&[
        "keygen",
        &s(&f.plan),
        "-o",
        &s(&keys),
        "--insecure",
        "--force",
    ]);
    assert_ne!(std::fs::read(keys.join(SECRET_KEY_FILE)).unwrap(), secret);
    assert!(t.elapsed().as_secs_f64() < 10.0, "refused before the work");
}

/// The files in `dir` (names).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Starts `args`, kills it with SIGKILL after `ms` milliseconds (or lets it finish first).
fn kill_after(args: &[String], ms: u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
fn kill_9_during_encrypt_or_run_leaves_no_partial_or_stray_file() {
    let f = fixture();
    let (d, _finished) = scratch("kill");
    let target = d.join("out.ct");
    let encrypt: Vec<String> = [
        "encrypt",
        &s(&f.plan),
        "--keys",
        &s(&f.keys),
        "--input",
        &s(&images()),
        "--limit",
        "4",
        "-o",
        &s(&target),
        "--insecure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let run: Vec<String> = [
        "run",
        &s(&f.plan),
        &s(&f.x),
        "--eval-keys",
        &s(&f.keys.join(EVAL_KEYS_FILE)),
        "-o",
        &s(&target),
        "--quiet",
        "--insecure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for (what, args, kind) in [
        ("encrypt", &encrypt, FileKind::Inputs),
        ("run", &run, FileKind::Outputs),
    ] {
        for ms in [20, 100, 300, 600, 1000] {
            let _ = std::fs::remove_file(&target);
            kill_after(args, ms);
            let files = listing(&d);
            // Either nothing, or the complete file (the command finished before the kill).
            match files.as_slice() {
                [] => {}
                [one] if one == "out.ct" => {
                    let bytes = std::fs::read(&target).unwrap();
                    Container::from_bytes(&bytes, kind, "out.ct").unwrap_or_else(|e| {
                        panic!("{what} killed at {ms} ms left a bad file: {e}")
                    });
                }
                other => panic!("{what} killed at {ms} ms left {other:?}"),
            }
        }
    }
    // A file that existed before a killed run is intact.
    std::fs::copy(&f.y, &target).unwrap();
    kill_after(&run, 300);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&f.y).unwrap()
    );
    assert_eq!(listing(&d), vec!["out.ct".to_string()]);
}
