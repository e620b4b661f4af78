//! Recursive-descent parser of the HE text form (`.he`).
//!
//! Contract: [`parse_module`] reads what `Display for Module` writes and
//! rebuilds the module with the same value ids (holes included), layout ids,
//! constant ids and attributes, so printing the result gives the same text. It
//! accepts nodes in any order (forward references are allowed; cycles are left
//! to the verifier) and does not type-check: run [`crate::he::verify()`]. Any
//! input either parses or yields a [`TextError`] with the span of the offending
//! token; the parser never panics.
//!
//! Grammar (informal; `//` comments and whitespace are free):
//!
//! ```text
//! module  := header params? boot? layout* const* node*
//! header  := 'module' STRING '{' 'batch' '=' INT ',' 'log_scale' '=' NUM '}'
//! params  := 'params' '{' 'log_n' '=' INT ',' 'primes' '=' '[' INT,* ']' '}'
//! boot    := 'boot' '{' 'level' '=' INT ',' 'in_scale' '=' F ',' 'out_scale' '=' F ','
//!            'depth' '=' INT ',' 'bound' '=' F ',' 'slots' '=' INT '}'
//! layout  := 'layout' IDENT '=' ( 'batch' '{' 'offset' '=' INT ',' 'stride' '=' INT '}'
//!          | 'channel' '{' 'c' '=' INT ',' 'h' '=' INT ',' 'w' '=' INT ',' 'offset' '=' INT ','
//!                          'c_stride' '=' INT ',' 'y_stride' '=' INT ',' 'x_stride' '=' INT
//!                          (',' 'images' '=' INT ',' 'image_stride' '=' INT)? '}' )
//! const   := 'const' '@N' '=' ( '[' NUM,* ']' | tiled )   (ids 0, 1, 2 ... in order)
//! tiled   := 'tile' '(' 'len' '=' INT ',' 'period' '=' INT ',' 'count' '=' INT ')'
//!            '{' ( INT ':' '[' ( NUM ( '*' INT )? ),* ']' ),* '}'   (see `he::compact`)
//! node    := '%N' '=' MNEMONIC operands ':' type
//! type    := ('ct' | 'pt') '<' 'l' '=' INT ',' 's' '=' NUM ',' 'n' '=' INT ',' IDENT (',' 'size' '=' INT)? '>'
//! ```
//!
//! with per-op operands as printed: `input STRING '[' INT ']'`, `encode @N`,
//! binary `%a, %b`, unary `%a`, `add_scalar %a, NUM`, `mul_scalar %a, NUM, s=NUM`,
//! `mul_integer %a, INT`, `mac '[' (%a '*' NUM),* ']' ('+' NUM)? ',' 's' '=' NUM`,
//! `drop_level %a, INT`, `rotate %a, INT`, `output %a, STRING '[' INT ']'`.

use super::cursor::Cursor;
use super::error::TextError;
use super::lexer::Tok;
use crate::he::{
    BootInfo, HeNode, Layout, LayoutId, Level, LogScale, MacAttrs, Meta, Module, Op, Opcode,
    Params, Type, ValueId,
};
use std::collections::HashMap;
use std::ops::Range;

/// Byte span of every parsed node (from its `%N` to the end of its type).
pub type HeSpans = HashMap<ValueId, Range<usize>>;

/// How many unused ids (holes) a text may leave below its highest id.
const MAX_HOLES: usize = 1 << 20;

/// Parses an HE module.
pub fn parse_module(src: &str) -> Result<Module, TextError> {
    parse_module_with_spans(src).map(|(m, _)| m)
}

struct RawNode {
    id: u32,
    op: Op,
    operands: Vec<(u32, Range<usize>)>,
    ty: Type,
    span: Range<usize>,
}

