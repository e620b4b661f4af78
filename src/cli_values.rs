//! Parsers for command-line values that must be in range: clap refuses the value with the
//! message returned here, before any work starts.

/// A count of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("`{s}` is not a finite number"))
}

/// A finite number in `lo..=hi` (and above `lo` when `open_lo`), or a message naming `what`.
fn within(s: &str, lo: f64, hi: f64, open_lo: bool, what: &str) -> Result<f64, String> {
    let x = finite(s)?;
    let above = if open_lo { x > lo } else { x >= lo };
    if above && x <= hi {
        Ok(x)
    } else {
        let from = if open_lo { " (excluded)" } else { "" };
        Err(format!("{x} is not {what} between {lo}{from} and {hi}"))
    }
}

/// A share in `[0, 1]`.
pub fn share(s: &str) -> Result<f64, String> {
    within(s, 0.0, 1.0, false, "a share")
}

/// A relative margin in `[0, 10]`.
pub fn margin(s: &str) -> Result<f64, String> {
    within(s, 0.0, 10.0, false, "a relative margin")
}

/// The largest half-width of an approximation interval: polynomial approximations on wider
/// intervals lose all precision near zero, and their values overflow the ciphertexts.
pub const MAX_HALF_RANGE: f64 = 65536.0;

/// A half-width `B` of an approximation interval `[-B, B]`: positive and at most
/// [`MAX_HALF_RANGE`].
pub fn half_range(s: &str) -> Result<f64, String> {
    within(s, 0.0, MAX_HALF_RANGE, true, "a half-range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_out_of_range_are_refused_with_a_reason() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").unwrap_err().contains("at least 1"));
        assert!(positive("-1").unwrap_err().contains("whole number"));
        assert_eq!(share("0.9"), Ok(0.9));
        assert!(share("2").is_err());
        assert!(share("nan").unwrap_err().contains("finite"));
        assert!(margin("-0.1").is_err());
        assert_eq!(half_range("8"), Ok(8.0));
        assert!(half_range("1e308").is_err());
        assert!(half_range("0").is_err());
        assert!(half_range("inf").is_err());
    }
}
