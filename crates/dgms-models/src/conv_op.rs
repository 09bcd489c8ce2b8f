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
//! Batch items are spread over rayon's pool; each task owns one im2col buffer, so the extra
//! memory is one `C·KH·KW × OH·OW` matrix per running task, never one for the whole batch.
//!
//! The matrix products go through [`BackendStorage::matmul`] on [`CpuStorage`], i.e. the
//! same `gemm` crate kernels candle's own matmul uses (runtime-dispatched AVX2/AVX-512).
//! `gemm::gemm` is an `unsafe fn` and this crate has no `unsafe` (project rule: only
//! `dgms-qsimd` may), so we do not call it directly. The strided layouts that
//! `matmul` accepts let us read `Wᵀ` and `col(x)ᵀ` without materialising transposes.
//!
//! Grouped convolutions (including depthwise) are computed natively: group `g` of the
//! im2col matrix is a contiguous block of rows, so each batch item is one batched matmul
//! with the groups as the batch dimension.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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

/// Sizes of one convolution, validated once so the kernels below can index without checks
/// failing.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    /// Checks the shapes of input `x` and weight `w` and derives the output size.
    fn new(x: &[usize], w: &[usize], stride: usize, padding: usize, groups: usize) -> Result<Self> {
        let &[n, c, h, wd] = x else {
            bail!("{OP_NAME}: input must be 4-D (N, C, H, W), got shape {x:?}");
        };
        let &[o, cg, kh, kw] = w else {
            bail!("{OP_NAME}: weight must be 4-D (O, C/groups, KH, KW), got shape {w:?}");
        };
        if stride == 0 {
            bail!("{OP_NAME}: stride must be at least 1");
        }
        if groups == 0 {
            bail!("{OP_NAME}: groups must be at least 1");
        }
        if [c, h, wd, o, cg, kh, kw].contains(&0) {
            bail!("{OP_NAME}: zero-sized dimension in input {x:?} or weight {w:?}");
        }
        if cg * groups != c {
            bail!(
                "{OP_NAME}: in_channel mismatch: input has {c} channels, weight {w:?} expects \
                 {cg} per group with groups {groups}"
            );
        }
        if o % groups != 0 {
            bail!("{OP_NAME}: out_channels {o} is not divisible by groups {groups}");
        }
        if h + 2 * padding < kh || wd + 2 * padding < kw {
            bail!(
                "{OP_NAME}: kernel {kh}x{kw} is larger than the padded input {}x{}",
                h + 2 * padding,
                wd + 2 * padding
            );
        }
        let oh = (h + 2 * padding - kh) / stride + 1;
        let ow = (wd + 2 * padding - kw) / stride + 1;
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            stride,
            padding,
            groups,
            oh,
            ow,
        })
    }

    /// Output channels per group: the M of each group's forward GEMM.
    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// im2col rows per group (`C/groups · KH · KW`): the K of each group's forward GEMM.
    fn kg(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    fn x_item(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_item(&self) -> usize {
        self.o * self.ohw()
    }

    fn w_len(&self) -> usize {
        self.o * self.kg()
    }

    /// A 1x1, stride-1, unpadded conv's im2col matrix is the input item itself, so we skip
    /// the copy and hand the input storage straight to the GEMM.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output positions `[lo, hi)` along one axis whose input coordinate
    /// `o·stride + k − padding` falls inside `[0, len)` for kernel offset `k`.
    fn span(&self, k: usize, len: usize, out_len: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        if len + p <= k {
            return (0, 0);
        }
        let hi = out_len.min((len - 1 + p - k) / s + 1);
        let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
        (lo.min(hi), hi)
    }

    /// Stride-1 conv whose output keeps the input width: im2col rows are shifted copies.
    fn same_width(&self) -> bool {
        self.stride == 1 && self.ow == self.w
    }

    /// Row stride of the im2col buffer. A multiple of 64 floats (e.g. 32x32 → 1024, i.e.
    /// 4 KiB) would make the GEMM's strided reads of consecutive rows collide in the same L1
    /// sets; 16 floats of padding measured ~1.5x faster for the 32x32 forward GEMM.
    fn ld(&self) -> usize {
        match self.ohw() {
            n if !self.pointwise() && n % 64 == 0 => n + 16,
            n => n,
        }
    }

    /// im2col rows over all groups (`C·KH·KW`).
    fn k_all(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// im2col buffer size of one batch item.
    fn col_item(&self) -> usize {
        self.k_all() * self.ld()
    }

    /// Batch items per rayon task. Each candle matmul call has a fixed cost (candle 0.11.1
    /// re-reads /proc/cpuinfo, ~50 µs, on every call unless `RAYON_NUM_THREADS` is set), so
    /// small items share calls; but a task's im2col buffer stays within [`COL_BUDGET`] floats
    /// (cache-sized) and every thread still gets about two chunks to balance load.
    fn chunk_items(&self) -> usize {
        let by_mem = COL_BUDGET / self.col_item();
        let by_balance = self.n.div_ceil(2 * rayon::current_num_threads());
        by_mem.min(by_balance).max(1)
    }

    /// `(calls, b)`: how a chunk of `nb` items is covered by batched matmuls of batch `b`.
    /// Ungrouped, one call batches the items (the weight is broadcast with batch stride 0);
    /// grouped, each item is one call batched over its groups.
    fn calls(&self, nb: usize) -> (usize, usize) {
        match self.groups {
            1 => (1, nb),
            g => (nb, g),
        }
    }

    /// Batch stride of the weight seen as `(b, O/groups, kg)`: see [`Self::calls`].
    fn w_batch_stride(&self) -> usize {
        match self.groups {
            1 => 0,
            _ => self.og() * self.kg(),
        }
    }
}

/// Floats of im2col scratch per rayon task (1 MiB); see [`Geom::chunk_items`].
const COL_BUDGET: usize = 1 << 18;

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
        im2col(g, x_n, col, g.ld());
    }
    // Lend the buffer to a CpuStorage for the GEMM and take it back afterwards.
    let col = CpuStorage::F32(std::mem::take(scratch));
    let res = f(&col, 0);
    if let CpuStorage::F32(v) = col {
        *scratch = v;
    }
    res
}

