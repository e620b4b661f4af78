//! Sliding-window geometry shared by convolution kernels: im2col and its adjoint col2im.
//!
//! A convolution of one image becomes a matrix product `W (Co x K) * col (K x OH*OW)` where
//! `col` holds, for every kernel tap `(ci, ky, kx)`, the input pixels that tap reads at every
//! output position (zero where the window hangs over the padding). [`Window::im2col`] builds
//! `col` and [`Window::col2im`] adds a `col`-shaped gradient back onto the image. Both are
//! generic over the element type (the reference evaluator uses `f64`, the trainer `f32`).

use std::ops::AddAssign;

/// A kernel window sliding over `h x w` planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Zero padding `[top, left, bottom, right]`.
    pub pad: [usize; 4],
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Window {
    /// Output positions per plane.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// True when `col` equals the input (1x1 kernel, stride 1, no padding).
    pub fn is_identity(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0; 4]
    }

    /// The input row that kernel row `ky` reads at output row `oy`, if inside the image.
    pub fn source(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride[0] + ky).checked_sub(self.pad[0])?;
        (iy < self.h).then_some(iy)
    }

    /// The input column that kernel column `kx` reads at output column `ox`, if inside.
    pub fn source_x(&self, ox: usize, kx: usize) -> Option<usize> {
        let ix = (ox * self.stride[1] + kx).checked_sub(self.pad[1])?;
        (ix < self.w).then_some(ix)
    }

    /// Writes the im2col matrix of `planes` (`c` consecutive `h x w` planes) into `col`:
    /// `c*kh*kw` rows of [`Window::positions`] values, row `r` starting at `col[r * ld]` (`ld`
    /// at least the positions; larger to place several images' columns side by side).
    pub fn im2col<T: Copy>(&self, planes: &[T], c: usize, zero: T, col: &mut [T], ld: usize) {
        let (hw, p) = (self.h * self.w, self.positions());
        for ci in 0..c {
            let plane = &planes[ci * hw..][..hw];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = &mut col[((ci * self.kh + ky) * self.kw + kx) * ld..][..p];
                    for oy in 0..self.oh {
                        let dst = &mut row[oy * self.ow..][..self.ow];
                        let Some(iy) = self.source(oy, ky) else {
                            dst.fill(zero);
                            continue;
                        };
                        let src = &plane[iy * self.w..][..self.w];
                        for (ox, d) in dst.iter_mut().enumerate() {
                            *d = self.source_x(ox, kx).map_or(zero, |ix| src[ix]);
                        }
                    }
                }
            }
        }
    }

    /// Adds `col` (laid out as [`Window::im2col`] writes it for `c` planes, row stride `ld`)
    /// back onto `planes`.
    pub fn col2im<T: Copy + AddAssign>(&self, col: &[T], c: usize, planes: &mut [T], ld: usize) {
        let (hw, p) = (self.h * self.w, self.positions());
        for ci in 0..c {
            let plane = &mut planes[ci * hw..][..hw];
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let row = &col[((ci * self.kh + ky) * self.kw + kx) * ld..][..p];
                    for oy in 0..self.oh {
                        let Some(iy) = self.source(oy, ky) else {
                            continue;
                        };
                        let dst = &mut plane[iy * self.w..][..self.w];
                        for (ox, &v) in row[oy * self.ow..][..self.ow].iter().enumerate() {
                            if let Some(ix) = self.source_x(ox, kx) {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for every x, y: checked on a padded, strided window.
        let win = Window {
            h: 5,
            w: 4,
            kh: 3,
            kw: 2,
            stride: [2, 1],
            pad: [1, 0, 1, 1],
            oh: 3,
            ow: 4,
        };
        let c = 2;
        let x: Vec<f64> = (0..c * 20).map(|i| (i as f64 * 0.37).sin()).collect();
        let rows = c * win.kh * win.kw;
        let y: Vec<f64> = (0..rows * win.positions())
            .map(|i| (i as f64 * 0.11).cos())
            .collect();
        let mut col = vec![0.0; y.len()];
        win.im2col(&x, c, 0.0, &mut col, win.positions());
        let mut back = vec![0.0; x.len()];
        win.col2im(&y, c, &mut back, win.positions());
        let lhs: f64 = col.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        // Tap (0, 0, 0) at output (0, 0) reads the top padding row: zero.
        assert_eq!(col[0], 0.0);
        // Tap (0, 1, 0) at output (0, 0) reads x[0][0][0].
        assert_eq!(col[2 * win.positions()], x[0]);
        // With a wider row stride the same values land at the same row starts.
        let ld = win.positions() + 5;
        let mut wide = vec![-1.0; rows * ld];
        win.im2col(&x, c, 0.0, &mut wide, ld);
        for r in 0..rows {
            assert_eq!(
                &wide[r * ld..][..win.positions()],
                &col[r * win.positions()..][..win.positions()]
            );
            assert!(wide[r * ld + win.positions()..][..5]
                .iter()
                .all(|&v| v == -1.0));
        }
    }
}
