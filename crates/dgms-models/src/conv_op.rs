//! A CPU 2-D convolution as a candle custom op, with its own im2col + GEMM backward.
//!
//! Why: candle 0.11 computes a conv2d's input gradient on the CPU with `conv_transpose2d`,
//! a direct nested loop, and its weight gradient as a second conv2d whose im2col matrix
//! spans the whole batch. That made a CIFAR ResNet-20 training step roughly 9x slower than
//! PyTorch on the same two cores. [`conv2d`] instead lowers the forward pass and both
//! gradients to matrix products over per-item im2col matrices:
//!
//! * forward: `out[n] = W · col(x[n])`
//! * weight gradient: `dW = Σₙ dout[n] · col(x[n])ᵀ`
//! * input gradient: `dx[n] = col2im(Wᵀ · dout[n])`
//!
//! Batch items are spread over rayon's pool in small chunks; each task owns one im2col
//! buffer of at most about 1 MiB, so the extra memory is bounded by the thread count, never
//! an im2col matrix for the whole batch.
//!
//! Repeatable bits: the weight gradient is a sum over the batch, and float addition is not
//! associative. Chunks and tasks are cut from the shapes alone (never the thread count),
//! each task sums its items in order into its own partial, and the partials are added in
//! task order, so dW is bitwise the same whatever the pool size and however rayon steals
//! work. (A rayon `fold`/`reduce` here once made every training run differ slightly: the
//! README's "Repeatability" note.)
//!
//! The matrix products go through [`BackendStorage::matmul`] on [`CpuStorage`], i.e. the
//! same `gemm` crate kernels candle's own matmul uses (runtime-dispatched; AVX2+FMA here).
//! `gemm::gemm` is an `unsafe fn` with no safe wrapper, and this crate has no `unsafe`
//! (project rule: only `dgms-qsimd` may), so we do not call it directly. The strided layouts
//! that `matmul` accepts let us read `Wᵀ` and `col(x)ᵀ` without materialising transposes.
//!
//! Performance note: candle 0.11.1 re-reads /proc/cpuinfo (~50 µs) on every CPU matmul
//! unless `RAYON_NUM_THREADS` is set, so set it (e.g. to the core count) in training runs.
//!
//! Grouped convolutions (including depthwise) are computed natively: group `g` of the
//! im2col matrix is a contiguous block of rows, so each batch item is one batched matmul
//! with the groups as the batch dimension.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use lowering::{col2im, im2col, Geom};
use rayon::prelude::*;

// Geometry, im2col and col2im live in a second file to keep this one short; `path` keeps
// it private to this module without a declaration in lib.rs.
#[path = "conv_op_im2col.rs"]
mod lowering;

/// Name reported by the custom ops and prefixed to every error message.
const OP_NAME: &str = "conv2d_im2col";

/// 2-D convolution of an NCHW `f32` input `x` with an OIHW weight `w` (`(O, C/groups, KH, KW)`),
/// zero padding on all four sides and dilation 1.
///
/// The result has the shape and values of `x.conv2d(w, padding, stride, 1, groups)`, but is
/// computed (forward and backward) by im2col + GEMM on the CPU; see the module docs for why.
/// Non-contiguous inputs are copied to contiguous ones first. Errors (never panics) on
/// non-`f32` dtypes, non-CPU devices, wrong ranks, mismatched channels, a zero stride or
/// group count, or a kernel larger than the padded input.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    for (t, what) in [(x, "input"), (w, "weight")] {
        if t.dtype() != DType::F32 {
            bail!("{OP_NAME}: {what} must be f32, got {:?}", t.dtype());
        }
        if !t.device().is_cpu() {
            bail!("{OP_NAME}: {what} must be on the CPU, got {:?}", t.device());
        }
    }
    Geom::new(x.dims(), w.dims(), stride, padding, groups)?;
    let op = Conv2dIm2col {
        stride,
        padding,
        groups,
    };
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

/// A rank-3 strided view into a storage, as used by the batched GEMMs.
fn layout3(dims: [usize; 3], strides: [usize; 3], offset: usize) -> Layout {
    Layout::new(Shape::from(dims.to_vec()), strides.to_vec(), offset)
}

/// The `f32` data of a contiguous operand and its start offset in `storage`.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<(&'a [f32], usize)> {
    let CpuStorage::F32(v) = s else {
        bail!("{OP_NAME}: {what} must be f32, got {:?}", s.dtype());
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{OP_NAME}: {what} must be contiguous");
    };
    Ok((&v[start..end], start))
}

