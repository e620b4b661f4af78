//! End to end in the `channel` layout (slot = pixel, one ciphertext per channel, images side by
//! side): compile, keygen, encrypt (packing from the plan's input layout), run, decrypt
//! (unpacking from the output layouts), compared with the plaintext model on every image.
//! Small insecure parameters keep the tests fast.
//! Run with `cargo test --release --test e2e_channel` (the debug profile is slow).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

mod common;

use common::{mnist, root};

use hecc::compile::{compile, write_plan, CompileOptions};
use hecc::run::*;
use hecc_ir::he::{verify, Layout, VerifyOptions};
use hecc_passes::params::Security;
use std::path::Path;

/// Channel layout at N = 2^13 (4096 slots: four 28x28 images at a stride of 1024 slots).
fn channel_opts() -> CompileOptions {
    CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 13,
        layout: hecc::compile::LayoutChoice::Channel,
        ..Default::default()
    }
}

/// `hecc infer` in the channel layout: argmax agreement on every image and a bounded error.
fn check_infer(model: &str, images: &Path, labels: &Path, batch: usize, runs: usize) {
    let opts = InferOptions {
        compile: channel_opts(),
        batch: Some(batch),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let rep = infer(
        &root().join("models").join(model),
        images,
        Some(labels),
        &opts,
    )
    .unwrap_or_else(|e| panic!("{model}: {e:?}"));
    eprintln!("{}", render_infer(&rep));
    let v = rep.verification.as_ref().expect("verification requested");
    assert_eq!(rep.images, batch, "{model}: images run");
    // Four 28x28 images fit the 4096 slots at a stride of 1024.
    assert_eq!(rep.batch, 4, "{model}: images per run");
    assert_eq!(rep.runs, runs, "{model}: runs of the plan");
    assert_eq!(v.output.values, batch * rep.logits.classes);
    common::assert_matches_plaintext(model, v, batch, 1e-4);
}

#[test]
fn cryptonets_channel_infer_matches_plaintext() {
    let (images, labels) = mnist();
    check_infer("cryptonets.yaml", &images, &labels, 4, 1);
}

#[test]
fn cryptonets_channel_infer_runs_several_groups() {
    // 11 images, four per run: `infer` runs the plan three times with one key set and
    // reports every image (logits, agreement and per-stage errors over all runs).
    let (images, labels) = mnist();
    check_infer("cryptonets.yaml", &images, &labels, 11, 3);
}

/// Encrypts, runs and decrypts `count` images in groups of the plan's batch (several runs) with
/// the library's client/server functions; returns (images agreeing with the plaintext argmax,
/// max |error|, largest |logit|).
fn run_in_groups(opts: &CompileOptions, count: usize) -> (usize, f64, f64) {
    let model = root().join("models/cryptonets.yaml");
    let c = compile(&model, opts).unwrap();
    let s = Session::with_security(c.plan, true).unwrap();
    verify(s.module(), &VerifyOptions::STRICT).unwrap_or_else(|e| panic!("{e:?}"));
    let keys = generate_keys(&s).unwrap();
    let g = hecc_ir::front::load_model(&model).unwrap();
    let all = load_images(&mnist().0, s.input().unwrap()).unwrap();
    let per = all.per_image;
    let group = s.plan.batch as usize;
    let (mut agree, mut err, mut top) = (0, 0.0f64, 0.0f64);
    let mut start = 0;
    while start < count {
        let n = group.min(count - start);
        let chunk = Images {
            count: n,
            per_image: per,
            data: all.data[start * per..(start + n) * per].to_vec(),
        };
        let mut enc = ClientEncryptor::secret(&s, &keys.secret).unwrap();
        let x = encrypt_images(&s, &chunk, &mut enc).unwrap();
        let (o, _) = run_inputs(
            &s,
            x,
            &keys.eval,
            &RunOptions {
                progress: None,
                memory_limit: None,
                ..Default::default()
            },
        )
        .unwrap();
        let logits = decrypt_outputs(&o, &keys.secret).unwrap();
        let xt = hecc_ir::tensor::Tensor::from_shape_vec(vec![n, 1, 28, 28], chunk.data).unwrap();
        let want = hecc_ir::tensor::eval::eval_batch(&g, &[xt]).unwrap();
        let want: Vec<f64> = want[0].iter().copied().collect();
        for (a, b) in want.iter().zip(&logits.values) {
            err = err.max((a - b).abs());
            top = top.max(a.abs());
        }
        agree += argmax_rows(&want, 10)
            .iter()
            .zip(logits.predictions())
            .filter(|(a, b)| **a == *b)
            .count();
        start += n;
    }
    (agree, err, top)
}

#[test]
fn cryptonets_channel_several_runs_agree_on_every_image() {
    // 11 images at four per run: two full runs and a partial one.
    let (agree, err, top) = run_in_groups(&channel_opts(), 11);
    eprintln!("channel, 11 images in 3 runs: agreement {agree}/11, max |err| {err:.3e} (logits up to {top:.3e})");
    assert_eq!(agree, 11);
    assert!(err < 1e-4 * top.max(1.0), "max error {err}");
}

#[test]
fn cryptonets_channel_at_128_bit_parameters() {
    // About 30 s on 2 cores.
    // N = 2^14: eight images per run, 64 images in 8 runs.
    let opts = CompileOptions {
        layout: hecc::compile::LayoutChoice::Channel,
        ..Default::default()
    };
    let (agree, err, top) = run_in_groups(&opts, 64);
    eprintln!("channel at 128 bits, 64 images in 8 runs: agreement {agree}/64, max |err| {err:.3e} ({:.1} bits; logits up to {top:.3e})", precision_bits(err));
    assert_eq!(agree, 64);
    assert!(err < 1e-4 * top.max(1.0), "max error {err}");
}

#[test]
fn cryptonets_channel_client_server_files() {
    let dir = std::env::temp_dir().join(format!("hecc-e2e-channel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let model = root().join("models/cryptonets.yaml");
    let c = compile(&model, &channel_opts()).unwrap();
    assert_eq!(c.plan.layout.name(), "channel");
    assert_eq!(c.plan.batch, 4, "four 1024-slot images in 4096 slots");
    let plan = dir.join("plan.json");
    write_plan(&c.plan, &plan).unwrap();
    let s = Session::open_with_security(&plan, true).unwrap();
    // The managed circuit satisfies the run-time invariants: operands of every op at one level,
    // additive operands (plaintexts included) at one scale.
    verify(s.module(), &VerifyOptions::STRICT).unwrap_or_else(|e| panic!("{e:?}"));
    // The input layout: one ciphertext per channel; the output layout: the 10 logits.
    let (v, _, _) = s.module().inputs()[0];
    let input = s
        .module()
        .layout(s.module().ty(v).unwrap().layout())
        .unwrap();
    assert!(matches!(
        input,
        Layout::Channel {
            channels: 1,
            height: 28,
            width: 28,
            images: 4,
            ..
        }
    ));
    let outs = s.module().outputs();
    let elements: u64 = outs
        .iter()
        .map(|(_, n, i)| s.module().output_layout(n, *i).unwrap().elements())
        .sum();
    assert_eq!(elements, 10);

    let keys = generate_keys(&s).unwrap();
    let (images, _) = mnist();
    let all = load_images(&images, s.input().unwrap()).unwrap();
    let mut enc = ClientEncryptor::secret(&s, &keys.secret).unwrap();
    // More images than the plan packs: a clear error with the maximum.
    let e = encrypt_images(&s, &all.take(5), &mut enc)
        .err()
        .expect("5 images do not fit");
    assert!(
        format!("{e}").contains("plan's batch of 4"),
        "unexpected error: {e}"
    );
    // Fewer images than the plan packs are fine; use 3 to check the partial batch.
    let batch = all.take(3);
    let x = encrypt_images(&s, &batch, &mut enc).unwrap();
    assert_eq!(x.cts.len(), 1, "one input channel, one ciphertext");
    let cts = dir.join("x.ct");
    hecc::compile::write_atomic(&cts, &inputs_bytes(&s, &x).unwrap()).unwrap();
    let inputs = read_inputs(&s, &cts).unwrap();
    let (outs, _) = run_inputs(
        &s,
        inputs,
        &keys.eval,
        &RunOptions {
            progress: None,
            memory_limit: None,
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.join("y.ct");
    hecc::compile::write_atomic(&out, &outputs_bytes(&outs).unwrap()).unwrap();
    let o = read_outputs(&out).unwrap();
    let logits = decrypt_outputs(&o, &keys.secret).unwrap();
    assert_eq!((logits.images, logits.classes), (3, 10));

    let g = hecc_ir::front::load_model(&model).unwrap();
    let xt = hecc_ir::tensor::Tensor::from_shape_vec(vec![3, 1, 28, 28], batch.data).unwrap();
    let want = hecc_ir::tensor::eval::eval_batch(&g, &[xt]).unwrap();
    let want: Vec<f64> = want[0].iter().copied().collect();
    let err = want
        .iter()
        .zip(&logits.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let top = want.iter().map(|a| a.abs()).fold(1.0, f64::max);
    eprintln!("channel file flow: max |err| {err:.3e} against logits up to {top:.3e}");
    assert!(
        err < 1e-4 * top,
        "max error {err} against logits up to {top}"
    );
    assert_eq!(argmax_rows(&want, 10), logits.predictions());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outputs_unpack_by_layout_and_index() {
    // Two output values of "y" (3 elements each, two images side by side at a stride of 8),
    // given out of index order, and a batch-layout output "z" of one element.
    let l = Layout::Channel {
        channels: 1,
        height: 1,
        width: 3,
        offset: 1,
        c_stride: 3,
        y_stride: 3,
        x_stride: 2,
        images: 2,
        image_stride: 8,
    };
    let y0: Vec<f64> = (0..16).map(|s| s as f64).collect();
    let y1: Vec<f64> = (0..16).map(|s| 100.0 + s as f64).collect();
    let z: Vec<f64> = (0..16).map(|s| -(s as f64)).collect();
    let outs = vec![
        ("y".to_string(), 1, l.clone(), y1.as_slice()),
        ("z".to_string(), 0, Layout::BATCH, z.as_slice()),
        ("y".to_string(), 0, l, y0.as_slice()),
    ];
    let logits = unpack_outputs(&outs, 2).unwrap();
    assert_eq!((logits.images, logits.classes), (2, 7));
    // Image 0: y[0..3] from slots 1, 3, 5 of y0, y[3..6] from y1, then z from slot 0.
    assert_eq!(
        &logits.values[..7],
        &[1.0, 3.0, 5.0, 101.0, 103.0, 105.0, -0.0]
    );
    // Image 1: 8 slots further; z from slot 1.
    assert_eq!(
        &logits.values[7..],
        &[9.0, 11.0, 13.0, 109.0, 111.0, 113.0, -1.0]
    );
    // A third image has no slot in the channel layout.
    assert!(unpack_outputs(&outs, 3).is_err());
}

#[test]
fn inputs_pack_by_layout() {
    let l = Layout::Channel {
        channels: 1,
        height: 2,
        width: 2,
        offset: 0,
        c_stride: 4,
        y_stride: 4,
        x_stride: 1,
        images: 2,
        image_stride: 16,
    };
    // Two images of 2 channels of 2x2.
    let images = Images {
        count: 2,
        per_image: 8,
        data: (0..16).map(f64::from).collect(),
    };
    // Channel 1 of each image: values 4..8 and 12..16, rows 4 slots apart.
    let v = pack_input(&l, 1, &images, 32).unwrap();
    assert_eq!(&v[..6], &[4.0, 5.0, 0.0, 0.0, 6.0, 7.0]);
    assert_eq!(&v[16..22], &[12.0, 13.0, 0.0, 0.0, 14.0, 15.0]);
    assert_eq!(v.iter().filter(|&&x| x != 0.0).count(), 8);
    // Channel 2 does not exist; three images do not fit.
    assert!(pack_input(&l, 2, &images, 32).is_err());
    let three = Images {
        count: 3,
        per_image: 8,
        data: vec![1.0; 24],
    };
    assert!(pack_input(&l, 0, &three, 64)
        .unwrap_err()
        .to_string()
        .contains("at most 2 images"));
    // The batch layout: element k of image i in slot i.
    let v = pack_input(&Layout::BATCH, 5, &images, 4).unwrap();
    assert_eq!(v, vec![5.0, 13.0, 0.0, 0.0]);
    // A plan with sparse-slot bootstraps repeats the packed slots with its period; values
    // beyond the first period, or a period that does not divide the slots, are refused.
    let mut v = pack_input(&Layout::BATCH, 5, &images, 8).unwrap();
    repeat_slots(&mut v, 2).unwrap();
    assert_eq!(v, vec![5.0, 13.0, 5.0, 13.0, 5.0, 13.0, 5.0, 13.0]);
    let mut v = pack_input(&Layout::BATCH, 5, &images, 8).unwrap();
    assert!(matches!(
        repeat_slots(&mut v, 1),
        Err(PackError::OutsidePeriod { slot: 1, period: 1 })
    ));
    assert!(matches!(
        repeat_slots(&mut v, 3),
        Err(PackError::Period { .. })
    ));
}

#[test]
fn a_requested_batch_is_honoured_or_refused() {
    // 28x28 images take 1024 slots each: 20 of them need N = 2^16 (the depth alone needs
    // less), and 64 do not fit any ring of the 128-bit table.
    let model = root().join("models/lenet5.yaml");
    let opts = |batch| CompileOptions {
        layout: hecc::compile::LayoutChoice::Channel,
        batch: Some(batch),
        ..Default::default()
    };
    let c = compile(&model, &opts(20)).unwrap();
    assert_eq!(c.plan.batch, 20);
    assert_eq!(c.plan.params.log_n, 16);
    let err = compile(&model, &opts(64))
        .err()
        .expect("64 images cannot fit");
    let text = format!("{err:?}");
    assert!(text.contains("room for 32 images"), "{text}");
}

/// The Galois keys of a channel plan are made for the levels each step is used at (the
/// report's sizes say so), and a key set whose keys stop below those levels is refused
/// before a run with a message naming the step and both levels.
#[test]
fn galois_keys_span_the_levels_their_rotations_use() {
    use hecc_runtime::ckks::KeyGenerator;
    let compiled = compile(&root().join("models/cryptonets.yaml"), &channel_opts()).unwrap();
    let plan = compiled.plan;
    let s = Session::with_security(plan.clone(), true).unwrap();
    let keys = generate_keys(&s).unwrap();
    let top = s.ctx.max_level();
    let levels = rotation_key_levels(&s);
    assert_eq!(levels.len(), plan.rotation_steps.len());
    assert!(
        levels.iter().any(|&(_, l)| l < top),
        "CryptoNets rotates below the top level: {levels:?}"
    );
    for &(k, l) in &levels {
        let g = s.ctx.galois_element(k);
        assert_eq!(keys.eval.galois.top_level(g), Some(l), "step {k}");
    }
    // The report's key bytes are those of keys at these levels, below the whole chain's.
    let k = &plan.report.keys;
    assert!(k.galois_keys < k.relin_key * k.rotation_steps.len() as u64);
    // and exactly the keys made: memory holds both halves of what the report counts
    assert_eq!(keys.eval.galois.memory_bytes() as u64, 2 * k.galois_keys);
    keys.eval.check_covers(&s, "keys").unwrap();

    // Keys one level short of the highest use of some step: refused, naming it.
    let (step, need) = *levels.iter().max_by_key(|&&(_, l)| l).unwrap();
    assert!(need > 0);
    let short: Vec<(i64, usize)> = levels
        .iter()
        .map(|&(k, l)| (k, if k == step { l - 1 } else { l }))
        .collect();
    let mut kg = KeyGenerator::from_secret_key(&s.ctx, keys.secret.key.clone()).unwrap();
    let bad = EvalKeySet {
        galois: kg.galois_keys_to_levels(&short, None),
        ..keys.eval
    };
    let e = bad.check_covers(&s, "short keys").unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "rotation step {step} serves levels up to {}",
            need - 1
        )) && e.contains(&format!("level {need}")),
        "{e}"
    );
}
