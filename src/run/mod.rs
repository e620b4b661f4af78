//! Running compiled plans on encrypted batches: key generation, encryption of image files,
//! the server-side run, decryption, and the one-shot `infer` pipeline with optional
//! verification against the plaintext reference.
//!
//! Contract: every file written here is a *hecc container*: magic `HECCFILE`, format version,
//! a [`FileKind`], the 32-byte parameter fingerprint of its plan's CKKS parameters, the 32-byte
//! digest of its plan, the 32-byte [`KeyId`] of the key set it belongs to, length-prefixed
//! sections holding the backend's own serialized
//! objects (themselves fingerprinted), and a trailing SHA-256 of everything before it. Reading
//! checks, in order: magic, version, kind, structure (a short file is [`RunError::Truncated`]),
//! checksum ([`RunError::Corrupt`]), then the parameters and plan it belongs to
//! ([`RunError::ParamsMismatch`], [`RunError::PlanMismatch`]) and the keys
//! ([`RunError::KeyMismatch`]). The server step ([`run_inputs`]) reads only evaluation keys.
//! Files are written atomically; secret keys are private to their owner.
//!
//! Results are bound to their request: `encrypt` with the secret key writes a [`Request`]
//! record (a random id, the image count, the key, the plan and the digest of the outputs the
//! plan produces) with an HMAC tag keyed by a hash of the secret key; the server copies it into
//! the outputs with the digest of the inputs file it ran on, and `decrypt` checks the tag, the
//! count and the outputs' layout before decrypting. A server can still compute something other
//! than the plan and encrypt it under the public key: CKKS gives no integrity of the values.

use crate::compile::{backend_params, compile_graph, CompileOptions};
use crate::files::read_file;
use hecc_ir::he::{Layout, Module, ValueId};
use hecc_passes::plan::{Plan, PlanTensor};
use hecc_runtime::ckks::{
    BootstrapConfig, Bootstrapper, Ciphertext, CkksError, CkksParameters, Context, Decryptor,
    EncapsulationKeys, Encoder, Encryptor, Evaluator, GaloisKeys, KeyGenerator, PublicKey,
    RelinKey, SecretKey, SymmetricEncryptor,
};
use hecc_runtime::exec::{
    execute, level_stages, BootEval, EvalKeys, ExecOptions, ProgressSink, RunReport, SpillOptions,
    StageMap,
};
use miette::{miette, IntoDiagnostic, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod client;
mod container;
mod decrypt;
mod infer;
mod keys;
mod render;
mod server;
mod session;
mod stream;

pub use crate::images::*;
pub use client::*;
pub use container::*;
pub use decrypt::*;
pub use infer::*;
pub use keys::*;
pub use render::*;
pub use server::*;
pub use session::*;
pub use stream::*;

#[cfg(test)]
mod tests {
    use super::MemoryLimit;

    #[test]
    fn memory_limits_parse() {
        use super::MemoryLimit::{Bytes, Plan, Unlimited};
        let p = |t: &str| t.parse::<MemoryLimit>();
        assert_eq!(p("plan"), Ok(Plan));
        assert_eq!(p("PLAN"), Ok(Plan));
        assert_eq!(p("none"), Ok(Unlimited));
        assert_eq!(p("Unlimited"), Ok(Unlimited));
        assert_eq!(p("1000"), Ok(Bytes(1000)));
        assert_eq!(p("6GiB"), Ok(Bytes(6 << 30)));
        assert_eq!(p("512M"), Ok(Bytes(512 << 20)));
        assert_eq!(p("1.5g"), Ok(Bytes(3 << 29)));
        assert_eq!(p("64kb"), Ok(Bytes(64 << 10)));
        assert_eq!(p("2T"), Ok(Bytes(2 << 40)));
        assert_eq!(p("1e3"), Ok(Bytes(1000)));
        for bad in ["", "-1G", "0", "0.5", "6iB", "lots", "6XB", "nan", "1e30G"] {
            let e = p(bad).expect_err(bad);
            assert!(e.contains("not a memory size"), "{bad}: {e}");
        }
    }
}
