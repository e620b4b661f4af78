//! The channel lowering of each tensor op: a function per op from the operands' values
//! ([`CVal`]: linear forms over rotated ciphertexts) to the result's, emitting ciphertext work
//! only where a form must be settled. The node loop in the parent module picks the function.

use super::*;
use crate::approx::ActivationApprox;
use hecc_ir::tensor::{Node, Normalization};

/// One tensor node as its lowering sees it: the node, its operands' values and shapes.
pub(super) struct NodeCx<'a> {
    pub(super) g: &'a Graph,
    pub(super) id: NodeId,
    pub(super) node: &'a Node,
    pub(super) ins: Vec<&'a CVal>,
    pub(super) in_shapes: Vec<Shape>,
    pub(super) in_shape: Shape,
    pub(super) out_shape: Shape,
}

impl<'a> NodeCx<'a> {
    /// The node cannot be lowered in this layout, for `reason`.
    pub(super) fn unsupported(&self, reason: &str) -> ChannelError {
        ChannelError::Unsupported {
            node: self.node.name.clone(),
            op: self.node.op.mnemonic().to_string(),
            reason: reason.to_string(),
        }
    }

    /// An IR construction error at this node.
    pub(super) fn build(&self, source: HeError) -> ChannelError {
        ChannelError::Lower(LowerError::Build {
            node: self.node.name.clone(),
            source,
        })
    }

    /// The weight tensor `w`.
    pub(super) fn weight(&self, w: &str) -> Result<&'a Tensor, ChannelError> {
        self.g.weights.get(w).ok_or_else(|| {
            ChannelError::Lower(LowerError::MissingWeight {
                node: self.node.name.clone(),
                weight: w.into(),
            })
        })
    }

    /// The first operand's value.
    pub(super) fn first(&self) -> Result<&'a CVal, ChannelError> {
        self.ins
            .first()
            .copied()
            .ok_or_else(|| self.unsupported("missing operand"))
    }
}

/// A pooling or convolution window.
pub(super) struct Window {
    pub(super) kernel: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) padding: [usize; 4],
}

pub(super) fn input(
    lw: &mut Lowerer<'_>,
    cx: &NodeCx<'_>,
    shape: &Shape,
    norm: &Normalization,
    log_scale: f64,
) -> Result<CVal, ChannelError> {
    let c = shape.0.first().copied().unwrap_or(1).max(1);
    let per_c = shape.numel() / c;
    let support: Rc<Support> = Rc::new(Support::from((0..per_c as u32).collect::<Vec<_>>()));
    let pick = |xs: &Vec<f64>, ch: usize, d: f64| {
        if xs.len() == 1 {
            xs[0]
        } else {
            xs.get(ch).copied().unwrap_or(d)
        }
    };
    let mut forms = Vec::with_capacity(c);
    let mut pos = Vec::with_capacity(shape.numel());
    for ch in 0..c {
        let (mean, std) = (pick(&norm.mean, ch, 0.0), pick(&norm.std, ch, 1.0));
        let ct = lw
            .em
            .module
            .input(
                &cx.node.name,
                ch as u32,
                Level(0),
                LogScale(log_scale),
                lw.slots,
                lw.layout,
            )
            .map_err(|e| cx.build(e))?;
        lw.em.fresh(ct);
        forms.push(Lowerer::plain_form(
            Rc::clone(&support),
            ct,
            vec![1.0 / std; per_c],
            Rc::new(vec![-mean / std; per_c]),
        ));
        pos.extend((0..per_c as u32).map(|j| (ch as u32, j)));
    }
    Ok(CVal { forms, pos })
}

