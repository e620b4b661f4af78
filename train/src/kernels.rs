//! The numerical kernels of the trainer: forward and backward passes of convolution, pooling
//! and dense layers over batches in `NCHW` order, on plain slices.
//!
//! Convolution is lowered per image to im2col and a GEMM (`matrixmultiply` through ndarray's
//! `general_mat_mul`); a batch is split into one contiguous chunk of images per rayon thread,
//! and weight gradients are summed over the chunks in chunk order, so a run is deterministic
//! for a given thread count. 1x1 convolutions with stride 1 and no padding skip im2col.

use std::fmt::Debug;
use std::ops::{AddAssign, MulAssign, Neg, SubAssign};

use hecc_ir::tensor::window::Window;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::TrainError;

/// The element types the trainer computes in: `f32` (training) and `f64` (exact checks and
/// the final evaluation).
pub trait Real:
    ndarray::LinalgScalar
    + PartialOrd
    + Default
    + Debug
    + Send
    + Sync
    + AddAssign
    + SubAssign
    + MulAssign
    + Neg<Output = Self>
{
    /// Rounds an `f64` to this type.
    fn of(x: f64) -> Self;
    /// Widens to `f64`.
    fn f64(self) -> f64;
    /// Square root.
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

fn shape_err(what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Backend(format!("{what}: {e}"))
}

fn view<F>(s: &[F], r: usize, c: usize) -> Result<ArrayView2<'_, F>, TrainError> {
    ArrayView2::from_shape((r, c), s).map_err(|e| shape_err("matrix view", e))
}

fn view_mut<F>(s: &mut [F], r: usize, c: usize) -> Result<ArrayViewMut2<'_, F>, TrainError> {
    ArrayViewMut2::from_shape((r, c), s).map_err(|e| shape_err("matrix view", e))
}

