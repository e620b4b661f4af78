//! Versioned binary serialization of parameters, keys, plaintexts and ciphertexts.
//!
//! Contract: every object starts with a 48-byte header: magic `HECCCKKS`,
//! format version (u16 LE, currently [`FORMAT_VERSION`]), object kind (u8),
//! a zero byte, four zero bytes, and the 32-byte SHA-256 fingerprint of the
//! parameters ([`CkksParameters::fingerprint`]). All integers are little
//! endian. A polynomial is `ntt: u8, q_limbs: u32, p_limbs: u32` followed by
//! its words. Uniform halves (`a` of keys, `c1` of fresh symmetric
//! ciphertexts) are stored as their 32-byte seed. Reading checks the magic,
//! version, kind, fingerprint, exact length, shapes, and that every limb
//! value is below its modulus, and reports each failure as a distinct
//! [`CkksError`].

use std::collections::BTreeMap;

use super::boot::{BootstrapKeys, Bootstrapper, EncapsulationKeys};
use super::context::Context;
use super::encoding::Plaintext;
use super::encrypt::Ciphertext;
use super::error::{CkksError, Result};
use super::keys::{GaloisKeys, KeySwitchKey, PublicKey, RelinKey, SecretKey};
use super::params::{CkksParameters, SecretDistribution};
use super::poly::RnsPoly;

/// Magic bytes opening every serialized object.
pub const MAGIC: [u8; 8] = *b"HECCCKKS";
/// Current format version.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 48;

/// Kind of a serialized object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// [`CkksParameters`].
    Parameters = 1,
    /// [`SecretKey`].
    SecretKey = 2,
    /// [`PublicKey`].
    PublicKey = 3,
    /// [`RelinKey`].
    RelinKey = 4,
    /// [`GaloisKeys`].
    GaloisKeys = 5,
    /// [`Plaintext`].
    Plaintext = 6,
    /// [`Ciphertext`].
    Ciphertext = 7,
    /// [`BootstrapKeys`].
    BootstrapKeys = 8,
    /// [`EncapsulationKeys`].
    EncapsulationKeys = 9,
}

impl ObjectKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Parameters,
            2 => Self::SecretKey,
            3 => Self::PublicKey,
            4 => Self::RelinKey,
            5 => Self::GaloisKeys,
            6 => Self::Plaintext,
            7 => Self::Ciphertext,
            8 => Self::BootstrapKeys,
            9 => Self::EncapsulationKeys,
            _ => return None,
        })
    }
    fn name(v: u8) -> String {
        match Self::from_u8(v) {
            Some(k) => format!("{k:?}"),
            None => format!("unknown kind {v}"),
        }
    }
}

fn hex8(f: &[u8; 32]) -> String {
    f[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn write_header(out: &mut Vec<u8>, kind: ObjectKind, fingerprint: &[u8; 32]) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(fingerprint);
}

/// Where a [`Reader`] takes its bytes from: a slice held whole, or a stream of known length
/// read piece by piece into one buffer (a key file of gigabytes is read without a buffer of
/// its size).
enum Source<'a> {
    Slice(&'a [u8]),
    Stream {
        read: &'a mut dyn std::io::Read,
        len: usize,
        buf: Vec<u8>,
    },
}

struct Reader<'a> {
    src: Source<'a>,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader {
            src: Source::Slice(bytes),
            pos: 0,
        }
    }
    fn stream(read: &'a mut dyn std::io::Read, len: usize) -> Reader<'a> {
        Reader {
            src: Source::Stream {
                read,
                len,
                buf: Vec::new(),
            },
            pos: 0,
        }
    }
    fn len(&self) -> usize {
        match &self.src {
            Source::Slice(b) => b.len(),
            Source::Stream { len, .. } => *len,
        }
    }
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let avail = self.len() - self.pos;
        if avail < n {
            return Err(CkksError::Truncated {
                offset: self.pos,
                needed: n - avail,
            });
        }
        let at = self.pos;
        self.pos += n;
        match &mut self.src {
            Source::Slice(b) => Ok(&b[at..at + n]),
            Source::Stream { read, buf, .. } => {
                buf.resize(n, 0);
                read.read_exact(buf).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => CkksError::Truncated {
                        offset: at,
                        needed: n,
                    },
                    _ => CkksError::Malformed(format!("reading at byte {at}: {e}")),
                })?;
                Ok(&buf[..])
            }
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn seed(&mut self) -> Result<[u8; 32]> {
        let mut s = [0u8; 32];
        s.copy_from_slice(self.take(32)?);
        Ok(s)
    }
    fn finish(&self) -> Result<()> {
        if self.pos != self.len() {
            return Err(CkksError::Malformed(format!(
                "{} trailing bytes",
                self.len() - self.pos
            )));
        }
        Ok(())
    }
}

