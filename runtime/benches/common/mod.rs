//! Shared fixtures of the CKKS benchmarks: the parameter sets, the list of
//! timed operations and one function that runs an operation once.
//!
//! Contract: used by the criterion bench `benches/ckks.rs` and by the example
//! `examples/ckks_bench.rs` (which includes this file by path), so both time
//! exactly the same code. The operation names match the peer scripts in
//! `benches/peers/` (SEAL, OpenFHE), which print the same names.
//! Every operation runs at the top level (all ciphertext primes), with
//! scale 2^40, on ciphertexts whose slots hold values in [-1, 1].

#![allow(dead_code)] // each includer uses a different subset

use std::hint::black_box;
use std::sync::Arc;

use hecc_runtime::ckks::{
    Ciphertext, CkksError, CkksParameters, Context, Decryptor, Encoder, Encryptor, Evaluator,
    GaloisKeys, KeyGenerator, Plaintext, RelinKey,
};

/// log2 of the scale of every encoding.
pub const SCALE_BITS: u32 = 40;
/// Rotation steps of the hoisted-rotation benchmark (8 rotations).
pub const HOIST_STEPS: [i64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// Sizes of the multiply-accumulate benchmarks (ciphertext, constant) pairs.
pub const MAC_SIZES: [usize; 2] = [25, 845];
/// Distinct ciphertexts feeding a multiply-accumulate; the pairs cycle through
/// them (845 distinct ciphertexts at N=2^15 would need 7.5 GB).
pub const MAC_POOL: usize = 16;

/// One benchmarked parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    /// log2 of the ring degree N.
    pub log_n: u32,
    /// Bit size of q0.
    pub q0_bits: u32,
    /// Bit sizes of the scale primes q1..q(L-1).
    pub scale_bits: Vec<u32>,
    /// Bit sizes of the special (key-switching) primes.
    pub special_bits: Vec<u32>,
    /// Number of key-switching digits (`None`: the library default,
    /// `ceil(limbs / special primes)`).
    pub dnum: Option<usize>,
}

impl BenchConfig {
    fn new(log_n: u32, n_scale: usize, special_bits: Vec<u32>, dnum: Option<usize>) -> Self {
        Self {
            log_n,
            q0_bits: 60,
            scale_bits: vec![40; n_scale],
            special_bits,
            dnum,
        }
    }

    /// Number of ciphertext primes (limbs of a fresh ciphertext).
    pub fn limbs(&self) -> usize {
        1 + self.scale_bits.len()
    }

    /// The ID prefix shared with the peer scripts, e.g. `N=2^14/L=8`.
    pub fn id(&self) -> String {
        format!("N=2^{}/L={}", self.log_n, self.limbs())
    }

    /// Bit sizes of the ciphertext primes, q0 first.
    pub fn q_bits(&self) -> Vec<u32> {
        let mut v = vec![self.q0_bits];
        v.extend(&self.scale_bits);
        v
    }
}

/// The three parameter sets of the issue: N=2^13 [60,40,40 | 60],
/// N=2^14 [60, 40 x 7 | 60], N=2^15 [60, 40 x 16 | 60 x 3].
///
/// At N=2^15 the key-switching digits hold 4 primes (dnum = 5: 180, 160,
/// 160, 160 and 40 bits against P = 180 bits), the largest digits the special
/// modulus allows; fewer digits mean fewer ModUp NTTs and key products than
/// the default of 3 primes per digit (dnum = 6). Q and P, hence log QP = 880
/// (within the 881-bit 128-bit bound for N=2^15), are unchanged.
pub fn all_configs() -> Vec<BenchConfig> {
    vec![
        BenchConfig::new(13, 2, vec![60], None),
        BenchConfig::new(14, 7, vec![60], None),
        BenchConfig::new(15, 16, vec![60, 60, 60], Some(5)),
    ]
}

/// The configs to run: all, or those whose log N is listed in the
/// environment variable `HECC_BENCH_LOGN` (e.g. `13,14`).
pub fn selected_configs() -> Vec<BenchConfig> {
    let want: Vec<u32> = std::env::var("HECC_BENCH_LOGN")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    all_configs()
        .into_iter()
        .filter(|c| want.is_empty() || want.contains(&c.log_n))
        .collect()
}

