//! Builders, verifier and reference semantics of the HE IR.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::{interpret, interpret_scheduled};
use hecc_ir::he::{
    verify, HeError, Kind, Layout, Level, LogScale, Meta, Module, NodeErrorKind, Op, Opcode,
    Operand, Params, Site, Type, ValueId, VerifyOptions,
};

fn module() -> (Module, hecc_ir::he::LayoutId) {
    let mut m = Module::new(Meta {
        name: "t".into(),
        batch: 4,
        log_scale: LogScale(30.0),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    (m, b)
}

fn node_errors(m: &Module, opts: &VerifyOptions) -> Vec<(ValueId, NodeErrorKind)> {
    match verify(m, opts) {
        Ok(()) => Vec::new(),
        Err(e) => e
            .errors
            .into_iter()
            .filter_map(|e| match e {
                HeError::Node {
                    site: Site::Node(v, _),
                    kind,
                } => Some((v, kind)),
                _ => None,
            })
            .collect(),
    }
}

#[test]
fn op_table_is_consistent() {
    for &code in Opcode::ALL {
        let info = code.info();
        assert_eq!(Opcode::from_mnemonic(info.mnemonic), Some(code));
        assert!(!info.doc.is_empty());
        if let hecc_ir::he::Arity::Fixed(k) = info.arity {
            assert_eq!(info.operands.len(), usize::from(k), "{code}");
        }
    }
    assert!(
        std::mem::size_of::<Op>() <= 24,
        "Op grew to {}",
        std::mem::size_of::<Op>()
    );
}

#[test]
fn builders_compute_types() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(3), LogScale(30.0), 16, b).unwrap();
    let y = m.input("x", 1, Level(2), LogScale(30.0), 16, b).unwrap();
    let s = m.add(x, y).unwrap();
    assert_eq!(m.ty(s).unwrap().level(), Level(2));
    let p = m.mul(x, x).unwrap();
    let t = m.ty(p).unwrap();
    assert_eq!(
        (t.level(), t.log_scale(), t.size()),
        (Level(3), LogScale(60.0), 3)
    );
    assert!(m.rotate(p, 1).is_err(), "rotation of a size-3 ciphertext");
    assert!(m.mul(p, x).is_err(), "mul of a size-3 ciphertext");
    let r = m.relinearize(p).unwrap();
    assert!(m.relinearize(r).is_err());
    let r = m.rescale(r).unwrap();
    let t = m.ty(r).unwrap();
    assert_eq!(
        (t.level(), t.log_scale(), t.size()),
        (Level(2), LogScale(30.0), 2)
    );
    let ms = m.mul_scalar(r, 0.5, LogScale(20.0)).unwrap();
    assert_eq!(m.ty(ms).unwrap().log_scale(), LogScale(50.0));
    let mac = m
        .mac(&[(x, 1.0), (y, 2.0)], Some(3.0), LogScale(25.0))
        .unwrap();
    assert_eq!(m.ty(mac).unwrap().log_scale(), LogScale(55.0));
    assert_eq!(m.ty(mac).unwrap().level(), Level(2));
    assert!(m.drop_level(y, Level(3)).is_err());
    let d = m.drop_level(x, Level(0)).unwrap();
    let err = m.rescale(d).unwrap_err();
    assert_eq!(
        err,
        HeError::Node {
            site: Site::New(Opcode::Rescale),
            kind: NodeErrorKind::RescaleAtLevelZero
        }
    );
    assert!(err.to_string().contains("rescale"));
    let k = m.add_constant(vec![1.0; 16]);
    assert_eq!(
        m.add_constant(vec![1.0; 16]),
        k,
        "constants are deduplicated"
    );
    let pt = m.encode(k, Level(3), LogScale(30.0), b).unwrap();
    assert_eq!(m.ty(pt).unwrap().kind(), Kind::Plain);
    assert!(m.add(x, pt).is_err(), "add needs two ciphertexts");
    let mp = m.mul_plain(x, pt).unwrap();
    assert_eq!(m.ty(mp).unwrap().log_scale(), LogScale(60.0));
    assert!(m.add_layout("batch", Layout::BATCH).is_err());
    assert!(m.add_layout("not an ident", Layout::BATCH).is_err());
    verify(&m, &VerifyOptions::STRUCTURE).unwrap();
}

