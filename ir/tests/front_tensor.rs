//! Tensor graph: shape inference, verifier and plaintext evaluator against hand-computed cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::tensor::eval::{eval, eval_batch};
use hecc_ir::tensor::{
    verify, Granularity, Graph, GraphError, NodeId, Normalization, Op, Shape, Tensor,
};
use ndarray::{arr1, ArrayD, IxDyn};

fn t(shape: &[usize], v: &[f64]) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
}

fn input(g: &mut Graph, shape: &[usize]) -> NodeId {
    g.add_node(
        "x",
        Op::Input {
            shape: Shape::from(shape),
            norm: Normalization::default(),
        },
        &[],
    )
}

fn close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape());
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() < 1e-9, "{a:?} != {b:?}");
    }
}

fn conv(out: usize, k: usize, stride: usize, pad: usize, bias: bool) -> Op {
    Op::Conv2d {
        out_channels: out,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [pad; 4],
        groups: 1,
        weight: "w".into(),
        bias: bias.then(|| "b".into()),
    }
}

const X33: [f64; 9] = [1., 2., 3., 4., 5., 6., 7., 8., 9.];

#[test]
fn node_id_prints_as_percent() {
    assert_eq!(NodeId(12).to_string(), "%12");
    assert_eq!(Shape::from([5, 13, 13]).to_string(), "[5, 13, 13]");
}

#[test]
fn conv_1ch_3x3_2x2_kernel_with_bias() {
    let mut g = Graph::new("c");
    let x = input(&mut g, &[1, 3, 3]);
    let c = g.add_node("c", conv(1, 2, 1, 0, true), &[x]);
    g.add_output(c);
    g.add_weight("w", t(&[1, 1, 2, 2], &[1., 2., 3., 4.]));
    g.add_weight("b", arr1(&[0.5]).into_dyn());
    let shapes = verify(&g).unwrap();
    assert_eq!(shapes[&c], Shape::from([1, 2, 2]));
    let y = eval(&g, &[t(&[1, 3, 3], &X33)]).unwrap();
    // [1 2;4 5].[1 2;3 4] = 1+4+12+20 = 37, then 47, 67, 77; plus 0.5.
    close(&y[0], &t(&[1, 2, 2], &[37.5, 47.5, 67.5, 77.5]));
}

#[test]
fn conv_padding_and_stride() {
    let mut g = Graph::new("c");
    let x = input(&mut g, &[1, 3, 3]);
    let c = g.add_node("c", conv(1, 3, 2, 1, false), &[x]);
    g.add_output(c);
    g.add_weight("w", t(&[1, 1, 3, 3], &[1.; 9]));
    let y = eval(&g, &[t(&[1, 3, 3], &X33)]).unwrap();
    // Windows centred on the corners: 1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9.
    close(&y[0], &t(&[1, 2, 2], &[12., 16., 24., 28.]));
}

#[test]
fn grouped_conv_two_channels() {
    let mut g = Graph::new("c");
    let x = input(&mut g, &[2, 1, 2]);
    let c = g.add_node(
        "c",
        Op::Conv2d {
            out_channels: 2,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0; 4],
            groups: 2,
            weight: "w".into(),
            bias: None,
        },
        &[x],
    );
    g.add_output(c);
    g.add_weight("w", t(&[2, 1, 1, 1], &[10., -1.]));
    let y = eval(&g, &[t(&[2, 1, 2], &[1., 2., 3., 4.])]).unwrap();
    close(&y[0], &t(&[2, 1, 2], &[10., 20., -3., -4.]));
}

