//! Round trips of the tensor text form on random graphs (proptest strategy).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::tensor::{Granularity, Graph, NodeId, Normalization, Op, Shape, Tensor};
use hecc_ir::text::{parse_graph, print_graph, BindError};
use proptest::prelude::*;

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -10.0f64..10.0,
        any::<f64>(),
        Just(-0.0),
        Just(1e-300),
        Just(f64::INFINITY),
        Just(f64::NAN),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_.]{0,8}",
        any::<String>(),
        Just("with \"quotes\" and \\".to_string()),
    ]
}

fn small() -> impl Strategy<Value = usize> {
    0usize..6
}

fn op() -> impl Strategy<Value = Op> {
    let a2 = || [small(), small()];
    let a4 = || [small(), small(), small(), small()];
    prop_oneof![
        (
            proptest::collection::vec(small(), 0..4),
            proptest::collection::vec(float(), 0..3),
            proptest::collection::vec(float(), 0..3),
            proptest::option::of([float(), float()])
        )
            .prop_map(|(s, mean, std, range)| Op::Input {
                shape: Shape(s),
                norm: Normalization { mean, std, range }
            }),
        (
            small(),
            a2(),
            a2(),
            a4(),
            small(),
            name(),
            proptest::option::of(name())
        )
            .prop_map(
                |(out_channels, kernel, stride, padding, groups, weight, bias)| Op::Conv2d {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                    weight,
                    bias
                }
            ),
        (name(), name(), name(), name(), float()).prop_map(|(gamma, beta, mean, var, epsilon)| {
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            }
        }),
        (small(), name(), proptest::option::of(name())).prop_map(|(out_features, weight, bias)| {
            Op::Dense {
                out_features,
                weight,
                bias,
            }
        }),
        Just(Op::Flatten),
        proptest::collection::vec(small(), 0..4).prop_map(|s| Op::Reshape { shape: Shape(s) }),
        (a2(), a2(), a4()).prop_map(|(kernel, stride, padding)| Op::AvgPool {
            kernel,
            stride,
            padding
        }),
        Just(Op::GlobalAvgPool),
        (a2(), a2(), a4()).prop_map(|(kernel, stride, padding)| Op::MaxPool {
            kernel,
            stride,
            padding
        }),
        small().prop_map(|axis| Op::Concat { axis }),
        Just(Op::Add),
        float().prop_map(|factor| Op::Scale { factor }),
        Just(Op::Relu),
        Just(Op::Square),
        proptest::collection::vec(float(), 0..5).prop_map(|coeffs| Op::Poly { coeffs }),
        (
            prop_oneof![
                Just(Granularity::Layer),
                Just(Granularity::Channel),
                Just(Granularity::Element)
            ],
            name()
        )
            .prop_map(|(granularity, coeffs)| Op::Quadratic {
                granularity,
                coeffs
            }),
    ]
}

/// A random graph: nodes with random ops whose operands are earlier nodes
/// (arity need not match: the text form must carry invalid graphs too), a few
/// removed nodes (holes in the ids), random outputs and weights.
fn graph() -> impl Strategy<Value = Graph> {
    (
        name(),
        proptest::collection::vec(
            (
                op(),
                name(),
                proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            ),
            1..25,
        ),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        proptest::collection::btree_map(name(), proptest::collection::vec(1usize..4, 0..3), 0..4),
    )
        .prop_map(|(gname, nodes, outs, removed, weights)| {
            let mut g = Graph::new(gname);
            let mut ids: Vec<NodeId> = Vec::new();
            for (op, n, operands) in nodes {
                let ops: Vec<NodeId> = if ids.is_empty() {
                    Vec::new()
                } else {
                    operands.iter().map(|i| ids[i.index(ids.len())]).collect()
                };
                ids.push(g.add_node(n, op, &ops));
            }
            for r in removed {
                let id = ids[r.index(ids.len())];
                // Only remove nodes nobody uses, so no operand slot is left empty.
                if g.users(id).is_empty() && !g.inputs.contains(&id) {
                    g.graph.remove_node(id.index());
                }
            }
            let live: Vec<NodeId> = g.node_ids().collect();
            if !live.is_empty() {
                for o in outs {
                    g.add_output(live[o.index(live.len())]);
                }
            }
            for (w, dims) in weights {
                g.add_weight(w, Tensor::zeros(dims));
            }
            g
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_round_trip(g in graph()) {
        let text = print_graph(&g);
        prop_assert_eq!(g.to_string(), text.clone());
        let parsed = parse_graph(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.to_string(), text.clone());
        let back = parsed.into_graph(g.weights.clone()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(print_graph(&back), text);
        // Same nodes, names, ops and operands.
        prop_assert_eq!(back.node_ids().collect::<Vec<_>>(), g.node_ids().collect::<Vec<_>>());
        for id in g.node_ids() {
            let (a, b) = (g.node(id).unwrap(), back.node(id).unwrap());
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(format!("{:?}", a.op), format!("{:?}", b.op));
            prop_assert_eq!(g.operands(id), back.operands(id));
        }
        prop_assert_eq!(&back.inputs, &g.inputs);
        prop_assert_eq!(&back.outputs, &g.outputs);
    }
}

#[test]
fn weights_must_match_their_declarations() {
    let text =
        "graph \"g\"\ninputs [%0]\noutputs [%1]\nweight \"w\" : [2, 3]\nweight \"b\" : [2]\n\
                %0 = input \"x\" () {shape = [3], mean = [0.0], std = [1.0]}\n\
                %1 = dense \"fc\" (%0) {out_features = 2, weight = \"w\", bias = \"b\"}\n";
    let parsed = parse_graph(text).unwrap();
    let mut w = std::collections::BTreeMap::new();
    w.insert("w".to_string(), Tensor::zeros(vec![3, 2]));
    let errs = parsed.clone().into_graph(w.clone()).unwrap_err();
    assert_eq!(errs.len(), 2);
    assert!(matches!(&errs[0], BindError::Missing(n) if n == "b"));
    assert!(matches!(&errs[1], BindError::Shape { name, .. } if name == "w"));
    w.insert("w".to_string(), Tensor::zeros(vec![2, 3]));
    w.insert("b".to_string(), Tensor::zeros(vec![2]));
    let g = parsed.into_graph(w).unwrap();
    hecc_ir::tensor::verify(&g).unwrap();
    // The printed form now carries the inferred shapes as annotations.
    let printed = print_graph(&g);
    assert!(
        printed.contains(
            "%1 = dense \"fc\" (%0) {out_features = 2, weight = \"w\", bias = \"b\"} : [2]"
        ),
        "{printed}"
    );
}
