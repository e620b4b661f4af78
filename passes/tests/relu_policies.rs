//! Every ReLU policy lowered in the batch layout and simulated: the circuit computes the
//! approximation it was built from (checked against the approximation evaluated in plaintext).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::tensor::{Graph, Normalization, Op, Shape, Tensor};
use hecc_passes::approx::{ActivationApprox, ReluMethod, Surrogate};
use hecc_passes::he::{manage, RescalePolicy};
use hecc_passes::lower::{lower_batch, ActivationPolicy, LowerOptions};

fn model() -> (Graph, Vec<f64>, Vec<f64>) {
    let mut g = Graph::new("relu_net");
    let x = g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([4]),
            norm: Normalization::default(),
        },
        &[],
    );
    let d = g.add_node(
        "fc",
        Op::Dense {
            out_features: 3,
            weight: "fc.weight".into(),
            bias: Some("fc.bias".into()),
        },
        &[x],
    );
    let r = g.add_node("act", Op::Relu, &[d]);
    let h = g.add_node(
        "head",
        Op::Dense {
            out_features: 2,
            weight: "head.weight".into(),
            bias: None,
        },
        &[r],
    );
    g.add_output(h);
    let w1 = vec![
        0.9, -1.2, 0.4, 0.7, -0.5, 0.8, 1.1, -0.3, 0.2, 0.6, -0.9, 1.3,
    ];
    let b1 = vec![0.1, -0.2, 0.05];
    let w2 = vec![1.0, -0.7, 0.5, 0.3, 0.8, -1.1];
    g.add_weight(
        "fc.weight",
        Tensor::from_shape_vec(vec![3, 4], w1.clone()).unwrap(),
    );
    g.add_weight(
        "fc.bias",
        Tensor::from_shape_vec(vec![3], b1.clone()).unwrap(),
    );
    g.add_weight(
        "head.weight",
        Tensor::from_shape_vec(vec![2, 3], w2.clone()).unwrap(),
    );
    let mut w = w1;
    w.extend(b1);
    (g, w, w2)
}

#[test]
#[allow(clippy::needless_range_loop)] // `b` indexes every input element's slots
fn every_relu_policy_computes_its_approximation() {
    let (g, w1b1, w2) = model();
    let batch = 8;
    let inputs: Vec<Vec<f64>> = (0..4)
        .map(|k| {
            (0..batch)
                .map(|b| ((k * 7 + b * 3) % 11) as f64 / 5.0 - 1.0)
                .collect()
        })
        .collect();
    for method in [
        ReluMethod::Square,
        ReluMethod::LeastSquares { degree: 8 },
        ReluMethod::Chebyshev { degree: 16 },
        ReluMethod::Taylor {
            degree: 6,
            surrogate: Surrogate::Softplus,
        },
        ReluMethod::CryptoDl { degree: 4 },
        ReluMethod::Minimax {
            alpha: 8.0,
            degrees: vec![],
        },
        ReluMethod::Minimax {
            alpha: 10.0,
            degrees: vec![15, 15, 27],
        },
    ] {
        let a = ActivationApprox::relu(&method, 4.0).unwrap();
        let opts = LowerOptions {
            batch: batch as u32,
            slots: batch as u32,
            log_scale: 40.0,
            activations: ActivationPolicy {
                relu: Some(a.clone()),
                max: None,
                ..Default::default()
            },
        };
        let lowered = lower_batch(&g, &opts).unwrap_or_else(|e| panic!("{method:?}: {e:?}"));
        let m = manage(&lowered.module, RescalePolicy::Waterline, None)
            .unwrap_or_else(|e| panic!("{method:?}: {e:?}"));
        let outs = interpret(&m, |_, index, _, _| Some(inputs[index as usize].clone())).unwrap();
        for o in outs {
            for b in 0..batch {
                let hidden: Vec<f64> = (0..3)
                    .map(|j| {
                        a.eval(
                            (0..4).map(|k| w1b1[j * 4 + k] * inputs[k][b]).sum::<f64>()
                                + w1b1[12 + j],
                        )
                    })
                    .collect();
                let want: f64 = (0..3)
                    .map(|j| w2[o.index as usize * 3 + j] * hidden[j])
                    .sum();
                let got = o.slots[b];
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{method:?}: {got} vs {want}"
                );
            }
        }
    }
}
