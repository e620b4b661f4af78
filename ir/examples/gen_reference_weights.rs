//! Writes deterministic random weights for the reference models:
//! `models/<name>.safetensors` for each `models/<name>.yaml` given (default: cryptonets, lenet5,
//! squeezenet).
//!
//! Run with `cargo run -p hecc-ir --example gen_reference_weights [-- NAME ...]`.
//! The weights are placeholders until training lands: conv/dense weights uniform in
//! `±1/sqrt(fan_in)`, biases uniform in `±0.05`, batch-norm statistics near identity, and
//! quadratic activations near the ReLU-like `0.125 x^2 + 0.5 x + 0.25` (all from a fixed seed,
//! so the files are reproducible byte for byte).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc_ir::front::weights::write_safetensors_f32;
use hecc_ir::front::yaml::parse_spec_structure;
use hecc_ir::tensor::shape::expected_weights;
use hecc_ir::tensor::{verify, Op, Tensor, Weights};

/// splitmix64: a tiny, well-known deterministic generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = ["cryptonets", "lenet5", "squeezenet"]
            .map(String::from)
            .to_vec();
    }
    for name in names {
        let spec_path = models_dir.join(format!("{name}.yaml"));
        let src = std::fs::read_to_string(&spec_path)?;
        let g = parse_spec_structure(&src, &format!("{name}.yaml"))
            .map_err(|e| format!("{name}: {e}"))?;
        let shapes = verify(&g).map_err(|e| format!("{name}: {} graph error(s)", e.len()));
        // Weights are missing by construction; take the shapes the verifier could infer.
        let shapes = match shapes {
            Ok(s) => s,
            Err(_) => hecc_ir::tensor::verify::analyze(&g).0,
        };
        let mut weights = Weights::new();
        for id in g.topo_order().unwrap_or_default() {
            let Some(node) = g.node(id) else { continue };
            let Some(&x) = g.operand_ids(id).first() else {
                continue;
            };
            let Some(in_shape) = shapes.get(&x) else {
                continue;
            };
            for (role, wname, shape) in expected_weights(&node.op, in_shape) {
                let mut rng = Rng(0x4845_4343 ^ fnv(&format!("{name}/{wname}")));
                let n = shape.numel();
                let fan_in = (shape.numel() / shape.first().copied().unwrap_or(1).max(1)).max(1);
                let data: Vec<f64> = match (&node.op, role) {
                    (Op::Conv2d { .. } | Op::Dense { .. }, "weight") => {
                        let b = 1.0 / (fan_in as f64).sqrt();
                        (0..n).map(|_| b * rng.sym()).collect()
                    }
                    (_, "bias") if !matches!(node.op, Op::BatchNorm { .. }) => {
                        (0..n).map(|_| 0.05 * rng.sym()).collect()
                    }
                    (Op::BatchNorm { .. }, "gamma") => {
                        (0..n).map(|_| 1.0 + 0.1 * rng.sym()).collect()
                    }
                    (Op::BatchNorm { .. }, "var") => {
                        (0..n).map(|_| 1.0 + 0.2 * rng.sym()).collect()
                    }
                    (Op::BatchNorm { .. }, _) => (0..n).map(|_| 0.1 * rng.sym()).collect(),
                    (Op::Quadratic { .. }, _) => {
                        let per = n / 3;
                        (0..n)
                            .map(|i| {
                                let base = [0.125, 0.5, 0.25][i / per.max(1)];
                                base * (1.0 + 0.1 * rng.sym())
                            })
                            .collect()
                    }
                    _ => (0..n).map(|_| 0.1 * rng.sym()).collect(),
                };
                let t = Tensor::from_shape_vec(ndarray::IxDyn(&shape), data)?;
                weights.insert(wname.to_string(), t);
            }
        }
        let bytes = write_safetensors_f32(&weights)?;
        let out = models_dir.join(format!("{name}.safetensors"));
        std::fs::write(&out, &bytes)?;
        let params: usize = weights.values().map(|t| t.len()).sum();
        println!(
            "{name}: {} tensors, {params} parameters, {} bytes -> models/{name}.safetensors",
            weights.len(),
            bytes.len()
        );
    }
    Ok(())
}
