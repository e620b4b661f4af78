//! The client/server file flow: keygen, encrypt, a server run from the evaluation keys alone,
//! decrypt; and rejection of mismatched, tampered, truncated and wrong-kind files.
//! Run with `cargo test --release --test e2e_files`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile, write_plan, CompileOptions};
use hecc::run::*;
use hecc_passes::params::Security;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn opts(scale_bits: u32, batch: u32) -> CompileOptions {
    CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 12,
        layout: hecc::compile::LayoutChoice::Batch,
        scale_bits,
        batch: Some(batch),
        ..Default::default()
    }
}

struct Fixture {
    dir: PathBuf,
    plan: PathBuf,
    keys: PathBuf,
    server: PathBuf,
    cts: PathBuf,
    out: PathBuf,
}

fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("hecc-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let c = compile(&root().join("models/cryptonets.yaml"), &opts(40, 8)).unwrap();
    write_plan(&c.plan, &plan).unwrap();
    let s = Session::open_with_security(&plan, true).unwrap();
    let keys = dir.join("keys");
    let k = generate_keys(&s).unwrap();
    write_keys(&s, &k.secret, &k.eval, &keys).unwrap();
    // The server sees only the evaluation keys.
    let server = dir.join("server");
    std::fs::create_dir_all(&server).unwrap();
    std::fs::copy(keys.join(EVAL_KEYS_FILE), server.join(EVAL_KEYS_FILE)).unwrap();
    let images = load_images(
        &root().join("models/data/mnist-t10k-first256-images-idx3-ubyte"),
        s.input().unwrap(),
    )
    .unwrap()
    .take(8);
    let sk = read_secret_key(&s.ctx, &s.digest, &keys.join(SECRET_KEY_FILE), false).unwrap();
    let mut enc = ClientEncryptor::secret(&s, &sk).unwrap();
    let x = encrypt_images(&s, &images, &mut enc).unwrap();
    let cts = dir.join("x.ct");
    hecc::compile::write_atomic(&cts, &inputs_bytes(&s, &x).unwrap()).unwrap();
    let out = dir.join("y.ct");
    Fixture {
        dir,
        plan,
        keys,
        server,
        cts,
        out,
    }
}

fn run_error(e: miette::Report) -> RunError {
    match e.downcast::<RunError>() {
        Ok(r) => r,
        Err(e) => panic!("expected a RunError, got {e:?}"),
    }
}

