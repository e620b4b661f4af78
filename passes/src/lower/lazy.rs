//! Lazy affine values: the lowering's representation of one tensor element.
//!
//! An element is `m * ct + o` for a ciphertext `ct` and real constants `m`, `o` that have not
//! been applied yet. Multiplying by a constant or adding one only updates `m` and `o` (no
//! homomorphic operation, no level), and the pending factors are absorbed where they are free:
//! into the scalars of the next multiply-accumulate, or into the scalar terms of the next product
//! (`(m1 c1 + o1)(m2 c2 + o2) = m1 m2 (c1 c2 + (o2/m2) c1 + (o1/m1) c2) + o1 o2`, computed at the
//! product's own level). This is how batch-norm, scaling, input normalisation and the leading
//! coefficient of a quadratic cost no level at all.
//!
//! The folding can be switched off ([`Emitter::fold_affine`] = `false`, used to measure what
//! fusion saves): [`Emitter::settle`] then materialises every pending factor right after the op
//! that produced it (a `mul_scalar`, one level, when the factor is not 1; a free `add_scalar` for
//! the offset), and [`Emitter::rescale_fresh`] never folds a factor into its producer.

use hecc_ir::he::{HeError, LogScale, Module, ValueId};
use std::collections::HashMap;

/// One tensor element during lowering: `m * ct + o`, or the constant `o` when `ct` is `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lazy {
    /// The ciphertext, if the element is not a constant.
    pub ct: Option<ValueId>,
    /// Pending factor.
    pub m: f64,
    /// Pending offset.
    pub o: f64,
}

impl Lazy {
    /// The ciphertext itself.
    pub fn of(ct: ValueId) -> Lazy {
        Lazy {
            ct: Some(ct),
            m: 1.0,
            o: 0.0,
        }
    }

    /// A constant.
    pub fn constant(c: f64) -> Lazy {
        Lazy {
            ct: None,
            m: 0.0,
            o: c,
        }
    }

    /// `k * self + b` (free).
    pub fn affine(self, k: f64, b: f64) -> Lazy {
        match self.ct {
            Some(_) if k != 0.0 => Lazy {
                ct: self.ct,
                m: self.m * k,
                o: self.o * k + b,
            },
            _ => Lazy::constant(self.o * k + b),
        }
    }
}

/// Emits HE operations for lazy values, tracking each ciphertext's multiplicative depth and
/// relinearizing size-3 ciphertexts once, where a consumer needs size 2 (lazy placement).
pub struct Emitter<'m> {
    /// The module being built.
    pub module: &'m mut Module,
    /// Multiplicative depth of each emitted ciphertext.
    pub depth: HashMap<ValueId, u32>,
    relinearized: HashMap<ValueId, ValueId>,
    /// Scale at which scalar constants are encoded.
    pub scalar_log_scale: LogScale,
    /// Whether [`Emitter::rescale_fresh`] may rewrite a producer in place: the lowering allows it
    /// only while every operand of the node being lowered has that node as its sole consumer
    /// (otherwise another consumer would still hold the old pending factor).
    pub allow_fresh: bool,
    /// Fold pending affine factors into the next op (default `true`). When `false`, the lowering
    /// calls [`Emitter::settle`] after every op, which materialises them at once.
    pub fold_affine: bool,
}

/// Equal up to rounding (a relative difference of at most `1e-12`): pending factors this close
/// are treated as one, the difference being far below any ciphertext's precision.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

impl<'m> Emitter<'m> {
    /// An emitter over `module`.
    pub fn new(module: &'m mut Module, scalar_log_scale: LogScale) -> Self {
        Emitter {
            module,
            depth: HashMap::new(),
            relinearized: HashMap::new(),
            scalar_log_scale,
            allow_fresh: true,
            fold_affine: true,
        }
    }

