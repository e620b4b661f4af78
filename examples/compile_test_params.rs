//! Compiles a model in the batch layout at *insecure test parameters* (no security check: the
//! smallest ring that holds the batch) and writes the plan, for encrypted runs whose 128-bit
//! parameters need more memory than the machine has. The plan then goes through the ordinary
//! `hecc keygen`, `encrypt`, `run` and `decrypt`; its parameters line says `security none
//! (insecure)`. Used by `scripts/beaa-table.sh` when `TEST_PARAMS=1`.
//!
//! `cargo run --release --example compile_test_params -- MODEL PLAN_OUT BATCH [SCALE_BITS]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

use hecc::compile::{compile, write_plan, CompileOptions};
use hecc_passes::params::Security;

fn main() -> miette::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        return Err(miette::miette!(
            "usage: compile_test_params MODEL PLAN_OUT BATCH [SCALE_BITS]"
        ));
    }
    let batch: u32 = args[2]
        .parse()
        .map_err(|_| miette::miette!("bad batch `{}`", args[2]))?;
    let mut opts = CompileOptions {
        layout: hecc::compile::LayoutChoice::Batch,
        batch: Some(batch),
        security: Security::InsecureNone,
        ..Default::default()
    };
    if let Some(s) = args.get(3) {
        opts.scale_bits = s
            .parse()
            .map_err(|_| miette::miette!("bad scale bits `{s}`"))?;
    }
    let c = compile(&PathBuf::from(&args[0]), &opts)?;
    write_plan(&c.plan, &PathBuf::from(&args[1]))?;
    print!("{}", hecc::report_text::render(&c.plan.report));
    Ok(())
}
