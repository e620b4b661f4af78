//! Memory checked against the process's own limits before long work starts: under `ulimit -v`
//! the steps that would not fit refuse up front, naming what they need and what the process can
//! get, instead of aborting part way. Linux only (`ulimit` through `sh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly
#![cfg(target_os = "linux")]

use hecc::compile::{compile, write_plan, CompileOptions, LayoutChoice};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs hecc with `args` under an address-space limit of `kib` KiB; returns (success, stderr).
fn hecc_limited(kib: u64, args: &[&str]) -> (bool, String) {
    let mut cmd = format!("ulimit -v {kib} && exec \"$0\"");
    for (i, _) in args.iter().enumerate() {
        cmd.push_str(&format!(" \"${}\"", i + 1));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg(env!("CARGO_BIN_EXE_hecc"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hecc keygen PLAN -o KEYS` under an address-space limit of `kib` KiB ([`hecc_limited`]).
fn keygen_limited(kib: u64, plan: &std::path::Path, keys: &std::path::Path) -> (bool, String) {
    hecc_limited(
        kib,
        &[
            "keygen",
            plan.to_str().unwrap(),
            "-o",
            keys.to_str().unwrap(),
        ],
    )
}

/// CryptoNets compiled at 128-bit with `layout` and `batch` images per run, written to
/// `dir/plan.json`.
fn cryptonets_plan(dir: &std::path::Path, layout: LayoutChoice, batch: u32) -> PathBuf {
    let opts = CompileOptions {
        layout,
        batch: Some(batch),
        ..Default::default()
    };
    let plan = dir.join("plan.json");
    let c = compile(&root().join("models/cryptonets.yaml"), &opts).unwrap();
    write_plan(&c.plan, &plan).unwrap();
    plan
}

#[test]
fn steps_that_exceed_the_process_limit_refuse_before_starting() {
    let dir = std::env::temp_dir().join(format!("hecc-memlimit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // CryptoNets in the channel layout at 128-bit: about 0.4 GiB of keys in memory (keygen holds
    // 0.5 GB resident at its peak).
    let plan = cryptonets_plan(&dir, LayoutChoice::Channel, 8);
    let limit_kib = 300 * 1024;
    let keys = dir.join("keys");
    let (ok, err) = keygen_limited(limit_kib, &plan, &keys);
    assert!(!ok, "keygen ran under a 300 MiB limit: {err}");
    assert!(
        err.contains("keygen: the plan needs at least") && err.contains("this process can get"),
        "{err}"
    );
    assert!(!keys.join("secret.key").exists(), "nothing was written");
    // infer checks the whole run (values and keys) up front the same way.
    let (ok, err) = hecc_limited(
        limit_kib,
        &[
            "infer",
            root().join("models/cryptonets.yaml").to_str().unwrap(),
            "--input",
            root()
                .join("models/data/mnist-t10k-first256-images-idx3-ubyte")
                .to_str()
                .unwrap(),
            "--quiet",
        ],
    );
    assert!(!ok, "infer ran under a 300 MiB limit: {err}");
    assert!(err.contains("this process can get"), "{err}");
    // Without the limit the same keygen succeeds.
    let (ok, err) = keygen_limited(64 << 20, &plan, &keys);
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `encrypt` writes the inputs file as the ciphertexts are made: a batch whose ciphertexts
/// exceed the process's limit is encrypted under it, and the server runs the file.
#[test]
fn encrypt_streams_a_batch_larger_than_its_limit() {
    let dir = std::env::temp_dir().join(format!("hecc-encstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // CryptoNets in the batch layout at 128-bit (N=2^14): 784 input ciphertexts of 1.5 MiB,
    // 1.15 GiB in memory (the file holds their seeded halves).
    let plan = cryptonets_plan(&dir, LayoutChoice::Batch, 256);
    let keys = dir.join("keys");
    let (ok, err) = keygen_limited(64 << 20, &plan, &keys);
    assert!(ok, "{err}");
    let images = root().join("models/data/mnist-t10k-first256-images-idx3-ubyte");
    let x = dir.join("x.ct");
    let limit_kib = 700 * 1024;
    let (ok, err) = hecc_limited(
        limit_kib,
        &[
            "encrypt",
            plan.to_str().unwrap(),
            "--keys",
            keys.to_str().unwrap(),
            "--input",
            images.to_str().unwrap(),
            "-o",
            x.to_str().unwrap(),
        ],
    );
    assert!(ok, "encrypt under a 700 MiB limit: {err}");
    let file = std::fs::metadata(&x).unwrap().len();
    assert!(file > 500 << 20, "the inputs file holds {file} bytes");
    // The server reads and runs it; the client decrypts the result it answers.
    let y = dir.join("y.ct");
    let (ok, err) = hecc_limited(
        64 << 20,
        &[
            "run",
            plan.to_str().unwrap(),
            x.to_str().unwrap(),
            "--eval-keys",
            keys.join("eval.keys").to_str().unwrap(),
            "-o",
            y.to_str().unwrap(),
            "--quiet",
        ],
    );
    assert!(ok, "{err}");
    let logits = dir.join("logits.npy");
    let out = Command::new(env!("CARGO_BIN_EXE_hecc"))
        .args([
            "decrypt",
            y.to_str().unwrap(),
            "--secret-key",
            keys.join("secret.key").to_str().unwrap(),
            "--request",
            x.to_str().unwrap(),
            "-o",
            logits.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The predictions of the bundled images: CryptoNets classifies nearly all of them right.
    let labels =
        std::fs::read(root().join("models/data/mnist-t10k-first256-labels-idx1-ubyte")).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let preds: Vec<u8> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("predictions"))
        .and_then(|p| p.split_once(':'))
        .map(|(_, p)| {
            p.split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(preds.len(), 256, "{stdout}");
    let right = preds
        .iter()
        .zip(&labels[8..])
        .filter(|(p, l)| p == l)
        .count();
    assert!(right >= 240, "{right}/256 correct");
    let _ = std::fs::remove_dir_all(&dir);
}