/// Number of images per parallel chunk for a batch of `n`.
fn chunk_len(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Geometry of a 2-D convolution (or pooling window) on one image.
#[derive(Clone, Copy, Debug)]
pub struct Conv {
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub co: usize,
    /// Groups.
    pub groups: usize,
    /// The window: input and output planes, kernel, stride, padding.
    pub win: Window,
}

impl Conv {
    fn cig(&self) -> usize {
        self.c / self.groups.max(1)
    }
    fn cog(&self) -> usize {
        self.co / self.groups.max(1)
    }
    /// Rows of one group's im2col matrix.
    fn k(&self) -> usize {
        self.cig() * self.win.kh * self.win.kw
    }
    fn ohw(&self) -> usize {
        self.win.positions()
    }
    fn direct(&self) -> bool {
        self.win.is_identity()
    }
    fn plane(&self) -> usize {
        self.win.h * self.win.w
    }
    fn in_len(&self) -> usize {
        self.c * self.plane()
    }
    fn out_len(&self) -> usize {
        self.co * self.ohw()
    }

    /// Images per matrix product: enough for about 512 columns, so that small planes (7x7,
    /// 14x14) still make products large enough to run at full speed.
    fn block(&self) -> usize {
        (512 / self.ohw().max(1)).max(1)
    }

    /// im2col of group `g` of the `m` images `xs` into `col`: `k()` rows of `m * ohw()`
    /// columns, image `t`'s columns at `t * ohw()`.
    fn gather<F: Real>(&self, xs: &[F], g: usize, m: usize, col: &mut [F]) {
        let (span, ohw, il) = (self.cig() * self.plane(), self.ohw(), self.in_len());
        for t in 0..m {
            let planes = &xs[t * il + g * span..][..span];
            self.win
                .im2col(planes, self.cig(), F::zero(), &mut col[t * ohw..], m * ohw);
        }
    }

    /// The im2col matrix of group `g` of the `m` images `xb` (`k()` rows, `m * ohw()` columns):
    /// the images themselves for one image under a 1x1 window, else gathered into `col`.
    fn columns<'a, F: Real>(
        &self,
        xb: &'a [F],
        g: usize,
        m: usize,
        col: &'a mut [F],
    ) -> Result<ArrayView2<'a, F>, TrainError> {
        let (k, ohw) = (self.k(), self.ohw());
        if m == 1 && self.direct() {
            return view(&xb[g * k * ohw..][..k * ohw], k, ohw);
        }
        self.gather(xb, g, m, col);
        view(&col[..k * m * ohw], k, m * ohw)
    }

    /// `y = conv(x, w) + b` for a batch of `n` images.
    pub fn forward<F: Real>(
        &self,
        x: &[F],
        w: &[F],
        b: Option<&[F]>,
        y: &mut [F],
    ) -> Result<(), TrainError> {
        let (il, ol) = (self.in_len(), self.out_len());
        let n = x.len() / il.max(1);
        let per = chunk_len(n);
        let (cog, k, ohw) = (self.cog(), self.k(), self.ohw());
        let bm = self.block().min(per);
        y.par_chunks_mut(per * ol)
            .zip(x.par_chunks(per * il))
            .try_for_each(|(ys, xs)| -> Result<(), TrainError> {
                let mut col = vec![F::zero(); k * ohw * bm];
                let mut tmp = vec![F::zero(); if bm > 1 { cog * ohw * bm } else { 0 }];
                for (yb, xb) in ys.chunks_mut(bm * ol).zip(xs.chunks(bm * il)) {
                    let m = xb.len() / il;
                    let cols = m * ohw;
                    for g in 0..self.groups {
                        let wg = view(&w[g * cog * k..][..cog * k], cog, k)?;
                        let colv = self.columns(xb, g, m, &mut col)?;
                        if m == 1 {
                            let mut yv = view_mut(&mut yb[g * cog * ohw..][..cog * ohw], cog, ohw)?;
                            general_mat_mul(F::one(), &wg, &colv, F::zero(), &mut yv);
                            continue;
                        }
                        let mut tv = view_mut(&mut tmp[..cog * cols], cog, cols)?;
                        general_mat_mul(F::one(), &wg, &colv, F::zero(), &mut tv);
                        for t in 0..m {
                            for o in 0..cog {
                                yb[t * ol + (g * cog + o) * ohw..][..ohw]
                                    .copy_from_slice(&tmp[o * cols + t * ohw..][..ohw]);
                            }
                        }
                    }
                    if let Some(b) = b {
                        for yi in yb.chunks_mut(ol) {
                            for (o, &bv) in b.iter().enumerate() {
                                yi[o * ohw..][..ohw].iter_mut().for_each(|v| *v += bv);
                            }
                        }
                    }
                }
                Ok(())
            })
    }

    /// Backward pass: returns `(dw, db)` and, if `dx` is given, writes the input gradient.
    pub fn backward<F: Real>(
        &self,
        x: &[F],
        w: &[F],
        dy: &[F],
        dx: Option<&mut [F]>,
        with_bias: bool,
    ) -> Result<(Vec<F>, Vec<F>), TrainError> {
        let (il, ol) = (self.in_len(), self.out_len());
        let n = x.len() / il.max(1);
        let per = chunk_len(n);
        let (cog, k, ohw) = (self.cog(), self.k(), self.ohw());
        let (span, cig) = (self.cig() * self.plane(), self.cig());
        let wlen = self.co * k;
        let bm = self.block().min(per);
        let chunk = |xs: &[F], dys: &[F], mut dxs: Option<&mut [F]>| {
            let mut dw = vec![F::zero(); wlen];
            let mut db = vec![F::zero(); if with_bias { self.co } else { 0 }];
            let mut col = vec![F::zero(); k * ohw * bm];
            let mut dcol = vec![F::zero(); k * ohw * bm];
            let mut dyt = vec![F::zero(); if bm > 1 { cog * ohw * bm } else { 0 }];
            for (bi, (xb, dyb)) in xs.chunks(bm * il).zip(dys.chunks(bm * ol)).enumerate() {
                let m = xb.len() / il;
                let cols = m * ohw;
                for g in 0..self.groups {
                    let dyg = if m == 1 {
                        view(&dyb[g * cog * ohw..][..cog * ohw], cog, ohw)?
                    } else {
                        for t in 0..m {
                            for o in 0..cog {
                                dyt[o * cols + t * ohw..][..ohw]
                                    .copy_from_slice(&dyb[t * ol + (g * cog + o) * ohw..][..ohw]);
                            }
                        }
                        view(&dyt[..cog * cols], cog, cols)?
                    };
                    let colv = self.columns(xb, g, m, &mut col)?;
                    let mut dwg = view_mut(&mut dw[g * cog * k..][..cog * k], cog, k)?;
                    general_mat_mul(F::one(), &dyg, &colv.t(), F::one(), &mut dwg);
                    if let Some(dxs) = dxs.as_deref_mut() {
                        let wg = view(&w[g * cog * k..][..cog * k], cog, k)?;
                        let dxb = &mut dxs[bi * bm * il..][..m * il];
                        if m == 1 && self.direct() {
                            let mut dxv = view_mut(&mut dxb[g * k * ohw..][..k * ohw], k, ohw)?;
                            general_mat_mul(F::one(), &wg.t(), &dyg, F::zero(), &mut dxv);
                        } else {
                            let mut dcv = view_mut(&mut dcol[..k * cols], k, cols)?;
                            general_mat_mul(F::one(), &wg.t(), &dyg, F::zero(), &mut dcv);
                            for t in 0..m {
                                let planes = &mut dxb[t * il + g * span..][..span];
                                self.win.col2im(&dcol[t * ohw..], cig, planes, cols);
                            }
                        }
                    }
                }
                for dyi in dyb.chunks(ol) {
                    for (o, d) in db.iter_mut().enumerate() {
                        for &v in &dyi[o * ohw..][..ohw] {
                            *d += v;
                        }
                    }
                }
            }
            Ok::<_, TrainError>((dw, db))
        };
        let parts: Vec<(Vec<F>, Vec<F>)> = match dx {
            Some(dx) => {
                dx.fill(F::zero());
                dx.par_chunks_mut(per * il)
                    .zip(x.par_chunks(per * il).zip(dy.par_chunks(per * ol)))
                    .map(|(dxs, (xs, dys))| chunk(xs, dys, Some(dxs)))
                    .collect::<Result<_, _>>()?
            }
            None => x
                .par_chunks(per * il)
                .zip(dy.par_chunks(per * ol))
                .map(|(xs, dys)| chunk(xs, dys, None))
                .collect::<Result<_, _>>()?,
        };
        Ok(sum_parts(parts, wlen, if with_bias { self.co } else { 0 }))
    }
}

