//! Training-mode batch norm fused with the ReLU after it and, in residual
//! blocks, the residual add before that ReLU: `y = relu(bn(x) + r)` as one
//! candle custom op with its own backward.
//!
//! Why: composed, the add and the ReLU are two more passes over the
//! activation forward, and candle's ReLU backward alone is five (zeros,
//! compare, cast, multiply, accumulate). Here the forward pass is one
//! read of `x` for the statistics and one read of `x` (and `r`) and one
//! write of `y`; the backward pass two reads of `x`, `y` and the incoming
//! gradient and one write of each input gradient. The batch statistics
//! (mean and 1/σ per channel) are kept from the forward pass for the
//! backward one instead of being recomputed.
//!
//! The ReLU's gradient is masked where the output is positive (PyTorch's
//! rule; candle's own ReLU also passes it where the input is exactly 0, a
//! set of measure zero).

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::affine_relu_op::{affine_relu_rows, split_gradients};
use crate::batch_norm_op::{channel_stats, f32_slice, scale_shift, BatchStats, Ncs};

const OP_NAME: &str = "batch_norm_relu_train";

/// `relu(batch_norm(x) + residual)` in training mode (the batch's own
/// statistics, as [`crate::batch_norm_op::batch_norm_train`]), with
/// `residual` (same shape as `x`) optional. Returns the output and the
/// statistics (to update running averages). Differentiable in `x`,
/// `weight`, `bias` and `residual`.
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    residual: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    if x.rank() < 2 {
        bail!(
            "{OP_NAME}: input must have at least 2 dimensions, got {:?}",
            x.shape()
        );
    }
    let c = x.dim(1)?;
    let mut inputs = vec![(x, "input"), (weight, "weight"), (bias, "bias")];
    if let Some(r) = residual {
        inputs.push((r, "residual"));
    }
    for (t, what) in inputs {
        if t.dtype() != DType::F32 {
            bail!("{OP_NAME}: {what} must be f32, got {:?}", t.dtype());
        }
        if !t.device().is_cpu() {
            bail!("{OP_NAME}: {what} must be on the CPU");
        }
    }
    for (t, what) in [(weight, "weight"), (bias, "bias")] {
        if t.dims() != [c] {
            bail!(
                "{OP_NAME}: {what} must have shape [{c}], got {:?}",
                t.shape()
            );
        }
    }
    if let Some(r) = residual {
        if r.dims() != x.dims() {
            bail!(
                "{OP_NAME}: residual must have the input's shape {:?}, got {:?}",
                x.shape(),
                r.shape()
            );
        }
    }
    let saved = Arc::new(Mutex::new(None));
    let op = BnRelu {
        eps,
        saved: saved.clone(),
    };
    // Weight and bias as one (2C,) input: candle's custom ops take at most
    // three, and the residual needs the third.
    let wb = Tensor::cat(&[weight, bias], 0)?;
    let x = x.contiguous()?;
    let y = match residual {
        Some(r) => x.apply_op3(&wb, &r.contiguous()?, op)?,
        None => x.apply_op2(&wb, op)?,
    };
    let stats = saved
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|s: &Saved| s.stats.clone()));
    let Some(stats) = stats else {
        bail!("{OP_NAME}: internal error: the forward pass left no statistics");
    };
    Ok((y, stats))
}

/// What the forward pass leaves for the backward one.
#[derive(Clone)]
struct Saved {
    stats: BatchStats,
    /// Per channel: mean and 1/σ (f64), the weight.
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    weight: Vec<f32>,
}