/// For a stride-1 conv that keeps the width (`2·padding = KW − 1`), im2col row `(ki, kj)`
/// over output rows `[h_lo, h_hi)` is one contiguous input range shifted by `off`: entry `d`
/// reads input `d + off`. Returns that shift and the entries `[lo, hi)` whose source lies in
/// the plane; entries in padding columns read a neighbouring row and must be masked.
fn same_width_shift(g: &Geom, ki: usize, kj: usize, rows: (usize, usize)) -> (usize, usize, isize) {
    let off = (ki * g.w + kj) as isize - (g.padding * (g.w + 1)) as isize;
    let plane = (g.h * g.w) as isize;
    let lo = (rows.0 * g.ow).max((-off).max(0) as usize);
    let hi = (rows.1 * g.ow).min((plane - off).max(0) as usize);
    (lo, hi.max(lo), off)
}

/// The im2col row index `r` as `(kj, ki, c)`.
fn row_coords(g: &Geom, r: usize) -> (usize, usize, usize) {
    (r % g.kw, (r / g.kw) % g.kh, r / (g.kh * g.kw))
}

/// Unfolds one input item `(C, H, W)` into `col` of shape `(C·KH·KW, OH·OW)` with row stride
/// `ld`, with zeros where the kernel window hangs over the padding.
fn im2col(g: &Geom, x: &[f32], col: &mut [f32], ld: usize) {
    let (hw, s, p, ow) = (g.h * g.w, g.stride, g.padding, g.ow);
    for (r, row) in col.chunks_exact_mut(ld).enumerate() {
        let row = &mut row[..g.ohw()];
        let (kj, ki, c) = row_coords(g, r);
        let plane = &x[c * hw..(c + 1) * hw];
        let (h_lo, h_hi) = g.span(ki, g.h, g.oh);
        let (w_lo, w_hi) = g.span(kj, g.w, ow);
        if g.same_width() {
            // One block copy instead of a short copy per output row, then mask the padding.
            let (lo, hi, off) = same_width_shift(g, ki, kj, (h_lo, h_hi));
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
            let src = (lo as isize + off) as usize;
            row[lo..hi].copy_from_slice(&plane[src..src + hi - lo]);
            for seg in row[h_lo * ow..h_hi * ow].chunks_exact_mut(ow) {
                seg[..w_lo].fill(0.0);
                seg[w_hi..].fill(0.0);
            }
            continue;
        }
        for (oy, seg) in row.chunks_exact_mut(ow).enumerate() {
            if oy < h_lo || oy >= h_hi || w_lo == w_hi {
                seg.fill(0.0);
                continue;
            }
            let src = &plane[(oy * s + ki - p) * g.w..][..g.w];
            seg[..w_lo].fill(0.0);
            seg[w_hi..].fill(0.0);
            let ix0 = w_lo * s + kj - p;
            let dst = &mut seg[w_lo..w_hi];
            if s == 1 {
                dst.copy_from_slice(&src[ix0..ix0 + dst.len()]);
            } else {
                for (d, v) in dst.iter_mut().zip(src[ix0..].iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
}

/// Adjoint of [`im2col`] (for a contiguous `col`): adds every entry back onto the input
/// position it was read from. `dx` must be zeroed by the caller; `col` is clobbered.
fn col2im(g: &Geom, col: &mut [f32], dx: &mut [f32]) {
    let (hw, s, p, ow) = (g.h * g.w, g.stride, g.padding, g.ow);
    for (r, row) in col.chunks_exact_mut(g.ohw()).enumerate() {
        let (kj, ki, c) = row_coords(g, r);
        let plane = &mut dx[c * hw..(c + 1) * hw];
        let (h_lo, h_hi) = g.span(ki, g.h, g.oh);
        let (w_lo, w_hi) = g.span(kj, g.w, ow);
        if w_lo == w_hi {
            continue;
        }
        if g.same_width() {
            // Zero the padding entries so one contiguous add cannot leak into the next row.
            for seg in row[h_lo * ow..h_hi * ow].chunks_exact_mut(ow) {
                seg[..w_lo].fill(0.0);
                seg[w_hi..].fill(0.0);
            }
            let (lo, hi, off) = same_width_shift(g, ki, kj, (h_lo, h_hi));
            let dst = &mut plane[(lo as isize + off) as usize..][..hi - lo];
            dst.iter_mut().zip(&row[lo..hi]).for_each(|(d, v)| *d += v);
            continue;
        }
        for oy in h_lo..h_hi {
            let dst = &mut plane[(oy * s + ki - p) * g.w..][..g.w];
            let src = &row[oy * ow + w_lo..oy * ow + w_hi];
            let ix0 = w_lo * s + kj - p;
            if s == 1 {
                let dst = &mut dst[ix0..ix0 + src.len()];
                dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            } else {
                let dst = dst[ix0..].iter_mut().step_by(s);
                dst.zip(src).for_each(|(d, v)| *d += v);
            }
        }
    }
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
        let g = Geom::new(xl.dims(), wl.dims(), self.stride, self.padding, self.groups)?;
        if gl.dims() != [g.n, g.o, g.oh, g.ow] {
            let want = [g.n, g.o, g.oh, g.ow];
            bail!(
                "{OP_NAME}: output gradient has shape {:?}, expected {want:?}",
                gl.dims()
            );
        }
        let (x, x_off) = f32_data(xs, xl, "input")?;
        let (_, w_off) = f32_data(ws, wl, "weight")?;
        let (_, g_off) = f32_data(gs, gl, "output gradient")?;
        let (og, kg, ohw, ld, chunk) = (g.og(), g.kg(), g.ohw(), g.ld(), g.chunk_items());
        let (need_dx, need_dw) = (self.need_dx, self.need_dw);
        let dw_len = if need_dw { g.w_len() } else { 0 };
        let dx_len = if need_dx { g.n * g.x_item() } else { 0 };
        // Room for dL/dw too, so appending it below does not reallocate dL/dx.
        let mut dx = Vec::with_capacity(dx_len + dw_len);
        dx.resize(dx_len, 0f32);
        // (first item, item count, dL/dx of those items if wanted) per task.
        let chunks: Vec<(usize, usize, Option<&mut [f32]>)> = if need_dx {
            let dx_chunks = dx.chunks_mut(chunk * g.x_item()).enumerate();
            dx_chunks
                .map(|(i, d)| (i * chunk, d.len() / g.x_item(), Some(d)))
                .collect()
        } else {
            let starts = (0..g.n).step_by(chunk);
            starts.map(|n0| (n0, chunk.min(g.n - n0), None)).collect()
        };
        let task = |scratch: &mut Vec<f32>,
                    acc: &mut [f32],
                    (n0, nb, dx_c): (usize, usize, Option<&mut [f32]>)|
         -> Result<()> {
            let (calls, b) = g.calls(nb);
            // dout of item n0 + i (ungrouped: of all nb items) as (b, og, OH·OW), or its transpose.
            let gy_off = |i: usize| g_off + (n0 + i) * g.out_item();
            if need_dw {
                // dWᵀ += col · doutᵀ: this orientation lets gemm stream the big operand (col)
                // without repacking it; `acc` holds dWᵀ per group.
                with_cols(&g, xs, x, x_off, (n0, nb), scratch, |cs, off| {
                    for i in 0..calls {
                        let col_l = layout3([b, kg, ohw], [kg * ld, ld, 1], off + i * g.col_item());
                        let gyt_l = layout3([b, ohw, og], [og * ohw, 1, ohw], gy_off(i));
                        let dwt = matmul(cs, &col_l, gs, &gyt_l, (b, kg, og, ohw))?;
                        for part in dwt.chunks_exact(g.w_len()) {
                            acc.iter_mut().zip(part).for_each(|(a, p)| *a += p);
                        }
                    }
                    Ok(())
                })?;
            }
            if let Some(dx_c) = dx_c {
                // dcol = Wᵀ · dout, with Wᵀ read through transposed strides, then col2im.
                let wt_l = layout3([b, kg, og], [g.w_batch_stride(), 1, kg], w_off);
                for (i, dx_i) in dx_c.chunks_exact_mut(dx_c.len() / calls).enumerate() {
                    let gy_l = layout3([b, og, ohw], [og * ohw, ohw, 1], gy_off(i));
                    let mut dcol = matmul(ws, &wt_l, gs, &gy_l, (b, kg, ohw, og))?;
                    let dcols = dcol.chunks_exact_mut(g.k_all() * ohw);
                    for (d, c) in dx_i.chunks_exact_mut(g.x_item()).zip(dcols) {
                        match g.pointwise() {
                            true => d.copy_from_slice(c),
                            false => col2im(&g, c, d),
                        }
                    }
                }
            }
            Ok(())
        };
        let dw = chunks
            .into_par_iter()
            .try_fold(
                || (Vec::new(), vec![0f32; dw_len]),
                |(mut scratch, mut acc), chunk| -> Result<_> {
                    task(&mut scratch, &mut acc, chunk)?;
                    Ok((scratch, acc))
                },
            )
            .map(|r| r.map(|(_, acc)| acc))
            .try_reduce(
                || vec![0f32; dw_len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    Ok(a)
                },
            )?;
        // Transpose the accumulated (groups, kg, og) dWᵀ into OIHW dW.
        for dwt in dw.chunks_exact(og * kg) {
            for o in 0..og {
                dx.extend(dwt.iter().skip(o).step_by(og));
            }
        }
        let len = dx.len();
        Ok((CpuStorage::F32(dx), Shape::from(len)))
    }
}
