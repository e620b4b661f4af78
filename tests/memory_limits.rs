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

#[test]
fn steps_that_exceed_the_process_limit_refuse_before_starting() {
    let dir = std::env::temp_dir().join(format!("hecc-memlimit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // CryptoNets in the channel layout at 128-bit: about 0.4 GiB of keys in memory (keygen holds
    // 0.5 GB resident at its peak).
    let opts = CompileOptions {
        layout: LayoutChoice::Channel,
        batch: Some(8),
        ..Default::default()
    };
    let plan = dir.join("plan.json");
    let c = compile(&root().join("models/cryptonets.yaml"), &opts).unwrap();
    write_plan(&c.plan, &plan).unwrap();
    let limit_kib = 300 * 1024;
    let keys = dir.join("keys");
    let (ok, err) = hecc_limited(
        limit_kib,
        &[
            "keygen",
            plan.to_str().unwrap(),
            "-o",
            keys.to_str().unwrap(),
        ],
    );
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
    let (ok, err) = hecc_limited(
        64 << 20,
        &[
            "keygen",
            plan.to_str().unwrap(),
            "-o",
            keys.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
