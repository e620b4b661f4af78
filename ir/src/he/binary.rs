//! The binary form of a module: what plan files store, a few bytes per node where the text
//! form ([`crate::text`]) prints a line.
//!
//! Contract: [`decode`] of [`encode`]`(m)` is a module that prints exactly as `m` (node ids,
//! holes, layout, constant and name tables included; floats bit for bit), and [`decode`] never
//! panics: any byte string is either a module or a [`BinaryError`] naming what is wrong and
//! where. The decoded module is not verified (as with the text parser, run
//! [`super::verify()`] on it).
//!
//! Layout (integers are LEB128 varints unless said otherwise, signed ones zigzag-mapped, floats
//! the 8 little-endian bytes of their bits):
//!
//! ```text
//! magic "HECCIRB\0", version u8
//! meta:       name, batch, log_scale
//! params:     0 | 1 log_n count primes...
//! boot:       0 | 1 out_level in_scale out_scale depth bound slots
//! layouts:    count (name, 0 offset stride | 1 c h w offset c_stride y_stride x_stride images image_stride)...
//! constants:  count (len period count runs (start items (value repeat)...)...)...   (the tiled form)
//! names:      count name...
//! types:      count (0 level scale slots layout size | 1 level scale slots layout)...
//! coeffs:     count (len value...)...          coefficient lists of `mac`s, each written once
//! patterns:   count (len delta...)...          operand patterns of `mac`s, each written once
//! nodes:      count (0 | tag type #operands first-operand rest)...   in id order, 0 = an unused id
//!             rest of a mac:   pattern coeffs (0 | 1 bias) scale
//!             rest of others:  further operands, then the op's attributes
//! ```
//!
//! Operands are relative: the first as `id - operand`, the rest as the difference to the
//! previous operand. A `mac`'s differences after its first operand are an interned pattern, so
//! the members of a convolution (the same window over shifted positions) share one; its
//! coefficients are an interned list too, shared where the lowering leaves them equal (not in
//! the batch layout, where per-element factors are folded into every `mac`: there they are
//! most of the bytes).

use super::compact::{Run, Tiled};
use super::{
    BootInfo, ConstId, HeNode, Layout, LayoutId, Level, LogScale, MacAttrs, Meta, Module, NameId,
    Op, Operand, Params, Type, ValueId,
};
use std::collections::HashMap;

/// The first bytes of the binary form.
pub const MAGIC: &[u8; 8] = b"HECCIRB\0";
/// The version of the binary form this code writes and reads.
pub const VERSION: u8 = 1;
/// Most slots a constant may have (as in the text form).
const MAX_CONST_LEN: usize = 1 << 26;

/// Why bytes are not a module in the binary form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the binary circuit is malformed at byte {offset}: {message}")]
pub struct BinaryError {
    /// Byte offset where decoding stopped.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

// ----- writing ------------------------------------------------------------------------------

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u(&mut self, mut x: u64) {
        loop {
            let b = (x & 0x7f) as u8;
            x >>= 7;
            if x == 0 {
                self.out.push(b);
                return;
            }
            self.out.push(b | 0x80);
        }
    }

    fn i(&mut self, x: i64) {
        self.u(((x << 1) ^ (x >> 63)) as u64);
    }

    fn f(&mut self, x: f64) {
        self.out.extend_from_slice(&x.to_bits().to_le_bytes());
    }

    fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    fn s(&mut self, s: &str) {
        self.u(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A count of lists, each its length and its items (see `Reader::lists`).
    fn lists<T>(&mut self, lists: &[Vec<T>], mut item: impl FnMut(&mut Self, &T)) {
        self.u(lists.len() as u64);
        for list in lists {
            self.u(list.len() as u64);
            for x in list {
                item(self, x);
            }
        }
    }
}

/// An interning table: each distinct key gets the next index.
struct Table<K> {
    index: HashMap<K, u64>,
    items: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            index: HashMap::new(),
            items: Vec::new(),
        }
    }

    fn get(&mut self, k: K) -> u64 {
        if let Some(&i) = self.index.get(&k) {
            return i;
        }
        let i = self.items.len() as u64;
        self.items.push(k.clone());
        self.index.insert(k, i);
        i
    }
}

/// Type as a hashable key and as written: kind (0 ciphertext, 1 plaintext), level, scale bits,
/// slots, layout, size (ciphertexts only).
#[derive(Clone, PartialEq, Eq, Hash)]
struct TypeKey(u8, u32, u64, u32, u32, u8);

