//! Key generation and key files: the client's secret, the evaluation keys the server gets.

use super::*;

/// The key id of the serialized public, relinearization and Galois keys (and, for a plan that
/// bootstraps, the encapsulation keys).
pub fn key_id_of(sections: &[&[u8]]) -> KeyId {
    let bytes: Vec<Bytes<'_>> = sections.iter().map(|s| Bytes(s)).collect();
    key_id_of_sections(&bytes.iter().map(|b| b as &dyn Section).collect::<Vec<_>>())
}

/// What a key id's hash starts with.
const KEY_ID_DOMAIN: &[u8] = b"hecc key id v2";

/// [`key_id_of`] on sections given in pieces.
fn key_id_of_sections(sections: &[&dyn Section]) -> KeyId {
    let mut h = Sha256::new();
    h.update(KEY_ID_DOMAIN);
    for s in sections {
        h.update(s.len().to_le_bytes());
        // Hashing cannot fail.
        let _ = s.emit(&mut |b| {
            h.update(b);
            Ok(())
        });
    }
    h.finalize().into()
}

/// The rotation keys as a container section, serialized one key at a time.
struct GaloisSection<'a> {
    keys: &'a GaloisKeys,
    ctx: &'a Context,
}

impl Section for GaloisSection<'_> {
    fn len(&self) -> u64 {
        self.keys.serialized_len(self.ctx)
    }
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        self.keys.write_pieces(self.ctx, sink)
    }
}

/// The client's secret key with its key set's id.
pub struct ClientSecret {
    /// The secret key.
    pub key: SecretKey,
    /// The id of its key set.
    pub id: KeyId,
    /// Key of the request tags (derived from the secret key).
    pub(crate) tag_key: [u8; 32],
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
    /// Galois keys for exactly the plan's rotation steps (and bootstrapping's, with
    /// conjugation, for a plan that bootstraps).
    pub galois: GaloisKeys,
    /// The bootstrap's encapsulation keys (a plan that bootstraps).
    pub encapsulation: Option<EncapsulationKeys>,
    /// The key set's id ([`key_id_of`] its keys).
    pub id: KeyId,
}