/// Parses an HE module and returns the byte span of every node.
pub fn parse_module_with_spans(src: &str) -> Result<(Module, HeSpans), TextError> {
    let mut c = Cursor::new(src)?;
    let mut module = Module::new(parse_header(&mut c)?);
    if c.eat_keyword("params") {
        module.params = Some(parse_params(&mut c)?);
    }
    if c.eat_keyword("boot") {
        module.boot = Some(parse_boot(&mut c)?);
    }
    while c.at_keyword("layout") {
        c.bump();
        let (name, span) = c.ident("a layout name")?;
        c.expect(Tok::Eq)?;
        let layout = parse_layout(&mut c)?;
        module
            .add_layout(name, layout)
            .map_err(|e| c.error_at(span, e.to_string()))?;
    }
    while c.at_keyword("const") {
        c.bump();
        let span = c.span();
        let expected = module.constants().count() as u32;
        match c.peek() {
            Some(Tok::Const(n)) if n == expected => {
                c.bump();
            }
            _ => return Err(c.expected(&format!("constant `@{expected}`"))),
        }
        c.expect(Tok::Eq)?;
        if c.at_keyword("elided") {
            return Err(c.error_at(
                span,
                "constant values were elided when printing; this text cannot be read back",
            ));
        }
        let values = if c.at_keyword("tile") {
            parse_tiled(&mut c)?
        } else {
            parse_f64_list(&mut c)?
        };
        module.push_constant(values);
    }
    let mut raw: Vec<RawNode> = Vec::new();
    let mut seen: HashMap<u32, Range<usize>> = HashMap::new();
    while !c.at_end() {
        let node = parse_node(&mut c, &mut module)?;
        if let Some(first) = seen.get(&node.id) {
            let (line, _) = super::error::line_col(src, first.start);
            return Err(c.error_at(
                node.span.start..node.span.start + format!("%{}", node.id).len(),
                format!("value %{} is already defined on line {line}", node.id),
            ));
        }
        seen.insert(node.id, node.span.clone());
        raw.push(node);
    }
    build(&c, module, raw)
}

fn build(
    c: &Cursor<'_>,
    mut module: Module,
    raw: Vec<RawNode>,
) -> Result<(Module, HeSpans), TextError> {
    let max = raw.iter().map(|n| n.id as usize + 1).max().unwrap_or(0);
    if max > raw.len() + MAX_HOLES {
        let worst = raw
            .iter()
            .max_by_key(|n| n.id)
            .map(|n| n.span.clone())
            .unwrap_or(0..0);
        return Err(c.error_at(
            worst,
            format!("value ids are too sparse (more than {MAX_HOLES} unused ids)"),
        ));
    }
    // Every operand must refer to a defined value.
    let mut defined = vec![false; max];
    for n in &raw {
        defined[n.id as usize] = true;
    }
    for n in &raw {
        for (r, span) in &n.operands {
            if !defined.get(*r as usize).copied().unwrap_or(false) {
                return Err(c.error_at(span.clone(), format!("value %{r} is not defined")));
            }
        }
    }
    // Recreate the ids: add nodes in id order, with placeholders in the holes.
    let mut by_id: Vec<Option<RawNode>> = (0..max).map(|_| None).collect();
    for n in raw {
        let i = n.id as usize;
        by_id[i] = Some(n);
    }
    let placeholder_ty = Type::cipher(Level(0), LogScale(0.0), 1, LayoutId(0));
    let mut edges = Vec::new();
    let mut spans = HeSpans::new();
    let mut holes = Vec::new();
    for (i, slot) in by_id.into_iter().enumerate() {
        let (node, ops) = match slot {
            Some(n) => {
                spans.insert(ValueId(n.id), n.span);
                (HeNode { op: n.op, ty: n.ty }, n.operands)
            }
            None => {
                holes.push(ValueId(i as u32));
                (
                    HeNode {
                        op: Op::Negate,
                        ty: placeholder_ty,
                    },
                    Vec::new(),
                )
            }
        };
        let g = module.graph_mut();
        let ix = g.add_node(node);
        if ix.index() != i {
            return Err(c.error_at(0..0, "internal: node ids could not be recreated"));
        }
        for (k, (r, _)) in ops.into_iter().enumerate() {
            edges.push((ValueId(r), ValueId(i as u32), k as u32));
        }
    }
    let g = module.graph_mut();
    for (from, to, slot) in edges {
        g.add_edge(from.node(), to.node(), crate::he::Operand(slot));
    }
    for h in holes {
        module.remove(h);
    }
    Ok((module, spans))
}

fn parse_header(c: &mut Cursor<'_>) -> Result<Meta, TextError> {
    c.keyword("module")?;
    let (name, _) = c.string("the module name (a string)")?;
    c.expect(Tok::LBrace)?;
    c.key("batch")?;
    let batch = c.int::<u32>("batch size")?;
    c.expect(Tok::Comma)?;
    c.key("log_scale")?;
    let log_scale = LogScale(c.f64("the default log-scale")?);
    c.expect(Tok::RBrace)?;
    Ok(Meta {
        name,
        batch,
        log_scale,
    })
}

