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

use crate::compile::{backend_params, compile_graph, write_atomic, CompileOptions};
use hecc_ir::he::{Layout, Module, ValueId};
use hecc_passes::plan::{Plan, PlanTensor};
use hecc_runtime::ckks::{
    Ciphertext, CkksError, CkksParameters, Context, Decryptor, Encoder, Encryptor, Evaluator,
    GaloisKeys, KeyGenerator, PublicKey, RelinKey, SecretKey, SymmetricEncryptor,
};
use hecc_runtime::exec::{
    execute, level_stages, EvalKeys, ExecOptions, ProgressSink, RunReport, StageMap,
};
use miette::{miette, IntoDiagnostic, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Magic bytes of hecc container files.
pub const FILE_MAGIC: [u8; 8] = *b"HECCFILE";
/// Container format version.
pub const FILE_VERSION: u16 = 2;
const HEADER: usize = 8 + 2 + 1 + 1 + 4 + 32 + 32 + 32;

/// What a container holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// The evaluation keys: public, relinearization and Galois keys.
    EvalKeys = 1,
    /// The secret key.
    SecretKey = 2,
    /// Encrypted inputs of a batch.
    Inputs = 3,
    /// Encrypted outputs of a run.
    Outputs = 4,
}

impl FileKind {
    fn from_u8(b: u8) -> Option<FileKind> {
        Some(match b {
            1 => FileKind::EvalKeys,
            2 => FileKind::SecretKey,
            3 => FileKind::Inputs,
            4 => FileKind::Outputs,
            _ => return None,
        })
    }

    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::EvalKeys => "evaluation keys",
            FileKind::SecretKey => "secret key",
            FileKind::Inputs => "encrypted inputs",
            FileKind::Outputs => "encrypted outputs",
        }
    }
}

/// Why a hecc file or input could not be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RunError {
    /// Not a hecc container.
    #[error("{path}: not a hecc file (bad magic bytes)")]
    #[diagnostic(code(hecc::run::magic))]
    BadMagic {
        /// The file.
        path: String,
    },
    /// Another container version.
    #[error("{path}: hecc file format version {found} is not supported (this hecc reads {FILE_VERSION})")]
    #[diagnostic(code(hecc::run::version))]
    Version {
        /// The file.
        path: String,
        /// Version found.
        found: u16,
    },
    /// A file of another kind.
    #[error("{path}: expected {expected}, found {found}")]
    #[diagnostic(code(hecc::run::kind))]
    WrongKind {
        /// The file.
        path: String,
        /// Kind wanted.
        expected: &'static str,
        /// Kind found.
        found: String,
    },
    /// The file ends early.
    #[error("{path}: truncated ({len} bytes; the structure needs at least {needed})")]
    #[diagnostic(
        code(hecc::run::truncated),
        help("the file was cut short; copy it again")
    )]
    Truncated {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// Header bytes reserved for later versions are set.
    #[error("{path}: reserved header bytes are not zero; not written by this hecc (or edited)")]
    #[diagnostic(code(hecc::run::reserved))]
    Reserved {
        /// The file.
        path: String,
    },
    /// The checksum does not match: the file was modified.
    #[error("{path}: corrupt (checksum mismatch); the file was modified or damaged")]
    #[diagnostic(code(hecc::run::corrupt))]
    Corrupt {
        /// The file.
        path: String,
    },
    /// The file belongs to other encryption parameters.
    #[error(
        "{path}: made for other encryption parameters (fingerprint {found}, expected {expected})"
    )]
    #[diagnostic(
        code(hecc::run::params),
        help("keys, ciphertexts and plan must come from the same `hecc compile`/`hecc keygen`")
    )]
    ParamsMismatch {
        /// The file.
        path: String,
        /// Fingerprint prefix expected.
        expected: String,
        /// Fingerprint prefix found.
        found: String,
    },
    /// The file belongs to another plan (same parameters, another circuit or plan field).
    #[error("{path}: made for another plan (plan digest {found}, expected {expected})")]
    #[diagnostic(code(hecc::run::plan))]
    PlanMismatch {
        /// The file.
        path: String,
        /// Digest prefix expected.
        expected: String,
        /// Digest prefix found.
        found: String,
    },
    /// The file belongs to another key set (another `hecc keygen`).
    #[error("{path}: made with other keys (key id {found}, expected {expected})")]
    #[diagnostic(
        code(hecc::run::keys),
        help("keys, ciphertexts and results must all come from the same `hecc keygen`")
    )]
    KeyMismatch {
        /// The file.
        path: String,
        /// Key id expected.
        expected: String,
        /// Key id found.
        found: String,
    },
    /// The file's content contradicts itself or its request: it was edited.
    #[error("{path}: {detail}")]
    #[diagnostic(
        code(hecc::run::tampered),
        help("the file was modified after it was written; do not trust it")
    )]
    Tampered {
        /// The file.
        path: String,
        /// What does not match.
        detail: String,
    },
    /// A key or ciphertext does not match the other files.
    #[error("{what}: {detail}")]
    #[diagnostic(code(hecc::run::mismatch))]
    Mismatch {
        /// What was compared.
        what: String,
        /// Explanation.
        detail: String,
    },
    /// A backend object inside the file failed to load.
    #[error("{path}: {source}")]
    #[diagnostic(code(hecc::run::backend))]
    Backend {
        /// The file.
        path: String,
        /// The backend error.
        #[source]
        source: CkksError,
    },
    /// An input image file could not be read.
    #[error("{path}: {detail}")]
    #[diagnostic(code(hecc::run::input))]
    Input {
        /// The file.
        path: String,
        /// Explanation.
        detail: String,
    },
}

/// The first 8 bytes of `b` in hex: how ids and digests are named in messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

// ------------------------------------------------------------------ containers

/// A parsed container.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    /// Kind.
    pub kind: FileKind,
    /// Parameter fingerprint.
    pub fingerprint: [u8; 32],
    /// Plan digest.
    pub plan_digest: [u8; 32],
    /// Key set identity.
    pub key_id: KeyId,
    /// Sections.
    pub sections: Vec<Vec<u8>>,
}

impl Container {
    /// Serializes (with the trailing checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self.sections.iter().map(|s| s.len() + 8).sum();
        let mut out = Vec::with_capacity(HEADER + 4 + body + 32);
        out.extend_from_slice(&FILE_MAGIC);
        out.extend_from_slice(&FILE_VERSION.to_le_bytes());
        out.push(self.kind as u8);
        out.push(0);
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.plan_digest);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&(self.sections.len() as u32).to_le_bytes());
        for s in &self.sections {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Parses and checks magic, version, kind, structure and checksum (not the fingerprints).
    pub fn from_bytes(bytes: &[u8], expected: FileKind, path: &str) -> Result<Container, RunError> {
        let p = || path.to_string();
        if bytes.len() < 8 || bytes[..8] != FILE_MAGIC {
            return Err(RunError::BadMagic { path: p() });
        }
        let trunc = |needed: usize| RunError::Truncated {
            path: p(),
            len: bytes.len(),
            needed,
        };
        if bytes.len() < HEADER + 4 {
            return Err(trunc(HEADER + 4 + 32));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FILE_VERSION {
            return Err(RunError::Version {
                path: p(),
                found: version,
            });
        }
        let kind = FileKind::from_u8(bytes[10]);
        if kind != Some(expected) {
            return Err(RunError::WrongKind {
                path: p(),
                expected: expected.name(),
                found: kind.map_or_else(
                    || format!("unknown kind {}", bytes[10]),
                    |k| k.name().to_string(),
                ),
            });
        }
        if bytes[11..16].iter().any(|&b| b != 0) {
            return Err(RunError::Reserved { path: p() });
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&bytes[16..48]);
        let mut plan_digest = [0u8; 32];
        plan_digest.copy_from_slice(&bytes[48..80]);
        let mut key_id = [0u8; 32];
        key_id.copy_from_slice(&bytes[80..112]);
        let count = u32::from_le_bytes([bytes[112], bytes[113], bytes[114], bytes[115]]) as usize;
        let mut pos = HEADER + 4;
        let mut sections = Vec::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            if bytes.len() < pos + 8 {
                return Err(trunc(pos + 8 + 32));
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&bytes[pos..pos + 8]);
            let len = u64::from_le_bytes(l) as usize;
            pos += 8;
            let end = pos.checked_add(len).ok_or_else(|| trunc(usize::MAX))?;
            if bytes.len() < end {
                return Err(trunc(end.saturating_add(32)));
            }
            sections.push(bytes[pos..end].to_vec());
            pos = end;
        }
        if bytes.len() < pos + 32 {
            return Err(trunc(pos + 32));
        }
        if bytes.len() > pos + 32 || Sha256::digest(&bytes[..pos])[..] != bytes[pos..pos + 32] {
            return Err(RunError::Corrupt { path: p() });
        }
        Ok(Container {
            kind: expected,
            fingerprint,
            plan_digest,
            key_id,
            sections,
        })
    }

    /// Checks that the container belongs to `session`'s parameters and plan.
    pub fn check_plan(&self, session: &Session, path: &str) -> Result<(), RunError> {
        let fp = session.ctx.fingerprint();
        if &self.fingerprint != fp {
            return Err(RunError::ParamsMismatch {
                path: path.to_string(),
                expected: hex(fp),
                found: hex(&self.fingerprint),
            });
        }
        if self.plan_digest != session.digest {
            return Err(RunError::PlanMismatch {
                path: path.to_string(),
                expected: hex(&session.digest),
                found: hex(&self.plan_digest),
            });
        }
        Ok(())
    }

    /// Checks that the container belongs to the key set `id`.
    pub fn check_key(&self, id: &KeyId, path: &str) -> Result<(), RunError> {
        if &self.key_id != id {
            return Err(RunError::KeyMismatch {
                path: path.to_string(),
                expected: hex(id),
                found: hex(&self.key_id),
            });
        }
        Ok(())
    }
}

/// The key id in the header of a hecc file of kind `kind`, read without loading the file
/// (its checksum is checked when the file itself is used).
pub fn peek_key_id(path: &Path, kind: FileKind) -> Result<KeyId> {
    use std::io::Read;
    let p = path.display().to_string();
    let mut head = vec![0u8; HEADER];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| miette!("cannot read {p}: {e}"))?;
    if head[..8] != FILE_MAGIC {
        return Err(RunError::BadMagic { path: p }.into());
    }
    if FileKind::from_u8(head[10]) != Some(kind) {
        return Err(RunError::WrongKind {
            path: p,
            expected: kind.name(),
            found: format!("kind {}", head[10]),
        }
        .into());
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&head[80..112]);
    Ok(id)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| miette!("cannot read {}: {e}", path.display()))
}

fn read_container(path: &Path, kind: FileKind) -> Result<Container> {
    let bytes = read_file(path)?;
    Ok(Container::from_bytes(
        &bytes,
        kind,
        &path.display().to_string(),
    )?)
}

// ------------------------------------------------------------------ session

/// A plan ready to run: the parsed circuit and the backend context of its primes.
pub struct Session {
    /// The plan.
    pub plan: Plan,
    /// The managed circuit.
    pub module: Module,
    /// The backend context.
    pub ctx: Arc<Context>,
    /// The plan's digest ([`Plan::digest`]; binds key and ciphertext files to this plan).
    pub digest: [u8; 32],
    /// Whether the plan's parameters are below 128-bit security (accepted only when asked).
    pub insecure: bool,
}

/// Largest per-image element count of a plan input (64 Mi values).
pub const MAX_INPUT_ELEMENTS: usize = 1 << 26;

impl Session {
    /// Prepares a plan: parses its circuit and rebuilds its CKKS parameters, checking that the
    /// backend generates exactly the plan's primes and that they meet 128-bit security.
    pub fn new(plan: Plan) -> Result<Session> {
        Session::with_security(plan, false)
    }

