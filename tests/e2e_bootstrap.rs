//! Deep circuits through bootstraps: an unmanaged circuit far deeper than the parameters'
//! levels is managed with bootstrap parameters (the manager refreshes a value when a product
//! would need a level below 0), checked, run on the CKKS backend with hecc's bootstrapper at
//! small, explicitly insecure parameters (N = 2^12), and compared with the plaintext reference
//! interpreter, with the error in bits; and a three-ReLU network compiled with bootstraps and
//! run through the client and server path against its plaintext references.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

mod common;

use common::{mlp, mlp_of_width, mnist};
use hecc::compile::{compile_graph, input_tensor, BootstrapMode, Calibration, CompileOptions};
use hecc::run::{infer_graph, load_images, InferOptions};
use hecc_ir::he::interp::interpret;
use hecc_ir::he::{
    verify, BootInfo, Layout, Level, LogScale, Meta, Module, Op, Params, ValueId, VerifyOptions,
};
use hecc_passes::he::{manage, ManageError, RescalePolicy};
use hecc_runtime::ckks::*;
use hecc_runtime::exec::{execute, BootEval, EvalKeys, ExecError, ExecOptions};
use std::collections::HashMap;
use std::sync::Arc;

const LOG_N: u32 = 12;
const SLOTS: usize = 1 << (LOG_N - 1);
/// Levels left to the circuit after a bootstrap.
const NETWORK_LEVELS: usize = 3;

struct Setup {
    ctx: Arc<Context>,
    bt: Bootstrapper,
    relin: RelinKey,
    galois: GaloisKeys,
    encapsulation: EncapsulationKeys,
    keygen: KeyGenerator,
}

fn setup() -> Setup {
    let cfg = BootstrapConfig::new(SLOTS);
    let params = bootstrap_parameters(LOG_N, NETWORK_LEVELS, 40, &cfg, false).unwrap();
    let ctx = Context::new(params).unwrap();
    let bt = Bootstrapper::new(&ctx, cfg).unwrap();
    let mut keygen = KeyGenerator::new_with_insecure_test_seed(&ctx, 17);
    // One relinearization key and one Galois set for the circuit and its bootstraps.
    let relin = keygen.relin_key();
    let galois = keygen.galois_keys(&bt.rotations(), true);
    let encapsulation = bt.generate_encapsulation_keys(&mut keygen).unwrap();
    Setup {
        ctx,
        bt,
        relin,
        galois,
        encapsulation,
        keygen,
    }
}

fn boot_info(bt: &Bootstrapper) -> BootInfo {
    BootInfo {
        out_level: Level(bt.output_level() as u32),
        in_log_scale: LogScale(bt.config().input_scale.log2()),
        out_log_scale: LogScale(bt.output_scale().log2()),
        depth: bt.config().depth() as u32,
        message_bound: bt.config().message_bound,
        slots: bt.config().slots as u32,
    }
}

fn data(seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..SLOTS)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// An unmanaged circuit of `rounds` quadratic activations `0.6 x^2 + 0.3 x - 0.2` on each of
/// two inputs, with a residual join every third round (`y + 0.3 x`), the two chains
/// multiplied together half way, and both written out. Every value stays in `[-1, 1]`.
fn deep_circuit(rounds: usize, boot: Option<BootInfo>) -> Module {
    let mut m = Module::new(Meta {
        name: "deep".into(),
        batch: SLOTS as u32,
        log_scale: LogScale(40.0),
    });
    m.boot = boot;
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let s = LogScale(40.0);
    let mut xs: Vec<ValueId> = (0..2)
        .map(|i| m.input("x", i, Level(0), s, SLOTS as u32, b).unwrap())
        .collect();
    for round in 0..rounds {
        for x in xs.iter_mut() {
            let sq = m.square(*x).unwrap();
            let sq = m.relinearize(sq).unwrap();
            let y = m.mac(&[(sq, 0.6), (*x, 0.3)], Some(-0.2), s).unwrap();
            *x = if round % 3 == 2 {
                let skip = m.mul_scalar(*x, 0.3, s).unwrap();
                m.add(y, skip).unwrap()
            } else {
                y
            };
        }
        if round == rounds / 2 {
            let p = m.mul(xs[0], xs[1]).unwrap();
            xs[0] = m.relinearize(p).unwrap();
        }
    }
    for (i, x) in xs.iter().enumerate() {
        m.output(*x, "y", i as u32).unwrap();
    }
    m
}

fn bootstraps(m: &Module) -> usize {
    m.ids()
        .filter(|&v| matches!(m.node(v).map(|n| &n.op), Some(Op::Bootstrap)))
        .count()
}

/// -log2 of the largest absolute error.
fn bits(got: &[f64], want: &[f64]) -> f64 {
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    -max.log2()
}