pub(super) fn conv2d(
    cx: &NodeCx<'_>,
    image_stride: u32,
    out_channels: &usize,
    groups: &usize,
    win: &Window,
    w: &str,
    bias: Option<&str>,
) -> Result<CVal, ChannelError> {
    let (st, padding, kernel) = (&win.stride, &win.padding, &win.kernel);
    let x = cx.first()?;
    let wt: Vec<f64> = cx.weight(w)?.iter().copied().collect();
    let bs: Option<Vec<f64>> = match bias {
        Some(b) => Some(cx.weight(b)?.iter().copied().collect()),
        None => None,
    };
    let gr = grid(x, &cx.in_shape)
        .ok_or_else(|| cx.unsupported("the input is not laid out as a channel grid"))?;
    let (c_in, h, wd) = (cx.in_shape[0], cx.in_shape[1], cx.in_shape[2]);
    let (oh, ow) = (cx.out_shape[1], cx.out_shape[2]);
    let (kh, kw) = (kernel[0], kernel[1]);
    let cg = c_in / (*groups).max(1);
    let og = out_channels / (*groups).max(1);
    let (oys, oxs) = (gr.ys * st[0] as i64, gr.xs * st[1] as i64);
    let base0 = gr.base[0];
    let (support, outs) = out_support(base0, oh, ow, oys, oxs, image_stride)
        .ok_or_else(|| cx.unsupported("strided output positions leave the image"))?;
    // Per (input channel, kernel offset): rotation and resolved index plan.
    let mut plans: HashMap<(usize, usize, usize), (i64, IndexPlan)> = HashMap::new();
    for c in 0..c_in {
        let src = &x.forms[gr.form[c]];
        for i in 0..kh {
            for j in 0..kw {
                let di = i as i64 - padding[0] as i64;
                let dj = j as i64 - padding[1] as i64;
                let r = gr.base[c] - base0 + di * gr.ys + dj * gr.xs;
                let mut outs_in = Vec::new();
                for y in 0..oh {
                    let iy = (y * st[0]) as i64 + di;
                    if iy < 0 || iy >= h as i64 {
                        continue;
                    }
                    for xx in 0..ow {
                        let ix = (xx * st[1]) as i64 + dj;
                        if ix < 0 || ix >= wd as i64 {
                            continue;
                        }
                        outs_in.push(outs[y * ow + xx]);
                    }
                }
                let plan = plan_for(src, r, &outs_in)
                    .ok_or_else(|| cx.unsupported("a kernel tap reads outside its channel"))?;
                plans.insert((c, i, j), (r, plan));
            }
        }
    }
    let mut forms = Vec::with_capacity(*out_channels);
    let mut pos = Vec::with_capacity(cx.out_shape.numel());
    for o in 0..*out_channels {
        let grp = o / og.max(1);
        let mut acc = Acc::new(Rc::clone(&support));
        for ci in 0..cg {
            let c = grp * cg + ci;
            let src = &x.forms[gr.form[c]];
            for i in 0..kh {
                for j in 0..kw {
                    let wv = wt[((o * cg + ci) * kh + i) * kw + j];
                    if let Some((r, plan)) = plans.get(&(c, i, j)) {
                        acc.gather(src, *r, plan, wv);
                    }
                }
            }
        }
        let b = bs.as_ref().map_or(0.0, |b| b[o]);
        for v in acc.off.iter_mut() {
            *v += b;
        }
        forms.push(acc.finish());
        pos.extend(outs.iter().map(|&(j, _)| (o as u32, j as u32)));
    }
    Ok(CVal { forms, pos })
}

pub(super) fn avg_pool(
    lw: &mut Lowerer<'_>,
    cx: &NodeCx<'_>,
    win: &Window,
) -> Result<CVal, ChannelError> {
    let (st, padding, kernel) = (&win.stride, &win.padding, &win.kernel);
    let image_stride = lw.stride;
    let x = cx.first()?;
    let gr = grid(x, &cx.in_shape)
        .ok_or_else(|| cx.unsupported("the input is not laid out as a channel grid"))?;
    let (c, h, wd) = (cx.in_shape[0], cx.in_shape[1], cx.in_shape[2]);
    let (oh, ow) = (cx.out_shape[1], cx.out_shape[2]);
    let div = 1.0 / (kernel[0] * kernel[1]) as f64;
    let (oys, oxs) = (gr.ys * st[0] as i64, gr.xs * st[1] as i64);
    let mut forms = Vec::with_capacity(c);
    let mut pos = Vec::with_capacity(cx.out_shape.numel());
    for ch in 0..c {
        let (support, outs) = out_support(gr.base[ch], oh, ow, oys, oxs, image_stride)
            .ok_or_else(|| cx.unsupported("pooled positions leave the image"))?;
        let src = &x.forms[gr.form[ch]];
        let mut acc = Acc::new(Rc::clone(&support));
        for i in 0..kernel[0] {
            for j in 0..kernel[1] {
                let di = i as i64 - padding[0] as i64;
                let dj = j as i64 - padding[1] as i64;
                let r = di * gr.ys + dj * gr.xs;
                let outs_in = window_outs(&outs, [oh, ow], *st, [di, dj], [h, wd]);
                let plan = plan_for(src, r, &outs_in)
                    .ok_or_else(|| cx.unsupported("a window reads outside its channel"))?;
                acc.gather(src, r, &plan, div);
            }
        }
        forms.push(acc.finish());
        pos.extend(outs.iter().map(|&(j, _)| (ch as u32, j as u32)));
    }
    lw.settle_cheap(CVal { forms, pos })
        .map_err(|e| cx.build(e))
}