#[test]
fn rescale_uses_primes_when_known() {
    let (mut m, b) = module();
    m.params = Some(Params {
        log_n: 5,
        primes: vec![(1 << 50) - 27, (1 << 30) + 3],
    });
    let x = m.input("x", 0, Level(1), LogScale(30.0), 16, b).unwrap();
    let sq = m.square(x).unwrap();
    let r = m.relinearize(sq).unwrap();
    let r = m.rescale(r).unwrap();
    let s = m.ty(r).unwrap().log_scale().0;
    let expected = 60.0 - ((1u64 << 30) as f64 + 3.0).log2();
    assert!((s - expected).abs() < 1e-12, "{s} vs {expected}");
    verify(&m, &VerifyOptions::STRICT).unwrap();
}

#[test]
fn strict_verification_reports_level_and_scale_mismatches() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(3), LogScale(30.0), 16, b).unwrap();
    let y = m.input("x", 1, Level(2), LogScale(30.0), 16, b).unwrap();
    let z = m.input("x", 2, Level(3), LogScale(31.0), 16, b).unwrap();
    let a = m.add(x, y).unwrap();
    let c = m.sub(x, z).unwrap();
    let mc = m.mul(x, z).unwrap(); // multiplying at different scales is fine
    verify(&m, &VerifyOptions::STRUCTURE).unwrap();
    let errs = node_errors(&m, &VerifyOptions::STRICT);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(matches!(errs[0], (v, NodeErrorKind::LevelMismatch { .. }) if v == a));
    assert!(matches!(errs[1], (v, NodeErrorKind::ScaleMismatch { .. }) if v == c));
    assert!(!errs.iter().any(|(v, _)| *v == mc));
}

#[test]
fn verifier_reports_every_error_at_once() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(2), LogScale(30.0), 16, b).unwrap();
    let y = m.input("x", 1, Level(2), LogScale(30.0), 16, b).unwrap();
    let a = m.add(x, y).unwrap();
    let sq = m.square(a).unwrap();
    let ro = m.rotate(a, 2).unwrap();
    let out = m.output(ro, "y", 0).unwrap();
    // 1. wrong stored type.
    m.node_mut(sq).unwrap().ty = Type::cipher(Level(2), LogScale(60.0), 16, b);
    // 2. dangling operand: remove `y`, leaving `add` with slot 1 empty.
    m.remove(y);
    // 3. a cycle: make `rotate` also feed the `add` ... through a new node.
    let neg = m
        .push_typed(
            Op::Negate,
            &[ro],
            Type::cipher(Level(2), LogScale(30.0), 16, b),
        )
        .unwrap();
    m.graph_mut().add_edge(neg.node(), a.node(), Operand(1));
    // 4. a mac with a missing scalar.
    let mac = m
        .push_typed(
            Op::Mac(Box::new(hecc_ir::he::MacAttrs {
                coeffs: vec![1.0],
                bias: None,
                log_scale: LogScale(1.0),
            })),
            &[x, x],
            Type::cipher(Level(2), LogScale(31.0), 16, b),
        )
        .unwrap();
    // 5. an encode of a missing constant.
    let enc = m
        .push_typed(
            Op::Encode {
                constant: hecc_ir::he::ConstId(9),
            },
            &[],
            Type::plain(Level(2), LogScale(30.0), 16, b),
        )
        .unwrap();
    let err = verify(&m, &VerifyOptions::STRUCTURE).unwrap_err();
    let text: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    let joined = text.join("\n");
    assert!(
        joined.contains(&format!("{sq} (square): result type is")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{mac} (mac): has 1 scalar(s) for 2 operand(s)")),
        "{joined}"
    );
    assert!(
        joined.contains(&format!("{enc} (encode): constant @9")),
        "{joined}"
    );
    assert!(joined.contains("cycle through"), "{joined}");
    assert!(
        !joined.contains(&format!("{out} ")),
        "output is fine: {joined}"
    );
    assert_eq!(err.errors.len(), 4, "{joined}");
    // Now the dangling operand of `add` once the cycle edge is gone.
    let e = m
        .graph()
        .find_edge(neg.node(), a.node())
        .expect("edge exists");
    m.graph_mut().remove_edge(e);
    let errs = node_errors(&m, &VerifyOptions::STRUCTURE);
    assert!(errs
        .iter()
        .any(|(v, k)| *v == a && *k == NodeErrorKind::MissingOperand { slot: 1 }));
    // The diagnostic lists every finding.
    let d = verify(&m, &VerifyOptions::STRUCTURE).unwrap_err();
    let related = miette::Diagnostic::related(&d)
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(related, d.errors.len());
}

