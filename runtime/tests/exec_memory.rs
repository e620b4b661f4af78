//! The executor follows the requested schedule with bounded lookahead: a circuit whose
//! level-by-level execution would hold one value per branch at once runs with the schedule's
//! own peak of live ciphertexts (sequentially) or within the lookahead of it (in parallel), and
//! still computes the right result. Also: parallel client encryption with forked encryptors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc_ir::he::{Layout, Level, LogScale, Meta, Module, Op, Params, ValueId};
use hecc_runtime::ckks::*;
use hecc_runtime::exec::{execute, EvalKeys, ExecOptions};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const SLOTS: usize = 2048;
const BRANCHES: usize = 48;

fn context() -> Arc<Context> {
    let params = CkksParameters::builder()
        .log_n(12)
        .q0_bits(60)
        .scale_bits(vec![40, 40])
        .special_bits(vec![60])
        .insecure_no_security_check()
        .build()
        .unwrap();
    Context::new(params).unwrap()
}

fn coeff(i: usize) -> f64 {
    0.01 * (i as f64 + 1.0) * if i.is_multiple_of(2) { 1.0 } else { -0.5 }
}

/// `y = sum_i rescale(c_i * x)`, built branch by branch (`mac_i`, `rescale_i`, `add`): by
/// level, every `rescale_i` would be alive before the first add; in id order at most a few are.
fn circuit(ctx: &Context) -> Module {
    let mut m = Module::new(Meta {
        name: "fan".into(),
        batch: SLOTS as u32,
        log_scale: LogScale(40.0),
    });
    m.params = Some(Params {
        log_n: 12,
        primes: ctx.params().q().to_vec(),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let x = m
        .input("x", 0, Level(2), LogScale(40.0), SLOTS as u32, b)
        .unwrap();
    let mut acc: Option<ValueId> = None;
    for i in 0..BRANCHES {
        let t = m.mac(&[(x, coeff(i))], None, LogScale(40.0)).unwrap();
        let r = m.rescale(t).unwrap();
        acc = Some(match acc {
            None => r,
            Some(a) => m.add(a, r).unwrap(),
        });
    }
    m.output(acc.unwrap(), "y", 0).unwrap();
    m
}

/// Most ciphertexts alive at once when `order` runs one node at a time (a value lives from
/// its node until its last user; outputs are handed out, not kept).
fn sequential_peak(m: &Module, order: &[ValueId]) -> usize {
    let mut remaining: HashMap<ValueId, usize> = m.ids().map(|v| (v, m.users(v).len())).collect();
    let mut live: HashSet<ValueId> = HashSet::new();
    let mut peak = 0;
    for &v in order {
        for o in m.operands(v) {
            let r = remaining.get_mut(&o).unwrap();
            *r -= 1;
            if *r == 0 {
                live.remove(&o);
            }
        }
        if remaining[&v] > 0 {
            live.insert(v);
        }
        peak = peak.max(live.len());
    }
    peak
}

/// Most bytes alive at once when `order` runs one node at a time, counting a node's result
/// together with its operands (they are freed only after it ran), except that a rescale of a
/// value at its last use replaces it (the executor rescales in place; the circuit's other ops
/// are mac and add, which allocate), and the input from the start (the client sends it
/// before the run).
fn sequential_peak_bytes(m: &Module, order: &[ValueId]) -> u64 {
    let bytes = |v: ValueId| {
        let t = m.ty(v).unwrap();
        (t.size() as u64) * (u64::from(t.level().0) + 1) * 4096 * 8
    };
    let mut remaining: HashMap<ValueId, usize> = m.ids().map(|v| (v, m.users(v).len())).collect();
    let is_input = |v: ValueId| matches!(m.node(v).map(|n| &n.op), Some(Op::Input { .. }));
    let mut live: u64 = m.ids().filter(|&v| is_input(v)).map(bytes).sum();
    let mut peak = live;
    for &v in order {
        if is_input(v) {
            continue;
        }
        let in_place = matches!(m.node(v).map(|n| &n.op), Some(Op::Rescale))
            && m.operands(v).first().is_some_and(|o| remaining[o] == 1);
        let freed = if in_place { bytes(m.operands(v)[0]) } else { 0 };
        peak = peak.max(live - freed + bytes(v));
        for o in m.operands(v) {
            let r = remaining.get_mut(&o).unwrap();
            *r -= 1;
            if *r == 0 {
                live -= bytes(o);
            }
        }
        if remaining[&v] > 0 {
            live += bytes(v);
        }
    }
    peak
}

fn data() -> Vec<f64> {
    (0..SLOTS)
        .map(|i| ((i * 37) % 101) as f64 / 101.0 - 0.5)
        .collect()
}

/// (peak live ciphertexts of the run, of the schedule run sequentially, max error, peak live
/// bytes of the run, of the schedule run sequentially)
fn run(max_wavefront: usize, lookahead: usize) -> (usize, usize, f64, u64, u64) {
    run_limited(max_wavefront, lookahead, Limit::Default)
}

/// The executor's memory limit in a test run.
#[derive(Clone, Copy)]
enum Limit {
    /// None given: the schedule's peak plus the executor's slack.
    Default,
    /// The schedule's own byte peak.
    Peak,
    /// No limit.
    Unlimited,
}

/// As [`run`], with a memory limit.
fn run_limited(
    max_wavefront: usize,
    lookahead: usize,
    limit: Limit,
) -> (usize, usize, f64, u64, u64) {
    let ctx = context();
    let m = circuit(&ctx);
    let order = m.topo_order().unwrap();
    let peak = sequential_peak(&m, &order);
    let peak_bytes = sequential_peak_bytes(&m, &order);
    let kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 3);
    let sk = kg.secret_key().clone();
    let encoder = Encoder::new(&ctx);
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 9);
    let x = data();
    let pt = encoder.encode(&x, 2, 40f64.exp2()).unwrap();
    let inputs = HashMap::from([(("x".to_string(), 0), enc.encrypt(&pt).unwrap())]);
    let opts = ExecOptions {
        progress: None,
        schedule: Some(order.iter().map(|v| v.0).collect()),
        max_wavefront,
        lookahead,
        memory_limit: match limit {
            Limit::Default => None,
            Limit::Peak => Some(peak_bytes),
            Limit::Unlimited => Some(u64::MAX),
        },
        ..Default::default()
    };
    let eval = Evaluator::new(&ctx);
    let res = execute(&m, &eval, &encoder, EvalKeys::default(), inputs, &opts).unwrap();
    assert_eq!(res.report.nodes, m.len());
    let dec = Decryptor::new(&ctx, &sk);
    let got = encoder
        .decode(&dec.decrypt(&res.outputs[0].ct).unwrap())
        .unwrap();
    let sum: f64 = (0..BRANCHES).map(coeff).sum();
    let err = got
        .iter()
        .zip(&x)
        .map(|(g, x)| (g - sum * x).abs())
        .fold(0.0, f64::max);
    (
        res.report.peak_live_ciphertexts,
        peak,
        err,
        res.report.peak_live_bytes,
        peak_bytes,
    )
}