fn type_key(t: &Type) -> TypeKey {
    match *t {
        Type::Cipher {
            level,
            log_scale,
            slots,
            layout,
            size,
        } => TypeKey(0, level.0, log_scale.0.to_bits(), slots, layout.0, size),
        Type::Plain {
            level,
            log_scale,
            slots,
            layout,
        } => TypeKey(1, level.0, log_scale.0.to_bits(), slots, layout.0, 0),
    }
}

/// Op tags of the binary form (stable: never renumber; new ops take new tags).
mod tag {
    pub const INPUT: u8 = 1;
    pub const ENCODE: u8 = 2;
    pub const ADD: u8 = 3;
    pub const SUB: u8 = 4;
    pub const NEGATE: u8 = 5;
    pub const ADD_PLAIN: u8 = 6;
    pub const SUB_PLAIN: u8 = 7;
    pub const ADD_SCALAR: u8 = 8;
    pub const MUL: u8 = 9;
    pub const SQUARE: u8 = 10;
    pub const MUL_PLAIN: u8 = 11;
    pub const MUL_SCALAR: u8 = 12;
    pub const MUL_INTEGER: u8 = 13;
    pub const MAC: u8 = 14;
    pub const RELINEARIZE: u8 = 15;
    pub const RESCALE: u8 = 16;
    pub const DROP_LEVEL: u8 = 17;
    pub const ROTATE: u8 = 18;
    pub const CONJUGATE: u8 = 19;
    pub const BOOTSTRAP: u8 = 20;
    pub const OUTPUT: u8 = 21;
}

fn op_tag(op: &Op) -> u8 {
    match op {
        Op::Input { .. } => tag::INPUT,
        Op::Encode { .. } => tag::ENCODE,
        Op::Add => tag::ADD,
        Op::Sub => tag::SUB,
        Op::Negate => tag::NEGATE,
        Op::AddPlain => tag::ADD_PLAIN,
        Op::SubPlain => tag::SUB_PLAIN,
        Op::AddScalar { .. } => tag::ADD_SCALAR,
        Op::Mul => tag::MUL,
        Op::Square => tag::SQUARE,
        Op::MulPlain => tag::MUL_PLAIN,
        Op::MulScalar { .. } => tag::MUL_SCALAR,
        Op::MulInteger { .. } => tag::MUL_INTEGER,
        Op::Mac(_) => tag::MAC,
        Op::Relinearize => tag::RELINEARIZE,
        Op::Rescale => tag::RESCALE,
        Op::DropLevel { .. } => tag::DROP_LEVEL,
        Op::Rotate { .. } => tag::ROTATE,
        Op::Conjugate => tag::CONJUGATE,
        Op::Bootstrap => tag::BOOTSTRAP,
        Op::Output { .. } => tag::OUTPUT,
    }
}

fn write_layout(w: &mut Writer, l: &Layout) {
    match *l {
        Layout::Batch { offset, stride } => {
            w.byte(0);
            w.u(offset.into());
            w.u(stride.into());
        }
        Layout::Channel {
            channels,
            height,
            width,
            offset,
            c_stride,
            y_stride,
            x_stride,
            images,
            image_stride,
        } => {
            w.byte(1);
            for x in [
                channels,
                height,
                width,
                offset,
                c_stride,
                y_stride,
                x_stride,
                images,
                image_stride,
            ] {
                w.u(x.into());
            }
        }
    }
}

fn write_tiled(w: &mut Writer, t: &Tiled) {
    w.u(t.len as u64);
    w.u(t.period as u64);
    w.u(t.count as u64);
    w.u(t.runs.len() as u64);
    for r in &t.runs {
        w.u(r.start as u64);
        w.u(r.items.len() as u64);
        for &(x, k) in &r.items {
            w.f(x);
            w.u(k as u64);
        }
    }
}