#[test]
fn a_circuit_six_times_deeper_than_the_chain_runs_through_bootstraps() {
    let s = setup();
    let info = boot_info(&s.bt);
    let src = deep_circuit(9, Some(info));
    let params = Params {
        log_n: LOG_N,
        primes: s.ctx.params().q().to_vec(),
    };
    let managed = manage(&src, RescalePolicy::Waterline, Some(&params)).unwrap();
    verify(&managed, &VerifyOptions::STRICT).unwrap();
    let n_boot = bootstraps(&managed);
    // Each round takes 2 levels and a bootstrap gives 3, on two chains.
    assert!(
        n_boot >= 10,
        "expected at least 10 bootstraps, the manager placed {n_boot}"
    );
    // Every bootstrap refreshes to the output level; the inputs start there too.
    for v in managed.ids() {
        let n = managed.node(v).unwrap();
        if matches!(n.op, Op::Bootstrap | Op::Input { .. }) {
            assert_eq!(n.ty.level(), info.out_level, "{v}");
        }
    }

    let inputs_plain: Vec<Vec<f64>> = (0..2).map(|i| data(3 + i)).collect();
    let want = interpret(&src, |_, i, _, _| Some(inputs_plain[i as usize].clone())).unwrap();
    // The managed circuit means the same (and passes the interpreter's bootstrap checks).
    let again = interpret(&managed, |_, i, _, _| {
        Some(inputs_plain[i as usize].clone())
    })
    .unwrap();
    for a in &want {
        let b = again
            .iter()
            .find(|b| b.name == a.name && b.index == a.index)
            .unwrap();
        let agree = bits(&a.slots, &b.slots);
        assert!(agree > 40.0, "{}[{}]: {agree:.1} bits", a.name, a.index);
    }

    let encoder = Encoder::new(&s.ctx);
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&s.ctx, s.keygen.secret_key(), 5);
    let mut inputs = HashMap::new();
    for (i, v) in inputs_plain.iter().enumerate() {
        let pt = encoder
            .encode(v, info.out_level.0 as usize, 2f64.powi(40))
            .unwrap();
        inputs.insert(("x".to_string(), i as u32), enc.encrypt(&pt).unwrap());
    }
    let eval = Evaluator::new(&s.ctx);
    let keys = EvalKeys {
        relin: Some(&s.relin),
        galois: Some(&s.galois),
        boot: Some(BootEval {
            bootstrapper: &s.bt,
            encapsulation: &s.encapsulation,
        }),
    };
    let run = execute(
        &managed,
        &eval,
        &encoder,
        keys,
        inputs,
        &ExecOptions::default(),
    )
    .unwrap();
    let dec = Decryptor::new(&s.ctx, s.keygen.secret_key());
    let mut worst = f64::INFINITY;
    for w in &want {
        let ct = run
            .outputs
            .iter()
            .find(|o| o.name == w.name && o.index == w.index)
            .map(|o| &o.ct)
            .unwrap();
        let got = encoder.decode(&dec.decrypt(ct).unwrap()).unwrap();
        let b = bits(&got, &w.slots);
        eprintln!(
            "output {}[{}]: {b:.1} bits after {n_boot} bootstraps",
            w.name, w.index
        );
        worst = worst.min(b);
    }
    assert!(worst > 10.0, "only {worst:.1} bits");
}

#[test]
fn bootstrapping_needs_its_parameters_and_its_keys() {
    let s = setup();
    let info = boot_info(&s.bt);
    let params = Params {
        log_n: LOG_N,
        primes: s.ctx.params().q().to_vec(),
    };
    // Without bootstrap parameters the same circuit does not fit the levels left to it.
    let network = Params {
        log_n: LOG_N,
        primes: s.ctx.params().q()[..=info.out_level.0 as usize].to_vec(),
    };
    let src = deep_circuit(4, None);
    assert!(matches!(
        manage(&src, RescalePolicy::Waterline, Some(&network)),
        Err(ManageError::NotEnoughLevels { .. })
    ));
    // A chain too short for the bootstrap's own levels is refused by name.
    let short = Params {
        log_n: LOG_N,
        primes: s.ctx.params().q()[..info.out_level.0 as usize + 2].to_vec(),
    };
    let src = deep_circuit(4, Some(info));
    assert!(matches!(
        manage(&src, RescalePolicy::Waterline, Some(&short)),
        Err(ManageError::NotEnoughLevels { .. })
    ));
    // The executor refuses to run bootstraps without a bootstrapper, and with one that
    // returns another level than the circuit was typed for.
    let managed = manage(&src, RescalePolicy::Waterline, Some(&params)).unwrap();
    assert!(bootstraps(&managed) > 0);
    let encoder = Encoder::new(&s.ctx);
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&s.ctx, s.keygen.secret_key(), 5);
    let mut inputs = || {
        let mut m = HashMap::new();
        for i in 0..2u32 {
            let pt = encoder
                .encode(
                    &data(u64::from(i)),
                    info.out_level.0 as usize,
                    2f64.powi(40),
                )
                .unwrap();
            m.insert(("x".to_string(), i), enc.encrypt(&pt).unwrap());
        }
        m
    };
    let eval = Evaluator::new(&s.ctx);
    let no_boot = EvalKeys {
        relin: Some(&s.relin),
        galois: Some(&s.galois),
        boot: None,
    };
    let err = execute(
        &managed,
        &eval,
        &encoder,
        no_boot,
        inputs(),
        &ExecOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ExecError::MissingBootstrapper { .. }),
        "{err}"
    );
    let mut other = managed.clone();
    other.boot = Some(BootInfo {
        out_level: Level(info.out_level.0 - 1),
        ..info
    });
    let keys = EvalKeys {
        boot: Some(BootEval {
            bootstrapper: &s.bt,
            encapsulation: &s.encapsulation,
        }),
        ..no_boot
    };
    let err = execute(
        &other,
        &eval,
        &encoder,
        keys,
        inputs(),
        &ExecOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::BootstrapperMismatch(_) | ExecError::Invalid(_)
        ),
        "{err}"
    );
}