#[test]
fn a_sequential_run_holds_exactly_the_schedules_peak() {
    let (live, peak, err, live_bytes, peak_bytes) = run(1, 1);
    // The executor's byte count matches the schedule's exactly: rescaled values hand their
    // dropped limb back (no buffer keeps the size of its level before the rescale).
    assert_eq!(
        live_bytes, peak_bytes,
        "live bytes of the run vs the schedule"
    );
    assert!(peak <= 4, "the schedule keeps few values alive: {peak}");
    assert!(
        BRANCHES > 4 * peak,
        "level by level would hold {BRANCHES} values"
    );
    assert_eq!(live, peak, "run peak {live} vs schedule peak {peak}");
    assert!(err < 1e-5, "max error {err}");
}

#[test]
fn a_parallel_run_stays_within_the_lookahead_of_the_schedules_peak() {
    let (live, peak, err, live_bytes, peak_bytes) = run(4, 8);
    // At most the lookahead's values more, each at most one fresh ciphertext (3 limbs).
    let ct = 2 * 3 * 4096 * 8;
    assert!(
        live_bytes <= peak_bytes + 8 * ct,
        "run peak {live_bytes} B vs schedule peak {peak_bytes} B + lookahead 8"
    );
    assert!(
        live <= peak + 8,
        "run peak {live} vs schedule peak {peak} + lookahead 8"
    );
    assert!(
        live < BRANCHES / 2,
        "run peak {live} of {BRANCHES} branches"
    );
    assert!(err < 1e-5, "max error {err}");
}

