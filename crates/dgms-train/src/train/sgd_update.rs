//! One SGD step of one f32 parameter as in-place passes over its data:
//! the momentum buffer, then the parameter, instead of about seven candle
//! tensor ops that each allocate and fill a new tensor.
//!
//! Every element is rounded as the composed update in `optim` rounds it:
//! the same f32 operations in the same order, including the `+ 0.0` of
//! candle's `tensor * scalar` (an affine map; it turns -0 into +0), so
//! both give the same bits.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, InplaceOp3, Layout, Result, Tensor};

/// The step's hyper-parameters, as the f32 values candle's scalar ops use.
#[derive(Clone, Copy)]
pub(crate) struct Hyper {
    pub lr: f32,
    pub momentum: f32,
    /// Weight decay, `None` for parameters without it.
    pub decay: Option<f32>,
    pub nesterov: bool,
}

impl Hyper {
    /// `grad + wd * p` (candle: `g + (p * wd)`).
    fn g(self, grad: f32, p: f32) -> f32 {
        match self.decay {
            Some(wd) => grad + (p * wd + 0.0),
            None => grad,
        }
    }
}

/// Updates the momentum buffer `buf` in place from `grad` and the
/// parameter (not yet updated): `buf = g` when `first`, else
/// `buf = momentum * buf + g`.
pub(crate) fn update_buffer(
    buf: &Tensor,
    grad: &Tensor,
    p: &Tensor,
    h: Hyper,
    first: bool,
) -> Result<()> {
    buf.inplace_op3(grad, p, &BufferUpdate { h, first })
}

/// Updates the parameter `p` in place: `p -= lr * d` with `d` the Nesterov
/// step `g + momentum * buf`, or `buf`, or (momentum 0, `buf` None) `g`.
pub(crate) fn update_param(
    p: &Tensor,
    grad: &Tensor,
    buf: Option<&Tensor>,
    h: Hyper,
) -> Result<()> {
    let op = ParamUpdate {
        h,
        momentum: buf.is_some(),
    };
    // Without a buffer the third operand is unused.
    p.inplace_op3(grad, buf.unwrap_or(grad), &op)
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("sgd: {what} must be f32, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("sgd: {what} must be contiguous");
    };
    Ok(&v[start..end])
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let dtype = s.dtype();
    let CpuStorage::F32(v) = s else {
        bail!("sgd: {what} must be f32, got {dtype:?}");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("sgd: {what} must be contiguous");
    };
    Ok(&mut v[start..end])
}

fn check_len(a: usize, b: usize, c: usize) -> Result<()> {
    if a != b || a != c {
        bail!("sgd: operands have {a}, {b} and {c} elements");
    }
    Ok(())
}

struct BufferUpdate {
    h: Hyper,
    first: bool,
}

impl InplaceOp3 for BufferUpdate {
    fn name(&self) -> &'static str {
        "sgd_buffer_update"
    }

    fn cpu_fwd(
        &self,
        bs: &mut CpuStorage,
        bl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<()> {
        let buf = slice_mut(bs, bl, "momentum buffer")?;
        let (grad, p) = (slice(gs, gl, "gradient")?, slice(ps, pl, "parameter")?);
        check_len(buf.len(), grad.len(), p.len())?;
        let (h, m) = (self.h, self.h.momentum);
        for ((b, &gv), &pv) in buf.iter_mut().zip(grad).zip(p) {
            let g = h.g(gv, pv);
            *b = if self.first { g } else { (*b * m + 0.0) + g };
        }
        Ok(())
    }
}

struct ParamUpdate {
    h: Hyper,
    /// Whether the third operand is the (already updated) buffer.
    momentum: bool,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "sgd_param_update"
    }

    fn cpu_fwd(
        &self,
        ps: &mut CpuStorage,
        pl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<()> {
        let p = slice_mut(ps, pl, "parameter")?;
        let (grad, buf) = (
            slice(gs, gl, "gradient")?,
            slice(bs, bl, "momentum buffer")?,
        );
        check_len(p.len(), grad.len(), buf.len())?;
        let h = self.h;
        for ((pv, &gv), &bv) in p.iter_mut().zip(grad).zip(buf) {
            let g = h.g(gv, *pv);
            let d = match (self.momentum, h.nesterov) {
                (true, true) => g + (bv * h.momentum + 0.0),
                (true, false) => bv,
                (false, _) => g,
            };
            *pv -= d * h.lr + 0.0;
        }
        Ok(())
    }
}
