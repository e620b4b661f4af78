//! Both parsers on random and mutated input: they must never panic, errors
//! must point inside the source, and whatever parses must round-trip.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::gen::{random_module, GenConfig};
use hecc_ir::text::{parse_graph, parse_module, TextError};
use proptest::prelude::*;

const TIR: &str = "graph \"g\"\ninputs [%0]\noutputs [%3]\nweight \"w\" : [2, 4]\n\
%0 = input \"x\" () {shape = [1, 2, 2], mean = [0.5], std = [0.25], range = [0.0, 1.0]} : [1, 2, 2]\n\
%1 = flatten \"f\" (%0) : [4]\n\
%2 = dense \"fc\" (%1) {out_features = 2, weight = \"w\"} : [2]\n\
%3 = poly \"p\" (%2) {coeffs = [0.5, 1e-3, -2.0]} : [2]\n";

fn check_error(src: &str, e: &TextError) {
    let start = e.span.offset();
    assert!(start <= src.len(), "span {start} beyond {}", src.len());
    assert!(start + e.span.len() <= src.len());
    assert!(e.line >= 1 && e.column >= 1);
    assert!(!e.message.is_empty());
}

fn check_he(src: &str) {
    match parse_module(src) {
        Ok(m) => {
            let text = m.to_string();
            let again = parse_module(&text).expect("printed module parses");
            assert_eq!(again.to_string(), text);
        }
        Err(e) => check_error(src, &e),
    }
}

fn check_tir(src: &str) {
    match parse_graph(src) {
        Ok(g) => {
            let text = g.to_string();
            let again = parse_graph(&text).expect("printed graph parses");
            assert_eq!(again.to_string(), text);
        }
        Err(e) => check_error(src, &e),
    }
}

fn he_text() -> String {
    random_module(
        3,
        &GenConfig {
            nodes: 12,
            ..GenConfig::default()
        },
    )
    .to_string()
}

/// Applies an edit to `base`: delete a range, insert a snippet, or swap two lines.
fn mutate(base: &str, kind: u8, a: usize, b: usize, snippet: &str) -> String {
    let chars: Vec<char> = base.chars().collect();
    let n = chars.len().max(1);
    let (i, j) = (a % n, b % n);
    let (lo, hi) = (i.min(j), i.max(j));
    match kind % 3 {
        0 => chars[..lo].iter().chain(&chars[hi..]).collect(),
        1 => {
            let mut s: String = chars[..lo].iter().collect();
            s.push_str(snippet);
            s.extend(&chars[lo..]);
            s
        }
        _ => {
            let mut lines: Vec<&str> = base.lines().collect();
            let m = lines.len().max(1);
            if !lines.is_empty() {
                lines.swap(a % m, b % m);
            }
            lines.join("\n")
        }
    }
}

fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("%".to_string()),
        Just("%99999999999".to_string()),
        Just("@7".to_string()),
        Just("\"".to_string()),
        Just("\"\\u{110000}\"".to_string()),
        Just("-inf".to_string()),
        Just("[[[[".to_string()),
        Just("%0 = add %0, %0 : ct<l=0, s=1.0, n=1, batch>\n".to_string()),
        Just("%5 = relu \"r\" (%5)\n".to_string()),
        "[ -~]{0,6}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_strings_never_panic(s in any::<String>()) {
        check_he(&s);
        check_tir(&s);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let s = String::from_utf8_lossy(&bytes);
        check_he(&s);
        check_tir(&s);
    }

    #[test]
    fn token_soup_never_panics(toks in proptest::collection::vec(prop_oneof![
        Just("module"), Just("graph"), Just("\"m\""), Just("{"), Just("}"), Just("batch"),
        Just("="), Just("1"), Just(","), Just("log_scale"), Just("40.0"), Just("%0"), Just("%1"),
        Just("add"), Just("input"), Just("["), Just("]"), Just(":"), Just("ct"), Just("<"),
        Just(">"), Just("l"), Just("s"), Just("n"), Just("layout"), Just("("), Just(")"),
        Just("inputs"), Just("outputs"), Just("NaN"), Just("-inf"), Just("mac"), Just("*"), Just("+"),
    ], 0..40)) {
        let s = toks.join(" ");
        check_he(&s);
        check_tir(&s);
    }

    #[test]
    fn mutated_he_never_panics(kind in any::<u8>(), a in any::<usize>(), b in any::<usize>(), snip in snippet()) {
        check_he(&mutate(&he_text(), kind, a, b, &snip));
    }

    #[test]
    fn mutated_tir_never_panics(kind in any::<u8>(), a in any::<usize>(), b in any::<usize>(), snip in snippet()) {
        check_tir(&mutate(TIR, kind, a, b, &snip));
    }
}

#[test]
fn sparse_ids_are_refused_not_allocated() {
    let he =
        "module \"m\" {batch = 1, log_scale = 40.0}\nlayout batch = batch{offset=0, stride=1}\n\
              %4000000000 = input \"x\"[0] : ct<l=0, s=40.0, n=1, batch>\n";
    let e = parse_module(he).unwrap_err();
    assert!(e.message.contains("sparse"), "{}", e.message);
    let tir = "graph \"g\"\ninputs []\noutputs []\n%4000000000 = relu \"r\" ()\n";
    let e = parse_graph(tir).unwrap_err();
    assert!(e.message.contains("sparse"), "{}", e.message);
}