#[test]
fn interpreter_follows_the_documented_semantics() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(3), LogScale(30.0), 4, b).unwrap();
    let y = m.input("x", 1, Level(3), LogScale(30.0), 4, b).unwrap();
    let k = m.add_constant(vec![1.0, 2.0, 3.0, 4.0]);
    let p = m.encode(k, Level(3), LogScale(30.0), b).unwrap();
    let s = m.add_plain(x, p).unwrap(); // x + k
    let sq = m.mul(s, y).unwrap(); // (x + k) * y
    let r = m.relinearize(sq).unwrap();
    let r = m.rescale(r).unwrap();
    let rot = m.rotate(r, 1).unwrap();
    let mac = m
        .mac(&[(x, 2.0), (y, -1.0)], Some(0.5), LogScale(30.0))
        .unwrap();
    let i = m.mul_integer(x, 3).unwrap();
    let n = m.negate(i).unwrap();
    m.output(rot, "rot", 0).unwrap();
    m.output(mac, "mac", 0).unwrap();
    m.output(n, "neg", 0).unwrap();
    let xs = [1.0, -1.0, 0.5, 2.0];
    let ys = [2.0, 3.0, -1.0, 0.25];
    let outs = interpret(&m, |_, idx, _, _| {
        Some(if idx == 0 { xs.to_vec() } else { ys.to_vec() })
    })
    .unwrap();
    let prod: Vec<f64> = (0..4)
        .map(|i| (xs[i] + [1.0, 2.0, 3.0, 4.0][i]) * ys[i])
        .collect();
    let rotated: Vec<f64> = (0..4).map(|i| prod[(i + 1) % 4]).collect();
    assert_eq!(outs[0].name, "rot");
    assert_eq!(outs[0].slots, rotated);
    let mac_ref: Vec<f64> = (0..4).map(|i| 2.0 * xs[i] - ys[i] + 0.5).collect();
    assert_eq!(outs[1].slots, mac_ref);
    let neg_ref: Vec<f64> = xs.iter().map(|v| -3.0 * v).collect();
    assert_eq!(outs[2].slots, neg_ref);
    // Missing inputs are reported, not panicked on.
    assert!(interpret(&m, |_, _, _, _| None).is_err());
    assert!(interpret(&m, |_, _, _, _| Some(vec![0.0; 3])).is_err());
}

