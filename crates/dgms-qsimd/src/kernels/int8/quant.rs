//! Quantization shared by every ISA and the scalar reference: the
//! rounding ([`quant`]), the scales of a vector or of each column of X,
//! and, for the int8 GEMM, X (or a convolution's im2col matrix, without
//! building it in f32) as per-column scales and `[k/4][n][4]` byte quads
//! (each k quad's row padded to an odd number of cache lines).
//! Sharing it is what makes every ISA see the same int8 activations.

use std::cell::Cell;

use rayon::prelude::*;

use super::kern::Kern;
use super::matrix::QMatrixI8;
use crate::kernels::exact::conv::{im2col_row, ConvGeometry};

/// Largest quantized magnitude: symmetric, so -128 never occurs and |q|
/// and -q fit an i8 (the sign tricks of the SIMD kernels rely on it).
pub(crate) const QMAX: f32 = 127.0;

/// round-half-even(v * inv), clamped to [-QMAX, QMAX]. Plain f32 ops (no
/// `round`, a libm call on baseline x86-64): the loops using it vectorise,
/// and every ISA gets the same values.
#[inline(always)]
pub(crate) fn quant(v: f32, inv: f32) -> i8 {
    // Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    // NaN (only in a non-finite column, whose outputs are NaN) gives 0.
    let t = (v * inv).clamp(-QMAX, QMAX);
    ((t + MAGIC).to_bits() as i32 - 0x4B40_0000) as i8
}

/// (1 / s, s_w * s) for a tensor or column whose max magnitude is `m`,
/// with s = m / QMAX; `bad` if it holds a non-finite value.
pub(crate) fn scales(m: f32, bad: bool, s_w: f32) -> (f32, f32) {
    if bad || !m.is_finite() {
        (0.0, f32::NAN)
    } else if m < f32::MIN_POSITIVE {
        // Also keeps QMAX / m finite.
        (0.0, 0.0)
    } else {
        (QMAX / m, s_w * (m / QMAX))
    }
}

/// `scales` of a whole vector, and whether no value is negative (then
/// every finite value quantizes to 0..=127: a valid u8 operand).
pub(crate) fn vec_scales(x: &[f32], s_w: f32) -> (f32, f32, bool) {
    let (mut m, mut z, mut lo) = (0.0f32, 0.0f32, 0.0f32);
    for &v in x {
        m = m.max(v.abs());
        // NaN exactly when some value is NaN or infinite.
        z += v * 0.0;
        lo = lo.min(v);
    }
    let (inv, deq) = scales(m, z.is_nan(), s_w);
    (inv, deq, lo >= 0.0)
}

/// Per-column (1 / s_x, s_w * s_x) of X (`cols` x `n`), and whether no
/// value is negative. X is read in row order (streaming), in parallel row
/// chunks for large X.
pub(crate) fn col_scales(x: &[f32], n: usize, s_w: f32) -> (Vec<f32>, Vec<f32>, bool) {
    col_scales_in(Kern::PORTABLE, x, n, s_w)
}

/// [`col_scales`] with the scan compiled for `kern`'s ISA (the same
/// values: max and min do not depend on the order, and the x * 0 sums
/// only on whether some term is NaN).
fn col_scales_in(kern: Kern, x: &[f32], n: usize, s_w: f32) -> (Vec<f32>, Vec<f32>, bool) {
    // Per column: max |x|, sum of x * 0 (NaN iff a value is not finite)
    // and min(0, min x).
    let scan = |rows: &[f32]| {
        let (mut m, mut z, mut lo) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        for row in rows.chunks_exact(n) {
            fold_row(kern.isa(), row, &mut m, &mut z, &mut lo);
        }
        (m, z, lo)
    };
    let (m, z, lo) = if x.len() >= 1 << 16 {
        let per = (x.len() / n).div_ceil(rayon::current_num_threads()).max(1) * n;
        let parts: Vec<_> = x.par_chunks(per).map(scan).collect();
        let mut it = parts.into_iter();
        let first = it.next().unwrap_or_else(|| scan(&[]));
        it.fold(first, |(mut m, mut z, mut lo), (pm, pz, pl)| {
            m.iter_mut().zip(pm).for_each(|(a, b)| *a = a.max(b));
            z.iter_mut().zip(pz).for_each(|(a, b)| *a += b);
            lo.iter_mut().zip(pl).for_each(|(a, b)| *a = a.min(b));
            (m, z, lo)
        })
    } else {
        scan(x)
    };
    let (inv, deq) = m
        .iter()
        .zip(&z)
        .map(|(&m, z)| scales(m, z.is_nan(), s_w))
        .unzip();
    (inv, deq, lo.iter().all(|&v| v >= 0.0))
}

