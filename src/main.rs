//! The `hecc` command line.
use clap::Parser;

/// hecc: compile neural networks to RNS-CKKS homomorphic circuits and run them encrypted.
#[derive(Parser, Debug)]
#[command(name = "hecc", version, about)]
enum Cli {}

fn main() {
    let _ = Cli::parse();
}
