//! The textual tensor IR of every reference model and ONNX fixture, snapshotted, and read back:
//! print -> parse -> print gives the same text, and the parsed graph with the model's weights
//! attached evaluates like the original.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(rel: &str) -> String {
    let g =
        hecc_ir::front::load_model(&root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
    let text = hecc_ir::text::print_graph(&g);
    let parsed = hecc_ir::text::parse_graph(&text).unwrap_or_else(|e| panic!("{rel}: {e:?}"));
    assert_eq!(
        parsed.to_string(),
        text,
        "{rel}: print -> parse -> print differs"
    );
    let back = parsed
        .into_graph(g.weights.clone())
        .unwrap_or_else(|e| panic!("{rel}: {e:?}"));
    assert_eq!(
        hecc_ir::text::print_graph(&back),
        text,
        "{rel}: weights did not reattach"
    );
    text
}

#[test]
fn reference_model_ir() {
    for rel in [
        "models/cryptonets.yaml",
        "models/lenet5.yaml",
        "models/squeezenet.yaml",
        "models/onnx/cnn.onnx",
        "models/onnx/branches.onnx",
    ] {
        let name = rel.replace(['/', '.'], "_");
        insta::assert_snapshot!(name, check(rel));
    }
}
