//! The spill store and checkpoints: a run whose live values exceed its budget moves them to
//! disk and back and computes the same ciphertexts; a run stopped part way resumes from its
//! checkpoint and finishes with the same outputs; a checkpoint of another run, an edited
//! manifest or a damaged value file is refused with an error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use hecc_ir::he::{Layout, Level, LogScale, Meta, Module, Params, ValueId};
use hecc_runtime::ckks::*;
use hecc_runtime::exec::{
    execute, EvalKeys, ExecError, ExecOptions, LazyInputs, ProgressEvent, ProgressSink, RunResult,
    SpillOptions,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SLOTS: usize = 2048;
const INPUTS: usize = 6;
const BRANCHES: usize = 5;

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

fn coeff(i: usize, j: usize) -> f64 {
    0.01 * (1 + i * BRANCHES + j) as f64 * if (i + j).is_multiple_of(2) { 1.0 } else { -0.5 }
}

/// Every input feeds `BRANCHES` rescaled products that all stay alive until the sums at the
/// end (the topological order computes every product first): `y = sum_ij c_ij x_i` and
/// `z = (c_00 x_0) + (c_{I-1,B-1} x_{I-1})`.
fn circuit(ctx: &Context) -> Module {
    let mut m = Module::new(Meta {
        name: "spill".into(),
        batch: SLOTS as u32,
        log_scale: LogScale(40.0),
    });
    m.params = Some(Params {
        log_n: 12,
        primes: ctx.params().q().to_vec(),
    });
    let b = m.add_layout("batch", Layout::BATCH).unwrap();
    let xs: Vec<ValueId> = (0..INPUTS)
        .map(|i| {
            m.input("x", i as u32, Level(2), LogScale(40.0), SLOTS as u32, b)
                .unwrap()
        })
        .collect();
    let mut terms = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        for j in 0..BRANCHES {
            let t = m.mac(&[(x, coeff(i, j))], None, LogScale(40.0)).unwrap();
            terms.push(m.rescale(t).unwrap());
        }
    }
    let mut acc = terms[0];
    for &t in terms.iter().skip(1).rev() {
        acc = m.add(acc, t).unwrap();
    }
    m.output(acc, "y", 0).unwrap();
    let z = m.add(terms[0], terms[terms.len() - 1]).unwrap();
    m.output(z, "z", 0).unwrap();
    m
}

fn data(i: usize) -> Vec<f64> {
    (0..SLOTS)
        .map(|k| ((k * 37 + i * 11) % 101) as f64 / 101.0 - 0.5)
        .collect()
}

struct Fixture {
    ctx: Arc<Context>,
    m: Module,
    order: Vec<u32>,
    sk: SecretKey,
    inputs: HashMap<(String, u32), Ciphertext>,
}

fn fixture() -> Fixture {
    let ctx = context();
    let m = circuit(&ctx);
    let order = m.topo_order().unwrap().iter().map(|v| v.0).collect();
    let kg = KeyGenerator::new_with_insecure_test_seed(&ctx, 3);
    let sk = kg.secret_key().clone();
    let encoder = Encoder::new(&ctx);
    let mut enc = SymmetricEncryptor::new_with_insecure_test_seed(&ctx, &sk, 9);
    let inputs = (0..INPUTS)
        .map(|i| {
            let pt = encoder.encode(&data(i), 2, 40f64.exp2()).unwrap();
            (("x".to_string(), i as u32), enc.encrypt(&pt).unwrap())
        })
        .collect();
    Fixture {
        ctx,
        m,
        order,
        sk,
        inputs,
    }
}

impl Fixture {
    fn run(&self, opts: ExecOptions) -> std::result::Result<RunResult, ExecError> {
        let eval = Evaluator::new(&self.ctx);
        let encoder = Encoder::new(&self.ctx);
        let opts = ExecOptions {
            schedule: Some(self.order.clone()),
            max_wavefront: 2,
            lookahead: 2,
            ..opts
        };
        execute(
            &self.m,
            &eval,
            &encoder,
            EvalKeys::default(),
            self.inputs.clone(),
            &opts,
        )
    }

    /// The outputs' serializations, by name.
    fn bytes(&self, r: &RunResult) -> Vec<(String, Vec<u8>)> {
        r.outputs
            .iter()
            .map(|o| (o.name.clone(), o.ct.to_bytes(&self.ctx)))
            .collect()
    }