/// Reads and checks a header; returns a reader positioned after it and the
/// fingerprint found.
fn read_header(bytes: &[u8], kind: ObjectKind) -> Result<(Reader<'_>, [u8; 32])> {
    let mut r = Reader::new(bytes);
    let fp = read_header_from(&mut r, kind)?;
    Ok((r, fp))
}

/// Reads and checks a header from `r`; returns the fingerprint found.
fn read_header_from(r: &mut Reader<'_>, kind: ObjectKind) -> Result<[u8; 32]> {
    let magic = r.take(8)?;
    if magic != MAGIC {
        return Err(CkksError::BadMagic);
    }
    let vb = r.take(2)?;
    let version = u16::from_le_bytes([vb[0], vb[1]]);
    if version != FORMAT_VERSION {
        return Err(CkksError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let k = r.u8()?;
    if k != kind as u8 {
        return Err(CkksError::WrongKind {
            expected: format!("{kind:?}"),
            found: ObjectKind::name(k),
        });
    }
    let reserved = r.take(5)?;
    if reserved.iter().any(|&b| b != 0) {
        return Err(CkksError::Malformed("nonzero reserved header bytes".into()));
    }
    r.seed()
}

fn read_header_ctx<'a>(bytes: &'a [u8], kind: ObjectKind, ctx: &Context) -> Result<Reader<'a>> {
    let mut r = Reader::new(bytes);
    check_header_ctx(&mut r, kind, ctx)?;
    Ok(r)
}

/// Reads a header from `r` and checks its kind and that it was made for `ctx`'s parameters.
fn check_header_ctx(r: &mut Reader<'_>, kind: ObjectKind, ctx: &Context) -> Result<()> {
    let fp = read_header_from(r, kind)?;
    if &fp != ctx.fingerprint() {
        return Err(CkksError::FingerprintMismatch {
            expected: hex8(ctx.fingerprint()),
            found: hex8(&fp),
        });
    }
    Ok(())
}

