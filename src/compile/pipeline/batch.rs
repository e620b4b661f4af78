//! The batch layout (BEAA's batch packing): slot `i` of every ciphertext holds image `i`, one
//! ciphertext per tensor element. The depth does not depend on the ring, so parameters are
//! chosen from one probe lowering at the requested batch, and a run takes every slot unless
//! `--batch` asks for fewer.

use super::{CompileContext, Lowering, Packing};
use hecc_ir::tensor::verify::Shapes;
use hecc_ir::tensor::Graph;
use hecc_passes::layout::PackingLayout;
use hecc_passes::lower::lower_batch_shaped;
use hecc_passes::params::{ParamChoice, ParamRequest};
use miette::Result;

/// The batch layout strategy.
pub struct BatchPacking;

impl BatchPacking {
    /// Images of the probe lowering: the requested batch, or one.
    fn probe_batch(cx: &CompileContext<'_>) -> u32 {
        cx.opts.batch.unwrap_or(1).max(1)
    }
}

impl Packing for BatchPacking {
    fn layout(&self) -> PackingLayout {
        PackingLayout::Batch
    }

    fn lower(
        &self,
        cx: &CompileContext<'_>,
        g: &Graph,
        shapes: &Shapes,
        slots: u32,
        fold: bool,
    ) -> Result<Lowering> {
        let opts = cx.lower_options(slots);
        Ok(Lowering {
            lowered: lower_batch_shaped(g, shapes, &opts, fold)?,
            images: opts.batch,
            image_stride: 1,
            slots,
            fold,
        })
    }

    fn choose_params(
        &self,
        cx: &CompileContext<'_>,
        depth: &mut dyn FnMut(Lowering) -> Result<u32>,
    ) -> Result<ParamChoice> {
        let probe = Self::probe_batch(cx);
        let low = self.lower(cx, &cx.graph, &cx.shapes, probe, !cx.opts.no_fuse)?;
        let depth = depth(low)?;
        cx.select_params(&ParamRequest {
            depth,
            scale_bits: cx.opts.scale_bits,
            output_bits: cx.opts.output_bits,
            slots: u64::from(probe),
            security: cx.opts.security,
            min_log_n: cx.opts.min_log_n,
        })
    }

    fn fusion_probe_slots(&self, cx: &CompileContext<'_>) -> Option<u32> {
        // The depth does not depend on the ring here: the smallest lowering will do.
        Some(Self::probe_batch(cx))
    }

    fn check(&self, _: &CompileContext<'_>, _: &Lowering, _: &ParamChoice) -> Result<()> {
        // The lowering refuses a batch beyond the slots itself.
        Ok(())
    }
}