pub(super) fn global_avg_pool(lw: &mut Lowerer<'_>, cx: &NodeCx<'_>) -> Result<CVal, ChannelError> {
    let x = cx.first()?;
    let gr = grid(x, &cx.in_shape)
        .ok_or_else(|| cx.unsupported("the input is not laid out as a channel grid"))?;
    let (c, h, wd) = (cx.in_shape[0], cx.in_shape[1], cx.in_shape[2]);
    let div = 1.0 / (h * wd) as f64;
    let mut forms = Vec::with_capacity(c);
    let mut pos = Vec::with_capacity(c);
    // Rotate-and-sum trees by ciphertext: the channels of a packed form share one.
    let mut trees: HashMap<ValueId, ValueId> = HashMap::new();
    for ch in 0..c {
        let src = &x.forms[gr.form[ch]];
        let b = gr.base[ch];
        let support = Rc::new(Support::from(vec![b as u32]));
        let idx: Vec<usize> = (0..h * wd)
            .filter_map(|k| src.index_of(b + (k / wd) as i64 * gr.ys + (k % wd) as i64 * gr.xs))
            .collect();
        let coef0 = src.terms.first().and_then(|t| {
            let v: Vec<f64> = idx.iter().map(|&i| t.coef[i]).collect();
            uniform(&v)
        });
        let tree = src.is_plain()
            && coef0.is_some()
            && h.is_power_of_two()
            && wd.is_power_of_two()
            && idx.len() == h * wd;
        if tree {
            // Rotate-and-sum: log2(W) + log2(H) rotations.
            let v = match trees.get(&src.terms[0].ct) {
                Some(&v) => v,
                None => {
                    let mut v = lw.em.relin(src.terms[0].ct).map_err(|e| cx.build(e))?;
                    let mut steps = Vec::new();
                    let mut k = 1;
                    while k < wd {
                        steps.push(k as i64 * gr.xs);
                        k *= 2;
                    }
                    k = 1;
                    while k < h {
                        steps.push(k as i64 * gr.ys);
                        k *= 2;
                    }
                    for s in steps {
                        let r = lw.rotate(v, s).map_err(|e| cx.build(e))?;
                        v = lw.add(v, r).map_err(|e| cx.build(e))?;
                    }
                    trees.insert(src.terms[0].ct, v);
                    v
                }
            };
            let off: f64 = idx.iter().map(|&i| src.off[i]).sum::<f64>() * div;
            forms.push(Lowerer::plain_form(
                support,
                v,
                vec![coef0.unwrap_or(1.0) * div],
                Rc::new(vec![off]),
            ));
        } else {
            let mut acc = Acc::new(Rc::clone(&support));
            for y in 0..h {
                for xx in 0..wd {
                    let r = y as i64 * gr.ys + xx as i64 * gr.xs;
                    let plan = plan_for(src, r, &[(0, b)])
                        .ok_or_else(|| cx.unsupported("a pixel is outside its channel"))?;
                    acc.gather(src, r, &plan, div);
                }
            }
            forms.push(acc.finish());
        }
        pos.push((ch as u32, 0));
    }
    lw.settle_cheap(CVal { forms, pos })
        .map_err(|e| cx.build(e))
}

