//! The batch lowering of the ops with the most code: inputs, convolutions and dense layers.
//! Slot `i` of every ciphertext holds image `i`, so each output element is one
//! multiply-accumulate of input elements and scalar weights: no rotations.

use super::lazy::{Emitter, Lazy};
use super::{expand, Elem};
use hecc_ir::he::{HeError, LayoutId, Level, LogScale};
use hecc_ir::tensor::{Normalization, Shape};

/// A convolution's geometry.
pub(super) struct Conv {
    pub(super) out_channels: usize,
    pub(super) groups: usize,
    pub(super) kernel: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) padding: [usize; 4],
}

/// One input ciphertext per element (`(log_scale, slots, layout)` of the batch circuit), with
/// the input's normalisation carried as a pending affine factor.
pub(super) fn input(
    em: &mut Emitter<'_>,
    name: &str,
    shape: &Shape,
    norm: &Normalization,
    (log_scale, slots, layout): (LogScale, u32, LayoutId),
) -> Result<Vec<Elem>, HeError> {
    let c = shape.first().copied().unwrap_or(1).max(1);
    let per_c = shape.numel() / c;
    let mut v = Vec::with_capacity(shape.numel());
    for k in 0..shape.numel() {
        let ch = k / per_c.max(1);
        let pick = |xs: &Vec<f64>, d: f64| {
            if xs.len() == 1 {
                xs[0]
            } else {
                xs.get(ch).copied().unwrap_or(d)
            }
        };
        let (mean, std) = (pick(&norm.mean, 0.0), pick(&norm.std, 1.0));
        let ct = em
            .module
            .input(name, k as u32, Level(0), log_scale, slots, layout)?;
        em.fresh(ct);
        v.push(Elem::L(Lazy {
            ct: Some(ct),
            m: 1.0 / std,
            o: -mean / std,
        }));
    }
    Ok(v)
}

/// A convolution of `x` (`[in_shape, out_shape]` as `[C, H, W]`): one multiply-accumulate per
/// output element over the taps inside the image.
pub(super) fn conv2d(
    em: &mut Emitter<'_>,
    x: &[Elem],
    [in_shape, out_shape]: [&Shape; 2],
    conv: &Conv,
    wt: &[f64],
    bs: Option<&[f64]>,
) -> Result<Vec<Elem>, HeError> {
    let (c_in, h, wd) = (in_shape[0], in_shape[1], in_shape[2]);
    let (oh, ow) = (out_shape[1], out_shape[2]);
    let (kh, kw) = (conv.kernel[0], conv.kernel[1]);
    let (stride, padding) = (conv.stride, conv.padding);
    let cg = c_in / conv.groups;
    let og = conv.out_channels / conv.groups;
    let mut v = Vec::with_capacity(out_shape.numel());
    for o in 0..conv.out_channels {
        let grp = o / og.max(1);
        for y in 0..oh {
            for xx in 0..ow {
                let mut terms = Vec::with_capacity(cg * kh * kw);
                for ci in 0..cg {
                    let c = grp * cg + ci;
                    for i in 0..kh {
                        let iy = (y * stride[0] + i) as isize - padding[0] as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for j in 0..kw {
                            let ix = (xx * stride[1] + j) as isize - padding[1] as isize;
                            if ix < 0 || ix >= wd as isize {
                                continue;
                            }
                            let wv = wt[((o * cg + ci) * kh + i) * kw + j];
                            terms.push((&x[(c * h + iy as usize) * wd + ix as usize], wv));
                        }
                    }
                }
                let (terms, extra) = expand(&terms);
                let b = bs.map_or(0.0, |b| b[o]) + extra;
                v.push(Elem::L(em.mac(&terms, b)?));
            }
        }
    }
    Ok(v)
}

/// A dense layer: one multiply-accumulate of all inputs per output.
pub(super) fn dense(
    em: &mut Emitter<'_>,
    x: &[Elem],
    out_features: usize,
    wt: &[f64],
    bs: Option<&[f64]>,
) -> Result<Vec<Elem>, HeError> {
    let n_in = x.len();
    let mut v = Vec::with_capacity(out_features);
    for o in 0..out_features {
        let terms: Vec<(&Elem, f64)> = (0..n_in).map(|i| (&x[i], wt[o * n_in + i])).collect();
        let (terms, extra) = expand(&terms);
        v.push(Elem::L(em.mac(&terms, bs.map_or(0.0, |b| b[o]) + extra)?));
    }
    Ok(v)
}