/// The timed operations, in table order (names shared with the peer scripts).
pub const OPS: &[&str] = &[
    "ntt_forward",
    "encode",
    "encrypt",
    "decrypt",
    "decode",
    "decrypt_decode",
    "add",
    "mul_plain",
    "mul_scalar",
    "mul",
    "relinearize",
    "mul_relin",
    "rescale",
    "mul_relin_rescale",
    "rotate",
    "rotate_hoisted8",
    "mac25",
    "mac845",
];

/// Whether an operation is slow enough that criterion should use flat sampling.
pub fn is_heavy(op: &str, log_n: u32) -> bool {
    log_n >= 15
        || matches!(
            op,
            "rotate_hoisted8"
                | "mac845"
                | "relinearize"
                | "mul_relin"
                | "mul_relin_rescale"
                | "rotate"
                | "encrypt"
        )
}

/// Keys, inputs and evaluators of one parameter set.
pub struct Fixture {
    /// The parameter set.
    pub config: BenchConfig,
    /// The context.
    pub ctx: Arc<Context>,
    /// Scale 2^40.
    pub scale: f64,
    /// Encoder.
    pub encoder: Encoder,
    /// Public-key encryptor.
    pub encryptor: Encryptor,
    /// Decryptor.
    pub decryptor: Decryptor,
    /// Evaluator.
    pub eval: Evaluator,
    /// Relinearization key.
    pub rk: RelinKey,
    /// Galois keys of [`HOIST_STEPS`].
    pub gk: GaloisKeys,
    /// Slot values of `pt` / `ct`.
    pub vals: Vec<f64>,
    /// Slot values of `pt2` / `ct2`.
    pub vals2: Vec<f64>,
    /// Encoding of `vals` at the top level.
    pub pt: Plaintext,
    /// Encoding of `vals2` at the top level.
    pub pt2: Plaintext,
    /// Encryption of `pt`.
    pub ct: Ciphertext,
    /// Encryption of `pt2`.
    pub ct2: Ciphertext,
    /// `ct * ct2` (3 polynomials).
    pub prod: Ciphertext,
    /// `ct * ct2` relinearized (input of `rescale`).
    pub prod_relin: Ciphertext,
    /// Decryption of `ct` (input of `decode`).
    pub ptd: Plaintext,
    /// One limb (N words below q0) for the NTT benchmark.
    pub limb: Vec<u64>,
    /// Ciphertexts feeding the multiply-accumulates.
    pub pool: Vec<Ciphertext>,
    /// Constants of the multiply-accumulates (845 of them; mac25 uses the first 25).
    pub consts: Vec<f64>,
}

/// A small deterministic generator of inputs (xorshift64*), to keep the
/// benchmark inputs identical from run to run.
struct Inputs(u64);

impl Inputs {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.unit()).collect()
    }
}