    /// [`Session::new`], accepting parameters below 128-bit security when `insecure_ok`
    /// (then [`Session::insecure`] says whether they are).
    pub fn with_security(plan: Plan, insecure_ok: bool) -> Result<Session> {
        let insecure = check_plan_security(&plan, insecure_ok)?;
        check_plan_limits(&plan)?;
        let module = hecc_ir::text::parse_module(&plan.circuit)
            .map_err(|e| miette!("the plan's circuit does not parse: {e}"))?;
        let params: CkksParameters = backend_params(&plan.params, insecure)?;
        if params.q() != plan.primes.as_slice() || params.p() != plan.special_primes.as_slice() {
            return Err(miette!(
                "the backend generates other primes than the plan's for these parameters; recompile the plan"
            ));
        }
        if module.params.as_ref().map(|p| &p.primes) != Some(&plan.primes) {
            return Err(miette!(
                "the plan's circuit was compiled for other primes than its parameters'; recompile the plan"
            ));
        }
        let ctx = Context::new(params).into_diagnostic()?;
        let digest = plan.digest()?;
        Ok(Session {
            plan,
            module,
            ctx,
            digest,
            insecure,
        })
    }

    /// Reads a plan file and prepares it ([`Session::with_security`]).
    pub fn open_with_security(path: &Path, insecure_ok: bool) -> Result<Session> {
        Session::with_security(crate::compile::read_plan(path)?, insecure_ok)
    }

    /// Reads a plan file and prepares it ([`Session::new`]).
    pub fn open(path: &Path) -> Result<Session> {
        Session::open_with_security(path, false)
    }

    fn container(&self, kind: FileKind, key_id: KeyId, sections: Vec<Vec<u8>>) -> Container {
        Container {
            kind,
            fingerprint: *self.ctx.fingerprint(),
            plan_digest: self.digest,
            key_id,
            sections,
        }
    }

    /// The model input (plans of one input only).
    pub fn input(&self) -> Result<&PlanTensor> {
        match self.plan.inputs.as_slice() {
            [i] => Ok(i),
            other => Err(miette!(
                "plans with {} inputs are not supported",
                other.len()
            )),
        }
    }

    /// The plan's memory-aware evaluation order, when it has one.
    pub fn schedule(&self) -> Option<Vec<u32>> {
        (!self.plan.schedule.is_empty()).then(|| self.plan.schedule.clone())
    }

    /// Run stages named after the plan's layers: the stage computing at level `l` is named
    /// after the layers whose inputs are at level `l`.
    pub fn stages(&self) -> StageMap {
        let mut st = level_stages(&self.module);
        for name in st.names.iter_mut() {
            let Some(l) = name
                .strip_prefix("level ")
                .and_then(|l| l.parse::<u32>().ok())
            else {
                continue;
            };
            let layers: Vec<&str> = self
                .plan
                .report
                .layers
                .iter()
                .filter(|x| x.level_in == Some(l))
                .map(|x| x.name.as_str())
                .collect();
            *name = if layers.is_empty() {
                format!("level {l}")
            } else {
                format!("{} (l={l})", layers.join("+"))
            };
        }
        st
    }
}

/// Checks a plan's parameters against the security table, whatever the plan's own
/// `security` field says; returns whether they are below 128-bit (an error unless
/// `insecure_ok`).
fn check_plan_security(plan: &Plan, insecure_ok: bool) -> Result<bool> {
    use hecc_passes::params::{max_log_qp, Security};
    let p = &plan.params;
    let log_qp = log_qp_bits(plan.primes.iter().chain(&plan.special_primes));
    let secure = max_log_qp(p.log_n, Security::Bits128).is_some_and(|b| log_qp <= b);
    let claimed = p.security;
    if claimed != Security::InsecureNone {
        let claimed_ok = max_log_qp(p.log_n, claimed).is_some_and(|b| log_qp <= b);
        if !claimed_ok && !insecure_ok {
            return Err(miette!(
                help = "recompile the model; plans are not meant to be edited",
                "the plan claims {} security, but its parameters (N=2^{}, log2(QP) = {log_qp}) do not meet it{}",
                claimed.name(),
                p.log_n,
                max_log_qp(p.log_n, claimed)
                    .map(|b| format!(" (the bound is {b})"))
                    .unwrap_or_else(|| " (the ring is outside the security table)".into())
            ));
        }
    }
    if !secure && !insecure_ok {
        return Err(miette!(
            help = "pass --insecure to use it anyway (for tests only)",
            "the plan's parameters (N=2^{}, log2(QP) = {log_qp}) are below 128-bit security",
            p.log_n
        ));
    }
    Ok(!secure)
}

/// `log2(QP)` as the security table counts it: the sum of the primes' bit lengths.
fn log_qp_bits<'a>(primes: impl Iterator<Item = &'a u64>) -> u32 {
    primes.map(|q| u64::BITS - q.leading_zeros()).sum()
}

/// Whether CKKS parameters are below 128-bit security by the HomomorphicEncryption.org table.
pub fn params_insecure(p: &CkksParameters) -> bool {
    let log_qp = log_qp_bits(p.q().iter().chain(p.p()));
    hecc_passes::params::max_log_qp(p.log_n(), hecc_passes::params::Security::Bits128)
        .is_none_or(|b| log_qp > b)
}

/// Limits on the plan fields that size allocations, checked before anything is allocated.
fn check_plan_limits(plan: &Plan) -> Result<()> {
    let p = &plan.params;
    if !(10..=17).contains(&p.log_n) {
        return Err(miette!(
            "plan field `params.log_n` = {}: supported ring degrees are 2^10 to 2^17",
            p.log_n
        ));
    }
    let slots = 1u64 << (p.log_n - 1);
    if plan.batch == 0 || u64::from(plan.batch) > slots {
        return Err(miette!(
            "plan field `batch` = {}: must be 1 to {slots} (the slots of N=2^{})",
            plan.batch,
            p.log_n
        ));
    }
    if plan.rotation_steps.len() as u64 > slots {
        return Err(miette!(
            "plan field `rotation_steps` lists {} steps; at most {slots} exist",
            plan.rotation_steps.len()
        ));
    }
    for t in plan.inputs.iter().chain(&plan.outputs) {
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_INPUT_ELEMENTS);
        if n.is_none() {
            return Err(miette!(
                "plan tensor `{}` has shape {:?}: more than the limit of {MAX_INPUT_ELEMENTS} values per image",
                t.name,
                t.shape
            ));
        }
        if let Some([lo, hi]) = t.range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(miette!(
                    "plan tensor `{}` has input range [{lo}, {hi}]: not a finite interval",
                    t.name
                ));
            }
            let limit = crate::compile::MAX_INPUT_MAGNITUDE;
            if lo.abs().max(hi.abs()) > limit {
                return Err(miette!(
                    "plan tensor `{}` has input range [{lo}, {hi}]: beyond the limit of ±{limit}",
                    t.name
                ));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ keys

/// Identity of a key set: a SHA-256 of all its serialized evaluation keys (public,
/// relinearization and Galois keys), so that no evaluation key can be replaced or edited without
/// changing it. Evaluation keys, secret keys, ciphertexts and results carry it; every mismatch
/// is a [`RunError::KeyMismatch`].
pub type KeyId = [u8; 32];

/// The key id of the serialized public, relinearization and Galois keys.
pub fn key_id_of(sections: [&[u8]; 3]) -> KeyId {
    let mut h = Sha256::new();
    h.update(b"hecc key id v2");
    for s in sections {
        h.update((s.len() as u64).to_le_bytes());
        h.update(s);
    }
    h.finalize().into()
}

/// The client's secret key with its key set's id.
pub struct ClientSecret {
    /// The secret key.
    pub key: SecretKey,
    /// The id of its key set.
    pub id: KeyId,
    /// Key of the request tags (derived from the secret key).
    tag_key: [u8; 32],
}

impl ClientSecret {
    /// Wraps a secret key of key set `id`.
    pub fn new(ctx: &Context, key: SecretKey, id: KeyId) -> ClientSecret {
        let mut h = Sha256::new();
        h.update(b"hecc request tag v1");
        h.update(key.to_bytes(ctx));
        ClientSecret {
            key,
            id,
            tag_key: h.finalize().into(),
        }
    }
}

/// All keys of a plan.
pub struct KeySet {
    /// The secret key (client only).
    pub secret: ClientSecret,
    /// The evaluation keys.
    pub eval: EvalKeySet,
}

/// The public evaluation keys.
pub struct EvalKeySet {
    /// Public key.
    pub public: PublicKey,
    /// Relinearization key.
    pub relin: RelinKey,
    /// Galois keys for exactly the plan's rotation steps.
    pub galois: GaloisKeys,
    /// The key set's id ([`key_id_of`] its keys).
    pub id: KeyId,
}

impl EvalKeySet {
    /// As the executor wants them.
    pub fn as_exec(&self) -> EvalKeys<'_> {
        EvalKeys {
            relin: Some(&self.relin),
            galois: Some(&self.galois),
        }
    }
}

/// Generates fresh keys for a plan (OS randomness).
pub fn generate_keys(s: &Session) -> Result<KeySet> {
    let mut kg = KeyGenerator::new(&s.ctx).into_diagnostic()?;
    let steps: Vec<i64> = s
        .plan
        .rotation_steps
        .iter()
        .map(|&k| i64::from(k))
        .collect();
    let public = kg.public_key();
    let relin = kg.relin_key();
    let galois = kg.galois_keys(&steps, false);
    let id = key_id_of([
        &public.to_bytes(&s.ctx),
        &relin.to_bytes(&s.ctx),
        &galois.to_bytes(&s.ctx),
    ]);
    Ok(KeySet {
        secret: ClientSecret::new(&s.ctx, kg.secret_key().clone(), id),
        eval: EvalKeySet {
            public,
            relin,
            galois,
            id,
        },
    })
}

/// File names inside a key directory.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// File name of the evaluation keys inside a key directory.
pub const EVAL_KEYS_FILE: &str = "eval.keys";

/// Serializes the evaluation keys.
pub fn eval_keys_bytes(s: &Session, k: &EvalKeySet) -> Vec<u8> {
    let ctx = &s.ctx;
    s.container(
        FileKind::EvalKeys,
        k.id,
        vec![
            k.public.to_bytes(ctx),
            k.relin.to_bytes(ctx),
            k.galois.to_bytes(ctx),
        ],
    )
    .to_bytes()
}

/// Serializes the secret key.
pub fn secret_key_bytes(s: &Session, sk: &ClientSecret) -> Vec<u8> {
    s.container(FileKind::SecretKey, sk.id, vec![sk.key.to_bytes(&s.ctx)])
        .to_bytes()
}

/// Writes `DIR/secret.key` (mode 0600; a directory created here is 0700) and `DIR/eval.keys`;
/// returns their paths.
pub fn write_keys(s: &Session, keys: &KeySet, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    crate::files::create_private_dir(dir)?;
    let sk = dir.join(SECRET_KEY_FILE);
    let ek = dir.join(EVAL_KEYS_FILE);
    crate::files::write_private(&sk, &secret_key_bytes(s, &keys.secret))?;
    write_atomic(&ek, &eval_keys_bytes(s, &keys.eval))?;
    Ok((sk, ek))
}

fn backend_err(path: &Path) -> impl Fn(CkksError) -> RunError + '_ {
    move |source| RunError::Backend {
        path: path.display().to_string(),
        source,
    }
}

/// Reads evaluation keys and checks they belong to the plan, carry their own key id and cover
/// the plan's rotations.
pub fn read_eval_keys(s: &Session, path: &Path) -> Result<EvalKeySet> {
    let c = read_container(path, FileKind::EvalKeys)?;
    let p = path.display().to_string();
    c.check_plan(s, &p)?;
    let [public, relin, galois] = c.sections.as_slice() else {
        return Err(RunError::Corrupt { path: p }.into());
    };
    let ctx = &s.ctx;
    let be = backend_err(path);
    let id = key_id_of([public, relin, galois]);
    let public = PublicKey::from_bytes(ctx, public).map_err(&be)?;
    if id != c.key_id {
        return Err(RunError::Tampered {
            path: p,
            detail: format!(
                "the key id in the header ({}) is not that of the keys it holds ({})",
                hex(&c.key_id),
                hex(&id)
            ),
        }
        .into());
    }
    let keys = EvalKeySet {
        public,
        relin: RelinKey::from_bytes(ctx, relin).map_err(&be)?,
        galois: GaloisKeys::from_bytes(ctx, galois).map_err(&be)?,
        id,
    };
    for &k in &s.plan.rotation_steps {
        let g = s.ctx.galois_element(i64::from(k));
        if g != 1 && !keys.galois.contains(g) {
            return Err(RunError::Mismatch {
                what: p,
                detail: format!("no Galois key for rotation step {k} the plan needs"),
            }
            .into());
        }
    }
    Ok(keys)
}