struct BnRelu {
    eps: f64,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl BnRelu {
    fn forward(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        wbs: &CpuStorage,
        wbl: &Layout,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Ncs::of(xl.dims());
        let x = f32_slice(xs, xl, "input")?;
        let wb = f32_slice(wbs, wbl, "weight and bias")?;
        let (w, b) = wb.split_at(g.c);
        let stats: Vec<(f64, f64)> = (0..g.c)
            .into_par_iter()
            .map(|ch| channel_stats(g, x, ch))
            .collect();
        let inv_std: Vec<f64> = stats
            .iter()
            .map(|&(_, var)| 1.0 / (var + self.eps).sqrt())
            .collect();
        // bn(x) = x * a + d per channel, rounded as the unfused op rounds it.
        let ad = scale_shift(&stats, w, b, self.eps);
        let y = affine_relu_rows(g, x, |ch| ad[ch], residual);
        let saved = Saved {
            stats: BatchStats::of(&stats, g.m()),
            mean: stats.iter().map(|s| s.0).collect(),
            inv_std,
            weight: w.to_vec(),
        };
        if let Ok(mut slot) = self.saved.lock() {
            *slot = Some(saved);
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    /// dL/dx, dL/d(weight, bias) and, with a residual, dL/dr.
    fn backward(
        &self,
        x: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        residual: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let saved = self.saved.lock().ok().and_then(|s| s.clone());
        let Some(saved) = saved else {
            bail!("{OP_NAME}: internal error: backward before forward");
        };
        let op = BnReluBackward { saved, residual };
        let flat = x.apply_op3_no_bwd(res, &grad.contiguous()?, &op)?;
        split_gradients(&flat, x, residual)
    }
}

impl CustomOp2 for BnRelu {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        wbs: &CpuStorage,
        wbl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xl, wbs, wbl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        _wb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, _) = self.backward(x, res, grad, false)?;
        Ok((Some(dx), Some(dwb)))
    }
}

impl CustomOp3 for BnRelu {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        wbs: &CpuStorage,
        wbl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = f32_slice(rs, rl, "residual")?;
        self.forward(xs, xl, wbs, wbl, Some(r))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _wb: &Tensor,
        _r: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dwb, dr) = self.backward(x, res, grad, true)?;
        Ok((Some(dx), Some(dwb), dr))
    }
}

/// Gradients from `(x, y, dL/dy)` as one flat buffer: dL/dx, then (with a
/// residual) dL/dr, then dL/dweight and dL/dbias. With g the incoming
/// gradient masked by y > 0 (the ReLU's), x̂ the normalised input and sums
/// over a channel's m elements: dr = g, dbias = Σg, dweight = Σ g·x̂,
/// dx = weight / σ · (g − dbias/m − x̂·dweight/m).
struct BnReluBackward {
    saved: Saved,
    residual: bool,
}

