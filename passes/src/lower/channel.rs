//! The `channel` packing layout: slot = pixel, one ciphertext per channel, several images side
//! by side.
//!
//! Contract: [`lower_channel`] turns a verified tensor graph into an *unmanaged* HE circuit (no
//! rescale, no level drop; [`crate::he::manage`] places them) whose inputs are one ciphertext per
//! input channel, packed as the module's single [`Layout::Channel`] says: element `(c, y, x)` of
//! image `i` is in slot `i * image_stride + y * width + x` of input ciphertext `c`. Each output
//! ciphertext holds some elements of an output tensor at per-image offsets, listed in
//! [`ChannelLowered::outputs`]; [`ChannelLowered::unpack`] reads them back. When output value
//! `i` holds the flat elements `i * n .. (i + 1) * n` on a regular `(c, y, x)` slot pattern (the
//! case of dense and convolution outputs), that pattern is also recorded in the module as the
//! output's layout ([`Module::set_output_layout`]), so a client decrypts from the plan alone. The circuit computes
//! the tensor graph exactly (up to floating point) on every image; slots that hold no element may
//! contain anything.
//!
//! How values are carried. Every tensor is a list of *forms*: a form is a linear combination
//! `sum_t coef_t (.) rot(ct_t, r_t) + off` of rotated ciphertexts with per-slot coefficient and
//! offset vectors (kept per image, on the form's *support*: the slot offsets that hold tensor
//! elements), and every tensor element names its form and support index. Linear layers only
//! compose forms (no HE operation): a convolution is a sum of rotations of its input channels by
//! the kernel offsets, with the weights and the padding masks as coefficients; stride and pooling
//! are tracked by the positions of the output support (no repacking); batch-norm, scaling and
//! offsets update the coefficient and offset vectors. A form is *materialised* only when a
//! non-linear op (or an output) needs a ciphertext:
//!
//! * all terms share one coefficient vector: rotations and additions, no level (pooling);
//! * every coefficient vector is uniform on the support: rotations and one scalar `mac`
//!   (1x1 convolutions, unpadded convolutions);
//! * otherwise, within the plaintext budget: one `mul_plain` per term (`encode` of a
//!   constant-pool vector) and additions, one level; the terms that rotate one ciphertext by
//!   many steps (dense layers: the diagonal method) use baby-step giant-step rotations;
//! * over the budget: the masks shared by all output channels are applied once per rotated
//!   input (`mul_plain`) and the weights by a scalar `mac` (two levels, few plaintexts).
//!
//! Packing. Stride and pooling leave a channel on a sparse grid of the image's slots (a quarter
//! of them after one stride-2 step, a sixteenth after two), so one ciphertext per channel would
//! waste most of every activation and bootstrap. Before an activation or an addition, the
//! channels of a grid tensor are packed ([`PackChannels`]): channel by channel, each joins the
//! open form at the smallest slot shift that keeps its positions in the image and off those
//! taken (the 4 cells of each 2x2 block, then of each 4x4 one), which only re-indexes the terms
//! and shifts their rotations. A packed form carries its parts and their shifts in its support;
//! it materialises by materialising each part alone with a strategy that leaves the other slots
//! at zero (masks, no shared-vector sums or bare scalar `mac`s), rotating each by its shift and
//! adding: one ciphertext for up to 16 channels, no extra level wherever a part's coefficients
//! already vary (padded convolutions). Terms that read a ciphertext in place with one
//! coefficient (a packed shortcut added in) are added as they are. Consumers read a packed
//! tensor through its element positions like any other, so convolutions compose their
//! rotations with the shifts and the next packing point finds the same layout.
//!
//! A quadratic first folds `sqrt|a|` (per element) into the coefficients of the form it reads
//! (free), then completes the square (`add_plain`/`add_scalar` and one `square`), leaving the
//! per-element leading factor pending; polynomials and ReLU approximations run
//! [`crate::approx::EvalPlan`] on a ciphertext whose pending factor is uniform (a `mul_plain`
//! normalises it when it is not). Max-pooling takes the window elements as rotations of the
//! input channel and reduces them pairwise with `max(a, b) = b + relu(a - b)` (the ReLU
//! approximated as the policy says); windows that reach into the padding are lowered only after
//! a ReLU, whose output is non-negative, so that the padding's zero is neutral.

use super::lazy::{Emitter, Lazy};
use super::{apply_approx, run_plan, LayerSpan, LowerError, LowerOptions, Lowered};
use crate::approx::{ChebSeries, EvalPlan};
use hecc_ir::he::interp::OutputValue;
use hecc_ir::he::{HeError, Layout, LayoutId, Level, LogScale, Meta, Module, ValueId};
use hecc_ir::tensor::{verify, Granularity, Graph, NodeId, Op, Shape, Tensor};
use std::collections::HashMap;
use std::rc::Rc;

mod ops;

/// Default plaintext budget: slot values the constant pool may hold for one-level linear layers
/// (`2^24` values = 128 MiB of `f64`); beyond it, layers use the two-level shared-mask form.
pub const DEFAULT_PLAINTEXT_BUDGET: u64 = 1 << 24;

/// Fewest distinct rotations of one ciphertext in a form before baby-step giant-step is tried.
const BSGS_MIN_ROTATIONS: usize = 6;

/// Options of the channel lowering.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// The common options; `batch` is the number of images wanted side by side (clamped to what
    /// fits), `slots` the slot count N/2.
    pub lower: LowerOptions,
    /// Slot values the constant pool may hold for one-level linear layers.
    pub plaintext_budget: u64,
    /// When to pack several channels into one ciphertext where their grids leave room (after
    /// strided convolutions and pooling), before activations and residual additions.
    pub pack: PackChannels,
}

/// When the channel lowering packs several channels into one ciphertext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PackChannels {
    /// One channel per ciphertext.
    Never,
    /// Where it costs no level (the default): every later per-ciphertext cost (activation,
    /// relinearisation, bootstrap) falls with the number of ciphertexts.
    #[default]
    Free,
    /// Wherever there is room, masking channels first where needed (one level): for circuits
    /// whose cost is the number of ciphertexts bootstrapped rather than their depth.
    Always,
}

impl ChannelOptions {
    /// Options with the default plaintext budget, packing where it is free.
    pub fn new(lower: LowerOptions) -> Self {
        ChannelOptions {
            lower,
            plaintext_budget: DEFAULT_PLAINTEXT_BUDGET,
            pack: PackChannels::Free,
        }
    }
}

/// Why a graph could not be lowered in the channel layout.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ChannelError {
    /// A failure shared with the batch lowering.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Lower(#[from] LowerError),
    /// The graph uses something this layout does not support.
    #[error("node `{node}` ({op}) cannot be lowered in the channel layout: {reason}")]
    #[diagnostic(
        code(hecc::lower::channel::unsupported),
        help("use --layout batch for this model")
    )]
    Unsupported {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: String,
        /// What is missing.
        reason: String,
    },
    /// One image does not fit the slots.
    #[error("one image needs {need} slots, a ciphertext has {slots}")]
    #[diagnostic(
        code(hecc::lower::channel::image_too_large),
        help("use a larger ring degree or the batch layout")
    )]
    ImageTooLarge {
        /// Slots one image needs (the image stride).
        need: u64,
        /// Slots available.
        slots: u32,
    },
}

/// Where the elements of one model output live.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputPlacement {
    /// Output name.
    pub name: String,
    /// Output shape per image.
    pub shape: Vec<usize>,
    /// Per flat element: (output ciphertext index, slot offset within an image).
    pub elems: Vec<(u32, u32)>,
}

/// The result of [`lower_channel`].
#[derive(Debug)]
pub struct ChannelLowered {
    /// The unmanaged circuit and its layer spans.
    pub lowered: Lowered,
    /// Images side by side in every ciphertext.
    pub images: u32,
    /// Slot distance between images.
    pub image_stride: u32,
    /// The layout of the input ciphertexts (one per input channel).
    pub input_layout: Layout,
    /// Output placements, in the graph's output order.
    pub outputs: Vec<OutputPlacement>,
    /// Statistics of the lowering.
    pub stats: ChannelStats,
}

