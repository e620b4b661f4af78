//! Pass fixtures: every `tests/fixtures/passes/*.tir` / `*.he` file starts with
//! `// run: PASS[,PASS]`; the passes run through the pass manager (verifying after each pass)
//! and the printed IR (or the error) is snapshotted with insta.
//!
//! Tensor fixtures declare their weights by shape only; `// weight "name" = [..]` comment lines
//! give values, the rest are filled deterministically (all positive, so variances are valid).
//! Weights a pass creates are printed with their values after the graph. Besides the snapshot,
//! every fixture checks that the passes preserve the semantics: tensor fixtures are evaluated
//! before and after on a fixed input batch (within 1e-9 relative), HE fixtures are interpreted
//! before and after on fixed slots (within 1e-9 relative).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op, Tensor, Weights};
use hecc_ir::text::lexer::fmt_f64;
use hecc_passes::manager::{ManagerOptions, PassCx, PassLog, PassManager, Pipeline};
use std::collections::BTreeMap;

fn header(src: &str) -> (Vec<String>, BTreeMap<String, Vec<f64>>) {
    let first = src.lines().next().unwrap_or("");
    let list = first
        .strip_prefix("// run:")
        .unwrap_or_else(|| panic!("first line must be `// run: PASS[,PASS]`, got `{first}`"));
    let passes = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut weights = BTreeMap::new();
    for line in src.lines() {
        let Some(rest) = line.strip_prefix("// weight ") else {
            continue;
        };
        let (name, values) = rest.split_once('=').expect("`// weight \"name\" = [..]`");
        let name = name.trim().trim_matches('"').to_string();
        let values = values
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|v| v.trim().parse::<f64>().expect("a number"))
            .collect();
        weights.insert(name, values);
    }
    (passes, weights)
}

fn filler(name: &str, i: usize) -> f64 {
    let h = name
        .bytes()
        .fold(7usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
    0.5 + ((h + 7 * i) % 13) as f64 / 8.0
}

fn input_batch(g: &Graph, batch: usize) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|&id| {
            let Some(Op::Input { shape, .. }) = g.node(id).map(|n| &n.op) else {
                panic!("input node")
            };
            let n = shape.numel();
            let mut dims = vec![batch];
            dims.extend_from_slice(shape);
            let data = (0..batch * n)
                .map(|k| ((k * 37 + 11) % 101) as f64 / 101.0)
                .collect();
            Tensor::from_shape_vec(dims, data).expect("shape")
        })
        .collect()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let rel = (x - y).abs() / x.abs().max(y.abs()).max(1.0);
        assert!(rel < 1e-9, "{x} vs {y}");
    }
}

fn run_tir(src: &str, passes: &[String], values: &BTreeMap<String, Vec<f64>>) -> String {
    let parsed = hecc_ir::text::parse_graph(src).expect("fixture parses");
    let mut weights = Weights::new();
    for (name, shape) in &parsed.weights {
        let n = shape.numel();
        let data = match values.get(name) {
            Some(v) => {
                assert_eq!(
                    v.len(),
                    n,
                    "weight `{name}`: {} values for {shape}",
                    v.len()
                );
                v.clone()
            }
            None => (0..n).map(|i| filler(name, i)).collect(),
        };
        weights.insert(
            name.clone(),
            Tensor::from_shape_vec(shape.0.clone(), data).expect("shape"),
        );
    }
    let mut g = parsed.into_graph(weights).expect("weights bind");
    let before = g.weights.clone();
    let x = input_batch(&g, 3);
    let want = eval_batch(&g, &x).expect("fixture evaluates");
    let pipeline = Pipeline::from_names(passes).expect("known passes");
    let pm = PassManager::new(ManagerOptions {
        verify: true,
        ..Default::default()
    })
    .expect("manager");
    let mut log = PassLog::default();
    match pm.run_tensor(&pipeline, &mut g, &mut PassCx::default(), &mut log) {
        Ok(()) => {
            let got = eval_batch(&g, &x).expect("result evaluates");
            for (w, o) in want.iter().zip(&got) {
                close(
                    w.as_slice().expect("contiguous"),
                    o.as_slice().expect("contiguous"),
                );
            }
            let mut out = hecc_ir::text::print_graph(&g);
            for (name, t) in &g.weights {
                if before.get(name) != Some(t) {
                    let vals: Vec<String> = t.iter().map(|v| fmt_f64(*v)).collect();
                    out.push_str(&format!("// {name} = [{}]\n", vals.join(", ")));
                }
            }
            // Idempotence: a second run changes nothing.
            let again = hecc_ir::text::print_graph(&g);
            let mut log2 = PassLog::default();
            pm.run_tensor(&pipeline, &mut g, &mut PassCx::default(), &mut log2)
                .expect("second run");
            assert_eq!(again, hecc_ir::text::print_graph(&g), "not idempotent");
            out
        }
        Err(e) => format!("error: {e}\n"),
    }
}

fn slots_of(m: &hecc_ir::he::Module) -> Vec<hecc_ir::he::interp::OutputValue> {
    interpret(m, |_, index, _, slots| {
        Some(
            (0..slots)
                .map(|s| 0.25 + 0.125 * f64::from(index) - 0.05 * f64::from(s))
                .collect(),
        )
    })
    .expect("interprets")
}

fn run_he(src: &str, passes: &[String]) -> String {
    let mut m = hecc_ir::text::parse_module(src).expect("fixture parses");
    let want = slots_of(&m);
    let pipeline = Pipeline::from_names(passes).expect("known passes");
    let pm = PassManager::new(ManagerOptions {
        verify: true,
        ..Default::default()
    })
    .expect("manager");
    let mut log = PassLog::default();
    match pm.run_he(&pipeline, &mut m, &mut PassCx::default(), &mut log) {
        Ok(()) => {
            let got = slots_of(&m);
            assert_eq!(want.len(), got.len());
            for (w, o) in want.iter().zip(&got) {
                assert_eq!((&w.name, w.index), (&o.name, o.index));
                close(&w.slots, &o.slots);
            }
            m.to_string()
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn pass_fixtures() {
    insta::glob!("../../tests/fixtures/passes", "*.{tir,he}", |path| {
        let src = std::fs::read_to_string(path).expect("readable fixture");
        let (passes, values) = header(&src);
        let out = match path.extension().and_then(|e| e.to_str()) {
            Some("tir") => run_tir(&src, &passes, &values),
            _ => run_he(&src, &passes),
        };
        insta::assert_snapshot!(format!("// run: {}\n{out}", passes.join(",")));
    });
}
