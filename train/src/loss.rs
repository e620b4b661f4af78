//! Losses: softmax cross-entropy and the knowledge-distillation loss.
//!
//! All functions take class scores `(N, K)` and return a scalar tensor (mean over the batch)
//! that can be differentiated. [`kd_loss`] is
//! `alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, label)`
//! with the teacher scores treated as constants (no gradient reaches the teacher).

use candle_core::{DType, Tensor};

use crate::TrainError;

/// Row-wise `log softmax` of `(N, K)` scores (max-shifted for stability).
pub fn log_softmax(z: &Tensor) -> Result<Tensor, TrainError> {
    let m = z.max_keepdim(1)?.detach();
    let shifted = z.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// One-hot `(N, K)` matrix of the labels (a `(N,)` integer tensor), in `dtype`.
pub fn one_hot(labels: &Tensor, k: usize, dtype: DType) -> Result<Tensor, TrainError> {
    let l = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    let mut v = vec![0f64; l.len() * k];
    for (i, &c) in l.iter().enumerate() {
        let c = c as usize;
        if c >= k {
            return Err(TrainError::Config(format!(
                "label {c} does not fit a network with {k} outputs"
            )));
        }
        v[i * k + c] = 1.0;
    }
    Ok(Tensor::from_vec(v, (l.len(), k), labels.device())?.to_dtype(dtype)?)
}

/// Mean softmax cross-entropy of scores `(N, K)` against integer labels `(N,)`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, TrainError> {
    let (n, k) = logits.dims2()?;
    let oh = one_hot(labels, k, logits.dtype())?;
    let lp = log_softmax(logits)?;
    Ok((lp * oh)?.sum_all()?.affine(-1.0 / n.max(1) as f64, 0.0)?)
}

/// Mean `KL(softmax(teacher / T) || softmax(student / T))` over the batch; the teacher is
/// detached.
pub fn kl_div(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor, TrainError> {
    let (n, _) = student.dims2()?;
    let lt = log_softmax(&teacher.detach().affine(1.0 / temperature, 0.0)?)?;
    let ls = log_softmax(&student.affine(1.0 / temperature, 0.0)?)?;
    let pt = lt.exp()?;
    let kl = (pt * (lt - ls)?)?.sum_all()?;
    Ok(kl.affine(1.0 / n.max(1) as f64, 0.0)?)
}

/// Knowledge-distillation loss:
/// `alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)`.
pub fn kd_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor, TrainError> {
    if temperature.is_nan() || temperature <= 0.0 || !(0.0..=1.0).contains(&alpha) {
        return Err(TrainError::Config(format!(
            "KD needs T > 0 and 0 <= alpha <= 1 (T = {temperature}, alpha = {alpha})"
        )));
    }
    let kl = kl_div(student, teacher, temperature)?;
    let ce = cross_entropy(student, labels)?;
    Ok((kl.affine(alpha * temperature * temperature, 0.0)? + ce.affine(1.0 - alpha, 0.0)?)?)
}