per_isa! {
    /// Folds one row of X into the per-column max |x|, sum of x * 0 and
    /// min (see [`col_scales`]).
    fn fold_row = fold_row_body(row: &[f32], m: &mut [f32], z: &mut [f32], lo: &mut [f32])
}

#[inline(always)]
fn fold_row_body(row: &[f32], m: &mut [f32], z: &mut [f32], lo: &mut [f32]) {
    let it = m.iter_mut().zip(z.iter_mut()).zip(lo.iter_mut());
    for (((m, z), lo), &v) in it.zip(row) {
        *m = m.max(v.abs());
        *z += v * 0.0;
        *lo = lo.min(v);
    }
}

/// Activations quantized per column of X (`cols` x `n`): `q[k/4][n][4]`
/// bytes (rows `ld` apart), the 4 bytes of column j being the 4
/// consecutive k one lane reduces (k zero-padded to the matrix's padded
/// columns; offset kernels get q + 128), and the per-column
/// dequantization factors s_w * s_x.
pub(super) struct Quads {
    /// The quads, row kq (4 n bytes) at byte kq * `ld`, then at least
    /// [`QUADS_TAIL`] more bytes (a reused buffer: bytes between and
    /// after the rows are stale).
    pub(super) q: Vec<u8>,
    pub(super) deq: Vec<f32>,
    /// No activation is negative: every finite q is in 0..=127.
    pub(super) nonneg: bool,
    /// Bytes from one k quad's row of n column quads to the next's
    /// ([`row_stride`]).
    pub(super) ld: usize,
}

/// The row stride of the quads of n columns: 4 n bytes rounded up to an
/// odd number of 64-byte lines, so that the rows a micro-kernel reads in
/// place (one B tile: a line or two from each of up to 128 rows) fall on
/// all of the L1's sets; with a stride of an even number of lines (a
/// 56x56 map: 196) they fall on few and evict each other.
pub(super) fn row_stride(n: usize) -> usize {
    ((4 * n).div_ceil(64) | 1) * 64
}