#[test]
fn pooling() {
    let x16: Vec<f64> = (1..=16).map(f64::from).collect();
    for (op, want) in [
        (
            Op::AvgPool {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0; 4],
            },
            vec![3.5, 5.5, 11.5, 13.5],
        ),
        (
            Op::MaxPool {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0; 4],
            },
            vec![6., 8., 14., 16.],
        ),
    ] {
        let mut g = Graph::new("p");
        let x = input(&mut g, &[1, 4, 4]);
        let p = g.add_node("p", op, &[x]);
        g.add_output(p);
        let y = eval(&g, &[t(&[1, 4, 4], &x16)]).unwrap();
        close(&y[0], &t(&[1, 2, 2], &want));
    }
    // Padded average pool divides by the full window.
    let mut g = Graph::new("p");
    let x = input(&mut g, &[1, 2, 2]);
    let p = g.add_node(
        "p",
        Op::AvgPool {
            kernel: [2, 2],
            stride: [2, 2],
            padding: [1, 1, 1, 1],
        },
        &[x],
    );
    g.add_output(p);
    let y = eval(&g, &[t(&[1, 2, 2], &[1., 2., 3., 4.])]).unwrap();
    close(&y[0], &t(&[1, 2, 2], &[0.25, 0.5, 0.75, 1.0]));
    // Global average pool.
    let mut g = Graph::new("p");
    let x = input(&mut g, &[2, 2, 2]);
    let p = g.add_node("p", Op::GlobalAvgPool, &[x]);
    g.add_output(p);
    let y = eval(&g, &[t(&[2, 2, 2], &[1., 2., 3., 4., 10., 20., 30., 40.])]).unwrap();
    close(&y[0], &t(&[2], &[2.5, 25.]));
}

#[test]
fn dense_flatten_and_activations() {
    let mut g = Graph::new("d");
    let x = input(&mut g, &[1, 1, 2]);
    let f = g.add_node("f", Op::Flatten, &[x]);
    let d = g.add_node(
        "d",
        Op::Dense {
            out_features: 3,
            weight: "w".into(),
            bias: Some("b".into()),
        },
        &[f],
    );
    let s = g.add_node("s", Op::Square, &[d]);
    let p = g.add_node(
        "p",
        Op::Poly {
            coeffs: vec![1., 2., 3.],
        },
        &[d],
    );
    let r = g.add_node("r", Op::Relu, &[d]);
    let k = g.add_node("k", Op::Scale { factor: -2. }, &[d]);
    for o in [d, s, p, r, k] {
        g.add_output(o);
    }
    g.add_weight("w", t(&[3, 2], &[1., 2., 3., 4., 5., 6.]));
    g.add_weight("b", t(&[3], &[0., 1., 2.]));
    let shapes = verify(&g).unwrap();
    assert_eq!(shapes[&f], Shape::from([2]));
    let y = eval(&g, &[t(&[1, 1, 2], &[1., -1.])]).unwrap();
    close(&y[0], &t(&[3], &[-1., 0., 1.]));
    close(&y[1], &t(&[3], &[1., 0., 1.]));
    // 1 + 2x + 3x^2 at -1, 0, 1.
    close(&y[2], &t(&[3], &[2., 1., 6.]));
    close(&y[3], &t(&[3], &[0., 0., 1.]));
    close(&y[4], &t(&[3], &[2., 0., -2.]));
}