fn parse_params(c: &mut Cursor<'_>) -> Result<Params, TextError> {
    c.expect(Tok::LBrace)?;
    c.key("log_n")?;
    let log_n = c.int::<u32>("log_n")?;
    c.expect(Tok::Comma)?;
    c.key("primes")?;
    c.expect(Tok::LBracket)?;
    let mut primes = Vec::new();
    if !c.eat(Tok::RBracket) {
        loop {
            primes.push(c.int::<u64>("a prime")?);
            if c.eat(Tok::RBracket) {
                break;
            }
            c.expect(Tok::Comma)?;
        }
    }
    c.expect(Tok::RBrace)?;
    Ok(Params { log_n, primes })
}

fn parse_boot(c: &mut Cursor<'_>) -> Result<BootInfo, TextError> {
    c.expect(Tok::LBrace)?;
    c.key("level")?;
    let out_level = Level(c.int::<u32>("the bootstrap output level")?);
    c.expect(Tok::Comma)?;
    c.key("in_scale")?;
    let in_log_scale = LogScale(c.f64("the bootstrap input log-scale")?);
    c.expect(Tok::Comma)?;
    c.key("out_scale")?;
    let out_log_scale = LogScale(c.f64("the bootstrap output log-scale")?);
    c.expect(Tok::Comma)?;
    c.key("depth")?;
    let depth = c.int::<u32>("the bootstrap depth")?;
    c.expect(Tok::Comma)?;
    c.key("bound")?;
    let span = c.span();
    let message_bound = c.f64("the bootstrap message bound")?;
    if !(message_bound.is_finite() && message_bound > 0.0) {
        return Err(c.error_at(
            span,
            "the bootstrap message bound must be positive and finite",
        ));
    }
    c.expect(Tok::Comma)?;
    c.key("slots")?;
    let span = c.span();
    let slots = c.int::<u32>("the bootstrap slot count")?;
    if !slots.is_power_of_two() {
        return Err(c.error_at(span, "the bootstrap slot count must be a power of two"));
    }
    c.expect(Tok::RBrace)?;
    Ok(BootInfo {
        out_level,
        in_log_scale,
        out_log_scale,
        depth,
        message_bound,
        slots,
    })
}

fn parse_layout(c: &mut Cursor<'_>) -> Result<Layout, TextError> {
    let (kind, kspan) = c.ident("a layout kind (`batch` or `channel`)")?;
    let field = |c: &mut Cursor<'_>, key: &str, first: bool| -> Result<u32, TextError> {
        if !first {
            c.expect(Tok::Comma)?;
        }
        c.key(key)?;
        c.int::<u32>(key)
    };
    let layout = match kind {
        "batch" => {
            c.expect(Tok::LBrace)?;
            let offset = field(c, "offset", true)?;
            let stride = field(c, "stride", false)?;
            Layout::Batch { offset, stride }
        }
        "channel" => {
            c.expect(Tok::LBrace)?;
            let channels = field(c, "c", true)?;
            let height = field(c, "h", false)?;
            let width = field(c, "w", false)?;
            let offset = field(c, "offset", false)?;
            let c_stride = field(c, "c_stride", false)?;
            let y_stride = field(c, "y_stride", false)?;
            let x_stride = field(c, "x_stride", false)?;
            let (images, image_stride) = if c.eat(Tok::Comma) {
                let images = field(c, "images", true)?;
                (images, field(c, "image_stride", false)?)
            } else {
                (1, 0)
            };
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
            }
        }
        other => {
            return Err(c.error_at(
                kspan,
                format!("unknown layout kind `{other}` (expected `batch` or `channel`)"),
            ));
        }
    };
    c.expect(Tok::RBrace)?;
    Ok(layout)
}

/// Most slots a `tile(...)` constant may describe (a guard against absurd lengths).
const MAX_TILED_LEN: usize = 1 << 26;

