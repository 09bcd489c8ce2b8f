//! Evaluation-mode batch norm fused with the ReLU after it and the residual
//! add before it: `y = relu(x * a + d + r)` per channel, one custom op
//! with its own backward.
//!
//! Why: composed, that is four passes over the activation (broadcast
//! multiply, broadcast add, add, ReLU), each allocating its output; here
//! one. It rounds as the composed ops do (`x * a`, then `+ d`, then `+ r`),
//! so outputs are bit for bit the same.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::batch_norm_op::{f32_slice, Ncs};
use crate::batch_norm_relu_op::relu_masked;

const OP_NAME: &str = "affine_relu";

/// `relu(x * scale + shift + residual)` with `scale` and `shift` (C,)
/// broadcast over dimension 1 of `x` (N, C, ...) and `residual` (same shape
/// as `x`) optional. Differentiable in all of them.
pub fn affine_relu(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    if x.rank() < 2 {
        bail!(
            "{OP_NAME}: input must have at least 2 dimensions, got {:?}",
            x.shape()
        );
    }
    let c = x.dim(1)?;
    let mut inputs = vec![(x, "input"), (scale, "scale"), (shift, "shift")];
    if let Some(r) = residual {
        inputs.push((r, "residual"));
    }
    for (t, what) in inputs {
        if t.dtype() != DType::F32 || !t.device().is_cpu() {
            bail!("{OP_NAME}: {what} must be f32 on the CPU");
        }
    }
    for (t, what) in [(scale, "scale"), (shift, "shift")] {
        if t.dims() != [c] {
            bail!(
                "{OP_NAME}: {what} must have shape [{c}], got {:?}",
                t.shape()
            );
        }
    }
    if residual.is_some_and(|r| r.dims() != x.dims()) {
        bail!(
            "{OP_NAME}: residual must have the input's shape {:?}",
            x.shape()
        );
    }
    // One (2C,) input for scale and shift: custom ops take at most three.
    let ad = Tensor::cat(&[scale, shift], 0)?;
    let x = x.contiguous()?;
    match residual {
        Some(r) => x.apply_op3(&ad, &r.contiguous()?, AffineRelu),
        None => x.apply_op2(&ad, AffineRelu),
    }
}

struct AffineRelu;

impl AffineRelu {
    fn forward(
        xs: &CpuStorage,
        xl: &Layout,
        ads: &CpuStorage,
        adl: &Layout,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Ncs::of(xl.dims());
        let x = f32_slice(xs, xl, "input")?;
        let (a, d) = f32_slice(ads, adl, "scale and shift")?.split_at(g.c);
        let y = affine_relu_rows(g, x, |ch| (a[ch], d[ch]), residual);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// dL/dx, dL/d(scale, shift) and, with a residual, dL/dr.
    fn backward(
        x: &Tensor,
        ad: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let c = x.dim(1)?;
        let scale = ad.narrow(0, 0, c)?.to_vec1::<f32>()?;
        let op = AffineReluBackward { scale, residual };
        let flat = x.apply_op3_no_bwd(res, &grad.contiguous()?, &op)?;
        split_gradients(&flat, x, residual)
    }
}

/// `relu(x * a + d (+ r))` with `(a, d) = scale_shift(channel)`, rounded as
/// the composed ops round it (`x * a`, then `+ d`, then `+ r`): the forward
/// pass of this op and of the training-mode fused batch norm.
pub(crate) fn affine_relu_rows(
    g: Ncs,
    x: &[f32],
    scale_shift: impl Fn(usize) -> (f32, f32) + Sync,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let s = g.s.max(1);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .enumerate()
        .for_each(|(i, (yr, xr))| {
            let (a, d) = scale_shift(i % g.c);
            match residual {
                Some(r) => {
                    let rr = &r[i * s..][..yr.len()];
                    for ((yv, &xv), &rv) in yr.iter_mut().zip(xr).zip(rr) {
                        *yv = (xv * a + d + rv).max(0.0);
                    }
                }
                None => {
                    for (yv, &xv) in yr.iter_mut().zip(xr) {
                        *yv = (xv * a + d).max(0.0);
                    }
                }
            }
        });
    y
}

/// Splits a fused backward's flat output, laid out as dL/dx, then (with a
/// residual) dL/dr, then the 2C per-channel parameter gradients, into
/// `(dx, dparams, dr)`.
pub(crate) fn split_gradients(
    flat: &Tensor,
    x: &Tensor,
    residual: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let (nx, c) = (x.elem_count(), x.dim(1)?);
    let dx = flat.narrow(0, 0, nx)?.reshape(x.shape())?;
    let (dr, tail) = if residual {
        (Some(flat.narrow(0, nx, nx)?.reshape(x.shape())?), 2 * nx)
    } else {
        (None, nx)
    };
    Ok((dx, flat.narrow(0, tail, 2 * c)?, dr))
}

impl CustomOp2 for AffineRelu {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ads: &CpuStorage,
        adl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward(xs, xl, ads, adl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        ad: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dad, _) = Self::backward(x, ad, res, grad, false)?;
        Ok((Some(dx), Some(dad)))
    }
}

