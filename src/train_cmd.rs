//! `hecc train`: trains a spec's network on an IDX dataset and exports spec-named weights.
//!
//! [`run`] loads the spec's structure (its current weights are ignored: training starts from a
//! fresh, seeded initialisation), the dataset directory (`hecc_train::data::load_dir`), an
//! optional trained ReLU teacher, trains ([`hecc_train::trainer::train`]), writes the weights
//! atomically as `f32` safetensors under the spec's names and, when `--granularity` changed the
//! network's structure, an equivalent spec next to them (`<weights stem>.yaml`, never the input
//! spec). It then reloads the written model through the YAML front end and evaluates the whole
//! test split with the reference evaluator (`hecc_ir::tensor::eval::eval_batch`), reporting how
//! many predictions agree with the trainer's. A ReLU teacher trained here and written with
//! `--teacher-out` gets the same check through its written spec. Progress goes to a callback;
//! nothing is printed.

use std::path::{Path, PathBuf};

use hecc_ir::front::{load_model, weights::load_weights, yaml::parse_spec_structure};
use hecc_ir::tensor::Graph;
use hecc_train::data::load_dir;
use hecc_train::export::{eval_predictions, spec_yaml, weights_bytes};
use hecc_train::trainer::{accuracy, train, Event, TrainConfig, Trained};
use miette::{miette, Result};

use crate::compile::write_atomic;

/// What to train and where to write it.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The YAML spec.
    pub spec: PathBuf,
    /// Dataset directory (IDX files).
    pub data: PathBuf,
    /// Where to write the trained weights (`.safetensors`).
    pub output: PathBuf,
    /// Where to write the spec of a structurally changed student (default
    /// `<output stem>.yaml`).
    pub spec_out: Option<PathBuf>,
    /// Trained ReLU-teacher weights to distil from (instead of training a teacher).
    pub teacher: Option<PathBuf>,
    /// Where to write the teacher trained here (weights; its spec goes next to them).
    pub teacher_out: Option<PathBuf>,
    /// Where to write the per-epoch history as JSON.
    pub history: Option<PathBuf>,
    /// Hyper-parameters.
    pub config: TrainConfig,
}

/// The check of written weights against the reference evaluator.
#[derive(Clone, Debug)]
pub struct ReloadCheck {
    /// The spec the weights were reloaded through.
    pub spec: PathBuf,
    /// Test images whose evaluator prediction equals the trainer's.
    pub agree: usize,
    /// Test images.
    pub total: usize,
    /// Accuracy of the evaluator's predictions.
    pub accuracy: f64,
}