#[test]
fn server_runs_from_evaluation_keys_alone_and_client_decrypts() {
    let f = fixture("flow");
    let s = Session::open_with_security(&f.plan, true).unwrap();
    // Server: plan + ciphertexts + evaluation keys; no secret key anywhere in its directory.
    assert!(!f.server.join(SECRET_KEY_FILE).exists());
    let keys = read_eval_keys(&s, &f.server.join(EVAL_KEYS_FILE)).unwrap();
    let inputs = read_inputs(&s, &f.cts).unwrap();
    let (outs, report) = run_inputs(
        &s,
        inputs,
        &keys,
        &RunOptions {
            progress: None,
            memory_limit: None,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.nodes, s.module().len());
    hecc::compile::write_atomic(&f.out, &outputs_bytes(&outs).unwrap()).unwrap();
    // Client: outputs + secret key, no plan needed.
    let o = read_outputs(&f.out).unwrap();
    let sk = read_secret_key(&o.ctx, &o.digest, &f.keys.join(SECRET_KEY_FILE), false).unwrap();
    let logits = decrypt_outputs(&o, &sk).unwrap();
    assert_eq!((logits.images, logits.classes), (8, 10));
    // Against the plaintext model.
    let g = hecc_ir::front::load_model(&root().join("models/cryptonets.yaml")).unwrap();
    let images = load_images(
        &root().join("models/data/mnist-t10k-first256-images-idx3-ubyte"),
        s.input().unwrap(),
    )
    .unwrap()
    .take(8);
    let x = hecc_ir::tensor::Tensor::from_shape_vec(vec![8, 1, 28, 28], images.data).unwrap();
    let want = hecc_ir::tensor::eval::eval_batch(&g, &[x]).unwrap();
    let want: Vec<f64> = want[0].iter().copied().collect();
    let err = want
        .iter()
        .zip(&logits.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let mag = want.iter().map(|x| x.abs()).fold(1.0, f64::max);
    assert!(err < 1e-3 * mag, "max error {err} for logits up to {mag}");
    assert_eq!(argmax_rows(&want, 10), logits.predictions());
    // The .npy written by decrypt holds the 8 x 10 logits, and is no labels file.
    let npy = f.dir.join("logits.npy");
    let bytes = npy_bytes(8, 10, &logits.values);
    std::fs::write(&npy, &bytes).unwrap();
    let tail: Vec<f64> = bytes[bytes.len() - 80 * 8..]
        .chunks(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(tail, logits.values);
    let refused = load_labels(&npy).unwrap_err().to_string();
    assert!(refused.contains("1-D"), "{refused}");
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn files_of_another_plan_or_parameters_are_rejected() {
    let f = fixture("mismatch");
    let s = Session::open_with_security(&f.plan, true).unwrap();
    // Same parameters, other circuit (another batch size): plan mismatch.
    let other_plan = f.dir.join("other.json");
    let c = compile(&root().join("models/cryptonets.yaml"), &opts(40, 4)).unwrap();
    write_plan(&c.plan, &other_plan).unwrap();
    let other = Session::open_with_security(&other_plan, true).unwrap();
    assert_eq!(
        other.ctx.fingerprint(),
        s.ctx.fingerprint(),
        "same parameters"
    );
    let e = run_error(
        read_eval_keys(&other, &f.server.join(EVAL_KEYS_FILE))
            .err()
            .unwrap(),
    );
    assert!(matches!(e, RunError::PlanMismatch { .. }), "{e}");
    let e = run_error(read_inputs(&other, &f.cts).err().unwrap());
    assert!(matches!(e, RunError::PlanMismatch { .. }), "{e}");
    // Other parameters (other scale): parameter mismatch.
    let third_plan = f.dir.join("third.json");
    let c = compile(&root().join("models/cryptonets.yaml"), &opts(36, 8)).unwrap();
    write_plan(&c.plan, &third_plan).unwrap();
    let third = Session::open_with_security(&third_plan, true).unwrap();
    assert_ne!(third.ctx.fingerprint(), s.ctx.fingerprint());
    let e = run_error(
        read_eval_keys(&third, &f.server.join(EVAL_KEYS_FILE))
            .err()
            .unwrap(),
    );
    assert!(matches!(e, RunError::ParamsMismatch { .. }), "{e}");
    let e = run_error(read_inputs(&third, &f.cts).err().unwrap());
    assert!(matches!(e, RunError::ParamsMismatch { .. }), "{e}");
    let e = run_error(
        read_secret_key(
            &third.ctx,
            &third.digest,
            &f.keys.join(SECRET_KEY_FILE),
            false,
        )
        .err()
        .unwrap(),
    );
    assert!(matches!(e, RunError::ParamsMismatch { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&f.dir);
}

fn mutate(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    std::fs::write(dst, b).unwrap();
}

#[test]
fn tampered_truncated_and_wrong_kind_files_are_rejected() {
    let f = fixture("tamper");
    let s = Session::open_with_security(&f.plan, true).unwrap();
    let ek = f.server.join(EVAL_KEYS_FILE);
    let bad = f.dir.join("bad");
    for (src, is_keys) in [(&ek, true), (&f.cts, false)] {
        let read = |p: &Path| -> miette::Result<()> {
            if is_keys {
                read_eval_keys(&s, p).map(|_| ())
            } else {
                read_inputs(&s, p).map(|_| ())
            }
        };
        // One flipped bit in the middle.
        mutate(src, &bad, |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
        });
        let e = run_error(read(&bad).err().unwrap());
        assert!(matches!(e, RunError::Corrupt { .. }), "{e}");
        // Cut short, at several points.
        for keep in [10usize, 100, 5000] {
            mutate(src, &bad, |b| b.truncate(keep));
            let e = run_error(read(&bad).err().unwrap());
            assert!(matches!(e, RunError::Truncated { .. }), "keep {keep}: {e}");
        }
        mutate(src, &bad, |b| {
            let n = b.len();
            b.truncate(n - 1);
        });
        let e = run_error(read(&bad).err().unwrap());
        assert!(
            matches!(e, RunError::Truncated { .. } | RunError::Corrupt { .. }),
            "{e}"
        );
        // Not a hecc file at all.
        std::fs::write(&bad, b"hello world, not a key").unwrap();
        let e = run_error(read(&bad).err().unwrap());
        assert!(matches!(e, RunError::BadMagic { .. }), "{e}");
    }
    // A file of the wrong kind: the secret key as evaluation keys, keys as ciphertexts.
    let e = run_error(
        read_eval_keys(&s, &f.keys.join(SECRET_KEY_FILE))
            .err()
            .unwrap(),
    );
    assert!(matches!(e, RunError::WrongKind { .. }), "{e}");
    let e = run_error(read_inputs(&s, &ek).err().unwrap());
    assert!(matches!(e, RunError::WrongKind { .. }), "{e}");
    let e = run_error(read_outputs(&f.cts).err().unwrap());
    assert!(matches!(e, RunError::WrongKind { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Runs the `hecc` binary; returns stdout, or panics with stderr.
fn hecc(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hecc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cli_encrypts_runs_and_decrypts_a_file_in_groups() {
    // The command-line flow at 128-bit parameters: a plan of four images per run, and the
    // first eight images of the file in two groups (`--limit`, `--skip`), each through
    // encrypt, run (evaluation keys only) and decrypt. Predictions must equal the plaintext
    // model's.
    let dir = std::env::temp_dir().join(format!("hecc-cli-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).into_os_string();
    let model = root().join("models/cryptonets.yaml").into_os_string();
    let images = root()
        .join("models/data/mnist-t10k-first256-images-idx3-ubyte")
        .into_os_string();
    let a = |s: &str| std::ffi::OsString::from(s);
    hecc(&[
        &a("compile"),
        &model,
        &a("--layout"),
        &a("batch"),
        &a("--batch"),
        &a("4"),
        &a("-o"),
        &p("plan.json"),
    ]);
    hecc(&[&a("keygen"), &p("plan.json"), &a("-o"), &p("keys")]);
    std::fs::create_dir_all(dir.join("server")).unwrap();
    std::fs::copy(
        dir.join("keys").join(EVAL_KEYS_FILE),
        dir.join("server").join(EVAL_KEYS_FILE),
    )
    .unwrap();
    let mut predicted = Vec::new();
    for (group, skip) in [("0", "0"), ("1", "4")] {
        let ct = p(&format!("x{group}.ct"));
        let out = p(&format!("y{group}.ct"));
        let npy = p(&format!("logits{group}.npy"));
        hecc(&[
            &a("encrypt"),
            &p("plan.json"),
            &a("--keys"),
            &p("keys"),
            &a("--input"),
            &images,
            &a("--skip"),
            &a(skip),
            &a("--limit"),
            &a("4"),
            &a("-o"),
            &ct,
        ]);
        hecc(&[
            &a("run"),
            &p("plan.json"),
            &ct,
            &a("--eval-keys"),
            &dir.join("server").join(EVAL_KEYS_FILE).into_os_string(),
            &a("-o"),
            &out,
            &a("--quiet"),
        ]);
        let text = hecc(&[
            &a("decrypt"),
            &out,
            &a("--secret-key"),
            &dir.join("keys").join(SECRET_KEY_FILE).into_os_string(),
            &a("-o"),
            &npy,
        ]);
        // "predictions (4 images): 7 2 1 0"
        let line = text.lines().next().unwrap_or_default();
        let (_, list) = line.split_once("): ").expect("a predictions line");
        predicted.extend(list.split(' ').map(|c| c.parse::<usize>().unwrap()));
        assert!(std::path::Path::new(&npy).exists());
    }
    // Skipping past the end of the file is refused with the file's image count.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args([&a("encrypt"), &p("plan.json"), &a("--keys"), &p("keys")])
        .args([
            &a("--input"),
            &images,
            &a("--skip"),
            &a("300"),
            &a("-o"),
            &p("z.ct"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds only 256 images"),
        "unexpected error: {err}"
    );
    assert!(!dir.join("z.ct").exists(), "nothing written on error");

    let g = hecc_ir::front::load_model(&root().join("models/cryptonets.yaml")).unwrap();
    let s = Session::open_with_security(std::path::Path::new(&p("plan.json")), true).unwrap();
    let first8 = load_images(std::path::Path::new(&images), s.input().unwrap())
        .unwrap()
        .take(8);
    let x = hecc_ir::tensor::Tensor::from_shape_vec(vec![8, 1, 28, 28], first8.data).unwrap();
    let want = hecc_ir::tensor::eval::eval_batch(&g, &[x]).unwrap();
    let want: Vec<f64> = want[0].iter().copied().collect();
    assert_eq!(predicted.len(), 8, "two groups of four");
    assert_eq!(predicted, argmax_rows(&want, 10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plan_larger_than_the_available_memory_is_refused_up_front() {
    let f = fixture("memcheck");
    let s = Session::open_with_security(&f.plan, true).unwrap();
    let need = s.plan.report.schedule.as_ref().unwrap().total_bytes;
    assert!(
        check_memory(&s, Some(need), "run").is_ok(),
        "exactly enough"
    );
    assert!(check_memory(&s, None, "run").is_ok(), "unknown: no check");
    let e = check_memory(&s, Some(need - 1), "run").expect_err("one byte short");
    let text = format!("{e}");
    assert!(
        text.starts_with("run: the plan needs at least") && text.contains("this process can get"),
        "unexpected error: {text}"
    );
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// `keygen` streams the rotation keys to the file one key at a time: the file is byte for byte
/// what the in-memory serialization gives, its key id is the one the key set was made with, and
/// it reads back.
#[test]
fn streamed_key_file_equals_the_in_memory_serialization() {
    let dir = std::env::temp_dir().join(format!("hecc-e2e-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plan = dir.join("plan.json");
    let mut o = opts(40, 8);
    o.layout = hecc::compile::LayoutChoice::Channel;
    let c = compile(&root().join("models/cryptonets.yaml"), &o).unwrap();
    write_plan(&c.plan, &plan).unwrap();
    let s = Session::open_with_security(&plan, true).unwrap();
    let k = generate_keys(&s).unwrap();
    assert!(
        !k.eval.galois.galois_elements().is_empty(),
        "the channel layout rotates"
    );
    write_keys(&s, &k.secret, &k.eval, &dir.join("keys")).unwrap();
    let file = std::fs::read(dir.join("keys").join(EVAL_KEYS_FILE)).unwrap();
    assert!(
        file == eval_keys_bytes(&s, &k.eval),
        "streamed and in-memory bytes differ"
    );
    let back = read_eval_keys(&s, &dir.join("keys").join(EVAL_KEYS_FILE)).unwrap();
    assert_eq!(back.id, k.eval.id);
    assert_eq!(
        back.galois.galois_elements(),
        k.eval.galois.galois_elements()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inputs_written_in_pieces_equal_the_serialized_file() {
    let f = fixture("stream");
    let s = Session::open_with_security(&f.plan, true).unwrap();
    let x = read_inputs(&s, &f.cts).unwrap();
    let streamed = f.dir.join("streamed.ct");
    let n = write_inputs(&s, &x, &streamed).unwrap();
    let whole = inputs_bytes(&s, &x).unwrap();
    assert_eq!(n, whole.len() as u64);
    assert_eq!(std::fs::read(&streamed).unwrap(), whole);
    // Read back in pieces: the same ciphertexts and the digest of the whole file.
    let again = read_inputs(&s, &streamed).unwrap();
    assert_eq!(again.meta, x.meta);
    assert_eq!(again.file_digest, x.file_digest);
    let (meta, key) = check_inputs_file(&s, &streamed, "the upload").unwrap();
    assert_eq!((meta, key), (x.meta.clone(), x.key_id));
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn a_spilling_run_matches_and_a_killed_one_resumes_from_its_checkpoint() {
    let f = fixture("spill");
    let a = |s: &str| std::ffi::OsString::from(s);
    let keys = f.server.join(EVAL_KEYS_FILE).into_os_string();
    let run = |out: &Path, extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v = vec![
            a("run"),
            f.plan.clone().into_os_string(),
            f.cts.clone().into_os_string(),
            a("--eval-keys"),
            keys.clone(),
            a("-o"),
            out.as_os_str().to_owned(),
            a("--quiet"),
            a("--insecure"),
        ];
        v.extend(extra.iter().map(|s| a(s)));
        v
    };
    let call =
        |args: &[std::ffi::OsString]| hecc(&args.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
    let reference = f.dir.join("y0.ct");
    call(&run(&reference, &[]));
    let want = std::fs::read(&reference).unwrap();

    // Under a budget far below the live set (inputs alone take about 300 MiB).
    let sp1 = f.dir.join("spill1");
    let y1 = f.dir.join("y1.ct");
    let text = call(&run(
        &y1,
        &[
            "--spill-dir",
            sp1.to_str().unwrap(),
            "--spill-budget",
            "64MiB",
        ],
    ));
    // "spill: budget 64 MiB, 1679 values written (473 MiB), ..."
    let written: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("spill: budget 64 MiB, "))
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no spill line in:\n{text}"));
    assert!(written > 100, "{text}");
    assert_eq!(std::fs::read(&y1).unwrap(), want, "same ciphertexts");
    assert!(!sp1.exists(), "a finished run removes its spill directory");

    // Killed (SIGKILL) after its first checkpoint, then the same command again.
    let sp2 = f.dir.join("spill2");
    let y2 = f.dir.join("y2.ct");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args(run(
            &y2,
            &[
                "--spill-dir",
                sp2.to_str().unwrap(),
                "--spill-budget",
                "1",
                "--checkpoint-every",
                "0.2",
            ],
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !sp2.join("checkpoint").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            start.elapsed().as_secs() < 120,
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!y2.exists(), "a killed run writes no outputs");
    let text = call(&run(&y2, &["--spill-dir", sp2.to_str().unwrap()]));
    assert!(text.contains("resumed with"), "{text}");
    assert_eq!(
        std::fs::read(&y2).unwrap(),
        want,
        "same ciphertexts after resuming"
    );
    let _ = std::fs::remove_dir_all(&f.dir);
}