/// `tile(len = N, period = P, count = K) {S: [v, v * k, ...], ...}` (see
/// [`crate::he::compact`]), expanded to its vector.
fn parse_tiled(c: &mut Cursor<'_>) -> Result<Vec<f64>, TextError> {
    let start = c.span();
    c.bump();
    c.expect(Tok::LParen)?;
    c.key("len")?;
    let len = c.int::<usize>("length")?;
    c.expect(Tok::Comma)?;
    c.key("period")?;
    let period = c.int::<usize>("period")?;
    c.expect(Tok::Comma)?;
    c.key("count")?;
    let count = c.int::<usize>("count")?;
    c.expect(Tok::RParen)?;
    c.expect(Tok::LBrace)?;
    let mut runs = Vec::new();
    if !c.eat(Tok::RBrace) {
        loop {
            let at = c.int::<usize>("a run start")?;
            c.expect(Tok::Colon)?;
            c.expect(Tok::LBracket)?;
            let mut items = Vec::new();
            if !c.eat(Tok::RBracket) {
                loop {
                    let x = c.f64("a number")?;
                    let k = if c.eat(Tok::Star) {
                        c.int::<usize>("a repeat count")?
                    } else {
                        1
                    };
                    items.push((x, k));
                    if c.eat(Tok::RBracket) {
                        break;
                    }
                    c.expect(Tok::Comma)?;
                }
            }
            runs.push(crate::he::compact::Run { start: at, items });
            if c.eat(Tok::RBrace) {
                break;
            }
            c.expect(Tok::Comma)?;
        }
    }
    let span = start.start..c.span().start;
    if len > MAX_TILED_LEN {
        return Err(c.error_at(
            span,
            format!("a constant of {len} slots is longer than the {MAX_TILED_LEN} allowed"),
        ));
    }
    let t = crate::he::compact::Tiled {
        len,
        period,
        count,
        runs,
    };
    t.check()
        .map_err(|e| c.error_at(span.clone(), format!("bad tiled constant: {e}")))?;
    t.expand()
        .ok_or_else(|| c.error_at(span, "bad tiled constant"))
}

fn parse_f64_list(c: &mut Cursor<'_>) -> Result<Vec<f64>, TextError> {
    c.expect(Tok::LBracket)?;
    let mut out = Vec::new();
    if c.eat(Tok::RBracket) {
        return Ok(out);
    }
    loop {
        out.push(c.f64("a number")?);
        if c.eat(Tok::RBracket) {
            return Ok(out);
        }
        c.expect(Tok::Comma)?;
    }
}

fn parse_type(c: &mut Cursor<'_>, module: &Module) -> Result<Type, TextError> {
    let (head, hspan) = c.ident("a type (`ct<...>` or `pt<...>`)")?;
    let cipher = match head {
        "ct" => true,
        "pt" => false,
        _ => {
            return Err(c.error_at(
                hspan,
                format!("expected a type (`ct<...>` or `pt<...>`), found `{head}`"),
            ));
        }
    };
    c.expect(Tok::Lt)?;
    c.key("l")?;
    let level = Level(c.int::<u32>("level")?);
    c.expect(Tok::Comma)?;
    c.key("s")?;
    let log_scale = LogScale(c.f64("log-scale")?);
    c.expect(Tok::Comma)?;
    c.key("n")?;
    let slots = c.int::<u32>("slot count")?;
    c.expect(Tok::Comma)?;
    let (lname, lspan) = c.ident("a layout name")?;
    let layout = module
        .layout_by_name(lname)
        .ok_or_else(|| c.error_at(lspan, format!("unknown layout `{lname}`")))?;
    let mut size = 2u8;
    if cipher && c.eat(Tok::Comma) {
        c.key("size")?;
        size = c.int::<u8>("ciphertext size")?;
    }
    c.expect(Tok::Gt)?;
    Ok(if cipher {
        Type::Cipher {
            level,
            log_scale,
            slots,
            layout,
            size,
        }
    } else {
        Type::plain(level, log_scale, slots, layout)
    })
}