pub(super) fn dense(
    lw: &mut Lowerer<'_>,
    cx: &NodeCx<'_>,
    out_features: &usize,
    w: &str,
    bias: Option<&str>,
) -> Result<CVal, ChannelError> {
    let x = lw.materialize(cx.first()?).map_err(|e| cx.build(e))?;
    let wt: Vec<f64> = cx.weight(w)?.iter().copied().collect();
    let bs: Option<Vec<f64>> = match bias {
        Some(b) => Some(cx.weight(b)?.iter().copied().collect()),
        None => None,
    };
    let n_out = *out_features;
    let n_in = x.pos.len();
    let support: Rc<Support> = Rc::new(Support::from((0..n_out as u32).collect::<Vec<_>>()));
    let mut acc = Acc::new(Rc::clone(&support));
    for (k, &(f, j)) in x.pos.iter().enumerate() {
        let form = &x.forms[f as usize];
        let off = i64::from(form.support[j as usize]);
        let o_k = form.off[j as usize];
        for t in &form.terms {
            let m = t.coef[j as usize];
            for o in 0..n_out {
                let wv = wt[o * n_in + k];
                if wv != 0.0 && m != 0.0 {
                    acc.entry(t.ct, t.rot + off - o as i64)[o] += wv * m;
                }
            }
        }
        for o in 0..n_out {
            acc.off[o] += wt[o * n_in + k] * o_k;
        }
    }
    if let Some(b) = &bs {
        for (o, bo) in acc.off.iter_mut().zip(b) {
            *o += bo;
        }
    }
    Ok(CVal {
        forms: vec![acc.finish()],
        pos: (0..n_out as u32).map(|o| (0, o)).collect(),
    })
}

pub(super) fn batch_norm(
    cx: &NodeCx<'_>,
    [gamma, beta, mean, var]: [&str; 4],
    epsilon: &f64,
) -> Result<CVal, ChannelError> {
    let x = cx.first()?;
    let (g_, b_, m_, v_) = (
        cx.weight(gamma)?,
        cx.weight(beta)?,
        cx.weight(mean)?,
        cx.weight(var)?,
    );
    let (g_, b_, m_, v_): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) = (
        g_.iter().copied().collect(),
        b_.iter().copied().collect(),
        m_.iter().copied().collect(),
        v_.iter().copied().collect(),
    );
    let c = cx.in_shape.0.first().copied().unwrap_or(1).max(1);
    let per_c = (cx.in_shape.numel() / c).max(1);
    Ok(affine(x, |k| {
        let ch = k / per_c;
        let s = g_.get(ch).copied().unwrap_or(1.0)
            / (v_.get(ch).copied().unwrap_or(1.0) + epsilon).sqrt();
        let sh = b_.get(ch).copied().unwrap_or(0.0) - m_.get(ch).copied().unwrap_or(0.0) * s;
        (s, sh)
    }))
}

pub(super) fn concat(cx: &NodeCx<'_>, axis: &usize) -> Result<CVal, ChannelError> {
    let ins = &cx.ins;
    let in_shapes = &cx.in_shapes;
    let outer: usize = in_shapes
        .first()
        .map_or(1, |s| s.0[..(*axis).min(s.rank())].iter().product());
    let mut forms = Vec::new();
    let mut shift = Vec::new();
    for x in ins {
        shift.push(forms.len() as u32);
        forms.extend(x.forms.iter().cloned());
    }
    let mut pos = Vec::new();
    for o in 0..outer {
        for ((x, s), sh) in ins.iter().zip(in_shapes.iter()).zip(&shift) {
            let block: usize = s.0[(*axis).min(s.rank())..].iter().product();
            pos.extend(
                x.pos[o * block..(o + 1) * block]
                    .iter()
                    .map(|&(f, j)| (f + sh, j)),
            );
        }
    }
    Ok(CVal { forms, pos })
}

pub(super) fn quadratic(
    lw: &mut Lowerer<'_>,
    cx: &NodeCx<'_>,
    granularity: &Granularity,
    coeffs: &str,
) -> Result<CVal, ChannelError> {
    let t: Vec<f64> = cx.weight(coeffs)?.iter().copied().collect();
    let n = cx.in_shape.numel();
    let c = cx.in_shape.0.first().copied().unwrap_or(1).max(1);
    let per_c = (n / c).max(1);
    let stride_t = match granularity {
        Granularity::Layer => 1,
        Granularity::Channel => c,
        Granularity::Element => n,
    };
    let idx = |k: usize| match granularity {
        Granularity::Layer => 0,
        Granularity::Channel => k / per_c,
        Granularity::Element => k,
    };
    lw.quadratic(cx.first()?, |k| {
        let i = idx(k);
        (t[i], t[stride_t + i], t[2 * stride_t + i])
    })
    .map_err(|e| cx.unsupported(&e))
}