#[test]
fn batch_norm_quadratic_concat_add_and_normalisation() {
    let mut g = Graph::new("m");
    let x = g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([2, 1, 1]),
            norm: Normalization {
                mean: vec![1., 2.],
                std: vec![2., 4.],
                range: Some([0., 10.]),
            },
        },
        &[],
    );
    let bn = g.add_node(
        "bn",
        Op::BatchNorm {
            gamma: "g".into(),
            beta: "be".into(),
            mean: "mu".into(),
            var: "var".into(),
            epsilon: 0.0,
        },
        &[x],
    );
    let qc = g.add_node(
        "qc",
        Op::Quadratic {
            granularity: Granularity::Channel,
            coeffs: "qc".into(),
        },
        &[bn],
    );
    let ql = g.add_node(
        "ql",
        Op::Quadratic {
            granularity: Granularity::Layer,
            coeffs: "ql".into(),
        },
        &[bn],
    );
    let qe = g.add_node(
        "qe",
        Op::Quadratic {
            granularity: Granularity::Element,
            coeffs: "qe".into(),
        },
        &[bn],
    );
    let cat = g.add_node("cat", Op::Concat { axis: 0 }, &[qc, ql]);
    let add = g.add_node("add", Op::Add, &[qc, ql, qe]);
    for o in [bn, qc, cat, add] {
        g.add_output(o);
    }
    g.add_weight("g", t(&[2], &[2., 1.]));
    g.add_weight("be", t(&[2], &[0., 1.]));
    g.add_weight("mu", t(&[2], &[1., 0.]));
    g.add_weight("var", t(&[2], &[4., 1.]));
    g.add_weight("qc", t(&[3, 2], &[1., 0., 0., 1., 0., 2.]));
    g.add_weight("ql", t(&[3], &[1., 1., 1.]));
    g.add_weight("qe", t(&[3, 2, 1, 1], &[0., 0., 0., 0., 5., 6.]));
    let shapes = verify(&g).unwrap();
    assert_eq!(shapes[&cat], Shape::from([4, 1, 1]));
    // Raw [5, 6] -> normalised [(5-1)/2, (6-2)/4] = [2, 1].
    // bn: c0 = 2*(2-1)/2 + 0 = 1; c1 = 1*(1-0)/1 + 1 = 2.
    // qc: c0 = 1*1 + 0 + 0 = 1; c1 = 0 + 1*2 + 2 = 4.  ql: x^2 + x + 1 = [3, 7].  qe: [5, 6].
    let y = eval(&g, &[t(&[2, 1, 1], &[5., 6.])]).unwrap();
    close(&y[0], &t(&[2, 1, 1], &[1., 2.]));
    close(&y[1], &t(&[2, 1, 1], &[1., 4.]));
    close(&y[2], &t(&[4, 1, 1], &[1., 4., 3., 7.]));
    close(&y[3], &t(&[2, 1, 1], &[9., 17.]));
}

#[test]
fn batch_eval_matches_single_images() {
    let mut g = Graph::new("b");
    let x = input(&mut g, &[1, 3, 3]);
    let c = g.add_node("c", conv(2, 2, 1, 0, true), &[x]);
    let s = g.add_node("s", Op::Square, &[c]);
    let f = g.add_node("f", Op::Flatten, &[s]);
    g.add_output(f);
    g.add_weight("w", t(&[2, 1, 2, 2], &[1., -1., 0.5, 2., 0., 1., -1., 0.]));
    g.add_weight("b", t(&[2], &[0.1, -0.2]));
    let imgs: Vec<Tensor> = (0..3)
        .map(|k| t(&[1, 3, 3], &X33.map(|v| v * (k as f64 + 1.0) - 3.0)))
        .collect();
    let views: Vec<_> = imgs.iter().map(|i| i.view()).collect();
    let batch = ndarray::stack(ndarray::Axis(0), &views).unwrap();
    let yb = eval_batch(&g, &[batch]).unwrap();
    assert_eq!(yb[0].shape(), &[3, 8]);
    for (k, img) in imgs.iter().enumerate() {
        let y = eval(&g, std::slice::from_ref(img)).unwrap();
        close(&yb[0].index_axis(ndarray::Axis(0), k).to_owned(), &y[0]);
    }
    // Wrong input shape is an error, not a panic.
    assert!(eval(&g, &[t(&[1, 2, 2], &[0.; 4])]).is_err());
    assert!(eval(&g, &[]).is_err());
}