#[test]
fn the_interpreter_refuses_a_bootstrap_outside_its_message_bound() {
    let info = BootInfo {
        out_level: Level(3),
        in_log_scale: LogScale(40.0),
        out_log_scale: LogScale(40.0),
        depth: 16,
        message_bound: 1.0,
        slots: SLOTS as u32,
    };
    let m = manage(&deep_circuit(4, Some(info)), RescalePolicy::Waterline, None).unwrap();
    verify(&m, &VerifyOptions::STRICT).unwrap();
    let big = interpret(&m, |_, _, _, _| Some(vec![4.0; SLOTS]));
    assert!(
        matches!(
            big,
            Err(hecc_ir::he::interp::InterpError::BootstrapRange { .. })
        ),
        "{big:?}"
    );
    // The text form keeps the bootstrap parameters and the op.
    let text = hecc_ir::text::print_module(&m, &hecc_ir::text::PrintOptions::default());
    assert!(text.contains("boot {level = 3"), "{text}");
    let back = hecc_ir::text::parse_module(&text).unwrap();
    assert_eq!(back.boot, m.boot);
    assert_eq!(bootstraps(&back), bootstraps(&m));
    verify(&back, &VerifyOptions::STRICT).unwrap();
}

/// Options for a bootstrapped compile of `g` at small insecure parameters, every activation's
/// range calibrated on 32 images.
fn network_options(g: &hecc_ir::tensor::Graph, layout: &str) -> CompileOptions {
    let spec = input_tensor(g).unwrap();
    let images = load_images(&mnist().0, &spec).unwrap().take(32);
    let mut dims = vec![images.count];
    dims.extend_from_slice(&spec.shape);
    CompileOptions {
        security: hecc_passes::params::Security::InsecureNone,
        min_log_n: 12,
        layout: layout.parse().unwrap(),
        activation: Some(hecc::compile::ActivationChoice::parse("minimax:15,15,27").unwrap()),
        calibration: Some(Calibration {
            samples: hecc_ir::tensor::Tensor::from_shape_vec(dims, images.data).unwrap(),
            margin: 0.1,
        }),
        bootstrap: BootstrapMode::Always,
        ..Default::default()
    }
}

