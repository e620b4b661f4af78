//! The one security table of hecc: the HomomorphicEncryption.org standard's
//! largest `log2(QP)` for a ternary (or sparser) secret and error of
//! standard deviation 3.2, against classical attacks, at ring degrees
//! `2^12..2^16`.
//!
//! The compiler's parameter selection (`hecc-passes`) chooses chains within
//! it, and the CKKS backend (`hecc-runtime`) refuses parameter sets outside
//! it unless built explicitly insecure. Both read it from here, so the two
//! can never disagree.

/// Classical security level of the HomomorphicEncryption.org standard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityLevel {
    /// 128-bit classical security.
    Classical128,
    /// 192-bit classical security.
    Classical192,
    /// 256-bit classical security.
    Classical256,
}

/// Ring degrees the table covers, as `log2(N)`.
pub const LOG_N_RANGE: std::ops::RangeInclusive<u32> = 12..=16;

/// Rows of the table, `log2(N) = 12..=16`; columns 128, 192 and 256 bits.
const TABLE: [[u32; 3]; 5] = [
    [109, 75, 58],
    [218, 152, 118],
    [438, 305, 237],
    [881, 611, 476],
    [1772, 1228, 956],
];

impl SecurityLevel {
    /// Every level, weakest first.
    pub const ALL: [SecurityLevel; 3] = [
        SecurityLevel::Classical128,
        SecurityLevel::Classical192,
        SecurityLevel::Classical256,
    ];

    /// Largest `log2(QP)` at ring degree `2^log_n`, or `None` outside the
    /// table.
    pub fn max_log_qp(self, log_n: u32) -> Option<u32> {
        if !LOG_N_RANGE.contains(&log_n) {
            return None;
        }
        let row = TABLE[(log_n - LOG_N_RANGE.start()) as usize];
        Some(row[self as usize])
    }

    /// The security in bits.
    pub fn bits(self) -> u32 {
        match self {
            SecurityLevel::Classical128 => 128,
            SecurityLevel::Classical192 => 192,
            SecurityLevel::Classical256 => 256,
        }
    }

    /// A name for messages: "128-bit classical".
    pub fn name(self) -> &'static str {
        match self {
            SecurityLevel::Classical128 => "128-bit classical",
            SecurityLevel::Classical192 => "192-bit classical",
            SecurityLevel::Classical256 => "256-bit classical",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_match_the_standard() {
        // Spot values from the standard's table (ternary secret, classical).
        assert_eq!(SecurityLevel::Classical128.max_log_qp(16), Some(1772));
        assert_eq!(SecurityLevel::Classical128.max_log_qp(15), Some(881));
        assert_eq!(SecurityLevel::Classical192.max_log_qp(13), Some(152));
        assert_eq!(SecurityLevel::Classical256.max_log_qp(14), Some(237));
        assert_eq!(SecurityLevel::Classical256.max_log_qp(12), Some(58));
        assert_eq!(SecurityLevel::Classical128.max_log_qp(11), None);
        assert_eq!(SecurityLevel::Classical128.max_log_qp(17), None);
    }

    #[test]
    fn bounds_shrink_with_security_and_grow_with_degree() {
        for log_n in LOG_N_RANGE {
            let b: Vec<u32> = SecurityLevel::ALL
                .iter()
                .filter_map(|l| l.max_log_qp(log_n))
                .collect();
            assert!(b.windows(2).all(|w| w[0] > w[1]), "{log_n}: {b:?}");
            if log_n > 12 {
                for l in SecurityLevel::ALL {
                    let (lo, hi) = (l.max_log_qp(log_n - 1), l.max_log_qp(log_n));
                    assert!(lo < hi, "{l:?} at {log_n}");
                }
            }
        }
    }
}
