//! Losses: softmax cross-entropy and the knowledge-distillation loss, with their gradients.
//!
//! Every function takes class scores `(N, K)` (row-major) and returns the mean loss over the
//! batch (in `f64`) and its gradient with respect to the scores. [`kd_loss`] is
//! `alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, label)` with the
//! teacher scores treated as constants (no gradient reaches the teacher).

use crate::kernels::Real;
use crate::TrainError;

/// A mean loss and its gradient with respect to the student's scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss<F> {
    /// Mean over the batch.
    pub value: f64,
    /// `d value / d scores`, `(N, K)`.
    pub grad: Vec<F>,
}

/// Row-wise `log softmax` of `(N, K)` scores divided by `t` (max-shifted), in `f64`.
pub fn log_softmax<F: Real>(z: &[F], k: usize, t: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(z.len());
    for row in z.chunks(k.max(1)) {
        let m = row
            .iter()
            .map(|v| v.f64() / t)
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = row
            .iter()
            .map(|v| (v.f64() / t - m).exp())
            .sum::<f64>()
            .ln();
        out.extend(row.iter().map(|v| v.f64() / t - m - lse));
    }
    out
}

fn check<F>(z: &[F], k: usize, labels: &[usize]) -> Result<usize, TrainError> {
    if k == 0 || z.len() != labels.len() * k {
        return Err(TrainError::Config(format!(
            "{} scores do not match {} labels of {k} classes",
            z.len(),
            labels.len()
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= k) {
        return Err(TrainError::Config(format!(
            "label {l} does not fit a network with {k} outputs"
        )));
    }
    Ok(labels.len().max(1))
}

/// Mean softmax cross-entropy of scores `(N, K)` against integer labels.
pub fn cross_entropy<F: Real>(z: &[F], k: usize, labels: &[usize]) -> Result<Loss<F>, TrainError> {
    let n = check(z, k, labels)?;
    let lp = log_softmax(z, k, 1.0);
    let mut value = 0.0;
    let mut grad = Vec::with_capacity(z.len());
    for (row, &l) in lp.chunks(k).zip(labels) {
        value -= row[l];
        for (c, &v) in row.iter().enumerate() {
            let y = if c == l { 1.0 } else { 0.0 };
            grad.push(F::of((v.exp() - y) / n as f64));
        }
    }
    Ok(Loss {
        value: value / n as f64,
        grad,
    })
}

/// Mean `KL(softmax(teacher / T) || softmax(student / T))` over the batch.
pub fn kl_div<F: Real>(
    student: &[F],
    teacher: &[F],
    k: usize,
    temperature: f64,
) -> Result<Loss<F>, TrainError> {
    if k == 0 || student.len() != teacher.len() || !student.len().is_multiple_of(k) {
        return Err(TrainError::Config(format!(
            "student scores ({}) and teacher scores ({}) do not match in {k} classes",
            student.len(),
            teacher.len()
        )));
    }
    let n = (student.len() / k).max(1) as f64;
    let lt = log_softmax(teacher, k, temperature);
    let ls = log_softmax(student, k, temperature);
    let mut value = 0.0;
    let mut grad = Vec::with_capacity(student.len());
    for (a, b) in lt.iter().zip(&ls) {
        let pt = a.exp();
        value += pt * (a - b);
        // d/ds of -sum pt * log softmax(s / T) is (softmax(s / T) - pt) / T.
        grad.push(F::of((b.exp() - pt) / (temperature * n)));
    }
    Ok(Loss {
        value: value / n,
        grad,
    })
}

/// Knowledge-distillation loss:
/// `alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)`.
pub fn kd_loss<F: Real>(
    student: &[F],
    teacher: &[F],
    k: usize,
    labels: &[usize],
    temperature: f64,
    alpha: f64,
) -> Result<Loss<F>, TrainError> {
    if temperature.is_nan() || temperature <= 0.0 || !(0.0..=1.0).contains(&alpha) {
        return Err(TrainError::Config(format!(
            "KD needs T > 0 and 0 <= alpha <= 1 (T = {temperature}, alpha = {alpha})"
        )));
    }
    let kl = kl_div(student, teacher, k, temperature)?;
    let ce = cross_entropy(student, k, labels)?;
    let (wk, wc) = (alpha * temperature * temperature, 1.0 - alpha);
    Ok(Loss {
        value: wk * kl.value + wc * ce.value,
        grad: kl
            .grad
            .iter()
            .zip(&ce.grad)
            .map(|(&a, &b)| F::of(wk * a.f64() + wc * b.f64()))
            .collect(),
    })
}
