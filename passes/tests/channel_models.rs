//! Channel-layout lowering + management of the reference models, checked against the tensor
//! evaluator: the plaintext simulation of the managed HE circuit, fed slot vectors packed as the
//! input layout says, must equal the model's output for every image side by side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::he::{verify, Module, Op as HeOp, VerifyOptions};
use hecc_ir::tensor::eval::eval_batch;
use hecc_ir::tensor::{Graph, Op, Tensor};
use hecc_passes::he::{depth_of, manage, RescalePolicy};
use hecc_passes::lower::channel::{lower_channel, pack_channel, ChannelOptions};
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
