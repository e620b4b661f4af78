//! The server API: the party that runs a plan on encrypted inputs. It holds the plan and the
//! client's evaluation keys, never a secret key (no function here takes one), and reports
//! progress as events the caller renders ([`RunOptions::progress`]).

use crate::run::{
    check_memory, eval_keys_from_bytes, inputs_from_bytes, outputs_bytes, read_eval_keys,
    read_inputs, run_inputs, EncryptedInputs, EncryptedOutputs, EvalKeySet, Session,
};
use miette::Result;
use std::path::Path;

pub use crate::run::{available_memory, MemoryLimit, RunOptions};
pub use hecc_runtime::exec::{ProgressEvent, ProgressSink, RunReport};

/// A plan ready to run for one client: its session and that client's evaluation keys.
pub struct Server {
    session: Session,
    keys: EvalKeySet,
}

impl Server {
    /// A server for `session`'s plan with evaluation keys already in memory; refused when they
    /// lack a Galois key the plan's rotations need.
    pub fn new(session: Session, keys: EvalKeySet) -> Result<Server> {
        keys.check_covers(&session, "the evaluation keys")?;
        Ok(Server { session, keys })
    }

    /// A server for `session`'s plan with the evaluation keys of a key file.
    pub fn open(session: Session, eval_keys: &Path) -> Result<Server> {
        let keys = read_eval_keys(&session, eval_keys)?;
        Ok(Server { session, keys })
    }

    /// A server for `session`'s plan with evaluation keys received as bytes (checked as a key
    /// file is); `what` names them in errors.
    pub fn from_key_bytes(session: Session, bytes: &[u8], what: &str) -> Result<Server> {
        let keys = eval_keys_from_bytes(&session, bytes, what)?;
        Ok(Server { session, keys })
    }

    /// The session of the plan served.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The evaluation keys' id ([`crate::run::KeyId`]).
    pub fn key_id(&self) -> &crate::run::KeyId {
        &self.keys.id
    }

    /// Refuses to start when `available` bytes (default: what this process may use) cannot
    /// hold the plan's estimated peak.
    pub fn check_memory(&self, available: Option<u64>) -> Result<()> {
        check_memory(&self.session, available.or_else(available_memory), "run")
    }

    /// Reads an inputs file made for this plan and these keys.
    pub fn read_inputs(&self, path: &Path) -> Result<EncryptedInputs> {
        read_inputs(&self.session, path)
    }

    /// Reads inputs received as bytes; `what` names them in errors.
    pub fn inputs_from_bytes(&self, bytes: &[u8], what: &str) -> Result<EncryptedInputs> {
        inputs_from_bytes(&self.session, bytes, what)
    }

    /// Runs the plan on one encrypted batch.
    pub fn run(
        &self,
        inputs: EncryptedInputs,
        opts: &RunOptions,
    ) -> Result<(EncryptedOutputs, RunReport)> {
        run_inputs(&self.session, inputs, &self.keys, opts)
    }

    /// Runs the plan on the inputs file at `path`, reading each ciphertext when its input node
    /// runs ([`crate::run::run_inputs_file`]); the file is checked whole first.
    pub fn run_file(
        &self,
        path: &std::path::Path,
        opts: &RunOptions,
    ) -> Result<(EncryptedOutputs, RunReport)> {
        crate::run::run_inputs_file(&self.session, path, &self.keys, opts)
    }

    /// The bytes of an outputs file (they carry the parameters, so the client decrypts
    /// without the plan).
    pub fn outputs_bytes(&self, outputs: &EncryptedOutputs) -> Result<Vec<u8>> {
        outputs_bytes(outputs)
    }
}