/// Reads a secret key and checks it belongs to the parameters `ctx` and plan `digest`. A key
/// file that other users can read or write is refused unless `allow_shared`.
pub fn read_secret_key(
    ctx: &Arc<Context>,
    digest: &[u8; 32],
    path: &Path,
    allow_shared: bool,
) -> Result<ClientSecret> {
    crate::files::check_private(path, allow_shared)?;
    let c = read_container(path, FileKind::SecretKey)?;
    let p = path.display().to_string();
    if &c.fingerprint != ctx.fingerprint() {
        return Err(RunError::ParamsMismatch {
            path: p,
            expected: hex(ctx.fingerprint()),
            found: hex(&c.fingerprint),
        }
        .into());
    }
    if &c.plan_digest != digest {
        return Err(RunError::PlanMismatch {
            path: p,
            expected: hex(digest),
            found: hex(&c.plan_digest),
        }
        .into());
    }
    let [sk] = c.sections.as_slice() else {
        return Err(RunError::Corrupt { path: p }.into());
    };
    let key = SecretKey::from_bytes(ctx, sk).map_err(backend_err(path))?;
    Ok(ClientSecret::new(ctx, key, c.key_id))
}

// ------------------------------------------------------------------ images

/// A batch of images, already scaled to the model input's domain, row-major
/// `[count, per_image]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Values per image.
    pub per_image: usize,
    /// The values.
    pub data: Vec<f64>,
}

impl Images {
    /// Up to `n` images from image `start` on.
    pub fn slice(&self, start: usize, n: usize) -> Images {
        let start = start.min(self.count);
        let n = n.min(self.count - start);
        Images {
            count: n,
            per_image: self.per_image,
            data: self.data[start * self.per_image..(start + n) * self.per_image].to_vec(),
        }
    }

    /// The first `n` images.
    pub fn take(&self, n: usize) -> Images {
        let n = n.min(self.count);
        Images {
            count: n,
            per_image: self.per_image,
            data: self.data[..n * self.per_image].to_vec(),
        }
    }
}

/// A numeric array read from a file: its shape, values, and whether they were raw bytes.
struct RawArray {
    shape: Vec<usize>,
    values: Vec<f64>,
    bytes: bool,
}

fn input_err(path: &Path, detail: impl Into<String>) -> RunError {
    RunError::Input {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

fn parse_idx(path: &Path, b: &[u8]) -> Result<RawArray, RunError> {
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(input_err(path, "not an IDX file"));
    }
    let (width, bytes) = match b[2] {
        0x08 | 0x09 => (1, true),
        0x0B => (2, false),
        0x0C | 0x0D => (4, false),
        0x0E => (8, false),
        t => {
            return Err(input_err(
                path,
                format!("unknown IDX element type 0x{t:02x}"),
            ))
        }
    };
    let nd = b[3] as usize;
    let head = 4 + 4 * nd;
    if b.len() < head {
        return Err(input_err(path, "truncated IDX header"));
    }
    let shape: Vec<usize> = (0..nd)
        .map(|i| {
            u32::from_be_bytes([b[4 + 4 * i], b[5 + 4 * i], b[6 + 4 * i], b[7 + 4 * i]]) as usize
        })
        .collect();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = n.ok_or_else(|| input_err(path, "IDX dimensions overflow"))?;
    let need = n.checked_mul(width).and_then(|x| x.checked_add(head));
    if need != Some(b.len()) {
        return Err(input_err(
            path,
            format!(
                "IDX file has {} bytes, its header says {}",
                b.len(),
                need.unwrap_or(usize::MAX)
            ),
        ));
    }
    let d = &b[head..];
    let values: Vec<f64> = match b[2] {
        0x08 => d.iter().map(|&x| f64::from(x)).collect(),
        0x09 => d.iter().map(|&x| f64::from(x as i8)).collect(),
        0x0B => d
            .chunks(2)
            .map(|c| f64::from(i16::from_be_bytes([c[0], c[1]])))
            .collect(),
        0x0C => d
            .chunks(4)
            .map(|c| f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        0x0D => d
            .chunks(4)
            .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => d
            .chunks(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    };
    Ok(RawArray {
        shape,
        values,
        bytes: bytes && b[2] == 0x08,
    })
}

fn parse_npy(path: &Path, b: &[u8]) -> Result<RawArray, RunError> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(input_err(path, "not a .npy file"));
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(input_err(path, format!("unsupported .npy version {v}"))),
    };
    let header = b
        .get(start..start + hlen)
        .ok_or_else(|| input_err(path, "truncated .npy header"))?;
    let header = std::str::from_utf8(header).map_err(|_| input_err(path, "bad .npy header"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = &header[i + key.len() + 2..];
        Some(rest.trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| input_err(path, "no dtype in .npy header"))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(input_err(
            path,
            "Fortran-ordered .npy arrays are not supported",
        ));
    }
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| input_err(path, "no shape in .npy header"))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| input_err(path, "bad shape in .npy header"))?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| input_err(path, format!(".npy shape {shape:?} overflows")))?;
    let d = &b[start + hlen..];
    let (width, bytes) = match descr {
        "|u1" | "<u1" => (1, true),
        "<f4" | "<i4" => (4, false),
        "<f8" | "<i8" => (8, false),
        other => return Err(input_err(path, format!("unsupported .npy dtype `{other}`"))),
    };
    if n.checked_mul(width) != Some(d.len()) {
        return Err(input_err(
            path,
            format!("{} data bytes for {n} elements of {width} bytes", d.len()),
        ));
    }
    let values: Vec<f64> = match descr {
        "|u1" | "<u1" => d.iter().map(|&x| f64::from(x)).collect(),
        "<f4" => d
            .chunks(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i4" => d
            .chunks(4)
            .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        "<i8" => d
            .chunks(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
            .collect(),
        _ => d
            .chunks(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    };
    Ok(RawArray {
        shape,
        values,
        bytes,
    })
}

fn parse_png(path: &Path, b: &[u8]) -> Result<RawArray, RunError> {
    let mut dec = png::Decoder::new(std::io::Cursor::new(b));
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec
        .read_info()
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    // Read to the end marker: a file cut after the pixel data is still refused.
    reader
        .finish()
        .map_err(|e| input_err(path, format!("PNG: {e}")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let ch = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let values: Vec<f64> = px
        .chunks(ch)
        .take(w * h)
        .map(|p| match ch {
            1 | 2 => f64::from(p[0]),
            _ => (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
                .round(),
        })
        .collect();
    Ok(RawArray {
        shape: vec![1, h, w],
        values,
        bytes: true,
    })
}

/// Loads images from a `.npy`, IDX (MNIST format) or PNG file for the model input `input`.
/// Byte data (IDX `u8`, `.npy` `u1`, PNG) is mapped linearly from `[0, 255]` onto the input's
/// declared `range` (default `[0, 1]`); floating-point data is taken as is. A PNG holds one
/// image; the other formats hold `[count, ...]` with the input's per-image element count.
pub fn load_images(path: &Path, input: &PlanTensor) -> Result<Images> {
    let b = read_file(path)?;
    let raw = match sniff(path, &b)? {
        Format::Npy => parse_npy(path, &b)?,
        Format::Png => parse_png(path, &b)?,
        Format::Idx => parse_idx(path, &b)?,
    };
    let per: usize = input.shape.iter().product::<usize>().max(1);
    if raw.shape.len() < 2 && raw.values.len() != per {
        return Err(input_err(
            path,
            format!(
                "a 1-D array of {} values (labels?): images are stored as [count, ...]",
                raw.values.len()
            ),
        )
        .into());
    }
    if raw.values.len() % per != 0 || raw.values.is_empty() {
        return Err(input_err(
            path,
            format!(
                "{} values (shape {:?}) are not a whole number of images of shape {:?}",
                raw.values.len(),
                raw.shape,
                input.shape
            ),
        )
        .into());
    }
    let values = match image_order(&raw.shape, &input.shape) {
        ImageOrder::AsIs => raw.values,
        ImageOrder::HwcToChw { h, w, c } => hwc_to_chw(&raw.values, h, w, c),
        ImageOrder::Mismatch => {
            return Err(input_err(
                path,
                format!(
                    "images of shape {:?} do not match the model input {:?} (channel-first, or \
                     height x width x channels, is expected)",
                    &raw.shape[1..],
                    input.shape
                ),
            )
            .into())
        }
    };
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        return Err(input_err(
            path,
            format!(
                "value {} at image {}, element {} (flat index {k}) is not a finite number",
                values[k],
                k / per,
                k % per
            ),
        )
        .into());
    }
    let [lo, hi] = input.range.unwrap_or([0.0, 1.0]);
    let data = if raw.bytes {
        values.iter().map(|&x| lo + (hi - lo) * x / 255.0).collect()
    } else {
        values
    };
    Ok(Images {
        count: data.len() / per,
        per_image: per,
        data,
    })
}

/// Checks images against the model input's declared range (default `[0, 1]`): values outside
/// it would leave the intervals the plan's approximations and scales were chosen for, and the
/// encrypted result would be wrong without a sign. Refuses them, naming the first one, or with
/// `clamp` clamps them and returns a warning.
pub fn check_input_range(
    images: &mut Images,
    input: &PlanTensor,
    clamp: bool,
) -> Result<Option<String>> {
    let [lo, hi] = input.range.unwrap_or([0.0, 1.0]);
    let tol = 1e-9 * (hi - lo).abs().max(1.0);
    let outside = |v: f64| v < lo - tol || v > hi + tol;
    let count = images.data.iter().filter(|&&v| outside(v)).count();
    if count == 0 {
        return Ok(None);
    }
    let per = images.per_image.max(1);
    let k = images.data.iter().position(|&v| outside(v)).unwrap_or(0);
    let first = format!(
        "{} at image {}, element {}",
        images.data[k],
        k / per,
        k % per
    );
    if !clamp {
        return Err(miette!(
            help = "declare the model's real input range (--input-range LO,HI), or clamp the \
                    values (`hecc encrypt --clamp`)",
            "{count} input values are outside the model input `{}`'s range [{lo}, {hi}] (first: {first})",
            input.name
        ));
    }
    for v in images.data.iter_mut() {
        *v = v.clamp(lo, hi);
    }
    Ok(Some(format!(
        "{count} input values were outside the range [{lo}, {hi}] and were clamped (first: {first})"
    )))
}

/// How a file's per-image axes relate to the model input's `[c, h, w]` (or other) shape.
#[derive(Debug, PartialEq, Eq)]
enum ImageOrder {
    /// Same element order (equal shapes, or equal after dropping axes of length 1, or a
    /// file without per-image axes).
    AsIs,
    /// The file is `[n, h, w, c]` (e.g. CIFAR-10 as distributed) for a `[c, h, w]` input.
    HwcToChw { h: usize, w: usize, c: usize },
    /// Same number of elements per image, but a layout that is neither.
    Mismatch,
}

fn image_order(file: &[usize], input: &[usize]) -> ImageOrder {
    let per_image = file.get(1..).unwrap_or(&[]);
    let squeeze = |d: &[usize]| d.iter().copied().filter(|&x| x != 1).collect::<Vec<_>>();
    if per_image.len() <= 1 || squeeze(per_image) == squeeze(input) {
        return ImageOrder::AsIs;
    }
    // A flat feature input (an MLP) takes each image flattened in row-major order.
    if let [f] = input {
        if per_image.iter().product::<usize>() == *f {
            return ImageOrder::AsIs;
        }
    }
    if let ([c, h, w], [fh, fw, fc]) = (input, per_image) {
        if (fh, fw, fc) == (h, w, c) {
            return ImageOrder::HwcToChw {
                h: *h,
                w: *w,
                c: *c,
            };
        }
    }
    ImageOrder::Mismatch
}

/// Reorders every image of `v` from height x width x channels to channels x height x width.
fn hwc_to_chw(v: &[f64], h: usize, w: usize, c: usize) -> Vec<f64> {
    let per = h * w * c;
    let mut out = vec![0.0; v.len()];
    for (src, dst) in v.chunks(per).zip(out.chunks_mut(per)) {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    dst[(ch * h + y) * w + x] = src[(y * w + x) * c + ch];
                }
            }
        }
    }
    out
}

/// Loads reference outputs (`.npy`, one row of scores per image: a framework's logits or
/// probabilities) and returns them with the number of values per row.
pub fn load_reference(path: &Path) -> Result<(Vec<f64>, usize)> {
    let b = read_file(path)?;
    let raw = parse_npy(path, &b)?;
    let cols = match raw.shape.as_slice() {
        [_, c] => *c,
        [c] => *c,
        s => {
            return Err(miette!(
                "{}: reference outputs must be an images x classes array, found shape {s:?}",
                path.display()
            ))
        }
    };
    if raw.values.iter().any(|v| !v.is_finite()) {
        return Err(miette!(
            "{}: reference outputs hold NaN or infinite values",
            path.display()
        ));
    }
    Ok((raw.values, cols.max(1)))
}

/// The encrypted run's predictions against reference outputs (a framework's own, see
/// [`load_reference`]): argmax agreement on the images both have.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceAgreement {
    /// The file.
    pub path: String,
    /// Images whose argmax equals the reference's.
    pub agree: usize,
    /// Images compared.
    pub images: usize,
}