    /// With [`Emitter::fold_affine`] on, returns `x` unchanged. With it off, materialises the
    /// pending factor and offset of `x` ([`Emitter::materialize`]) and returns the plain
    /// ciphertext (or the constant).
    pub fn settle(&mut self, x: Lazy) -> Result<Lazy, HeError> {
        if self.fold_affine || x.ct.is_none() || (x.m == 1.0 && x.o == 0.0) {
            return Ok(x);
        }
        Ok(match self.materialize(x)? {
            Some(v) => Lazy::of(v),
            None => x,
        })
    }

    /// Records a fresh ciphertext (input) at depth 0.
    pub fn fresh(&mut self, v: ValueId) {
        self.depth.insert(v, 0);
    }

    fn d(&self, v: ValueId) -> u32 {
        self.depth.get(&v).copied().unwrap_or(0)
    }

    fn note(&mut self, v: ValueId, d: u32) -> ValueId {
        self.depth.insert(v, d);
        v
    }

    /// `v` with size 2 (relinearized once, on first need).
    pub fn relin(&mut self, v: ValueId) -> Result<ValueId, HeError> {
        if self.module.ty(v).map(|t| t.size()) != Some(3) {
            return Ok(v);
        }
        if let Some(&r) = self.relinearized.get(&v) {
            return Ok(r);
        }
        let r = self.module.relinearize(v)?;
        let d = self.d(v);
        self.note(r, d);
        self.relinearized.insert(v, r);
        Ok(r)
    }

    /// Returns `x` with its ciphertext multiplied by `s`, for free when that ciphertext is a
    /// multiply-accumulate nobody uses yet (its scalars and bias are scaled in place); otherwise
    /// returns `x` unchanged.
    pub fn rescale_fresh(&mut self, x: Lazy, s: f64) -> Lazy {
        let Some(ct) = x.ct else { return x };
        if !self.fold_affine || !self.allow_fresh {
            return x;
        }
        if !(s.is_finite() && s > 0.0) || s == 1.0 || !self.module.users(ct).is_empty() {
            return x;
        }
        match self.module.node_mut(ct).map(|n| &mut n.op) {
            Some(hecc_ir::he::Op::Mac(attrs)) => {
                for c in attrs.coeffs.iter_mut() {
                    *c *= s;
                }
                if let Some(b) = attrs.bias.as_mut() {
                    *b *= s;
                }
                Lazy {
                    ct: Some(ct),
                    m: x.m / s,
                    o: x.o,
                }
            }
            _ => x,
        }
    }

    /// `c * x` applied to the ciphertext (one level), leaving a pending factor of 1.
    pub fn scale(&mut self, x: Lazy, c: f64) -> Result<Lazy, HeError> {
        let Some(ct) = x.ct else {
            return Ok(Lazy::constant(c * x.o));
        };
        let k = c * x.m;
        if k == 0.0 {
            return Ok(Lazy::constant(c * x.o));
        }
        if k == 1.0 {
            return Ok(Lazy {
                ct: Some(ct),
                m: 1.0,
                o: c * x.o,
            });
        }
        let d = self.d(ct) + 1;
        let v = self.module.mul_scalar(ct, k, self.scalar_log_scale)?;
        Ok(Lazy {
            ct: Some(self.note(v, d)),
            m: 1.0,
            o: c * x.o,
        })
    }

    /// `k * x` for an integer `k`, applied to the ciphertext (no level).
    pub fn scale_int(&mut self, x: Lazy, k: i64) -> Result<Lazy, HeError> {
        let Some(ct) = x.ct else {
            return Ok(Lazy::constant(k as f64 * x.o));
        };
        if k == 0 {
            return Ok(Lazy::constant(0.0));
        }
        if k == 1 {
            return Ok(x);
        }
        let d = self.d(ct);
        let v = self.module.mul_integer(ct, k)?;
        Ok(Lazy {
            ct: Some(self.note(v, d)),
            m: x.m,
            o: k as f64 * x.o,
        })
    }