/// Sums per-chunk `(dw, db)` in chunk order.
fn sum_parts<F: Real>(parts: Vec<(Vec<F>, Vec<F>)>, wl: usize, bl: usize) -> (Vec<F>, Vec<F>) {
    let mut dw = vec![F::zero(); wl];
    let mut db = vec![F::zero(); bl];
    for (w, b) in parts {
        dw.iter_mut().zip(w).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(b).for_each(|(a, v)| *a += v);
    }
    (dw, db)
}

/// `y (n x o) = x (n x i) * w^T + b` with `w` `(o x i)`, into `y`.
pub fn dense_forward<F: Real>(
    x: &[F],
    w: &[F],
    b: Option<&[F]>,
    n: usize,
    i: usize,
    o: usize,
    y: &mut [F],
) -> Result<(), TrainError> {
    {
        let mut yv = view_mut(y, n, o)?;
        general_mat_mul(
            F::one(),
            &view(x, n, i)?,
            &view(w, o, i)?.t(),
            F::zero(),
            &mut yv,
        );
    }
    if let Some(b) = b {
        for row in y.chunks_mut(o) {
            row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
        }
    }
    Ok(())
}

/// Dense backward: `(dw, db, dx)`.
#[allow(clippy::type_complexity)]
pub fn dense_backward<F: Real>(
    x: &[F],
    w: &[F],
    dy: &[F],
    n: usize,
    i: usize,
    o: usize,
) -> Result<(Vec<F>, Vec<F>, Vec<F>), TrainError> {
    let mut dw = vec![F::zero(); o * i];
    let mut dx = vec![F::zero(); n * i];
    let dyv = view(dy, n, o)?;
    general_mat_mul(
        F::one(),
        &dyv.t(),
        &view(x, n, i)?,
        F::zero(),
        &mut view_mut(&mut dw, o, i)?,
    );
    general_mat_mul(
        F::one(),
        &dyv,
        &view(w, o, i)?,
        F::zero(),
        &mut view_mut(&mut dx, n, i)?,
    );
    let mut db = vec![F::zero(); o];
    for row in dy.chunks(o) {
        db.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
    }
    Ok((dw, db, dx))
}

/// True when the windows tile the image exactly (kernel = stride, no padding).
fn tiles(g: &Conv) -> bool {
    let v = &g.win;
    v.stride == [v.kh, v.kw] && v.pad == [0; 4] && v.oh * v.kh <= v.h && v.ow * v.kw <= v.w
}

