//! The training loop: teacher (optional), student, final evaluation in `f64`.
//!
//! [`train`] takes the spec's graph, a dataset split and a [`TrainConfig`]. With knowledge
//! distillation ([`TrainConfig::kd`]) a ReLU teacher ([`crate::net::with_relu`]) is either
//! loaded (`teacher_weights`) or trained first with plain cross-entropy; the student (the spec's
//! network, with `--granularity` applied by [`crate::net::with_granularity`]) is then trained
//! with [`crate::loss::kd_loss`], or with cross-entropy alone without KD. The optimiser is
//! [`NesterovSgd`] with a cosine learning-rate schedule (per epoch). Progress is reported
//! through a callback ([`Event`]); nothing is printed here.
//!
//! After training, the network is converted to `f64` (weights rounded to `f32` first, as they
//! are stored) and evaluated on the test split: those are the reported accuracy and
//! predictions, computed on exactly the values the exported safetensors hold.
//!
//! Determinism: initialisation and shuffling use ChaCha8 seeded from [`TrainConfig::seed`];
//! the same seed, data and thread count give the same weights.

use std::time::Instant;

use hecc_ir::tensor::{Granularity, Graph, Weights};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Splits};
use crate::kernels::Real;
use crate::loss::{cross_entropy, kd_loss};
use crate::net::{argmax_rows, with_granularity, with_relu, Init, Mode, Net};
use crate::optim::NesterovSgd;
use crate::TrainError;

/// Knowledge-distillation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KdConfig {
    /// Softmax temperature `T > 0`.
    pub temperature: f64,
    /// Weight `alpha` in `[0, 1]` of the distillation term.
    pub alpha: f64,
}

/// Hyper-parameters of a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Student epochs (at least 1).
    pub epochs: usize,
    /// Teacher epochs when the teacher is trained here.
    pub teacher_epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Initial learning rate (cosine-annealed to 0 over the epochs).
    pub lr: f64,
    /// Nesterov momentum.
    pub momentum: f64,
    /// L2 on conv/dense/batch-norm parameters.
    pub weight_decay: f64,
    /// L2 on activation coefficients.
    pub coeff_l2: f64,
    /// Global gradient-norm clip (0 = none).
    pub clip_norm: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Override of the quadratic activations' granularity (relus become quadratics too).
    pub granularity: Option<Granularity>,
    /// Train the ReLU network instead ([`with_relu`]: every activation a ReLU), e.g. a
    /// teacher to reuse with `teacher_weights` for several students.
    pub relu: bool,
    /// Knowledge distillation from a ReLU teacher, if set.
    pub kd: Option<KdConfig>,
    /// Initial quadratic coefficients.
    pub quad_init: [f64; 3],
    /// Training precision (`F32` normally, `F64` for exact checks).
    pub precision: Precision,
    /// Train on only the first this many training images.
    pub train_limit: Option<usize>,
    /// Evaluate the test split after every epoch (otherwise only at the end).
    pub eval_each_epoch: bool,
    /// Hold out the last this many training images (after [`TrainConfig::train_limit`]) as a
    /// validation split: evaluated after every epoch, and the weights of the epoch with the
    /// best validation accuracy are the ones kept (0 = no validation, the last epoch's weights).
    pub validation: usize,
    /// Stop when the validation accuracy has not improved for this many epochs (needs
    /// [`TrainConfig::validation`]).
    pub patience: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            teacher_epochs: 5,
            batch_size: 64,
            lr: 0.02,
            momentum: 0.9,
            weight_decay: 5e-4,
            coeff_l2: 5e-4,
            clip_norm: 5.0,
            seed: 0,
            granularity: None,
            relu: false,
            kd: None,
            quad_init: Init::default().quad,
            precision: Precision::F32,
            train_limit: None,
            eval_each_epoch: true,
            validation: 0,
            patience: None,
        }
    }
}

/// The element type training computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// `f32`: the normal training precision.
    F32,
    /// `f64`: exact checks (the final evaluation is always `f64`).
    F64,
}

/// Which network is being trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The ReLU teacher.
    Teacher,
    /// The HE-friendly student.
    Student,
}

impl Phase {
    /// `teacher` or `student`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Teacher => "teacher",
            Phase::Student => "student",
        }
    }
}

/// Statistics of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Which network.
    pub phase: Phase,
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (on the mini-batches, in training mode).
    pub train_accuracy: f64,
    /// Test accuracy after the epoch (if evaluated).
    pub test_accuracy: Option<f64>,
    /// Validation accuracy after the epoch (when a validation split is held out).
    pub val_accuracy: Option<f64>,
    /// Wall-clock seconds of the epoch (training and evaluation).
    pub seconds: f64,
    /// Wall-clock seconds of the training steps alone (forward, backward, update).
    pub train_seconds: f64,
    /// Training images processed in the epoch.
    pub images: usize,
}