/// What the channel lowering did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Forms materialised with additions only (no level).
    pub sums: u64,
    /// Forms materialised with a scalar `mac`.
    pub scalar_macs: u64,
    /// Forms materialised with one `mul_plain` per term.
    pub direct: u64,
    /// Ciphertext groups that used baby-step giant-step rotations.
    pub bsgs_groups: u64,
    /// Forms materialised with shared masks (two levels).
    pub shared_mask: u64,
    /// Slot values put in the constant pool.
    pub plaintext_values: u64,
    /// Channels carried in packed forms (several channels per ciphertext).
    pub packed_channels: u64,
    /// Packed forms those channels went into.
    pub packed_forms: u64,
}

impl ChannelLowered {
    /// Reads output `name` of image `image` from the interpreter's (or a decryption's) output
    /// values; `None` if an element is missing.
    pub fn unpack(&self, outputs: &[OutputValue], name: &str, image: u32) -> Option<Vec<f64>> {
        let place = self.outputs.iter().find(|o| o.name == name)?;
        let by_index: HashMap<u32, &OutputValue> = outputs
            .iter()
            .filter(|o| o.name == name)
            .map(|o| (o.index, o))
            .collect();
        place
            .elems
            .iter()
            .map(|&(ct, off)| {
                let slot = image as usize * self.image_stride as usize + off as usize;
                by_index.get(&ct)?.slots.get(slot).copied()
            })
            .collect()
    }
}

/// Packs input channel `channel` of `images` (each a flat `C x H x W` tensor) into a slot vector
/// of `slots` values as `layout` (a [`Layout::Channel`] with one channel per value) says. `None`
/// if the layout is not a channel layout or an image is too short.
pub fn pack_channel(
    layout: &Layout,
    slots: u32,
    images: &[&[f64]],
    channel: u32,
) -> Option<Vec<f64>> {
    let Layout::Channel {
        height,
        width,
        offset,
        y_stride,
        x_stride,
        images: count,
        image_stride,
        ..
    } = *layout
    else {
        return None;
    };
    let mut v = vec![0.0; slots as usize];
    let hw = height as usize * width as usize;
    for (i, img) in images.iter().enumerate().take(count.max(1) as usize) {
        for y in 0..height as usize {
            for x in 0..width as usize {
                let e = *img.get(channel as usize * hw + y * width as usize + x)?;
                let s = offset as usize
                    + i * image_stride as usize
                    + y * y_stride as usize
                    + x * x_stride as usize;
                *v.get_mut(s)? = e;
            }
        }
    }
    Some(v)
}

// ----- forms ----------------------------------------------------------------------------------

/// The slot offsets of a form that hold tensor elements (per image, sorted), and the part each
/// belongs to: a packed form carries several channels, one part each ([`Lowerer::pack`]).
#[derive(Clone, Debug, Default, PartialEq)]
struct Support {
    offs: Vec<u32>,
    /// Part of each offset; empty when the form carries one part.
    parts: Vec<u32>,
    /// Per part, the slot shift its channel was packed at.
    shifts: Vec<u32>,
}

impl std::ops::Deref for Support {
    type Target = Vec<u32>;
    fn deref(&self) -> &Vec<u32> {
        &self.offs
    }
}

impl From<Vec<u32>> for Support {
    fn from(offs: Vec<u32>) -> Self {
        Support {
            offs,
            parts: Vec::new(),
            shifts: Vec::new(),
        }
    }
}

impl Support {
    /// The number of parts (channels) the form carries.
    fn part_count(&self) -> u32 {
        self.parts.iter().max().map_or(1, |m| m + 1)
    }

    /// The part of support index `j`.
    fn part(&self, j: usize) -> u32 {
        self.parts.get(j).copied().unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
struct Term {
    ct: ValueId,
    rot: i64,
    coef: Rc<Vec<f64>>,
}

/// `sum_t coef_t (.) rot(ct_t, rot_t) + off` on the slots `support` (per-image offsets, sorted).
#[derive(Clone, Debug)]
struct Form {
    support: Rc<Support>,
    terms: Vec<Term>,
    off: Rc<Vec<f64>>,
}

impl Form {
    fn is_plain(&self) -> bool {
        self.terms.len() == 1 && self.terms[0].rot == 0
    }

    /// Plaintexts a one-level materialisation takes: one per term, or for a packed form one per
    /// term and part it reaches (its channels are materialised one by one).
    fn plaintexts(&self) -> u64 {
        if self.support.part_count() < 2 {
            return self.terms.len() as u64;
        }
        self.terms
            .iter()
            .map(|t| {
                let mut parts: Vec<u32> = (0..t.coef.len())
                    .filter(|&j| t.coef[j] != 0.0)
                    .map(|j| self.support.part(j))
                    .collect();
                parts.sort_unstable();
                parts.dedup();
                parts.len() as u64
            })
            .sum()
    }

    fn index_of(&self, offset: i64) -> Option<usize> {
        u32::try_from(offset)
            .ok()
            .and_then(|o| self.support.binary_search(&o).ok())
    }
}

/// A tensor: its forms and, per flat element, (form, support index).
#[derive(Clone, Debug)]
struct CVal {
    forms: Vec<Form>,
    pos: Vec<(u32, u32)>,
}

impl CVal {
    /// Whether some form carries several channels.
    fn is_packed(&self) -> bool {
        self.forms.iter().any(|f| f.support.part_count() > 1)
    }

    fn offset(&self, k: usize) -> Option<(usize, i64)> {
        let (f, j) = *self.pos.get(k)?;
        let off = *self.forms.get(f as usize)?.support.get(j as usize)?;
        Some((f as usize, i64::from(off)))
    }
}

/// Accumulates a new form on a given support.
struct Acc {
    support: Rc<Support>,
    index: HashMap<(ValueId, i64), usize>,
    terms: Vec<(ValueId, i64, Vec<f64>)>,
    off: Vec<f64>,
}

impl Acc {
    fn new(support: Rc<Support>) -> Acc {
        let n = support.len();
        Acc {
            support,
            index: HashMap::new(),
            terms: Vec::new(),
            off: vec![0.0; n],
        }
    }

    fn entry(&mut self, ct: ValueId, rot: i64) -> &mut Vec<f64> {
        let n = self.support.len();
        let i = *self.index.entry((ct, rot)).or_insert_with(|| {
            self.terms.push((ct, rot, vec![0.0; n]));
            self.terms.len() - 1
        });
        &mut self.terms[i].2
    }

    /// Adds `w * src(at support offset + r)` at each `(out index, src index)` of `plan`.
    fn gather(&mut self, src: &Form, r: i64, plan: &[(usize, usize)], w: f64) {
        if w == 0.0 {
            return;
        }
        for t in &src.terms {
            let coef = Rc::clone(&t.coef);
            let e = self.entry(t.ct, t.rot + r);
            for &(o, s) in plan {
                e[o] += w * coef[s];
            }
        }
        for &(o, s) in plan {
            self.off[o] += w * src.off[s];
        }
    }

    fn finish(self) -> Form {
        Form {
            support: self.support,
            terms: self
                .terms
                .into_iter()
                .filter(|t| t.2.iter().any(|&c| c != 0.0))
                .map(|(ct, rot, coef)| Term {
                    ct,
                    rot,
                    coef: Rc::new(coef),
                })
                .collect(),
            off: Rc::new(self.off),
        }
    }
}

/// `(output support index, source support index)` pairs.
type IndexPlan = Vec<(usize, usize)>;

/// The resolved source indices of `src` for output offsets shifted by `r`.
fn plan_for(src: &Form, r: i64, outs: &[(usize, i64)]) -> Option<Vec<(usize, usize)>> {
    outs.iter()
        .map(|&(o, off)| src.index_of(off + r).map(|s| (o, s)))
        .collect()
}

fn uniform(v: &[f64]) -> Option<f64> {
    let first = *v.first()?;
    v.iter()
        .all(|&x| (x - first).abs() <= 1e-12 * first.abs().max(1e-300))
        .then_some(first)
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()))
}

