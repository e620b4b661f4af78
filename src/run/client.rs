//! The client side: request records, packing and encryption of images, input files.

use super::*;

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
    pub(crate) fn tag_with(&self, key: &[u8; 32]) -> String {
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

pub(crate) fn full_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses a container's JSON metadata section and requires it to be exactly what hecc writes
/// for that value (no unknown fields, no padding, no reordering): any edit is refused.
pub(crate) fn parse_meta<T: Serialize + serde::de::DeserializeOwned>(
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
        .module()
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

pub(crate) fn outputs_digest(elements: &[(String, u32, Layout)]) -> String {
    full_hex(&Sha256::digest(
        serde_json::to_vec(elements).unwrap_or_default(),
    ))
}

/// Why images could not be packed into, or results read out of, a plan's slot layouts.
#[derive(Clone, Debug, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum PackError {
    /// An input element index beyond the input's values.
    #[error(
        "input element {index} (values {start}..{end}) is outside the input's {per_image} values"
    )]
    ElementOutside {
        /// The element index.
        index: u32,
        /// First value it would carry.
        start: usize,
        /// One past its last value.
        end: usize,
        /// Values per image.
        per_image: usize,
    },
    /// More images than the layout packs per ciphertext.
    #[error("{images} images do not fit: this plan packs at most {max} images per ciphertext")]
    TooManyImages {
        /// Images given.
        images: usize,
        /// Images the layout holds.
        max: u64,
    },
    /// A value with no slot in the layout (or beyond the ring's slots).
    #[error("element {element} of image {image} has no slot in the layout of {value}")]
    NoSlot {
        /// The value (`input` or an output `name[index]`).
        value: String,
        /// Element within the value.
        element: usize,
        /// Image.
        image: usize,
    },
    /// A repetition period that does not divide the slots.
    #[error("a repetition period of {period} slots does not divide {slots} slots")]
    Period {
        /// The period.
        period: usize,
        /// The slots.
        slots: usize,
    },
    /// A packed value beyond the first period of a plan whose slots repeat.
    #[error("slot {slot} holds a value, but this plan repeats its first {period} slots")]
    OutsidePeriod {
        /// The slot.
        slot: usize,
        /// The period.
        period: usize,
    },
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
) -> Result<Vec<f64>, PackError> {
    let per = images.per_image;
    let e = layout.elements() as usize;
    let start = index as usize * e;
    if start + e > per {
        return Err(PackError::ElementOutside {
            index,
            start,
            end: start + e,
            per_image: per,
        });
    }
    if let Some(max) = layout.max_images() {
        if images.count as u64 > u64::from(max) {
            return Err(PackError::TooManyImages {
                images: images.count,
                max: u64::from(max),
            });
        }
    }
    let mut vals = vec![0.0; slots];
    for i in 0..images.count {
        let row = &images.data[i * per + start..i * per + start + e];
        for (j, &x) in row.iter().enumerate() {
            let slot = layout
                .slot_of_element(i, j)
                .filter(|&t| t < slots)
                .ok_or_else(|| PackError::NoSlot {
                    value: "the input".into(),
                    element: j,
                    image: i,
                })?;
            vals[slot] = x;
        }
    }
    Ok(vals)
}

/// Repeats the first `period` slots of `vals` across all of them, as a plan with sparse-slot
/// bootstraps ([`Plan::slot_period`](hecc_passes::plan::Plan::slot_period)) expects its inputs:
/// the packed images must lie in the first period.
pub fn repeat_slots(vals: &mut [f64], period: usize) -> Result<(), PackError> {
    if period == 0 || period > vals.len() || !vals.len().is_multiple_of(period) {
        return Err(PackError::Period {
            period,
            slots: vals.len(),
        });
    }
    if let Some(at) = vals[period..].iter().position(|&x| x != 0.0) {
        return Err(PackError::OutsidePeriod {
            slot: period + at,
            period,
        });
    }
    let (head, rest) = vals.split_at_mut(period);
    for chunk in rest.chunks_mut(period) {
        chunk.copy_from_slice(head);
    }
    Ok(())
}