fn write_poly(out: &mut Vec<u8>, p: &RnsPoly) {
    out.push(p.ntt as u8);
    out.extend_from_slice(&(p.q_limbs as u32).to_le_bytes());
    out.extend_from_slice(&(p.p_limbs as u32).to_le_bytes());
    out.reserve(p.data.len() * 8);
    for w in &p.data {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Expected shape of a polynomial being read.
enum Shape {
    /// Exactly these limb counts.
    Exact(usize, usize),
    /// Any ciphertext level (1..=L+1 limbs), no special limbs.
    AnyLevel,
    /// A key-switching key's polynomial at any level: 1..=L+1 ciphertext limbs and all
    /// special limbs.
    KeyAnyLevel,
}

fn read_poly(r: &mut Reader<'_>, ctx: &Context, shape: Shape) -> Result<RnsPoly> {
    let ntt = match r.u8()? {
        0 => false,
        1 => true,
        v => return Err(CkksError::Malformed(format!("NTT flag {v}"))),
    };
    let ql = r.u32()? as usize;
    let pl = r.u32()? as usize;
    let ok = match shape {
        Shape::Exact(a, b) => ql == a && pl == b,
        Shape::AnyLevel => (1..=ctx.q_count()).contains(&ql) && pl == 0,
        Shape::KeyAnyLevel => (1..=ctx.q_count()).contains(&ql) && pl == ctx.p_count(),
    };
    if !ok || pl > ctx.p_count() {
        return Err(CkksError::Malformed(format!(
            "polynomial with {ql} ciphertext and {pl} special limbs does not fit the parameters"
        )));
    }
    if !ntt {
        return Err(CkksError::Malformed(
            "stored polynomials must be in NTT form".into(),
        ));
    }
    let n = ctx.n();
    let bytes = r.take((ql + pl) * n * 8)?;
    let mut data = Vec::with_capacity((ql + pl) * n);
    for (i, limb) in bytes.chunks_exact(n * 8).enumerate() {
        let q = ctx.moduli()[ctx.limb_modulus(ql, i)].value();
        for w in limb.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            let v = u64::from_le_bytes(a);
            if v >= q {
                return Err(CkksError::LimbOutOfRange {
                    limb: i,
                    value: v,
                    modulus: q,
                });
            }
            data.push(v);
        }
    }
    Ok(RnsPoly {
        data,
        q_limbs: ql,
        p_limbs: pl,
        ntt,
    })
}

fn write_ksk(out: &mut Vec<u8>, k: &KeySwitchKey) {
    out.extend_from_slice(&(k.b.len() as u32).to_le_bytes());
    for (b, s) in k.b.iter().zip(&k.seeds) {
        write_poly(out, b);
        out.extend_from_slice(s);
    }
}

/// Reads [`write_ksk`]'s form: a key over the whole chain or one made for lower levels, with
/// one digit per digit of its top level (every polynomial over the same primes). Keys over the
/// whole chain written before keys could stop lower have `dnum` digits even where the last
/// ones cover no prime (`dnum` not dividing the primes evenly); those empty digits are dropped.
fn read_ksk(r: &mut Reader<'_>, ctx: &Context) -> Result<KeySwitchKey> {
    let d = r.u32()? as usize;
    let dnum = ctx.params().dnum();
    if !(1..=dnum).contains(&d) {
        return Err(CkksError::Malformed(format!(
            "key has {d} digits, parameters have dnum = {dnum}"
        )));
    }
    let (nq, np) = (ctx.q_count(), ctx.p_count());
    let mut k = KeySwitchKey {
        b: Vec::with_capacity(d),
        a: Vec::with_capacity(d),
        seeds: Vec::with_capacity(d),
    };
    // The first polynomial fixes the key's level; its digit count must match.
    let mut ql = 0;
    let mut need = 0;
    for j in 0..d {
        let b = if j == 0 {
            let b = read_poly(r, ctx, Shape::KeyAnyLevel)?;
            ql = b.q_limbs;
            need = ql.div_ceil(ctx.params().digit_size());
            if d != need && !(ql == nq && d == dnum) {
                return Err(CkksError::Malformed(format!(
                    "key over {ql} ciphertext primes has {d} digits, its level has {need}"
                )));
            }
            b
        } else {
            read_poly(r, ctx, Shape::Exact(ql, np))?
        };
        let seed = r.seed()?;
        if j < need {
            k.a.push(RnsPoly::uniform_from_seed(ctx, &seed, ql, np));
            k.b.push(b);
            k.seeds.push(seed);
        }
    }
    Ok(k)
}

impl CkksParameters {
    /// Serializes the parameters (header + canonical encoding + security level).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::Parameters, &self.fingerprint());
        out.extend_from_slice(&self.canonical_encoding());
        out.push(self.security_code());
        out
    }

    /// Reads parameters, re-validating them (including the security check
    /// they were created with) and checking the header fingerprint.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (mut r, fp) = read_header(bytes, ObjectKind::Parameters)?;
        let tag = r.take(16)?;
        if tag != b"hecc-ckks-params" {
            return Err(CkksError::Malformed("bad parameter tag".into()));
        }
        let log_n = r.u32()?;
        let nq = r.u32()? as usize;
        if nq > 256 {
            return Err(CkksError::Malformed(format!("{nq} primes")));
        }
        let q = (0..nq).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        let np = r.u32()? as usize;
        if np > 256 {
            return Err(CkksError::Malformed(format!("{np} special primes")));
        }
        let p = (0..np).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        let dnum = r.u32()? as usize;
        let sd = r.u8()?;
        let h = r.u32()?;
        let secret = match sd {
            0 => SecretDistribution::UniformTernary,
            1 => SecretDistribution::FixedHammingWeight(h),
            v => return Err(CkksError::Malformed(format!("secret distribution {v}"))),
        };
        let security = Self::security_from_code(r.u8()?)?;
        r.finish()?;
        let params = Self::from_primes(log_n, q, p, dnum, secret, security)?;
        let own = params.fingerprint();
        if own != fp {
            return Err(CkksError::FingerprintMismatch {
                expected: hex8(&own),
                found: hex8(&fp),
            });
        }
        Ok(params)
    }
}