impl EvalKeySet {
    /// Checks that the keys hold a Galois key for every rotation step of session `s`'s plan;
    /// `what` names them in the error.
    pub fn check_covers(&self, s: &Session, what: &str) -> Result<(), RunError> {
        if self.relin.top_level() < s.ctx.max_level() {
            return Err(RunError::Mismatch {
                what: what.to_string(),
                detail: format!(
                    "the relinearization key serves levels up to {}, the chain's top is {}",
                    self.relin.top_level(),
                    s.ctx.max_level()
                ),
            });
        }
        for (k, need) in rotation_key_levels(s) {
            let g = s.ctx.galois_element(k);
            if g == 1 {
                continue;
            }
            let detail = match self.galois.top_level(g) {
                None => format!("no Galois key for rotation step {k} the plan needs"),
                Some(l) if l < need => format!(
                    "the Galois key for rotation step {k} serves levels up to {l}; \
                     the plan rotates at level {need}"
                ),
                Some(_) => continue,
            };
            return Err(RunError::Mismatch {
                what: what.to_string(),
                detail,
            });
        }
        let bt = s.bootstrapper().map_err(|e| RunError::Mismatch {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if let Some(bt) = bt {
            let Some(enc) = &self.encapsulation else {
                return Err(RunError::Mismatch {
                    what: what.to_string(),
                    detail: "the plan bootstraps but the keys have no bootstrapping keys".into(),
                });
            };
            bt.check_shared_keys(&self.relin, &self.galois, enc)
                .map_err(|e| RunError::Mismatch {
                    what: what.to_string(),
                    detail: format!("bootstrapping keys: {e}"),
                })?;
        }
        Ok(())
    }

    /// As the executor wants them, with the session's bootstrapper for a plan that bootstraps.
    pub fn as_exec<'a>(&'a self, s: &'a Session) -> Result<EvalKeys<'a>> {
        let boot = match (s.bootstrapper()?, &self.encapsulation) {
            (Some(bootstrapper), Some(encapsulation)) => Some(BootEval {
                bootstrapper,
                encapsulation,
            }),
            _ => None,
        };
        Ok(EvalKeys {
            relin: Some(&self.relin),
            galois: Some(&self.galois),
            boot,
        })
    }
}

/// Each rotation step of session `s`'s plan with the highest level its circuit rotates at:
/// the level its Galois key must serve (the top of the chain for a step the circuit does not
/// show, which a valid plan does not have).
pub fn rotation_key_levels(s: &Session) -> Vec<(i64, usize)> {
    let levels = hecc_passes::report::rotation_levels(&s.plan.circuit);
    let top = s.ctx.max_level();
    s.plan
        .rotation_steps
        .iter()
        .map(|&k| {
            let l = levels.get(&k).map_or(top, |&l| (l as usize).min(top));
            (i64::from(k), l)
        })
        .collect()
}

/// Generates fresh keys for a plan (OS randomness). Each Galois key spans the chain only up
/// to the highest level its step is used at; bootstrapping's keys span all of it.
pub fn generate_keys(s: &Session) -> Result<KeySet> {
    let mut kg = KeyGenerator::new(&s.ctx).into_diagnostic()?;
    let mut steps = rotation_key_levels(s);
    let public = kg.public_key();
    let relin = kg.relin_key();
    let (galois, encapsulation) = match s.bootstrapper()? {
        Some(bt) => {
            let top = s.ctx.max_level();
            steps.extend(bt.rotations().into_iter().map(|k| (k, top)));
            let enc = bt.generate_encapsulation_keys(&mut kg).into_diagnostic()?;
            (kg.galois_keys_to_levels(&steps, Some(top)), Some(enc))
        }
        None => (kg.galois_keys_to_levels(&steps, None), None),
    };
    let id = with_eval_sections(
        &s.ctx,
        [&public.to_bytes(&s.ctx), &relin.to_bytes(&s.ctx)],
        &galois,
        encapsulation
            .as_ref()
            .map(|e| e.to_bytes(&s.ctx))
            .as_deref(),
        key_id_of_sections,
    );
    Ok(KeySet {
        secret: ClientSecret::new(&s.ctx, kg.secret_key().clone(), id),
        eval: EvalKeySet {
            public,
            relin,
            galois,
            encapsulation,
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
        std::iter::once(k.public.to_bytes(ctx))
            .chain(std::iter::once(k.relin.to_bytes(ctx)))
            .chain(std::iter::once(k.galois.to_bytes(ctx)))
            .chain(k.encapsulation.iter().map(|e| e.to_bytes(ctx)))
            .collect(),
    )
    .to_bytes()
}

/// Writes the evaluation keys to `path` as [`eval_keys_bytes`] would, streamed: the rotation
/// keys go to the file one key at a time (a file of gigabytes never exists as one buffer).
pub fn write_eval_keys(s: &Session, k: &EvalKeySet, path: &Path) -> Result<()> {
    let ctx = &s.ctx;
    let header = s.container_header(FileKind::EvalKeys, k.id);
    with_eval_sections(
        ctx,
        [&k.public.to_bytes(ctx), &k.relin.to_bytes(ctx)],
        &k.galois,
        k.encapsulation.as_ref().map(|e| e.to_bytes(ctx)).as_deref(),
        |sections| {
            crate::files::write_atomic_with(path, &mut |w| write_container(w, &header, sections))
        },
    )
}

/// Calls `f` with the sections of an evaluation-key file in their order: the public and
/// relinearization keys serialized, the rotation keys streamed, the encapsulation keys if any.
fn with_eval_sections<R>(
    ctx: &Context,
    [public, relin]: [&[u8]; 2],
    galois: &GaloisKeys,
    encapsulation: Option<&[u8]>,
    f: impl FnOnce(&[&dyn Section]) -> R,
) -> R {
    let (p, r) = (Bytes(public), Bytes(relin));
    let g = GaloisSection { keys: galois, ctx };
    let e = encapsulation.map(Bytes);
    let mut sections: Vec<&dyn Section> = vec![&p, &r, &g];
    if let Some(e) = &e {
        sections.push(e);
    }
    f(&sections)
}

/// Serializes the secret key.
pub fn secret_key_bytes(s: &Session, sk: &ClientSecret) -> Vec<u8> {
    s.container(FileKind::SecretKey, sk.id, vec![sk.key.to_bytes(&s.ctx)])
        .to_bytes()
}

/// Writes `DIR/secret.key` (mode 0600; a directory created here is 0700) and `DIR/eval.keys`;
/// returns their paths.
pub fn write_keys(
    s: &Session,
    secret: &ClientSecret,
    eval: &EvalKeySet,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    crate::files::create_private_dir(dir)?;
    let sk = dir.join(SECRET_KEY_FILE);
    let ek = dir.join(EVAL_KEYS_FILE);
    crate::files::write_private(&sk, &secret_key_bytes(s, secret))?;
    write_eval_keys(s, eval, &ek)?;
    Ok((sk, ek))
}

pub(crate) fn backend_err(what: &str) -> impl Fn(CkksError) -> RunError + '_ {
    move |source| RunError::Backend {
        path: what.to_string(),
        source,
    }
}

/// Reads evaluation keys and checks they belong to the plan, carry their own key id and cover
/// the plan's rotations.
///
/// The file is read as it is parsed: the rotation keys one polynomial at a time, never the
/// whole file into one buffer beside the keys made from it (which had doubled the resident
/// peak of a run whose keys outweigh its ciphertexts). Nothing read is used unless the file's
/// checksum holds.
pub fn read_eval_keys(s: &Session, path: &Path) -> Result<EvalKeySet> {
    let what = path.display().to_string();
    let mut st = ContainerStream::open(path, FileKind::EvalKeys)?;
    let count = st.left();
    let mut id = Sha256::new();
    id.update(KEY_ID_DOMAIN);
    let ctx = &s.ctx;
    let small = |st: &mut ContainerStream<_>, id: &mut Sha256| -> Result<Vec<u8>, RunError> {
        st.next_section_parsed(Some(id), |r, len| {
            let mut v = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
            r.read_to_end(&mut v).map(|_| v)
        })?
        .map_err(|e| RunError::Io {
            path: what.clone(),
            detail: e.to_string(),
        })
    };
    let parsed = if (3..=4).contains(&count) {
        let public = small(&mut st, &mut id)?;
        let relin = small(&mut st, &mut id)?;
        let galois =
            st.next_section_parsed(Some(&mut id), |r, len| GaloisKeys::read_from(ctx, r, len))?;
        let encapsulation = if count == 4 {
            Some(small(&mut st, &mut id)?)
        } else {
            None
        };
        Some((public, relin, galois, encapsulation))
    } else {
        None
    };
    // The checksum first: a damaged file is reported as such, whatever its parts gave.
    let head = st.head.clone();
    st.finish()?;
    let Some((public, relin, galois, encapsulation)) = parsed else {
        return Err(RunError::Corrupt { path: what }.into());
    };
    check_fingerprints(&head.fingerprint, &head.plan_digest, s, &what)?;
    let parts = KeyParts {
        claimed: head.key_id,
        id: id.finalize().into(),
        public: &public,
        relin: &relin,
        galois,
        encapsulation: encapsulation.as_deref(),
    };
    parts.check(s, &what)
}

/// [`read_eval_keys`] on the bytes of a key file; `what` names them in errors.
pub fn eval_keys_from_bytes(s: &Session, bytes: &[u8], what: &str) -> Result<EvalKeySet> {
    let c = ContainerRef::from_bytes(bytes, FileKind::EvalKeys, what)?;
    c.check_plan(s, what)?;
    let (public, relin, galois, encapsulation) = match c.sections.as_slice() {
        [public, relin, galois] => (public, relin, galois, None),
        [public, relin, galois, enc] => (public, relin, galois, Some(*enc)),
        _ => return Err(RunError::Corrupt { path: what.into() }.into()),
    };
    let parts = KeyParts {
        claimed: c.key_id,
        id: key_id_of(&c.sections),
        public,
        relin,
        galois: GaloisKeys::from_bytes(&s.ctx, galois),
        encapsulation,
    };
    parts.check(s, what)
}

/// The sections of an evaluation-key file, read, with the key id its header claims and the
/// one its sections hash to.
struct KeyParts<'a> {
    claimed: KeyId,
    id: KeyId,
    public: &'a [u8],
    relin: &'a [u8],
    galois: std::result::Result<GaloisKeys, CkksError>,
    encapsulation: Option<&'a [u8]>,
}

impl KeyParts<'_> {
    /// Parses the keys and checks the key id, that bootstrapping keys come only with a plan
    /// that bootstraps, and that the keys cover the plan's rotations.
    fn check(self, s: &Session, what: &str) -> Result<EvalKeySet> {
        let ctx = &s.ctx;
        let be = backend_err(what);
        let public = PublicKey::from_bytes(ctx, self.public).map_err(&be)?;
        if self.id != self.claimed {
            return Err(RunError::Tampered {
                path: what.to_string(),
                detail: format!(
                    "the key id in the header ({}) is not that of the keys it holds ({})",
                    hex(&self.claimed),
                    hex(&self.id)
                ),
            }
            .into());
        }
        let encapsulation = match (self.encapsulation, s.bootstrapper()?) {
            (Some(bytes), Some(bt)) => Some(bt.encapsulation_keys_from_bytes(bytes).map_err(&be)?),
            (Some(_), None) => {
                return Err(RunError::Mismatch {
                    what: what.to_string(),
                    detail: "the keys hold bootstrapping keys but the plan does not bootstrap"
                        .into(),
                }
                .into())
            }
            (None, _) => None,
        };
        let keys = EvalKeySet {
            public,
            relin: RelinKey::from_bytes(ctx, self.relin).map_err(&be)?,
            galois: self.galois.map_err(&be)?,
            encapsulation,
            id: self.id,
        };
        keys.check_covers(s, what)?;
        Ok(keys)
    }
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
    secret_key_from_bytes(ctx, digest, &read_file(path)?, &path.display().to_string())
}

/// [`read_secret_key`] on the bytes of a key file (no file-permission check); `what` names
/// them in errors.
pub fn secret_key_from_bytes(
    ctx: &Arc<Context>,
    digest: &[u8; 32],
    bytes: &[u8],
    what: &str,
) -> Result<ClientSecret> {
    let c = ContainerRef::from_bytes(bytes, FileKind::SecretKey, what)?;
    let p = what.to_string();
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
    let key = SecretKey::from_bytes(ctx, sk).map_err(backend_err(what))?;
    Ok(ClientSecret::new(ctx, key, c.key_id))
}

// ------------------------------------------------------------------ images
