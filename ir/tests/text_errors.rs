//! Parser diagnostics: spans, line/column, expectations, miette metadata.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::text::{parse_graph, parse_module};
use miette::Diagnostic;

const HEADER: &str =
    "module \"m\" {batch = 1, log_scale = 40.0}\nlayout batch = batch{offset=0, stride=1}\n";

#[test]
fn line_and_column_count_characters() {
    // The name has multi-byte characters before the faulty token on line 3.
    let src = format!("{HEADER}%0 = input \"ünï\"[0] ; ct<l=1, s=40.0, n=4, batch>\n");
    let e = parse_module(&src).unwrap_err();
    assert_eq!((e.line, e.column), (3, 21), "{}", e.render_plain());
    assert!(e.message.contains("unexpected character"), "{}", e.message);
    let src = format!("{HEADER}%0 = input \"ünï\"[0] : ct<l=1, s=40.0, n=4 batch>\n");
    let e = parse_module(&src).unwrap_err();
    assert_eq!(e.message, "expected `,`, found `batch`");
    assert_eq!((e.line, e.column), (3, 43));
    assert_eq!(
        &src[e.span.offset()..e.span.offset() + e.span.len()],
        "batch"
    );
}

#[test]
fn diagnostics_carry_code_label_and_source() {
    let e = parse_module("module \"m\" {batch = x}").unwrap_err();
    assert_eq!(
        e.code().map(|c| c.to_string()).as_deref(),
        Some("hecc::text::parse")
    );
    assert!(e.source_code().is_some());
    let labels: Vec<_> = e
        .labels()
        .map(|l| l.collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].offset(), 20);
    assert_eq!(e.message, "expected batch size, found `x`");
    let named = e.with_name("model.he");
    assert_eq!(named.src.name(), "model.he");
}

#[test]
fn end_of_input_is_reported_at_the_end() {
    let src = format!("{HEADER}%0 = input \"x\"[0] : ct<l=1, s=40.0");
    let e = parse_module(&src).unwrap_err();
    assert_eq!(e.span.offset(), src.len());
    assert!(e.message.ends_with("found end of input"), "{}", e.message);
}

#[test]
fn duplicate_definitions_name_the_first_line() {
    let src = format!(
        "{HEADER}%0 = input \"x\"[0] : ct<l=1, s=40.0, n=4, batch>\n%0 = input \"x\"[1] : ct<l=1, s=40.0, n=4, batch>\n"
    );
    let e = parse_module(&src).unwrap_err();
    assert_eq!(e.message, "value %0 is already defined on line 3");
    assert_eq!(e.line, 4);
    let tir = "graph \"g\"\ninputs []\noutputs []\n%0 = relu \"a\" ()\n%0 = relu \"b\" ()\n";
    let e = parse_graph(tir).unwrap_err();
    assert_eq!(e.message, "node %0 is already defined on line 4");
}

#[test]
fn tir_attribute_errors_point_at_the_attribute() {
    let tir =
        "graph \"g\"\ninputs []\noutputs []\n%0 = scale \"s\" () {factor = 1.0, colour = 2}\n";
    let e = parse_graph(tir).unwrap_err();
    assert_eq!(e.message, "unknown attribute `colour` for `scale`");
    assert_eq!(
        &tir[e.span.offset()..e.span.offset() + e.span.len()],
        "colour = 2"
    );
    let tir = "graph \"g\"\ninputs []\noutputs []\n%0 = scale \"s\" () {factor = \"big\"}\n";
    assert_eq!(
        parse_graph(tir).unwrap_err().message,
        "`factor` must be a number"
    );
    let tir = "graph \"g\"\ninputs []\noutputs []\n%0 = quadratic \"q\" () {granularity = pixel, coeffs = \"c\"}\n";
    assert!(parse_graph(tir)
        .unwrap_err()
        .message
        .contains("`layer`, `channel` or `element`"));
}

#[test]
fn float_forms_read_back_exactly() {
    for x in [
        0.1,
        -0.0,
        1e-300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        -123456789.125,
        1e21,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ] {
        let src = format!(
            "{HEADER}%0 = input \"x\"[0] : ct<l=1, s=40.0, n=1, batch>\n%1 = add_scalar %0, {} : ct<l=1, s=40.0, n=1, batch>\n",
            hecc_ir::text::lexer::fmt_f64(x)
        );
        let m = parse_module(&src).unwrap();
        let v = hecc_ir::he::ValueId(1);
        match m.node(v).map(|n| &n.op) {
            Some(hecc_ir::he::Op::AddScalar { value }) => assert_eq!(value.to_bits(), x.to_bits()),
            other => panic!("{other:?}"),
        }
        assert_eq!(m.to_string(), src);
    }
}
