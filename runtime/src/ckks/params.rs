//! CKKS parameter sets: ring degree, prime chain, key-switching digits,
//! secret distribution and the security check.
//!
//! Contract: a [`CkksParameters`] value is always valid: `N = 2^12..2^16`,
//! all primes distinct, prime, `= 1 mod 2N` and below `2^61`, at least one
//! special prime, `1 <= dnum <= L+1`, the special modulus `P` at most one
//! bit smaller than the largest key-switching digit, and (unless built with
//! [`CkksParametersBuilder::insecure_no_security_check`]) `log2(QP)` within
//! the HomomorphicEncryption.org bound for ternary secrets.

use super::error::{CkksError, Result};
use super::zq::{generate_primes, is_prime, MAX_PRIME_BITS};
use sha2::{Digest, Sha256};

/// Standard deviation of the error distribution.
pub const ERROR_STD_DEV: f64 = 3.2;

pub use hecc_security::SecurityLevel;

/// The level's code in serialized parameters (0: unchecked).
fn security_code(level: SecurityLevel) -> u8 {
    match level {
        SecurityLevel::Classical128 => 1,
        SecurityLevel::Classical192 => 2,
        SecurityLevel::Classical256 => 3,
    }
}

/// Distribution of the secret key coefficients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretDistribution {
    /// Each coefficient uniform in {-1, 0, 1}.
    UniformTernary,
    /// Exactly `h` coefficients nonzero, each ±1 uniformly.
    FixedHammingWeight(u32),
}

/// A validated CKKS parameter set.
#[derive(Clone, Debug, PartialEq)]
pub struct CkksParameters {
    log_n: u32,
    q: Vec<u64>,
    p: Vec<u64>,
    dnum: usize,
    secret: SecretDistribution,
    security: Option<SecurityLevel>,
}

/// Builder of [`CkksParameters`] from bit sizes.
#[derive(Clone, Debug)]
pub struct CkksParametersBuilder {
    log_n: u32,
    q0_bits: u32,
    scale_bits: Vec<u32>,
    special_bits: Vec<u32>,
    dnum: Option<usize>,
    secret: SecretDistribution,
    security: Option<SecurityLevel>,
}

impl Default for CkksParametersBuilder {
    fn default() -> Self {
        Self {
            log_n: 13,
            q0_bits: 60,
            scale_bits: vec![40, 40],
            special_bits: vec![60],
            dnum: None,
            secret: SecretDistribution::UniformTernary,
            security: Some(SecurityLevel::Classical128),
        }
    }
}

impl CkksParametersBuilder {
    /// Ring degree `N = 2^log_n` (12..=16).
    pub fn log_n(mut self, log_n: u32) -> Self {
        self.log_n = log_n;
        self
    }
    /// Bit size of the first prime `q0` (50..=60).
    pub fn q0_bits(mut self, bits: u32) -> Self {
        self.q0_bits = bits;
        self
    }
    /// Bit sizes of the scale primes `q1..qL` (each 20..=60), consumed by rescaling.
    pub fn scale_bits(mut self, bits: Vec<u32>) -> Self {
        self.scale_bits = bits;
        self
    }
    /// Bit sizes of the special primes `P` used for key switching (each 20..=61).
    pub fn special_bits(mut self, bits: Vec<u32>) -> Self {
        self.special_bits = bits;
        self
    }
    /// Number of key-switching digits; default `ceil((L+1) / K)` for `K` special primes.
    pub fn dnum(mut self, dnum: usize) -> Self {
        self.dnum = Some(dnum);
        self
    }
    /// Secret key distribution (default uniform ternary).
    pub fn secret_distribution(mut self, d: SecretDistribution) -> Self {
        self.secret = d;
        self
    }
    /// Security level to check against (default [`SecurityLevel::Classical128`]).
    pub fn security_level(mut self, level: SecurityLevel) -> Self {
        self.security = Some(level);
        self
    }
    /// Disables the security check. For small, fast tests only: the resulting
    /// parameters may offer no security at all.
    pub fn insecure_no_security_check(mut self) -> Self {
        self.security = None;
        self
    }

