//! The hecc container format (magic, version, kind, fingerprints, sections, checksum) and the
//! errors of reading and checking files.

use super::*;

/// Magic bytes of hecc container files.
pub const FILE_MAGIC: [u8; 8] = *b"HECCFILE";
/// Container format version.
pub const FILE_VERSION: u16 = 2;
pub(crate) const HEADER: usize = 8 + 2 + 1 + 1 + 4 + 32 + 32 + 32;

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
    /// The file could not be read.
    #[error("cannot read {path}: {detail}")]
    #[diagnostic(code(hecc::run::io))]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        detail: String,
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
}

/// The first 8 bytes of `b` in hex: how ids and digests are named in messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

// ------------------------------------------------------------------ containers

/// A container: header fields and sections, owned (to write, or to edit in tests and tools).
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

/// A container parsed in place: its sections borrow the bytes it was read from (no copy of a
/// key file of gigabytes).
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRef<'a> {
    /// Kind.
    pub kind: FileKind,
    /// Parameter fingerprint.
    pub fingerprint: [u8; 32],
    /// Plan digest.
    pub plan_digest: [u8; 32],
    /// Key set identity.
    pub key_id: KeyId,
    /// Sections.
    pub sections: Vec<&'a [u8]>,
}

/// A container section as the writer sees it: its length up front, then its bytes in pieces,
/// so a section of gigabytes (the rotation keys) never has to exist as one buffer.
#[allow(clippy::len_without_is_empty)] // a section's length is all the writer needs
pub trait Section {
    /// The section's length in bytes.
    fn len(&self) -> u64;
    /// Gives the section's bytes to `sink`, in order, in pieces of any size.
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()>;
}

/// A section that is one byte slice.
pub struct Bytes<'a>(pub &'a [u8]);

impl Section for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn emit(&self, sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        sink(self.0)
    }
}

/// The header of a container (everything before its sections).
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerHeader {
    /// Kind.
    pub kind: FileKind,
    /// Parameter fingerprint.
    pub fingerprint: [u8; 32],
    /// Plan digest.
    pub plan_digest: [u8; 32],
    /// Key set identity.
    pub key_id: KeyId,
}

impl ContainerHeader {
    /// Checks that the container belongs to `session`'s parameters and plan.
    pub fn check_plan(&self, session: &Session, path: &str) -> Result<(), RunError> {
        check_fingerprints(&self.fingerprint, &self.plan_digest, session, path)
    }
}

/// The header fields of a container whose first bytes are `head` (at most [`HEADER`] + 4 of
/// them) and whose whole length is `len`, checked (magic, version, kind, reserved bytes), and
/// its section count.
pub(crate) fn parse_header(
    head: &[u8],
    len: usize,
    expected: FileKind,
    path: &str,
) -> Result<(ContainerHeader, u32), RunError> {
    let p = || path.to_string();
    if head.len() < 8 || head[..8] != FILE_MAGIC {
        return Err(RunError::BadMagic { path: p() });
    }
    if head.len() < HEADER + 4 || len < HEADER + 4 {
        return Err(RunError::Truncated {
            path: p(),
            len,
            needed: HEADER + 4 + 32,
        });
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != FILE_VERSION {
        return Err(RunError::Version {
            path: p(),
            found: version,
        });
    }
    let kind = FileKind::from_u8(head[10]);
    if kind != Some(expected) {
        return Err(RunError::WrongKind {
            path: p(),
            expected: expected.name(),
            found: kind.map_or_else(
                || format!("unknown kind {}", head[10]),
                |k| k.name().to_string(),
            ),
        });
    }
    if head[11..16].iter().any(|&b| b != 0) {
        return Err(RunError::Reserved { path: p() });
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&head[16..48]);
    let mut plan_digest = [0u8; 32];
    plan_digest.copy_from_slice(&head[48..80]);
    let mut key_id = [0u8; 32];
    key_id.copy_from_slice(&head[80..112]);
    let count = u32::from_le_bytes([head[112], head[113], head[114], head[115]]);
    Ok((
        ContainerHeader {
            kind: expected,
            fingerprint,
            plan_digest,
            key_id,
        },
        count,
    ))
}

pub(crate) fn check_fingerprints(
    fingerprint: &[u8; 32],
    plan_digest: &[u8; 32],
    session: &Session,
    path: &str,
) -> Result<(), RunError> {
    let fp = session.ctx.fingerprint();
    if fingerprint != fp {
        return Err(RunError::ParamsMismatch {
            path: path.to_string(),
            expected: hex(fp),
            found: hex(fingerprint),
        });
    }
    if plan_digest != &session.digest {
        return Err(RunError::PlanMismatch {
            path: path.to_string(),
            expected: hex(&session.digest),
            found: hex(plan_digest),
        });
    }
    Ok(())
}

/// Writes a container with `sections` to `w` as [`Container::to_bytes`] lays it out (header,
/// length-prefixed sections, SHA-256 of all of it), hashing as it goes.
pub fn write_container(
    w: &mut dyn std::io::Write,
    h: &ContainerHeader,
    sections: &[&dyn Section],
) -> std::io::Result<()> {
    let mut out = ContainerWriter::start(w, h, sections.len() as u32)?;
    for s in sections {
        out.section(*s)?;
    }
    out.finish()
}

/// A container written one section at a time, for sections made as the file is written:
/// [`ContainerWriter::start`] with the number of sections, [`ContainerWriter::section`] for each
/// in order, then [`ContainerWriter::finish`] (the checksum). The bytes are those of
/// [`write_container`] over the same sections.
pub struct ContainerWriter<'w> {
    w: &'w mut dyn std::io::Write,
    sum: Sha256,
    left: u32,
}