impl SecretKey {
    /// Serializes the secret key.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::SecretKey, ctx.fingerprint());
        write_poly(&mut out, &self.s);
        out
    }
    /// Reads a secret key made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::SecretKey, ctx)?;
        let s = read_poly(&mut r, ctx, Shape::Exact(ctx.q_count(), ctx.p_count()))?;
        r.finish()?;
        Ok(Self { s })
    }
}

impl PublicKey {
    /// Serializes the public key (`b` and the seed of `a`).
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::PublicKey, ctx.fingerprint());
        write_poly(&mut out, &self.b);
        out.extend_from_slice(&self.seed);
        out
    }
    /// Reads a public key made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::PublicKey, ctx)?;
        let (nq, np) = (ctx.q_count(), ctx.p_count());
        let b = read_poly(&mut r, ctx, Shape::Exact(nq, np))?;
        let seed = r.seed()?;
        r.finish()?;
        let a = RnsPoly::uniform_from_seed(ctx, &seed, nq, np);
        Ok(Self { b, a, seed })
    }
}

impl RelinKey {
    /// Serializes the relinearization key.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::RelinKey, ctx.fingerprint());
        write_ksk(&mut out, &self.key);
        out
    }
    /// Reads a relinearization key made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::RelinKey, ctx)?;
        let key = read_ksk(&mut r, ctx)?;
        r.finish()?;
        Ok(Self { key })
    }
}

impl GaloisKeys {
    /// Serializes all Galois keys.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::GaloisKeys, ctx.fingerprint());
        write_galois(&mut out, self);
        out
    }
    /// The length of [`Self::to_bytes`], without building it.
    pub fn serialized_len(&self, ctx: &Context) -> u64 {
        let mut head = Vec::new();
        write_header(&mut head, ObjectKind::GaloisKeys, ctx.fingerprint());
        let keys: u64 = self
            .keys
            .values()
            .map(|k| {
                let digits: u64 =
                    k.b.iter()
                        .map(|b| 1 + 4 + 4 + 8 * b.data.len() as u64 + 32)
                        .sum();
                8 + 4 + digits
            })
            .sum();
        head.len() as u64 + 4 + keys
    }

    /// [`Self::to_bytes`]'s bytes given to `sink` one key at a time (a key file of gigabytes
    /// is written without one buffer of its size).
    pub fn write_pieces<E>(
        &self,
        ctx: &Context,
        sink: &mut dyn FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::GaloisKeys, ctx.fingerprint());
        sink(&out)?;
        galois_pieces(self, sink)
    }

    /// Reads Galois keys made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::GaloisKeys, ctx)?;
        let keys = read_galois(&mut r, ctx)?;
        r.finish()?;
        Ok(keys)
    }

    /// [`Self::from_bytes`] on the next `len` bytes of `read`, taken one polynomial at a time
    /// (the largest buffer is one polynomial, not the serialized keys). Reads exactly `len`
    /// bytes unless an error stops it.
    pub fn read_from(ctx: &Context, read: &mut dyn std::io::Read, len: u64) -> Result<Self> {
        let len = usize::try_from(len)
            .map_err(|_| CkksError::Malformed(format!("{len} bytes of Galois keys")))?;
        let mut r = Reader::stream(read, len);
        check_header_ctx(&mut r, ObjectKind::GaloisKeys, ctx)?;
        let keys = read_galois(&mut r, ctx)?;
        r.finish()?;
        Ok(keys)
    }
}

