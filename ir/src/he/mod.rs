//! The HE IR: the RNS-CKKS circuit the passes lower the tensor graph to.
//!
//! # Values and types
//!
//! A [`Module`] holds a graph of [`HeNode`]s (a `petgraph` `StableDiGraph`);
//! each node is one operation and defines one value, named by its [`ValueId`]
//! and printed `%N`. Edges run from an operand to its user and carry the
//! [`Operand`] slot they fill, so operand order does not depend on edge order.
//! Every value has a [`Type`]: a ciphertext (`ct<...>`) or plaintext
//! (`pt<...>`) with its [`Level`] (the value lives modulo `q_0 ... q_level`), its
//! [`LogScale`] (slots are encoded multiplied by `2^s`), its slot count and its
//! [`Layout`] (an entry of the module's layout table, printed once in the
//! header). Ciphertexts also have a size: 2 polynomials, or 3 after `mul` /
//! `square` until `relinearize`.
//!
//! # Semantics
//!
//! Read on real slot vectors (the reference semantics of [`interp`]), each op
//! acts slot-wise: `add`, `sub`, `negate`, the `*_plain` and `*_scalar` ops, `mul`,
//! `square`, `mul_integer`, and `mac` (`sum_i c_i x_i + b`) compute the obvious
//! real function; `relinearize`, `rescale` and `drop_level` are the identity on
//! values and only change the type (size, level, scale); `rotate k` maps slot
//! `i` of the result to slot `(i + k) mod n` of the operand; `conjugate` is the
//! identity on real slots; `input` reads element `index` of a model input in
//! every slot of its layout; `encode` reads a vector of the constant pool;
//! `output` names its operand as element `index` of a model output.
//! The CKKS meaning adds approximation error, which the scale controls: the
//! type rules (see [`Module::infer_type`]) make scales add under
//! multiplication and drop by `log2(q_l)` under rescale.
//!
//! Evaluation order is any topological order of the graph; the graph has no
//! side effects, control flow or regions. Ops are defined once in
//! [`Opcode::info`] (mnemonic, arity, operand kinds, level cost, doc) and matched
//! exhaustively everywhere. Later extensions (polynomial evaluation,
//! bootstrapping, layout conversion) are new [`Op`] variants with their
//! table row, type rule and reference semantics; types and the textual form
//! need no rework.
//!
//! # Example
//!
//! ```
//! use hecc_ir::he::{verify, Layout, Level, LogScale, Meta, Module, VerifyOptions};
//!
//! let mut m = Module::new(Meta { name: "sq".into(), batch: 4, log_scale: LogScale(30.0) });
//! let batch = m.add_layout("batch", Layout::BATCH)?;
//! let x = m.input("x", 0, Level(2), LogScale(30.0), 4, batch)?;
//! let y = m.square(x)?;
//! let y = m.relinearize(y)?;
//! let y = m.rescale(y)?;
//! m.output(y, "y", 0)?;
//! verify(&m, &VerifyOptions::STRICT)?;
//! assert_eq!(
//!     m.to_string(),
//!     "module \"sq\" {batch = 4, log_scale = 30.0}\n\
//!      layout batch = batch{offset=0, stride=1}\n\
//!      %0 = input \"x\"[0] : ct<l=2, s=30.0, n=4, batch>\n\
//!      %1 = square %0 : ct<l=2, s=60.0, n=4, batch, size=3>\n\
//!      %2 = relinearize %1 : ct<l=2, s=60.0, n=4, batch>\n\
//!      %3 = rescale %2 : ct<l=1, s=30.0, n=4, batch>\n\
//!      %4 = output %3, \"y\"[0] : ct<l=1, s=30.0, n=4, batch>\n"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Well-formedness
//!
//! [`verify()`] returns every problem at once: see [`VerifyOptions`] for the
//! level/scale invariants of a managed circuit.

pub mod binary;
pub mod compact;
pub mod error;
pub mod gen;
pub mod interp;
pub mod memory;
pub mod module;
pub mod op;
pub mod types;
pub mod verify;

pub use error::{HeError, NodeErrorKind, Site, VerifyErrors};
pub use memory::{live_profile, spill_profile, InputResidency, Live, SpillProfile};
pub use module::{is_ident, BootInfo, Constant, HeNode, Meta, Module, Operand, Params, ValueId};
pub use op::{Arity, ConstId, LevelCost, MacAttrs, NameId, Op, OpInfo, Opcode};
pub use types::{Kind, Layout, LayoutId, Level, LogScale, Type};
pub use verify::{verify, VerifyOptions};