/// Reads decrypted outputs back per image: `outputs` are the output values' `(name, index,
/// layout, slots)`; the values of one name are ordered by index and value `index` carries the
/// output's flat elements `index * e .. (index + 1) * e` ([`Layout::elements`]), element `j` of
/// image `i` read from [`Layout::slot_of_element`]`(i, j)`. Names keep their first-appearance
/// order. The result's columns are all output elements in that order.
pub fn unpack_outputs(
    outputs: &[(String, u32, Layout, &[f64])],
    images: usize,
) -> Result<Logits, PackError> {
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
                    .ok_or_else(|| PackError::NoSlot {
                        value: format!("output {name}[{index}]"),
                        element: j,
                        image: i,
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

/// One input ciphertext to make: the input's name, its element index, and its value type.
struct InputJob {
    name: String,
    index: u32,
    ty: hecc_ir::he::Type,
}

/// The plan's input ciphertexts for `images`, in file order, after checking that the images
/// fit the plan (values per image, batch size).
fn input_jobs(s: &Session, images: &Images) -> Result<Vec<InputJob>> {
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
    s.module()
        .inputs()
        .into_iter()
        .map(|(v, name, index)| {
            let ty = s
                .module()
                .ty(v)
                .ok_or_else(|| miette!("input node {v} has no type"))?;
            Ok(InputJob {
                name: name.to_string(),
                index,
                ty,
            })
        })
        .collect()
}

/// Packs input job `job`'s values from `images` and encrypts them with `child`.
fn encrypt_job(
    s: &Session,
    encoder: &Encoder,
    images: &Images,
    job: &InputJob,
    child: &mut Enc,
) -> Result<Ciphertext> {
    let layout = s
        .module()
        .layout(job.ty.layout())
        .ok_or_else(|| miette!("input `{}` has no layout", job.name))?;
    let mut vals = pack_input(layout, job.index, images, s.ctx.n() / 2).map_err(|e| {
        miette!(
            help = "recompile with a larger --batch, or pass fewer images",
            "input `{}`: {e}",
            job.name
        )
    })?;
    if let Some(period) = s.plan.slot_period() {
        repeat_slots(&mut vals, period).map_err(|e| miette!("input `{}`: {e}", job.name))?;
    }
    let pt = encoder
        .encode(
            &vals,
            job.ty.level().0 as usize,
            job.ty.log_scale().0.exp2(),
        )
        .into_diagnostic()?;
    match child {
        Enc::Secret(e) => e.encrypt(&pt),
        Enc::Public(e) => e.encrypt(&pt),
    }
    .into_diagnostic()
}

/// The metadata of a batch of `images` encrypted as `jobs`: a fresh random request id, tagged
/// when the encryptor has the secret key.
fn inputs_meta(
    s: &Session,
    images: &Images,
    jobs: &[InputJob],
    enc: &ClientEncryptor,
) -> Result<InputsMeta> {
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
    Ok(InputsMeta {
        images: images.count,
        elements: jobs.iter().map(|j| (j.name.clone(), j.index)).collect(),
        request,
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
    let jobs = input_jobs(s, images)?;
    let encoder = Encoder::new(&s.ctx);
    // Each input is encoded and encrypted in parallel by its own encryptor, forked in order
    // from the client's (so the result does not depend on the thread count); a plaintext is
    // dropped as soon as it is encrypted.
    use rayon::prelude::*;
    let children: Vec<Enc> = jobs.iter().map(|_| enc.fork()).collect();
    let cts = jobs
        .par_iter()
        .zip(children)
        .map(|(job, mut child)| encrypt_job(s, &encoder, images, job, &mut child))
        .collect::<Result<Vec<_>>>()?;
    Ok(EncryptedInputs {
        meta: inputs_meta(s, images, &jobs, enc)?,
        key_id: enc.key_id,
        file_digest: None,
        cts,
    })
}

/// Input ciphertexts [`encrypt_images_to_file`] makes at once (per thread).
pub(crate) const ENCRYPT_CHUNK_PER_THREAD: usize = 4;

/// Encrypts images as [`encrypt_images`] does and writes the inputs file to `path`
/// (atomically) as the ciphertexts are made, a chunk of a few per thread at a time: memory
/// holds one chunk, never the batch. The file is the one [`write_inputs`] writes for the same
/// encryptor (the same ciphertexts, in the same order). Returns the metadata and the file's
/// length.
pub fn encrypt_images_to_file(
    s: &Session,
    images: &Images,
    enc: &mut ClientEncryptor,
    path: &Path,
) -> Result<(InputsMeta, u64)> {
    use rayon::prelude::*;
    let jobs = input_jobs(s, images)?;
    let meta = inputs_meta(s, images, &jobs, enc)?;
    let meta_bytes = serde_json::to_vec(&meta).into_diagnostic()?;
    let encoder = Encoder::new(&s.ctx);
    let header = s.container_header(FileKind::Inputs, enc.key_id);
    let chunk = ENCRYPT_CHUNK_PER_THREAD * rayon::current_num_threads().max(1);
    // The first encryption failure, reported as itself rather than as a failed write.
    let mut failure: Option<miette::Report> = None;
    let written = crate::files::write_atomic_with(path, &mut |w| {
        let mut out = ContainerWriter::start(w, &header, 1 + jobs.len() as u32)?;
        out.section(&Bytes(&meta_bytes))?;
        for part in jobs.chunks(chunk) {
            let children: Vec<Enc> = part.iter().map(|_| enc.fork()).collect();
            let made = part
                .par_iter()
                .zip(children)
                .map(|(job, mut child)| {
                    encrypt_job(s, &encoder, images, job, &mut child).map(|ct| ct.to_bytes(&s.ctx))
                })
                .collect::<Result<Vec<_>>>();
            match made {
                Ok(bytes) => {
                    for b in &bytes {
                        out.section(&Bytes(b))?;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    failure = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        out.finish()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    written?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok((meta, len))
}

/// Writes encrypted inputs to `path` (atomically), one ciphertext's bytes at a time: the file
/// never exists in memory beside the ciphertexts. Returns its length.
pub fn write_inputs(s: &Session, x: &EncryptedInputs, path: &Path) -> Result<u64> {
    struct CtSection<'a> {
        ct: &'a Ciphertext,
        ctx: &'a Context,
    }
    impl Section for CtSection<'_> {
        fn len(&self) -> u64 {
            self.ct.to_bytes(self.ctx).len() as u64
        }
        fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
            sink(&self.ct.to_bytes(self.ctx))
        }
    }
    let meta = serde_json::to_vec(&x.meta).into_diagnostic()?;
    let meta = Bytes(&meta);
    let cts: Vec<CtSection<'_>> = x
        .cts
        .iter()
        .map(|ct| CtSection { ct, ctx: &s.ctx })
        .collect();
    let mut sections: Vec<&dyn Section> = vec![&meta];
    sections.extend(cts.iter().map(|c| c as &dyn Section));
    let header = s.container_header(FileKind::Inputs, x.key_id);
    crate::files::write_atomic_with(path, &mut |w| write_container(w, &header, &sections))?;
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
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
///
/// The file is read section by section: each ciphertext is parsed as it arrives, so the run
/// never holds the file's bytes beside the ciphertexts made from them. The checksum is
/// checked at the end; a file that fails it is refused as corrupt even when an earlier check
/// failed first (what a damaged file says is not to be trusted).
pub fn read_inputs(s: &Session, path: &Path) -> Result<EncryptedInputs> {
    stream_inputs(s, path, &path.display().to_string(), true).map(|(x, _)| x)
}

/// Checks an inputs file as [`read_inputs`] does, reading it in pieces without parsing its
/// ciphertexts (constant memory): a server's check of an upload before it acknowledges it.
/// Returns the metadata and the key id it was made for.
/// `what` names the file in errors.
pub fn check_inputs_file(s: &Session, path: &Path, what: &str) -> Result<(InputsMeta, KeyId)> {
    let (x, key_id) = stream_inputs(s, path, what, false)?;
    Ok((x.meta, key_id))
}

fn stream_inputs(
    s: &Session,
    path: &Path,
    what: &str,
    parse: bool,
) -> Result<(EncryptedInputs, KeyId)> {
    let mut cts = Vec::new();
    let be = backend_err(what);
    let (meta, key_id, digest) = stream_sections(s, path, what, parse, |bytes, _| {
        cts.push(Ciphertext::from_bytes(&s.ctx, bytes).map_err(&be)?);
        Ok(())
    })?;
    Ok((
        EncryptedInputs {
            meta,
            key_id,
            file_digest: Some(digest),
            cts,
        },
        key_id,
    ))
}

/// Reads an inputs file in pieces: header, plan and metadata checked, then (with `sections`)
/// each ciphertext's bytes handed to `each` with the file offset where they end, then the
/// checksum. A damaged file is reported as such, whatever an earlier check said about its
/// contents. Returns the metadata, the key id and the file's SHA-256.
fn stream_sections(
    s: &Session,
    path: &Path,
    what: &str,
    sections: bool,
    mut each: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<(InputsMeta, KeyId, [u8; 32])> {
    let p = what.to_string();
    let mut st = ContainerStream::open_as(path, FileKind::Inputs, what)?;
    let key_id = st.head.key_id;
    let mut buf = Vec::new();
    let mut read = || -> Result<InputsMeta> {
        st.head.check_plan(s, &p)?;
        let n = (st.left() as usize)
            .checked_sub(1)
            .ok_or_else(|| RunError::Corrupt { path: p.clone() })?;
        st.next_section(&mut buf)?;
        let meta = check_inputs_meta(s, &key_id, &buf, n, &p)?;
        while sections && st.left() > 0 {
            st.next_section(&mut buf)?;
            each(&buf, st.position())?;
        }
        Ok(meta)
    };
    let got = read();
    let digest = st.finish();
    match (got, digest) {
        (_, Err(e @ (RunError::Corrupt { .. } | RunError::Truncated { .. }))) => Err(e.into()),
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(e.into()),
        (Ok(meta), Ok(d)) => Ok((meta, key_id, d)),
    }
}

/// An inputs file checked as [`read_inputs`] checks it (every ciphertext parsed, the checksum),
/// without keeping its ciphertexts: the run reads each one from the file when its input node
/// runs, checking that its bytes still have the SHA-256 they had here. Returns the inputs with
/// no ciphertexts and the reader. Memory: one ciphertext at a time.
pub fn lazy_inputs(
    s: &Session,
    path: &Path,
) -> Result<(EncryptedInputs, hecc_runtime::exec::LazyInputs)> {
    use std::os::unix::fs::FileExt;
    let p = path.display().to_string();
    let be = backend_err(&p);
    // (offset, length, SHA-256) of each ciphertext's section.
    let mut sections: Vec<(u64, u64, [u8; 32])> = Vec::new();
    let (meta, key_id, digest) = stream_sections(s, path, &p, true, |bytes, end| {
        Ciphertext::from_bytes(&s.ctx, bytes).map_err(&be)?;
        let len = bytes.len() as u64;
        sections.push((end - len, len, Sha256::digest(bytes).into()));
        Ok(())
    })?;
    let m = s.module();
    let log_n = s.plan.params.log_n;
    let type_bytes: HashMap<(String, u32), u64> = m
        .inputs()
        .into_iter()
        .map(|(v, name, index)| {
            let b = m.ty(v).map_or(0, |t| t.bytes(log_n));
            ((name.to_string(), index), b)
        })
        .collect();
    let elements: Vec<((String, u32), u64)> = meta
        .elements
        .iter()
        .map(|k| (k.clone(), type_bytes.get(k).copied().unwrap_or(0)))
        .collect();
    let index: HashMap<(String, u32), (u64, u64, [u8; 32])> =
        meta.elements.iter().cloned().zip(sections).collect();
    let file = std::fs::File::open(path).map_err(|e| RunError::Io {
        path: p.clone(),
        detail: e.to_string(),
    })?;
    let ctx = s.ctx.clone();
    let load = move |name: &str, i: u32| -> std::result::Result<Ciphertext, String> {
        let &(offset, len, sum) = index
            .get(&(name.to_string(), i))
            .ok_or_else(|| "not in the inputs file".to_string())?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|e| format!("reading the inputs file: {e}"))?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != sum {
            return Err("the inputs file changed while the run was reading it".into());
        }
        Ciphertext::from_bytes(&ctx, &bytes).map_err(|e| e.to_string())
    };
    Ok((
        EncryptedInputs {
            meta,
            key_id,
            file_digest: Some(digest),
            cts: Vec::new(),
        },
        hecc_runtime::exec::LazyInputs {
            elements,
            load: std::sync::Arc::new(load),
        },
    ))
}

/// [`read_inputs`] on the bytes of an inputs file; `what` names them in errors.
pub fn inputs_from_bytes(s: &Session, bytes: &[u8], what: &str) -> Result<EncryptedInputs> {
    let (c, meta) = checked_inputs(s, bytes, what)?;
    let be = backend_err(what);
    let cts = c.sections[1..]
        .iter()
        .map(|b| Ciphertext::from_bytes(&s.ctx, b).map_err(&be))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncryptedInputs {
        meta,
        key_id: c.key_id,
        file_digest: Some(Sha256::digest(bytes).into()),
        cts,
    })
}

/// Checks the bytes of an inputs file as [`inputs_from_bytes`] does (container, checksum, plan,
/// request record, input elements) without parsing its ciphertexts. Returns the metadata and
/// the key id it was made for.
pub fn check_inputs_bytes(s: &Session, bytes: &[u8], what: &str) -> Result<(InputsMeta, KeyId)> {
    let (c, meta) = checked_inputs(s, bytes, what)?;
    Ok((meta, c.key_id))
}

fn checked_inputs<'a>(
    s: &Session,
    bytes: &'a [u8],
    what: &str,
) -> Result<(ContainerRef<'a>, InputsMeta)> {
    let p = what.to_string();
    let c = ContainerRef::from_bytes(bytes, FileKind::Inputs, &p)?;
    c.check_plan(s, &p)?;
    let (meta, cts) = c
        .sections
        .split_first()
        .ok_or_else(|| RunError::Corrupt { path: p.clone() })?;
    let meta = check_inputs_meta(s, &c.key_id, meta, cts.len(), &p)?;
    Ok((c, meta))
}

/// The metadata section of an inputs file made for `key_id` with `n` ciphertexts, checked
/// against the plan: request record, image count, input elements in the plan's order.
fn check_inputs_meta(
    s: &Session,
    key_id: &KeyId,
    meta: &[u8],
    n: usize,
    p: &str,
) -> Result<InputsMeta> {
    let p = p.to_string();
    let meta: InputsMeta = parse_meta(meta, &p)?;
    if meta.elements.len() != n {
        return Err(RunError::Corrupt { path: p }.into());
    }
    let tampered = |detail: String| RunError::Tampered {
        path: p.clone(),
        detail,
    };
    if meta.request.key != full_hex(key_id) || meta.request.plan != full_hex(&s.digest) {
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
        .module()
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
    Ok(meta)
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