fn parse_node(c: &mut Cursor<'_>, module: &mut Module) -> Result<RawNode, TextError> {
    let start = c.span().start;
    let (id, _) = match c.peek() {
        Some(Tok::Value(_)) => c.value_ref()?,
        _ => {
            return Err(c.expected(
                "a node definition `%N = ...` (header lines must come first: module, params, layout, const)",
            ))
        }
    };
    c.expect(Tok::Eq)?;
    let (mn, mspan) = c.ident("an op mnemonic")?;
    let code = Opcode::from_mnemonic(mn).ok_or_else(|| {
        let all: Vec<&str> = Opcode::ALL.iter().map(|o| o.mnemonic()).collect();
        c.error_at(
            mspan.clone(),
            format!("unknown op `{mn}` (known: {})", all.join(", ")),
        )
    })?;
    let mut operands: Vec<(u32, Range<usize>)> = Vec::new();
    let mut operand = |c: &mut Cursor<'_>| -> Result<(), TextError> {
        let r = c.value_ref()?;
        operands.push(r);
        Ok(())
    };
    let op = match code {
        Opcode::Input => {
            let (name, _) = c.string("the input name (a string)")?;
            c.expect(Tok::LBracket)?;
            let index = c.int::<u32>("element index")?;
            c.expect(Tok::RBracket)?;
            Op::Input {
                name: module.intern(&name),
                index,
            }
        }
        Opcode::Encode => match c.peek() {
            Some(Tok::Const(n)) => {
                c.bump();
                Op::Encode {
                    constant: crate::he::ConstId(n),
                }
            }
            _ => return Err(c.expected("a constant `@N`")),
        },
        Opcode::Add
        | Opcode::Sub
        | Opcode::AddPlain
        | Opcode::SubPlain
        | Opcode::Mul
        | Opcode::MulPlain => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            operand(c)?;
            match code {
                Opcode::Add => Op::Add,
                Opcode::Sub => Op::Sub,
                Opcode::AddPlain => Op::AddPlain,
                Opcode::SubPlain => Op::SubPlain,
                Opcode::Mul => Op::Mul,
                _ => Op::MulPlain,
            }
        }
        Opcode::Negate
        | Opcode::Square
        | Opcode::Relinearize
        | Opcode::Rescale
        | Opcode::Conjugate
        | Opcode::Bootstrap => {
            operand(c)?;
            match code {
                Opcode::Negate => Op::Negate,
                Opcode::Square => Op::Square,
                Opcode::Relinearize => Op::Relinearize,
                Opcode::Rescale => Op::Rescale,
                Opcode::Bootstrap => Op::Bootstrap,
                _ => Op::Conjugate,
            }
        }
        Opcode::AddScalar => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            Op::AddScalar {
                value: c.f64("the scalar")?,
            }
        }
        Opcode::MulScalar => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            let value = c.f64("the scalar")?;
            c.expect(Tok::Comma)?;
            c.key("s")?;
            let log_scale = LogScale(c.f64("the scalar's log-scale")?);
            Op::MulScalar { value, log_scale }
        }
        Opcode::MulInteger => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            Op::MulInteger {
                factor: c.int::<i64>("integer factor")?,
            }
        }
        Opcode::Mac => {
            c.expect(Tok::LBracket)?;
            let mut coeffs = Vec::new();
            if !c.eat(Tok::RBracket) {
                loop {
                    operand(c)?;
                    c.expect(Tok::Star)?;
                    coeffs.push(c.f64("a coefficient")?);
                    if c.eat(Tok::RBracket) {
                        break;
                    }
                    c.expect(Tok::Comma)?;
                }
            }
            let bias = if c.eat(Tok::Plus) {
                Some(c.f64("the constant term")?)
            } else {
                None
            };
            c.expect(Tok::Comma)?;
            c.key("s")?;
            let log_scale = LogScale(c.f64("the scalars' log-scale")?);
            Op::Mac(Box::new(MacAttrs {
                coeffs,
                bias,
                log_scale,
            }))
        }
        Opcode::DropLevel => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            Op::DropLevel {
                to: Level(c.int::<u32>("target level")?),
            }
        }
        Opcode::Rotate => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            Op::Rotate {
                steps: c.int::<i32>("rotation amount")?,
            }
        }
        Opcode::Output => {
            operand(c)?;
            c.expect(Tok::Comma)?;
            let (name, _) = c.string("the output name (a string)")?;
            c.expect(Tok::LBracket)?;
            let index = c.int::<u32>("element index")?;
            c.expect(Tok::RBracket)?;
            Op::Output {
                name: module.intern(&name),
                index,
            }
        }
    };
    c.expect(Tok::Colon)?;
    let ty = parse_type(c, module)?;
    Ok(RawNode {
        id,
        op,
        operands,
        ty,
        span: start..c.prev_end(),
    })
}
