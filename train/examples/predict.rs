//! Prints the reference evaluator's (`f64`) predicted class of every image of an IDX
//! images/labels pair, and the accuracy: the plaintext side of an encrypted run's argmax
//! agreement (compare with the classes `hecc decrypt` prints).
//!
//! `cargo run --release -p hecc-train --example predict -- SPEC IMAGES_IDX LABELS_IDX`
//!
//! Output: one line `predictions (N images): p0 p1 ...`, then `accuracy: C/N`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc_train::data::Dataset;
use hecc_train::export::eval_predictions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        return Err("usage: predict SPEC IMAGES_IDX LABELS_IDX".into());
    }
    let g = hecc_ir::front::load_model(&PathBuf::from(&args[0]))?;
    let range = g
        .input_normalization()
        .and_then(|x| x.range)
        .unwrap_or([0.0, 1.0]);
    let ds = Dataset::from_idx_files(
        &PathBuf::from(&args[1]),
        &PathBuf::from(&args[2]),
        255.0,
        range,
    )?;
    let pred = eval_predictions(&g, &ds, 256)?;
    let shown: Vec<String> = pred.iter().map(|p| p.to_string()).collect();
    println!("predictions ({} images): {}", pred.len(), shown.join(" "));
    let correct = pred
        .iter()
        .zip(&ds.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    println!("accuracy: {correct}/{}", ds.len());
    Ok(())
}
