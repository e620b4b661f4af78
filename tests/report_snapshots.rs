//! Snapshots of the `hecc report` text for each reference model in the batch layout, and of the
//! diagnostic for a parameter request no ring degree can satisfy.
//!
//! The channel layout is not compiled by the driver yet (`--layout channel` is refused); its
//! snapshots are to be added here once it is.

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
        layout: "batch".into(),
        ..Default::default()
    }
}

fn report_of(name: &str) -> String {
    let c = compile(&model(name), &batch_opts()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    // The plan carries a valid schedule of its circuit.
    let m = hecc_ir::text::parse_module(&c.plan.circuit).expect("circuit parses");
    let order: Vec<hecc_ir::he::ValueId> = c
        .plan
        .schedule
        .iter()
        .map(|&i| hecc_ir::he::ValueId(i))
        .collect();
    assert!(
        hecc_passes::schedule::is_valid(&m, &order),
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

#[test]
fn report_squeezenet_batch() {
    insta::assert_snapshot!(report_of("squeezenet.yaml"));
}

/// `width` inputs through `depth` (dense -> relu) blocks and a final dense layer.
fn relu_tower(width: usize, depth: usize) -> Graph {
    let mut g = Graph::new("relu_tower");
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
            .map(|i| ((i * 7 % 5) as f64 - 2.0) / 4.0)
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
        x = g.add_node(format!("relu{i}"), Op::Relu, &[d]);
    }
    let out = dense(&mut g, "head", x, 2);
    g.add_output(out);
    g
}

#[test]
fn impossible_parameter_request_is_explained() {
    let g = relu_tower(4, 6);
    hecc_ir::tensor::verify(&g).expect("the tower verifies");
    let opts = CompileOptions {
        activation: "minimax:15,15,27".into(),
        ..batch_opts()
    };
    let err = match compile_graph(&g, &opts) {
        Ok(_) => panic!("six composite-minimax ReLUs cannot fit any ring at 128-bit security"),
        Err(e) => e,
    };
    let mut text = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut text, err.as_ref())
        .expect("renders");
    insta::assert_snapshot!(text);
}
