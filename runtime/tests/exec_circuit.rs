//! The executor against the HE IR's reference interpreter on a hand-built circuit that uses
//! every kind of op (mac with bias, rescale, square + relinearize, hoisted rotations, plaintext
//! ops, scalar ops, level drops), and its error paths: missing keys, inputs and scale checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::interp::interpret;
use hecc_ir::he::{Layout, Level, LogScale, Meta, Module, Params, ValueId};
use hecc_runtime::ckks::*;
use hecc_runtime::exec::{execute, EvalKeys, ExecError, ExecOptions, ProgressEvent, ProgressSink};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

const SLOTS: usize = 2048;

fn context() -> Arc<Context> {
    let params = CkksParameters::builder()
        .log_n(12)
        .q0_bits(60)
        .scale_bits(vec![40, 40, 40])
        .special_bits(vec![60])
        .insecure_no_security_check()
        .build()
        .unwrap();
    Context::new(params).unwrap()
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

/// A circuit over two inputs; returns the module.
fn circuit(ctx: &Context, input_log_scale: f64) -> Module {
    let mut m = Module::new(Meta {
        name: "t".into(),
        batch: SLOTS as u32,
        log_scale: LogScale(40.0),
    });
    m.params = Some(Params {
        log_n: 12,
        primes: ctx.params().q().to_vec(),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let s = LogScale(input_log_scale);
    let x0 = m.input("x", 0, Level(3), s, SLOTS as u32, b).unwrap();
    let x1 = m.input("x", 1, Level(3), s, SLOTS as u32, b).unwrap();
    let mac = m
        .mac(&[(x0, 0.5), (x1, -1.25)], Some(0.3), LogScale(40.0))
        .unwrap();
    let r = m.rescale(mac).unwrap();
    let sq = m.square(r).unwrap();
    let rl = m.relinearize(sq).unwrap();
    let r2 = m.rescale(rl).unwrap();
    let rot1 = m.rotate(r2, 1).unwrap();
    let rot2 = m.rotate(r2, 2).unwrap();
    let sum = m.add(rot1, rot2).unwrap();
    let neg = m.negate(sum).unwrap();
    let sh = m.add_scalar(neg, 0.25).unwrap();
    let k = m.mul_integer(sh, 3).unwrap();
    m.output(k, "y", 0).unwrap();
    // A second output: x0*x1 - x1 (dropped), times a plaintext, plus a plaintext.
    let p = m.mul(x0, x1).unwrap();
    let p = m.relinearize(p).unwrap();
    let p = m.rescale(p).unwrap();
    let pl = m.rescale_bits(Level(3));
    let x1d = m.drop_level(x1, Level(2)).unwrap();
    let x1d = m
        .mul_scalar(
            x1d,
            1.0,
            LogScale(2.0 * input_log_scale - pl - input_log_scale),
        )
        .unwrap();
    let d = m.sub(p, x1d);
    let d = d.unwrap();
    let c = m.add_constant((0..SLOTS).map(|i| (i % 7) as f64 * 0.1).collect());
    let ty = m.ty(d).unwrap();
    let e = m.encode(c, ty.level(), LogScale(30.0), b).unwrap();
    let q = m.mul_plain(d, e).unwrap();
    let q = m.rescale(q).unwrap();
    let ty = m.ty(q).unwrap();
    let e2 = m.encode(c, ty.level(), ty.log_scale(), b).unwrap();
    let q = m.add_plain(q, e2).unwrap();
    m.output(q, "z", 0).unwrap();
    m
}

struct Setup {
    ctx: Arc<Context>,
    sk: SecretKey,
    rk: RelinKey,
    gk: GaloisKeys,
}

impl Setup {
    /// Every evaluation key of the setup.
    fn keys(&self) -> EvalKeys<'_> {
        EvalKeys {
            relin: Some(&self.rk),
            galois: Some(&self.gk),
            boot: None,
        }
    }
}

fn setup() -> Setup {
    let ctx = context();
    let mut kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 11);
    let rk = kg.relin_key();
    let gk = kg.galois_keys(&[1, 2], false);
    Setup {
        sk: kg.secret_key().clone(),
        ctx,
        rk,
        gk,
    }
}

fn encrypt_inputs(s: &Setup, m: &Module, scale_bits: f64) -> HashMap<(String, u32), Ciphertext> {
    let encoder = Encoder::new(&s.ctx);
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&s.ctx, &s.sk, 5);
    m.inputs()
        .into_iter()
        .map(|(v, name, index)| {
            let lvl = m.ty(v).unwrap().level().0 as usize;
            let pt = encoder
                .encode(&data(index as u64 + 1), lvl, scale_bits.exp2())
                .unwrap();
            ((name.to_string(), index), enc.encrypt(&pt).unwrap())
        })
        .collect()
}