/// Compares `r`'s predictions with the reference outputs at `path`.
pub fn compare_reference(r: &InferReport, path: &Path) -> Result<ReferenceAgreement> {
    let (values, cols) = load_reference(path)?;
    if cols != r.logits.classes {
        return Err(miette!(
            "{} has {cols} values per image, the model {}",
            path.display(),
            r.logits.classes
        ));
    }
    let refs = argmax_rows(&values, cols);
    if refs.len() < r.predictions.len() {
        return Err(miette!(
            "{} has outputs for {} images, the run {}",
            path.display(),
            refs.len(),
            r.predictions.len()
        ));
    }
    let agree = r
        .predictions
        .iter()
        .zip(&refs)
        .filter(|(a, b)| a == b)
        .count();
    Ok(ReferenceAgreement {
        path: path.display().to_string(),
        agree,
        images: r.predictions.len(),
    })
}

/// The first `count` labels of the file at `path` ([`load_labels`]); an error if it has fewer.
pub fn load_labels_for(path: &Path, count: usize) -> Result<Vec<usize>> {
    let mut l = load_labels(path)?;
    if l.len() < count {
        return Err(miette!(
            "{} has {} labels for {} images",
            path.display(),
            l.len(),
            count
        ));
    }
    l.truncate(count);
    Ok(l)
}

/// The most classes a label may name.
const MAX_LABEL: f64 = 65535.0;

/// Loads class labels (IDX `u8` labels or a `.npy` integer vector): a 1-D array of whole
/// numbers from 0 to 65535.
pub fn load_labels(path: &Path) -> Result<Vec<usize>> {
    let b = read_file(path)?;
    let raw = match sniff(path, &b)? {
        Format::Npy => parse_npy(path, &b)?,
        Format::Idx => parse_idx(path, &b)?,
        Format::Png => return Err(input_err(path, "a PNG image, not labels").into()),
    };
    if raw.shape.len() != 1 {
        return Err(input_err(
            path,
            format!(
                "labels are a 1-D array; this one has shape {:?} (images or logits?)",
                raw.shape
            ),
        )
        .into());
    }
    if let Some(k) = raw
        .values
        .iter()
        .position(|&x| !(x.fract() == 0.0 && (0.0..=MAX_LABEL).contains(&x)))
    {
        return Err(input_err(
            path,
            format!(
                "label {k} is {}: labels are whole numbers from 0 to {MAX_LABEL}",
                raw.values[k]
            ),
        )
        .into());
    }
    Ok(raw.values.iter().map(|&x| x as usize).collect())
}

/// The formats images and labels come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Npy,
    Png,
    Idx,
}

/// The format of `b`, from its first bytes; refused when the file's extension names another
/// format (a renamed file is usually the wrong file).
fn sniff(path: &Path, b: &[u8]) -> Result<Format, RunError> {
    let found = if b.starts_with(b"\x93NUMPY") {
        Format::Npy
    } else if b.starts_with(b"\x89PNG") {
        Format::Png
    } else {
        Format::Idx
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let named = match ext.as_str() {
        "npy" => Some(Format::Npy),
        "png" => Some(Format::Png),
        _ if ext.starts_with("idx") || ext.ends_with("ubyte") => Some(Format::Idx),
        _ => None,
    };
    match named {
        Some(n) if n != found => Err(input_err(
            path,
            format!(
                "named as {} but its content is {}",
                format_name(n),
                format_name(found)
            ),
        )),
        _ => Ok(found),
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Npy => "a .npy array",
        Format::Png => "a PNG image",
        Format::Idx => "an IDX file (or not an array format)",
    }
}

// ------------------------------------------------------------------ encryption

/// The client's record of one request (a batch it encrypted), copied by the server into the
/// outputs. With the secret key the record carries an HMAC-SHA256 tag, so `decrypt` can check
/// that a result answers a request of this client, with its image count and the output
/// layout of its plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    /// A random id (hex).
    pub id: String,
    /// Images encrypted.
    pub images: usize,
    /// The plan's model name.
    pub model: String,
    /// The key set (hex [`KeyId`]).
    pub key: String,
    /// The plan (hex digest).
    pub plan: String,
    /// SHA-256 (hex) of the outputs the plan produces ([`expected_outputs`]).
    pub outputs: String,
    /// HMAC-SHA256 (hex) of the fields above under the client's tag key; absent when the
    /// inputs were encrypted with the public key.
    pub tag: Option<String>,
}

impl Request {
    fn tag_with(&self, key: &[u8; 32]) -> String {
        use hmac::Mac;
        let body = Request {
            tag: None,
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&bytes);
        full_hex(&mac.finalize().into_bytes())
    }
}

fn full_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses a container's JSON metadata section and requires it to be exactly what hecc writes
/// for that value (no unknown fields, no padding, no reordering): any edit is refused.
fn parse_meta<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &str,
) -> Result<T, RunError> {
    let corrupt = || RunError::Corrupt {
        path: path.to_string(),
    };
    let value: T = serde_json::from_slice(bytes).map_err(|_| corrupt())?;
    if serde_json::to_vec(&value).map_err(|_| corrupt())? != bytes {
        return Err(RunError::Tampered {
            path: path.to_string(),
            detail: "its metadata is not as hecc writes it (edited by hand or by another program)"
                .into(),
        });
    }
    Ok(value)
}

/// Metadata of an encrypted-inputs file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputsMeta {
    /// Images packed.
    pub images: usize,
    /// `(input name, element index)` of each ciphertext, in file order.
    pub elements: Vec<(String, u32)>,
    /// The client's request record.
    pub request: Request,
}

/// An encrypted batch.
pub struct EncryptedInputs {
    /// Metadata.
    pub meta: InputsMeta,
    /// The key set the batch was encrypted for.
    pub key_id: KeyId,
    /// SHA-256 of the file it was read from.
    pub file_digest: Option<[u8; 32]>,
    /// Ciphertexts, in `meta.elements` order.
    pub cts: Vec<Ciphertext>,
}

enum Enc {
    Secret(SymmetricEncryptor),
    Public(Encryptor),
}

/// The encryptor the client uses: with the secret key (seeded, half-size ciphertexts, and a
/// tagged request record) or with the public key.
pub struct ClientEncryptor {
    enc: Enc,
    key_id: KeyId,
    tag_key: Option<[u8; 32]>,
}

impl ClientEncryptor {
    /// Encrypts with the secret key.
    pub fn secret(s: &Session, sk: &ClientSecret) -> Result<ClientEncryptor> {
        Ok(ClientEncryptor {
            enc: Enc::Secret(SymmetricEncryptor::new(&s.ctx, &sk.key).into_diagnostic()?),
            key_id: sk.id,
            tag_key: Some(sk.tag_key),
        })
    }

    /// Encrypts with the public key of `keys` (the request record is not tagged).
    pub fn public(s: &Session, keys: &EvalKeySet) -> Result<ClientEncryptor> {
        Ok(ClientEncryptor {
            enc: Enc::Public(Encryptor::new(&s.ctx, &keys.public).into_diagnostic()?),
            key_id: keys.id,
            tag_key: None,
        })
    }

    fn fork(&mut self) -> Enc {
        match &mut self.enc {
            Enc::Secret(e) => Enc::Secret(e.fork()),
            Enc::Public(e) => Enc::Public(e.fork()),
        }
    }
}

/// The outputs plan `s` produces, `(name, index, slot layout)` sorted by name and index: the
/// order of the ciphertexts in an outputs file.
pub fn expected_outputs(s: &Session) -> Result<Vec<(String, u32, Layout)>> {
    let mut outs: Vec<(String, u32)> = s
        .module
        .outputs()
        .into_iter()
        .map(|(_, n, i)| (n.to_string(), i))
        .collect();
    outs.sort();
    outs.into_iter()
        .map(|(n, i)| {
            let l = s.output_slots(&n, i)?;
            Ok((n, i, l))
        })
        .collect()
}

fn outputs_digest(elements: &[(String, u32, Layout)]) -> String {
    full_hex(&Sha256::digest(
        serde_json::to_vec(elements).unwrap_or_default(),
    ))
}

/// Packs `images` into the slot vector of the input value with element index `index` and
/// layout `layout`: that value carries the input's flat elements `index * e .. (index + 1) * e`
/// (`e` = [`Layout::elements`]: 1 in the batch layout, one channel in the channel layout), and
/// element `j` of image `i` goes to [`Layout::slot_of_element`]`(i, j)`. Errors name what does
/// not fit.
pub fn pack_input(
    layout: &Layout,
    index: u32,
    images: &Images,
    slots: usize,
) -> Result<Vec<f64>, String> {
    let per = images.per_image;
    let e = layout.elements() as usize;
    let start = index as usize * e;
    if start + e > per {
        return Err(format!(
            "input element {index} (values {start}..{}) is outside the input's {per} values",
            start + e
        ));
    }
    if let Some(max) = layout.max_images() {
        if images.count > max as usize {
            return Err(format!(
                "{} images do not fit: this plan packs at most {max} images per ciphertext",
                images.count
            ));
        }
    }
    let mut vals = vec![0.0; slots];
    for i in 0..images.count {
        let row = &images.data[i * per + start..i * per + start + e];
        for (j, &x) in row.iter().enumerate() {
            let slot = layout
                .slot_of_element(i, j)
                .filter(|&t| t < slots)
                .ok_or_else(|| format!("element {j} of image {i} has no slot in the layout"))?;
            vals[slot] = x;
        }
    }
    Ok(vals)
}

/// Reads decrypted outputs back per image: `outputs` are the output values' `(name, index,
/// layout, slots)`; the values of one name are ordered by index and value `index` carries the
/// output's flat elements `index * e .. (index + 1) * e` ([`Layout::elements`]), element `j` of
/// image `i` read from [`Layout::slot_of_element`]`(i, j)`. Names keep their first-appearance
/// order. The result's columns are all output elements in that order.
pub fn unpack_outputs(
    outputs: &[(String, u32, Layout, &[f64])],
    images: usize,
) -> Result<Logits, String> {
    let mut order: Vec<usize> = (0..outputs.len()).collect();
    let rank = |name: &str| outputs.iter().position(|o| o.0 == name).unwrap_or(0);
    order.sort_by_key(|&k| (rank(&outputs[k].0), outputs[k].1));
    let classes: usize = outputs.iter().map(|o| o.2.elements() as usize).sum();
    let mut values = vec![0.0; images * classes];
    let mut col = 0;
    for k in order {
        let (name, index, layout, slots) = &outputs[k];
        let e = layout.elements() as usize;
        for i in 0..images {
            for j in 0..e {
                values[i * classes + col + j] = layout
                    .slot_of_element(i, j)
                    .and_then(|t| slots.get(t).copied())
                    .ok_or_else(|| {
                        format!("element {j} of image {i} is outside the slots of output {name}[{index}]")
                    })?;
            }
        }
        col += e;
    }
    Ok(Logits {
        images,
        classes,
        values,
    })
}

