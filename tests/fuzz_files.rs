//! Mutation fuzzing of everything hecc reads back: the plan loader (text mutations, and
//! structured edits of its JSON fields resealed with a valid integrity digest, so they reach
//! the checks behind it) and every binary container (evaluation keys, secret key, encrypted
//! inputs and outputs), mutated inside their sections with the checksum recomputed so the
//! backend's deserializers see the damage. Every read must return `Ok` or an error, never
//! panic or abort, and a container edit must never be accepted silently as another valid file
//! of different content.
//!
//! The corpus is built from a tiny convolutional model (`tests/fixtures/front/ok_tiny.yaml`)
//! at small insecure parameters, so each case reads a few megabytes.
//! `HECC_FUZZ_CASES=N` runs N cases per target (default 256, a few seconds in all); e.g.
//! `HECC_FUZZ_CASES=5000 cargo test --release --test fuzz_files` for a longer run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test and example code may fail loudly

use hecc::compile::{compile, CompileOptions};
use hecc::run::*;
use hecc_passes::params::Security;
use hecc_passes::plan::Plan;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn cases() -> u32 {
    std::env::var("HECC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

struct Corpus {
    dir: PathBuf,
    plan_text: String,
    session: Session,
    eval_keys: Vec<u8>,
    secret_key: Vec<u8>,
    inputs: Vec<u8>,
    outputs: Vec<u8>,
}

static CORPUS: OnceLock<Corpus> = OnceLock::new();

fn corpus() -> &'static Corpus {
    CORPUS.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // One directory per process; those of processes that have ended are removed.
        let tmp = std::env::temp_dir();
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("hecc-fuzz-files-") {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("hecc-fuzz-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let opts = CompileOptions {
            security: Security::InsecureNone,
            min_log_n: 12,
            layout: hecc::compile::LayoutChoice::Batch,
            batch: Some(2),
            ..Default::default()
        };
        let c = compile(&root.join("tests/fixtures/front/ok_tiny.yaml"), &opts).unwrap();
        let plan_text = c.plan.to_json().unwrap();
        let session = Session::with_security(c.plan, true).unwrap();
        let keys = generate_keys(&session).unwrap();
        let images = Images {
            count: 2,
            per_image: 36,
            data: (0..72).map(|k| f64::from(k % 7) / 7.0).collect(),
        };
        let mut enc = ClientEncryptor::secret(&session, &keys.secret).unwrap();
        let x = encrypt_images(&session, &images, &mut enc).unwrap();
        let inputs = inputs_bytes(&session, &x).unwrap();
        let (o, _) = run_inputs(
            &session,
            x,
            &keys.eval,
            &RunOptions {
                progress: None,
                memory_limit: None,
                ..Default::default()
            },
        )
        .unwrap();
        Corpus {
            eval_keys: eval_keys_bytes(&session, &keys.eval),
            secret_key: secret_key_bytes(&session, &keys.secret),
            inputs,
            outputs: outputs_bytes(&o).unwrap(),
            dir,
            plan_text,
            session,
        }
    })
}