/// The channels of a packed form, each as the form it was before packing (its positions
/// shifted back, its terms and offsets restricted to them), in part order.
fn unpack_parts(f: &Form) -> Vec<Form> {
    let sup = &f.support;
    (0..sup.shifts.len())
        .map(|k| {
            let d = sup.shifts[k];
            let idx: Vec<usize> = (0..sup.len())
                .filter(|&j| sup.part(j) == k as u32)
                .collect();
            let support = Rc::new(Support::from(
                idx.iter().map(|&j| sup[j] - d).collect::<Vec<_>>(),
            ));
            let terms = f
                .terms
                .iter()
                .filter_map(|t| {
                    let coef: Vec<f64> = idx.iter().map(|&j| t.coef[j]).collect();
                    coef.iter().any(|&c| c != 0.0).then(|| Term {
                        ct: t.ct,
                        rot: t.rot + i64::from(d),
                        coef: Rc::new(coef),
                    })
                })
                .collect();
            Form {
                off: Rc::new(idx.iter().map(|&j| f.off[j]).collect()),
                support,
                terms,
            }
        })
        .collect()
}

/// `v` with every packed form split back into one form per channel (rotations only): what a
/// model output needs, whose ciphertexts the client reads channel by channel.
fn unpack_val(v: &CVal) -> CVal {
    let mut forms = Vec::with_capacity(v.forms.len());
    // Per old form: per support index, (new form, index in it).
    let mut map: Vec<Vec<(u32, u32)>> = Vec::with_capacity(v.forms.len());
    for f in &v.forms {
        if f.support.part_count() < 2 {
            map.push(
                (0..f.support.len() as u32)
                    .map(|j| (forms.len() as u32, j))
                    .collect(),
            );
            forms.push(f.clone());
            continue;
        }
        let first = forms.len() as u32;
        let mut seen = vec![0u32; f.support.shifts.len()];
        map.push(
            (0..f.support.len())
                .map(|j| {
                    let k = f.support.part(j) as usize;
                    seen[k] += 1;
                    (first + k as u32, seen[k] - 1)
                })
                .collect(),
        );
        forms.extend(unpack_parts(f));
    }
    CVal {
        forms,
        pos: v
            .pos
            .iter()
            .map(|&(f, j)| map[f as usize][j as usize])
            .collect(),
    }
}

// ----- the lowerer ----------------------------------------------------------------------------

struct Lowerer<'m> {
    em: Emitter<'m>,
    layout: LayoutId,
    slots: u32,
    images: u32,
    stride: u32,
    budget: u64,
    pack: PackChannels,
    rot_cache: HashMap<(ValueId, i64), ValueId>,
    stats: ChannelStats,
}

type R<T> = Result<T, HeError>;