/// Batched matmul `(b, m, k) · (b, k, n)` on strided CPU views; returns the `(b, m, n)`
/// product as a fresh contiguous buffer. candle's CPU matmul trusts layouts without bounds
/// checks, so every view is checked to lie inside its storage first.
fn matmul(
    lhs: &CpuStorage,
    lhs_l: &Layout,
    rhs: &CpuStorage,
    rhs_l: &Layout,
    bmnk: (usize, usize, usize, usize),
) -> Result<Vec<f32>> {
    for (s, l) in [(lhs, lhs_l), (rhs, rhs_l)] {
        let last = l.dims().iter().zip(l.stride()).map(|(d, st)| (d - 1) * st);
        if l.start_offset() + last.sum::<usize>() >= s.as_slice::<f32>()?.len() {
            bail!("{OP_NAME}: internal error: view {l:?} exceeds its storage");
        }
    }
    match lhs.matmul(rhs, bmnk, lhs_l, rhs_l)? {
        CpuStorage::F32(v) => Ok(v),
        other => bail!("{OP_NAME}: matmul returned {:?}", other.dtype()),
    }
}

/// Runs `f` on the im2col matrices of `nb` items from `n0`, laid out as
/// `(nb, C·KH·KW, OH·OW)` and given as a storage plus start offset. `scratch` is the calling
/// task's reusable buffer; pointwise convs pass the input storage itself.
#[allow(clippy::too_many_arguments)]
fn with_cols<T>(
    g: &Geom,
    xs: &CpuStorage,
    x: &[f32],
    x_off: usize,
    (n0, nb): (usize, usize),
    scratch: &mut Vec<f32>,
    f: impl FnOnce(&CpuStorage, usize) -> Result<T>,
) -> Result<T> {
    if g.pointwise() {
        return f(xs, x_off + n0 * g.x_item());
    }
    scratch.resize(nb * g.col_item(), 0.0);
    let items = x[n0 * g.x_item()..(n0 + nb) * g.x_item()].chunks_exact(g.x_item());
    for (x_n, col) in items.zip(scratch.chunks_exact_mut(g.col_item())) {
        im2col(g, x_n, col);
    }
    // Lend the buffer to a CpuStorage for the GEMM and take it back afterwards.
    let col = CpuStorage::F32(std::mem::take(scratch));
    let res = f(&col, 0);
    if let CpuStorage::F32(v) = col {
        *scratch = v;
    }
    res
}

/// Forward op behind [`conv2d`]; its `bwd` runs [`Conv2dIm2colBackward`].
struct Conv2dIm2col {
    stride: usize,
    padding: usize,
    groups: usize,
}

impl CustomOp2 for Conv2dIm2col {
    fn name(&self) -> &'static str {
        OP_NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(xl.dims(), wl.dims(), self.stride, self.padding, self.groups)?;
        let (x, x_off) = f32_data(xs, xl, "input")?;
        let (_, w_off) = f32_data(ws, wl, "weight")?;
        let (og, kg, ohw, ld, chunk) = (g.og(), g.kg(), g.ohw(), g.ld(), g.chunk_items());
        let mut out = vec![0f32; g.n * g.out_item()];
        out.par_chunks_mut(chunk * g.out_item())
            .enumerate()
            .try_for_each_init(Vec::new, |scratch, (ci, out_c)| -> Result<()> {
                let nb = out_c.len() / g.out_item();
                let (calls, b) = g.calls(nb);
                let w_l = layout3([b, og, kg], [g.w_batch_stride(), kg, 1], w_off);
                with_cols(&g, xs, x, x_off, (ci * chunk, nb), scratch, |cs, off| {
                    for (i, out_i) in out_c.chunks_exact_mut(out_c.len() / calls).enumerate() {
                        let col_l = layout3([b, kg, ohw], [kg * ld, ld, 1], off + i * g.col_item());
                        out_i.copy_from_slice(&matmul(ws, &w_l, cs, &col_l, (b, og, ohw, kg))?);
                    }
                    Ok(())
                })
            })?;
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // Skip gradients nobody will read, e.g. dL/dx of the stem conv on raw images.
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        if !need_dx && !need_dw {
            return Ok((None, None));
        }
        let op = Conv2dIm2colBackward {
            stride: self.stride,
            padding: self.padding,
            groups: self.groups,
            need_dx,
            need_dw,
        };
        let flat = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let nx = if need_dx { x.elem_count() } else { 0 };
        let dx = match need_dx {
            true => Some(flat.narrow(0, 0, nx)?.reshape(x.shape())?),
            false => None,
        };
        let dw = match need_dw {
            true => Some(flat.narrow(0, nx, w.elem_count())?.reshape(w.shape())?),
            false => None,
        };
        Ok((dx, dw))
    }
}