/// Progress reported to the caller.
#[derive(Clone, Debug)]
pub enum Event {
    /// A network starts training.
    Start {
        /// Which network.
        phase: Phase,
        /// Epochs to run.
        epochs: usize,
        /// Mini-batches per epoch.
        batches: usize,
    },
    /// A mini-batch was processed.
    Batch {
        /// Which network.
        phase: Phase,
        /// Epoch (1-based).
        epoch: usize,
        /// Batch index (0-based).
        batch: usize,
        /// Running mean loss of the epoch.
        loss: f64,
        /// Running training accuracy of the epoch.
        accuracy: f64,
    },
    /// An epoch finished.
    Epoch(EpochStats),
    /// Training stopped early: no validation improvement since `best_epoch`.
    EarlyStop {
        /// Which network.
        phase: Phase,
        /// The last epoch run.
        epoch: usize,
        /// The epoch whose weights are kept.
        best_epoch: usize,
    },
    /// A teacher was loaded instead of trained; its test accuracy.
    TeacherLoaded {
        /// Test accuracy of the loaded teacher.
        test_accuracy: f64,
    },
}

/// A trained network.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The network's graph with the trained weights (as stored: `f32` values).
    pub graph: Graph,
    /// Test accuracy of the final `f64` evaluation.
    pub test_accuracy: f64,
    /// Predicted class of every test image (final `f64` evaluation).
    pub predictions: Vec<usize>,
    /// Per-epoch statistics (empty for a loaded teacher).
    pub history: Vec<EpochStats>,
    /// Wall-clock training seconds.
    pub seconds: f64,
    /// The epoch whose weights were kept (the best on validation, else the last; 0 for a
    /// loaded teacher).
    pub best_epoch: usize,
}

/// Result of [`train`].
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The HE-friendly network.
    pub student: Trained,
    /// The ReLU teacher, when knowledge distillation was used.
    pub teacher: Option<Trained>,
}

fn check_config(cfg: &TrainConfig) -> Result<(), TrainError> {
    let bad = |m: &str| Err(TrainError::Config(m.into()));
    if cfg.epochs == 0 {
        return bad("epochs must be at least 1");
    }
    if cfg.batch_size == 0 {
        return bad("batch size must be at least 1");
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return bad("learning rate must be positive");
    }
    if cfg.relu && (cfg.granularity.is_some() || cfg.kd.is_some()) {
        return bad("the ReLU network takes neither a quadratic granularity nor distillation");
    }
    if cfg.patience == Some(0) {
        return bad("patience must be at least 1 epoch");
    }
    if cfg.patience.is_some() && cfg.validation == 0 {
        return bad("early stopping (patience) needs a validation split");
    }
    if !(0.0..1.0).contains(&cfg.momentum) {
        return bad("momentum must be in [0, 1)");
    }
    if let Some(kd) = cfg.kd {
        if kd.temperature.is_nan() || kd.temperature <= 0.0 || !(0.0..=1.0).contains(&kd.alpha) {
            return bad("KD needs a temperature > 0 and alpha in [0, 1]");
        }
        if cfg.teacher_epochs == 0 {
            return bad("teacher epochs must be at least 1");
        }
    }
    Ok(())
}

/// Predicted classes of `net` on `ds` (inference mode), in batches of `batch` images.
pub fn predict<F: Real>(
    net: &mut Net<F>,
    ds: &Dataset,
    batch: usize,
) -> Result<Vec<usize>, TrainError> {
    let mut out = Vec::with_capacity(ds.len());
    let idx: Vec<usize> = (0..ds.len()).collect();
    let k = net.classes();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = ds.batch::<F>(chunk)?;
        let z = net.logits(&x, chunk.len())?;
        out.extend(argmax_rows(&z, k));
    }
    Ok(out)
}

/// Fraction of `pred` equal to the labels.
pub fn accuracy(pred: &[usize], labels: &[u8]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let ok = pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    ok as f64 / labels.len() as f64
}

/// Final evaluation: the network in `f64` with its weights as stored (`f32`).
fn finish<F: Real>(
    net: &Net<F>,
    test: &Dataset,
    history: Vec<EpochStats>,
    seconds: f64,
    best_epoch: usize,
) -> Result<Trained, TrainError> {
    let mut n64 = net.to_precision::<f32>().to_precision::<f64>();
    let predictions = predict(&mut n64, test, 500)?;
    Ok(Trained {
        graph: n64.export()?,
        test_accuracy: accuracy(&predictions, &test.labels),
        predictions,
        history,
        seconds,
        best_epoch,
    })
}

