//! Small dense linear algebra for the fits: Gaussian elimination with partial pivoting and
//! least squares by Householder QR. Sizes are tiny (at most a few hundred unknowns), so
//! clarity beats blocking.

use super::ApproxError;

/// Solves `a * x = b` for square `a` (row-major, `n x n`). Returns an error when the
/// matrix is numerically singular.
#[allow(clippy::needless_range_loop)] // row operations index two rows of `a` at once
pub fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>, ApproxError> {
    let n = b.len();
    if a.len() != n || a.iter().any(|r| r.len() != n) {
        return Err(ApproxError::Numerical(
            "solve: matrix and right-hand side sizes differ".into(),
        ));
    }
    let scale = a
        .iter()
        .flat_map(|r| r.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[pivot][col].abs() <= scale * 1e-300 {
            return Err(ApproxError::Numerical(format!(
                "solve: singular system (column {col} has no usable pivot)"
            )));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            if f != 0.0 {
                for k in col..n {
                    a[row][k] -= f * a[col][k];
                }
                b[row] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(ApproxError::Numerical(
            "solve: solution is not finite".into(),
        ));
    }
    Ok(x)
}

/// Least-squares solution of the overdetermined system `a * x ~ b` (`m x n`, `m >= n`),
/// by Householder QR (stable where the normal equations are not).
#[allow(clippy::needless_range_loop)] // Householder steps index two columns of `a` at once
pub fn least_squares(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>, ApproxError> {
    let m = a.len();
    let n = a.first().map_or(0, Vec::len);
    if m < n || b.len() != m || a.iter().any(|r| r.len() != n) {
        return Err(ApproxError::Numerical(
            "least_squares: bad system shape".into(),
        ));
    }
    let mut diag = vec![0.0; n];
    for k in 0..n {
        let norm = (k..m).map(|i| a[i][k] * a[i][k]).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(ApproxError::Numerical(format!(
                "least_squares: rank deficient (column {k})"
            )));
        }
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        // v = a[k..][k] - alpha e_k, stored in place.
        a[k][k] -= alpha;
        let vnorm2: f64 = (k..m).map(|i| a[i][k] * a[i][k]).sum();
        diag[k] = alpha;
        if vnorm2 == 0.0 {
            continue;
        }
        for j in k + 1..n {
            let dot: f64 = (k..m).map(|i| a[i][k] * a[i][j]).sum();
            let f = 2.0 * dot / vnorm2;
            for i in k..m {
                a[i][j] -= f * a[i][k];
            }
        }
        let dot: f64 = (k..m).map(|i| a[i][k] * b[i]).sum();
        let f = 2.0 * dot / vnorm2;
        for i in k..m {
            b[i] -= f * a[i][k];
        }
    }
    let mut x = vec![0.0; n];
    for k in (0..n).rev() {
        let s: f64 = (k + 1..n).map(|j| a[k][j] * x[j]).sum();
        x[k] = (b[k] - s) / diag[k];
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(ApproxError::Numerical(
            "least_squares: solution is not finite".into(),
        ));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_recovers_known_solution() {
        let a = vec![
            vec![2.0, 1.0, -1.0],
            vec![-3.0, -1.0, 2.0],
            vec![-2.0, 1.0, 2.0],
        ];
        let x = solve(a, vec![8.0, -11.0, -3.0]).unwrap();
        for (got, want) in x.iter().zip([2.0, 3.0, -1.0]) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn solve_reports_singular() {
        let a = vec![vec![1.0, 2.0], vec![2.0, 4.0]];
        assert!(solve(a, vec![1.0, 2.0]).is_err());
    }

    #[test]
    fn least_squares_fits_a_line() {
        // y = 3 - 2x with symmetric noise that cancels in the fit.
        let xs = [-2.0, -1.0, 0.0, 1.0, 2.0];
        let noise = [0.1, -0.2, 0.2, -0.2, 0.1];
        let a: Vec<Vec<f64>> = xs.iter().map(|&x| vec![1.0, x]).collect();
        let b: Vec<f64> = xs
            .iter()
            .zip(noise)
            .map(|(&x, e)| 3.0 - 2.0 * x + e)
            .collect();
        let c = least_squares(a, b).unwrap();
        assert!(
            (c[0] - 3.0).abs() < 1e-12 && (c[1] + 2.0).abs() < 1e-12,
            "{c:?}"
        );
    }
}
