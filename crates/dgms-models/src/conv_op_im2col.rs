//! Lowering helpers for [`crate::conv_op`]: convolution geometry, im2col and its adjoint
//! col2im on one NCHW batch item, in safe Rust.
//!
//! Why a separate file: keeps `conv_op.rs` (the candle custom ops and their GEMMs) short;
//! nothing here knows about candle beyond its error type. Included by `conv_op.rs` as its
//! private child module `lowering`.

use super::OP_NAME;
use candle_core::{bail, Result};

/// Sizes of one convolution, validated once so the kernels below can index without checks
/// failing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) groups: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Geom {
    /// Checks the shapes of input `x` and weight `w` and derives the output size.
    pub(crate) fn new(
        x: &[usize],
        w: &[usize],
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Self> {
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
    pub(crate) fn og(&self) -> usize {
        self.o / self.groups
    }

    /// im2col rows per group (`C/groups · KH · KW`): the K of each group's forward GEMM.
    pub(crate) fn kg(&self) -> usize {
        self.c / self.groups * self.kh * self.kw
    }

    pub(crate) fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    pub(crate) fn x_item(&self) -> usize {
        self.c * self.h * self.w
    }

    pub(crate) fn out_item(&self) -> usize {
        self.o * self.ohw()
    }

    pub(crate) fn w_len(&self) -> usize {
        self.o * self.kg()
    }

    /// A 1x1, stride-1, unpadded conv's im2col matrix is the input item itself, so we skip
    /// the copy and hand the input storage straight to the GEMM.
    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// Output positions `[lo, hi)` along one axis whose input coordinate
    /// `o·stride + k − padding` falls inside `[0, len)` for kernel offset `k`.
    pub(crate) fn span(&self, k: usize, len: usize, out_len: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        if len + p <= k {
            return (0, 0);
        }
        let hi = out_len.min((len - 1 + p - k) / s + 1);
        let lo = if k >= p { 0 } else { (p - k).div_ceil(s) };
        (lo.min(hi), hi)
    }

    /// Stride-1 conv whose output keeps the input width: im2col rows are shifted copies.
    pub(crate) fn same_width(&self) -> bool {
        self.stride == 1 && self.ow == self.w
    }

    /// Row stride of the im2col buffer. A multiple of 64 floats (e.g. 32x32 → 1024, i.e.
    /// 4 KiB) would make the GEMM's strided reads of consecutive rows collide in the same L1
    /// sets; 16 floats of padding measured ~1.5x faster for the 32x32 forward GEMM.
    pub(crate) fn ld(&self) -> usize {
        match self.ohw() {
            n if !self.pointwise() && n % 64 == 0 => n + 16,
            n => n,
        }
    }

    /// im2col rows over all groups (`C·KH·KW`).
    pub(crate) fn k_all(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// im2col buffer size of one batch item.
    pub(crate) fn col_item(&self) -> usize {
        self.k_all() * self.ld()
    }

    /// Batch items per chunk (one im2col buffer, one batched matmul). Each candle matmul call
    /// has a fixed cost (candle 0.11.1 re-reads /proc/cpuinfo, ~50 µs, on every call unless
    /// `RAYON_NUM_THREADS` is set), so small items share calls; but a chunk's im2col buffer
    /// stays within [`COL_BUDGET`] floats (cache-sized) and the batch splits into at least
    /// [`MIN_CHUNKS`] chunks to balance load. Depends on the shapes only, never on the thread
    /// count, so that the weight gradient's summation order is fixed (see
    /// [`Self::dw_tasks`]).
    pub(crate) fn chunk_items(&self) -> usize {
        let by_mem = COL_BUDGET / self.col_item();
        let by_balance = self.n.div_ceil(MIN_CHUNKS);
        by_mem.min(by_balance).max(1)
    }

    /// Parallel tasks of the backward pass when the weight gradient is wanted, for a batch
    /// of `chunks` chunks: each task sums its consecutive items' dWᵀ into its own partial
    /// buffer, in item order, and the partials are added in task order. The partials take
    /// at most [`DW_PARTIALS_BUDGET`] floats, or [`MIN_DW_TASKS`] buffers for weights larger
    /// than that allows. Shapes alone decide it, so dW is the same to the bit whatever the
    /// thread count and however rayon's threads steal work.
    pub(crate) fn dw_tasks(&self, chunks: usize) -> usize {
        let by_mem = (DW_PARTIALS_BUDGET / self.w_len().max(1)).max(MIN_DW_TASKS);
        chunks.min(by_mem).max(1)
    }

    /// `(calls, b)`: how a chunk of `nb` items is covered by batched matmuls of batch `b`.
    /// Ungrouped, one call batches the items (the weight is broadcast with batch stride 0);
    /// grouped, each item is one call batched over its groups.
    pub(crate) fn calls(&self, nb: usize) -> (usize, usize) {
        match self.groups {
            1 => (1, nb),
            g => (nb, g),
        }
    }

    /// Batch stride of the weight seen as `(b, O/groups, kg)`: see [`Self::calls`].
    pub(crate) fn w_batch_stride(&self) -> usize {
        match self.groups {
            1 => 0,
            _ => self.og() * self.kg(),
        }
    }
}

/// Floats of im2col scratch per rayon task (1 MiB); see [`Geom::chunk_items`].
pub(crate) const COL_BUDGET: usize = 1 << 18;

/// Chunks a batch splits into at least (when it has that many items): two per thread up to
/// 8 threads. A constant rather than the pool size: see [`Geom::chunk_items`].
pub(crate) const MIN_CHUNKS: usize = 16;

/// Floats of per-task weight-gradient partials (16 MiB); see [`Geom::dw_tasks`].
pub(crate) const DW_PARTIALS_BUDGET: usize = 1 << 22;

/// Weight-gradient tasks kept even for weights too large for [`DW_PARTIALS_BUDGET`].
pub(crate) const MIN_DW_TASKS: usize = 8;

/// For a stride-1 conv that keeps the width (`2·padding = KW − 1`), im2col row `(ki, kj)`
/// over output rows `[h_lo, h_hi)` is one contiguous input range shifted by `off`: entry `d`
/// reads input `d + off`. Returns that shift and the entries `[lo, hi)` whose source lies in
/// the plane; entries in padding columns read a neighbouring row and must be masked.
fn same_width_shift(g: &Geom, ki: usize, kj: usize, rows: (usize, usize)) -> (usize, usize, isize) {
    let off = (ki * g.w + kj) as isize - (g.padding * (g.w + 1)) as isize;
    let plane = (g.h * g.w) as isize;
    let (d0, d1) = (rows.0 * g.ow, rows.1 * g.ow);
    let lo = d0.max((-off).max(0) as usize).min(d1);
    let hi = d1.min((plane - off).max(0) as usize).max(lo);
    (lo, hi, off)
}

/// The im2col row index `r` as `(kj, ki, c)`.
fn row_coords(g: &Geom, r: usize) -> (usize, usize, usize) {
    (r % g.kw, (r / g.kw) % g.kh, r / (g.kh * g.kw))
}

/// Unfolds one input item `(C, H, W)` into `col` of shape `(C·KH·KW, OH·OW)` with row stride
/// [`Geom::ld`], with zeros where the kernel window hangs over the padding.
pub(crate) fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (hw, s, p, ow) = (g.h * g.w, g.stride, g.padding, g.ow);
    for (r, row) in col.chunks_exact_mut(g.ld()).enumerate() {
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
            if hi > lo {
                let src = (lo as isize + off) as usize;
                row[lo..hi].copy_from_slice(&plane[src..src + hi - lo]);
            }
            for seg in row[h_lo * ow..h_hi * ow].chunks_exact_mut(ow) {
                seg[..w_lo].fill(0.0);
                seg[w_hi..].fill(0.0);
            }
            continue;
        }
        // One fill per row, not two short ones per output row: for strided convs the
        // rows are short and per-call overhead dominated.
        row.fill(0.0);
        if w_lo == w_hi {
            continue;
        }
        let ix0 = w_lo * s + kj - p;
        for oy in h_lo..h_hi {
            let src = &plane[(oy * s + ki - p) * g.w..][..g.w];
            let dst = &mut row[oy * ow + w_lo..oy * ow + w_hi];
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
pub(crate) fn col2im(g: &Geom, col: &mut [f32], dx: &mut [f32]) {
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
            if hi > lo {
                let dst = &mut plane[(lo as isize + off) as usize..][..hi - lo];
                dst.iter_mut().zip(&row[lo..hi]).for_each(|(d, v)| *d += v);
            }
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
