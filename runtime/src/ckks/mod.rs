//! hecc's own RNS-CKKS implementation.
//!
//! Layering (each module imports only those above it): [`zq`] (word-size
//! modular arithmetic, prime generation) → [`ntt`] (negacyclic NTT) →
//! [`params`] and [`context`] (parameter sets and their precomputed tables) →
//! `poly` and `rns` (RNS polynomials, base conversion, ModUp/ModDown, rescale) →
//! [`keys`], [`encoding`], [`encrypt`], [`eval`] → [`boot`] → [`serial`].
//! Nothing here imports from `hecc-ir`.
//!
//! # Usage
//!
//! ```
//! use hecc_runtime::ckks::*;
//! # fn main() -> std::result::Result<(), CkksError> {
//! let params = CkksParameters::builder()
//!     .log_n(13).q0_bits(60).scale_bits(vec![40, 40]).special_bits(vec![60])
//!     .build()?; // 128-bit secure by default
//! let ctx = Context::new(params)?;
//! let mut keygen = KeyGenerator::new(&ctx)?;
//! let pk = keygen.public_key();
//! let rk = keygen.relin_key();
//! let gk = keygen.galois_keys(&[1], false);
//! let encoder = Encoder::new(&ctx);
//! let mut enc = Encryptor::new(&ctx, &pk)?;
//! let dec = Decryptor::new(&ctx, keygen.secret_key());
//! let eval = Evaluator::new(&ctx);
//!
//! let scale = 2f64.powi(40);
//! let x: Vec<f64> = (0..8).map(|i| i as f64 / 8.0).collect();
//! let ct = enc.encrypt(&encoder.encode(&x, ctx.max_level(), scale)?)?;
//! let sq = eval.rescale(&eval.mul_relin(&ct, &ct, &rk)?)?;   // x^2, one level lower
//! let rot = eval.rotate(&sq, 1, &gk)?;                         // slot i <- slot i+1
//! let out = encoder.decode(&dec.decrypt(&rot)?)?;
//! assert!((out[0] - x[1] * x[1]).abs() < 1e-6);
//! # Ok(()) }
//! ```
//!
//! # Public API
//!
//! * [`CkksParameters`] (+ [`CkksParametersBuilder`], [`SecurityLevel`],
//!   [`SecretDistribution`]) and [`Context`] (an `Arc` of precomputed tables;
//!   [`Context::ntt_forward`] exposes the raw NTT of one limb).
//! * [`Encoder`] ([`Plaintext`], [`Complex64`]).
//! * [`KeyGenerator`] → [`SecretKey`], [`PublicKey`], [`RelinKey`],
//!   [`GaloisKeys`].
//! * [`Encryptor`] (public key), [`SymmetricEncryptor`] (seeded), [`Decryptor`],
//!   [`Ciphertext`].
//! * [`Evaluator`]: add/sub/negate (ct-ct, ct-pt, ct-scalar), mul, square,
//!   relinearize, mul_plain, mul_scalar, mul_integer, mul_scalar_accumulate,
//!   rescale, drop_to_level, rotate, conjugate, rotate_hoisted, and sums of
//!   rotations with one ModDown (rotation_sum, add_rotation, finish_rotation_sum).
//! * [`Bootstrapper`] ([`BootstrapConfig`], [`BootstrapKeys`],
//!   [`bootstrap_parameters`]): refreshes a ciphertext to a high level
//!   (sparse-secret encapsulation, ModRaise, baby-step giant-step DFTs,
//!   Chebyshev modular reduction), full or sparse slots.
//! * [`serial`]: `to_bytes` / `from_bytes` for every object, versioned,
//!   with a parameter fingerprint.
//! * [`CkksError`]: the one error type.
//!
//! Randomness comes from ChaCha20 seeded by the operating system; the only
//! deterministic entry points are the `*_with_insecure_test_seed` constructors.
//! Parallelism is rayon over limbs and polynomials (`RAYON_NUM_THREADS`
//! controls the global pool).

pub mod boot;
pub mod context;
pub mod encoding;
pub mod encrypt;
pub mod error;
pub mod eval;
pub mod keys;
pub mod mac;
pub mod ntt;
pub mod params;
pub(crate) mod pointwise;
pub(crate) mod poly;
pub(crate) mod rns;
pub mod serial;
pub mod zq;

pub use boot::{
    bootstrap_parameters, key_plan, BootstrapConfig, BootstrapCost, BootstrapKeyPlan,
    BootstrapKeys, BootstrapTimings, Bootstrapper, EncapsulationKeys, INPUT_SCALE_TOLERANCE_BITS,
};
pub use context::Context;
pub use encoding::{Complex64, Encoder, Plaintext};
pub use encrypt::{Ciphertext, Decryptor, Encryptor, SymmetricEncryptor};
pub use error::{CkksError, Result};
pub use eval::{Evaluator, RotationSum};
pub use keys::{GaloisKeys, KeyGenerator, PublicKey, RelinKey, SecretKey};
pub use params::{CkksParameters, CkksParametersBuilder, SecretDistribution, SecurityLevel};