/// The binary form of `m` (see the module note).
pub fn encode(m: &Module) -> Vec<u8> {
    let mut w = Writer { out: Vec::new() };
    w.out.extend_from_slice(MAGIC);
    w.byte(VERSION);
    w.s(&m.meta.name);
    w.u(m.meta.batch.into());
    w.f(m.meta.log_scale.0);
    match &m.params {
        None => w.byte(0),
        Some(p) => {
            w.byte(1);
            w.u(p.log_n.into());
            w.u(p.primes.len() as u64);
            for &q in &p.primes {
                w.u(q);
            }
        }
    }
    match &m.boot {
        None => w.byte(0),
        Some(b) => {
            w.byte(1);
            w.u(b.out_level.0.into());
            w.f(b.in_log_scale.0);
            w.f(b.out_log_scale.0);
            w.u(b.depth.into());
            w.f(b.message_bound);
            w.u(b.slots.into());
        }
    }
    let layouts: Vec<_> = m.layouts().collect();
    w.u(layouts.len() as u64);
    for (_, name, l) in layouts {
        w.s(name);
        write_layout(&mut w, l);
    }
    w.u(m.constants().count() as u64);
    for (_, c) in m.constants() {
        write_tiled(&mut w, &Tiled::of(&c.values()));
    }
    let names: Vec<&str> = (0..).map_while(|i| m.name(NameId(i))).collect();
    w.u(names.len() as u64);
    for n in names {
        w.s(n);
    }

    // The node section is written to its own buffer first, filling the tables it refers to.
    let slots = m.ids().map(|v| v.0 as usize + 1).max().unwrap_or(0);
    let mut types: Table<TypeKey> = Table::new();
    let mut coeffs: Table<Vec<u64>> = Table::new();
    let mut patterns: Table<Vec<i64>> = Table::new();
    let mut n = Writer { out: Vec::new() };
    n.u(slots as u64);
    for i in 0..slots {
        let v = ValueId(i as u32);
        let Some(node) = m.node(v) else {
            n.byte(0);
            continue;
        };
        n.byte(op_tag(&node.op));
        n.u(types.get(type_key(&node.ty)));
        let ops = m.operands(v);
        n.u(ops.len() as u64);
        let rel = |a: ValueId, b: ValueId| i64::from(a.0) - i64::from(b.0);
        if let Some(&first) = ops.first() {
            n.i(rel(v, first));
        }
        if let Op::Mac(attrs) = &node.op {
            let deltas: Vec<i64> = ops.windows(2).map(|p| rel(p[1], p[0])).collect();
            n.u(patterns.get(deltas));
            n.u(coeffs.get(attrs.coeffs.iter().map(|c| c.to_bits()).collect()));
            match attrs.bias {
                None => n.byte(0),
                Some(b) => {
                    n.byte(1);
                    n.f(b);
                }
            }
            n.f(attrs.log_scale.0);
            continue;
        }
        for p in ops.windows(2) {
            n.i(rel(p[1], p[0]));
        }
        match &node.op {
            Op::Input { name, index } | Op::Output { name, index } => {
                n.u(name.0.into());
                n.u((*index).into());
            }
            Op::Encode { constant } => n.u(constant.0.into()),
            Op::AddScalar { value } => n.f(*value),
            Op::MulScalar { value, log_scale } => {
                n.f(*value);
                n.f(log_scale.0);
            }
            Op::MulInteger { factor } => n.i(*factor),
            Op::DropLevel { to } => n.u(to.0.into()),
            Op::Rotate { steps } => n.i((*steps).into()),
            _ => {}
        }
    }
    w.u(types.items.len() as u64);
    for &TypeKey(kind, level, scale, slots, layout, size) in &types.items {
        w.byte(kind);
        w.u(level.into());
        w.f(f64::from_bits(scale));
        w.u(slots.into());
        w.u(layout.into());
        if kind == 0 {
            w.byte(size);
        }
    }
    w.lists(&coeffs.items, |w, &b| w.f(f64::from_bits(b)));
    w.lists(&patterns.items, |w, &d| w.i(d));
    w.out.extend_from_slice(&n.out);
    w.out
}

// ----- reading ------------------------------------------------------------------------------

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

type R<T> = Result<T, BinaryError>;

impl<'a> Reader<'a> {
    fn err<T>(&self, message: impl Into<String>) -> R<T> {
        Err(BinaryError {
            offset: self.at,
            message: message.into(),
        })
    }

    fn byte(&mut self, what: &str) -> R<u8> {
        match self.b.get(self.at) {
            Some(&x) => {
                self.at += 1;
                Ok(x)
            }
            None => self.err(format!("the data ends inside {what}")),
        }
    }