/// Writes `bytes` to a file of this test thread's own and returns its path.
fn file(tag: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("{tag}-{:?}", std::thread::current().id()).replace(['(', ')'], "");
    let p = corpus().dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// One edit of a byte string.
#[derive(Clone, Debug)]
enum Edit {
    Flip {
        at: usize,
        mask: u8,
    },
    Set {
        at: usize,
        value: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Duplicate {
        at: usize,
        len: usize,
    },
    /// Overwrites 8 bytes with a little-endian integer (a length, count or limb).
    Word {
        at: usize,
        value: u64,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let big = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u32::MAX as u64),
        Just(1 << 40),
        Just(u64::MAX),
        any::<u64>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Edit::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Edit::Set { at, value }),
        any::<usize>().prop_map(|at| Edit::Truncate { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Edit::Duplicate { at, len }),
        (any::<usize>(), big).prop_map(|(at, value)| Edit::Word { at, value }),
    ]
}

/// Applies `e` to `b`, biased towards the first 256 bytes (headers) half of the time.
fn apply(b: &mut Vec<u8>, e: &Edit) {
    if b.is_empty() {
        return;
    }
    let pos = |at: usize| {
        if at.is_multiple_of(2) {
            (at / 2) % b.len().min(256)
        } else {
            (at / 2) % b.len()
        }
    };
    match e {
        Edit::Flip { at, mask } => {
            let i = pos(*at);
            b[i] ^= mask;
        }
        Edit::Set { at, value } => {
            let i = pos(*at);
            b[i] = *value;
        }
        Edit::Truncate { at } => {
            let i = pos(*at);
            b.truncate(i);
        }
        Edit::Insert { at, bytes } => {
            let i = pos(*at);
            b.splice(i..i, bytes.iter().copied());
        }
        Edit::Duplicate { at, len } => {
            let i = pos(*at);
            let end = (i + len).min(b.len());
            let piece = b[i..end].to_vec();
            b.splice(i..i, piece);
        }
        Edit::Word { at, value } => {
            let i = pos(*at).min(b.len().saturating_sub(8));
            let n = (b.len() - i).min(8);
            b[i..i + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
    }
}

/// Mutates section `section` of a container (or its header fields) and reseals the checksum.
fn mutate_container(bytes: &[u8], kind: FileKind, section: usize, edits: &[Edit]) -> Vec<u8> {
    let mut c = Container::from_bytes(bytes, kind, "corpus").unwrap();
    let k = section % (c.sections.len() + 1);
    if k == c.sections.len() {
        // The header fields: fingerprint, plan digest, key id.
        let mut h = [c.fingerprint, c.plan_digest, c.key_id].concat();
        for e in edits {
            if let Edit::Flip { at, mask } = e {
                let i = at % h.len();
                h[i] ^= mask;
            }
        }
        c.fingerprint.copy_from_slice(&h[..32]);
        c.plan_digest.copy_from_slice(&h[32..64]);
        c.key_id.copy_from_slice(&h[64..]);
    } else {
        for e in edits {
            apply(&mut c.sections[k], e);
        }
    }
    c.to_bytes()
}

/// Reads a (mutated) container of `kind` through the reader a user's command would use.
fn read(kind: FileKind, path: &Path) -> Result<(), String> {
    let s = &corpus().session;
    let r = match kind {
        FileKind::EvalKeys => read_eval_keys(s, path).map(|_| ()),
        FileKind::SecretKey => read_secret_key(&s.ctx, &s.digest, path, false).map(|_| ()),
        FileKind::Inputs => read_inputs(s, path).map(|_| ()),
        FileKind::Outputs => read_outputs(path).map(|_| ()),
    };
    r.map_err(|e| e.to_string())
}

fn original(kind: FileKind) -> &'static [u8] {
    let c = corpus();
    match kind {
        FileKind::EvalKeys => &c.eval_keys,
        FileKind::SecretKey => &c.secret_key,
        FileKind::Inputs => &c.inputs,
        FileKind::Outputs => &c.outputs,
    }
}

fn kind() -> impl Strategy<Value = FileKind> {
    prop_oneof![
        Just(FileKind::EvalKeys),
        Just(FileKind::SecretKey),
        Just(FileKind::Inputs),
        Just(FileKind::Outputs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Raw byte damage anywhere in a container: always refused (the checksum covers all).
    #[test]
    fn damaged_containers_are_refused(kind in kind(), edits in prop::collection::vec(edit(), 1..4)) {
        let mut b = original(kind).to_vec();
        for e in &edits {
            apply(&mut b, e);
        }
        prop_assume!(b != original(kind));
        let p = file("raw", &b);
        prop_assert!(read(kind, &p).is_err(), "a damaged {} file was accepted", kind.name());
    }

    /// Damage inside a section with a recomputed checksum: what the deserializers and the
    /// metadata checks behind the checksum see. Never a panic; an accepted edit must not be a
    /// change of the content that matters (keys and ciphertexts are checked by their own
    /// readers; metadata by the plan and request checks).
    #[test]
    fn resealed_containers_never_panic(
        kind in kind(),
        section in any::<usize>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let b = mutate_container(original(kind), kind, section, &edits);
        let p = file("sealed", &b);
        let _ = read(kind, &p);
    }

    /// Text damage to a plan: parse errors, never a panic.
    #[test]
    fn damaged_plans_are_refused(edits in prop::collection::vec(edit(), 1..4)) {
        let mut b = corpus().plan_text.clone().into_bytes();
        for e in &edits {
            apply(&mut b, e);
        }
        prop_assume!(b != corpus().plan_text.as_bytes());
        let text = String::from_utf8_lossy(&b);
        // Whitespace-only edits leave the same plan; any other edit fails the digest.
        if let Ok(p) = Plan::from_json(&text) {
            prop_assert_eq!(p.digest().unwrap(), corpus().session.digest);
        }
    }

    /// Byte edits of the plan's circuit in its binary form, resealed with a valid digest: the
    /// decoder and, for what still decodes, the session's checks. Never a panic.
    #[test]
    fn resealed_circuit_byte_edits_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let plan = &corpus().session.plan;
        let mut bytes = hecc_ir::he::binary::encode(&plan.circuit);
        for (at, b, kind) in edits {
            let i = at % bytes.len().max(1);
            match kind {
                0 if !bytes.is_empty() => bytes[i] ^= b | 1,
                1 if !bytes.is_empty() => { bytes.remove(i); }
                _ => bytes.insert(i.min(bytes.len()), b),
            }
        }
        if let Ok(m) = hecc_ir::he::binary::decode(&bytes) {
            let mut p = plan.clone();
            p.circuit = m;
            if let Ok(text) = p.to_json() {
                if let Ok(p) = Plan::from_json(&text) {
                    let _ = Session::with_security(p, true);
                }
            }
        }
    }

    /// Structured edits of a plan's fields, resealed with a valid digest: they reach the
    /// security, limit, circuit and prime checks. Never a panic.
    #[test]
    fn resealed_plan_edits_never_panic(
        path in prop::collection::vec(any::<usize>(), 1..5),
        value in prop_oneof![
            Just(serde_json::json!(null)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1u64 << 40)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!(1e308)),
            Just(serde_json::json!("")),
            Just(serde_json::json!("InsecureNone")),
            Just(serde_json::json!([])),
            Just(serde_json::json!([0.0, 1e30])),
        ],
    ) {
        let mut v: serde_json::Value = serde_json::from_str(&corpus().plan_text).unwrap();
        // Walk to a random field or element (as a JSON pointer) and replace it.
        let mut ptr = String::new();
        let mut node = &v;
        for k in &path {
            let step = match node {
                serde_json::Value::Object(m) if !m.is_empty() => {
                    m.iter().nth(k % m.len()).map(|(key, n)| (key.replace('~', "~0").replace('/', "~1"), n))
                }
                serde_json::Value::Array(a) if !a.is_empty() => {
                    let i = k % a.len();
                    Some((i.to_string(), &a[i]))
                }
                _ => None,
            };
            match step {
                Some((key, n)) => {
                    ptr.push('/');
                    ptr.push_str(&key);
                    node = n;
                }
                None => break,
            }
        }
        if let Some(n) = v.pointer_mut(&ptr) {
            *n = value;
        }
        if let Ok(plan) = serde_json::from_value::<Plan>(v) {
            if let Ok(text) = plan.to_json() {
                if let Ok(p) = Plan::from_json(&text) {
                    let _ = Session::with_security(p, true);
                }
            }
        }
    }
}