/// Everything `hecc train` produced.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The trained student.
    pub student: Trained,
    /// The teacher (KD only).
    pub teacher: Option<Trained>,
    /// Where the student's weights went.
    pub weights: PathBuf,
    /// Spec written for a structurally changed student, if any.
    pub spec_written: Option<PathBuf>,
    /// Teacher weights and spec written, if any.
    pub teacher_written: Option<(PathBuf, PathBuf)>,
    /// The reload check of the teacher written here (through its written spec), if any.
    pub teacher_check: Option<ReloadCheck>,
    /// The reload check of the student.
    pub check: ReloadCheck,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The name under which a spec at `spec` refers to `weights` (the file name when both are in
/// the same directory, else the path as given).
fn weights_ref(spec: &Path, weights: &Path) -> String {
    let dir = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let same = match (dir(spec).canonicalize(), dir(weights).canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match (same, weights.file_name()) {
        (true, Some(n)) => n.to_string_lossy().into_owned(),
        _ => weights
            .canonicalize()
            .unwrap_or_else(|_| weights.to_path_buf())
            .display()
            .to_string(),
    }
}

/// Writes `graph`'s weights to `weights` and, if `spec_out` is given, a spec naming them.
fn write_model(graph: &Graph, weights: &Path, spec_out: Option<(&Path, &str)>) -> Result<()> {
    let bytes = weights_bytes(graph)?;
    write_atomic(weights, &bytes)?;
    if let Some((spec, description)) = spec_out {
        let text = spec_yaml(graph, &weights_ref(spec, weights), description)?;
        write_atomic(spec, text.as_bytes())?;
    }
    Ok(())
}

fn changed_spec_path(input_spec: &Path, weights: &Path, given: Option<&Path>) -> Result<PathBuf> {
    let p = given
        .map(Path::to_path_buf)
        .unwrap_or_else(|| weights.with_extension("yaml"));
    if same_file(&p, input_spec) {
        return Err(miette!(
            "refusing to overwrite the input spec {} with the trained network's spec; pass --spec-out",
            p.display()
        ));
    }
    Ok(p)
}

/// Runs `hecc train`.
pub fn run(opts: &TrainOptions, on: &mut dyn FnMut(&Event)) -> Result<TrainSummary> {
    let text = std::fs::read_to_string(&opts.spec)
        .map_err(|e| miette!("cannot read {}: {e}", opts.spec.display()))?;
    let spec = parse_spec_structure(&text, &opts.spec.display().to_string())?;
    let range = spec
        .input_normalization()
        .and_then(|n| n.range)
        .unwrap_or([0.0, 1.0]);
    let data = load_dir(&opts.data, range)?;
    let teacher_weights = match &opts.teacher {
        Some(p) => Some(load_weights(p).map_err(|e| miette!("teacher {}: {e}", p.display()))?),
        None => None,
    };
    let outcome = train(&spec, &data, teacher_weights.as_ref(), &opts.config, on)?;
    if let Some(h) = &opts.history {
        let text = history_json(&spec.name, opts, &outcome.teacher, &outcome.student);
        write_atomic(h, text.as_bytes())?;
    }

    let mut teacher_written = None;
    let mut teacher_check = None;
    if let (Some(t), Some(tw), None) = (&outcome.teacher, &opts.teacher_out, &opts.teacher) {
        let ts = changed_spec_path(&opts.spec, tw, None)?;
        let desc = format!(
            "ReLU teacher of {} trained by hecc train (test accuracy {:.2}%)",
            spec.name,
            100.0 * t.test_accuracy
        );
        write_model(&t.graph, tw, Some((&ts, &desc)))?;
        let pred = eval_predictions(&load_model(&ts)?, &data.test, 1000)?;
        teacher_check = Some(ReloadCheck {
            spec: ts.clone(),
            agree: agreement(&pred, &t.predictions),
            total: pred.len(),
            accuracy: accuracy(&pred, &data.test.labels),
        });
        teacher_written = Some((tw.clone(), ts));
    }

    let student = &outcome.student;
    let changed = opts.config.granularity.is_some() || opts.config.relu;
    let (spec_written, reload_spec) = if changed {
        let sp = changed_spec_path(&opts.spec, &opts.output, opts.spec_out.as_deref())?;
        let acts = match opts.config.granularity {
            _ if opts.config.relu => "ReLU activations".to_string(),
            Some(g) => format!("{} quadratic activations", g.as_str()),
            None => "its activations".to_string(),
        };
        let desc = format!(
            "{} with {acts}, trained by hecc train (test accuracy {:.2}%)",
            spec.name,
            100.0 * student.test_accuracy
        );
        write_model(&student.graph, &opts.output, Some((&sp, &desc)))?;
        (Some(sp.clone()), sp)
    } else {
        write_model(&student.graph, &opts.output, None)?;
        (None, opts.spec.clone())
    };

    // Reload through the YAML front end and compare with the reference evaluator.
    let reloaded = if spec_written.is_some() {
        load_model(&reload_spec)?
    } else {
        let mut g = parse_spec_structure(&text, &opts.spec.display().to_string())?;
        g.weights = load_weights(&opts.output)
            .map_err(|e| miette!("cannot reload {}: {e}", opts.output.display()))?;
        hecc_ir::tensor::verify(&g).map_err(|errs| {
            miette!(
                "the written weights do not fit the spec: {}",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        g
    };
    let pred = eval_predictions(&reloaded, &data.test, 1000)?;
    let check = ReloadCheck {
        spec: reload_spec,
        agree: agreement(&pred, &student.predictions),
        total: pred.len(),
        accuracy: accuracy(&pred, &data.test.labels),
    };
    Ok(TrainSummary {
        student: outcome.student,
        teacher: outcome.teacher,
        weights: opts.output.clone(),
        spec_written,
        teacher_written,
        teacher_check,
        check,
    })
}

/// The per-epoch history of a run as JSON: settings, then per network the epochs (loss,
/// training, validation and test accuracy, times), the kept epoch and the final accuracy.
fn history_json(
    name: &str,
    opts: &TrainOptions,
    teacher: &Option<Trained>,
    student: &Trained,
) -> String {
    let net = |t: &Trained| {
        let epochs: Vec<serde_json::Value> = t
            .history
            .iter()
            .map(|e| {
                serde_json::json!({
                    "epoch": e.epoch,
                    "lr": e.lr,
                    "loss": e.loss,
                    "train_accuracy": e.train_accuracy,
                    "val_accuracy": e.val_accuracy,
                    "test_accuracy": e.test_accuracy,
                    "seconds": e.seconds,
                    "train_seconds": e.train_seconds,
                    "images": e.images,
                })
            })
            .collect();
        serde_json::json!({
            "epochs": epochs,
            "best_epoch": t.best_epoch,
            "test_accuracy": t.test_accuracy,
            "seconds": t.seconds,
        })
    };
    let c = &opts.config;
    let v = serde_json::json!({
        "network": name,
        "spec": opts.spec.display().to_string(),
        "data": opts.data.display().to_string(),
        "granularity": c.granularity.map(|g| g.as_str()),
        "relu": c.relu,
        "kd": c.kd.map(|k| serde_json::json!({"temperature": k.temperature, "alpha": k.alpha})),
        "epochs": c.epochs,
        "batch_size": c.batch_size,
        "lr": c.lr,
        "seed": c.seed,
        "validation": c.validation,
        "patience": c.patience,
        "threads": rayon::current_num_threads(),
        "teacher": teacher.as_ref().map(net),
        "student": net(student),
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// How many positions of `a` and `b` hold the same prediction.
fn agreement(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// The text `hecc train` prints at the end.
pub fn render(s: &TrainSummary) -> String {
    let mut out = String::new();
    if let Some(t) = &s.teacher {
        out.push_str(&format!(
            "teacher (ReLU): test accuracy {:.2}% ({:.1} s)\n",
            100.0 * t.test_accuracy,
            t.seconds
        ));
    }
    if let Some((w, sp)) = &s.teacher_written {
        out.push_str(&format!(
            "teacher weights written to {} (spec {})\n",
            w.display(),
            sp.display()
        ));
    }
    if let Some(c) = &s.teacher_check {
        out.push_str(&format!(
            "teacher reloaded through {}: reference evaluator agrees on {}/{} predictions, accuracy {:.2}%\n",
            c.spec.display(),
            c.agree,
            c.total,
            100.0 * c.accuracy
        ));
    }
    let kept = if s.student.history.len() > 1 && s.student.best_epoch != s.student.history.len() {
        format!(", weights of epoch {}", s.student.best_epoch)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "student: test accuracy {:.2}% on {} images ({:.1} s{kept})\n",
        100.0 * s.student.test_accuracy,
        s.student.predictions.len(),
        s.student.seconds
    ));
    out.push_str(&format!("weights written to {}\n", s.weights.display()));
    if let Some(sp) = &s.spec_written {
        out.push_str(&format!("spec written to {}\n", sp.display()));
    }
    out.push_str(&format!(
        "reloaded through {}: reference evaluator agrees on {}/{} predictions, accuracy {:.2}%\n",
        s.check.spec.display(),
        s.check.agree,
        s.check.total,
        100.0 * s.check.accuracy
    ));
    out
}