    /// Generates the prime chain and validates everything.
    pub fn build(self) -> Result<CkksParameters> {
        if !(12..=16).contains(&self.log_n) {
            return Err(CkksError::InvalidParameters(format!(
                "log_n = {} is outside 12..=16",
                self.log_n
            )));
        }
        if !(50..=60).contains(&self.q0_bits) {
            return Err(CkksError::InvalidParameters(format!(
                "q0 has {} bits, expected 50..=60",
                self.q0_bits
            )));
        }
        if let Some(b) = self.scale_bits.iter().find(|b| !(20..=60).contains(*b)) {
            return Err(CkksError::InvalidParameters(format!(
                "scale prime of {b} bits, expected 20..=60"
            )));
        }
        if let Some(b) = self
            .special_bits
            .iter()
            .find(|b| !(20..=MAX_PRIME_BITS).contains(*b))
        {
            return Err(CkksError::InvalidParameters(format!(
                "special prime of {b} bits, expected 20..={MAX_PRIME_BITS}"
            )));
        }
        // Generate in a fixed order: q0, scale primes, special primes; equal
        // bit sizes share one descending scan.
        let mut all_bits = vec![self.q0_bits];
        all_bits.extend(&self.scale_bits);
        all_bits.extend(&self.special_bits);
        let mut primes: Vec<u64> = Vec::with_capacity(all_bits.len());
        for &b in &all_bits {
            let p = generate_primes(b, 1, self.log_n, &primes)?;
            primes.extend(p);
        }
        let nq = 1 + self.scale_bits.len();
        let p = primes.split_off(nq);
        let dnum = match self.dnum {
            Some(d) => d,
            None => nq.div_ceil(self.special_bits.len().max(1)),
        };
        CkksParameters::from_primes(self.log_n, primes, p, dnum, self.secret, self.security)
    }
}

impl CkksParameters {
    /// Starts a builder (defaults: N = 2^13, q0 60 bits, two 40-bit scale
    /// primes, one 60-bit special prime, 128-bit security).
    pub fn builder() -> CkksParametersBuilder {
        CkksParametersBuilder::default()
    }

    /// Builds parameters from explicit primes, validating all invariants.
    pub fn from_primes(
        log_n: u32,
        q: Vec<u64>,
        p: Vec<u64>,
        dnum: usize,
        secret: SecretDistribution,
        security: Option<SecurityLevel>,
    ) -> Result<Self> {
        if !(12..=16).contains(&log_n) {
            return Err(CkksError::InvalidParameters(format!(
                "log_n = {log_n} is outside 12..=16"
            )));
        }
        if q.is_empty() {
            return Err(CkksError::InvalidParameters("no ciphertext primes".into()));
        }
        if p.is_empty() {
            return Err(CkksError::InvalidParameters(
                "at least one special prime is required for key switching".into(),
            ));
        }
        let two_n = 1u64 << (log_n + 1);
        let mut seen = std::collections::HashSet::new();
        for &x in q.iter().chain(&p) {
            if x >= 1u64 << MAX_PRIME_BITS || !is_prime(x) || x % two_n != 1 {
                return Err(CkksError::InvalidParameters(format!(
                    "{x} is not a prime below 2^{MAX_PRIME_BITS} with q = 1 mod 2N"
                )));
            }
            if !seen.insert(x) {
                return Err(CkksError::InvalidParameters(format!("prime {x} repeated")));
            }
        }
        if dnum == 0 || dnum > q.len() {
            return Err(CkksError::InvalidParameters(format!(
                "dnum = {dnum} must be in 1..={}",
                q.len()
            )));
        }
        // Key-switching noise is about (Q_j / P) * sqrt(N) * sigma for the
        // largest digit product Q_j; refuse special moduli clearly too small.
        let alpha = q.len().div_ceil(dnum);
        let log_p: f64 = p.iter().map(|&x| (x as f64).log2()).sum();
        let max_digit = q
            .chunks(alpha)
            .map(|c| c.iter().map(|&x| (x as f64).log2()).sum::<f64>())
            .fold(0f64, f64::max);
        if log_p + 1.0 < max_digit {
            return Err(CkksError::InvalidParameters(format!(
                "special modulus P has {log_p:.1} bits but the largest key-switching digit has \
                 {max_digit:.1} bits; add special primes or increase dnum"
            )));
        }
        if let SecretDistribution::FixedHammingWeight(h) = secret {
            if h == 0 || h as usize > (1usize << log_n) {
                return Err(CkksError::InvalidParameters(format!(
                    "Hamming weight {h} must be in 1..=N"
                )));
            }
        }
        let params = Self {
            log_n,
            q,
            p,
            dnum,
            secret,
            security,
        };
        if let Some(level) = security {
            let limit = level.max_log_qp(log_n).ok_or_else(|| {
                CkksError::InvalidParameters(format!("no security table entry for N = 2^{log_n}"))
            })?;
            let log_qp = params.log_qp();
            if log_qp > limit as f64 {
                return Err(CkksError::Insecure {
                    log_qp,
                    limit,
                    log_n,
                    level: level.name().to_string(),
                });
            }
        }
        Ok(params)
    }