/// Average pooling of `(n, c, h, w)` with a `kh x kw` window, stride `s` and zero padding
/// `[t, l, b, r]` (padded zeros count in the mean); output `(n, c, oh, ow)`.
pub fn avg_pool_forward<F: Real>(x: &[F], g: &Conv, y: &mut [F]) {
    let scale = F::of(1.0 / (g.win.kh * g.win.kw) as f64);
    if tiles(g) {
        // Non-overlapping windows inside the image: sum rows of each window directly.
        let (w, kh, kw, ow) = (g.win.w, g.win.kh, g.win.kw, g.win.ow);
        for (xp, yp) in x.chunks(g.win.h * w).zip(y.chunks_mut(g.win.oh * ow)) {
            for (oy, yr) in yp.chunks_mut(ow).enumerate() {
                yr.fill(F::zero());
                for ky in 0..kh {
                    let xr = &xp[(oy * kh + ky) * w..][..ow * kw];
                    for (d, win) in yr.iter_mut().zip(xr.chunks(kw)) {
                        for &v in win {
                            *d += v;
                        }
                    }
                }
                yr.iter_mut().for_each(|d| *d *= scale);
            }
        }
        return;
    }
    let (plane, out) = (g.win.h * g.win.w, g.win.oh * g.win.ow);
    for (xp, yp) in x.chunks(plane).zip(y.chunks_mut(out)) {
        yp.fill(F::zero());
        for_each_tap(&g.win, |o, i| yp[o] += xp[i]);
        yp.iter_mut().for_each(|v| *v *= scale);
    }
}

/// Gradient of [`avg_pool_forward`].
pub fn avg_pool_backward<F: Real>(dy: &[F], g: &Conv, dx: &mut [F]) {
    let scale = F::of(1.0 / (g.win.kh * g.win.kw) as f64);
    if tiles(g) {
        let (w, kh, kw, ow) = (g.win.w, g.win.kh, g.win.kw, g.win.ow);
        for (dxp, dyp) in dx.chunks_mut(g.win.h * w).zip(dy.chunks(g.win.oh * ow)) {
            dxp.fill(F::zero());
            for (oy, dr) in dyp.chunks(ow).enumerate() {
                for ky in 0..kh {
                    let xr = &mut dxp[(oy * kh + ky) * w..][..ow * kw];
                    for (win, &d) in xr.chunks_mut(kw).zip(dr) {
                        win.fill(d * scale);
                    }
                }
            }
        }
        return;
    }
    let (plane, out) = (g.win.h * g.win.w, g.win.oh * g.win.ow);
    for (dxp, dyp) in dx.chunks_mut(plane).zip(dy.chunks(out)) {
        dxp.fill(F::zero());
        for_each_tap(&g.win, |o, i| dxp[i] += dyp[o] * scale);
    }
}

/// Calls `f(output, input)` for every output position of one plane and every tap of its window
/// that lies inside the image (flat indices in the plane), taps in row-major order.
fn for_each_tap(win: &Window, mut f: impl FnMut(usize, usize)) {
    for oy in 0..win.oh {
        for ox in 0..win.ow {
            for iy in (0..win.kh).filter_map(|ky| win.source(oy, ky)) {
                for ix in (0..win.kw).filter_map(|kx| win.source_x(ox, kx)) {
                    f(oy * win.ow + ox, iy * win.w + ix);
                }
            }
        }
    }
}

/// Max pooling with kernel = stride, no padding; returns the flat input index of every
/// output's maximum (the first one on ties).
pub fn max_pool_forward<F: Real>(x: &[F], g: &Conv, y: &mut [F]) -> Vec<usize> {
    let mut arg = vec![0usize; y.len()];
    let plane = g.win.h * g.win.w;
    for (p, (xp, yp)) in x
        .chunks(plane)
        .zip(y.chunks_mut(g.win.oh * g.win.ow))
        .enumerate()
    {
        for oy in 0..g.win.oh {
            for ox in 0..g.win.ow {
                let mut best = oy * g.win.kh * g.win.w + ox * g.win.kw;
                for ky in 0..g.win.kh {
                    for kx in 0..g.win.kw {
                        let i = (oy * g.win.kh + ky) * g.win.w + ox * g.win.kw + kx;
                        if xp[i] > xp[best] {
                            best = i;
                        }
                    }
                }
                let o = oy * g.win.ow + ox;
                yp[o] = xp[best];
                arg[p * g.win.oh * g.win.ow + o] = p * plane + best;
            }
        }
    }
    arg
}
