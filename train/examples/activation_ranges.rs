//! Prints the largest absolute value every node of a model takes on a dataset's test images
//! (reference evaluator, `f64`): a quick check that trained weights keep values in a range
//! CKKS parameters can hold.
//!
//! `cargo run --release -p hecc-train --example activation_ranges -- SPEC DATA_DIR [N]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc_ir::tensor::eval::eval_batch;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: activation_ranges SPEC DATA_DIR [N]".into());
    }
    let spec = PathBuf::from(&args[0]);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let mut g = hecc_ir::front::load_model(&spec)?;
    let range = g
        .input_normalization()
        .and_then(|x| x.range)
        .unwrap_or([0.0, 1.0]);
    let data = hecc_train::data::load_dir(&PathBuf::from(&args[1]), range)?;
    let test = data.test.slice(0, n);
    let order = g.topo_order().ok_or("cycle")?;
    g.outputs = order.clone();
    let outs = eval_batch(&g, &[test.to_ndarray()?])?;
    for (id, t) in order.iter().zip(&outs) {
        let max = t.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let name = g.node(*id).map(|n| n.name.clone()).unwrap_or_default();
        println!("{name:>10}: max |x| = {max:.4e}");
    }
    Ok(())
}