/// Gradients of [`Conv2dIm2col`] from `(x, w, dL/dout)`. Returns one flat buffer holding
/// dL/dx (if `need_dx`) followed by dL/dw (if `need_dw`), so both share each item's im2col.
struct Conv2dIm2colBackward {
    stride: usize,
    padding: usize,
    groups: usize,
    need_dx: bool,
    need_dw: bool,
}

/// Consecutive batch items one backward task covers: `(first item, item count, dL/dx of
/// those items if wanted)`.
type Chunk<'a> = (usize, usize, Option<&'a mut [f32]>);

/// The operands of one backward call, checked: `x`, `w` and `dL/dout` as storages with the
/// start offsets of their contiguous data.
struct BackwardOperands<'a> {
    g: Geom,
    xs: &'a CpuStorage,
    x: &'a [f32],
    x_off: usize,
    ws: &'a CpuStorage,
    w_off: usize,
    gs: &'a CpuStorage,
    g_off: usize,
}

impl<'a> BackwardOperands<'a> {
    fn new(
        op: &Conv2dIm2colBackward,
        (xs, xl): (&'a CpuStorage, &Layout),
        (ws, wl): (&'a CpuStorage, &Layout),
        (gs, gl): (&'a CpuStorage, &Layout),
    ) -> Result<Self> {
        let g = Geom::new(xl.dims(), wl.dims(), op.stride, op.padding, op.groups)?;
        let want = [g.n, g.o, g.oh, g.ow];
        if gl.dims() != want {
            bail!(
                "{OP_NAME}: output gradient has shape {:?}, expected {want:?}",
                gl.dims()
            );
        }
        let (x, x_off) = f32_data(xs, xl, "input")?;
        let (_, w_off) = f32_data(ws, wl, "weight")?;
        let (_, g_off) = f32_data(gs, gl, "output gradient")?;
        Ok(Self {
            g,
            xs,
            x,
            x_off,
            ws,
            w_off,
            gs,
            g_off,
        })
    }

    /// Start of dL/dout of item `n` in its storage.
    fn gy_off(&self, n: usize) -> usize {
        self.g_off + n * self.g.out_item()
    }

    /// `acc += Σ dWᵀ` over the chunk's items, in item order. `acc` holds dWᵀ per group:
    /// this orientation (col · doutᵀ) lets gemm stream the big operand (col) without
    /// repacking it.
    fn add_dw(
        &self,
        scratch: &mut Vec<f32>,
        acc: &mut [f32],
        (n0, nb): (usize, usize),
    ) -> Result<()> {
        let g = &self.g;
        let (og, kg, ohw, ld) = (g.og(), g.kg(), g.ohw(), g.ld());
        let (calls, b) = g.calls(nb);
        with_cols(
            g,
            self.xs,
            self.x,
            self.x_off,
            (n0, nb),
            scratch,
            |cs, off| {
                for i in 0..calls {
                    let col_l = layout3([b, kg, ohw], [kg * ld, ld, 1], off + i * g.col_item());
                    let gyt_l = layout3([b, ohw, og], [og * ohw, 1, ohw], self.gy_off(n0 + i));
                    let dwt = matmul(cs, &col_l, self.gs, &gyt_l, (b, kg, og, ohw))?;
                    for part in dwt.chunks_exact(g.w_len()) {
                        acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
                    }
                }
                Ok(())
            },
        )
    }

    /// dL/dx of the chunk's items into `dx_c`: dcol = Wᵀ · dout, with Wᵀ read through
    /// transposed strides, then col2im.
    fn dx(&self, dx_c: &mut [f32], (n0, nb): (usize, usize)) -> Result<()> {
        let g = &self.g;
        let (og, kg, ohw) = (g.og(), g.kg(), g.ohw());
        let (calls, b) = g.calls(nb);
        let wt_l = layout3([b, kg, og], [g.w_batch_stride(), 1, kg], self.w_off);
        for (i, dx_i) in dx_c.chunks_exact_mut(dx_c.len() / calls).enumerate() {
            let gy_l = layout3([b, og, ohw], [og * ohw, ohw, 1], self.gy_off(n0 + i));
            let mut dcol = matmul(self.ws, &wt_l, self.gs, &gy_l, (b, kg, ohw, og))?;
            let dcols = dcol.chunks_exact_mut(g.k_all() * ohw);
            for (d, c) in dx_i.chunks_exact_mut(g.x_item()).zip(dcols) {
                match g.pointwise() {
                    true => d.copy_from_slice(c),
                    false => col2im(g, c, d),
                }
            }
        }
        Ok(())
    }

    /// One task: its chunks in order, sharing one im2col buffer. Returns the task's dWᵀ
    /// partial (`dw_len` floats, empty when dW is not wanted).
    fn run_task(
        &self,
        scratch: &mut Vec<f32>,
        chunks: Vec<Chunk>,
        dw_len: usize,
    ) -> Result<Vec<f32>> {
        let mut acc = vec![0f32; dw_len];
        for (n0, nb, dx_c) in chunks {
            if dw_len > 0 {
                self.add_dw(scratch, &mut acc, (n0, nb))?;
            }
            if let Some(dx_c) = dx_c {
                self.dx(dx_c, (n0, nb))?;
            }
        }
        Ok(acc)
    }
}

/// The batch's chunks (see [`Geom::chunk_items`]), each with its slice of `dx` when dL/dx is
/// wanted, grouped into consecutive runs, one per backward task (see [`Geom::dw_tasks`]).
fn backward_tasks<'a>(g: &Geom, dx: Option<&'a mut [f32]>, need_dw: bool) -> Vec<Vec<Chunk<'a>>> {
    let chunk = g.chunk_items();
    let chunks: Vec<Chunk<'a>> = match dx {
        Some(dx) => dx
            .chunks_mut(chunk * g.x_item())
            .enumerate()
            .map(|(i, d)| (i * chunk, d.len() / g.x_item(), Some(d)))
            .collect(),
        None => (0..g.n)
            .step_by(chunk)
            .map(|n0| (n0, chunk.min(g.n - n0), None))
            .collect(),
    };
    let tasks = match need_dw {
        true => g.dw_tasks(chunks.len()),
        // Without dW the chunks are independent: one task each.
        false => chunks.len(),
    };
    let per_task = chunks.len().div_ceil(tasks.max(1)).max(1);
    let mut grouped: Vec<Vec<Chunk<'a>>> = Vec::with_capacity(tasks);
    for (i, c) in chunks.into_iter().enumerate() {
        if i % per_task == 0 {
            grouped.push(Vec::with_capacity(per_task));
        }
        grouped.last_mut().expect("pushed above").push(c);
    }
    grouped
}