#[test]
fn scheduled_interpretation_gives_the_same_outputs() {
    // Two independent chains: x -> x*x -> +1 and y -> 2y -> rotate, each ending in an output.
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(3), LogScale(30.0), 4, b).unwrap();
    let y = m.input("x", 1, Level(3), LogScale(30.0), 4, b).unwrap();
    let sq = m.mul(x, x).unwrap();
    let one = m.add_constant(vec![1.0; 4]);
    let p = m.encode(one, Level(3), LogScale(60.0), b).unwrap();
    let a = m.add_plain(sq, p).unwrap();
    let d = m.mul_integer(y, 2).unwrap();
    let r = m.rotate(d, 1).unwrap();
    m.output(a, "a", 0).unwrap();
    m.output(r, "r", 0).unwrap();
    let xs = [1.0, -1.0, 0.5, 2.0];
    let ys = [2.0, 3.0, -1.0, 0.25];
    let feed = |_: &str, idx: u32, _: &Layout, _: u32| {
        Some(if idx == 0 { xs.to_vec() } else { ys.to_vec() })
    };
    let plain = interpret(&m, feed).unwrap();
    // The y chain first, the x chain second; the encode and the outputs are left out (they
    // run as soon as their operands have), and an id the module lacks is ignored.
    let order: Vec<u32> = [y, d, r, x, sq, a]
        .iter()
        .map(|v| v.0)
        .chain([9_999])
        .collect();
    let scheduled = interpret_scheduled(&m, &order, feed).unwrap();
    assert_eq!(plain, scheduled);
    assert_eq!(scheduled[0].slots, vec![2.0, 2.0, 1.25, 5.0]);
    assert_eq!(scheduled[1].slots, vec![6.0, -2.0, 0.5, 4.0]);
    // A schedule that names nothing still evaluates everything.
    assert_eq!(interpret_scheduled(&m, &[], feed).unwrap(), plain);
}

#[test]
fn rotate_negative_and_large_steps() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(0), LogScale(30.0), 5, b).unwrap();
    let r1 = m.rotate(x, -2).unwrap();
    let r2 = m.rotate(x, 13).unwrap();
    m.output(r1, "a", 0).unwrap();
    m.output(r2, "b", 0).unwrap();
    let xs: Vec<f64> = (0..5).map(f64::from).collect();
    let outs = interpret(&m, |_, _, _, _| Some(xs.clone())).unwrap();
    assert_eq!(outs[0].slots, vec![3.0, 4.0, 0.0, 1.0, 2.0]);
    assert_eq!(outs[1].slots, vec![3.0, 4.0, 0.0, 1.0, 2.0]);
}

#[test]
fn large_module_builds_and_verifies() {
    // Batch packing scale: one ciphertext per feature, a dense layer as macs.
    let (mut m, b) = module();
    let inputs: Vec<ValueId> = (0..784)
        .map(|i| m.input("x", i, Level(4), LogScale(30.0), 4096, b).unwrap())
        .collect();
    for o in 0..128u32 {
        let terms: Vec<(ValueId, f64)> = inputs
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, ((i as u32 * 31 + o) % 17) as f64 / 17.0 - 0.5))
            .collect();
        let y = m.mac(&terms, Some(0.1), LogScale(30.0)).unwrap();
        let y = m.rescale(y).unwrap();
        m.output(y, "y", o).unwrap();
    }
    assert_eq!(m.len(), 784 + 3 * 128);
    verify(&m, &VerifyOptions::STRICT).unwrap();
    let text = m.to_string();
    let back = hecc_ir::text::parse_module(&text).unwrap();
    assert_eq!(back.to_string(), text);
}

#[test]
fn fixture_mlp_computes_its_formula() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/ir/tiny_mlp.he"
    );
    let src = std::fs::read_to_string(path).unwrap();
    let m = hecc_ir::text::parse_module(&src).unwrap();
    verify(&m, &VerifyOptions::STRICT).unwrap();
    let x0: Vec<f64> = (0..8).map(|i| f64::from(i) / 8.0 - 0.5).collect();
    let x1: Vec<f64> = (0..8).map(|i| 0.3 - f64::from(i) / 16.0).collect();
    let outs = interpret(&m, |name, idx, layout, slots| {
        assert_eq!((name, slots, layout), ("x", 8, &Layout::BATCH));
        Some(if idx == 0 { x0.clone() } else { x1.clone() })
    })
    .unwrap();
    assert_eq!(outs.len(), 1);
    for i in 0..8 {
        let h0 = 0.5 * x0[i] - 1.25 * x1[i] + 0.1;
        let h1 = -0.75 * x0[i] + 2.0 * x1[i];
        let y = h0 * h0 - 0.5 * h1 * h1 + 0.25;
        assert!((outs[0].slots[i] - y).abs() < 1e-12, "slot {i}");
    }
}

