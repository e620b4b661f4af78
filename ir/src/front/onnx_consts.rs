//! Constant folding for the ONNX front end: the numpy-like semantics of the ops exporters use
//! for shape arithmetic and constant preprocessing (`Shape -> Gather -> Unsqueeze -> Concat ->
//! Reshape`, `Cast`, element-wise arithmetic on initializers ...), evaluated at import time on
//! `f64` tensors. Every function checks its operands and returns a message instead of panicking
//! (ndarray's broadcasting panics on a mismatch, so shapes are checked first), and every result
//! is checked against the weight-tensor [`limits`](crate::tensor::limits) before it is
//! allocated.

use ndarray::{Axis, IxDyn, Slice};

use crate::tensor::limits::check_weight;
use crate::tensor::Tensor;

/// The numpy broadcast of two shapes, or `None` if they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Element-wise `f(a, b)` with numpy broadcasting.
pub fn binary(a: &Tensor, b: &Tensor, f: impl Fn(f64, f64) -> f64) -> Result<Tensor, String> {
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape(),
            b.shape()
        )
    })?;
    check_weight(&shape).map_err(|m| format!("the broadcast result: {m}"))?;
    let a = a
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| format!("cannot broadcast {:?} to {shape:?}", a.shape()))?;
    let b = b
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| format!("cannot broadcast {:?} to {shape:?}", b.shape()))?;
    let mut out = Tensor::zeros(IxDyn(&shape));
    ndarray::Zip::from(&mut out)
        .and(&a)
        .and(&b)
        .for_each(|o, &x, &y| *o = f(x, y));
    Ok(out)
}

/// Normalises a possibly negative axis for a tensor of rank `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// The values of a constant as integers (shape vectors, axes, indices).
pub fn ints(t: &Tensor) -> Result<Vec<i64>, String> {
    t.iter()
        .map(|&v| {
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(v as i64)
            } else {
                Err(format!("{v} is not an integer"))
            }
        })
        .collect()
}

/// A 1-D tensor of the given values.
pub fn vector(v: &[f64]) -> Tensor {
    Tensor::from_shape_vec(IxDyn(&[v.len()]), v.to_vec())
        .unwrap_or_else(|_| Tensor::zeros(IxDyn(&[0])))
}

/// `Gather` along `axis` with (possibly negative) integer indices of any shape.
pub fn gather(data: &Tensor, indices: &Tensor, axis_attr: i64) -> Result<Tensor, String> {
    let ax = axis(axis_attr, data.ndim())?;
    let len = data.shape()[ax] as i64;
    // Output shape: data[:ax] + indices.shape + data[ax+1:].
    let mut shape: Vec<usize> = data.shape()[..ax].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&data.shape()[ax + 1..]);
    check_weight(&shape).map_err(|m| format!("the result of Gather: {m}"))?;
    let idx = ints(indices)?;
    let mut parts = Vec::with_capacity(idx.len());
    for &i in &idx {
        let j = if i < 0 { i + len } else { i };
        if !(0..len).contains(&j) {
            return Err(format!(
                "index {i} is out of range for a dimension of {len}"
            ));
        }
        parts.push(data.index_axis(Axis(ax), j as usize).to_owned());
    }
    let views: Vec<_> = parts
        .iter()
        .map(|p| p.view().insert_axis(Axis(ax)))
        .collect();
    let joined = if views.is_empty() {
        let mut s = data.shape().to_vec();
        s[ax] = 0;
        Tensor::zeros(IxDyn(&s))
    } else {
        ndarray::concatenate(Axis(ax), &views).map_err(|e| e.to_string())?
    };
    joined
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| e.to_string())
}

/// `Unsqueeze`: inserts axes of length 1 at the (output-rank) positions `axes`.
pub fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let r = dims.len() + axes.len();
    let mut at: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?;
    at.sort_unstable();
    if at.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("repeated axis in {axes:?}"));
    }
    let mut out = Vec::with_capacity(r);
    let mut src = dims.iter();
    for i in 0..r {
        if at.binary_search(&i).is_ok() {
            out.push(1);
        } else {
            out.push(*src.next().ok_or("axes out of range")?);
        }
    }
    Ok(out)
}

/// `Squeeze`: removes the axes `axes` (all axes of length 1 when `None`), which must be 1.
pub fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    match axes {
        None => Ok(dims.iter().copied().filter(|&d| d != 1).collect()),
        Some(axes) => {
            let at: Vec<usize> = axes
                .iter()
                .map(|&a| axis(a, dims.len()))
                .collect::<Result<_, _>>()?;
            for &a in &at {
                if dims[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of length {}", dims[a]));
                }
            }
            Ok(dims
                .iter()
                .enumerate()
                .filter(|(i, _)| !at.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }
}

/// The target of an ONNX `Reshape` of `dims` (`0` copies the input dimension, `-1` is
/// inferred), checked to hold the same number of elements.
pub fn reshape_dims(dims: &[usize], target: &[i64]) -> Result<Vec<usize>, String> {
    let product = |d: &[usize]| d.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    let numel = product(dims).ok_or("the input has too many elements")?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 => out.push(
                *dims
                    .get(i)
                    .ok_or_else(|| format!("0 at position {i} has no input dimension to copy"))?,
            ),
            d if d > 0 => {
                out.push(usize::try_from(d).map_err(|_| format!("invalid reshape dimension {d}"))?)
            }
            d => return Err(format!("invalid reshape dimension {d}")),
        }
    }
    let known = product(&out).ok_or_else(|| {
        format!("reshape target {target:?} does not hold the {numel} elements of {dims:?}")
    })?;
    if let Some(i) = infer_at {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(format!(
                "cannot infer -1 in {target:?} for {numel} elements"
            ));
        }
        out[i] = numel / known;
    }
    if product(&out) != Some(numel) {
        return Err(format!(
            "reshape target {target:?} does not hold the {numel} elements of {dims:?}"
        ));
    }
    Ok(out)
}