/// Appends the weight gradient in OIHW order to `out`, from the per-task dWᵀ partials
/// summed in task order (a fixed order, so the result never depends on scheduling).
fn append_dw(g: &Geom, partials: Vec<Vec<f32>>, out: &mut Vec<f32>) {
    let mut parts = partials.into_iter();
    let Some(mut dwt) = parts.next() else {
        return;
    };
    for part in parts {
        dwt.iter_mut().zip(&part).for_each(|(a, p)| *a += p);
    }
    // Transpose the (groups, kg, og) dWᵀ into OIHW dW.
    let og = g.og();
    for group in dwt.chunks_exact(og * g.kg()) {
        for o in 0..og {
            out.extend(group.iter().skip(o).step_by(og));
        }
    }
}

impl CustomOp3 for Conv2dIm2colBackward {
    fn name(&self) -> &'static str {
        "conv2d_im2col_backward"
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
        let ops = BackwardOperands::new(self, (xs, xl), (ws, wl), (gs, gl))?;
        let g = ops.g;
        let dw_len = if self.need_dw { g.w_len() } else { 0 };
        let dx_len = if self.need_dx { g.n * g.x_item() } else { 0 };
        // Room for dL/dw too, so appending it below does not reallocate dL/dx.
        let mut out = Vec::with_capacity(dx_len + dw_len);
        out.resize(dx_len, 0f32);
        let dx = self.need_dx.then_some(out.as_mut_slice());
        let partials = backward_tasks(&g, dx, self.need_dw)
            .into_par_iter()
            .map_init(Vec::new, |scratch, chunks| {
                ops.run_task(scratch, chunks, dw_len)
            })
            .collect::<Result<Vec<Vec<f32>>>>()?;
        if self.need_dw {
            append_dw(&g, partials, &mut out);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
