//! Training-mode batch norm as one candle custom op, with its own backward.
//!
//! Why: candle-nn's batch norm composes about ten tensor ops in training
//! (transpose and copy, mean, subtract, square, mean, divide, multiply, add,
//! transpose back), each a full pass over the activation with its own
//! autograd node, and backward doubles that. In a ResNet-20 training step on
//! 2 cores those passes took more time than the convolutions once the
//! convolutions ran through [`crate::conv_op`]. Here the forward pass is two
//! reads and one write of the activation and the backward pass two reads
//! and one write, all per channel in parallel with rayon.
//!
//! Statistics are accumulated in f64 (two passes: mean, then squared
//! deviations), so they do not lose digits to cancellation when a channel's
//! mean is large against its spread.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const OP_NAME: &str = "batch_norm_train";

/// Per-channel batch statistics of one forward pass: the mean and the
/// biased variance (divided by the element count `m` per channel).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    /// Elements per channel (batch x spatial).
    pub m: usize,
}

/// Normalises `x` (N, C, ...) over every dimension but the channel one with
/// the batch's own statistics, then scales by `weight` and shifts by `bias`
/// (both (C,)), as PyTorch's training-mode batch norm does. Returns the
/// output and the statistics (to update running averages). Differentiable
/// in `x`, `weight` and `bias`.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, BatchStats)> {
    if x.rank() < 2 {
        bail!(
            "{OP_NAME}: input must have at least 2 dimensions, got {:?}",
            x.shape()
        );
    }
    let c = x.dim(1)?;
    for (t, what) in [(x, "input"), (weight, "weight"), (bias, "bias")] {
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
    let stats = Arc::new(Mutex::new(None));
    let op = BatchNormTrain {
        eps,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    let taken = stats.lock().ok().and_then(|mut s| s.take());
    let Some(stats) = taken else {
        bail!("{OP_NAME}: internal error: the forward pass left no statistics");
    };
    Ok((y, stats))
}

/// The op's shape: (N, C, S) with S the product of the trailing dimensions.
#[derive(Clone, Copy)]
pub(crate) struct Ncs {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) s: usize,
}

impl Ncs {
    pub(crate) fn of(dims: &[usize]) -> Self {
        Self {
            n: dims[0],
            c: dims[1],
            s: dims[2..].iter().product(),
        }
    }

    /// Elements per channel.
    pub(crate) fn m(self) -> usize {
        self.n * self.s
    }

    /// The S-long runs of channel `ch`, one per batch item.
    pub(crate) fn runs<'a>(
        self,
        data: &'a [f32],
        ch: usize,
    ) -> impl Iterator<Item = &'a [f32]> + 'a {
        (0..self.n).map(move |i| &data[(i * self.c + ch) * self.s..][..self.s])
    }
}

pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{OP_NAME}: {what} must be f32, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{OP_NAME}: {what} must be contiguous");
    };
    Ok(&v[start..end])
}

/// Mean and biased variance of channel `ch`, in f64.
pub(crate) fn channel_stats(g: Ncs, x: &[f32], ch: usize) -> (f64, f64) {
    let m = g.m().max(1) as f64;
    let sum: f64 = g.runs(x, ch).map(|r| lane_sum(r, |v| v)).sum();
    let mean = sum / m;
    let ss: f64 = g
        .runs(x, ch)
        .map(|r| lane_sum(r, |v| (v - mean) * (v - mean)))
        .sum();
    (mean, ss / m)
}