    fn u(&mut self, what: &str) -> R<u64> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return self.err(format!("{what} does not fit 64 bits"));
            }
            x |= part << shift;
            if b & 0x80 == 0 {
                return Ok(x);
            }
        }
        self.err(format!("{what} does not fit 64 bits"))
    }

    fn u32(&mut self, what: &str) -> R<u32> {
        let x = self.u(what)?;
        match u32::try_from(x) {
            Ok(v) => Ok(v),
            Err(_) => self.err(format!("{what} {x} is out of range")),
        }
    }

    fn usize_max(&mut self, what: &str, max: usize) -> R<usize> {
        let x = self.u(what)?;
        match usize::try_from(x) {
            Ok(v) if v <= max => Ok(v),
            _ => self.err(format!("{what} {x} is larger than {max}")),
        }
    }

    /// A count of items that take at least `min_bytes` each: never more than the bytes left.
    fn count(&mut self, what: &str, min_bytes: usize) -> R<usize> {
        let left = (self.b.len() - self.at) / min_bytes.max(1);
        self.usize_max(what, left)
    }

    fn i(&mut self, what: &str) -> R<i64> {
        let z = self.u(what)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn f(&mut self, what: &str) -> R<f64> {
        match self.b.get(self.at..self.at + 8) {
            Some(s) => {
                self.at += 8;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Ok(f64::from_bits(u64::from_le_bytes(a)))
            }
            None => self.err(format!("the data ends inside {what}")),
        }
    }

    /// A count of lists, each a length and that many items of at least `min_bytes` each.
    fn lists<T>(
        &mut self,
        what: &str,
        min_bytes: usize,
        mut item: impl FnMut(&mut Self) -> R<T>,
    ) -> R<Vec<Vec<T>>> {
        let n = self.count(&format!("the {what} count"), 1)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.count(&format!("a {what}'s length"), min_bytes)?;
            out.push((0..len).map(|_| item(self)).collect::<R<Vec<_>>>()?);
        }
        Ok(out)
    }

    fn s(&mut self, what: &str) -> R<String> {
        let len = self.count(what, 1)?;
        let bytes = &self.b[self.at..self.at + len];
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.at += len;
                Ok(s.to_string())
            }
            Err(_) => self.err(format!("{what} is not UTF-8")),
        }
    }
}

fn read_layout(r: &mut Reader<'_>) -> R<Layout> {
    match r.byte("a layout")? {
        0 => Ok(Layout::Batch {
            offset: r.u32("a layout offset")?,
            stride: r.u32("a layout stride")?,
        }),
        1 => {
            let mut f = [0u32; 9];
            for x in &mut f {
                *x = r.u32("a layout field")?;
            }
            Ok(Layout::Channel {
                channels: f[0],
                height: f[1],
                width: f[2],
                offset: f[3],
                c_stride: f[4],
                y_stride: f[5],
                x_stride: f[6],
                images: f[7],
                image_stride: f[8],
            })
        }
        k => r.err(format!("unknown layout kind {k}")),
    }
}

fn read_constant(r: &mut Reader<'_>) -> R<Vec<f64>> {
    let len = r.usize_max("a constant's length", MAX_CONST_LEN)?;
    let period = r.usize_max("a constant's period", MAX_CONST_LEN)?;
    let count = r.usize_max("a constant's repetitions", MAX_CONST_LEN)?;
    let nruns = r.count("a constant's runs", 2)?;
    let mut runs = Vec::with_capacity(nruns);
    for _ in 0..nruns {
        let start = r.usize_max("a run's start", MAX_CONST_LEN)?;
        let nitems = r.count("a run's items", 9)?;
        let mut items = Vec::with_capacity(nitems);
        for _ in 0..nitems {
            let x = r.f("a constant value")?;
            let k = r.usize_max("a repeat count", MAX_CONST_LEN)?;
            items.push((x, k));
        }
        runs.push(Run { start, items });
    }
    let t = Tiled {
        len,
        period,
        count,
        runs,
    };
    if let Err(e) = t.check() {
        return r.err(format!("a constant's tiled form is invalid: {e}"));
    }
    match t.expand() {
        Some(v) => Ok(v),
        None => r.err("a constant's tiled form does not expand"),
    }
}

fn read_type(r: &mut Reader<'_>, layouts: usize) -> R<Type> {
    let kind = r.byte("a type")?;
    let level = Level(r.u32("a level")?);
    let log_scale = LogScale(r.f("a scale")?);
    let slots = r.u32("a slot count")?;
    let layout = r.u32("a layout index")?;
    if layout as usize >= layouts {
        return r.err(format!(
            "layout #{layout} does not exist ({layouts} layouts)"
        ));
    }
    let layout = LayoutId(layout);
    match kind {
        0 => {
            let size = r.byte("a ciphertext size")?;
            Ok(Type::Cipher {
                level,
                log_scale,
                slots,
                layout,
                size,
            })
        }
        1 => Ok(Type::Plain {
            level,
            log_scale,
            slots,
            layout,
        }),
        k => r.err(format!("unknown type kind {k}")),
    }
}

