//! Size and value limits on models, checked where shapes and weights enter hecc (the YAML and
//! ONNX front ends, the weight-file readers) and by shape inference, *before* anything
//! allocates per-element storage, so that an absurd model is refused with a diagnostic instead
//! of exhausting memory later.
//!
//! * [`MAX_DIM`] (2^24): every dimension of every shape (inputs, inferred activations, weights).
//! * [`MAX_TENSOR_ELEMENTS`] (2^24 = 16.7M values): one activation tensor of one image. The
//!   `flatten` of an activation is a single dimension, so this cannot exceed [`MAX_DIM`]. It is
//!   5x the largest activation of VGG-16 on 224x224 images (64x224x224 = 3.2M) and 512
//!   ciphertexts of 2^15 slots.
//! * [`MAX_WEIGHT_ELEMENTS`] (2^28 = 268M values): one weight tensor (VGG-16's first dense
//!   weight, the largest of the usual models, has 25088x4096 = 103M).
//! * [`MAX_PARAMETERS`] (2^29 = 537M values): all the weights of a model together (4.3 GB as
//!   `f64`; VGG-16 has 138M).
//! * [`MAX_WEIGHT_MAGNITUDE`] (2^32): the largest weight magnitude accepted. CKKS encodes
//!   `round(w * 2^scale)`; weights beyond 2^32 leave no room for a useful scale and are a sign
//!   of a broken export. The same bound applies to every numeric attribute that multiplies the
//!   data ([`check_multipliers`]): scale factors, polynomial coefficients, the input
//!   normalisation's mean and `1 / std` (so `std` must be at least [`MIN_INPUT_STD`]) and the
//!   batch-norm epsilon; such attributes must also be finite.
//!
//! The checks use checked arithmetic: no product can overflow.

/// Largest size of one dimension of any shape (2^24).
pub const MAX_DIM: usize = 1 << 24;

/// Largest number of values of one activation tensor, per image (2^24).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 24;

/// Largest number of values of one weight tensor (2^28).
pub const MAX_WEIGHT_ELEMENTS: usize = 1 << 28;

/// Largest number of weight values of a whole model (2^29).
pub const MAX_PARAMETERS: usize = 1 << 29;

/// Largest accepted magnitude of a weight value (2^32).
pub const MAX_WEIGHT_MAGNITUDE: f64 = 4_294_967_296.0;

/// Smallest accepted input normalisation `std` (2^-32): the input node multiplies by `1 / std`,
/// which must stay within [`MAX_WEIGHT_MAGNITUDE`].
pub const MIN_INPUT_STD: f64 = 1.0 / MAX_WEIGHT_MAGNITUDE;

