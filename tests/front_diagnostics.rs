//! Diagnostics of the front ends on a corpus of malformed models (`tests/fixtures/front/`).
//!
//! For every case: loading fails (without panicking), the message contains the expected text,
//! the first labelled location is the expected line and column of the source, and the rendered
//! diagnostic (unicode, no colour) matches its insta snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use std::path::Path;

use hecc_ir::front::{load_model, FrontError};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

const DIR: &str = "tests/fixtures/front";

/// A case: fixture, text expected in the messages, expected (line, column) of the first label.
type Case = (&'static str, &'static str, Option<(usize, usize)>);

const CASES: &[Case] = &[
    ("syntax_error.yaml", "did not find expected ',' or '}'", Some((3, 1))),
    ("wrong_type.yaml", "out_channels: invalid type: string \"two\"", Some((7, 19))),
    ("unknown_key.yaml", "unknown field `kernal`", Some((8, 5))),
    ("empty.yaml", "invalid model spec", Some((2, 1))),
    ("unknown_op.yaml", "node `act1`: unknown op `sqare`", Some((6, 23))),
    ("missing_weight.yaml", "missing weight `classifier.weight` (weight, expected shape [3, 32])", Some((8, 11))),
    ("wrong_weight_shape.yaml", "weight `bad_shape` (weight) has shape [3, 30], expected [3, 32]", Some((8, 13))),
    ("nan_weight.yaml", "weight `nan_w` used by node `conv1` (conv2d) has 1 NaN value(s), first at index [1, 0, 2, 1]", Some((5, 13))),
    ("inf_weight.yaml", "has 2 infinite value(s), first at index [1, 5]", Some((8, 13))),
    ("shape_mismatch.yaml", "node `fc` (%3, dense): operand 0 has shape [2, 4, 4], expected a rank-1 [F] tensor", Some((8, 13))),
    ("cycle.yaml", "cycle through nodes mix -> act1 -> act2", Some((6, 13))),
    ("dangling_input.yaml", "operand 0 refers to `conv_1`, which is not defined", Some((6, 40))),
    ("duplicate_name.yaml", "duplicate node name `act1`", Some((7, 13))),
    ("bad_kernel.yaml", "kernel height 5 is larger than the padded input height 4", Some((6, 13))),
    ("bad_stride.yaml", "`stride` must be at least 1", Some((5, 60))),
    ("concat_mismatch.yaml", "operand 1 has shape [2, 2, 2], expected [*, 4, 4]", Some((7, 13))),
    ("missing_weights_file.yaml", "cannot load weights file `no_such_file.safetensors`", Some((3, 10))),
    ("corrupt_weights_file.yaml", "not a zip archive", Some((3, 10))),
    ("wrong_arity.yaml", "node `sum` (%2, add): takes at least 2 operands, got 1 operand(s)", Some((5, 13))),
    ("layers_and_graph.yaml", "the spec has both `layers:` and `graph:`", Some((5, 1))),
    ("missing_attribute.yaml", "`conv2d` requires attribute `out_channels`", Some((5, 11))),
    ("inapplicable_attribute.yaml", "attribute `kernel` does not apply to `relu`", Some((4, 28))),
    ("bad_granularity.yaml", "unknown granularity `pixel`", Some((4, 33))),
    ("bad_normalisation.yaml", "input `mean` has 2 values; expected 1 or one per channel (3)", Some((4, 3))),
    ("empty_input_shape.yaml", "input `shape` [] must be non-empty with positive dimensions", Some((2, 10))),
    ("graph_without_inputs.yaml", "missing `inputs` (required in the `graph:` form)", Some((5, 13))),
    ("many_errors.yaml", "unknown op `sigmoid`", Some((6, 13))),
    ("reshape_mismatch.yaml", "expected a tensor with 35 elements to reshape to [5, 7]", Some((4, 13))),
    ("bad_padding.yaml", "`padding` must be p, [ph, pw] or [top, left, bottom, right], got 3 values", Some((5, 60))),
    ("poly_without_coeffs.yaml", "`poly` needs `coeffs` as a non-empty list", Some((4, 26))),
    ("onnx_unsupported_ops.onnx", "has 2 unsupported node(s): `gate` (Sigmoid, not at the output), `squash` (Tanh)", None),
    ("onnx_truncated.onnx", "failed to decode Protobuf message", None),
    ("onnx_random_bytes.onnx", "failed to decode Protobuf message", None),
    ("onnx_nan_weight.onnx", "weight `conv.w` used by node `conv` (conv2d) has 1 NaN value(s)", None),
    ("onnx_shape_mismatch.onnx", "weight `fc.w` (weight) has shape [3, 16], expected [3, 32]", None),
    ("onnx_mul_tensors.onnx", "ONNX node `product` (Mul): Mul of two different computed tensors is not supported", None),
    ("not_a_model.txt", "unsupported model file", None),
    ("does_not_exist.yaml", "cannot read `tests/fixtures/front/does_not_exist.yaml`", None),
];

