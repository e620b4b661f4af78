//! The client side after a run: output files checked against their request, decryption,
//! logits.

use super::*;

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
/// (the name and bytes of the inputs file the client sent), also that the outputs answer
/// that very file.
pub fn verify_outputs(
    o: &EncryptedOutputs,
    sk: &ClientSecret,
    path: &str,
    request: Option<(&str, &[u8])>,
) -> Result<Authenticity> {
    let record = request
        .map(|(name, bytes)| RequestRecord::from_bytes(name, bytes))
        .transpose()?;
    verify_outputs_against(o, sk, path, record.as_ref())
}

/// What a result is checked against: the metadata of the inputs file the client sent (its
/// request record) and the file's SHA-256, which the server copies into the outputs.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The file's name in errors.
    pub name: String,
    /// The inputs file's metadata.
    pub meta: InputsMeta,
    /// SHA-256 of the whole inputs file.
    pub digest: [u8; 32],
}

impl RequestRecord {
    /// The record of an inputs file held in memory (`name` names it in errors).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<RequestRecord, RunError> {
        let c = ContainerRef::from_bytes(bytes, FileKind::Inputs, name)?;
        let first = c.sections.first().ok_or(RunError::Corrupt {
            path: name.to_string(),
        })?;
        Ok(RequestRecord {
            name: name.to_string(),
            meta: parse_meta(first, name)?,
            digest: Sha256::digest(bytes).into(),
        })
    }

    /// The record of an inputs file, read in pieces (its metadata kept, its ciphertexts only
    /// hashed): memory holds one section at a time whatever the batch.
    pub fn from_file(path: &Path) -> Result<RequestRecord, RunError> {
        let name = path.display().to_string();
        let mut st = ContainerStream::open(path, FileKind::Inputs)?;
        let mut buf = Vec::new();
        let meta = st
            .next_section(&mut buf)
            .and_then(|()| parse_meta::<InputsMeta>(&buf, &name));
        // The checksum first: what a damaged file says is not to be trusted.
        let digest = st.finish()?;
        Ok(RequestRecord {
            name,
            meta: meta?,
            digest,
        })
    }
}

/// [`verify_outputs`] against a request record read beforehand ([`RequestRecord::from_file`]
/// streams a large inputs file).
pub fn verify_outputs_against(
    o: &EncryptedOutputs,
    sk: &ClientSecret,
    path: &str,
    request: Option<&RequestRecord>,
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
        let digest = full_hex(&req.digest);
        if req.meta.request.id != r.id || o.meta.inputs.as_deref() != Some(digest.as_str()) {
            return Err(tampered(format!("it does not answer the request in {}", req.name)).into());
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

/// Half-width of the values ciphertext `ct` can carry before they wrap around its modulus:
/// `q_0 ... q_level / (2 * scale)`.
pub(crate) fn wrap_bound(ctx: &Context, ct: &Ciphertext) -> f64 {
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
    decrypt_verified(o, sk)
}

/// Decrypts and unpacks outputs that [`verify_outputs`] has accepted.
pub(crate) fn decrypt_verified(o: &EncryptedOutputs, sk: &ClientSecret) -> Result<Logits> {
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