/// `2^k (n)` when `n` is a power of two, else `n`, for messages.
pub fn describe(n: usize) -> String {
    if n.is_power_of_two() {
        format!("2^{} ({n})", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

/// Number of elements of `dims`, or `None` if the product overflows `usize`.
pub fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Checks `dims` against [`MAX_DIM`] and `max_elements`; `what` names the kind of tensor in the
/// message (`activation tensor per image`, `weight tensor` ...). Returns the number of elements,
/// or a message naming the offending dimension or count and the limit.
pub fn check_dims(dims: &[usize], max_elements: usize, what: &str) -> Result<usize, String> {
    if let Some((i, &d)) = dims.iter().enumerate().find(|(_, &d)| d > MAX_DIM) {
        return Err(format!(
            "dimension {i} of {} is {d}, above the limit of {} per dimension",
            fmt_dims(dims),
            describe(MAX_DIM)
        ));
    }
    // An empty tensor (a zero dimension) still needs its other dimensions to multiply within a
    // machine word: arrays are laid out with strides from that product.
    let nonzero = dims
        .iter()
        .filter(|&&d| d > 0)
        .try_fold(1usize, |a, &d| a.checked_mul(d));
    if nonzero.is_none_or(|p| p > isize::MAX as usize) {
        return Err(format!(
            "the non-zero dimensions of {} multiply past a machine word",
            fmt_dims(dims)
        ));
    }
    match checked_numel(dims) {
        Some(n) if n <= max_elements => Ok(n),
        Some(n) => Err(format!(
            "{} has {n} elements, above the limit of {} values per {what}",
            fmt_dims(dims),
            describe(max_elements)
        )),
        None => Err(format!(
            "{} has more elements than fit in a machine word, above the limit of {} values per \
             {what}",
            fmt_dims(dims),
            describe(max_elements)
        )),
    }
}

/// Checks the per-image shape of an activation (or input) tensor.
pub fn check_activation(dims: &[usize]) -> Result<usize, String> {
    check_dims(dims, MAX_TENSOR_ELEMENTS, "activation tensor per image")
}

/// Checks the shape of a weight tensor.
pub fn check_weight(dims: &[usize]) -> Result<usize, String> {
    check_dims(dims, MAX_WEIGHT_ELEMENTS, "weight tensor")
}

/// Adds `n` parameters to the running total `total`, or a message if the total would exceed
/// [`MAX_PARAMETERS`].
pub fn add_parameters(total: &mut usize, n: usize) -> Result<(), String> {
    match total.checked_add(n) {
        Some(t) if t <= MAX_PARAMETERS => {
            *total = t;
            Ok(())
        }
        _ => Err(format!(
            "the weights hold more than {} values in total (the limit per model)",
            describe(MAX_PARAMETERS)
        )),
    }
}

/// The first value of `values` (in iteration order) whose magnitude exceeds
/// [`MAX_WEIGHT_MAGNITUDE`], as `(flat index, value)`, and how many there are. NaN and
/// infinities are not counted (they are reported as non-finite).
pub fn oversized_values<'a>(values: impl Iterator<Item = &'a f64>) -> Option<(usize, f64, usize)> {
    let mut first = None;
    let mut count = 0;
    for (i, &v) in values.enumerate() {
        if v.is_finite() && v.abs() > MAX_WEIGHT_MAGNITUDE {
            count += 1;
            if first.is_none() {
                first = Some((i, v));
            }
        }
    }
    first.map(|(i, v)| (i, v, count))
}

/// A value for messages: plain for moderate magnitudes (`-1`, `0.5`), scientific otherwise
/// (`3e38`, `1e-12`).
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if v.is_finite() && a != 0.0 && !(1e-4..1e6).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Checks the values of a numeric attribute that multiplies the data (a scale factor,
/// polynomial coefficients, the input normalisation's mean, the batch-norm epsilon ...): every
/// value must be finite and of magnitude at most [`MAX_WEIGHT_MAGNITUDE`]. `what` names the
/// attribute (`` `factor` ``); when `indexed`, the message names the first offending value as
/// `` `what[i]` ``. Returns a message naming the attribute, the value and the limit.
pub fn check_multipliers(what: &str, values: &[f64], indexed: bool) -> Result<(), String> {
    let name = |i: usize| {
        if indexed {
            format!("`{what}[{i}]`")
        } else {
            format!("`{what}`")
        }
    };
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("{} must be finite, got {v}", name(i)));
    }
    if let Some((i, v, count)) = oversized_values(values.iter()) {
        let more = if count > 1 {
            format!(" ({count} values beyond it)")
        } else {
            String::new()
        };
        return Err(format!(
            "{} is {}, above the limit of {} on the magnitude of values that multiply the \
             data{more}",
            name(i),
            fmt_value(v),
            describe(MAX_WEIGHT_MAGNITUDE as usize)
        ));
    }
    Ok(())
}

/// Checks the input normalisation's `std` values (`what` names them): each must be finite and
/// positive, and at least [`MIN_INPUT_STD`] (the input is multiplied by `1 / std`). A zero
/// gives `std must be non-zero`.
pub fn check_input_std(what: &str, values: &[f64]) -> Result<(), String> {
    let name = |i: usize| {
        if values.len() > 1 {
            format!("`{what}[{i}]`")
        } else {
            format!("`{what}`")
        }
    };
    for (i, &v) in values.iter().enumerate() {
        if !v.is_finite() {
            return Err(format!("{} must be finite, got {v}", name(i)));
        }
        if v == 0.0 {
            return Err(format!("{} must be non-zero", name(i)));
        }
        if v < 0.0 {
            return Err(format!(
                "{} is {}: std must be positive (a negative std mirrors the input)",
                name(i),
                fmt_value(v)
            ));
        }
        if v < MIN_INPUT_STD {
            return Err(format!(
                "{} is {}, below the limit of 2^-32: the input is multiplied by 1 / std, above \
                 the limit of {} on the magnitude of values that multiply the data",
                name(i),
                fmt_value(v),
                describe(MAX_WEIGHT_MAGNITUDE as usize)
            ));
        }
    }
    Ok(())
}

fn fmt_dims(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tensors_with_huge_other_dimensions_are_refused() {
        let d = MAX_DIM;
        let err = check_dims(&[0, d, d, d, d, d], 1 << 20, "constant").unwrap_err();
        assert!(err.contains("machine word"), "{err}");
        assert_eq!(check_dims(&[0, 3, 4], 1 << 20, "constant"), Ok(0));
    }

    #[test]
    fn limits_are_checked_without_overflow() {
        assert_eq!(check_activation(&[3, 32, 32]), Ok(3072));
        let e = check_activation(&[1_000_000_000]).unwrap_err();
        assert!(
            e.contains("dimension 0") && e.contains("2^24 (16777216)"),
            "{e}"
        );
        let e = check_activation(&[1, 100_000, 100_000]).unwrap_err();
        assert!(e.contains("10000000000 elements"), "{e}");
        let e = check_weight(&[MAX_DIM; 8]).unwrap_err();
        assert!(e.contains("machine word"), "{e}");
        assert_eq!(check_weight(&[4096, 25088]), Ok(4096 * 25088));
        let mut t = MAX_PARAMETERS - 1;
        assert!(add_parameters(&mut t, 1).is_ok());
        assert!(add_parameters(&mut t, 1).is_err());
        assert!(add_parameters(&mut t, usize::MAX).is_err());
        assert_eq!(describe(12), "12");
    }

    #[test]
    fn multipliers_and_std_are_checked() {
        assert_eq!(
            check_multipliers("factor", &[-MAX_WEIGHT_MAGNITUDE], false),
            Ok(())
        );
        let e = check_multipliers("factor", &[3e38], false).unwrap_err();
        assert!(
            e.starts_with("`factor` is 3e38, above the limit of 2^32"),
            "{e}"
        );
        let e = check_multipliers("coeffs", &[0.0, 1e308, -1e308], true).unwrap_err();
        assert!(
            e.contains("`coeffs[1]` is 1e308") && e.contains("(2 values"),
            "{e}"
        );
        let e = check_multipliers("coeffs", &[0.0, f64::NAN], true).unwrap_err();
        assert_eq!(e, "`coeffs[1]` must be finite, got NaN");
        assert_eq!(check_input_std("std", &[0.3081]), Ok(()));
        assert!(check_input_std("std", &[1.0, -1.0])
            .unwrap_err()
            .contains("`std[1]` is -1"));
        assert!(check_input_std("std", &[0.0])
            .unwrap_err()
            .contains("non-zero"));
        assert!(check_input_std("std", &[1e-12])
            .unwrap_err()
            .contains("1e-12, below"));
        assert_eq!(fmt_value(-1.0), "-1");
        assert_eq!(fmt_value(0.25), "0.25");
    }

    #[test]
    fn oversized_values_skip_non_finite() {
        let v = [1.0, f64::INFINITY, -3e38, 5e9, f64::NAN];
        assert_eq!(oversized_values(v.iter()), Some((2, -3e38, 2)));
        assert_eq!(oversized_values([1.0, 2.0].iter()), None);
    }
}