/// Packs and encrypts images per the plan's input layouts ([`pack_input`]): in the batch layout
/// the ciphertext of input element `k` holds element `k` of image `i` in slot
/// `offset + i * stride`; in the channel layout the ciphertext of input channel `c` holds that
/// channel of every image, side by side.
pub fn encrypt_images(
    s: &Session,
    images: &Images,
    enc: &mut ClientEncryptor,
) -> Result<EncryptedInputs> {
    let input = s.input()?;
    let per: usize = input.shape.iter().product::<usize>().max(1);
    if images.per_image != per {
        return Err(miette!(
            "images have {} values each, the model input `{}` has {per}",
            images.per_image,
            input.name
        ));
    }
    if images.count > s.plan.batch as usize {
        return Err(miette!(
            help = "recompile with a larger --batch, or pass fewer images",
            "{} images do not fit the plan's batch of {}",
            images.count,
            s.plan.batch
        ));
    }
    let encoder = Encoder::new(&s.ctx);
    let slots = s.ctx.n() / 2;
    let nodes = s.module.inputs();
    let mut jobs = Vec::with_capacity(nodes.len());
    for (v, name, index) in nodes {
        let ty = s
            .module
            .ty(v)
            .ok_or_else(|| miette!("input node {v} has no type"))?;
        let layout = s
            .module
            .layout(ty.layout())
            .ok_or_else(|| miette!("input node {v} has no layout"))?;
        let vals = pack_input(layout, index, images, slots).map_err(|e| {
            miette!(
                help = "recompile with a larger --batch, or pass fewer images",
                "input `{name}`: {e}"
            )
        })?;
        jobs.push((name.to_string(), index, vals, ty));
    }
    // Each input is encoded and encrypted in parallel by its own encryptor, forked in order
    // from the client's (so the result does not depend on the thread count); a plaintext is
    // dropped as soon as it is encrypted.
    use rayon::prelude::*;
    let children: Vec<Enc> = jobs.iter().map(|_| enc.fork()).collect();
    let cts = jobs
        .par_iter()
        .zip(children)
        .map(|((_, _, vals, ty), mut child)| {
            let pt = encoder.encode(vals, ty.level().0 as usize, ty.log_scale().0.exp2())?;
            match &mut child {
                Enc::Secret(e) => e.encrypt(&pt),
                Enc::Public(e) => e.encrypt(&pt),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .into_diagnostic()?;
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let mut request = Request {
        id: full_hex(&id),
        images: images.count,
        model: s.plan.model.clone(),
        key: full_hex(&enc.key_id),
        plan: full_hex(&s.digest),
        outputs: outputs_digest(&expected_outputs(s)?),
        tag: None,
    };
    request.tag = enc.tag_key.map(|k| request.tag_with(&k));
    Ok(EncryptedInputs {
        meta: InputsMeta {
            images: images.count,
            elements: jobs.into_iter().map(|(n, i, _, _)| (n, i)).collect(),
            request,
        },
        key_id: enc.key_id,
        file_digest: None,
        cts,
    })
}

/// Serializes encrypted inputs.
pub fn inputs_bytes(s: &Session, x: &EncryptedInputs) -> Result<Vec<u8>> {
    let mut sections = vec![serde_json::to_vec(&x.meta).into_diagnostic()?];
    sections.extend(x.cts.iter().map(|c| c.to_bytes(&s.ctx)));
    Ok(s.container(FileKind::Inputs, x.key_id, sections).to_bytes())
}

/// Reads encrypted inputs of this plan and checks their metadata against the plan: the
/// request record names this plan and key set, the image count fits the plan's batch, and the
/// ciphertexts are exactly the plan's input elements.
pub fn read_inputs(s: &Session, path: &Path) -> Result<EncryptedInputs> {
    let bytes = read_file(path)?;
    let p = path.display().to_string();
    let c = Container::from_bytes(&bytes, FileKind::Inputs, &p)?;
    c.check_plan(s, &p)?;
    let (meta, cts) = c
        .sections
        .split_first()
        .ok_or_else(|| RunError::Corrupt { path: p.clone() })?;
    let meta: InputsMeta = parse_meta(meta, &p)?;
    if meta.elements.len() != cts.len() {
        return Err(RunError::Corrupt { path: p }.into());
    }
    let tampered = |detail: String| RunError::Tampered {
        path: p.clone(),
        detail,
    };
    if meta.request.key != full_hex(&c.key_id) || meta.request.plan != full_hex(&s.digest) {
        return Err(tampered("its request record names another key set or plan".into()).into());
    }
    if meta.images == 0 || meta.images != meta.request.images {
        return Err(tampered(format!(
            "it claims {} images, its request record {}",
            meta.images, meta.request.images
        ))
        .into());
    }
    if meta.images > s.plan.batch as usize {
        return Err(tampered(format!(
            "it claims {} images; the plan runs at most {}",
            meta.images, s.plan.batch
        ))
        .into());
    }
    let mut want: Vec<(String, u32)> = s
        .module
        .inputs()
        .into_iter()
        .map(|(_, n, i)| (n.to_string(), i))
        .collect();
    // In the plan's order, as `encrypt` writes them: the server cannot tell which ciphertext
    // holds which element, so a reordered list would compute on the wrong inputs.
    if want != meta.elements {
        let detail = if want.len() == meta.elements.len() {
            want.sort();
            let mut have = meta.elements.clone();
            have.sort();
            if want == have {
                "its ciphertexts are not in the plan's input order".to_string()
            } else {
                "its ciphertexts are not the plan's input elements".to_string()
            }
        } else {
            format!(
                "its {} ciphertexts are not the plan's {} input elements",
                meta.elements.len(),
                want.len()
            )
        };
        return Err(tampered(detail).into());
    }
    let be = backend_err(path);
    let cts = cts
        .iter()
        .map(|b| Ciphertext::from_bytes(&s.ctx, b).map_err(&be))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptedInputs {
        meta,
        key_id: c.key_id,
        file_digest: Some(Sha256::digest(&bytes).into()),
        cts,
    })
}

// ------------------------------------------------------------------ run

/// Metadata of an encrypted-outputs file: enough to decrypt without the plan.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OutputsMeta {
    /// Model name.
    pub model: String,
    /// Images in the batch.
    pub images: usize,
    /// Per ciphertext: output name, element index, and the slot layout of its elements
    /// (see [`unpack_outputs`]).
    pub elements: Vec<(String, u32, Layout)>,
    /// The request these outputs answer (copied from the inputs).
    pub request: Request,
    /// SHA-256 (hex) of the inputs file the server ran on.
    pub inputs: Option<String>,
}

/// Encrypted outputs and the context to decrypt them.
pub struct EncryptedOutputs {
    /// Metadata.
    pub meta: OutputsMeta,
    /// The parameters' context.
    pub ctx: Arc<Context>,
    /// Plan digest.
    pub digest: [u8; 32],
    /// The key set of the inputs.
    pub key_id: KeyId,
    /// Ciphertexts in `meta.elements` order.
    pub cts: Vec<Ciphertext>,
}

/// Options of a server run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Where the run's progress events go (`None`: nowhere); the caller renders them.
    pub progress: Option<ProgressSink>,
    /// Limit on the bytes of live values during the run (see [`MemoryLimit`]).
    pub memory_limit: Option<MemoryLimit>,
}

pub use hecc_runtime::exec::available_memory;

/// Refuses a run whose plan alone needs more memory than is `available`: its estimate (live
/// values in the schedule plus the evaluation keys) is a lower bound on what the run holds,
/// so such a run would be killed part way instead of finishing. `what` names the step.
pub fn check_memory(s: &Session, available: Option<u64>, what: &str) -> Result<()> {
    let (Some(need), Some(have)) = (
        s.plan.report.schedule.as_ref().map(|x| x.total_bytes),
        available,
    ) else {
        return Ok(());
    };
    if need <= have {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(miette!(
        help = "run it on a machine with more memory, compile for fewer images per run (--batch) or \
                another layout, or pass --no-memory-check to try anyway",
        "{what}: the plan needs at least {:.1} GiB (live ciphertexts in its schedule plus keys) and \
         this machine has {:.1} GiB available",
        gib(need),
        gib(have)
    ))
}

/// A limit on the bytes of live values (ciphertexts, plaintexts, unread inputs) while a plan
/// runs: near it the executor runs fewer nodes at once, down to one in schedule order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    /// The plan's own estimate (the peak of live values in its schedule).
    Plan,
    /// A number of bytes.
    Bytes(u64),
}

impl std::str::FromStr for MemoryLimit {
    type Err = String;

    /// `plan`, or a size ([`parse_size`]).
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("plan") {
            return Ok(MemoryLimit::Plan);
        }
        parse_size(text).map(MemoryLimit::Bytes).map_err(|_| {
            format!("`{text}` is not a memory size: use `plan`, bytes, or e.g. 6GiB, 512M")
        })
    }
}

/// A size in bytes: a number of bytes, or a number with `K`, `M`, `G`, `T` (powers of 1024,
/// with an optional `iB`/`B`), e.g. `6GiB`, `512M`, `1.5G`; at least one byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let body = match lower.strip_suffix("ib") {
        // `iB` only after a unit letter (`GiB`), not after the number (`6iB`).
        Some(b) if b.ends_with(['k', 'm', 'g', 't']) => b,
        Some(_) => lower.as_str(),
        None => lower.strip_suffix('b').unwrap_or(&lower),
    };
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let bad = || format!("`{text}` is not a size: use bytes, or e.g. 6GiB, 512M");
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = v * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

impl MemoryLimit {
    /// The limit in bytes for session `s`; an error when the limit is the plan's estimate and
    /// the plan has none.
    pub fn bytes(self, s: &Session) -> Result<u64> {
        match self {
            MemoryLimit::Plan => s
                .plan
                .report
                .schedule
                .as_ref()
                .map(|x| x.peak.bytes)
                .ok_or_else(|| {
                    miette!(
                        help = "give the limit as a size instead, e.g. --memory-limit 6GiB",
                        "--memory-limit plan: this plan has no memory estimate"
                    )
                }),
            MemoryLimit::Bytes(b) => Ok(b),
        }
    }
}

impl Session {
    /// Executor options for this plan: its schedule and stages, the progress mode and memory
    /// limit of `opts`, free memory handed back between stages.
    fn exec_options(&self, stages: StageMap, opts: &RunOptions) -> Result<ExecOptions> {
        Ok(ExecOptions {
            progress: opts.progress.clone(),
            stages: Some(stages),
            schedule: self.schedule(),
            memory_limit: opts.memory_limit.map(|l| l.bytes(self)).transpose()?,
            release_memory: true,
            ..Default::default()
        })
    }

    /// The slot layout of output `name[index]`, which decryption needs.
    fn output_slots(&self, name: &str, index: u32) -> Result<Layout> {
        self.module
            .output_layout(name, index)
            .cloned()
            .ok_or_else(|| {
                miette!(
                    "output {name}[{index}] has no slot layout in the plan; it cannot be decrypted"
                )
            })
    }
}

/// The server step: runs the plan on encrypted inputs with evaluation keys only.
pub fn run_inputs(
    s: &Session,
    inputs: EncryptedInputs,
    keys: &EvalKeySet,
    opts: &RunOptions,
) -> Result<(EncryptedOutputs, RunReport)> {
    if inputs.key_id != keys.id {
        return Err(RunError::KeyMismatch {
            path: "the encrypted inputs".into(),
            expected: hex(&keys.id),
            found: hex(&inputs.key_id),
        })
        .map_err(|e| {
            miette::Report::new(e).wrap_err(
                "the evaluation keys and the inputs come from different `hecc keygen` runs",
            )
        });
    }
    let images = inputs.meta.images;
    let request = inputs.meta.request;
    let inputs_digest = inputs.file_digest.map(|d| full_hex(&d));
    let key_id = inputs.key_id;
    let map: HashMap<(String, u32), Ciphertext> =
        inputs.meta.elements.into_iter().zip(inputs.cts).collect();
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let eo = s.exec_options(s.stages(), opts)?;
    let res = execute(&s.module, &eval, &encoder, keys.as_exec(), map, &eo)?;
    let mut elements = Vec::with_capacity(res.outputs.len());
    let mut cts = Vec::with_capacity(res.outputs.len());
    for o in res.outputs {
        let layout = s.output_slots(&o.name, o.index)?;
        elements.push((o.name, o.index, layout));
        cts.push(o.ct);
    }
    Ok((
        EncryptedOutputs {
            meta: OutputsMeta {
                model: s.plan.model.clone(),
                images,
                elements,
                request,
                inputs: inputs_digest,
            },
            ctx: s.ctx.clone(),
            digest: s.digest,
            key_id,
            cts,
        },
        res.report,
    ))
}