pub(super) fn max_pool(
    lw: &mut Lowerer<'_>,
    cx: &NodeCx<'_>,
    approx: &ActivationApprox,
    win: &Window,
) -> Result<CVal, ChannelError> {
    let (st, padding, kernel) = (&win.stride, &win.padding, &win.kernel);
    let image_stride = lw.stride;
    let x = cx.first()?;
    let gr = grid(x, &cx.in_shape)
        .ok_or_else(|| cx.unsupported("the input is not laid out as a channel grid"))?;
    let (c, h, wd) = (cx.in_shape[0], cx.in_shape[1], cx.in_shape[2]);
    let (oh, ow) = (cx.out_shape[1], cx.out_shape[2]);
    // A window that reads padding needs a neutral element below every input: a
    // zero is one when the input comes out of a ReLU (non-negative).
    let inside = padding[0] == 0
        && padding[1] == 0
        && (oh.max(1) - 1) * st[0] + kernel[0] <= h
        && (ow.max(1) - 1) * st[1] + kernel[1] <= wd;
    let after_relu =
        cx.g.operand_ids(cx.id)
            .first()
            .and_then(|&o| cx.g.node(o))
            .is_some_and(|n| matches!(n.op, Op::Relu));
    if !inside && !after_relu {
        return Err(cx.unsupported(
            "max-pooling windows that reach into the padding are lowered in the channel layout only after a ReLU (zero is then neutral); use the batch layout",
        ));
    }
    let (oys, oxs) = (gr.ys * st[0] as i64, gr.xs * st[1] as i64);
    // The window element at kernel offset (i, j) of every output position, as a
    // linear form on the output support (a rotation of the input channel; zero
    // where the window reads padding).
    let window = |i: usize, j: usize| -> Result<CVal, ChannelError> {
        let di = i as i64 - padding[0] as i64;
        let dj = j as i64 - padding[1] as i64;
        let r = di * gr.ys + dj * gr.xs;
        let mut forms = Vec::with_capacity(c);
        let mut pos = Vec::with_capacity(cx.out_shape.numel());
        for ch in 0..c {
            let (support, outs) = out_support(gr.base[ch], oh, ow, oys, oxs, image_stride)
                .ok_or_else(|| cx.unsupported("pooled positions leave the image"))?;
            let src = &x.forms[gr.form[ch]];
            let outs_in = window_outs(&outs, [oh, ow], *st, [di, dj], [h, wd]);
            let plan = plan_for(src, r, &outs_in)
                .ok_or_else(|| cx.unsupported("a window reads outside its channel"))?;
            let mut acc = Acc::new(Rc::clone(&support));
            acc.gather(src, r, &plan, 1.0);
            forms.push(acc.finish());
            pos.extend(outs.iter().map(|&(j, _)| (ch as u32, j as u32)));
        }
        Ok(CVal { forms, pos })
    };
    // max(a, b) = b + relu(a - b), pairwise over the window (depth: log2 of the
    // window size times the approximation's), as in the batch layout.
    let mut layer: Vec<CVal> = Vec::with_capacity(kernel[0] * kernel[1]);
    // Every window has the same supports, so all pack alike: as the first one does.
    let mut force = lw.pack == PackChannels::Always;
    for i in 0..kernel[0] {
        for j in 0..kernel[1] {
            let w = window(i, j)?;
            let packed = match lw.pack {
                PackChannels::Never => None,
                _ if layer.is_empty() || force => lw.pack(&w, &cx.out_shape, force),
                _ => None,
            };
            if layer.is_empty() && packed.is_some() {
                force = true;
            }
            layer.push(packed.unwrap_or(w));
        }
    }
    let mismatch = || cx.unsupported("window values are laid out differently");
    while layer.len() > 1 {
        let mut next = Vec::with_capacity(layer.len().div_ceil(2));
        for pair in layer.chunks(2) {
            let [a, b] = pair else {
                next.push(pair[0].clone());
                continue;
            };
            let d = add_vals(a, &affine(b, |_| (-1.0, 0.0))).ok_or_else(mismatch)?;
            let r = lw
                .elementwise(&d, |em, v| apply_approx(em, approx, v))
                .map_err(|e| cx.build(e))?;
            next.push(add_vals(&r, b).ok_or_else(mismatch)?);
        }
        layer = next;
    }
    layer.pop().ok_or_else(|| cx.unsupported("empty window"))
}