#[test]
fn verifier_reports_every_error_at_once() {
    let mut g = Graph::new("bad");
    let x = input(&mut g, &[1, 8, 8]);
    // Shape mismatch: dense on an image.
    let d = g.add_node(
        "d",
        Op::Dense {
            out_features: 4,
            weight: "dw".into(),
            bias: None,
        },
        &[x],
    );
    // Missing weight and bad stride.
    let c = g.add_node(
        "c",
        Op::Conv2d {
            out_channels: 2,
            kernel: [3, 3],
            stride: [0, 1],
            padding: [0; 4],
            groups: 1,
            weight: "missing".into(),
            bias: None,
        },
        &[x],
    );
    // Wrong arity.
    let a = g.add_node("a", Op::Add, &[x]);
    // Duplicate name.
    let dup = g.add_node("a", Op::Relu, &[x]);
    // Dangling operand.
    let r = g.add_node("r", Op::Relu, &[NodeId(999)]);
    // Cycle.
    let p = g.add_node("p", Op::Relu, &[]);
    let q = g.add_node("q", Op::Relu, &[p]);
    g.connect(q, p, 0);
    // Wrong weight shape + NaN.
    let k = g.add_node(
        "k",
        Op::Conv2d {
            out_channels: 1,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0; 4],
            groups: 1,
            weight: "kw".into(),
            bias: Some("kb".into()),
        },
        &[x],
    );
    g.add_weight("kw", t(&[1, 2, 1, 1], &[1., 1.]));
    g.add_weight("kb", t(&[1], &[f64::NAN]));
    for o in [d, c, a, dup, r, q, k] {
        g.add_output(o);
    }
    let errs = verify(&g).unwrap_err();
    let kinds: Vec<&str> = errs
        .iter()
        .map(|e| match e {
            GraphError::ShapeMismatch { .. } => "shape",
            GraphError::InvalidAttribute { .. } => "attr",
            GraphError::MissingWeight { .. } => "missing",
            GraphError::WeightShape { .. } => "wshape",
            GraphError::NonFiniteWeight { .. } => "nan",
            GraphError::Cycle { .. } => "cycle",
            GraphError::DanglingInput { .. } => "dangling",
            GraphError::DuplicateName { .. } => "dup",
            GraphError::Arity { .. } => "arity",
            _ => "other",
        })
        .collect();
    for want in [
        "shape", "attr", "missing", "wshape", "nan", "cycle", "dangling", "dup", "arity",
    ] {
        assert!(kinds.contains(&want), "missing {want} in {kinds:?}");
    }
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(text
        .iter()
        .any(|m| m.contains("node `d` (%1, dense)") && m.contains("rank-1")));
    assert!(text
        .iter()
        .any(|m| m.contains("weight `kw` (weight) has shape [1, 2, 1, 1], expected [1, 1, 1, 1]")));
    assert!(text
        .iter()
        .any(|m| m.contains("stride height must be at least 1")));
}

#[test]
fn shape_errors_for_attributes() {
    let mut g = Graph::new("k");
    let x = input(&mut g, &[1, 4, 4]);
    let c = g.add_node("c", conv(1, 7, 1, 1, false), &[x]);
    g.add_output(c);
    g.add_weight("w", Tensor::zeros(IxDyn(&[1, 1, 7, 7])));
    let errs = verify(&g).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0]
            .to_string()
            .contains("kernel height 7 is larger than the padded input height 6"),
        "{}",
        errs[0]
    );
}

#[test]
fn cryptonets_shapes_and_eval_speed() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/cryptonets.yaml"
    ))
    .unwrap();
    let g = hecc_ir::front::yaml::parse_spec(
        &spec,
        "cryptonets.yaml",
        Some(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models"
        ))),
    )
    .unwrap();
    let shapes = verify(&g).unwrap();
    let by_name = |n: &str| shapes[&g.find(n).unwrap()].clone();
    assert_eq!(by_name("conv1"), Shape::from([5, 13, 13]));
    assert_eq!(by_name("flatten"), Shape::from([845]));
    assert_eq!(by_name("fc1"), Shape::from([100]));
    assert_eq!(by_name("fc2"), Shape::from([10]));
    let batch = Tensor::from_elem(IxDyn(&[64, 1, 28, 28]), 0.5);
    let start = std::time::Instant::now();
    let y = eval_batch(&g, &[batch]).unwrap();
    let per_image = start.elapsed().as_secs_f64() / 64.0;
    assert_eq!(y[0].shape(), &[64, 10]);
    assert!(y[0].iter().all(|v| v.is_finite()));
    // Generous bound (debug/opt-level-1 builds on a loaded machine): well under 10 ms per image.
    assert!(per_image < 0.01, "{per_image} s per image");
}

mod random_graphs {
    use super::*;
    use hecc_ir::tensor::shape::expected_weights;
    use hecc_ir::tensor::verify::analyze;
    use proptest::prelude::*;