/// Serializes outputs (with the parameters, so decryption needs no plan).
pub fn outputs_bytes(o: &EncryptedOutputs) -> Result<Vec<u8>> {
    let mut sections = vec![
        o.ctx.params().to_bytes(),
        serde_json::to_vec(&o.meta).into_diagnostic()?,
    ];
    sections.extend(o.cts.iter().map(|c| c.to_bytes(&o.ctx)));
    Ok(Container {
        kind: FileKind::Outputs,
        fingerprint: *o.ctx.fingerprint(),
        plan_digest: o.digest,
        key_id: o.key_id,
        sections,
    }
    .to_bytes())
}

/// Reads an outputs file.
pub fn read_outputs(path: &Path) -> Result<EncryptedOutputs> {
    let c = read_container(path, FileKind::Outputs)?;
    let p = path.display().to_string();
    let [params, meta, cts @ ..] = c.sections.as_slice() else {
        return Err(RunError::Corrupt { path: p }.into());
    };
    let be = backend_err(path);
    let params = CkksParameters::from_bytes(params).map_err(&be)?;
    if params.fingerprint() != c.fingerprint {
        return Err(RunError::Corrupt { path: p }.into());
    }
    let ctx = Context::new(params).map_err(&be)?;
    let meta: OutputsMeta = parse_meta(meta, &p)?;
    if meta.elements.len() != cts.len() {
        return Err(RunError::Corrupt { path: p }.into());
    }
    // Limits before anything is sized by the metadata: no more images than slots, no more
    // output elements per image than slots.
    let slots = ctx.n() / 2;
    if meta.images == 0 || meta.images > slots {
        return Err(RunError::Tampered {
            path: p,
            detail: format!(
                "it claims {} images; a ciphertext of these parameters holds 1 to {slots}",
                meta.images
            ),
        }
        .into());
    }
    let per_image: u64 = meta.elements.iter().map(|(_, _, l)| l.elements()).sum();
    if per_image > slots as u64 * meta.elements.len() as u64 {
        return Err(RunError::Tampered {
            path: p,
            detail: format!("its layouts claim {per_image} output values per image"),
        }
        .into());
    }
    let cts = cts
        .iter()
        .map(|b| Ciphertext::from_bytes(&ctx, b).map_err(&be))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptedOutputs {
        meta,
        ctx,
        digest: c.plan_digest,
        key_id: c.key_id,
        cts,
    })
}

/// How far a result could be checked against its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// The request record's tag verified: the result answers a request of this client, with
    /// its image count and its plan's output layout.
    Tagged,
    /// The inputs were encrypted with the public key: key, plan and layout are consistent,
    /// but the record carries no tag, so its image count is the server's word.
    Untagged,
}

/// Checks outputs against the client's secret key and the request they claim to answer:
/// the key set, the request tag, the image count and the output layout. With `request`
/// (the inputs file the client sent), also that the outputs answer that very file.
pub fn verify_outputs(
    o: &EncryptedOutputs,
    sk: &ClientSecret,
    path: &str,
    request: Option<&Path>,
) -> Result<Authenticity> {
    let tampered = |detail: String| RunError::Tampered {
        path: path.to_string(),
        detail,
    };
    if o.key_id != sk.id {
        return Err(RunError::KeyMismatch {
            path: path.to_string(),
            expected: hex(&sk.id),
            found: hex(&o.key_id),
        }
        .into());
    }
    let r = &o.meta.request;
    if r.model != o.meta.model {
        return Err(tampered(format!(
            "it names model `{}`, the request was made for `{}`",
            o.meta.model, r.model
        ))
        .into());
    }
    if r.key != full_hex(&sk.id) || r.plan != full_hex(&o.digest) {
        return Err(tampered("its request record names another key set or plan".into()).into());
    }
    let auth = match &r.tag {
        Some(t) if *t == r.tag_with(&sk.tag_key) => Authenticity::Tagged,
        Some(_) => return Err(tampered(
            "its request record does not carry this client's tag (edited, or forged by the server)"
                .into(),
        )
        .into()),
        None => Authenticity::Untagged,
    };
    if o.meta.images != r.images {
        return Err(tampered(format!(
            "it holds {} images, the request sent {}",
            o.meta.images, r.images
        ))
        .into());
    }
    if outputs_digest(&o.meta.elements) != r.outputs {
        return Err(tampered(
            "its output elements or their slot layouts are not those of the plan the request was made for"
                .into(),
        )
        .into());
    }
    if let Some(req) = request {
        let bytes = read_file(req)?;
        let rp = req.display().to_string();
        let c = Container::from_bytes(&bytes, FileKind::Inputs, &rp)?;
        let meta: InputsMeta = parse_meta(
            c.sections
                .first()
                .ok_or(RunError::Corrupt { path: rp.clone() })?,
            &rp,
        )?;
        let digest = full_hex(&Sha256::digest(&bytes));
        if meta.request.id != r.id || o.meta.inputs.as_deref() != Some(digest.as_str()) {
            return Err(tampered(format!("it does not answer the request in {rp}")).into());
        }
    }
    Ok(auth)
}

// ------------------------------------------------------------------ decryption

/// Decrypted model outputs: `[images, classes]` row-major, and the argmax per image.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits {
    /// Images.
    pub images: usize,
    /// Values per image (all output elements, in (name, index) order).
    pub classes: usize,
    /// The values.
    pub values: Vec<f64>,
}

impl Logits {
    /// The predicted class (argmax) of each image.
    pub fn predictions(&self) -> Vec<usize> {
        argmax_rows(&self.values, self.classes)
    }
}

/// Argmax of each row of a row-major matrix with `cols` columns.
pub fn argmax_rows(values: &[f64], cols: usize) -> Vec<usize> {
    values
        .chunks(cols.max(1))
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

/// Half-width of the values ciphertext `ct` can carry before they wrap around its modulus:
/// `q_0 ... q_level / (2 * scale)`.
fn wrap_bound(ctx: &Context, ct: &Ciphertext) -> f64 {
    let q = ctx.params().q();
    let log_q: f64 = q[..=ct.level().min(q.len() - 1)]
        .iter()
        .map(|&p| (p as f64).log2())
        .sum();
    (log_q - 1.0 - ct.scale().log2()).exp2()
}

/// Share of the wrap-around bound above which decrypted values are taken as an overflow.
pub const OVERFLOW_SHARE: f64 = 0.25;

/// When the largest decrypted value reaches [`OVERFLOW_SHARE`] of the smallest wrap-around
/// bound of the output ciphertexts, a message saying the result is likely wrong: values that
/// large are what a computation that overflowed its modulus decrypts to (the compiler leaves
/// the outputs far more headroom than that).
pub fn overflow_note(logits: &Logits, bound: f64) -> Option<String> {
    let largest = logits.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let nan = logits.values.iter().any(|v| !v.is_finite());
    (nan || largest >= OVERFLOW_SHARE * bound).then(|| {
        format!(
            "the decrypted outputs reach {largest:.3e}, near the ±{bound:.3e} the ciphertexts can hold: \
             the encrypted computation most likely overflowed and these results are wrong (inputs \
             outside the model's range, or weights too large for the plan's scale)"
        )
    })
}

/// The smallest wrap-around bound of the output ciphertexts of `o`.
pub fn outputs_wrap_bound(o: &EncryptedOutputs) -> f64 {
    o.cts
        .iter()
        .map(|c| wrap_bound(&o.ctx, c))
        .fold(f64::INFINITY, f64::min)
}

/// Decrypts outputs with the secret key, after [`verify_outputs`] (without a request file).
pub fn decrypt_outputs(o: &EncryptedOutputs, sk: &ClientSecret) -> Result<Logits> {
    verify_outputs(o, sk, "the encrypted outputs", None)?;
    let dec = Decryptor::new(&o.ctx, &sk.key);
    let encoder = Encoder::new(&o.ctx);
    let mut decoded = Vec::with_capacity(o.cts.len());
    for ct in &o.cts {
        decoded.push(
            encoder
                .decode(&dec.decrypt(ct).into_diagnostic()?)
                .into_diagnostic()?,
        );
    }
    let outs: Vec<(String, u32, Layout, &[f64])> = o
        .meta
        .elements
        .iter()
        .zip(&decoded)
        .map(|((n, i, l), v)| (n.clone(), *i, l.clone(), v.as_slice()))
        .collect();
    unpack_outputs(&outs, o.meta.images).map_err(|e| miette!("{e}"))
}

/// `.npy` bytes of a row-major `f64` matrix.
pub fn npy_bytes(rows: usize, cols: usize, data: &[f64]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

// ------------------------------------------------------------------ infer

/// Options of `hecc infer`.
#[derive(Clone, Debug)]
pub struct InferOptions {
    /// Compile options (the batch is set from the images unless given).
    pub compile: CompileOptions,
    /// Images to use (default: all in the file, up to the slots).
    pub batch: Option<usize>,
    /// Run the plaintext reference and compare.
    pub verify: bool,
    /// Where the progress events of each run go (`None`: nowhere).
    pub progress: Option<ProgressSink>,
    /// Limit on the bytes of live values during each run (see [`MemoryLimit`]).
    pub memory_limit: Option<MemoryLimit>,
    /// Run even when the plan's estimate exceeds the available memory ([`check_memory`]).
    pub no_memory_check: bool,
}

/// Per-stage comparison with the plaintext reference.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCheck {
    /// Stage name.
    pub name: String,
    /// Values compared.
    pub values: usize,
    /// Maximum absolute error.
    pub max_abs_error: f64,
    /// Largest reference magnitude.
    pub max_abs_value: f64,
}

impl StageCheck {
    /// Bits of precision: `-log2(max_abs_error)` (capped at 60).
    pub fn bits(&self) -> f64 {
        precision_bits(self.max_abs_error)
    }
}

/// `-log2(err)`, capped at 60 bits.
pub fn precision_bits(err: f64) -> f64 {
    if err <= 0.0 {
        60.0
    } else {
        (-err.log2()).min(60.0)
    }
}

/// The verification results.
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// Per stage (sampled values of each stage, decrypted).
    pub stages: Vec<StageCheck>,
    /// Output error against the circuit interpreter (the HE IR's reference semantics).
    pub output: StageCheck,
    /// Maximum absolute error against the tensor model's own evaluator.
    pub tensor_max_abs_error: f64,
    /// Images whose encrypted argmax equals the plaintext model's.
    pub argmax_agree: usize,
    /// Per activation, inputs of the plaintext reference outside the plan's range `[-B, B]`.
    pub ranges: Vec<hecc_passes::ranges::RangeCheck>,
}

/// What `infer` measured.
#[derive(Clone, Debug)]
pub struct InferReport {
    /// Model name.
    pub model: String,
    /// Ring degree log2 and slots.
    pub log_n: u32,
    /// Security label.
    pub security: String,
    /// Images processed.
    pub images: usize,
    /// Runs of the plan (groups of at most `batch` images).
    pub runs: usize,
    /// Images per run: the plan's batch.
    pub batch: usize,
    /// Images one run could hold at the same cost (N/2 in the batch layout, where every
    /// image has its own slot of the same ciphertexts; the batch otherwise).
    pub capacity: usize,
    /// Predictions.
    pub predictions: Vec<usize>,
    /// Decrypted logits.
    pub logits: Logits,
    /// Correct predictions, when labels were given.
    pub correct: Option<usize>,
    /// Seconds: compile, keygen, encrypt, run, decrypt.
    pub phase_seconds: [f64; 5],
    /// The executor's report.
    pub run: RunReport,
    /// Verification, when asked.
    pub verification: Option<Verification>,
    /// The plan's memory estimate: live values in its schedule, and with the keys.
    pub estimate: Option<(u64, u64)>,
    /// For a model with approximated activations: the plaintext approximated model against
    /// the exact one on the same images.
    pub approximation: Option<ApproxAgreement>,
    /// Set when the decrypted outputs look like an overflow ([`overflow_note`]).
    pub overflow: Option<String>,
}

/// How far the approximated activations move a model's predictions, measured in plaintext on
/// the images of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct ApproxAgreement {
    /// The activation policy (as recorded in the plan).
    pub policy: String,
    /// Images whose approximated prediction equals the exact model's.
    pub agree: usize,
    /// Images compared.
    pub images: usize,
    /// Correct predictions of the exact and the approximated model, when labels were given.
    pub correct: Option<(usize, usize)>,
}

