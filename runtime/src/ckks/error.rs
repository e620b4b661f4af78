//! The single error type of the CKKS backend.
//!
//! Contract: every fallible public function of [`crate::ckks`] returns
//! [`CkksError`]; no library code path panics on bad input.

use miette::Diagnostic;
use thiserror::Error;

/// Everything that can go wrong in the CKKS backend.
#[derive(Debug, Error, Diagnostic, Clone, PartialEq)]
pub enum CkksError {
    /// A parameter is out of its allowed range or inconsistent.
    #[error("invalid CKKS parameters: {0}")]
    #[diagnostic(code(hecc::ckks::invalid_parameters))]
    InvalidParameters(String),

    /// The modulus is too large for the requested security level.
    #[error(
        "insecure CKKS parameters: log2(QP) = {log_qp:.2} exceeds the limit of {limit} bits for N = 2^{log_n} at {level} security"
    )]
    #[diagnostic(
        code(hecc::ckks::insecure),
        help("use fewer or smaller primes, a larger ring degree, or (for tests only) `insecure_no_security_check()`")
    )]
    Insecure {
        /// log2 of the total modulus Q*P.
        log_qp: f64,
        /// Maximum allowed log2(QP) from the HomomorphicEncryption.org table.
        limit: u32,
        /// log2 of the ring degree.
        log_n: u32,
        /// Name of the requested security level.
        level: String,
    },

    /// Not enough NTT-friendly primes of the requested size exist.
    #[error("not enough NTT-friendly primes of {bits} bits for N = 2^{log_n}")]
    #[diagnostic(code(hecc::ckks::not_enough_primes))]
    NotEnoughPrimes {
        /// Requested bit size.
        bits: u32,
        /// log2 of the ring degree.
        log_n: u32,
    },

    /// Two operands are at different levels.
    #[error("level mismatch: {left} vs {right}")]
    #[diagnostic(
        code(hecc::ckks::level_mismatch),
        help("bring both operands to the same level with `drop_to_level`")
    )]
    LevelMismatch {
        /// Level of the first operand.
        left: usize,
        /// Level of the second operand.
        right: usize,
    },

    /// Two operands have different scales (beyond the relative tolerance).
    #[error("scale mismatch: 2^{:.6} vs 2^{:.6}", left.log2(), right.log2())]
    #[diagnostic(
        code(hecc::ckks::scale_mismatch),
        help("encode the plaintext at the ciphertext's scale, or rescale first")
    )]
    ScaleMismatch {
        /// Scale of the first operand.
        left: f64,
        /// Scale of the second operand.
        right: f64,
    },

    /// An operation needs a level the operand does not have.
    #[error("level {requested} is not available (operand at level {available})")]
    #[diagnostic(code(hecc::ckks::level_unavailable))]
    LevelUnavailable {
        /// The level that was asked for.
        requested: usize,
        /// The level the operand (or the parameter set) has.
        available: usize,
    },

    /// The ciphertext has the wrong number of polynomials for this operation.
    #[error("ciphertext has {found} polynomials, expected {expected}")]
    #[diagnostic(code(hecc::ckks::ciphertext_size))]
    CiphertextSize {
        /// Expected number of polynomials.
        expected: usize,
        /// Found number of polynomials.
        found: usize,
    },

    /// No Galois key for the requested Galois element.
    #[error("no Galois key for rotation step {step} (Galois element {galois_element})")]
    #[diagnostic(
        code(hecc::ckks::missing_galois_key),
        help("generate Galois keys for this step with `KeyGenerator::galois_keys`")
    )]
    MissingGaloisKey {
        /// Rotation step (0 for conjugation).
        step: i64,
        /// Galois element.
        galois_element: u64,
    },

    /// A key-switching key made for lower levels than the ciphertext it is asked to switch.
    #[error(
        "the key for rotation step {step} serves ciphertexts up to level {key_level}, \
         this one is at level {level}"
    )]
    #[diagnostic(
        code(hecc::ckks::key_level),
        help("generate the key for the levels the circuit rotates at (`KeyGenerator::galois_keys_to_levels`), or over the whole chain")
    )]
    KeyLevel {
        /// Rotation step (0 for conjugation and relinearization).
        step: i64,
        /// The highest level the key serves.
        key_level: usize,
        /// The ciphertext's level.
        level: usize,
    },

    /// An input value is out of range (too many slots, non-finite number, ...).
    #[error("invalid input: {0}")]
    #[diagnostic(code(hecc::ckks::invalid_input))]
    InvalidInput(String),

    /// The operating system random number generator failed.
    #[error("operating system randomness unavailable: {0}")]
    #[diagnostic(code(hecc::ckks::rng))]
    Rng(String),

    /// Serialized data does not start with the expected magic bytes.
    #[error("not a hecc CKKS object (bad magic)")]
    #[diagnostic(code(hecc::ckks::bad_magic))]
    BadMagic,

    /// Serialized data uses an unknown format version.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    #[diagnostic(code(hecc::ckks::unsupported_version))]
    UnsupportedVersion {
        /// Version found in the header.
        found: u16,
        /// Version this build supports.
        supported: u16,
    },

    /// Serialized data holds another kind of object.
    #[error("wrong object kind: expected {expected}, found {found}")]
    #[diagnostic(code(hecc::ckks::wrong_kind))]
    WrongKind {
        /// Expected kind name.
        expected: String,
        /// Found kind name.
        found: String,
    },

    /// Serialized data was made for another parameter set.
    #[error("parameter fingerprint mismatch: object made for {found}, context is {expected}")]
    #[diagnostic(
        code(hecc::ckks::fingerprint_mismatch),
        help("load the object with the context of the parameters it was created with")
    )]
    FingerprintMismatch {
        /// Hex prefix of the context's fingerprint.
        expected: String,
        /// Hex prefix of the object's fingerprint.
        found: String,
    },

    /// Serialized data ended early.
    #[error("truncated data: needed {needed} more bytes at offset {offset}")]
    #[diagnostic(code(hecc::ckks::truncated))]
    Truncated {
        /// Byte offset where reading failed.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },

    /// A serialized limb value is not reduced modulo its prime.
    #[error("limb {limb}: value {value} is not below its modulus {modulus}")]
    #[diagnostic(code(hecc::ckks::limb_out_of_range))]
    LimbOutOfRange {
        /// Limb index.
        limb: usize,
        /// Offending value.
        value: u64,
        /// The limb's modulus.
        modulus: u64,
    },

    /// Serialized data is structurally invalid.
    #[error("malformed data: {0}")]
    #[diagnostic(code(hecc::ckks::malformed))]
    Malformed(String),
}

/// Result alias of the CKKS backend.
pub type Result<T> = std::result::Result<T, CkksError>;