thread_local! {
    /// The calling thread's last quads buffer, for the next call: a fresh
    /// one per layer came from the kernel as newly zeroed pages.
    static QUADS_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Bytes a quads buffer holds past its last row of quads: the GEMM's
/// micro-kernels read a last row's NR (at most 32) column quads in place
/// from any column, so up to 128 bytes beyond it.
const QUADS_TAIL: usize = 128;

/// A buffer of at least `len` + [`QUADS_TAIL`] bytes, the thread's last
/// one when it is long enough: not cleared, as the callers write all of
/// its first `len` bytes (the rest may hold an earlier call's quads, read
/// only for columns whose sums are dropped).
fn quads_buffer(len: usize) -> Vec<u8> {
    let mut q = QUADS_BUFFER.take();
    if q.len() < len + QUADS_TAIL {
        q.resize(len + QUADS_TAIL, 0);
    }
    q
}

impl Drop for Quads {
    fn drop(&mut self) {
        let q = std::mem::take(&mut self.q);
        QUADS_BUFFER.with(|cell| {
            let kept = cell.take();
            cell.set(if kept.capacity() > q.capacity() {
                kept
            } else {
                q
            });
        });
    }
}

/// The byte the kernels of `kern` take for q.
pub(super) fn flip(kern: Kern) -> u8 {
    if kern.offset() {
        0x80
    } else {
        0
    }
}

per_isa! {
    /// [`im2col_row`] compiled for the ISA.
    fn gather_row = im2col_row(
        plane: &[f32],
        g: &ConvGeometry,
        tap: usize,
        oys: std::ops::Range<usize>,
        dst: &mut [f32]
    )
}

per_isa! {
    /// Writes the quads of 4 rows of X (`rows[kk]`: row 4 kq + kk, n
    /// values) quantized with the per-column `inv`.
    fn quantize_quad = quantize_quad_body(rows: [&[f32]; 4], inv: &[f32], flip: u8, out: &mut [u8])
}

#[inline(always)]
fn quantize_quad_body(rows: [&[f32]; 4], inv: &[f32], flip: u8, out: &mut [u8]) {
    let it = out.chunks_exact_mut(4).zip(inv).zip(rows[0]).zip(rows[1]);
    for ((((o, &iv), &a), &b), (&c, &d)) in it.zip(rows[2].iter().zip(rows[3])) {
        let q = |v: f32| quant(v, iv) as u8 ^ flip;
        o.copy_from_slice(&[q(a), q(b), q(c), q(d)]);
    }
}

/// [`Quads`] of X, streaming X by rows (in parallel for large X).
pub(super) fn quantize(kern: Kern, w: &QMatrixI8, x: &[f32], n: usize) -> Quads {
    let (cols, flip) = (w.cols(), flip(kern));
    let (inv, deq, nonneg) = col_scales_in(kern, x, n, w.weight_scale());
    let ld = row_stride(n);
    let len = w.cols_pad() / 4 * ld;
    let mut q = quads_buffer(len);
    let zero = vec![0.0f32; n];
    let fill = |(kq, out): (usize, &mut [u8])| {
        let out = &mut out[..4 * n];
        let row = |kk: usize| {
            let k = 4 * kq + kk;
            if k < cols {
                &x[k * n..(k + 1) * n]
            } else {
                &zero[..]
            }
        };
        quantize_quad(
            kern.isa(),
            [row(0), row(1), row(2), row(3)],
            &inv,
            flip,
            out,
        );
    };
    if len >= 1 << 16 {
        q[..len].par_chunks_mut(ld).enumerate().for_each(fill);
    } else {
        q[..len].chunks_mut(ld).enumerate().for_each(fill);
    }
    Quads { q, deq, nonneg, ld }
}

/// f32 values of the im2col block a [`conv_quads`] task holds at once
/// (64 KiB: the rows of 4 channels for a few output rows, in L1 / L2).
const CONV_BLOCK_VALUES: usize = 16 << 10;

/// [`Quads`] of the im2col matrix of `images` images stored C x N x H x W
/// (one image: CHW; see [`crate::kernels::im2col`]), whose columns are (image,
/// output pixel), equal to [`quantize`] of it: a column's max is the max
/// of the per-pixel channel maxima over its window (padding adds zeros).
/// The matrix is never built: a task takes 4 channels (4 kh kw rows:
/// whole quads), one image and a block of output rows, gathers their
/// im2col rows into a small buffer and quantizes them into its pieces of
/// the quads; tasks run in parallel, so a 3-channel stem splits by
/// output rows.
pub(super) fn conv_quads(
    kern: Kern,
    w: &QMatrixI8,
    input: &[f32],
    g: &ConvGeometry,
    images: usize,
) -> Quads {
    let (hw, khw, pixels) = (g.h * g.w, g.kh * g.kw, g.out_pixels());
    let (oh, ow) = (g.out_h(), g.out_w());
    let n = images * pixels;
    // Per image and input pixel: max |x| over the channels, and x * 0
    // summed (NaN iff some channel there is not finite), as `col_scales`
    // does. Plane i of the input is channel i / images of image i % images.
    let len = images * hw;
    let (mut cm, mut cz, mut lo) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    for (i, plane) in input.chunks_exact(hw).enumerate() {
        let b = i % images;
        let at = b * hw..(b + 1) * hw;
        let (m, z) = (&mut cm[at.clone()], &mut cz[at.clone()]);
        fold_row(kern.isa(), plane, m, z, &mut lo[at]);
    }
    let nonneg = lo.iter().all(|&v| v >= 0.0);
    let (inv, deq) = window_scales(&cm, &cz, g, images, w.weight_scale());
    let (cols, flip) = (w.cols(), flip(kern));
    let ld = row_stride(n);
    let len = w.cols_pad() / 4 * ld;
    let mut q = quads_buffer(len);
    if n == 0 {
        return Quads { q, deq, nonneg, ld };
    }
    // Tasks: (group of 4 channels = kh kw quads, image, block of output
    // rows); a task's pieces are its rows' bytes in each of its quads.
    let parallel = len >= 1 << 16;
    let group_rows = 4 * khw;
    let block = (CONV_BLOCK_VALUES / group_rows / ow).clamp(1, oh);
    let blocks = oh.div_ceil(block);
    let groups = (w.cols_pad() / 4).div_ceil(khw);
    let mut tasks: Vec<Vec<&mut [u8]>> = (0..groups * images * blocks)
        .map(|_| Vec::with_capacity(khw))
        .collect();
    for (kq, quad) in q[..len].chunks_mut(ld).enumerate() {
        for (b, image) in quad[..4 * n].chunks_mut(4 * pixels).enumerate() {
            for (rb, piece) in image.chunks_mut(4 * ow * block).enumerate() {
                tasks[(kq / khw * images + b) * blocks + rb].push(piece);
            }
        }
    }
    let zero = vec![0.0f32; block * ow];
    let run = |buf: &mut Vec<f32>, (t, pieces): (usize, Vec<&mut [u8]>)| {
        let (gi, b, rb) = (t / (images * blocks), t / blocks % images, t % blocks);
        let oys = rb * block..((rb + 1) * block).min(oh);
        let width = oys.len() * ow;
        let c0 = (4 * gi).min(g.c);
        let cg = (g.c - c0).min(4);
        let buf = &mut buf[..cg * khw * width];
        for (r, dst) in buf.chunks_exact_mut(width).enumerate() {
            let plane = (c0 + r / khw) * images + b;
            let plane = &input[plane * hw..(plane + 1) * hw];
            gather_row(kern.isa(), plane, g, r % khw, oys.clone(), dst);
        }
        let inv = &inv[b * pixels + oys.start * ow..][..width];
        for (i, piece) in pieces.into_iter().enumerate() {
            let row = |kk: usize| {
                let r = 4 * i + kk;
                if r < cg * khw && c0 * khw + r < cols {
                    &buf[r * width..(r + 1) * width]
                } else {
                    &zero[..width]
                }
            };
            quantize_quad(
                kern.isa(),
                [row(0), row(1), row(2), row(3)],
                inv,
                flip,
                piece,
            );
        }
    };
    let buf_len = group_rows * block * ow;
    if parallel {
        tasks
            .into_par_iter()
            .enumerate()
            .for_each_init(|| vec![0.0f32; buf_len], run);
    } else {
        let mut buf = vec![0.0f32; buf_len];
        tasks
            .into_iter()
            .enumerate()
            .for_each(|task| run(&mut buf, task));
    }
    Quads { q, deq, nonneg, ld }
}

/// Per column (image, output pixel): the scales of the max of the
/// per-pixel channel maxima `cm` over the column's window, NaN if some
/// `cz` there is (a non-finite input). Separable: the window's max (and
/// the sum that detects NaN) along x for every input row, then along y,
/// the same values as visiting the window's pixels one by one.
fn window_scales(
    cm: &[f32],
    cz: &[f32],
    g: &ConvGeometry,
    images: usize,
    s_w: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (hw, (oh, ow)) = (g.h * g.w, (g.out_h(), g.out_w()));
    let n = images * oh * ow;
    let (mut inv, mut deq) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut hm, mut hz) = (vec![0.0f32; g.h * ow], vec![0.0f32; g.h * ow]);
    for b in 0..images {
        let (cm, cz) = (&cm[b * hw..(b + 1) * hw], &cz[b * hw..(b + 1) * hw]);
        for iy in 0..g.h {
            let (rm, rz) = (&cm[iy * g.w..(iy + 1) * g.w], &cz[iy * g.w..(iy + 1) * g.w]);
            for ox in 0..ow {
                let (mut m, mut z) = (0.0f32, 0.0f32);
                for kx in 0..g.kw {
                    let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                    if ix < g.w {
                        m = m.max(rm[ix]);
                        z += rz[ix];
                    }
                }
                (hm[iy * ow + ox], hz[iy * ow + ox]) = (m, z);
            }
        }
        let (inv, deq) = (
            &mut inv[b * oh * ow..(b + 1) * oh * ow],
            &mut deq[b * oh * ow..(b + 1) * oh * ow],
        );
        let (mut m, mut z) = (vec![0.0f32; ow], vec![0.0f32; ow]);
        for oy in 0..oh {
            m.fill(0.0);
            z.fill(0.0);
            for ky in 0..g.kh {
                let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
                if iy < g.h {
                    let (rm, rz) = (&hm[iy * ow..(iy + 1) * ow], &hz[iy * ow..(iy + 1) * ow]);
                    m.iter_mut().zip(rm).for_each(|(a, &v)| *a = a.max(v));
                    z.iter_mut().zip(rz).for_each(|(a, &v)| *a += v);
                }
            }
            let at = oy * ow..(oy + 1) * ow;
            let out = inv[at.clone()].iter_mut().zip(&mut deq[at]);
            for ((iv, dq), (&m, &z)) in out.zip(m.iter().zip(&z)) {
                (*iv, *dq) = scales(m, z.is_nan(), s_w);
            }
        }
    }
    (inv, deq)
}