#[test]
fn a_memory_limit_keeps_a_parallel_run_at_the_schedules_peak() {
    // Unlimited, the parallel run goes past the schedule's byte peak (it runs ahead); with
    // the peak as its limit it stays at or under it and computes the same result; with no
    // limit given it stays within the executor's slack above it.
    let (_, _, _, free_bytes, peak_bytes) = run_limited(16, 32, Limit::Unlimited);
    assert!(
        free_bytes > peak_bytes + peak_bytes / 10,
        "unlimited {free_bytes} B vs schedule {peak_bytes} B"
    );
    let (_, _, err, live_bytes, peak_bytes) = run_limited(16, 32, Limit::Peak);
    assert!(
        live_bytes <= peak_bytes,
        "limited run peak {live_bytes} B vs schedule peak {peak_bytes} B"
    );
    assert!(err < 1e-5, "max error {err}");
    let (_, _, err, live_bytes, peak_bytes) = run_limited(16, 32, Limit::Default);
    let cap = peak_bytes + (peak_bytes as f64 * hecc_runtime::exec::MEMORY_SLACK) as u64;
    assert!(
        live_bytes <= cap,
        "default run peak {live_bytes} B vs schedule peak {peak_bytes} B + slack"
    );
    assert!(err < 1e-5, "max error {err}");
}

#[test]
fn forked_encryptors_draw_distinct_seeds_and_decrypt() {
    let ctx = context();
    let mut kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 4);
    let sk = kg.secret_key().clone();
    let pk = kg.public_key();
    let encoder = Encoder::new(&ctx);
    let dec = Decryptor::new(&ctx, &sk);
    let x = data();
    let pts: Vec<Plaintext> = (0..6)
        .map(|k| {
            let v: Vec<f64> = x.iter().map(|a| a * (k as f64 + 1.0)).collect();
            encoder.encode(&v, 2, 40f64.exp2()).unwrap()
        })
        .collect();
    let check = |ct: &Ciphertext, k: usize| {
        let got = encoder.decode(&dec.decrypt(ct).unwrap()).unwrap();
        let err = got
            .iter()
            .zip(&x)
            .map(|(g, a)| (g - a * (k as f64 + 1.0)).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-6, "ciphertext {k}: max error {err}");
    };
    let mut parent = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 1);
    let mut a = parent.fork();
    let mut b = parent.fork();
    let ca = a.encrypt(&pts[0]).unwrap();
    let cb = b.encrypt(&pts[0]).unwrap();
    check(&ca, 0);
    check(&cb, 0);
    assert_ne!(ca, cb, "two forks draw different `a` seeds");
    let bytes_a = ca.to_bytes(&ctx);
    let bytes_b = cb.to_bytes(&ctx);
    assert_ne!(bytes_a, bytes_b);
    // Parallel encryption: every ciphertext decrypts, no two share a seed, and the same test
    // seed gives the same ciphertexts (forks are drawn in order, whatever the thread count).
    let many = parent.encrypt_many(&pts).unwrap();
    for (k, ct) in many.iter().enumerate() {
        check(ct, k);
    }
    let c1s: HashSet<Vec<u8>> = many.iter().map(|c| c.to_bytes(&ctx)).collect();
    assert_eq!(c1s.len(), many.len());
    let mut p1 = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 7);
    let mut p2 = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 7);
    assert_eq!(
        p1.encrypt_many(&pts).unwrap(),
        p2.encrypt_many(&pts).unwrap()
    );
    // The public-key encryptor forks the same way.
    let mut pe = Encryptor::new_with_insecure_test_seed(&ctx, &pk, 2);
    let mut f1 = pe.fork();
    let mut f2 = pe.fork();
    let (c1, c2) = (f1.encrypt(&pts[1]).unwrap(), f2.encrypt(&pts[1]).unwrap());
    check(&c1, 1);
    check(&c2, 1);
    assert_ne!(c1, c2);
    for (k, ct) in pe.encrypt_many(&pts).unwrap().iter().enumerate() {
        check(ct, k);
    }
}