/// A Galois key set: count, then (element, key) pairs in element order.
fn write_galois(out: &mut Vec<u8>, gk: &GaloisKeys) {
    let _ = galois_pieces(gk, &mut |b: &[u8]| -> std::result::Result<(), ()> {
        out.extend_from_slice(b);
        Ok(())
    });
}

/// [`write_galois`]'s bytes given to `sink` in pieces: the count, then one piece per key.
fn galois_pieces<E>(
    gk: &GaloisKeys,
    sink: &mut dyn FnMut(&[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    sink(&(gk.keys.len() as u32).to_le_bytes())?;
    let mut out = Vec::new();
    for (g, k) in &gk.keys {
        out.clear();
        out.extend_from_slice(&g.to_le_bytes());
        write_ksk(&mut out, k);
        sink(&out)?;
    }
    Ok(())
}

/// Reads [`write_galois`]'s form, refusing invalid or repeated elements.
fn read_galois(r: &mut Reader<'_>, ctx: &Context) -> Result<GaloisKeys> {
    let count = r.u32()? as usize;
    let two_n = 2 * ctx.n() as u64;
    let mut keys = BTreeMap::new();
    for _ in 0..count {
        let g = r.u64()?;
        if g % 2 == 0 || g >= two_n || g == 1 {
            return Err(CkksError::Malformed(format!("invalid Galois element {g}")));
        }
        let k = read_ksk(r, ctx)?;
        if keys.insert(g, k).is_some() {
            return Err(CkksError::Malformed(format!(
                "duplicate Galois element {g}"
            )));
        }
    }
    Ok(GaloisKeys { keys })
}

fn read_scale(r: &mut Reader<'_>) -> Result<f64> {
    let s = f64::from_bits(r.u64()?);
    super::encoding::check_scale(s).map_err(|_| CkksError::Malformed(format!("scale {s}")))?;
    Ok(s)
}

impl Plaintext {
    /// Serializes the plaintext (scale + polynomial).
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::Plaintext, ctx.fingerprint());
        out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
        write_poly(&mut out, &self.poly);
        out
    }
    /// Reads a plaintext made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::Plaintext, ctx)?;
        let scale = read_scale(&mut r)?;
        let poly = read_poly(&mut r, ctx, Shape::AnyLevel)?;
        r.finish()?;
        Ok(Self { poly, scale })
    }
}

