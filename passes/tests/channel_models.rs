//! Channel-layout lowering + management of the reference models, checked against the tensor
//! evaluator: the plaintext simulation of the managed HE circuit, fed slot vectors packed as the
//! input layout says, must equal the model's output for every image side by side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::he::{verify, Module, Op as HeOp, VerifyOptions};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op, Tensor};
use hecc_passes::he::{depth_of, manage, RescalePolicy};
use hecc_passes::lower::channel::{lower_channel, pack_channel, ChannelOptions, PackChannels};
use hecc_passes::lower::LowerOptions;
use std::path::PathBuf;

fn model(name: &str) -> Graph {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name);
    hecc_ir::front::load_model(&p).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn pseudo_random(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

struct Checked {
    depth: u32,
    packed: u64,
    worst: f64,
    rotations: usize,
    steps: usize,
    images: u32,
}

fn rotations(m: &Module) -> (usize, usize) {
    let mut steps = std::collections::BTreeSet::new();
    let mut n = 0;
    for v in m.ids() {
        if let Some(HeOp::Rotate { steps: k }) = m.node(v).map(|n| &n.op) {
            n += 1;
            steps.insert(*k);
        }
    }
    (n, steps.len())
}

/// Lowers in the channel layout with `slots` slots and up to `want_images` images, manages,
/// simulates on random images and compares with the tensor evaluator.
fn check(g: &Graph, slots: u32, want_images: u32, budget: Option<u64>) -> Checked {
    check_packed(g, slots, want_images, budget, PackChannels::default())
}

fn check_packed(
    g: &Graph,
    slots: u32,
    want_images: u32,
    budget: Option<u64>,
    pack: PackChannels,
) -> Checked {
    let Op::Input { shape, .. } = &g.node(g.inputs[0]).unwrap().op else {
        panic!("no input")
    };
    let mut opts = ChannelOptions::new(LowerOptions {
        batch: want_images,
        slots,
        log_scale: 40.0,
        activations: Default::default(),
    });
    if let Some(b) = budget {
        opts.plaintext_budget = b;
    }
    opts.pack = pack;
    let low = lower_channel(g, &opts).unwrap_or_else(|e| panic!("{}: {e:?}", g.name));
    let images = low.images as usize;
    assert!(images >= 1);
    let per = shape.numel();
    let data = pseudo_random(11, images * per);
    let mut dims = vec![images];
    dims.extend_from_slice(shape);
    let x = Tensor::from_shape_vec(dims, data.clone()).unwrap();
    let want = eval_batch(g, &[x]).unwrap();

    let m = manage(&low.lowered.module, RescalePolicy::Waterline, None).unwrap();
    verify(&m, &VerifyOptions::STRUCTURE).unwrap_or_else(|e| panic!("{e:?}"));
    let imgs: Vec<&[f64]> = (0..images).map(|b| &data[b * per..(b + 1) * per]).collect();
    let outs = interpret(&m, |_, index, layout, n| {
        pack_channel(layout, n, &imgs, index)
    })
    .unwrap();
    let want = &want[0];
    let name = &low.outputs[0].name;
    let n_out = want.len() / images;
    let mut worst = 0.0f64;
    for b in 0..images {
        let got = low.unpack(&outs, name, b as u32).expect("output elements");
        assert_eq!(got.len(), n_out);
        for (k, g_) in got.iter().enumerate() {
            let w = want.as_slice().unwrap()[b * n_out + k];
            worst = worst.max((g_ - w).abs() / w.abs().max(1.0));
        }
    }
    let (rotations, steps) = rotations(&m);
    let scale = want.iter().fold(0.0f64, |a, &w| a.max(w.abs()));
    eprintln!(
        "{}: {:?}, largest |output| {scale:e}, {} HE nodes",
        g.name,
        low.stats,
        m.len()
    );
    Checked {
        depth: depth_of(&m),
        packed: low.stats.packed_channels,
        worst,
        rotations,
        steps,
        images: low.images,
    }
}

#[test]
fn cryptonets_channel_matches_the_tensor_model() {
    let g = model("cryptonets.yaml");
    let c = check(&g, 2048, 2, None);
    eprintln!(
        "cryptonets channel: {} images, depth {}, {} rotations ({} steps), max relative error {:e}",
        c.images, c.depth, c.rotations, c.steps, c.worst
    );
    assert_eq!(c.images, 2);
    assert!(c.worst < 1e-6, "relative error {}", c.worst);
    assert!(c.rotations > 0);
}

#[test]
fn cryptonets_channel_with_shared_masks_matches() {
    // A zero plaintext budget forces the two-level shared-mask form for the padded convolution.
    let g = model("cryptonets.yaml");
    let c = check(&g, 1024, 1, Some(0));
    eprintln!(
        "cryptonets channel (shared masks): depth {}, {} rotations, max relative error {:e}",
        c.depth, c.rotations, c.worst
    );
    assert!(c.worst < 1e-6, "relative error {}", c.worst);
}

#[test]
fn lenet5_channel_matches_the_tensor_model() {
    let g = model("lenet5.yaml");
    let c = check(&g, 2048, 2, None);
    eprintln!(
        "lenet5 channel: {} images, depth {}, {} rotations ({} steps), max relative error {:e}",
        c.images, c.depth, c.rotations, c.steps, c.worst
    );
    assert!(c.worst < 1e-6, "relative error {}", c.worst);
    assert!(c.rotations > 0);
}

#[test]
fn squeezenet_channel_matches_the_tensor_model() {
    let g = model("squeezenet.yaml");
    let c = check(&g, 2048, 2, None);
    eprintln!(
        "squeezenet channel: {} images, depth {}, {} rotations ({} steps), max relative error {:e}",
        c.images, c.depth, c.rotations, c.steps, c.worst
    );
    assert!(c.worst < 1e-6, "relative error {}", c.worst);
    assert!(c.rotations > 0);
}

#[test]
fn channel_layout_with_images_prints_parses_and_packs() {
    let g = model("cryptonets.yaml");
    let low = lower_channel(
        &g,
        &ChannelOptions::new(LowerOptions {
            batch: 3,
            slots: 4096,
            log_scale: 40.0,
            activations: Default::default(),
        }),
    )
    .unwrap();
    assert_eq!((low.images, low.image_stride), (3, 1024));
    let text = low.lowered.module.to_string();
    assert!(
        text.contains("images=3, image_stride=1024"),
        "layout line missing"
    );
    let back = hecc_ir::text::he_parse::parse_module(&text).unwrap();
    let layouts: Vec<_> = back.layouts().map(|(_, _, l)| l.clone()).collect();
    assert_eq!(layouts[0], low.input_layout);
    // The output's slot layout: the 10 logits of each of the 3 images.
    let out = back.output_layout("fc2", 0).expect("output layout");
    assert_eq!(out.elements(), 10);
    assert_eq!(out.max_images(), Some(3));
    assert_eq!(layouts.len(), 2);
    // Image 1, pixel (2, 5) of channel 0 lands in slot 1024 + 2 * 28 + 5.
    let imgs: Vec<Vec<f64>> = (0..3)
        .map(|i| (0..784).map(|k| (i * 1000 + k) as f64).collect())
        .collect();
    let refs: Vec<&[f64]> = imgs.iter().map(Vec::as_slice).collect();
    let v = pack_channel(&low.input_layout, 4096, &refs, 0).unwrap();
    assert_eq!(v[1024 + 2 * 28 + 5], 1000.0 + 61.0);
    assert_eq!(v[3 * 1024], 0.0);
    assert!(pack_channel(&low.input_layout, 2048, &refs, 0).is_none());
}

/// ResNet-20 (CIFAR-10 shapes, 19 ReLUs, residual additions, stride-2 stages) lowered with and
/// without channel packing: both circuits, simulated, compute the model with its ReLUs replaced
/// by the same polynomial; packing puts 4 channels of the 16x16 stage and 16 of the 8x8 stage
/// in each ciphertext, so the circuit shrinks.
#[test]
fn resnet20_channel_packs_the_strided_stages_and_matches_the_approximated_model() {
    use hecc_passes::approx::{tensor::eval_approx, ActivationApprox, ReluMethod};
    use hecc_passes::lower::ActivationPolicy;
    let g = model("resnet20.yaml");
    let a = ActivationApprox::relu(&ReluMethod::Chebyshev { degree: 7 }, 64.0).unwrap();
    let (images, per) = (2usize, 3 * 32 * 32);
    let data = pseudo_random(5, images * per);
    let x = Tensor::from_shape_vec(vec![images, 3, 32, 32], data.clone()).unwrap();
    let want = eval_approx(&g, &[x], |_| Some(&a))
        .unwrap()
        .outputs
        .remove(0);
    let want = want.as_slice().unwrap();
    let imgs: Vec<&[f64]> = (0..images).map(|b| &data[b * per..(b + 1) * per]).collect();
    let mut nodes = Vec::new();
    for pack in [PackChannels::Never, PackChannels::Free] {
        let mut opts = ChannelOptions::new(LowerOptions {
            batch: images as u32,
            slots: 2048,
            log_scale: 40.0,
            activations: ActivationPolicy {
                relu: Some(a.clone()),
                ..Default::default()
            },
        });
        opts.pack = pack;
        let low = lower_channel(&g, &opts).unwrap();
        assert_eq!(low.images, 2);
        if pack == PackChannels::Free {
            // 32 channels in 8 ciphertexts and 64 in 4, at every packing point.
            assert!(low.stats.packed_channels > 0);
            assert_eq!(
                low.stats.packed_channels / low.stats.packed_forms,
                (32 * 8 + 64 * 8) / (8 * 8 + 4 * 8),
                "{:?}",
                low.stats
            );
        } else {
            assert_eq!(low.stats.packed_channels, 0);
        }
        let m = manage(&low.lowered.module, RescalePolicy::Waterline, None).unwrap();
        verify(&m, &VerifyOptions::STRUCTURE).unwrap_or_else(|e| panic!("{e:?}"));
        let outs = interpret(&m, |_, index, layout, n| {
            pack_channel(layout, n, &imgs, index)
        })
        .unwrap();
        let name = &low.outputs[0].name;
        let mut worst = 0.0f64;
        for b in 0..images {
            let got = low.unpack(&outs, name, b as u32).expect("output elements");
            assert_eq!(got.len(), 10);
            for (k, v) in got.iter().enumerate() {
                let w = want[b * 10 + k];
                worst = worst.max((v - w).abs() / w.abs().max(1.0));
            }
        }
        eprintln!(
            "resnet20 channel (pack {pack:?}): {} HE nodes, {:?}, max relative error {worst:e}",
            m.len(),
            low.stats
        );
        assert!(worst < 1e-6, "pack {pack:?}: relative error {worst}");
        nodes.push(m.len());
    }
    assert!(
        nodes[1] * 3 < nodes[0] * 2,
        "packing should shrink the circuit: {nodes:?}"
    );
}

/// Packing wherever there is room (masking parts first where their coefficients are uniform:
/// pooled sums, unpadded convolutions) computes the same models.
#[test]
fn reference_models_packed_everywhere_match_the_tensor_model() {
    for name in ["lenet5.yaml", "squeezenet.yaml", "cryptonets.yaml"] {
        let g = model(name);
        let always = check_packed(&g, 2048, 2, None, PackChannels::Always);
        eprintln!(
            "{name} packed everywhere: depth {}, max relative error {:e}",
            always.depth, always.worst
        );
        assert!(
            always.worst < 1e-6,
            "{name}: relative error {}",
            always.worst
        );
        if name != "cryptonets.yaml" {
            assert!(always.packed > 0, "{name}: nothing was packed");
        }
    }
}

/// A model whose output is a packed feature map (a strided residual block with no head): the
/// output is split back into one ciphertext per channel, laid out for the client.
#[test]
fn a_packed_feature_map_output_is_split_back_into_channels() {
    use hecc_ir::tensor::{Normalization, Shape};
    let mut g = Graph::new("strided_block");
    let x = g.add_node(
        "x",
        Op::Input {
            shape: Shape::from([2, 8, 8]),
            norm: Normalization::default(),
        },
        &[],
    );
    let conv = |g: &mut Graph, name: &str, stride: usize, input| {
        g.add_node(
            name,
            Op::Conv2d {
                out_channels: 4,
                kernel: [3, 3],
                stride: [stride, stride],
                padding: [1, 1, 1, 1],
                groups: 1,
                weight: format!("{name}.weight"),
                bias: Some(format!("{name}.bias")),
            },
            &[input],
        )
    };
    let c1 = conv(&mut g, "c1", 2, x);
    let sq = g.add_node("sq", Op::Square, &[c1]);
    let c2 = conv(&mut g, "c2", 1, sq);
    let add = g.add_node("add", Op::Add, &[c2, sq]);
    g.add_output(add);
    for (name, c_in, seed) in [("c1", 2, 3), ("c2", 4, 4)] {
        let w: Vec<f64> = pseudo_random(seed, 4 * c_in * 9)
            .iter()
            .map(|v| v - 0.5)
            .collect();
        g.add_weight(
            format!("{name}.weight"),
            Tensor::from_shape_vec(vec![4, c_in, 3, 3], w).unwrap(),
        );
        g.add_weight(
            format!("{name}.bias"),
            Tensor::from_shape_vec(vec![4], pseudo_random(seed + 10, 4)).unwrap(),
        );
    }
    let c = check(&g, 256, 2, None);
    assert!(c.worst < 1e-9, "relative error {}", c.worst);
    let low = lower_channel(
        &g,
        &ChannelOptions::new(LowerOptions {
            batch: 2,
            slots: 256,
            log_scale: 40.0,
            activations: Default::default(),
        }),
    )
    .unwrap();
    assert_eq!(low.stats.packed_channels, 8, "{:?}", low.stats);
    // Four output ciphertexts, one channel each, each with a layout the client can read.
    let outs: Vec<u32> = low.outputs[0].elems.iter().map(|e| e.0).collect();
    assert_eq!(outs.iter().max(), Some(&3));
    for i in 0..4 {
        assert!(
            low.lowered.module.output_layout("add", i).is_some(),
            "output {i}"
        );
    }
}