impl ApproxAgreement {
    /// Share of images that agree.
    pub fn ratio(&self) -> f64 {
        self.agree as f64 / self.images.max(1) as f64
    }
}

/// The error for a run whose approximated model agrees with the exact one on less than
/// `min` of its images, if it does.
pub fn disagreement(r: &InferReport, min: f64) -> Option<miette::Report> {
    let a = r.approximation.as_ref()?;
    (a.ratio() < min).then(|| {
        miette!(
            help = "the activation approximation changes the model's answers: choose a \
             more precise one (`hecc eval MODEL --input IMAGES --activation P` compares \
             them in plaintext, `--activation auto` picks one), calibrate the ranges \
             (--calibrate), or pass --min-agreement 0 to accept it",
            "the results are likely wrong: with `{}` the model keeps the exact model's \
             prediction on only {}/{} images ({:.1}% < {:.1}%)",
            a.policy,
            a.agree,
            a.images,
            100.0 * a.ratio(),
            100.0 * min
        )
    })
}

impl InferReport {
    /// Total seconds.
    pub fn total_seconds(&self) -> f64 {
        self.phase_seconds.iter().sum()
    }
}

const PROBE_PREFIX: &str = "__probe";
const PROBES_PER_STAGE: usize = 8;

/// Adds output nodes on up to [`PROBES_PER_STAGE`] ciphertexts leaving each stage, so the
/// executor and the interpreter both return them. Returns, per stage, the probe output names.
fn add_probes(m: &mut Module, stages: &StageMap) -> Result<Vec<Vec<String>>> {
    let stage_of = |v: ValueId| stages.of_node.get(v.0 as usize).copied().flatten();
    let mut per: Vec<Vec<String>> = vec![Vec::new(); stages.names.len()];
    let ids: Vec<ValueId> = m.ids().collect();
    for v in ids {
        let Some(si) = stage_of(v) else { continue };
        if per[si].len() >= PROBES_PER_STAGE {
            continue;
        }
        let Some(node) = m.node(v) else { continue };
        if matches!(
            node.op,
            hecc_ir::he::Op::Output { .. } | hecc_ir::he::Op::Input { .. }
        ) || node.ty.kind() != hecc_ir::he::Kind::Cipher
        {
            continue;
        }
        let leaves = m.users(v).iter().any(|&u| stage_of(u) != Some(si));
        if !leaves {
            continue;
        }
        let name = format!("{PROBE_PREFIX}{si}_{}", per[si].len());
        m.output(v, &name, 0)
            .map_err(|e| miette!("cannot add a probe: {e}"))?;
        per[si].push(name);
    }
    Ok(per)
}

/// Compiles `model`, generates keys, and then, in groups of the plan's batch (one group when
/// every image fits the slots), encrypts the images of `input`, runs, decrypts, and
/// (optionally) checks against the plaintext reference.
pub fn infer(
    model: &Path,
    input: &Path,
    labels: Option<&Path>,
    opts: &InferOptions,
) -> Result<InferReport> {
    let g = hecc_ir::front::load_model(model)?;
    infer_graph(&g, input, labels, opts)
}

/// [`infer`] on a loaded model.
pub fn infer_graph(
    g: &hecc_ir::tensor::Graph,
    input: &Path,
    labels: Option<&Path>,
    opts: &InferOptions,
) -> Result<InferReport> {
    let t = Instant::now();
    let mut copts = opts.compile.clone();
    // Size the batch from the data before compiling (shape from the graph).
    let probe_input = {
        let id = *g
            .inputs
            .first()
            .ok_or_else(|| miette!("the model has no input"))?;
        let n = g
            .node(id)
            .ok_or_else(|| miette!("the model has no input"))?;
        let (shape, range) = match &n.op {
            hecc_ir::tensor::Op::Input { shape, norm, .. } => (shape.0.clone(), norm.range),
            _ => return Err(miette!("the model's first input is not an input node")),
        };
        PlanTensor {
            name: n.name.clone(),
            shape,
            range,
        }
    };
    let all = load_images(input, &probe_input)?;
    if let Some(n) = opts.batch.filter(|&n| n > all.count) {
        return Err(miette!(
            "--batch {n}: {} holds only {} images",
            input.display(),
            all.count
        ));
    }
    let want = opts.batch.unwrap_or(all.count).max(1);
    if copts.batch.is_none() {
        copts.batch = Some(want as u32);
        copts.batch_at_most = true;
    }
    // `--activation auto` without calibration images calibrates on the images of the run.
    if copts.activation.as_deref() == Some("auto") && copts.calibration.is_none() {
        copts.calibration = Some(crate::compile::Calibration::from_images(
            &all,
            &probe_input.shape,
            want.min(1000),
        )?);
    }
    let copts = crate::eval::resolve_activation(g, &copts)?.0;
    let compiled = compile_graph(g, &copts)?;
    let s = Session::with_security(
        compiled.plan,
        copts.security == hecc_passes::params::Security::InsecureNone,
    )?;
    if !opts.no_memory_check {
        check_memory(&s, available_memory(), "infer")?;
    }
    let mut images = all.take(want);
    check_input_range(&mut images, s.input()?, false)?;
    let group = (s.plan.batch as usize).max(1);
    let t_compile = t.elapsed().as_secs_f64();

    let labels = labels
        .map(|p| load_labels_for(p, images.count))
        .transpose()?;

    let t = Instant::now();
    let keys = generate_keys(&s)?;
    let t_keygen = t.elapsed().as_secs_f64();

    // With --verify, run a copy of the circuit with probe outputs on each stage.
    let stages = s.stages();
    let probed: Module;
    let (module, probes) = if opts.verify {
        let mut m = s.module.clone();
        let p = add_probes(&mut m, &stages)?;
        probed = m;
        (&probed, p)
    } else {
        (&s.module, Vec::new())
    };
    let eo = s.exec_options(
        stages.clone(),
        &RunOptions {
            progress: opts.progress.clone(),
            memory_limit: opts.memory_limit,
        },
    )?;
    let eval = Evaluator::new(&s.ctx);
    let encoder = Encoder::new(&s.ctx);
    let dec = Decryptor::new(&s.ctx, &keys.secret.key);
    let mut enc = ClientEncryptor::secret(&s, &keys.secret)?;

    let (mut t_encrypt, mut t_run, mut t_decrypt) = (0.0, 0.0, 0.0);
    let mut report: Option<RunReport> = None;
    let mut logits = Logits {
        images: 0,
        classes: 0,
        values: Vec::with_capacity(images.count),
    };
    let mut circuit: Option<CircuitCheck> = None;
    let mut bound = f64::INFINITY;
    let mut start = 0;
    while start < images.count {
        let chunk = images.slice(start, group);
        let n = chunk.count;

        let t = Instant::now();
        let inputs = encrypt_images(&s, &chunk, &mut enc)?;
        t_encrypt += t.elapsed().as_secs_f64();

        let t = Instant::now();
        let map: HashMap<(String, u32), Ciphertext> =
            inputs.meta.elements.into_iter().zip(inputs.cts).collect();
        let res = execute(module, &eval, &encoder, keys.eval.as_exec(), map, &eo)?;
        t_run += t.elapsed().as_secs_f64();
        report = Some(match report {
            None => res.report,
            Some(acc) => merge_run_reports(acc, res.report),
        });

        let t = Instant::now();
        let mut decrypted: HashMap<(String, u32), Vec<f64>> = HashMap::new();
        let mut model_outputs = Vec::new();
        for o in &res.outputs {
            if !o.name.starts_with(PROBE_PREFIX) {
                bound = bound.min(wrap_bound(&s.ctx, &o.ct));
            }
            let slots = encoder
                .decode(&dec.decrypt(&o.ct).into_diagnostic()?)
                .into_diagnostic()?;
            if !o.name.starts_with(PROBE_PREFIX) {
                model_outputs.push((o.name.clone(), o.index));
            }
            decrypted.insert((o.name.clone(), o.index), slots);
        }
        drop(res.outputs);
        let mut outs = Vec::with_capacity(model_outputs.len());
        for (name, index) in &model_outputs {
            let layout = s.output_slots(name, *index)?;
            let slots = decrypted[&(name.clone(), *index)].as_slice();
            outs.push((name.clone(), *index, layout, slots));
        }
        let part = unpack_outputs(&outs, n).map_err(|e| miette!("{e}"))?;
        logits.classes = part.classes;
        logits.images += part.images;
        logits.values.extend(part.values);
        t_decrypt += t.elapsed().as_secs_f64();

        if opts.verify {
            let c = check_circuit(&s, module, &chunk, &probes, &stages, &decrypted)?;
            circuit = Some(match circuit {
                None => c,
                Some(acc) => acc.merge(c),
            });
        }
        start += n;
    }
    let predictions = logits.predictions();
    let overflow = overflow_note(&logits, bound);
    let correct = labels
        .as_ref()
        .map(|l| predictions.iter().zip(l).filter(|(a, b)| a == b).count());
    let verification = match circuit {
        Some(c) => Some(check_tensor_model(g, &s, &images, &logits, c)?),
        None => None,
    };
    let approximation = if crate::eval::needs_approximation(g)? {
        let exact = crate::eval::evaluate(
            g,
            &images,
            &CompileOptions {
                activation: None,
                ..copts.clone()
            },
        )?;
        let approx = crate::eval::evaluate(g, &images, &copts)?;
        Some(ApproxAgreement {
            policy: copts.activation_label(),
            agree: approx.agreement(&exact),
            images: images.count,
            correct: labels
                .as_ref()
                .map(|l| (exact.correct(l), approx.correct(l))),
        })
    } else {
        None
    };
    Ok(InferReport {
        model: s.plan.model.clone(),
        log_n: s.plan.params.log_n,
        security: s.plan.params.security.name().to_string(),
        images: images.count,
        runs: images.count.div_ceil(group),
        batch: group,
        capacity: if s.plan.report.layout == hecc_passes::layout::PackingLayout::Batch {
            s.ctx.n() / 2
        } else {
            group
        },
        predictions,
        logits,
        correct,
        phase_seconds: [t_compile, t_keygen, t_encrypt, t_run, t_decrypt],
        run: report.unwrap_or_default(),
        verification,
        estimate: s
            .plan
            .report
            .schedule
            .as_ref()
            .map(|x| (x.peak.bytes, x.total_bytes)),
        approximation,
        overflow,
    })
}

/// Sums the reports of several runs of one plan: times, node and rotation counts add up;
/// memory figures and live ciphertexts take the largest; a stage's end-of-stage resident
/// memory is the last run's.
fn merge_run_reports(mut acc: RunReport, r: RunReport) -> RunReport {
    fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
        match (a, b) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        }
    }
    for s in r.stages {
        match acc.stages.iter_mut().find(|a| a.name == s.name) {
            Some(a) => {
                a.nodes += s.nodes;
                a.wavefronts += s.wavefronts;
                a.seconds += s.seconds;
                a.cpu_seconds = match (a.cpu_seconds, s.cpu_seconds) {
                    (Some(x), Some(y)) => Some(x + y),
                    (x, y) => x.or(y),
                };
                a.rss_bytes = s.rss_bytes.or(a.rss_bytes);
                a.peak_rss_bytes = max_opt(a.peak_rss_bytes, s.peak_rss_bytes);
                a.live_ciphertexts = a.live_ciphertexts.max(s.live_ciphertexts);
            }
            None => acc.stages.push(s),
        }
    }
    acc.seconds += r.seconds;
    acc.peak_rss_bytes = max_opt(acc.peak_rss_bytes, r.peak_rss_bytes);
    acc.nodes += r.nodes;
    acc.hoisted_rotations += r.hoisted_rotations;
    acc.peak_live_ciphertexts = acc.peak_live_ciphertexts.max(r.peak_live_ciphertexts);
    acc.peak_live_bytes = acc.peak_live_bytes.max(r.peak_live_bytes);
    acc
}

/// The circuit-level part of `--verify`: decrypted probes and outputs against the HE IR
/// interpreter, accumulated over runs.
struct CircuitCheck {
    stages: Vec<StageCheck>,
    output: StageCheck,
}

impl StageCheck {
    fn merge(mut self, o: &StageCheck) -> StageCheck {
        self.values += o.values;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.max_abs_value = self.max_abs_value.max(o.max_abs_value);
        self
    }
}

