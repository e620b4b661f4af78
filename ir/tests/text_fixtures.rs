//! Snapshot tests over `tests/fixtures/ir`: every `.he` and `.tir` fixture is
//! parsed, printed (snapshot), re-parsed (round trip), verified and exported to
//! DOT; every file in `errors/` must fail with the snapshotted diagnostic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::{verify, VerifyOptions};
use hecc_ir::text::{annotate_module, parse_graph, parse_module, parse_module_with_spans};
use std::fs;

#[test]
fn he_fixtures() {
    insta::glob!("../../tests/fixtures/ir", "*.he", |path| {
        let src = fs::read_to_string(path).unwrap();
        let (m, spans) = parse_module_with_spans(&src).unwrap();
        let printed = m.to_string();
        let again = parse_module(&printed).unwrap();
        assert_eq!(again.to_string(), printed, "print -> parse -> print");
        verify(&m, &VerifyOptions::STRUCTURE).unwrap();
        let strict = match verify(&m, &VerifyOptions::STRICT) {
            Ok(()) => "ok\n".to_string(),
            Err(e) => annotate_module(&src, &spans, &e),
        };
        insta::assert_snapshot!(format!(
            "{printed}\n===== strict verification =====\n{strict}\n===== dot =====\n{}",
            hecc_ir::dot::he_to_dot(&m)
        ));
    });
}

#[test]
fn tir_fixtures() {
    insta::glob!("../../tests/fixtures/ir", "*.tir", |path| {
        let src = fs::read_to_string(path).unwrap();
        let parsed = parse_graph(&src).unwrap();
        let printed = parsed.to_string();
        let again = parse_graph(&printed).unwrap();
        assert_eq!(again.to_string(), printed, "print -> parse -> print");
        // Every node got its source span.
        for id in parsed.graph.node_ids() {
            assert!(parsed.graph.node(id).unwrap().span.is_some());
        }
        insta::assert_snapshot!(format!(
            "{printed}\n===== dot =====\n{}",
            hecc_ir::dot::tensor_to_dot(&parsed.graph)
        ));
    });
}

#[test]
fn error_fixtures() {
    insta::glob!("../../tests/fixtures/ir/errors", "*.{he,tir}", |path| {
        let src = fs::read_to_string(path).unwrap();
        let err = match path.extension().and_then(|e| e.to_str()) {
            Some("he") => parse_module(&src).err(),
            _ => parse_graph(&src).err(),
        };
        let err = err.expect("error fixtures must not parse");
        insta::assert_snapshot!(err.render_plain());
    });
}