impl CustomOp3 for AffineRelu {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ads: &CpuStorage,
        adl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = f32_slice(rs, rl, "residual")?;
        Self::forward(xs, xl, ads, adl, Some(r))
    }

    fn bwd(
        &self,
        x: &Tensor,
        ad: &Tensor,
        _r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dad, dr) = Self::backward(x, ad, res, grad, true)?;
        Ok((Some(dx), Some(dad), dr))
    }
}

/// From `(x, y, dL/dy)`, with g the gradient masked by y > 0: dx = a·g,
/// then (with a residual) dr = g, then Σ g·x and Σ g per channel.
struct AffineReluBackward {
    scale: Vec<f32>,
    residual: bool,
}

impl CustomOp3 for AffineReluBackward {
    fn name(&self) -> &'static str {
        "affine_relu_backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Ncs::of(xl.dims());
        let x = f32_slice(xs, xl, "input")?;
        let y = f32_slice(ys, yl, "output")?;
        let dy = f32_slice(gs, gl, "gradient")?;
        if dy.len() != x.len() || y.len() != x.len() || self.scale.len() != g.c {
            bail!("{OP_NAME}: backward operands do not match the input");
        }
        let (nx, s) = (x.len(), g.s.max(1));
        let n_res = if self.residual { nx } else { 0 };
        let mut out = vec![0f32; nx + n_res + 2 * g.c];
        let (dx, rest) = out.split_at_mut(nx);
        let (dr, dad) = rest.split_at_mut(n_res);
        let masked = |i: usize| {
            let r = i * g.s..(i + 1) * g.s;
            y[r.clone()]
                .iter()
                .zip(&dy[r])
                .map(|(&yv, &gv)| relu_masked(yv, gv))
        };
        if self.residual {
            dx.par_chunks_mut(s)
                .zip(dr.par_chunks_mut(s))
                .enumerate()
                .for_each(|(i, (dxr, drr))| {
                    let a = self.scale[i % g.c];
                    for ((d, r), gv) in dxr.iter_mut().zip(drr).zip(masked(i)) {
                        *d = a * gv;
                        *r = gv;
                    }
                });
        } else {
            dx.par_chunks_mut(s).enumerate().for_each(|(i, dxr)| {
                let a = self.scale[i % g.c];
                for (d, gv) in dxr.iter_mut().zip(masked(i)) {
                    *d = a * gv;
                }
            });
        }
        // Per-channel sums in f64 (C is small next to N·S; this pass reads
        // x, y and dy once more).
        let sums: Vec<(f64, f64)> = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                let (mut sgx, mut sg) = (0f64, 0f64);
                for n in 0..g.n {
                    let i = n * g.c + ch;
                    for (gv, &xv) in masked(i).zip(&x[i * g.s..(i + 1) * g.s]) {
                        sgx += gv as f64 * xv as f64;
                        sg += gv as f64;
                    }
                }
                (sgx, sg)
            })
            .collect();
        let (da, dd) = dad.split_at_mut(g.c);
        for (ch, &(sgx, sg)) in sums.iter().enumerate() {
            da[ch] = sgx as f32;
            dd[ch] = sg as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