fn render(e: &FrontError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, e)
        .expect("rendering into a String cannot fail");
    // Trailing spaces vary with the layout; they carry no information.
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte offset of the first label of the diagnostic or of its first labelled related one.
fn first_label(d: &dyn Diagnostic) -> Option<usize> {
    if let Some(mut labels) = d.labels() {
        if let Some(l) = labels.next() {
            return Some(l.offset());
        }
    }
    d.related()?.find_map(first_label)
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

#[test]
fn corpus_has_at_least_25_cases() {
    assert!(CASES.len() >= 25);
}

#[test]
fn malformed_models_give_located_diagnostics() {
    let mut failures = Vec::new();
    for &(file, expect, loc) in CASES {
        let path = format!("{DIR}/{file}");
        let result = std::panic::catch_unwind(|| load_model(Path::new(&path)).map(|g| g.name));
        let err = match result {
            Err(_) => {
                failures.push(format!("{file}: panicked"));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{file}: loaded without error"));
                continue;
            }
            Ok(Err(e)) => e,
        };
        let text = render(&err);
        // Messages unwrapped: the error, its help, and every related problem with its help.
        let mut plain = vec![err.to_string()];
        plain.extend(err.help().map(|h| h.to_string()));
        for p in err.problems() {
            plain.push(p.to_string());
            plain.extend(p.help().map(|h| h.to_string()));
            let mut cause = std::error::Error::source(p);
            while let Some(c) = cause {
                plain.push(c.to_string());
                cause = c.source();
            }
        }
        if !plain.iter().any(|m| m.contains(expect)) {
            failures.push(format!("{file}: expected `{expect}` in {plain:#?}"));
        }
        let got = first_label(&err).map(|off| {
            let src = std::fs::read_to_string(&path).unwrap_or_default();
            line_col(&src, off)
        });
        if got != loc {
            failures.push(format!(
                "{file}: first label at {got:?}, expected {loc:?}\n{text}"
            ));
        }
        let stem = file.replace('.', "_");
        insta::assert_snapshot!(stem, text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn many_errors_reports_every_problem_once() {
    let err = load_model(Path::new(&format!("{DIR}/many_errors.yaml"))).unwrap_err();
    let msgs: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    let want = [
        "unknown op `sigmoid`",
        "refers to `conv_one`",
        "duplicate node name `act3`",
        "NaN value(s)",
        "weight `bad_shape` (weight) has shape [3, 30]",
        "graph output 1 refers to `missing_out`",
    ];
    for w in want {
        assert_eq!(
            msgs.iter().filter(|m| m.contains(w)).count(),
            1,
            "`{w}` not reported exactly once in {msgs:#?}"
        );
    }
    // The node depending on the unknown op (`after`) adds no follow-up error.
    assert!(!msgs.iter().any(|m| m.contains("`after`")), "{msgs:#?}");
    assert_eq!(msgs.len(), want.len(), "{msgs:#?}");
}

#[test]
fn valid_fixture_and_reference_models_load() {
    for path in [
        "tests/fixtures/front/ok_tiny.yaml",
        "models/cryptonets.yaml",
        "models/lenet5.yaml",
        "models/squeezenet.yaml",
        "models/onnx/cnn.onnx",
        "models/onnx/branches.onnx",
    ] {
        let r = hecc::check::check_model(Path::new(path));
        assert!(r.is_ok(), "{path}: {:?}", r.err().map(|e| render(&e)));
    }
}