/// The largest absolute difference of two slot vectors.
fn max_error(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

fn quiet() -> ExecOptions {
    ExecOptions {
        progress: None,
        ..Default::default()
    }
}

/// Options whose progress sink records every event as text.
fn recording() -> (ExecOptions, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let opts = ExecOptions {
        progress: Some(ProgressSink::new(move |e: &ProgressEvent<'_>| {
            let line = match e {
                ProgressEvent::Start { nodes, .. } => format!("start {nodes}"),
                ProgressEvent::Stage { name } => format!("stage {name}"),
                ProgressEvent::Nodes { done, total } => format!("nodes {done}/{total}"),
                ProgressEvent::Finish => "finish".to_string(),
            };
            sink.lock().unwrap().push(line);
        })),
        ..Default::default()
    };
    (opts, events)
}

#[test]
fn a_run_reports_its_progress_as_events() {
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let keys = s.keys();
    let (opts, events) = recording();
    execute(
        &m,
        &eval,
        &encoder,
        keys,
        encrypt_inputs(&s, &m, 40.0),
        &opts,
    )
    .unwrap();
    let ev = events.lock().unwrap().clone();
    let n = m.len();
    assert_eq!(
        ev.first().map(String::as_str),
        Some(format!("start {n}").as_str())
    );
    assert_eq!(ev.last().map(String::as_str), Some("finish"));
    assert!(ev.iter().any(|e| e.starts_with("stage ")), "{ev:?}");
    let done: Vec<u64> = ev
        .iter()
        .filter_map(|e| e.strip_prefix("nodes "))
        .map(|d| d.split('/').next().unwrap().parse().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert_eq!(done.last().copied(), Some(n as u64));
    assert_eq!(ev.iter().filter(|e| *e == "finish").count(), 1);

    // A run that fails part way still ends the display.
    let (opts, events) = recording();
    let no_galois = EvalKeys {
        relin: Some(&s.rk),
        galois: None,
        boot: None,
    };
    let r = execute(
        &m,
        &eval,
        &encoder,
        no_galois,
        encrypt_inputs(&s, &m, 40.0),
        &opts,
    );
    assert!(r.is_err());
    let ev = events.lock().unwrap().clone();
    assert!(ev.first().is_some_and(|e| e.starts_with("start")));
    assert_eq!(ev.last().map(String::as_str), Some("finish"), "{ev:?}");
}

#[test]
fn executor_matches_the_interpreter_on_every_op_kind() {
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    let inputs = encrypt_inputs(&s, &m, 40.0);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let keys = s.keys();
    let res = execute(&m, &eval, &encoder, keys, inputs, &quiet()).unwrap();
    assert_eq!(
        res.report.hoisted_rotations, 2,
        "the two rotations of one value are hoisted"
    );
    assert_eq!(res.report.nodes, m.len());
    assert!(!res.report.stages.is_empty());
    let want = interpret(&m, |_, index, _, _| Some(data(index as u64 + 1))).unwrap();
    let dec = Decryptor::new(&s.ctx, &s.sk);
    assert_eq!(res.outputs.len(), 2);
    for o in &res.outputs {
        let w = want.iter().find(|w| w.name == o.name).unwrap();
        let got = encoder.decode(&dec.decrypt(&o.ct).unwrap()).unwrap();
        let err = max_error(&got, &w.slots);
        assert!(err < 1e-4, "output {}: max error {err}", o.name);
    }
}

#[test]
fn a_circuit_that_rotates_fails_cleanly_without_galois_keys() {
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    let inputs = encrypt_inputs(&s, &m, 40.0);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let keys = EvalKeys {
        relin: Some(&s.rk),
        galois: None,
        boot: None,
    };
    let err = execute(&m, &eval, &encoder, keys, inputs, &quiet()).unwrap_err();
    assert!(matches!(err, ExecError::MissingGaloisKeys { .. }), "{err}");
    // With keys for other steps, the backend reports the missing key.
    let mut kg = KeyGenerator::from_secret_key(&s.ctx, s.sk.clone()).unwrap();
    let other = kg.galois_keys(&[3], false);
    let keys = EvalKeys {
        relin: Some(&s.rk),
        galois: Some(&other),
        boot: None,
    };
    let inputs = encrypt_inputs(&s, &m, 40.0);
    let err = execute(&m, &eval, &encoder, keys, inputs, &quiet()).unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Backend {
                source: CkksError::MissingGaloisKey { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_backend_scale_that_disagrees_with_the_type_is_reported() {
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    // Encrypted at 2^41 while the circuit's types say 2^40.
    let inputs = encrypt_inputs(&s, &m, 41.0);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let keys = s.keys();
    let err = execute(&m, &eval, &encoder, keys, inputs, &quiet()).unwrap_err();
    match err {
        ExecError::ScaleMismatch {
            expected, found, ..
        } => {
            assert_eq!(expected, 40.0);
            assert!((found - 41.0).abs() < 1e-9);
        }
        other => panic!("expected a scale mismatch, got {other}"),
    }
}

#[test]
fn scales_within_the_tolerance_are_set_to_the_types_and_do_not_compound() {
    // Inputs 6e-7 bits above their type (within the 1e-6 tolerance): a squaring would double
    // that past the tolerance if the backend kept its own scale; the executor sets each
    // checked ciphertext to its type's scale, so the run succeeds, every output carries its
    // type's scale exactly, and the values still match the interpreter.
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    let inputs = encrypt_inputs(&s, &m, 40.0 + 6e-7);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let res = execute(&m, &eval, &encoder, s.keys(), inputs, &quiet()).unwrap();
    let want = interpret(&m, |_, index, _, _| Some(data(index as u64 + 1))).unwrap();
    let dec = Decryptor::new(&s.ctx, &s.sk);
    for o in &res.outputs {
        let (v, _, _) = *m
            .outputs()
            .iter()
            .find(|(_, name, index)| *name == o.name && *index == o.index)
            .unwrap();
        let ty = m.ty(v).unwrap().log_scale().0;
        assert_eq!(o.ct.scale(), ty.exp2(), "output {}", o.name);
        let w = want.iter().find(|w| w.name == o.name).unwrap();
        let got = encoder.decode(&dec.decrypt(&o.ct).unwrap()).unwrap();
        let err = max_error(&got, &w.slots);
        assert!(err < 1e-4, "output {}: max error {err}", o.name);
    }
    // Beyond the tolerance it is still an error.
    let inputs = encrypt_inputs(&s, &m, 40.0 + 2e-6);
    assert!(matches!(
        execute(&m, &eval, &encoder, s.keys(), inputs, &quiet()),
        Err(ExecError::ScaleMismatch { .. })
    ));
}

#[test]
fn missing_and_unknown_inputs_are_errors() {
    let s = setup();
    let m = circuit(&s.ctx, 40.0);
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let keys = s.keys();
    let mut inputs = encrypt_inputs(&s, &m, 40.0);
    let one = inputs.remove(&("x".to_string(), 1)).unwrap();
    let err = execute(&m, &eval, &encoder, keys, inputs.clone(), &quiet()).unwrap_err();
    assert!(
        matches!(err, ExecError::MissingInput { index: 1, .. }),
        "{err}"
    );
    inputs.insert(("w".to_string(), 0), one);
    let err = execute(&m, &eval, &encoder, keys, inputs, &quiet()).unwrap_err();
    assert!(matches!(err, ExecError::UnknownInput { .. }), "{err}");
    let _ = ValueId(0);
}