impl CustomOp3 for BnReluBackward {
    fn name(&self) -> &'static str {
        "batch_norm_relu_train_backward"
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
        if dy.len() != x.len() || y.len() != x.len() {
            bail!(
                "{OP_NAME}: gradient has {} elements, output {}, input {}",
                dy.len(),
                y.len(),
                x.len()
            );
        }
        let Saved {
            mean,
            inv_std,
            weight,
            ..
        } = &self.saved;
        if mean.len() != g.c {
            bail!(
                "{OP_NAME}: backward for {} channels, forward had {}",
                g.c,
                mean.len()
            );
        }
        // Per channel: Σg and Σ g·(x − mean), masked.
        let sums: Vec<(f64, f64)> = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                g.runs(x, ch)
                    .zip(g.runs(y, ch).zip(g.runs(dy, ch)))
                    .map(|(xr, (yr, gr))| masked_sums(xr, yr, gr, mean[ch]))
                    .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
            })
            .collect();
        let m = g.m().max(1) as f64;
        let nx = x.len();
        let n_res = if self.residual { nx } else { 0 };
        let mut out = vec![0f32; nx + n_res + 2 * g.c];
        let (dx, rest) = out.split_at_mut(nx);
        let (dr, dwb) = rest.split_at_mut(n_res);
        let s = g.s.max(1);
        let run = |i: usize, dxr: &mut [f32], drr: Option<&mut [f32]>| {
            let ch = i % g.c;
            let (sg, sgx) = sums[ch];
            let k = (weight[ch] as f64 * inv_std[ch]) as f32;
            let mu = mean[ch] as f32;
            let gm = (sg / m) as f32;
            // x̂·dweight/m = (x − mean)·(1/σ)·Σg(x − mean)/σ/m.
            let xs = (sgx * inv_std[ch] * inv_std[ch] / m) as f32;
            let range = i * s..i * s + dxr.len();
            let (xr, yr, gr) = (&x[range.clone()], &y[range.clone()], &dy[range]);
            let masked = yr.iter().zip(gr).map(|(&yv, &gv)| relu_masked(yv, gv));
            match drr {
                Some(drr) => {
                    for (((d, r), &xv), gv) in dxr.iter_mut().zip(drr).zip(xr).zip(masked) {
                        *d = k * (gv - gm - (xv - mu) * xs);
                        *r = gv;
                    }
                }
                None => {
                    for ((d, &xv), gv) in dxr.iter_mut().zip(xr).zip(masked) {
                        *d = k * (gv - gm - (xv - mu) * xs);
                    }
                }
            }
        };
        if self.residual {
            dx.par_chunks_mut(s)
                .zip(dr.par_chunks_mut(s))
                .enumerate()
                .for_each(|(i, (dxr, drr))| run(i, dxr, Some(drr)));
        } else {
            dx.par_chunks_mut(s)
                .enumerate()
                .for_each(|(i, dxr)| run(i, dxr, None));
        }
        let (dw, db) = dwb.split_at_mut(g.c);
        for (ch, &(sg, sgx)) in sums.iter().enumerate() {
            dw[ch] = (sgx * inv_std[ch]) as f32;
            db[ch] = sg as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Σg and Σ g·(x − mean) over one run, g masked by y > 0: f32 on sixteen
/// independent lanes (one chain would wait on the add latency for every
/// element; lanes overlap and vectorise), widened to f64 per run, whose
/// sums the caller adds in f64.
fn masked_sums(x: &[f32], y: &[f32], g: &[f32], mean: f64) -> (f64, f64) {
    const L: usize = 16;
    let mu = mean as f32;
    let (mut sg, mut sgx) = ([0f32; L], [0f32; L]);
    let mut xc = x.chunks_exact(L);
    let mut yc = y.chunks_exact(L);
    let mut gc = g.chunks_exact(L);
    for ((xs, ys), gs) in (&mut xc).zip(&mut yc).zip(&mut gc) {
        // Fixed-size views: without them the lane loop kept a bounds
        // check per element and stayed scalar.
        let (Ok(xs), Ok(ys), Ok(gs)) = (
            <&[f32; L]>::try_from(xs),
            <&[f32; L]>::try_from(ys),
            <&[f32; L]>::try_from(gs),
        ) else {
            continue;
        };
        for l in 0..L {
            let gv = relu_masked(ys[l], gs[l]);
            sg[l] += gv;
            sgx[l] += gv * (xs[l] - mu);
        }
    }
    let (mut tg, mut tgx) = (0f64, 0f64);
    for l in 0..L {
        tg += sg[l] as f64;
        tgx += sgx[l] as f64;
    }
    for ((&xv, &yv), &gv) in xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .zip(gc.remainder())
    {
        let gv = relu_masked(yv, gv) as f64;
        tg += gv;
        tgx += gv * (xv as f64 - mean);
    }
    (tg, tgx)
}

/// `g` where the ReLU's output `y` is positive, else 0, as a bit mask: the
/// `if` form compiled to a branch per element, mispredicted about as often
/// as the ReLU cuts; the mask vectorises.
#[inline(always)]
pub(crate) fn relu_masked(y: f32, g: f32) -> f32 {
    f32::from_bits(g.to_bits() & ((y > 0.0) as u32).wrapping_neg())
}