    /// `sum_i w_i * x_i + bias` over lazy `x_i`: one multiply-accumulate (one level).
    pub fn mac(&mut self, terms: &[(Lazy, f64)], bias: f64) -> Result<Lazy, HeError> {
        let mut merged: Vec<(ValueId, f64)> = Vec::with_capacity(terms.len());
        let mut index: HashMap<ValueId, usize> = HashMap::new();
        let mut constant = bias;
        for &(x, w) in terms {
            constant += w * x.o;
            let Some(ct) = x.ct else { continue };
            let c = w * x.m;
            if c == 0.0 {
                continue;
            }
            match index.get(&ct) {
                Some(&i) => merged[i].1 += c,
                None => {
                    index.insert(ct, merged.len());
                    merged.push((ct, c));
                }
            }
        }
        merged.retain(|t| t.1 != 0.0);
        if merged.is_empty() {
            return Ok(Lazy::constant(constant));
        }
        if merged.len() == 1 {
            // A single term stays lazy: no operation at all.
            let (ct, c) = merged[0];
            return Ok(Lazy {
                ct: Some(ct),
                m: c,
                o: constant,
            });
        }
        let d = merged.iter().map(|t| self.d(t.0)).max().unwrap_or(0) + 1;
        let bias = (constant != 0.0).then_some(constant);
        let v = self.module.mac(&merged, bias, self.scalar_log_scale)?;
        Ok(Lazy::of(self.note(v, d)))
    }

    /// `a + b`.
    pub fn add(&mut self, a: Lazy, b: Lazy) -> Result<Lazy, HeError> {
        let (ca, cb) = match (a.ct, b.ct) {
            (None, _) => return Ok(b.affine(1.0, a.o)),
            (_, None) => return Ok(a.affine(1.0, b.o)),
            (Some(x), Some(y)) => (x, y),
        };
        let o = a.o + b.o;
        if ca == cb {
            let m = a.m + b.m;
            return Ok(if m == 0.0 {
                Lazy::constant(o)
            } else {
                Lazy { ct: Some(ca), m, o }
            });
        }
        if close(a.m, b.m) {
            let s = self.module.add(ca, cb)?;
            let d = self.d(ca).max(self.d(cb));
            return Ok(Lazy {
                ct: Some(self.note(s, d)),
                m: a.m,
                o,
            });
        }
        if close(a.m, -b.m) {
            let s = self.module.sub(ca, cb)?;
            let d = self.d(ca).max(self.d(cb));
            return Ok(Lazy {
                ct: Some(self.note(s, d)),
                m: a.m,
                o,
            });
        }
        // Different pending factors: rescale the shallower operand (free in depth) or, at equal
        // depth, combine both with one multiply-accumulate.
        let (da, db) = (self.d(ca), self.d(cb));
        if da != db {
            let (lo, hi, m_lo, m_hi) = if da < db {
                (ca, cb, a.m, b.m)
            } else {
                (cb, ca, b.m, a.m)
            };
            let scale = |m: &Module, v: ValueId| m.ty(v).map(|t| t.log_scale().0).unwrap_or(0.0);
            // Encode the ratio at the scale difference when that is large enough to be precise:
            // both sides then meet at the same scale without a rescale.
            let diff = scale(self.module, hi) - scale(self.module, lo);
            let ls = if diff >= 20.0 {
                LogScale(diff)
            } else {
                self.scalar_log_scale
            };
            let scaled = self.module.mul_scalar(lo, m_lo / m_hi, ls)?;
            let dl = self.d(lo) + 1;
            self.note(scaled, dl);
            let s = self.module.add(hi, scaled)?;
            let d = dl.max(self.d(hi));
            return Ok(Lazy {
                ct: Some(self.note(s, d)),
                m: m_hi,
                o,
            });
        }
        let r = self.mac(&[(Lazy::of(ca), a.m), (Lazy::of(cb), b.m)], 0.0)?;
        Ok(r.affine(1.0, o))
    }