    /// Largest error of output `y` against the plaintext sum.
    fn error(&self, r: &RunResult) -> f64 {
        let encoder = Encoder::new(&self.ctx);
        let dec = Decryptor::new(&self.ctx, &self.sk);
        let y = r.outputs.iter().find(|o| o.name == "y").unwrap();
        let got = encoder.decode(&dec.decrypt(&y.ct).unwrap()).unwrap();
        (0..SLOTS)
            .map(|k| {
                let want: f64 = (0..INPUTS)
                    .flat_map(|i| (0..BRANCHES).map(move |j| (i, j)))
                    .map(|(i, j)| coeff(i, j) * data(i)[k])
                    .sum();
                (got[k] - want).abs()
            })
            .fold(0.0, f64::max)
    }
}

fn spill(dir: &Path, budget: u64, every: Option<Duration>, run_id: &str) -> Option<SpillOptions> {
    Some(SpillOptions {
        dir: dir.to_path_buf(),
        budget,
        checkpoint_every: every,
        run_id: run_id.into(),
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hecc-spill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Options whose progress sink sets `cancel` once `after` nodes have run.
fn stopping(after: u64, cancel: &Arc<AtomicBool>) -> ExecOptions {
    let flag = cancel.clone();
    ExecOptions {
        progress: Some(ProgressSink::new(move |e: &ProgressEvent<'_>| {
            if let ProgressEvent::Nodes { done, .. } = e {
                if *done >= after {
                    flag.store(true, Ordering::Relaxed);
                }
            }
        })),
        cancel: Some(cancel.clone()),
        ..Default::default()
    }
}

#[test]
fn a_run_under_a_tiny_budget_spills_and_computes_the_same_ciphertexts() {
    let f = fixture();
    let plain = f.run(ExecOptions::default()).unwrap();
    assert!(f.error(&plain) < 1e-6, "error {}", f.error(&plain));
    let dir = temp_dir("tiny");
    let spilled = f
        .run(ExecOptions {
            spill: spill(&dir, 1, None, "tiny"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(f.bytes(&spilled), f.bytes(&plain));
    let s = spilled.report.spill.clone().unwrap();
    assert!(s.values_written >= (INPUTS * BRANCHES) as u64, "{s:?}");
    assert!(s.values_read > 0 && s.bytes_read > 0, "{s:?}");
    assert!(
        spilled.report.peak_live_bytes < plain.report.peak_live_bytes / 2,
        "in memory: {} spilled against {} without",
        spilled.report.peak_live_bytes,
        plain.report.peak_live_bytes
    );
    assert!(!dir.exists(), "a finished run removes its spill directory");
}

#[test]
fn a_stopped_run_resumes_from_its_checkpoint_with_the_same_outputs() {
    let f = fixture();
    let plain = f.run(ExecOptions::default()).unwrap();
    let total = plain.report.nodes as u64;
    // Stopped twice (the second time with checkpoints after every wavefront and values on
    // disk), then finished.
    let dir = temp_dir("resume");
    let cancel = Arc::new(AtomicBool::new(false));
    let err = f
        .run(ExecOptions {
            spill: spill(&dir, u64::MAX, None, "run-a"),
            ..stopping(total / 3, &cancel)
        })
        .unwrap_err();
    assert!(matches!(err, ExecError::Cancelled), "{err}");
    assert!(dir.join("checkpoint").is_file());

    // Another run's identity is refused, and leaves the checkpoint alone.
    let other = f
        .run(ExecOptions {
            spill: spill(&dir, u64::MAX, None, "run-b"),
            ..Default::default()
        })
        .unwrap_err();
    assert!(other.to_string().contains("another run"), "{other}");

    let cancel = Arc::new(AtomicBool::new(false));
    let err = f
        .run(ExecOptions {
            spill: spill(&dir, 1, Some(Duration::ZERO), "run-a"),
            ..stopping(2 * total / 3, &cancel)
        })
        .unwrap_err();
    assert!(matches!(err, ExecError::Cancelled), "{err}");

    let done = f
        .run(ExecOptions {
            spill: spill(&dir, u64::MAX, None, "run-a"),
            ..Default::default()
        })
        .unwrap();
    let s = done.report.spill.clone().unwrap();
    assert!(
        s.resumed_nodes >= 2 * total / 3 && s.resumed_nodes < total,
        "resumed {} of {total}",
        s.resumed_nodes
    );
    assert_eq!(done.report.nodes as u64, total);
    assert_eq!(f.bytes(&done), f.bytes(&plain));
    assert!(!dir.exists());
}

#[test]
fn damaged_checkpoints_are_refused_with_the_file_named() {
    let f = fixture();
    let total = f.m.len() as u64;
    let dir = temp_dir("damaged");
    let stop = |dir: &Path| {
        let cancel = Arc::new(AtomicBool::new(false));
        let err = f
            .run(ExecOptions {
                spill: spill(dir, u64::MAX, None, "run"),
                ..stopping(total / 2, &cancel)
            })
            .unwrap_err();
        assert!(matches!(err, ExecError::Cancelled), "{err}");
    };
    let resume = |dir: &Path| {
        f.run(ExecOptions {
            spill: spill(dir, u64::MAX, None, "run"),
            ..Default::default()
        })
    };

    // A flipped byte in a value file.
    stop(&dir);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with('v'))
        .expect("a value file");
    let mut bytes = std::fs::read(&file).unwrap();
    let k = bytes.len() - 100;
    bytes[k] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let err = resume(&dir).unwrap_err().to_string();
    assert!(err.contains("damaged") && err.contains(".val"), "{err}");

    // An edited manifest.
    let _ = std::fs::remove_dir_all(&dir);
    stop(&dir);
    let manifest = dir.join("checkpoint");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("value ", "value 1", 1)).unwrap();
    let err = resume(&dir).unwrap_err().to_string();
    assert!(
        err.contains("checkpoint") && err.contains("damaged"),
        "{err}"
    );

    // A missing value file.
    let _ = std::fs::remove_dir_all(&dir);
    stop(&dir);
    std::fs::remove_file(&file).unwrap();
    let err = resume(&dir).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_memory_models_spill_estimate_matches_a_sequential_run() {
    let f = fixture();
    let dir = temp_dir("model");
    let budget = 6 * 3 * 4096 * 8; // six ciphertexts at level 2
    let run = f
        .run(ExecOptions {
            max_wavefront: 1,
            lookahead: 1,
            spill: spill(&dir, budget, None, "model"),
            ..Default::default()
        })
        .unwrap();
    let s = run.report.spill.unwrap();
    let model = hecc_ir::he::spill_profile(
        &f.m,
        &f.order,
        12,
        budget,
        hecc_ir::he::InputResidency::AtStart,
    );
    assert!(s.values_written > 0, "{s:?}");
    assert_eq!(model.values_written, s.values_written, "{model:?} vs {s:?}");
    assert!(model.held_bytes >= model.floor_bytes);
    assert!(
        run.report.peak_live_bytes <= model.held_bytes,
        "run held {} > model {}",
        run.report.peak_live_bytes,
        model.held_bytes
    );
}

/// Inputs read from their source when their node runs (as `hecc run` reads its inputs file):
/// the model's on-demand estimate writes the values the run writes, its disk peak bounds the
/// run's from above within a fifth (the model sizes every value at its type's level), and the
/// outputs are those of an in-memory run.
#[test]
fn inputs_read_on_demand_spill_as_the_model_says() {
    let f = fixture();
    let dir = temp_dir("lazy");
    let budget = 6 * 3 * 4096 * 8;
    let plain = f.run(ExecOptions::default()).unwrap();
    let source = f.inputs.clone();
    let elements = source
        .iter()
        .map(|(k, ct)| (k.clone(), ct.to_bytes(&f.ctx).len() as u64))
        .collect();
    let lazy = LazyInputs {
        elements,
        load: Arc::new(move |name: &str, index: u32| {
            source
                .get(&(name.to_string(), index))
                .cloned()
                .ok_or_else(|| format!("no input {name}[{index}]"))
        }),
    };
    let eval = Evaluator::new(&f.ctx);
    let encoder = Encoder::new(&f.ctx);
    let run = execute(
        &f.m,
        &eval,
        &encoder,
        EvalKeys::default(),
        HashMap::new(),
        &ExecOptions {
            schedule: Some(f.order.clone()),
            max_wavefront: 1,
            lookahead: 1,
            spill: spill(&dir, budget, None, "lazy"),
            lazy_inputs: Some(lazy),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(f.bytes(&run), f.bytes(&plain));
    let s = run.report.spill.unwrap();
    let model = hecc_ir::he::spill_profile(
        &f.m,
        &f.order,
        12,
        budget,
        hecc_ir::he::InputResidency::OnDemand,
    );
    assert!(s.values_written > 0, "{s:?}");
    assert_eq!(model.values_written, s.values_written, "{model:?} vs {s:?}");
    assert!(
        s.peak_disk_bytes <= model.disk_bytes && s.peak_disk_bytes * 5 >= model.disk_bytes * 4,
        "{model:?} vs {s:?}"
    );
    let at_start = hecc_ir::he::spill_profile(
        &f.m,
        &f.order,
        12,
        budget,
        hecc_ir::he::InputResidency::AtStart,
    );
    assert!(at_start.held_bytes >= model.held_bytes);
    let _ = std::fs::remove_dir_all(&dir);
}