impl CircuitCheck {
    fn merge(self, o: CircuitCheck) -> CircuitCheck {
        CircuitCheck {
            stages: self
                .stages
                .into_iter()
                .zip(&o.stages)
                .map(|(a, b)| a.merge(b))
                .collect(),
            output: self.output.merge(&o.output),
        }
    }
}

/// Compares one run's decrypted probes and outputs with the HE IR interpreter on the same
/// images.
fn check_circuit(
    s: &Session,
    module: &Module,
    images: &Images,
    probes: &[Vec<String>],
    stages: &StageMap,
    decrypted: &HashMap<(String, u32), Vec<f64>>,
) -> Result<CircuitCheck> {
    let n = images.count;
    let reference = hecc_ir::he::interp::interpret(module, |_, index, layout, slots| {
        pack_input(layout, index, images, slots as usize).ok()
    })
    .map_err(|e| miette!("reference interpretation failed: {e}"))?;
    let reference: HashMap<(String, u32), Vec<f64>> = reference
        .into_iter()
        .map(|o| ((o.name, o.index), o.slots))
        .collect();
    // Slots compared: an output's own element slots; for a probe, every slot of the images'
    // span (the first `n` in the batch layout, `n` image strides in the channel layout).
    let span = match s
        .module
        .inputs()
        .first()
        .and_then(|&(v, _, _)| s.module.ty(v).and_then(|t| s.module.layout(t.layout())))
    {
        Some(Layout::Channel { image_stride, .. }) => n * (*image_stride).max(1) as usize,
        _ => n,
    };
    let slots_of = |k: &(String, u32)| -> Vec<usize> {
        match s.module.output_layout(&k.0, k.1) {
            Some(l) if !k.0.starts_with(PROBE_PREFIX) => (0..n)
                .flat_map(|i| {
                    (0..l.elements() as usize).filter_map(move |j| l.slot_of_element(i, j))
                })
                .collect(),
            _ => (0..span).collect(),
        }
    };
    let compare = |name: &str, keys: &[(String, u32)]| -> StageCheck {
        let mut c = StageCheck {
            name: name.to_string(),
            values: 0,
            max_abs_error: 0.0,
            max_abs_value: 0.0,
        };
        for k in keys {
            let (Some(got), Some(want)) = (decrypted.get(k), reference.get(k)) else {
                continue;
            };
            for i in slots_of(k) {
                let (Some(&a), Some(&b)) = (got.get(i), want.get(i)) else {
                    continue;
                };
                c.values += 1;
                c.max_abs_error = c.max_abs_error.max((a - b).abs());
                c.max_abs_value = c.max_abs_value.max(b.abs());
            }
        }
        c
    };
    let stages: Vec<StageCheck> = probes
        .iter()
        .zip(&stages.names)
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, name)| {
            let keys: Vec<(String, u32)> = p.iter().map(|x| (x.clone(), 0)).collect();
            compare(name, &keys)
        })
        .collect();
    let out_keys: Vec<(String, u32)> = s
        .module
        .outputs()
        .into_iter()
        .map(|(_, n, i)| (n.to_string(), i))
        .collect();
    let output = compare("output", &out_keys);
    Ok(CircuitCheck { stages, output })
}

/// The model-level part of `--verify` over all images: the tensor model's own evaluator
/// against the decrypted logits, argmax agreement and the activation range checks.
fn check_tensor_model(
    g: &hecc_ir::tensor::Graph,
    s: &Session,
    images: &Images,
    logits: &Logits,
    circuit: CircuitCheck,
) -> Result<Verification> {
    let n = images.count;
    // The tensor model's own evaluator.
    let mut dims = vec![n];
    dims.extend_from_slice(&s.input()?.shape);
    let x = hecc_ir::tensor::Tensor::from_shape_vec(dims, images.data.clone())
        .map_err(|e| miette!("reference input: {e}"))?;
    let ranges = &s.plan.report.activation_ranges;
    let range_checks = if ranges.is_empty() {
        Vec::new()
    } else {
        hecc_passes::ranges::check_ranges(g, std::slice::from_ref(&x), ranges)?
    };
    let want = hecc_ir::tensor::eval::eval_batch(g, &[x])?;
    let want = want
        .first()
        .ok_or_else(|| miette!("the model has no output"))?;
    let flat: Vec<f64> = want.iter().copied().collect();
    let mut tensor_err = 0.0f64;
    if flat.len() == logits.values.len() {
        for (a, b) in flat.iter().zip(&logits.values) {
            tensor_err = tensor_err.max((a - b).abs());
        }
    } else {
        return Err(miette!(
            "the model produces {} values for {n} images, the circuit {}",
            flat.len(),
            logits.values.len()
        ));
    }
    let plain_pred = argmax_rows(&flat, logits.classes);
    let argmax_agree = plain_pred
        .iter()
        .zip(logits.predictions())
        .filter(|(a, b)| **a == *b)
        .count();
    Ok(Verification {
        stages: circuit.stages,
        output: circuit.output,
        tensor_max_abs_error: tensor_err,
        argmax_agree,
        ranges: range_checks,
    })
}

// ------------------------------------------------------------------ rendering

fn mib(b: Option<u64>) -> String {
    b.map_or_else(
        || "n/a".to_string(),
        |b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
    )
}

/// Renders the executor's report: per stage, nodes, wall time and memory.
pub fn render_run(r: &RunReport, images: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>7} {:>6} {:>9} {:>9} {:>10} {:>10} {:>7}",
        "stage", "nodes", "waves", "time", "cpu", "rss", "peak rss", "live ct"
    );
    for s in &r.stages {
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>6} {:>8.3}s {:>8.2}s {:>10} {:>10} {:>7}",
            s.name,
            s.nodes,
            s.wavefronts,
            s.seconds,
            s.cpu_seconds.unwrap_or(f64::NAN),
            mib(s.rss_bytes),
            mib(s.peak_rss_bytes),
            s.live_ciphertexts
        );
    }
    let per = if images > 0 {
        r.seconds / images as f64 * 1e3
    } else {
        f64::NAN
    };
    let _ = writeln!(
        out,
        "run: {} nodes in {:.2} s ({per:.3} ms per image over {images} images), peak memory {}, \
         at most {} live ciphertexts ({}), {} hoisted rotations",
        r.nodes,
        r.seconds,
        mib(r.peak_rss_bytes),
        r.peak_live_ciphertexts,
        mib(Some(r.peak_live_bytes)),
        r.hoisted_rotations
    );
    out
}

/// Renders the result of `hecc infer`.
pub fn render_infer(r: &InferReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model {}  N=2^{} ({} slots)  security {}  images {}{}",
        r.model,
        r.log_n,
        1u64 << (r.log_n - 1),
        r.security,
        r.images,
        if r.runs > 1 {
            format!(" in {} runs of at most {} images", r.runs, r.batch)
        } else {
            String::new()
        }
    );
    let shown: Vec<String> = r
        .predictions
        .iter()
        .take(32)
        .map(|p| p.to_string())
        .collect();
    let _ = writeln!(
        out,
        "predictions: {}{}",
        shown.join(" "),
        if r.predictions.len() > 32 { " ..." } else { "" }
    );
    if let Some(c) = r.correct {
        let _ = writeln!(
            out,
            "accuracy: {c}/{} = {:.2}%",
            r.images,
            100.0 * c as f64 / r.images.max(1) as f64
        );
    }
    if let Some(a) = &r.approximation {
        let _ = writeln!(
            out,
            "approximation `{}` (plaintext): {}/{} images keep the exact model's prediction{}",
            a.policy,
            a.agree,
            a.images,
            match a.correct {
                Some((e, p)) => format!(
                    "; accuracy exact {:.2}%, approximated {:.2}%",
                    100.0 * e as f64 / a.images.max(1) as f64,
                    100.0 * p as f64 / a.images.max(1) as f64
                ),
                None => String::new(),
            }
        );
    }
    out.push_str(&render_run(&r.run, r.images));
    if let Some((values, total)) = r.estimate {
        let _ = writeln!(
            out,
            "memory: plan estimate {} of live values ({} with keys); measured {} of live values, \
             peak resident {}",
            mib(Some(values)),
            mib(Some(total)),
            mib(Some(r.run.peak_live_bytes)),
            mib(r.run.peak_rss_bytes)
        );
    }
    let [c, k, e, x, d] = r.phase_seconds;
    if r.runs == 1 && r.capacity > r.images {
        let _ = writeln!(
            out,
            "compiled with --batch {0}, the same run would hold {0} images (one slot each): {1:.3} ms per image",
            r.capacity,
            x / r.capacity as f64 * 1e3
        );
    }
    let _ = writeln!(
        out,
        "time: compile {c:.2} s, keygen {k:.2} s, encrypt {e:.2} s, run {x:.2} s, decrypt {d:.2} s; \
         total {:.2} s, amortized {:.3} ms per image (run only {:.3} ms)",
        r.total_seconds(),
        r.total_seconds() / r.images.max(1) as f64 * 1e3,
        x / r.images.max(1) as f64 * 1e3
    );
    if let Some(v) = &r.verification {
        let _ = writeln!(out, "verification against the plaintext reference:");
        let _ = writeln!(
            out,
            "  {:<28} {:>8} {:>12} {:>12} {:>6}",
            "stage", "values", "max |err|", "max |ref|", "bits"
        );
        for s in v.stages.iter().chain(std::iter::once(&v.output)) {
            let _ = writeln!(
                out,
                "  {:<28} {:>8} {:>12.3e} {:>12.3e} {:>6.1}",
                s.name,
                s.values,
                s.max_abs_error,
                s.max_abs_value,
                s.bits()
            );
        }
        let _ = writeln!(
            out,
            "  tensor model: max |err| {:.3e} ({:.1} bits); argmax agreement {}/{}",
            v.tensor_max_abs_error,
            precision_bits(v.tensor_max_abs_error),
            v.argmax_agree,
            r.images
        );
        out.push_str(&render_range_checks(&v.ranges));
    }
    out
}

/// Warning lines for activations whose inputs left their range (nothing when all are inside).
pub fn render_range_checks(checks: &[hecc_passes::ranges::RangeCheck]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for c in checks.iter().filter(|c| c.outside > 0) {
        let what = if c.op == "max_pool" {
            "window spreads"
        } else {
            "inputs"
        };
        let _ = writeln!(
            out,
            "warning: activation `{}` ({}): {} of {} {what} outside [-{:.4}, {:.4}] (worst {:.4}); \
             the approximation is not valid there",
            c.node, c.op, c.outside, c.checked, c.range, c.range, c.worst
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{hwc_to_chw, image_order, ImageOrder, MemoryLimit};

    #[test]
    fn image_axes_are_matched_or_reordered() {
        assert_eq!(image_order(&[5, 28, 28], &[1, 28, 28]), ImageOrder::AsIs);
        assert_eq!(image_order(&[5, 784], &[1, 28, 28]), ImageOrder::AsIs);
        assert_eq!(image_order(&[5, 3, 32, 32], &[3, 32, 32]), ImageOrder::AsIs);
        assert_eq!(
            image_order(&[5, 32, 32, 3], &[3, 32, 32]),
            ImageOrder::HwcToChw { h: 32, w: 32, c: 3 }
        );
        assert_eq!(
            image_order(&[5, 32, 3, 32], &[3, 32, 32]),
            ImageOrder::Mismatch
        );
        assert_eq!(
            image_order(&[5, 14, 56], &[1, 28, 28]),
            ImageOrder::Mismatch
        );
    }

    #[test]
    fn memory_limits_parse() {
        use super::MemoryLimit::{Bytes, Plan};
        let p = |t: &str| t.parse::<MemoryLimit>();
        assert_eq!(p("plan"), Ok(Plan));
        assert_eq!(p("PLAN"), Ok(Plan));
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

    #[test]
    fn hwc_images_become_channel_first() {
        // Two 1x2 images with 3 channels: value = 100 * image + 10 * x + channel.
        let hwc: Vec<f64> = (0..2)
            .flat_map(|i| {
                (0..2).flat_map(move |x| (0..3).map(move |c| (100 * i + 10 * x + c) as f64))
            })
            .collect();
        let chw = hwc_to_chw(&hwc, 1, 2, 3);
        let want: Vec<f64> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |c| (0..2).map(move |x| (100 * i + 10 * x + c) as f64))
            })
            .collect();
        assert_eq!(chw, want);
    }
}