/// Trains `net` for `epochs` epochs, with `teacher` (if any) as the distillation target.
#[allow(clippy::too_many_arguments)]
fn fit<F: Real>(
    net: &mut Net<F>,
    teacher: Option<&mut Net<F>>,
    train: &Dataset,
    val: Option<&Dataset>,
    test: &Dataset,
    cfg: &TrainConfig,
    epochs: usize,
    phase: Phase,
    on: &mut dyn FnMut(&Event),
) -> Result<(Vec<EpochStats>, usize), TrainError> {
    let n = train.len();
    if n == 0 {
        return Err(TrainError::Config("the training set is empty".into()));
    }
    let batches = n.div_ceil(cfg.batch_size);
    on(&Event::Start {
        phase,
        epochs,
        batches,
    });
    let tag = match phase {
        Phase::Teacher => 0x7eac_4e20,
        Phase::Student => 0x5707_e417,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ tag);
    let mut opt = NesterovSgd::<F>::new(
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
        cfg.coeff_l2,
        cfg.clip_norm,
    );
    let mut history = Vec::with_capacity(epochs);
    let mut order: Vec<usize> = (0..n).collect();
    // The teacher runs in inference mode, so its scores depend on the image alone: computed
    // once for the whole training set, not once per epoch.
    let teacher_scores = match (teacher, cfg.kd) {
        (Some(t), Some(_)) => {
            let k = t.classes();
            let mut z = Vec::with_capacity(n * k);
            for chunk in order.chunks(500) {
                let (x, _) = train.batch::<F>(chunk)?;
                z.extend(t.logits(&x, chunk.len())?);
            }
            Some((z, k))
        }
        _ => None,
    };
    // Best validation accuracy so far, its epoch and the weights of that epoch.
    let mut best: Option<(f64, usize, Net<F>)> = None;
    for epoch in 1..=epochs {
        let t0 = Instant::now();
        opt.lr = cfg.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * (epoch - 1) as f64 / epochs as f64).cos());
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        for (bi, chunk) in order.chunks(cfg.batch_size).enumerate() {
            // A trailing batch of one image is skipped (it is in other epochs' batches):
            // batch statistics of one value per channel are undefined.
            if chunk.len() == 1 && n > 1 {
                continue;
            }
            let (x, y) = train.batch::<F>(chunk)?;
            let tape = net.forward(&x, chunk.len(), Mode::Train)?;
            let k = tape.classes();
            let loss = match (&teacher_scores, cfg.kd) {
                (Some((z, tk)), Some(kd)) => {
                    let tz: Vec<F> = chunk
                        .iter()
                        .flat_map(|&i| z[i * tk..(i + 1) * tk].iter().copied())
                        .collect();
                    kd_loss(tape.logits(), &tz, k, &y, kd.temperature, kd.alpha)?
                }
                _ => cross_entropy(tape.logits(), k, &y)?,
            };
            let lv = loss.value;
            if !lv.is_finite() {
                return Err(TrainError::Diverged {
                    epoch,
                    batch: bi,
                    loss: lv,
                });
            }
            let grads = net.backward(&tape, &loss.grad)?;
            opt.step(net, &grads);
            let pred = tape.argmax();
            net.recycle(tape);
            let lab = &y;
            correct += pred.iter().zip(lab).filter(|(a, b)| a == b).count();
            seen += chunk.len();
            loss_sum += lv * chunk.len() as f64;
            on(&Event::Batch {
                phase,
                epoch,
                batch: bi,
                loss: loss_sum / seen as f64,
                accuracy: correct as f64 / seen as f64,
            });
        }
        let train_seconds = t0.elapsed().as_secs_f64();
        let val_accuracy = match val {
            Some(v) => Some(accuracy(&predict(net, v, 500)?, &v.labels)),
            None => None,
        };
        let test_accuracy = if cfg.eval_each_epoch || epoch == epochs {
            let p = predict(net, test, 500)?;
            Some(accuracy(&p, &test.labels))
        } else {
            None
        };
        let stats = EpochStats {
            phase,
            epoch,
            lr: opt.lr,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            test_accuracy,
            val_accuracy,
            seconds: t0.elapsed().as_secs_f64(),
            train_seconds,
            images: seen,
        };
        on(&Event::Epoch(stats.clone()));
        history.push(stats);
        if let Some(acc) = val_accuracy {
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, net.clone()));
            }
            let best_epoch = best.as_ref().map_or(epoch, |b| b.1);
            if cfg.patience.is_some_and(|p| epoch - best_epoch >= p) {
                on(&Event::EarlyStop {
                    phase,
                    epoch,
                    best_epoch,
                });
                break;
            }
        }
    }
    let kept = match best {
        Some((_, e, b)) => {
            *net = b;
            e
        }
        None => history.len(),
    };
    Ok((history, kept))
}

