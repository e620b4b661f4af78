//! `hecc train` through the binary on a tiny synthetic IDX data set: the ReLU network, a
//! distilled quadratic student from it, the validation split, early stopping and the history.
#![cfg(feature = "train")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

const SPEC: &str = r#"
name: tiny_cnn
input: { shape: [1, 8, 8], range: [0.0, 1.0] }
layers:
  - { name: conv1, op: conv2d, out_channels: 4, kernel: 3, padding: 1 }
  - { name: act1, op: quadratic, granularity: channel }
  - { name: pool, op: avg_pool, kernel: 2, stride: 2 }
  - { name: flat, op: flatten }
  - { name: fc1, op: dense, out_features: 4 }
"#;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// Class k: a bright 4x4 quadrant k on a dark background, with a deterministic ripple.
fn images(n: usize, salt: usize) -> (Vec<u8>, Vec<u8>) {
    let mut px = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let k = (i * 7 + salt) % 4;
        for y in 0..8 {
            for x in 0..8 {
                let q = (y / 4) * 2 + x / 4;
                let base = if q == k { 180 } else { 50 };
                px.push((base + (i * 13 + y * 5 + x * 3 + salt) % 60) as u8);
            }
        }
        labels.push(k as u8);
    }
    (px, labels)
}

fn setup(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hecc-train-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let (tr, trl) = images(240, 0);
    let (te, tel) = images(60, 1);
    let d = dir.join("data");
    std::fs::write(d.join("train-images-idx3-ubyte"), idx(&[240, 8, 8], &tr)).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx(&[240], &trl)).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx(&[60, 8, 8], &te)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx(&[60], &tel)).unwrap();
    std::fs::write(dir.join("tiny.yaml"), SPEC).unwrap();
    dir
}

fn train(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hecc"))
        .arg("train")
        .arg(dir.join("tiny.yaml"))
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--quiet", "--batch-size", "16", "--lr", "0.05"])
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn relu_teacher_then_distilled_student_with_validation_and_history() {
    let dir = setup("kd");
    let p = |f: &str| dir.join(f).display().to_string();
    let (ok, text) = train(
        &dir,
        &[
            "--relu",
            "--epochs",
            "4",
            "--validation",
            "40",
            "--patience",
            "3",
            "--history",
            &p("relu.history.json"),
            "-o",
            &p("relu.safetensors"),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("validation"), "{text}");
    assert!(text.contains("images/s"), "{text}");
    assert!(
        text.contains("reference evaluator agrees on 60/60 predictions"),
        "{text}"
    );
    // The ReLU network's spec was written next to its weights, with relus.
    let relu_spec = std::fs::read_to_string(dir.join("relu.yaml")).unwrap();
    assert!(relu_spec.contains("relu"), "{relu_spec}");
    assert!(!relu_spec.contains("quadratic"), "{relu_spec}");
    // The history: 4 epochs (or fewer after an early stop), 200 training images per epoch.
    let h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("relu.history.json")).unwrap())
            .unwrap();
    assert_eq!(h["relu"], true);
    assert_eq!(h["validation"], 40);
    let epochs = h["student"]["epochs"].as_array().unwrap();
    assert!(!epochs.is_empty() && epochs.len() <= 4);
    for e in epochs {
        assert_eq!(e["images"], 200);
        assert!(e["val_accuracy"].as_f64().unwrap() >= 0.0);
        assert!(e["test_accuracy"].as_f64().is_some());
    }
    let best = h["student"]["best_epoch"].as_u64().unwrap() as usize;
    let vals: Vec<f64> = epochs
        .iter()
        .map(|e| e["val_accuracy"].as_f64().unwrap())
        .collect();
    let top = vals.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(vals[best - 1], top, "{vals:?}");
    assert!(h["student"]["test_accuracy"].as_f64().unwrap() > 0.5, "{h}");

    // An element-wise quadratic student distilled from that teacher.
    let (ok, text) = train(
        &dir,
        &[
            "--granularity",
            "element",
            "--teacher",
            &p("relu.safetensors"),
            "--epochs",
            "2",
            "--history",
            &p("student.history.json"),
            "-o",
            &p("student.safetensors"),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("teacher loaded"), "{text}");
    let h: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("student.history.json")).unwrap())
            .unwrap();
    assert_eq!(h["granularity"], "element");
    assert_eq!(h["kd"]["temperature"], 4.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn conflicting_or_impossible_settings_are_refused() {
    let dir = setup("bad");
    let o = dir.join("w.safetensors").display().to_string();
    // --relu with a granularity: refused by the argument parser.
    let (ok, text) = train(&dir, &["--relu", "--granularity", "layer", "-o", &o]);
    assert!(!ok);
    assert!(text.contains("cannot be used with"), "{text}");
    // Patience without a validation split.
    let (ok, text) = train(&dir, &["--patience", "2", "-o", &o]);
    assert!(!ok);
    assert!(text.contains("validation split"), "{text}");
    // A validation split that leaves nothing to train on.
    let (ok, text) = train(&dir, &["--validation", "240", "-o", &o]);
    assert!(!ok);
    assert!(text.contains("validation split of 240 images"), "{text}");
    assert!(!dir.join("w.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