/// `Slice` with numpy semantics (clamped starts/ends, negative steps allowed).
pub fn slice(
    data: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Tensor, String> {
    if starts.len() != ends.len() {
        return Err("starts and ends differ in length".into());
    }
    let mut view = data.view();
    for k in 0..starts.len() {
        let ax = match axes {
            Some(a) => axis(*a.get(k).ok_or("axes too short")?, data.ndim())?,
            None => k,
        };
        if ax >= data.ndim() {
            return Err(format!("slice axis {ax} out of range"));
        }
        let step = steps.map_or(Ok(1), |s| s.get(k).copied().ok_or("steps too short"))?;
        if step == 0 {
            return Err("slice step 0".into());
        }
        let len = data.shape()[ax] as i64;
        let clamp = |v: i64, lo: i64, hi: i64| {
            let v = if v < 0 { v + len } else { v };
            v.clamp(lo, hi)
        };
        let (s, e) = if step > 0 {
            (clamp(starts[k], 0, len), clamp(ends[k], 0, len))
        } else {
            (clamp(starts[k], -1, len - 1), clamp(ends[k], -1, len - 1))
        };
        let sl = if step > 0 {
            Slice::new(s as isize, Some(e.max(s) as isize), step as isize)
        } else if s > e {
            // Elements s, s+step, ... > e, as an ndarray slice over [e+1, s+1) from the end.
            Slice::new((e + 1) as isize, Some((s + 1) as isize), step as isize)
        } else {
            Slice::new(0, Some(0), 1)
        };
        view.slice_axis_inplace(Axis(ax), sl);
    }
    Ok(view.to_owned())
}

/// `Transpose` of a constant (`perm` empty = reverse the axes).
pub fn transpose(data: &Tensor, perm: &[i64]) -> Result<Tensor, String> {
    let r = data.ndim();
    let p: Vec<usize> = if perm.is_empty() {
        (0..r).rev().collect()
    } else {
        perm.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?
    };
    let mut seen = p.clone();
    seen.sort_unstable();
    if seen != (0..r).collect::<Vec<_>>() {
        return Err(format!("{perm:?} is not a permutation of {r} axes"));
    }
    Ok(data.view().permuted_axes(IxDyn(&p)).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
        assert_eq!(broadcast_shape(&[2], &[3]), None);
        let s = binary(
            &t(&[2, 1], &[1., 2.]),
            &t(&[3], &[10., 20., 30.]),
            |a, b| a + b,
        )
        .unwrap();
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(
            s.iter().copied().collect::<Vec<_>>(),
            vec![11., 21., 31., 12., 22., 32.]
        );
        assert!(binary(&t(&[2], &[1., 2.]), &t(&[3], &[1., 2., 3.]), |a, b| a + b).is_err());
    }

    #[test]
    fn gather_takes_rows_and_scalars() {
        let d = t(&[4], &[1., 3., 28., 28.]);
        let g = gather(&d, &t(&[], &[0.]), 0).unwrap();
        assert_eq!(g.shape(), &[] as &[usize]);
        assert_eq!(g.iter().next(), Some(&1.0));
        let g = gather(&d, &t(&[2], &[-1., 1.]), 0).unwrap();
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), vec![28., 3.]);
        assert!(gather(&d, &t(&[1], &[4.]), 0).is_err());
    }

    #[test]
    fn shape_helpers() {
        assert_eq!(unsqueeze_dims(&[3], &[0]).unwrap(), vec![1, 3]);
        assert_eq!(unsqueeze_dims(&[3, 4], &[-1, 1]).unwrap(), vec![3, 1, 4, 1]);
        assert_eq!(squeeze_dims(&[1, 3, 1], None).unwrap(), vec![3]);
        assert!(squeeze_dims(&[2, 3], Some(&[0])).is_err());
        assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1]).unwrap(), vec![2, 12]);
        assert!(reshape_dims(&[2, 3], &[4, -1]).is_err());
    }

    #[test]
    fn slices_like_numpy() {
        let d = t(&[5], &[0., 1., 2., 3., 4.]);
        let v = |x: Tensor| x.iter().copied().collect::<Vec<_>>();
        assert_eq!(
            v(slice(&d, &[1], &[i64::MAX], None, None).unwrap()),
            vec![1., 2., 3., 4.]
        );
        assert_eq!(
            v(slice(&d, &[-2], &[10], None, None).unwrap()),
            vec![3., 4.]
        );
        assert_eq!(
            v(slice(&d, &[0], &[5], None, Some(&[2])).unwrap()),
            vec![0., 2., 4.]
        );
        assert_eq!(
            v(slice(&d, &[4], &[0], None, Some(&[-1])).unwrap()),
            vec![4., 3., 2., 1.]
        );
        assert_eq!(
            v(slice(&d, &[-1], &[i64::MIN], None, Some(&[-2])).unwrap()),
            vec![4., 2., 0.]
        );
    }
}