/// Trains the spec's network (and its teacher for KD) on `data`.
///
/// `spec` is the spec's tensor graph (its weight table, if any, gives initial values);
/// `teacher_weights` are the weights of a trained ReLU teacher (`--teacher`), used instead of
/// training one when KD is on. Returns the trained student and teacher with their test
/// accuracies and predictions.
pub fn train(
    spec: &Graph,
    data: &Splits,
    teacher_weights: Option<&Weights>,
    cfg: &TrainConfig,
    on: &mut dyn FnMut(&Event),
) -> Result<Outcome, TrainError> {
    check_config(cfg)?;
    match cfg.precision {
        Precision::F32 => train_in::<f32>(spec, data, teacher_weights, cfg, on),
        Precision::F64 => train_in::<f64>(spec, data, teacher_weights, cfg, on),
    }
}

fn train_in<F: Real>(
    spec: &Graph,
    data: &Splits,
    teacher_weights: Option<&Weights>,
    cfg: &TrainConfig,
    on: &mut dyn FnMut(&Event),
) -> Result<Outcome, TrainError> {
    let limited = match cfg.train_limit {
        Some(k) => data.train.slice(0, k),
        None => data.train.clone(),
    };
    if cfg.validation >= limited.len() {
        return Err(TrainError::Config(format!(
            "a validation split of {} images leaves nothing to train on ({} training images)",
            cfg.validation,
            limited.len()
        )));
    }
    let fit_len = limited.len() - cfg.validation;
    let train_set = limited.slice(0, fit_len);
    let val_set = (cfg.validation > 0).then(|| limited.slice(fit_len, cfg.validation));
    let val = val_set.as_ref();
    let input_shape = spec
        .inputs
        .first()
        .and_then(|&i| match &spec.node(i)?.op {
            hecc_ir::tensor::Op::Input { shape, .. } => Some(shape.0.clone()),
            _ => None,
        })
        .ok_or_else(|| TrainError::Graph("the graph has no input node".into()))?;
    if input_shape != train_set.shape.to_vec() {
        return Err(TrainError::Config(format!(
            "the data has images of shape {:?}, the network expects {input_shape:?}",
            train_set.shape
        )));
    }
    let student_graph = match cfg.granularity {
        _ if cfg.relu => with_relu(spec),
        Some(g) => with_granularity(spec, g),
        None => spec.clone(),
    };
    let init = Init {
        seed: cfg.seed,
        quad: cfg.quad_init,
    };
    let mut teacher = None;
    let mut teacher_net = None;
    if cfg.kd.is_some() {
        let mut tg = with_relu(spec);
        let t0 = Instant::now();
        let (net, history) = match teacher_weights {
            Some(w) => {
                tg.weights = w.clone();
                let net = Net::<F>::new(tg, &init)?;
                for name in net.export()?.weights.keys() {
                    if !w.contains_key(name) {
                        return Err(TrainError::Weight {
                            name: name.clone(),
                            message: "missing from the teacher weights".into(),
                        });
                    }
                }
                (net, (Vec::new(), 0))
            }
            None => {
                tg.weights.clear();
                let mut net = Net::<F>::new(tg, &init)?;
                let h = fit(
                    &mut net,
                    None,
                    &train_set,
                    val,
                    &data.test,
                    cfg,
                    cfg.teacher_epochs,
                    Phase::Teacher,
                    on,
                )?;
                (net, h)
            }
        };
        let (history, kept) = history;
        let loaded = history.is_empty();
        let t = finish(&net, &data.test, history, t0.elapsed().as_secs_f64(), kept)?;
        if loaded {
            on(&Event::TeacherLoaded {
                test_accuracy: t.test_accuracy,
            });
        }
        teacher = Some(t);
        teacher_net = Some(net);
    }
    let t0 = Instant::now();
    let mut student = Net::<F>::new(student_graph, &init)?;
    let (history, kept) = fit(
        &mut student,
        teacher_net.as_mut(),
        &train_set,
        val,
        &data.test,
        cfg,
        cfg.epochs,
        Phase::Student,
        on,
    )?;
    let student = finish(
        &student,
        &data.test,
        history,
        t0.elapsed().as_secs_f64(),
        kept,
    )?;
    Ok(Outcome { student, teacher })
}

/// Convenience: `(N, K)` scores of `net` on a batch of `n` images (inference mode), as `f64`
/// rows.
pub fn scores<F: Real>(net: &mut Net<F>, x: &[F], n: usize) -> Result<Vec<Vec<f64>>, TrainError> {
    let k = net.classes().max(1);
    let z = net.logits(x, n)?;
    Ok(z.chunks(k)
        .map(|r| r.iter().map(|v| v.f64()).collect())
        .collect())
}
