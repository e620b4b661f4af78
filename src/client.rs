//! The client API: the party that holds the secret key. It generates the keys of a plan,
//! packs and encrypts images, and decrypts and unpacks results, checking that a result
//! answers one of its own requests. Everything works on values and bytes; the `*_file`
//! helpers are thin wrappers for the CLI.
//!
//! ```no_run
//! # fn main() -> miette::Result<()> {
//! use hecc::client::Client;
//! use hecc::server::Server;
//! let plan = hecc::compile::read_plan("cryptonets.plan.json".as_ref())?;
//! let (mut client, eval_keys) = Client::generate(hecc::run::Session::new(plan.clone())?)?;
//! let server = Server::new(hecc::run::Session::new(plan)?, eval_keys)?;
//! let images = client.load_images("images.idx".as_ref())?;
//! let inputs = client.encrypt(&images)?;
//! let (outputs, _report) = server.run(inputs, &Default::default())?;
//! let result = client.decrypt(&outputs, None)?;
//! println!("{:?}", result.logits.predictions());
//! # Ok(())
//! # }
//! ```

use crate::run::{
    check_input_range, eval_keys_bytes, generate_keys, inputs_bytes, load_images, overflow_note,
    peek_key_id, read_eval_keys, read_secret_key, secret_key_bytes, write_keys, ClientEncryptor,
    ClientSecret, EncryptedInputs, EncryptedOutputs, FileKind, Images, InputsMeta, Session,
    EVAL_KEYS_FILE, SECRET_KEY_FILE,
};
use miette::{miette, Result};
use std::path::{Path, PathBuf};

pub use crate::run::{
    decrypt_outputs, outputs_from_bytes, read_outputs, Authenticity, EvalKeySet, KeySet, Logits,
};

/// A client of one plan: its session, and the key it encrypts with.
pub struct Client {
    session: Session,
    secret: Option<ClientSecret>,
    enc: ClientEncryptor,
}

/// A decrypted result and how far it could be checked against its request.
#[derive(Clone, Debug)]
pub struct Decrypted {
    /// The model outputs per image.
    pub logits: Logits,
    /// Whether the request record's tag verified.
    pub authenticity: Authenticity,
}

/// Where [`Client::open_key_dir`] found its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The secret key: half-size ciphertexts and tagged requests.
    Secret,
    /// Only the evaluation keys: encryption under the public key; results of such requests
    /// cannot be authenticated and cannot be decrypted by this client.
    Public,
}

impl Client {
    /// Fresh keys for the session's plan (OS randomness): a client holding the secret key, and
    /// the evaluation keys to give the server.
    pub fn generate(session: Session) -> Result<(Client, EvalKeySet)> {
        let KeySet { secret, eval } = generate_keys(&session)?;
        let enc = ClientEncryptor::secret(&session, &secret)?;
        Ok((
            Client {
                session,
                secret: Some(secret),
                enc,
            },
            eval,
        ))
    }

    /// A client with a secret key already read.
    pub fn with_secret(session: Session, secret: ClientSecret) -> Result<Client> {
        let enc = ClientEncryptor::secret(&session, &secret)?;
        Ok(Client {
            session,
            secret: Some(secret),
            enc,
        })
    }

    /// A client that can only encrypt, under the public key of `keys`.
    pub fn with_public_key(session: Session, keys: &EvalKeySet) -> Result<Client> {
        let enc = ClientEncryptor::public(&session, keys)?;
        Ok(Client {
            session,
            secret: None,
            enc,
        })
    }

    /// A client from a key directory written by [`Client::write_key_dir`]: with its secret key
    /// when there is one (refused if the directory's evaluation keys come from another keygen,
    /// or, unless `allow_shared`, if others can read it), else with its public key.
    pub fn open_key_dir(
        session: Session,
        dir: &Path,
        allow_shared: bool,
    ) -> Result<(Client, KeySource)> {
        let sk_path = dir.join(SECRET_KEY_FILE);
        let ek_path = dir.join(EVAL_KEYS_FILE);
        if !sk_path.exists() {
            let ek = read_eval_keys(&session, &ek_path)?;
            return Ok((Client::with_public_key(session, &ek)?, KeySource::Public));
        }
        let sk = read_secret_key(&session.ctx, &session.digest, &sk_path, allow_shared)?;
        if ek_path.exists() {
            let ek_id = peek_key_id(&ek_path, FileKind::EvalKeys)?;
            if ek_id != sk.id {
                return Err(miette!(
                    help = "run keygen again into an empty directory, or keep the two files of \
                            one keygen together",
                    "{}: {SECRET_KEY_FILE} (key set {}) and {EVAL_KEYS_FILE} (key set {}) come \
                     from different keygens",
                    dir.display(),
                    crate::run::hex(&sk.id),
                    crate::run::hex(&ek_id)
                ));
            }
        }
        Ok((Client::with_secret(session, sk)?, KeySource::Secret))
    }

    /// Writes the secret key (private to its owner) and `eval` into the key directory `dir`;
    /// returns the two paths.
    pub fn write_key_dir(&self, eval: &EvalKeySet, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let secret = self.secret()?;
        write_keys(&self.session, secret, eval, dir)
    }

    /// The session of the client's plan.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The secret key, if the client has it.
    pub fn secret(&self) -> Result<&ClientSecret> {
        self.secret.as_ref().ok_or_else(|| {
            miette!("this client encrypts with the public key only and holds no secret key")
        })
    }