impl Lowerer<'_> {
    fn depth(&self, v: ValueId) -> u32 {
        self.em.depth.get(&v).copied().unwrap_or(0)
    }

    fn note(&mut self, v: ValueId, d: u32) -> ValueId {
        self.em.depth.insert(v, d);
        v
    }

    /// The rotation amount normalised to `(-n/2, n/2]`.
    fn norm_rot(&self, r: i64) -> i64 {
        let n = i64::from(self.slots);
        let k = r.rem_euclid(n);
        if k > n / 2 {
            k - n
        } else {
            k
        }
    }

    fn rotate(&mut self, ct: ValueId, r: i64) -> R<ValueId> {
        let ct = self.em.relin(ct)?;
        let r = self.norm_rot(r);
        if r == 0 {
            return Ok(ct);
        }
        if let Some(&v) = self.rot_cache.get(&(ct, r)) {
            return Ok(v);
        }
        let d = self.depth(ct);
        let v = self.em.module.rotate(ct, r as i32)?;
        self.note(v, d);
        self.rot_cache.insert((ct, r), v);
        Ok(v)
    }

    /// A full slot vector with `vals[j]` at `support[j] + shift` of every image.
    fn tile(&self, support: &[u32], vals: &[f64], shift: i64) -> Vec<f64> {
        let n = self.slots as usize;
        let mut full = vec![0.0; n];
        for img in 0..self.images as i64 {
            for (&s, &v) in support.iter().zip(vals) {
                let p = (img * i64::from(self.stride) + i64::from(s) + shift).rem_euclid(n as i64);
                full[p as usize] = v;
            }
        }
        full
    }

    fn encode(&mut self, full: Vec<f64>, scale: LogScale) -> R<ValueId> {
        self.stats.plaintext_values += full.len() as u64;
        let c = self.em.module.add_constant(full);
        self.em.module.encode(c, Level(0), scale, self.layout)
    }

    fn mul_plain(&mut self, ct: ValueId, full: Vec<f64>) -> R<ValueId> {
        let ct = self.em.relin(ct)?;
        let p = self.encode(full, self.em.scalar_log_scale)?;
        let d = self.depth(ct) + 1;
        let v = self.em.module.mul_plain(ct, p)?;
        Ok(self.note(v, d))
    }

    fn add_plain(&mut self, ct: ValueId, full: Vec<f64>) -> R<ValueId> {
        let ct = self.em.relin(ct)?;
        let scale = self
            .em
            .module
            .ty(ct)
            .map_or(self.em.scalar_log_scale, |t| t.log_scale());
        let p = self.encode(full, scale)?;
        let d = self.depth(ct);
        let v = self.em.module.add_plain(ct, p)?;
        Ok(self.note(v, d))
    }

    fn add(&mut self, a: ValueId, b: ValueId) -> R<ValueId> {
        let d = self.depth(a).max(self.depth(b));
        let v = self.em.module.add(a, b)?;
        Ok(self.note(v, d))
    }

    fn sum(&mut self, vs: &[ValueId]) -> R<Option<ValueId>> {
        let mut acc: Option<ValueId> = None;
        for &v in vs {
            acc = Some(match acc {
                None => v,
                Some(a) => self.add(a, v)?,
            });
        }
        Ok(acc)
    }

    fn mac(&mut self, terms: &[(ValueId, f64)]) -> R<ValueId> {
        let mut merged: Vec<(ValueId, f64)> = Vec::new();
        for &(v, c) in terms {
            let v = self.em.relin(v)?;
            match merged.iter_mut().find(|t| t.0 == v) {
                Some(t) => t.1 += c,
                None => merged.push((v, c)),
            }
        }
        let d = merged.iter().map(|t| self.depth(t.0)).max().unwrap_or(0) + 1;
        let v = self
            .em
            .module
            .mac(&merged, None, self.em.scalar_log_scale)?;
        Ok(self.note(v, d))
    }

    fn plain_form(support: Rc<Support>, ct: ValueId, coef: Vec<f64>, off: Rc<Vec<f64>>) -> Form {
        Form {
            support,
            terms: vec![Term {
                ct,
                rot: 0,
                coef: Rc::new(coef),
            }],
            off,
        }
    }

    /// Materialises every form of `v` (see the module notes for the strategies).
    fn materialize(&mut self, v: &CVal) -> R<CVal> {
        self.materialize_with(v, false)
    }

    /// [`Self::materialize`]; with `clean`, every resulting ciphertext is zero off its form's
    /// support (no strategy that leaves other slots as they come).
    fn materialize_with(&mut self, v: &CVal, clean: bool) -> R<CVal> {
        let mut forms: Vec<Option<Form>> = vec![None; v.forms.len()];
        let mut pending: Vec<usize> = Vec::new();
        // Packed forms: their channels are materialised together, each zero off its own
        // positions, and summed at their shifts (rotations, no level).
        let packed: Vec<usize> = (0..v.forms.len())
            .filter(|&i| {
                let f = &v.forms[i];
                f.support.part_count() > 1 && !f.terms.is_empty() && !f.is_plain()
            })
            .collect();
        if !packed.is_empty() {
            // Terms that read a ciphertext in place with one coefficient everywhere (a packed
            // value added in, e.g. a residual shortcut) are added as they are; the others are
            // gathered part by part, divided by that coefficient.
            let mut members = Vec::new();
            let mut whole: Vec<(Vec<ValueId>, f64)> = Vec::with_capacity(packed.len());
            for &i in &packed {
                let f = &v.forms[i];
                let (mut ins, mut rest): (Vec<&Term>, Vec<&Term>) = f
                    .terms
                    .iter()
                    .partition(|t| t.rot == 0 && uniform(&t.coef).is_some_and(|c| c != 0.0));
                let c = ins.first().and_then(|t| uniform(&t.coef)).unwrap_or(1.0);
                if ins.iter().any(|t| uniform(&t.coef) != Some(c)) {
                    rest.append(&mut ins);
                }
                let scaled = Form {
                    support: Rc::clone(&f.support),
                    terms: rest
                        .into_iter()
                        .map(|t| Term {
                            ct: t.ct,
                            rot: t.rot,
                            coef: Rc::new(t.coef.iter().map(|x| x / c).collect()),
                        })
                        .collect(),
                    off: Rc::clone(&f.off),
                };
                members.extend(unpack_parts(&scaled));
                whole.push((ins.iter().map(|t| t.ct).collect(), c));
            }
            let mut was_plain = members
                .iter()
                .map(Form::is_plain)
                .collect::<Vec<_>>()
                .into_iter();
            let done = self.materialize_with(
                &CVal {
                    forms: members,
                    pos: Vec::new(),
                },
                true,
            )?;
            let mut next = done.forms.into_iter();
            for (&i, (ins, c)) in packed.iter().zip(whole) {
                let f = &v.forms[i];
                let mut parts = Vec::with_capacity(f.support.shifts.len() + ins.len());
                for &d in &f.support.shifts {
                    // unpack_parts gives one member per shift.
                    let (Some(m), Some(kept)) = (next.next(), was_plain.next()) else {
                        break;
                    };
                    let Some(t) = m.terms.first() else {
                        continue;
                    };
                    // A part that kept its ciphertext as it came (plain before) may hold
                    // anything off its positions: it is masked (with its coefficients).
                    let ct = if kept || t.coef.iter().any(|&c| c != 1.0) {
                        let full = self.tile(&m.support, &t.coef, 0);
                        self.mul_plain(t.ct, full)?
                    } else {
                        t.ct
                    };
                    parts.push(self.rotate(ct, -i64::from(d))?);
                }
                for ct in ins {
                    parts.push(self.em.relin(ct)?);
                }
                let s = self.sum(&parts)?;
                let n = f.support.len();
                forms[i] = Some(match s {
                    Some(ct) => {
                        Self::plain_form(Rc::clone(&f.support), ct, vec![c; n], Rc::clone(&f.off))
                    }
                    None => Form {
                        support: Rc::clone(&f.support),
                        terms: vec![],
                        off: Rc::clone(&f.off),
                    },
                });
            }
        }
        for (i, f) in v.forms.iter().enumerate() {
            if forms[i].is_some() {
                continue;
            }
            if f.terms.is_empty() || f.is_plain() {
                forms[i] = Some(f.clone());
                continue;
            }
            // One shared coefficient vector: additions only.
            if !clean && f.terms.iter().all(|t| same(&t.coef, &f.terms[0].coef)) {
                let mut vs = Vec::with_capacity(f.terms.len());
                for t in &f.terms {
                    vs.push(self.rotate(t.ct, t.rot)?);
                }
                if let Some(s) = self.sum(&vs)? {
                    self.stats.sums += 1;
                    forms[i] = Some(Self::plain_form(
                        Rc::clone(&f.support),
                        s,
                        f.terms[0].coef.to_vec(),
                        Rc::clone(&f.off),
                    ));
                    continue;
                }
            }
            // Uniform coefficients: one scalar mac.
            let scalars: Option<Vec<f64>> = f.terms.iter().map(|t| uniform(&t.coef)).collect();
            if let Some(cs) = scalars.filter(|_| !clean) {
                let mut ts = Vec::with_capacity(cs.len());
                for (t, c) in f.terms.iter().zip(cs) {
                    ts.push((self.rotate(t.ct, t.rot)?, c));
                }
                let m = self.mac(&ts)?;
                self.stats.scalar_macs += 1;
                let n = f.support.len();
                forms[i] = Some(Self::plain_form(
                    Rc::clone(&f.support),
                    m,
                    vec![1.0; n],
                    Rc::clone(&f.off),
                ));
                continue;
            }
            pending.push(i);
        }
        if !pending.is_empty() {
            let need: u64 = pending
                .iter()
                .map(|&i| v.forms[i].terms.len() as u64 * u64::from(self.slots))
                .sum();
            let shared = if self.stats.plaintext_values + need > self.budget {
                self.shared_masks(v, &pending, clean)?
            } else {
                None
            };
            match shared {
                Some(done) => {
                    for (i, f) in pending.iter().zip(done) {
                        forms[*i] = Some(f);
                    }
                }
                None => {
                    for &i in &pending {
                        forms[i] = Some(self.direct(&v.forms[i])?);
                    }
                }
            }
        }
        Ok(CVal {
            forms: forms
                .into_iter()
                .zip(&v.forms)
                .map(|(f, orig)| f.unwrap_or_else(|| orig.clone()))
                .collect(),
            pos: v.pos.clone(),
        })
    }

    /// One `mul_plain` per term (baby-step giant-step for ciphertexts rotated by many steps).
    fn direct(&mut self, f: &Form) -> R<Form> {
        self.stats.direct += 1;
        let mut groups: Vec<(ValueId, Vec<&Term>)> = Vec::new();
        for t in &f.terms {
            match groups.iter_mut().find(|g| g.0 == t.ct) {
                Some(g) => g.1.push(t),
                None => groups.push((t.ct, vec![t])),
            }
        }
        let mut parts = Vec::new();
        for (ct, terms) in groups {
            parts.extend(self.direct_group(&f.support, ct, &terms)?);
        }
        let s = match self.sum(&parts)? {
            Some(s) => s,
            None => return Ok(f.clone()),
        };
        let n = f.support.len();
        Ok(Self::plain_form(
            Rc::clone(&f.support),
            s,
            vec![1.0; n],
            Rc::clone(&f.off),
        ))
    }

    fn direct_group(&mut self, support: &[u32], ct: ValueId, terms: &[&Term]) -> R<Vec<ValueId>> {
        let rots: Vec<i64> = terms.iter().map(|t| self.norm_rot(t.rot)).collect();
        let plain_rotations = rots.iter().filter(|&&r| r != 0).count();
        if terms.len() >= BSGS_MIN_ROTATIONS {
            let (lo, hi) = (
                rots.iter().copied().min().unwrap_or(0),
                rots.iter().copied().max().unwrap_or(0),
            );
            let span = (hi - lo + 1) as f64;
            let b = span.sqrt().ceil().max(1.0) as i64;
            let mut babies: Vec<i64> = rots.iter().map(|r| (r - lo) % b).collect();
            let mut giants: Vec<i64> = rots.iter().map(|r| (r - lo) / b).collect();
            babies.sort_unstable();
            babies.dedup();
            giants.sort_unstable();
            giants.dedup();
            let cost = babies
                .iter()
                .filter(|&&x| self.norm_rot(lo + x) != 0)
                .count()
                + giants
                    .iter()
                    .filter(|&&g| self.norm_rot(g * b) != 0)
                    .count();
            if cost < plain_rotations {
                self.stats.bsgs_groups += 1;
                let mut inner: Vec<(i64, Vec<ValueId>)> = Vec::new();
                for (t, &r) in terms.iter().zip(&rots) {
                    let (g, bb) = ((r - lo) / b, (r - lo) % b);
                    let baby = self.rotate(ct, lo + bb)?;
                    // rot(E (.) baby, g b) places E[p + g b] * ct[p + r] at p.
                    let full = self.tile(support, &t.coef, g * b);
                    let p = self.mul_plain(baby, full)?;
                    match inner.iter_mut().find(|x| x.0 == g) {
                        Some(x) => x.1.push(p),
                        None => inner.push((g, vec![p])),
                    }
                }
                let mut out = Vec::new();
                for (g, ps) in inner {
                    if let Some(s) = self.sum(&ps)? {
                        out.push(self.rotate(s, g * b)?);
                    }
                }
                return Ok(out);
            }
        }
        let mut out = Vec::with_capacity(terms.len());
        for t in terms {
            let r = self.rotate(ct, t.rot)?;
            let full = self.tile(support, &t.coef, 0);
            out.push(self.mul_plain(r, full)?);
        }
        Ok(out)
    }

    /// Two levels, few plaintexts: when every term `(ct, r)` has, across the pending forms
    /// (sharing one support), coefficients proportional to one vector `U`, computes
    /// `u = U (.) rot(ct, r)` once and each form as a scalar `mac` of the `u`. `None` when the
    /// coefficients are not proportional. With `clean`, every `u` is masked (even a uniform
    /// one), so the results are zero off the support.
    fn shared_masks(&mut self, v: &CVal, pending: &[usize], clean: bool) -> R<Option<Vec<Form>>> {
        let support = Rc::clone(&v.forms[pending[0]].support);
        if pending.iter().any(|&i| *v.forms[i].support != *support) {
            return Ok(None);
        }
        let mut base: HashMap<(ValueId, i64), Rc<Vec<f64>>> = HashMap::new();
        let mut order: Vec<(ValueId, i64)> = Vec::new();
        let mut ratios: Vec<Vec<((ValueId, i64), f64)>> = Vec::new();
        for &i in pending {
            let mut rs = Vec::new();
            for t in &v.forms[i].terms {
                let key = (t.ct, t.rot);
                let u = base.entry(key).or_insert_with(|| {
                    order.push(key);
                    Rc::clone(&t.coef)
                });
                let Some(j) = u.iter().position(|&x| x != 0.0) else {
                    return Ok(None);
                };
                let lambda = t.coef[j] / u[j];
                if !t
                    .coef
                    .iter()
                    .zip(u.iter())
                    .all(|(c, x)| (c - lambda * x).abs() <= 1e-12 * c.abs().max(1e-300))
                {
                    return Ok(None);
                }
                rs.push((key, lambda));
            }
            ratios.push(rs);
        }
        // Shared masks pay off only when the rotated inputs are shared by several forms.
        let total: usize = ratios.iter().map(Vec::len).sum();
        if base.len() * 2 > total {
            return Ok(None);
        }
        let mut masked: HashMap<(ValueId, i64), (ValueId, f64)> = HashMap::new();
        for key in order {
            let u = Rc::clone(&base[&key]);
            let r = self.rotate(key.0, key.1)?;
            let m = match uniform(&u).filter(|_| !clean) {
                Some(c) => (r, c),
                None => {
                    let full = self.tile(&support, &u, 0);
                    (self.mul_plain(r, full)?, 1.0)
                }
            };
            masked.insert(key, m);
        }
        let mut out = Vec::with_capacity(pending.len());
        for (&i, rs) in pending.iter().zip(ratios) {
            let ts: Vec<(ValueId, f64)> = rs
                .iter()
                .map(|(k, l)| {
                    let (u, c) = masked[k];
                    (u, l * c)
                })
                .collect();
            let m = self.mac(&ts)?;
            self.stats.shared_mask += 1;
            out.push(Self::plain_form(
                Rc::clone(&support),
                m,
                vec![1.0; support.len()],
                Rc::clone(&v.forms[i].off),
            ));
        }
        Ok(Some(out))
    }

    /// Packs the channels of a `C x H x W` tensor into fewer forms where their elements leave
    /// room (strided or pooled grids use a quarter of the slots or less): channels in order join
    /// the open form at the smallest slot shift that keeps their positions inside the image and
    /// off the ones taken, else open the next. Free (terms are re-indexed, rotations shifted by
    /// the channel's shift); what it saves is every later per-ciphertext cost (activations,
    /// bootstraps), since a packed form materialises as one ciphertext. Deterministic in the
    /// supports, so two operands of an addition laid out alike pack alike. `None` when nothing
    /// packs (no room, not a channel grid, or already packed) and, unless `force`, when packing
    /// would cost a level: a channel whose terms all have uniform coefficients materialises
    /// alone with scalars only, leaving its other slots as they come, so packed it would need a
    /// mask first.
    fn pack(&mut self, v: &CVal, shape: &Shape, force: bool) -> Option<CVal> {
        let gr = grid(v, shape)?;
        let mut seen = std::collections::HashSet::new();
        if !gr.form.iter().all(|f| seen.insert(*f)) || gr.form.len() < 2 {
            return None;
        }
        // A plain form (one ciphertext as it came) needs a mask too; unpacked, its coefficients
        // would fold into the next product for free.
        let dear = |f: &Form| {
            !f.terms.is_empty()
                && (f.is_plain() || f.terms.iter().all(|t| uniform(&t.coef).is_some()))
        };
        if !force && gr.form.iter().any(|&f| dear(&v.forms[f])) {
            return None;
        }
        let stride = self.stride as usize;
        /// Slots taken, and the members as (form, shift).
        struct Group {
            taken: Vec<bool>,
            members: Vec<(usize, u32)>,
        }
        let mut groups: Vec<Group> = Vec::new();
        for &f in &gr.form {
            let form = &v.forms[f];
            if form.support.part_count() > 1 {
                return None;
            }
            let hi = form.support.last().copied().unwrap_or(0) as usize;
            if hi >= stride {
                return None;
            }
            let shift = groups.last().and_then(|g| {
                (0..stride.saturating_sub(hi))
                    .find(|&d| form.support.iter().all(|&o| !g.taken[o as usize + d]))
            });
            let d = match shift {
                Some(d) => d,
                None => {
                    groups.push(Group {
                        taken: vec![false; stride],
                        members: Vec::new(),
                    });
                    0
                }
            };
            let g = groups.last_mut()?;
            for &o in form.support.iter() {
                g.taken[o as usize + d] = true;
            }
            g.members.push((f, d as u32));
        }
        if groups.len() == gr.form.len() {
            return None;
        }
        // Per old form: (new form, shift, old support index -> new support index).
        let mut map: HashMap<usize, (u32, Vec<u32>)> = HashMap::new();
        let mut forms = Vec::with_capacity(groups.len());
        for (g, Group { members, .. }) in groups.iter().enumerate() {
            let mut offs: Vec<(u32, u32)> = Vec::new();
            for (k, &(f, d)) in members.iter().enumerate() {
                offs.extend(v.forms[f].support.iter().map(|&o| (o + d, k as u32)));
            }
            offs.sort_unstable();
            let support = Rc::new(Support {
                offs: offs.iter().map(|p| p.0).collect(),
                parts: offs.iter().map(|p| p.1).collect(),
                shifts: members.iter().map(|m| m.1).collect(),
            });
            let mut acc = Acc::new(Rc::clone(&support));
            for &(f, d) in members {
                let src = &v.forms[f];
                let idx: Vec<u32> = src
                    .support
                    .iter()
                    .map(|&o| support.binary_search(&(o + d)).unwrap_or(0) as u32)
                    .collect();
                let plan: Vec<(usize, usize)> = idx
                    .iter()
                    .enumerate()
                    .map(|(j, &n)| (n as usize, j))
                    .collect();
                // rot(ct, r - d) at o + d reads ct at o + r.
                acc.gather(src, -i64::from(d), &plan, 1.0);
                map.insert(f, (g as u32, idx));
            }
            forms.push(acc.finish());
        }
        self.stats.packed_channels += gr.form.len() as u64;
        self.stats.packed_forms += forms.len() as u64;
        let pos = v
            .pos
            .iter()
            .map(|&(f, j)| {
                let (g, idx) = &map[&(f as usize)];
                (*g, idx[j as usize])
            })
            .collect();
        Some(CVal { forms, pos })
    }

    /// Materialises forms whose terms share one coefficient vector (free: rotations and
    /// additions); leaves the others for the consumer to absorb.
    fn settle_cheap(&mut self, v: CVal) -> R<CVal> {
        let cheap = v.forms.iter().all(|f| {
            f.is_plain()
                || f.terms.is_empty()
                || f.terms.iter().all(|t| same(&t.coef, &f.terms[0].coef))
        });
        if cheap {
            self.materialize(&v)
        } else {
            Ok(v)
        }
    }

    /// A materialised form as a scalar lazy value (normalising a non-uniform pending factor
    /// or offset with a plaintext product or sum).
    fn scalar_lazy(&mut self, f: &Form) -> R<Option<Lazy>> {
        let Some(t) = f.terms.first() else {
            return Ok(None);
        };
        let mut ct = t.ct;
        let m = match uniform(&t.coef) {
            Some(m) => m,
            None => {
                let full = self.tile(&f.support, &t.coef, 0);
                ct = self.mul_plain(ct, full)?;
                1.0
            }
        };
        let o = match uniform(&f.off) {
            Some(o) => o,
            None => {
                let full = self.tile(&f.support, &f.off, 0);
                ct = self.add_plain(ct, full)?;
                0.0
            }
        };
        Ok(Some(Lazy { ct: Some(ct), m, o }))
    }

    fn from_lazy(support: &Rc<Support>, x: Lazy) -> Form {
        let n = support.len();
        match x.ct {
            Some(ct) => {
                Self::plain_form(Rc::clone(support), ct, vec![x.m; n], Rc::new(vec![x.o; n]))
            }
            None => Form {
                support: Rc::clone(support),
                terms: vec![],
                off: Rc::new(vec![x.o; n]),
            },
        }
    }

    /// `a x^2 + b x + c` per element (coefficients per support index of each form).
    fn quadratic(
        &mut self,
        x: &CVal,
        coef: impl Fn(usize) -> (f64, f64, f64),
    ) -> Result<CVal, String> {
        let per_form = per_form_coeffs(x, coef);
        // Folding sqrt|a| into the producers makes each of them a one-level plaintext form;
        // without the budget for that, the producers are materialised together (shared masks).
        let need: u64 = x
            .forms
            .iter()
            .filter(|f| !f.is_plain() && !f.terms.is_empty())
            .map(|f| f.plaintexts() * u64::from(self.slots))
            .sum();
        let fold = self.stats.plaintext_values + need <= self.budget;
        let x = if fold {
            x.clone()
        } else {
            self.materialize(x).map_err(|e| e.to_string())?
        };
        let mut forms = Vec::with_capacity(x.forms.len());
        for (f, abc) in x.forms.iter().zip(per_form) {
            forms.push(self.quadratic_form(f, &abc)?);
        }
        Ok(CVal {
            forms,
            pos: x.pos.clone(),
        })
    }

    fn quadratic_form(&mut self, f: &Form, abc: &[(f64, f64, f64)]) -> Result<Form, String> {
        match self.quadratic_inner(f, abc) {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    fn quadratic_inner(&mut self, f: &Form, abc: &[(f64, f64, f64)]) -> R<Result<Form, String>> {
        if f.terms.is_empty() {
            let off: Vec<f64> = f
                .off
                .iter()
                .zip(abc)
                .map(|(&o, &(a, b, c))| a * o * o + b * o + c)
                .collect();
            return Ok(Ok(Form {
                support: Rc::clone(&f.support),
                terms: vec![],
                off: Rc::new(off),
            }));
        }
        // Fold sqrt|a| into an unmaterialised producer (free).
        let fold: Vec<f64> = if !f.is_plain() && abc.iter().all(|t| t.0 != 0.0) {
            abc.iter().map(|t| t.0.abs().sqrt()).collect()
        } else {
            vec![1.0; abc.len()]
        };
        let scaled = Form {
            support: Rc::clone(&f.support),
            terms: f
                .terms
                .iter()
                .map(|t| Term {
                    ct: t.ct,
                    rot: t.rot,
                    coef: Rc::new(t.coef.iter().zip(&fold).map(|(c, g)| c * g).collect()),
                })
                .collect(),
            off: Rc::new(vec![0.0; f.support.len()]),
        };
        let one = CVal {
            forms: vec![scaled],
            pos: vec![],
        };
        let mat = self.materialize(&one)?;
        let Some(t) = mat.forms[0].terms.first().cloned() else {
            return Ok(Ok(f.clone()));
        };
        let n = f.support.len();
        let (mut big_a, mut big_b, mut big_c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for j in 0..n {
            let (a, b, c) = abc[j];
            let (m, o) = (t.coef[j] / fold[j], f.off[j]);
            big_a[j] = a * m * m;
            big_b[j] = 2.0 * a * m * o + b * m;
            big_c[j] = a * o * o + b * o + c;
        }
        if big_a.iter().all(|&a| a == 0.0) {
            return Ok(Ok(Self::plain_form(
                Rc::clone(&f.support),
                t.ct,
                big_b,
                Rc::new(big_c),
            )));
        }
        if big_a.contains(&0.0) {
            return Ok(Err(
                "the quadratic's leading coefficient vanishes on part of a channel".to_string(),
            ));
        }
        let h: Vec<f64> = big_a
            .iter()
            .zip(&big_b)
            .map(|(a, b)| b / (2.0 * a))
            .collect();
        let ct = self.em.relin(t.ct)?;
        let y = match uniform(&h) {
            Some(0.0) => ct,
            Some(h0) => {
                let d = self.depth(ct);
                let v = self.em.module.add_scalar(ct, h0)?;
                self.note(v, d)
            }
            None => {
                let full = self.tile(&f.support, &h, 0);
                self.add_plain(ct, full)?
            }
        };
        let d = self.depth(y) + 1;
        let sq = self.em.module.square(y)?;
        self.note(sq, d);
        let off: Vec<f64> = (0..n).map(|j| big_c[j] - big_a[j] * h[j] * h[j]).collect();
        Ok(Ok(Self::plain_form(
            Rc::clone(&f.support),
            sq,
            big_a,
            Rc::new(off),
        )))
    }

    /// Applies a scalar-lazy function (polynomial plan, ReLU approximation) to every form.
    fn elementwise(
        &mut self,
        x: &CVal,
        mut f: impl FnMut(&mut Emitter<'_>, Lazy) -> R<Lazy>,
    ) -> R<CVal> {
        let mat = self.materialize(x)?;
        let mut forms = Vec::with_capacity(mat.forms.len());
        for form in &mat.forms {
            match self.scalar_lazy(form)? {
                Some(l) => {
                    let r = f(&mut self.em, l)?;
                    forms.push(Self::from_lazy(&form.support, r));
                }
                None => forms.push(form.clone()),
            }
        }
        Ok(CVal {
            forms,
            pos: mat.pos,
        })
    }
}

fn per_form_coeffs(x: &CVal, coef: impl Fn(usize) -> (f64, f64, f64)) -> Vec<Vec<(f64, f64, f64)>> {
    let mut per: Vec<Vec<(f64, f64, f64)>> = x
        .forms
        .iter()
        .map(|f| vec![(1.0, 0.0, 0.0); f.support.len()])
        .collect();
    for (k, &(f, j)) in x.pos.iter().enumerate() {
        if let Some(slot) = per.get_mut(f as usize).and_then(|v| v.get_mut(j as usize)) {
            *slot = coef(k);
        }
    }
    per
}

/// Per-element affine map `s x + b` (free).
fn affine(x: &CVal, sb: impl Fn(usize) -> (f64, f64)) -> CVal {
    let mut forms = x.forms.clone();
    for (k, &(f, j)) in x.pos.iter().enumerate() {
        let (s, b) = sb(k);
        let Some(form) = forms.get_mut(f as usize) else {
            continue;
        };
        let j = j as usize;
        for t in form.terms.iter_mut() {
            if let Some(c) = Rc::make_mut(&mut t.coef).get_mut(j) {
                *c *= s;
            }
        }
        if let Some(o) = Rc::make_mut(&mut form.off).get_mut(j) {
            *o = *o * s + b;
        }
    }
    CVal {
        forms,
        pos: x.pos.clone(),
    }
}

/// Channel grid of a `C x H x W` tensor: per channel its form and base offset; common strides.
struct Grid {
    form: Vec<usize>,
    base: Vec<i64>,
    ys: i64,
    xs: i64,
}

fn grid(x: &CVal, shape: &Shape) -> Option<Grid> {
    if shape.rank() != 3 {
        return None;
    }
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let at = |ch: usize, y: usize, xx: usize| x.offset((ch * h + y) * w + xx);
    let (_, b0) = at(0, 0, 0)?;
    let ys = if h > 1 { at(0, 1, 0)?.1 - b0 } else { 0 };
    let xs = if w > 1 { at(0, 0, 1)?.1 - b0 } else { 0 };
    let mut g = Grid {
        form: Vec::with_capacity(c),
        base: Vec::with_capacity(c),
        ys,
        xs,
    };
    for ch in 0..c {
        let (f, b) = at(ch, 0, 0)?;
        for y in 0..h {
            for xx in 0..w {
                let (ff, o) = at(ch, y, xx)?;
                if ff != f || o != b + y as i64 * ys + xx as i64 * xs {
                    return None;
                }
            }
        }
        g.form.push(f);
        g.base.push(b);
    }
    Some(g)
}

/// The sorted support of output positions `base + y * ys + x * xs` and, per `(y, x)` in row-major
/// order, its support index and offset; `None` if positions collide or leave `[0, stride)`.
#[allow(clippy::type_complexity)]
fn out_support(
    base: i64,
    oh: usize,
    ow: usize,
    ys: i64,
    xs: i64,
    stride: u32,
) -> Option<(Rc<Support>, Vec<(usize, i64)>)> {
    let mut offs = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        for x in 0..ow {
            let o = base + y as i64 * ys + x as i64 * xs;
            if o < 0 || o >= i64::from(stride) {
                return None;
            }
            offs.push(o as u32);
        }
    }
    let mut sorted = offs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != offs.len() {
        return None;
    }
    let idx = offs
        .iter()
        .map(|o| (sorted.binary_search(o).unwrap_or(0), i64::from(*o)))
        .collect();
    Some((Rc::new(Support::from(sorted)), idx))
}

/// The output positions (of `outs`, row-major over `out_hw`) whose window element at offset
/// `d` (kernel offset minus padding) lies inside the `in_hw` input, for window stride `st`.
fn window_outs(
    outs: &[(usize, i64)],
    out_hw: [usize; 2],
    st: [usize; 2],
    d: [i64; 2],
    in_hw: [usize; 2],
) -> Vec<(usize, i64)> {
    let inside = |o: usize, s: usize, d: i64, n: usize| {
        let i = (o * s) as i64 + d;
        i >= 0 && i < n as i64
    };
    let mut v = Vec::with_capacity(outs.len());
    for y in (0..out_hw[0]).filter(|&y| inside(y, st[0], d[0], in_hw[0])) {
        for x in (0..out_hw[1]).filter(|&x| inside(x, st[1], d[1], in_hw[1])) {
            v.push(outs[y * out_hw[1] + x]);
        }
    }
    v
}

/// Lowers `g` to an unmanaged HE module in the channel layout.
pub fn lower_channel(g: &Graph, opts: &ChannelOptions) -> Result<ChannelLowered, ChannelError> {
    let shapes = verify(g).map_err(LowerError::Invalid)?;
    lower_channel_shaped(g, &shapes, opts)
}

/// [`lower_channel`] with the shapes of `g` already known (the result of
/// [`hecc_ir::tensor::verify`] on this same graph).
pub fn lower_channel_shaped(
    g: &Graph,
    shapes: &hecc_ir::tensor::verify::Shapes,
    opts: &ChannelOptions,
) -> Result<ChannelLowered, ChannelError> {
    let lo = &opts.lower;
    let order = g.topo_order().ok_or(LowerError::Invalid(vec![]))?;
    // Image stride: the largest per-image extent any value needs.
    let mut need: usize = 1;
    for id in &order {
        let Some(node) = g.node(*id) else { continue };
        match &node.op {
            Op::Input { shape, .. } => {
                let c = shape.0.first().copied().unwrap_or(1).max(1);
                need = need.max(shape.numel() / c);
            }
            Op::Dense { out_features, .. } => need = need.max(*out_features),
            _ => {}
        }
    }
    let stride = need.next_power_of_two() as u64;
    if stride > u64::from(lo.slots) {
        return Err(ChannelError::ImageTooLarge {
            need: stride,
            slots: lo.slots,
        });
    }
    let stride = stride as u32;
    let images = lo.batch.max(1).min(lo.slots / stride);
    let mut module = Module::new(Meta {
        name: g.name.clone(),
        batch: images,
        log_scale: LogScale(lo.log_scale),
    });
    let (ih, iw) = g
        .inputs
        .first()
        .and_then(|i| shapes.get(i))
        .map(|s| match s.rank() {
            3 => (s[1], s[2]),
            _ => (1, s.numel() / s.0.first().copied().unwrap_or(1).max(1)),
        })
        .unwrap_or((1, 1));
    let input_layout = Layout::Channel {
        channels: 1,
        height: ih as u32,
        width: iw as u32,
        offset: 0,
        c_stride: (ih * iw) as u32,
        y_stride: iw as u32,
        x_stride: 1,
        images,
        image_stride: stride,
    };
    let layout = module
        .add_layout("channel", input_layout.clone())
        .map_err(|source| LowerError::Build {
            node: "<module>".into(),
            source,
        })?;
    let mut em = Emitter::new(&mut module, LogScale(lo.log_scale));
    em.fold_affine = true;
    let mut lw = Lowerer {
        em,
        layout,
        slots: lo.slots,
        images,
        stride,
        budget: opts.plaintext_budget,
        pack: opts.pack,
        rot_cache: HashMap::new(),
        stats: ChannelStats::default(),
    };
    let mut vals: HashMap<NodeId, CVal> = HashMap::new();
    let mut layers: Vec<LayerSpan> = Vec::new();
    let last_id = |m: &Module| {
        m.graph()
            .node_indices()
            .next_back()
            .map_or(0, |i| i.index() as u32 + 1)
    };
    for id in order {
        let Some(node) = g.node(id) else { continue };
        // Channels are packed where an op materialises its operands per form (activations) or
        // needs both operands laid out alike (additions); a model output is split back into
        // channels (the client reads them channel by channel).
        let packs = matches!(
            node.op,
            Op::Relu | Op::Add | Op::Square | Op::Quadratic { .. } | Op::Poly { .. }
        );
        if lw.pack != PackChannels::Never && packs {
            let force = lw.pack == PackChannels::Always;
            let operands = g.operand_ids(id);
            for &o in &operands {
                let packed = match (vals.get(&o), shapes.get(&o)) {
                    (Some(v), Some(s)) => lw.pack(v, s, force),
                    _ => None,
                };
                if let Some(p) = packed {
                    vals.insert(o, p);
                }
            }
            // The operands of an addition are packed alike or not at all.
            if operands.len() > 1
                && operands
                    .iter()
                    .any(|o| vals.get(o).is_some_and(CVal::is_packed))
            {
                for &o in &operands {
                    let packed = match (vals.get(&o), shapes.get(&o)) {
                        (Some(v), Some(s)) if !v.is_packed() => lw.pack(v, s, true),
                        _ => None,
                    };
                    if let Some(p) = packed {
                        vals.insert(o, p);
                    }
                }
            }
        }
        let in_shapes: Vec<Shape> = g
            .operand_ids(id)
            .iter()
            .map(|o| shapes.get(o).cloned().unwrap_or_default())
            .collect();
        let cx = ops::NodeCx {
            g,
            id,
            node,
            ins: g
                .operand_ids(id)
                .iter()
                .filter_map(|o| vals.get(o))
                .collect(),
            in_shape: in_shapes.first().cloned().unwrap_or_default(),
            in_shapes,
            out_shape: shapes.get(&id).cloned().unwrap_or_default(),
        };
        let window = |kernel: &[usize; 2], stride: &[usize; 2], padding: &[usize; 4]| ops::Window {
            kernel: *kernel,
            stride: *stride,
            padding: *padding,
        };
        let out: CVal = match &node.op {
            Op::Input { shape, norm } => ops::input(&mut lw, &cx, shape, norm, lo.log_scale)?,
            Op::Conv2d {
                out_channels,
                kernel,
                stride: st,
                padding,
                groups,
                weight: w,
                bias,
            } => ops::conv2d(
                &cx,
                stride,
                out_channels,
                groups,
                &window(kernel, st, padding),
                w,
                bias.as_deref(),
            )?,
            Op::AvgPool {
                kernel,
                stride: st,
                padding,
            } => ops::avg_pool(&mut lw, &cx, &window(kernel, st, padding))?,
            Op::GlobalAvgPool => ops::global_avg_pool(&mut lw, &cx)?,
            Op::Dense {
                out_features,
                weight: w,
                bias,
            } => ops::dense(&mut lw, &cx, out_features, w, bias.as_deref())?,
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => ops::batch_norm(&cx, [gamma, beta, mean, var], epsilon)?,
            Op::Scale { factor } => affine(cx.first()?, |_| (*factor, 0.0)),
            Op::Flatten | Op::Reshape { .. } => cx.first()?.clone(),
            Op::Concat { axis } => ops::concat(&cx, axis)?,
            Op::Add => {
                let mut acc = cx.first()?.clone();
                for other in &cx.ins[1..] {
                    acc = add_vals(&acc, other).ok_or_else(|| {
                        cx.unsupported("the operands of add are laid out differently")
                    })?;
                }
                acc
            }
            Op::Square => lw
                .quadratic(cx.first()?, |_| (1.0, 0.0, 0.0))
                .map_err(|e| cx.unsupported(&e))?,
            Op::Quadratic {
                granularity,
                coeffs,
            } => ops::quadratic(&mut lw, &cx, granularity, coeffs)?,
            Op::Poly { coeffs } => {
                let deg = coeffs.iter().rposition(|c| *c != 0.0).unwrap_or(0);
                if deg <= 2 {
                    let c = |i: usize| coeffs.get(i).copied().unwrap_or(0.0);
                    lw.quadratic(cx.first()?, |_| (c(2), c(1), c(0)))
                        .map_err(|e| cx.unsupported(&e))?
                } else {
                    let series = ChebSeries::interpolate(-1.0, 1.0, deg, |x| {
                        coeffs.iter().rev().fold(0.0, |a, c| a * x + c)
                    });
                    let plan = EvalPlan::for_series(&series);
                    lw.elementwise(cx.first()?, |em, x| run_plan(em, &plan, x))
                        .map_err(|e| cx.build(e))?
                }
            }
            Op::Relu => {
                let approx = lo.activations.require_relu(&node.name)?;
                lw.elementwise(cx.first()?, |em, x| apply_approx(em, &approx, x))
                    .map_err(|e| cx.build(e))?
            }
            Op::MaxPool {
                kernel,
                stride: st,
                padding,
            } => {
                let approx = lo.activations.require_max(&node.name)?;
                ops::max_pool(&mut lw, &cx, &approx, &window(kernel, st, padding))?
            }
        };
        let shape = cx.out_shape.0.clone();
        vals.insert(id, out);
        layers.push(LayerSpan {
            name: node.name.clone(),
            op: node.op.mnemonic().to_string(),
            shape,
            end: last_id(lw.em.module),
        });
    }
    let mut outputs = Vec::new();
    for &out in &g.outputs {
        let Some(node) = g.node(out) else { continue };
        let build = |source: HeError| {
            ChannelError::Lower(LowerError::Build {
                node: node.name.clone(),
                source,
            })
        };
        let Some(v) = vals.get(&out) else { continue };
        let v = lw.materialize(&unpack_val(v)).map_err(build)?;
        let mut elems = Vec::with_capacity(v.pos.len());
        for (k, &(f, j)) in v.pos.iter().enumerate() {
            elems.push((f, v.forms[f as usize].support[j as usize]));
            if v.forms[f as usize].terms.is_empty() {
                return Err(LowerError::ConstantOutput {
                    output: node.name.clone(),
                    index: k,
                    value: v.forms[f as usize].off[j as usize],
                }
                .into());
            }
        }
        for (i, form) in v.forms.iter().enumerate() {
            let t = &form.terms[0];
            let ct = match (uniform(&t.coef), uniform(&form.off)) {
                (Some(m), Some(o)) => lw
                    .em
                    .materialize(Lazy {
                        ct: Some(t.ct),
                        m,
                        o,
                    })
                    .map_err(build)?
                    .unwrap_or(t.ct),
                _ => {
                    let mut c = lw.em.relin(t.ct).map_err(build)?;
                    if t.coef.iter().any(|&m| m != 1.0) {
                        let full = lw.tile(&form.support, &t.coef, 0);
                        c = lw.mul_plain(c, full).map_err(build)?;
                    }
                    if form.off.iter().any(|&o| o != 0.0) {
                        let full = lw.tile(&form.support, &form.off, 0);
                        c = lw.add_plain(c, full).map_err(build)?;
                    }
                    c
                }
            };
            lw.em
                .module
                .output(ct, &node.name, i as u32)
                .map_err(build)?;
            let shape = shapes.get(&out).map(|s| s.0.clone()).unwrap_or_default();
            if let Some(l) = output_layout(&shape, &elems, i as u32, images, stride) {
                lw.em
                    .module
                    .set_output_layout(&node.name, i as u32, l)
                    .map_err(build)?;
            }
        }
        outputs.push(OutputPlacement {
            name: node.name.clone(),
            shape: shapes.get(&out).map(|s| s.0.clone()).unwrap_or_default(),
            elems,
        });
        if let Some(last) = layers.last_mut() {
            last.end = last_id(lw.em.module);
        }
    }
    let stats = lw.stats.clone();
    drop(lw);
    Ok(ChannelLowered {
        lowered: Lowered { module, layers },
        images,
        image_stride: stride,
        input_layout,
        outputs,
        stats,
    })
}

/// Element-wise sum of two tensors laid out alike (same forms per element, same supports).
fn add_vals(a: &CVal, b: &CVal) -> Option<CVal> {
    if a.pos.len() != b.pos.len() || a.forms.len() != b.forms.len() {
        return None;
    }
    let mut map: HashMap<u32, u32> = HashMap::new();
    for (&(fa, ja), &(fb, jb)) in a.pos.iter().zip(&b.pos) {
        if ja != jb || *map.entry(fa).or_insert(fb) != fb {
            return None;
        }
    }
    let mut forms = a.forms.clone();
    for (&fa, &fb) in &map {
        let (x, y) = (&a.forms[fa as usize], &b.forms[fb as usize]);
        if x.support != y.support {
            return None;
        }
        let mut acc = Acc::new(Rc::clone(&x.support));
        let ident: Vec<(usize, usize)> = (0..x.support.len()).map(|j| (j, j)).collect();
        acc.gather(x, 0, &ident, 1.0);
        acc.gather(y, 0, &ident, 1.0);
        forms[fa as usize] = acc.finish();
    }
    Some(CVal {
        forms,
        pos: a.pos.clone(),
    })
}

/// The [`Layout::Channel`] of output ciphertext `ct`, from the placement `elems` of every flat
/// element of an output of per-image shape `shape`: the ciphertext must hold the flat elements
/// `ct * n .. (ct + 1) * n` (whole channels, or part of one row) at slot offsets that follow one
/// `(c, y, x)` stride pattern. `None` when they do not (the output can then only be read with
/// [`ChannelLowered::unpack`]).
fn output_layout(
    shape: &[usize],
    elems: &[(u32, u32)],
    ct: u32,
    images: u32,
    image_stride: u32,
) -> Option<Layout> {
    let ks: Vec<usize> = (0..elems.len()).filter(|&k| elems[k].0 == ct).collect();
    let (&k0, &k1) = (ks.first()?, ks.last()?);
    if k1 - k0 + 1 != ks.len() {
        return None;
    }
    let n = ks.len();
    let (h, w) = match shape {
        [_, h, w] => (*h, *w),
        [_, w] => (1, *w),
        _ => (1, n),
    };
    // Output value `ct` must carry the flat elements `ct * n .. (ct + 1) * n` (the convention
    // the client's unpacking relies on).
    if k0 != ct as usize * n {
        return None;
    }
    let w = w.max(1);
    let hw = (h * w).max(1);
    let (channels, height, width) = if k0.is_multiple_of(hw) && n.is_multiple_of(hw) {
        (n / hw, h, w)
    } else if k0 / w == k1 / w {
        (1, 1, n)
    } else {
        return None;
    };
    let off = |k: usize| i64::from(elems[k].1);
    let base = off(k0);
    let stride = |d: usize| -> Option<u32> {
        if k0 + d > k1 {
            return Some(0);
        }
        u32::try_from(off(k0 + d) - base).ok()
    };
    let x_stride = stride(1)?;
    let y_stride = stride(width)?;
    let c_stride = stride(height * width)?;
    let layout = Layout::Channel {
        channels: u32::try_from(channels).ok()?,
        height: u32::try_from(height).ok()?,
        width: u32::try_from(width).ok()?,
        offset: u32::try_from(base).ok()?,
        c_stride,
        y_stride,
        x_stride,
        images,
        image_stride,
    };
    let fits = (0..n).all(|j| {
        layout.slot_of_element(0, j).map(|s| s as i64) == Some(off(k0 + j))
            && off(k0 + j) < i64::from(image_stride)
    });
    fits.then_some(layout)
}