    /// `a * b` (one level: the product and its linear correction terms share it).
    pub fn mul(&mut self, a: Lazy, b: Lazy) -> Result<Lazy, HeError> {
        let (ca, cb) = match (a.ct, b.ct) {
            (None, _) => return Ok(b.affine(a.o, 0.0)),
            (_, None) => return Ok(a.affine(b.o, 0.0)),
            (Some(x), Some(y)) => (x, y),
        };
        let (ra, rb) = (self.relin(ca)?, self.relin(cb)?);
        let d = self.d(ca).max(self.d(cb)) + 1;
        let scale_of =
            |m: &Module, v: ValueId| m.ty(v).map(|t| t.log_scale()).unwrap_or(LogScale(0.0));
        let (sa, sb) = (scale_of(self.module, ra), scale_of(self.module, rb));
        let (prod, lin) = if ca == cb {
            let p = self.module.square(ra)?;
            let k = b.o / b.m + a.o / a.m;
            (p, if k != 0.0 { vec![(ra, k, sa)] } else { vec![] })
        } else {
            let p = self.module.mul(ra, rb)?;
            let mut lin = Vec::new();
            if b.o != 0.0 {
                lin.push((ra, b.o / b.m, sb));
            }
            if a.o != 0.0 {
                lin.push((rb, a.o / a.m, sa));
            }
            (p, lin)
        };
        let mut acc = self.note(prod, d);
        for (x, k, ls) in lin {
            let t = self.module.mul_scalar(x, k, ls)?;
            let dt = self.d(x) + 1;
            self.note(t, dt);
            acc = self.module.add(acc, t)?;
            self.note(acc, d);
        }
        Ok(Lazy {
            ct: Some(acc),
            m: a.m * b.m,
            o: a.o * b.o,
        })
    }

    /// `a*x^2 + b*x + c` for a lazy `x`, in one level: `A (ct^2 + (B/A) ct) + C`.
    pub fn quadratic(&mut self, x: Lazy, a: f64, b: f64, c: f64) -> Result<Lazy, HeError> {
        if x.ct.is_none() {
            return Ok(Lazy::constant(a * x.o * x.o + b * x.o + c));
        }
        // Scale the producer so the square's coefficient becomes +-1: elements of a layer then
        // share their pending factor, and sums of them (pooling) need no multiplication.
        let x = if a != 0.0 {
            self.rescale_fresh(x, x.m.abs() * a.abs().sqrt())
        } else {
            x
        };
        let Some(ct) = x.ct else { return Ok(x) };
        let (m, o) = (x.m, x.o);
        let big_a = a * m * m;
        let big_b = 2.0 * a * m * o + b * m;
        let big_c = a * o * o + b * o + c;
        if big_a == 0.0 {
            return Ok(if big_b == 0.0 {
                Lazy::constant(big_c)
            } else {
                Lazy {
                    ct: Some(ct),
                    m: big_b,
                    o: big_c,
                }
            });
        }
        let r = self.relin(ct)?;
        let d = self.d(ct) + 1;
        let sq = self.module.square(r)?;
        let mut acc = self.note(sq, d);
        let k = big_b / big_a;
        if k != 0.0 {
            let s = self
                .module
                .ty(r)
                .map(|t| t.log_scale())
                .unwrap_or(self.scalar_log_scale);
            let t = self.module.mul_scalar(r, k, s)?;
            self.note(t, d);
            acc = self.module.add(acc, t)?;
            self.note(acc, d);
        }
        Ok(Lazy {
            ct: Some(acc),
            m: big_a,
            o: big_c,
        })
    }

    /// Materialises `x` as a ciphertext holding exactly its value (for outputs). Costs a level
    /// only when a pending factor other than 1 remains.
    pub fn materialize(&mut self, x: Lazy) -> Result<Option<ValueId>, HeError> {
        let Some(ct) = x.ct else { return Ok(None) };
        let mut v = self.relin(ct)?;
        if x.m != 1.0 {
            let d = self.d(v) + 1;
            let t = self.module.mul_scalar(v, x.m, self.scalar_log_scale)?;
            v = self.note(t, d);
        }
        if x.o != 0.0 {
            let d = self.d(v);
            let t = self.module.add_scalar(v, x.o)?;
            v = self.note(t, d);
        }
        Ok(Some(self.relin(v)?))
    }
}