impl Fixture {
    /// Generates keys (relinearization and the 8 rotation keys) and inputs,
    /// and checks that `rescale(relinearize(ct * ct2))` decrypts to the
    /// slot-wise product (so the timings are of a working backend).
    pub fn new(config: &BenchConfig) -> Result<Self, CkksError> {
        let mut builder = CkksParameters::builder()
            .log_n(config.log_n)
            .q0_bits(config.q0_bits)
            .scale_bits(config.scale_bits.clone())
            .special_bits(config.special_bits.clone());
        if let Some(dnum) = config.dnum {
            builder = builder.dnum(dnum);
        }
        let params = builder.build()?;
        let ctx = Context::new(params)?;
        let mut keygen = KeyGenerator::new(&ctx)?;
        let pk = keygen.public_key();
        let rk = keygen.relin_key();
        let gk = keygen.galois_keys(&HOIST_STEPS, false);
        let encoder = Encoder::new(&ctx);
        let mut encryptor = Encryptor::new(&ctx, &pk)?;
        let decryptor = Decryptor::new(&ctx, keygen.secret_key());
        let eval = Evaluator::new(&ctx);
        let scale = 2f64.powi(SCALE_BITS as i32);
        let top = ctx.max_level();
        let slots = ctx.n() / 2;

        let mut rng = Inputs(0x9E37_79B9_7F4A_7C15);
        let vals = rng.vec(slots);
        let vals2 = rng.vec(slots);
        let pt = encoder.encode(&vals, top, scale)?;
        let pt2 = encoder.encode(&vals2, top, scale)?;
        let ct = encryptor.encrypt(&pt)?;
        let ct2 = encryptor.encrypt(&pt2)?;
        let prod = eval.mul(&ct, &ct2)?;
        let prod_relin = eval.relinearize(&prod, &rk)?;
        let ptd = decryptor.decrypt(&ct)?;

        let out = encoder.decode(&decryptor.decrypt(&eval.rescale(&prod_relin)?)?)?;
        let err = out
            .iter()
            .zip(vals.iter().zip(&vals2))
            .map(|(o, (a, b))| (o - a * b).abs())
            .fold(0.0f64, f64::max);
        if err.is_nan() || err > 1e-3 {
            return Err(CkksError::InvalidInput(format!(
                "benchmark sanity check failed at {}: max slot error {err}",
                config.id()
            )));
        }

        let q0 = ctx.params().q()[0];
        let limb: Vec<u64> = (0..ctx.n()).map(|_| rng.next_u64() % q0).collect();
        let pool = (0..MAC_POOL)
            .map(|_| {
                let v = rng.vec(slots);
                encryptor.encrypt(&encoder.encode(&v, top, scale)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let consts = rng.vec(MAC_SIZES[1]);
        Ok(Self {
            config: config.clone(),
            ctx,
            scale,
            encoder,
            encryptor,
            decryptor,
            eval,
            rk,
            gk,
            vals,
            vals2,
            pt,
            pt2,
            ct,
            ct2,
            prod,
            prod_relin,
            ptd,
            limb,
            pool,
            consts,
        })
    }

    /// Runs operation `op` (one of [`OPS`]) once; results go through
    /// `black_box` so that nothing is optimised away.
    pub fn run(&mut self, op: &str) -> Result<(), CkksError> {
        let e = &self.eval;
        match op {
            // Forward NTT in place: its output is fully reduced, so it is a
            // valid input of the next iteration.
            "ntt_forward" => self.ctx.ntt_forward(0, black_box(&mut self.limb))?,
            "encode" => {
                black_box(
                    self.encoder
                        .encode(&self.vals, self.ctx.max_level(), self.scale)?,
                );
            }
            "encrypt" => {
                black_box(self.encryptor.encrypt(&self.pt)?);
            }
            "decrypt" => {
                black_box(self.decryptor.decrypt(&self.ct)?);
            }
            "decode" => {
                black_box(self.encoder.decode(&self.ptd)?);
            }
            "decrypt_decode" => {
                black_box(self.encoder.decode(&self.decryptor.decrypt(&self.ct)?)?);
            }
            "add" => {
                black_box(e.add(&self.ct, &self.ct2)?);
            }
            "mul_plain" => {
                black_box(e.mul_plain(&self.ct, &self.pt2)?);
            }
            "mul_scalar" => {
                black_box(e.mul_scalar(&self.ct, 0.731, self.scale)?);
            }
            "mul" => {
                black_box(e.mul(&self.ct, &self.ct2)?);
            }
            "relinearize" => {
                black_box(e.relinearize(&self.prod, &self.rk)?);
            }
            "mul_relin" => {
                black_box(e.mul_relin(&self.ct, &self.ct2, &self.rk)?);
            }
            "rescale" => {
                black_box(e.rescale(&self.prod_relin)?);
            }
            "mul_relin_rescale" => {
                let mut r = e.mul_relin(&self.ct, &self.ct2, &self.rk)?;
                e.rescale_assign(&mut r)?;
                black_box(r);
            }
            "rotate" => {
                black_box(e.rotate(&self.ct, 1, &self.gk)?);
            }
            "rotate_hoisted8" => {
                black_box(e.rotate_hoisted(&self.ct, &HOIST_STEPS, &self.gk)?);
            }
            "mac25" | "mac845" => {
                let k = if op == "mac25" {
                    MAC_SIZES[0]
                } else {
                    MAC_SIZES[1]
                };
                let terms: Vec<(&Ciphertext, f64)> = (0..k)
                    .map(|i| (&self.pool[i % MAC_POOL], self.consts[i]))
                    .collect();
                black_box(e.mul_scalar_accumulate(&terms, self.scale)?);
            }
            other => {
                return Err(CkksError::InvalidInput(format!(
                    "unknown benchmark operation {other:?}"
                )))
            }
        }
        Ok(())
    }
}