    /// The serialized secret key.
    pub fn secret_key_bytes(&self) -> Result<Vec<u8>> {
        Ok(secret_key_bytes(&self.session, self.secret()?))
    }

    /// The serialized evaluation keys of this client's plan.
    pub fn eval_keys_bytes(&self, eval: &EvalKeySet) -> Vec<u8> {
        eval_keys_bytes(&self.session, eval)
    }

    /// Reads images (IDX, NPY or PNG) scaled to the plan's input domain, refusing values
    /// outside the plan's input range.
    pub fn load_images(&self, path: &Path) -> Result<Images> {
        let mut images = load_images(path, self.session.input()?)?;
        check_input_range(&mut images, self.session.input()?, false)?;
        Ok(images)
    }

    /// Images from values in the model input's domain, row-major `[count, per_image]`, with
    /// the plan's input checks (count, size, finite values in the input range).
    pub fn images_from_values(&self, values: Vec<f64>, count: usize) -> Result<Images> {
        let input = self.session.input()?;
        let per_image: usize = input.shape.iter().product::<usize>().max(1);
        if count == 0 || values.len() != count * per_image {
            return Err(miette!(
                "{} values are not {count} images of the input `{}` ({per_image} values each)",
                values.len(),
                input.name
            ));
        }
        let mut images = Images {
            count,
            per_image,
            data: values,
        };
        check_input_range(&mut images, input, false)?;
        Ok(images)
    }

    /// Packs and encrypts one batch (at most the plan's batch of images).
    pub fn encrypt(&mut self, images: &Images) -> Result<EncryptedInputs> {
        crate::run::encrypt_images(&self.session, images, &mut self.enc)
    }

    /// Packs and encrypts one batch straight into the inputs file at `path` (atomically), a
    /// few ciphertexts per thread at a time, so a batch larger than memory can be encrypted;
    /// returns the file's metadata and length.
    pub fn encrypt_to_file(&mut self, images: &Images, path: &Path) -> Result<(InputsMeta, u64)> {
        crate::run::encrypt_images_to_file(&self.session, images, &mut self.enc, path)
    }

    /// Writes the inputs file for encrypted inputs to `path` (atomically, one ciphertext at a
    /// time); returns its length.
    pub fn write_inputs(&self, inputs: &EncryptedInputs, path: &Path) -> Result<u64> {
        crate::run::write_inputs(&self.session, inputs, path)
    }

    /// The bytes of an inputs file for encrypted inputs.
    pub fn inputs_bytes(&self, inputs: &EncryptedInputs) -> Result<Vec<u8>> {
        inputs_bytes(&self.session, inputs)
    }

    /// Checks and decrypts a result with this client's secret key ([`decrypt`]).
    pub fn decrypt(
        &self,
        outputs: &EncryptedOutputs,
        request: Option<(&str, &[u8])>,
    ) -> Result<Decrypted> {
        decrypt(outputs, self.secret()?, "the encrypted outputs", request)
    }
}

/// Checks a result against the secret key and the request it claims to answer
/// ([`crate::run::verify_outputs`]; with `request`, the name and bytes of the inputs file sent), decrypts
/// and unpacks it, and refuses values beyond what the parameters can hold (a result that
/// wrapped around the modulus is noise, not logits). `what` names the outputs in errors.
pub fn decrypt(
    outputs: &EncryptedOutputs,
    secret: &ClientSecret,
    what: &str,
    request: Option<(&str, &[u8])>,
) -> Result<Decrypted> {
    let record = request
        .map(|(name, bytes)| crate::run::RequestRecord::from_bytes(name, bytes))
        .transpose()?;
    decrypt_against(outputs, secret, what, record.as_ref())
}

/// [`decrypt`] against a request record read beforehand.
fn decrypt_against(
    outputs: &EncryptedOutputs,
    secret: &ClientSecret,
    what: &str,
    request: Option<&crate::run::RequestRecord>,
) -> Result<Decrypted> {
    let authenticity = crate::run::verify_outputs_against(outputs, secret, what, request)?;
    let logits = crate::run::decrypt_verified(outputs, secret)?;
    if let Some(note) = overflow_note(&logits, crate::run::outputs_wrap_bound(outputs)) {
        return Err(miette!(
            help = "nothing was written; `hecc eval` on the plaintext images shows what the \
                    model should give",
            "{what}: {note}"
        ));
    }
    Ok(Decrypted {
        logits,
        authenticity,
    })
}

/// Reads the secret key file for `outputs` (their parameters and plan) and decrypts them
/// ([`decrypt`]): the client side of `hecc decrypt`, which needs no plan. `what` names the
/// outputs; `request` is the inputs file the result should answer.
pub fn decrypt_with_key_file(
    outputs: &EncryptedOutputs,
    what: &str,
    secret_key: &Path,
    request: Option<&Path>,
    allow_shared: bool,
) -> Result<Decrypted> {
    let sk = read_secret_key(&outputs.ctx, &outputs.digest, secret_key, allow_shared)?;
    // The inputs file is read in pieces: it can be far larger than memory.
    let req = request
        .map(crate::run::RequestRecord::from_file)
        .transpose()?;
    decrypt_against(outputs, &sk, what, req.as_ref())
}