/// Reads a module from its binary form (see the module note).
pub fn decode(bytes: &[u8]) -> Result<Module, BinaryError> {
    let mut r = Reader { b: bytes, at: 0 };
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return r.err("not a binary hecc circuit (wrong magic bytes)");
    }
    r.at = MAGIC.len();
    let version = r.byte("the version")?;
    if version != VERSION {
        return r.err(format!(
            "binary circuit version {version} is not supported (this hecc reads {VERSION})"
        ));
    }
    let name = r.s("the module name")?;
    let batch = r.u32("the batch")?;
    let log_scale = LogScale(r.f("the module scale")?);
    let mut m = Module::new(Meta {
        name,
        batch,
        log_scale,
    });
    if r.byte("the params flag")? == 1 {
        let log_n = r.u32("log_n")?;
        let n = r.count("the prime count", 1)?;
        let primes = (0..n).map(|_| r.u("a prime")).collect::<R<Vec<_>>>()?;
        m.params = Some(Params { log_n, primes });
    }
    if r.byte("the boot flag")? == 1 {
        m.boot = Some(BootInfo {
            out_level: Level(r.u32("the boot level")?),
            in_log_scale: LogScale(r.f("the boot input scale")?),
            out_log_scale: LogScale(r.f("the boot output scale")?),
            depth: r.u32("the boot depth")?,
            message_bound: r.f("the boot bound")?,
            slots: r.u32("the boot slots")?,
        });
    }
    let nlayouts = r.count("the layout count", 3)?;
    for _ in 0..nlayouts {
        let name = r.s("a layout name")?;
        let at = r.at;
        let layout = read_layout(&mut r)?;
        if let Err(e) = m.add_layout(&name, layout) {
            return Err(BinaryError {
                offset: at,
                message: e.to_string(),
            });
        }
    }
    let nconst = r.count("the constant count", 4)?;
    for _ in 0..nconst {
        let v = read_constant(&mut r)?;
        m.push_constant(v);
    }
    let nnames = r.count("the name count", 1)?;
    for i in 0..nnames {
        let s = r.s("a name")?;
        if m.intern(&s).0 as usize != i {
            return r.err(format!("name {s:?} is listed twice"));
        }
    }
    let ntypes = r.count("the type count", 12)?;
    let types = (0..ntypes)
        .map(|_| read_type(&mut r, nlayouts))
        .collect::<R<Vec<_>>>()?;
    let coeffs = r.lists("coefficient list", 8, |r| r.f("a coefficient"))?;
    let ncoeffs = coeffs.len();
    let patterns = r.lists("operand pattern", 1, |r| r.i("an operand difference"))?;
    let npatterns = patterns.len();

    let slots = r.count("the node count", 1)?;
    if slots > u32::MAX as usize {
        return r.err("too many nodes");
    }
    let mut holes = Vec::new();
    let mut edges: Vec<(u32, u32, u32)> = Vec::new();
    let placeholder = Type::cipher(Level(0), LogScale(0.0), 1, LayoutId(0));
    // Nodes are read whole first, so the graph is allocated once at its final size.
    let mut nodes: Vec<HeNode> = Vec::with_capacity(slots);
    for i in 0..slots {
        let id = i as i64;
        let t = r.byte("a node's op")?;
        if t == 0 {
            holes.push(ValueId(i as u32));
            nodes.push(HeNode {
                op: Op::Negate,
                ty: placeholder,
            });
            continue;
        }
        let k = r.u("a node's type")?;
        let Some(&ty) = types.get(k as usize) else {
            return r.err(format!("node %{i} has type #{k} of {ntypes}"));
        };
        // A mac's operands come from its interned pattern, so their count is not bounded by
        // the bytes left; every other operand reads bytes.
        let nops = r.usize_max("a node's operand count", u32::MAX as usize)?;
        let mut ops: Vec<i64> = Vec::with_capacity(nops.min(1 << 16));
        if nops > 0 {
            ops.push(id - r.i("an operand")?);
        }
        let check_name = |r: &Reader<'_>, n: u32| -> R<NameId> {
            if (n as usize) < nnames {
                Ok(NameId(n))
            } else {
                r.err(format!("node %{i} names #{n} of {nnames} names"))
            }
        };
        let op = if t == tag::MAC {
            let p = r.u("a mac's operand pattern")?;
            let Some(p) = patterns.get(p as usize) else {
                return r.err(format!("node %{i} has operand pattern #{p} of {npatterns}"));
            };
            if p.len() + 1 != nops {
                return r.err(format!(
                    "node %{i} has {nops} operands and a pattern of {}",
                    p.len() + 1
                ));
            }
            for d in p {
                let prev = ops[ops.len() - 1];
                ops.push(prev.saturating_add(*d));
            }
            let c = r.u("a mac's coefficient list")?;
            let Some(c) = coeffs.get(c as usize) else {
                return r.err(format!("node %{i} has coefficient list #{c} of {ncoeffs}"));
            };
            let bias = match r.byte("a mac's bias flag")? {
                0 => None,
                1 => Some(r.f("a mac's bias")?),
                b => return r.err(format!("node %{i} has bias flag {b}")),
            };
            Op::Mac(Box::new(MacAttrs {
                coeffs: c.clone(),
                bias,
                log_scale: LogScale(r.f("a mac's scale")?),
            }))
        } else {
            for _ in 1..nops {
                let prev = ops[ops.len() - 1];
                ops.push(prev.saturating_add(r.i("an operand")?));
            }
            match t {
                tag::INPUT | tag::OUTPUT => {
                    let name = r.u32("a name index")?;
                    let name = check_name(&r, name)?;
                    let index = r.u32("an element index")?;
                    if t == tag::INPUT {
                        Op::Input { name, index }
                    } else {
                        Op::Output { name, index }
                    }
                }
                tag::ENCODE => {
                    let c = r.u32("a constant index")?;
                    if c as usize >= nconst {
                        return r.err(format!("node %{i} encodes @{c} of {nconst} constants"));
                    }
                    Op::Encode {
                        constant: ConstId(c),
                    }
                }
                tag::ADD => Op::Add,
                tag::SUB => Op::Sub,
                tag::NEGATE => Op::Negate,
                tag::ADD_PLAIN => Op::AddPlain,
                tag::SUB_PLAIN => Op::SubPlain,
                tag::ADD_SCALAR => Op::AddScalar {
                    value: r.f("a scalar")?,
                },
                tag::MUL => Op::Mul,
                tag::SQUARE => Op::Square,
                tag::MUL_PLAIN => Op::MulPlain,
                tag::MUL_SCALAR => Op::MulScalar {
                    value: r.f("a scalar")?,
                    log_scale: LogScale(r.f("a scalar's scale")?),
                },
                tag::MUL_INTEGER => Op::MulInteger {
                    factor: r.i("an integer factor")?,
                },
                tag::RELINEARIZE => Op::Relinearize,
                tag::RESCALE => Op::Rescale,
                tag::DROP_LEVEL => Op::DropLevel {
                    to: Level(r.u32("a level")?),
                },
                tag::ROTATE => {
                    let s = r.i("a rotation")?;
                    match i32::try_from(s) {
                        Ok(steps) => Op::Rotate { steps },
                        Err(_) => return r.err(format!("rotation {s} is out of range")),
                    }
                }
                tag::CONJUGATE => Op::Conjugate,
                tag::BOOTSTRAP => Op::Bootstrap,
                other => return r.err(format!("node %{i} has unknown op tag {other}")),
            }
        };
        for (slot, &o) in ops.iter().enumerate() {
            if o < 0 || o as usize >= slots {
                return r.err(format!("node %{i} uses %{o}, which is not a node"));
            }
            edges.push((o as u32, i as u32, slot as u32));
        }
        nodes.push(HeNode { op, ty });
    }
    if r.at != bytes.len() {
        return r.err(format!("{} bytes follow the last node", bytes.len() - r.at));
    }
    let hole_set: std::collections::HashSet<u32> = holes.iter().map(|h| h.0).collect();
    for &(from, to, _) in &edges {
        if hole_set.contains(&from) {
            return Err(BinaryError {
                offset: r.at,
                message: format!("node %{to} uses %{from}, an unused id"),
            });
        }
    }
    let g = m.graph_mut();
    *g = petgraph::stable_graph::StableDiGraph::with_capacity(nodes.len(), edges.len());
    for node in nodes {
        g.add_node(node);
    }
    for (from, to, slot) in edges {
        g.add_edge(ValueId(from).node(), ValueId(to).node(), Operand(slot));
    }
    for h in holes {
        m.remove(h);
    }
    Ok(m)
}