    /// log2 of the ring degree.
    pub fn log_n(&self) -> u32 {
        self.log_n
    }
    /// Ring degree `N`.
    pub fn n(&self) -> usize {
        1 << self.log_n
    }
    /// Number of complex slots, `N/2`.
    pub fn slots(&self) -> usize {
        self.n() / 2
    }
    /// The ciphertext primes `q0..qL`.
    pub fn q(&self) -> &[u64] {
        &self.q
    }
    /// The special primes `p0..p(K-1)`.
    pub fn p(&self) -> &[u64] {
        &self.p
    }
    /// Highest level `L` (fresh ciphertexts have `L+1` limbs).
    pub fn max_level(&self) -> usize {
        self.q.len() - 1
    }
    /// Number of key-switching digits.
    pub fn dnum(&self) -> usize {
        self.dnum
    }
    /// Limbs per key-switching digit, `ceil((L+1)/dnum)`.
    pub fn digit_size(&self) -> usize {
        self.q.len().div_ceil(self.dnum)
    }
    /// Secret key distribution.
    pub fn secret_distribution(&self) -> SecretDistribution {
        self.secret
    }
    /// The security level checked at construction (`None` if unchecked).
    pub fn security_level(&self) -> Option<SecurityLevel> {
        self.security
    }
    /// `log2(Q * P)`.
    pub fn log_qp(&self) -> f64 {
        self.q
            .iter()
            .chain(&self.p)
            .map(|&x| (x as f64).log2())
            .sum()
    }

    /// Canonical byte encoding of everything that defines the ring and keys
    /// (N, primes, special primes, dnum, secret distribution); little endian.
    pub fn canonical_encoding(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"hecc-ckks-params");
        v.extend_from_slice(&self.log_n.to_le_bytes());
        v.extend_from_slice(&(self.q.len() as u32).to_le_bytes());
        for x in &self.q {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&(self.p.len() as u32).to_le_bytes());
        for x in &self.p {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&(self.dnum as u32).to_le_bytes());
        match self.secret {
            SecretDistribution::UniformTernary => {
                v.push(0);
                v.extend_from_slice(&0u32.to_le_bytes());
            }
            SecretDistribution::FixedHammingWeight(h) => {
                v.push(1);
                v.extend_from_slice(&h.to_le_bytes());
            }
        }
        v
    }

    /// SHA-256 of [`Self::canonical_encoding`]; stamped into every serialized object.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_encoding()).into()
    }

    pub(crate) fn security_code(&self) -> u8 {
        self.security.map_or(0, security_code)
    }

    pub(crate) fn security_from_code(c: u8) -> Result<Option<SecurityLevel>> {
        Ok(match c {
            0 => None,
            1 => Some(SecurityLevel::Classical128),
            2 => Some(SecurityLevel::Classical192),
            3 => Some(SecurityLevel::Classical256),
            _ => return Err(CkksError::Malformed(format!("security level code {c}"))),
        })
    }
}