#[test]
fn layouts_must_fit_the_slots() {
    let mut m = Module::new(Meta {
        name: "t".into(),
        batch: 16,
        log_scale: LogScale(30.0),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let img = m
        .add_layout("img", Layout::dense_channels(3, 4, 4))
        .unwrap();
    let ok = m.input("x", 0, Level(1), LogScale(30.0), 16, b).unwrap();
    let small = m.input("x", 1, Level(1), LogScale(30.0), 8, b).unwrap();
    let chan = m.input("x", 2, Level(1), LogScale(30.0), 32, img).unwrap();
    let errs = node_errors(&m, &VerifyOptions::STRUCTURE);
    assert!(!errs.iter().any(|(v, _)| *v == ok), "{errs:?}");
    assert!(errs.contains(&(
        small,
        NodeErrorKind::LayoutOverflow {
            needed: 16,
            slots: 8
        }
    )));
    assert!(errs.contains(&(
        chan,
        NodeErrorKind::LayoutOverflow {
            needed: 48,
            slots: 32
        }
    )));
}

#[test]
fn topological_order_and_cycles() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(1), LogScale(30.0), 4, b).unwrap();
    let n1 = m.negate(x).unwrap();
    let n2 = m.negate(n1).unwrap();
    assert_eq!(m.topo_order().unwrap(), vec![x, n1, n2]);
    // Close a loop n2 -> n1 (as a second operand) and hang a node after it.
    m.graph_mut().add_edge(n2.node(), n1.node(), Operand(1));
    let after = m.negate(n2).unwrap();
    match m.topo_order() {
        Err(HeError::Cycle { nodes }) => assert_eq!(nodes, vec![n1, n2, after]),
        other => panic!("{other:?}"),
    }
    let err = verify(&m, &VerifyOptions::STRUCTURE).unwrap_err();
    assert!(err.errors.iter().any(|e| *e
        == HeError::Cycle {
            nodes: vec![n1, n2]
        }));
    // Printing still works and reads back.
    let text = m.to_string();
    let back = hecc_ir::text::parse_module(&text).unwrap();
    assert_eq!(back.to_string(), text);
}

/// The id order is taken as the topological order only when every operand precedes its user;
/// an acyclic module whose uses were redirected to a later node is ordered by its edges.
#[test]
fn ids_out_of_order_are_still_ordered_by_their_edges() {
    let (mut m, b) = module();
    let x = m.input("x", 0, Level(1), LogScale(30.0), 4, b).unwrap();
    let n1 = m.add(x, x).unwrap();
    let n2 = m.negate(n1).unwrap();
    assert!(m.ids_are_topological());
    // `n1`'s second operand becomes `late`, a node made after it.
    let late = m.negate(x).unwrap();
    let e = m
        .graph()
        .edges_connecting(x.node(), n1.node())
        .find(|e| *e.weight() == Operand(1))
        .map(|e| petgraph::visit::EdgeRef::id(&e))
        .unwrap();
    m.graph_mut().remove_edge(e);
    m.graph_mut().add_edge(late.node(), n1.node(), Operand(1));
    assert!(!m.ids_are_topological());
    let order = m.topo_order().unwrap();
    let pos = |v| order.iter().position(|&o| o == v).unwrap();
    assert!(pos(late) < pos(n1) && pos(n1) < pos(n2), "{order:?}");
    verify(&m, &VerifyOptions::STRUCTURE).unwrap();
}