    /// One op choice: (kind, small integer parameters).
    fn op_of(kind: u8, a: usize, b: usize, name: &str) -> Op {
        match kind % 12 {
            0 => Op::Conv2d {
                out_channels: a % 4,
                kernel: [b % 4, (b / 4) % 4],
                stride: [a % 3, 1 + b % 2],
                padding: [b % 2, a % 2, 0, b % 3],
                groups: 1 + a % 2,
                weight: format!("{name}.w"),
                bias: a.is_multiple_of(2).then(|| format!("{name}.b")),
            },
            1 => Op::AvgPool {
                kernel: [1 + a % 3, 1 + b % 3],
                stride: [1 + b % 2, a % 3],
                padding: [0, a % 2, 0, 0],
            },
            2 => Op::MaxPool {
                kernel: [1 + a % 3, 1 + b % 3],
                stride: [1, 1 + a % 2],
                padding: [a % 2, 0, 0, 0],
            },
            3 => Op::Flatten,
            4 => Op::Dense {
                out_features: a % 5,
                weight: format!("{name}.w"),
                bias: Some(format!("{name}.b")),
            },
            5 => Op::Square,
            6 => Op::Quadratic {
                granularity: [
                    Granularity::Layer,
                    Granularity::Channel,
                    Granularity::Element,
                ][a % 3],
                coeffs: format!("{name}.q"),
            },
            7 => Op::GlobalAvgPool,
            8 => Op::BatchNorm {
                gamma: format!("{name}.g"),
                beta: format!("{name}.b"),
                mean: format!("{name}.m"),
                var: format!("{name}.v"),
                epsilon: 1e-5,
            },
            9 => Op::Concat { axis: a % 2 },
            10 => Op::Add,
            _ => Op::Reshape {
                shape: Shape::from([a % 4 + 1, b % 4 + 1]),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Random graphs: the verifier never panics; when it accepts a graph (after weights of
        /// the expected shapes are added), the evaluator succeeds and its output shapes are the
        /// inferred ones.
        #[test]
        fn verifier_and_evaluator_agree(
            c in 1usize..4, h in 1usize..7, w in 1usize..7,
            ops in proptest::collection::vec((0u8..12, 0usize..16, 0usize..16, 0usize..8, 0usize..8), 1..8),
        ) {
            let mut g = Graph::new("rand");
            let x = g.add_node("x", Op::Input { shape: Shape::from([c, h, w]), norm: Normalization::default() }, &[]);
            let mut ids = vec![x];
            for (i, (kind, a, b, p, q)) in ops.iter().enumerate() {
                let name = format!("n{i}");
                let op = op_of(*kind, *a, *b, &name);
                let first = ids[p % ids.len()];
                let operands = if matches!(op, Op::Concat { .. } | Op::Add) {
                    vec![first, ids[q % ids.len()]]
                } else {
                    vec![first]
                };
                ids.push(g.add_node(name, op, &operands));
            }
            g.add_output(*ids.last().unwrap());
            let (shapes, _) = analyze(&g);
            let mut fill = 0.1;
            for id in g.node_ids().collect::<Vec<_>>() {
                let op = g.node(id).unwrap().op.clone();
                let Some(&src) = g.operand_ids(id).first() else { continue };
                let Some(s) = shapes.get(&src) else { continue };
                for (role, name, shape) in expected_weights(&op, s) {
                    fill += 0.05;
                    let v = if role == "var" { 1.0 + fill } else { fill };
                    g.add_weight(name, Tensor::from_elem(IxDyn(&shape), v));
                }
            }
            if let Ok(shapes) = verify(&g) {
                let input = Tensor::from_shape_fn(IxDyn(&[c, h, w]), |i| (i[0] + 2 * i[1] + 3 * i[2]) as f64 / 10.0);
                let y = eval(&g, &[input]).expect("verified graphs evaluate");
                let out = g.outputs[0];
                prop_assert_eq!(y[0].shape(), &shapes[&out][..]);
                prop_assert!(y[0].iter().all(|v| v.is_finite()));
            }
        }
    }
}