impl Ciphertext {
    /// Serializes the ciphertext; a fresh symmetric encryption stores the
    /// seed of `c1` instead of `c1`.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::Ciphertext, ctx.fingerprint());
        out.extend_from_slice(&self.scale.to_bits().to_le_bytes());
        out.push(self.polys.len() as u8);
        match (&self.seed, self.polys.len()) {
            (Some(seed), 2) => {
                out.push(1);
                write_poly(&mut out, &self.polys[0]);
                out.extend_from_slice(seed);
            }
            _ => {
                out.push(0);
                for p in &self.polys {
                    write_poly(&mut out, p);
                }
            }
        }
        out
    }
    /// Reads a ciphertext made for `ctx`'s parameters.
    pub fn from_bytes(ctx: &Context, bytes: &[u8]) -> Result<Self> {
        let mut r = read_header_ctx(bytes, ObjectKind::Ciphertext, ctx)?;
        let scale = read_scale(&mut r)?;
        let size = r.u8()? as usize;
        if !(2..=3).contains(&size) {
            return Err(CkksError::Malformed(format!("ciphertext of size {size}")));
        }
        let seeded = r.u8()?;
        let (polys, seed) = match seeded {
            1 if size == 2 => {
                let c0 = read_poly(&mut r, ctx, Shape::AnyLevel)?;
                let seed = r.seed()?;
                let c1 = RnsPoly::uniform_from_seed(ctx, &seed, c0.q_limbs, 0);
                (vec![c0, c1], Some(seed))
            }
            0 => {
                let c0 = read_poly(&mut r, ctx, Shape::AnyLevel)?;
                let ql = c0.q_limbs;
                let mut v = vec![c0];
                for _ in 1..size {
                    v.push(read_poly(&mut r, ctx, Shape::Exact(ql, 0))?);
                }
                (v, None)
            }
            v => {
                return Err(CkksError::Malformed(format!(
                    "seeded flag {v} for size {size}"
                )))
            }
        };
        r.finish()?;
        Ok(Self { polys, scale, seed })
    }
}

impl BootstrapKeys {
    /// Serializes the bootstrapping keys (relinearization, Galois keys and
    /// the two encapsulation keys; uniform halves as seeds).
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::BootstrapKeys, ctx.fingerprint());
        write_ksk(&mut out, &self.relin.key);
        write_galois(&mut out, &self.galois);
        write_ksk(&mut out, &self.to_sparse);
        write_ksk(&mut out, &self.from_sparse);
        out
    }
}

impl EncapsulationKeys {
    /// Serializes the two encapsulation keys (uniform halves as seeds).
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, ObjectKind::EncapsulationKeys, ctx.fingerprint());
        write_ksk(&mut out, &self.to_sparse);
        write_ksk(&mut out, &self.from_sparse);
        out
    }
}

impl Bootstrapper {
    /// Reads encapsulation keys made for this bootstrapper's parameters.
    pub fn encapsulation_keys_from_bytes(&self, bytes: &[u8]) -> Result<EncapsulationKeys> {
        let ctx = self.context();
        let mut r = read_header_ctx(bytes, ObjectKind::EncapsulationKeys, ctx)?;
        let to_sparse = read_ksk(&mut r, self.encapsulation_context())?;
        let from_sparse = read_ksk(&mut r, ctx)?;
        r.finish()?;
        to_sparse.check_in(self.encapsulation_context())?;
        from_sparse.check_in(ctx)?;
        from_sparse.check_serves(ctx.max_level(), 0)?;
        Ok(EncapsulationKeys {
            to_sparse,
            from_sparse,
        })
    }

    /// Reads bootstrapping keys made for this bootstrapper's parameters and
    /// checks that every Galois key it needs is present.
    pub fn keys_from_bytes(&self, bytes: &[u8]) -> Result<BootstrapKeys> {
        let ctx = self.context();
        let mut r = read_header_ctx(bytes, ObjectKind::BootstrapKeys, ctx)?;
        let relin = RelinKey {
            key: read_ksk(&mut r, ctx)?,
        };
        let galois = read_galois(&mut r, ctx)?;
        let to_sparse = read_ksk(&mut r, self.encapsulation_context())?;
        let from_sparse = read_ksk(&mut r, ctx)?;
        r.finish()?;
        let keys = BootstrapKeys {
            relin,
            galois,
            to_sparse,
            from_sparse,
        };
        self.check_keys(&keys)?;
        Ok(keys)
    }
}
