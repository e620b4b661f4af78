//! Snapshots of the `hecc report` text for each reference model in the batch layout and in the
//! channel layout, and of the diagnostic for a parameter request
//! no ring degree can satisfy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile, compile_graph, CompileOptions};
use hecc_ir::tensor::{Graph, Normalization, Op, Shape, Tensor};
use std::path::PathBuf;

fn model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

fn batch_opts() -> CompileOptions {
    CompileOptions {
        layout: hecc::compile::LayoutChoice::Batch,
        ..Default::default()
    }
}

fn report_of(name: &str) -> String {
    report_with(name, &batch_opts())
}

fn report_with(name: &str, opts: &CompileOptions) -> String {
    let c = compile(&model(name), opts).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    // The plan carries a valid schedule of its circuit.
    let m = &c.plan.circuit;
    let order: Vec<hecc_ir::he::ValueId> = c
        .plan
        .schedule
        .iter()
        .map(|&i| hecc_ir::he::ValueId(i))
        .collect();
    assert!(
        hecc_passes::schedule::is_valid(m, &order),
        "{name}: schedule"
    );
    hecc::report_text::render(&c.plan.report)
}

#[test]
fn report_cryptonets_batch() {
    insta::assert_snapshot!(report_of("cryptonets.yaml"));
}

#[test]
fn report_lenet5_batch() {
    insta::assert_snapshot!(report_of("lenet5.yaml"));
}

fn channel_opts() -> CompileOptions {
    CompileOptions {
        layout: hecc::compile::LayoutChoice::Channel,
        ..Default::default()
    }
}

#[test]
fn report_cryptonets_channel() {
    insta::assert_snapshot!(report_with("cryptonets.yaml", &channel_opts()));
}

#[test]
fn report_lenet5_channel() {
    insta::assert_snapshot!(report_with("lenet5.yaml", &channel_opts()));
}

#[test]
fn report_squeezenet_channel() {
    insta::assert_snapshot!(report_with("squeezenet.yaml", &channel_opts()));
}

#[test]
#[ignore = "slow (about 6 minutes on 2 cores): cargo test --release --test report_snapshots -- --ignored"]
fn report_squeezenet_batch() {
    insta::assert_snapshot!(report_of("squeezenet.yaml"));
}

/// `width` inputs through `depth` (dense -> square) blocks and a final dense layer.
fn square_tower(width: usize, depth: usize) -> Graph {
    let mut g = Graph::new("square_tower");
    let mut x = g.add_node(
        "x",
        Op::Input {
            shape: Shape(vec![width]),
            norm: Normalization {
                mean: vec![0.0],
                std: vec![1.0],
                range: Some([-1.0, 1.0]),
            },
        },
        &[],
    );
    let dense = |g: &mut Graph, name: &str, x, outs: usize| {
        let w: Vec<f64> = (0..outs * width)
            .map(|i| 0.25 + 0.125 * (i % 3) as f64)
            .collect();
        g.add_weight(
            format!("{name}.weight"),
            Tensor::from_shape_vec(vec![outs, width], w).expect("shape"),
        );
        g.add_node(
            name,
            Op::Dense {
                out_features: outs,
                weight: format!("{name}.weight"),
                bias: None,
            },
            &[x],
        )
    };
    for i in 0..depth {
        let d = dense(&mut g, &format!("fc{i}"), x, width);
        x = g.add_node(format!("square{i}"), Op::Square, &[d]);
    }
    let out = dense(&mut g, "head", x, 2);
    g.add_output(out);
    g
}

#[test]
fn impossible_parameter_request_is_explained() {
    // 40 (dense -> square) blocks: an absurd depth of about 80 levels, more than any ring the
    // HE standard allows at 128-bit security can hold.
    let g = square_tower(2, 40);
    hecc_ir::tensor::verify(&g).expect("the tower verifies");
    // Without bootstrapping: the refusal names what would fit, bootstrapping included.
    let opts = CompileOptions {
        bootstrap: hecc::compile::BootstrapMode::Never,
        ..batch_opts()
    };
    let err = match compile_graph(&g, &opts) {
        Ok(_) => panic!("the tower cannot fit any ring at 128-bit security"),
        Err(e) => e,
    };
    let mut text = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut text, err.as_ref())
        .expect("renders");
    insta::assert_snapshot!(text);
}

#[test]
fn bootstrapping_a_model_without_activation_ranges_is_refused() {
    // The same tower with bootstrapping allowed: its squares have no range to bound the values
    // a bootstrap would refresh, so the compile says so instead of guessing a bound.
    let g = square_tower(2, 40);
    let opts = batch_opts();
    let err = match compile_graph(&g, &opts) {
        Ok(_) => panic!("bootstrapping needs a bound the tower does not give"),
        Err(e) => format!("{e:?}"),
    };
    assert!(
        err.contains("needs bootstrapping") && err.contains("no bootstrap could be checked"),
        "{err}"
    );
}