impl<'w> ContainerWriter<'w> {
    /// Writes the header of a container of `sections` sections.
    pub fn start(
        w: &'w mut dyn std::io::Write,
        h: &ContainerHeader,
        sections: u32,
    ) -> std::io::Result<Self> {
        let mut head = Vec::with_capacity(HEADER + 4);
        head.extend_from_slice(&FILE_MAGIC);
        head.extend_from_slice(&FILE_VERSION.to_le_bytes());
        head.push(h.kind as u8);
        head.push(0);
        head.extend_from_slice(&[0u8; 4]);
        head.extend_from_slice(&h.fingerprint);
        head.extend_from_slice(&h.plan_digest);
        head.extend_from_slice(&h.key_id);
        head.extend_from_slice(&sections.to_le_bytes());
        let mut out = ContainerWriter {
            w,
            sum: Sha256::new(),
            left: sections,
        };
        out.put(&head)?;
        Ok(out)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sum.update(b);
        self.w.write_all(b)
    }

    /// Writes the next section.
    pub fn section(&mut self, s: &dyn Section) -> std::io::Result<()> {
        if self.left == 0 {
            return Err(std::io::Error::other(
                "more sections than the container announced",
            ));
        }
        self.left -= 1;
        self.put(&s.len().to_le_bytes())?;
        let mut written = 0u64;
        s.emit(&mut |b| {
            written += b.len() as u64;
            self.sum.update(b);
            self.w.write_all(b)
        })?;
        if written != s.len() {
            return Err(std::io::Error::other(format!(
                "a section announced {} bytes and gave {written}",
                s.len()
            )));
        }
        Ok(())
    }

    /// Writes the checksum; every announced section must have been written.
    pub fn finish(self) -> std::io::Result<()> {
        if self.left != 0 {
            return Err(std::io::Error::other(format!(
                "{} of the container's sections were not written",
                self.left
            )));
        }
        let digest = self.sum.finalize();
        self.w.write_all(&digest)
    }
}

impl Container {
    /// Parses and checks a container ([`ContainerRef::from_bytes`]) and copies its sections.
    pub fn from_bytes(bytes: &[u8], expected: FileKind, path: &str) -> Result<Container, RunError> {
        let c = ContainerRef::from_bytes(bytes, expected, path)?;
        Ok(Container {
            kind: c.kind,
            fingerprint: c.fingerprint,
            plan_digest: c.plan_digest,
            key_id: c.key_id,
            sections: c.sections.iter().map(|s| s.to_vec()).collect(),
        })
    }

    /// Serializes (with the trailing checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        let body: usize = self.sections.iter().map(|s| s.len() + 8).sum();
        let mut out = Vec::with_capacity(HEADER + 4 + body + 32);
        let bytes: Vec<Bytes<'_>> = self.sections.iter().map(|s| Bytes(s)).collect();
        let sections: Vec<&dyn Section> = bytes.iter().map(|b| b as &dyn Section).collect();
        let header = ContainerHeader {
            kind: self.kind,
            fingerprint: self.fingerprint,
            plan_digest: self.plan_digest,
            key_id: self.key_id,
        };
        // Writing to a vector cannot fail.
        let _ = write_container(&mut out, &header, &sections);
        out
    }
}

impl<'a> ContainerRef<'a> {
    /// Parses and checks magic, version, kind, structure and checksum (not the fingerprints).
    pub fn from_bytes(
        bytes: &'a [u8],
        expected: FileKind,
        path: &str,
    ) -> Result<ContainerRef<'a>, RunError> {
        let p = || path.to_string();
        let (h, count) = parse_header(
            &bytes[..bytes.len().min(HEADER + 4)],
            bytes.len(),
            expected,
            path,
        )?;
        let trunc = |needed: usize| RunError::Truncated {
            path: p(),
            len: bytes.len(),
            needed,
        };
        let count = count as usize;
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
            sections.push(&bytes[pos..end]);
            pos = end;
        }
        if bytes.len() < pos + 32 {
            return Err(trunc(pos + 32));
        }
        if bytes.len() > pos + 32 || Sha256::digest(&bytes[..pos])[..] != bytes[pos..pos + 32] {
            return Err(RunError::Corrupt { path: p() });
        }
        Ok(ContainerRef {
            kind: expected,
            fingerprint: h.fingerprint,
            plan_digest: h.plan_digest,
            key_id: h.key_id,
            sections,
        })
    }

    /// Checks that the container belongs to `session`'s parameters and plan.
    pub fn check_plan(&self, session: &Session, path: &str) -> Result<(), RunError> {
        check_fingerprints(&self.fingerprint, &self.plan_digest, session, path)
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

// ------------------------------------------------------------------ session