/// Compiles `g` with bootstraps, runs it encrypted on four MNIST images with verification, and
/// checks the output against the plaintext model of the same polynomials.
fn bootstrapped_network_matches_its_reference(g: &hecc_ir::tensor::Graph) {
    let name = g.name.clone();
    let opts = network_options(g, "batch");
    let plan = compile_graph(g, &opts).unwrap().plan;
    let b = plan.params.bootstrap.clone().expect("a bootstrapped plan");
    let n_boot = bootstraps(&plan.circuit);
    let depth = plan.report.fusion.as_ref().map_or(0, |f| f.depth);
    eprintln!(
        "{name} batch: depth {depth} without bootstraps, {} levels between bootstraps, {n_boot} bootstraps, bound {}",
        b.network_levels, b.message_bound
    );
    assert!(depth > b.network_levels, "the circuit must need bootstraps");
    assert!(n_boot > 0);
    assert_eq!(plan.report.totals.bootstraps, n_boot as u64);
    // Both placements were tried; the plan keeps the one with fewer bootstraps.
    let pl = plan
        .report
        .bootstrap_placement
        .clone()
        .expect("a placement summary");
    eprintln!(
        "{name} batch: greedy {:?} bootstraps, planned {:?} (cuts {:?}), {} kept",
        pl.greedy, pl.planned, pl.cuts, pl.chosen
    );
    let greedy = pl.greedy.expect("the greedy rule manages this network");
    assert!(n_boot as u64 <= greedy);
    assert_eq!(
        n_boot as u64,
        if pl.chosen == "planned" {
            pl.planned.expect("a planned count")
        } else {
            greedy
        }
    );
    // The report prices the bootstrapping keys.
    let keys = plan.report.keys.bootstrap.as_ref().expect("bootstrap keys");
    assert!(keys.galois_keys > 0 && keys.key_switches > 0);
    let run = InferOptions {
        compile: opts,
        batch: Some(4),
        verify: true,
        progress: None,
        memory_limit: None,
        no_memory_check: false,
        ..Default::default()
    };
    let (images, labels) = mnist();
    let rep = infer_graph(g, &images, Some(&labels), &run).unwrap();
    let v = rep.verification.as_ref().unwrap();
    let scale = v.output.max_abs_value.max(1.0);
    let err = v.output.max_abs_error;
    eprintln!(
        "{name} batch: output error {err:.3e} (values up to {scale:.2}), argmax agreement {}/4",
        v.argmax_agree
    );
    assert!(err.is_finite() && err < 1e-2 * scale, "output error {err}");
    assert_eq!(v.argmax_agree, 4);
}

#[test]
fn a_two_relu_network_compiles_with_bootstraps_and_runs_encrypted() {
    // Two ReLU layers of two units: about 30 levels of minimax polynomials against the 10 that
    // the insecure test chain leaves between bootstraps, so every path is refreshed.
    bootstrapped_network_matches_its_reference(&mlp_of_width(2, 2));
}

#[test]
#[ignore = "slow: hundreds of bootstraps, several minutes on 2 cores"]
fn a_three_relu_network_compiles_with_bootstraps_and_runs_encrypted() {
    bootstrapped_network_matches_its_reference(&mlp(3));
}

#[test]
fn a_batch_that_spans_few_slots_bootstraps_only_those() {
    // At N = 2^12 (2,048 slots) four images in the batch layout span 4 slots and one image in
    // the channel layout 1,024 (a 28x28 channel on a 32-wide grid): the plans bootstrap 8 and
    // 1,024 slots, repeated across the ring by the client, and run as the full-slot plans do.
    let g = mlp_of_width(2, 2);
    let (images, labels) = mnist();
    for (layout, batch, period) in [("batch", 4usize, 8usize), ("channel", 1, 1024)] {
        let mut opts = network_options(&g, layout);
        opts.batch = Some(batch as u32);
        let sparse = compile_graph(&g, &opts).unwrap().plan;
        let slots = 1usize << (sparse.params.log_n - 1);
        assert_eq!(slots, 2048, "{layout}");
        assert_eq!(sparse.slot_period(), Some(period), "{layout}");
        assert_eq!(
            sparse.circuit.boot.as_ref().map(|b| b.slots as usize),
            Some(period)
        );
        assert_eq!(sparse.batch as usize, batch);
        // The sparse bootstraps' keys: the SubSum rotations by period, 2 period, .., N/4.
        let keys = sparse
            .report
            .keys
            .bootstrap
            .as_ref()
            .expect("bootstrap keys");
        let mut step = period;
        while step < slots {
            let s = step as i64;
            assert!(
                keys.extra_rotation_steps.contains(&s)
                    || sparse.rotation_steps.iter().any(|&r| i64::from(r) == s),
                "{layout}: no key for the SubSum step {step}"
            );
            step *= 2;
        }
        opts.sparse_bootstraps = false;
        let full = compile_graph(&g, &opts).unwrap().plan;
        assert_eq!(full.slot_period(), None);
        assert_eq!(
            full.params.bootstrap.as_ref().map(|b| b.slots as usize),
            Some(slots)
        );
        assert_eq!(
            bootstraps(&full.circuit),
            bootstraps(&sparse.circuit),
            "{layout}: the period changes what a bootstrap costs, not where they are"
        );
        opts.sparse_bootstraps = true;
        let run = InferOptions {
            compile: opts,
            batch: Some(batch),
            verify: true,
            ..Default::default()
        };
        let rep = infer_graph(&g, &images, Some(&labels), &run).unwrap();
        let v = rep.verification.as_ref().unwrap();
        let scale = v.output.max_abs_value.max(1.0);
        let err = v.output.max_abs_error;
        eprintln!(
            "{layout}: {period} of {slots} slots bootstrapped, output error {err:.3e} (values up to {scale:.2}), argmax {}/{batch}",
            v.argmax_agree
        );
        assert!(
            err.is_finite() && err < 1e-2 * scale,
            "{layout}: error {err}"
        );
        assert_eq!(v.argmax_agree, batch, "{layout}");
    }
}