/// Σ f(v) over `run` in f64 with eight independent accumulators: a single
/// f64 chain waits on the add latency for every element, separate lanes
/// overlap (and vectorise).
fn lane_sum(run: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let mut chunks = run.chunks_exact(L);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

/// Per channel `(a, d)` with `bn(x) = x * a + d`: `a = w / sqrt(var + eps)`,
/// `d = b - mean * a`, from `(mean, var)` in f64, rounded once to f32.
pub(crate) fn scale_shift(stats: &[(f64, f64)], w: &[f32], b: &[f32], eps: f64) -> Vec<(f32, f32)> {
    stats
        .iter()
        .zip(w.iter().zip(b))
        .map(|(&(mean, var), (&w, &b))| {
            let a = w as f64 / (var + eps).sqrt();
            (a as f32, (b as f64 - mean * a) as f32)
        })
        .collect()
}

impl BatchStats {
    /// From per-channel `(mean, var)` in f64 over `m` elements each.
    pub(crate) fn of(stats: &[(f64, f64)], m: usize) -> Self {
        Self {
            mean: stats.iter().map(|s| s.0 as f32).collect(),
            var: stats.iter().map(|s| s.1 as f32).collect(),
            m,
        }
    }
}

struct BatchNormTrain {
    eps: f64,
    /// Filled by the forward pass; read (taken) by [`batch_norm_train`].
    stats: Arc<Mutex<Option<BatchStats>>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Ncs::of(xl.dims());
        let x = f32_slice(xs, xl, "input")?;
        let w = f32_slice(ws, wl, "weight")?;
        let b = f32_slice(bs, bl, "bias")?;
        let stats: Vec<(f64, f64)> = (0..g.c)
            .into_par_iter()
            .map(|ch| channel_stats(g, x, ch))
            .collect();
        let ad = scale_shift(&stats, w, b, self.eps);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(g.s.max(1))
            .zip(x.par_chunks(g.s.max(1)))
            .enumerate()
            .for_each(|(i, (yr, xr))| {
                let (a, d) = ad[i % g.c];
                for (yv, &xv) in yr.iter_mut().zip(xr) {
                    *yv = xv * a + d;
                }
            });
        let found = BatchStats::of(&stats, g.m());
        if let Ok(mut slot) = self.stats.lock() {
            *slot = Some(found);
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = BatchNormTrainBackward { eps: self.eps };
        let flat = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let (nx, c) = (x.elem_count(), w.elem_count());
        let dx = flat.narrow(0, 0, nx)?.reshape(x.shape())?;
        let dw = flat.narrow(0, nx, c)?;
        let db = flat.narrow(0, nx + c, c)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Gradients of [`BatchNormTrain`] from `(x, weight, dL/dy)`, as one flat
/// buffer: dL/dx, then dL/dweight, then dL/dbias. With x̂ the normalised
/// input and sums over a channel's m elements:
/// dbias = Σg, dweight = Σ g·x̂, dx = weight / σ · (g − dbias/m − x̂·dweight/m).
struct BatchNormTrainBackward {
    eps: f64,
}

impl CustomOp3 for BatchNormTrainBackward {
    fn name(&self) -> &'static str {
        "batch_norm_train_backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Ncs::of(xl.dims());
        let x = f32_slice(xs, xl, "input")?;
        let w = f32_slice(ws, wl, "weight")?;
        let dy = f32_slice(gs, gl, "gradient")?;
        if dy.len() != x.len() {
            bail!(
                "{OP_NAME}: gradient has {} elements, input {}",
                dy.len(),
                x.len()
            );
        }
        // Per channel: mean, 1/σ, Σg, Σ g·x̂ (f64 sums).
        let per_channel: Vec<[f64; 4]> = (0..g.c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = channel_stats(g, x, ch);
                let inv_std = 1.0 / (var + self.eps).sqrt();
                let (mut sg, mut sgx) = (0f64, 0f64);
                for (xr, gr) in g.runs(x, ch).zip(g.runs(dy, ch)) {
                    for (&xv, &gv) in xr.iter().zip(gr) {
                        sg += gv as f64;
                        sgx += gv as f64 * (xv as f64 - mean);
                    }
                }
                [mean, inv_std, sg, sgx * inv_std]
            })
            .collect();
        let m = g.m().max(1) as f64;
        let mut out = vec![0f32; x.len() + 2 * g.c];
        let (dx, dwb) = out.split_at_mut(x.len());
        dx.par_chunks_mut(g.s.max(1))
            .zip(x.par_chunks(g.s.max(1)).zip(dy.par_chunks(g.s.max(1))))
            .enumerate()
            .for_each(|(i, (dxr, (xr, gr)))| {
                let [mean, inv_std, sg, sgx] = per_channel[i % g.c];
                let k = (w[i % g.c] as f64 * inv_std) as f32;
                let (mean, inv_std) = (mean as f32, inv_std as f32);
                let (gm, gxm) = ((sg / m) as f32, (sgx / m) as f32);
                for ((d, &xv), &gv) in dxr.iter_mut().zip(xr).zip(gr) {
                    let xhat = (xv - mean) * inv_std;
                    *d = k * (gv - gm - xhat * gxm);
                }
            });
        let (dw, db) = dwb.split_at_mut(g.c);
        for (ch, s) in per_channel.iter().enumerate() {
            dw[ch] = s[3] as f32;
            db[ch] = s[2] as f32;
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
