//! int8 GEMM driver. The activations are quantized once per call into the
//! bytes the kernels read; row x column blocks then run over rayon as in
//! the exact kernels, and every result goes through the same i32 -> f32
//! stage and epilogue as the scalar reference, so all ISAs agree bit for
//! bit.
//!
//! BLIS style: one streaming pass over X gives the per-column scales;
//! then per task (a block of output rows x a block of output columns) and
//! per `KC` slice of the inner dimension the activations are quantized
//! while packed into `[tile][k/4][NR][4]` bytes, and the weights of each
//! 16-row group decoded into a `[k/4][16][4]` byte panel (the 8-bit layout
//! already is one); a micro-kernel accumulates MR x NR i32 tiles, each
//! lane reducing 4 consecutive k at a time.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kern::{Family, Kern};
use super::matrix::QMatrixI8;
use super::quant::{quantize, Quads};
use super::simd;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::layout::{Layout, Line, GROUP_ROWS};

/// Inner-dimension slice (a multiple of 8): the B tile (KC x NR bytes)
/// stays in L1, the A block (64 x KC bytes) in L2.
const KC: usize = 512;
/// Output rows per task (a multiple of 16).
const MB: usize = 64;
/// Upper bound on output columns per task.
const NB_MAX: usize = 512;
/// Below this many multiply-adds everything runs on the calling thread.
const PAR_MIN_MACS: usize = 1 << 20;

/// i32 -> f32 for offset kernels: remove the 128 * rowsum their u8
/// activations added (wrapping: the true sum fits, the raw one may not).
#[inline(always)]
pub(super) fn unoffset(acc: i32, row_sum: i32, offset: bool) -> i32 {
    if offset {
        acc.wrapping_sub(row_sum.wrapping_mul(128))
    } else {
        acc
    }
}

/// (MR, NR) of the kernel family's micro-kernel.
fn tile(kern: Kern) -> (usize, usize) {
    match kern.family() {
        #[cfg(target_arch = "x86_64")]
        Family::Avx2 => (simd::avx2::MR, simd::avx2::NR),
        #[cfg(target_arch = "x86_64")]
        Family::Avx512Vnni | Family::Avx512Bw => (simd::avx512::MR, simd::avx512::NR),
        #[cfg(target_arch = "aarch64")]
        Family::NeonDot | Family::Neon => (simd::neon::MR, simd::neon::NR),
        _ => (PORTABLE_MR, PORTABLE_NR),
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// Decodes row group `g`, columns `k0..k0 + kc` (multiples of 8) into a
/// `[k/4][16][4]` int8 panel (`out`: 16 * kc bytes).
fn decode(kern: Kern, w: &QMatrixI8, g: usize, k0: usize, kc: usize, out: &mut [u8]) {
    if w.layout() == Layout::Byte {
        let lines = &w.group(g)[k0 / 4..(k0 + kc) / 4];
        for (o, line) in out.chunks_exact_mut(64).zip(lines) {
            o.copy_from_slice(&line.0);
        }
        return;
    }
    let (lines, table) = (&w.group(g)[k0 / 8..(k0 + kc) / 8], w.table());
    match kern.family() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kern` came from Kern::select on a CheckedIsa: the ISA is
        // on this CPU.
        Family::Avx2 => unsafe { simd::avx2::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Family::Avx512Vnni | Family::Avx512Bw => unsafe {
            simd::avx512::decode_nibble(lines, table, out)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Family::NeonDot | Family::Neon => unsafe { simd::neon::decode_nibble(lines, table, out) },
        _ => decode_portable(lines, table, out),
    }
}

fn decode_portable(lines: &[Line], table: &[i8; 16], out: &mut [u8]) {
    for (line, o) in lines.iter().zip(out.chunks_exact_mut(128)) {
        for (i, &b) in line.0.iter().enumerate() {
            o[i] = table[usize::from(b & 0x0F)] as u8;
            o[64 + i] = table[usize::from(b >> 4)] as u8;
        }
    }
}

/// Portable micro-kernel (only reached for an ISA without one, and in
/// tests); `unsigned`: `b` holds u8 (offset) activations.
fn ukernel_portable(
    kq: usize,
    a: &[u8],
    (b, ldb): (&[u8], usize),
    c: &mut [i32],
    ldc: usize,
    acc_in: bool,
    unsigned: bool,
) {
    let mut acc = [[0i32; PORTABLE_NR]; PORTABLE_MR];
    for q in 0..kq {
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = &a[q * 64 + 4 * i..q * 64 + 4 * i + 4];
            let bq = &b[q * ldb..q * ldb + PORTABLE_NR * 4];
            for (r, bj) in row.iter_mut().zip(bq.chunks_exact(4)) {
                for (&p, &v) in ai.iter().zip(bj) {
                    let v = if unsigned {
                        i32::from(v)
                    } else {
                        i32::from(v as i8)
                    };
                    *r = r.wrapping_add(i32::from(p as i8) * v);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (o, &v) in c[i * ldc..i * ldc + PORTABLE_NR].iter_mut().zip(row) {
            *o = if acc_in { o.wrapping_add(v) } else { v };
        }
    }
}

/// The micro-kernel of `kern`; `nonneg`: no activation in `b` is
/// negative; `b`: the NR column quads of each k quad, `ldb` bytes apart.
fn ukernel(
    (kern, nonneg): (Kern, bool),
    kq: usize,
    a: &[u8],
    b: (&[u8], usize),
    c: &mut [i32],
    ldc: usize,
    acc_in: bool,
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = nonneg;
    match kern.family() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kern` came from Kern::select on a CheckedIsa: the ISA is
        // on this CPU.
        Family::Avx2 => unsafe {
            if nonneg {
                simd::avx2::ukernel::<true>(kq, a, b, c, ldc, acc_in)
            } else {
                simd::avx2::ukernel::<false>(kq, a, b, c, ldc, acc_in)
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, and Kern::select detected VNNI.
        Family::Avx512Vnni => unsafe { simd::avx512::ukernel_vnni(kq, a, b, c, ldc, acc_in) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Family::Avx512Bw => unsafe {
            if nonneg {
                simd::avx512::ukernel_bw::<true>(kq, a, b, c, ldc, acc_in)
            } else {
                simd::avx512::ukernel_bw::<false>(kq, a, b, c, ldc, acc_in)
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above, and Kern::select detected dotprod.
        Family::NeonDot => unsafe { simd::neon::ukernel_dot(kq, a, b, c, ldc, acc_in) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Family::Neon => unsafe { simd::neon::ukernel(kq, a, b, c, ldc, acc_in) },
        _ => ukernel_portable(kq, a, b, c, ldc, acc_in, kern.offset()),
    }
}

/// Largest quads row stride (`Quads::ld`) the micro-kernels read in
/// place, one k quad's NR columns a stride after the previous one's
/// (the stride an odd number of cache lines, so a B tile's rows spread
/// over the L1's sets): a 56x56 map at batch 1 (12.6 KB) is read in
/// place, larger ones are packed first (`pack_b`), which measured no
/// slower at 112x112 and keeps a tile's rows within few pages.
const DIRECT_LDB_MAX: usize = 16 << 10;

/// Packs k quads `kq0..kq0 + kcq`, columns `j0..j1` of the quads into
/// `[tile][kq][NR][4]` (zero beyond n); row by row through the source,
/// fixed-size copies for whole tiles.
fn pack_b<const NR: usize>(
    qx: &Quads,
    (kq0, kcq): (usize, usize),
    (j0, j1): (usize, usize),
    out: &mut [u8],
) {
    let tile = kcq * NR * 4;
    for q in 0..kcq {
        let row = (kq0 + q) * qx.ld;
        let src = &qx.q[row + j0 * 4..row + j1 * 4];
        let (whole, tail) = src.split_at(src.len() / (NR * 4) * (NR * 4));
        for (t, s) in whole.chunks_exact(NR * 4).enumerate() {
            out[t * tile + q * NR * 4..][..NR * 4].copy_from_slice(s);
        }
        if !tail.is_empty() {
            let at = (whole.len() / (NR * 4)) * tile + q * NR * 4;
            let dst = &mut out[at..at + NR * 4];
            dst[..tail.len()].copy_from_slice(tail);
            dst[tail.len()..].fill(0);
        }
    }
}

/// The output pointer shared by tasks that write disjoint rectangles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks only write disjoint regions through it (see `write_block`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Y = epilogue(W X) for validated shapes on an available SIMD ISA.
pub(super) fn gemm(kern: Kern, w: &QMatrixI8, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) {
    if n == 0 {
        return;
    }
    debug_assert!(x.len() == w.cols() * n && y.len() == w.rows() * n);
    let qx = quantize(kern, w, x, n);
    gemm_quads(kern, w, &qx, n, y, epi);
}

/// Y = epilogue(W X) from X's [`Quads`] (made for `kern`): the output
/// split into row x column blocks ([`plan`]), each computed by
/// [`run_block`] on its own thread.
pub(super) fn gemm_quads(
    kern: Kern,
    w: &QMatrixI8,
    qx: &Quads,
    n: usize,
    y: &mut [f32],
    epi: &Epilogue,
) {
    if n == 0 {
        return;
    }
    let (mr, nr) = tile(kern);
    let (big, col_blocks, nb) = plan(w.rows(), w.cols(), n, nr);
    let p = QuadsGemm {
        kern,
        w,
        qx,
        n,
        epi,
        tile: (mr, nr),
        col_blocks,
        nb,
        y: OutPtr(y.as_mut_ptr()),
    };
    let tasks = w.rows().div_ceil(MB) * col_blocks;
    let task = |t: usize| run_block(&p, t);
    if big && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// What every block of one [`gemm_quads`] call shares.
struct QuadsGemm<'a> {
    kern: Kern,
    w: &'a QMatrixI8,
    qx: &'a Quads,
    /// Output columns.
    n: usize,
    epi: &'a Epilogue<'a>,
    /// (MR, NR) of the micro-kernel.
    tile: (usize, usize),
    /// Column blocks, and the columns of each (a multiple of NR).
    col_blocks: usize,
    nb: usize,
    y: OutPtr,
}

/// (whether to run in parallel, column blocks, columns per block) for a
/// `rows` x `cols` by `cols` x `n` product on NR = `nr`: enough column
/// blocks to keep blocks under NB_MAX and, with few row blocks, to give
/// every thread some work.
fn plan(rows: usize, cols: usize, n: usize, nr: usize) -> (bool, usize, usize) {
    let row_blocks = rows.div_ceil(MB);
    let n_tiles = n.div_ceil(nr);
    let big = rows.saturating_mul(cols).saturating_mul(n) >= PAR_MIN_MACS;
    let mut col_blocks = n_tiles.div_ceil((NB_MAX / nr).max(1));
    let want = if big {
        2 * rayon::current_num_threads()
    } else {
        1
    };
    while row_blocks * col_blocks < want && col_blocks < n_tiles {
        col_blocks += 1;
    }
    let tiles_per_block = n_tiles.div_ceil(col_blocks);
    (big, n_tiles.div_ceil(tiles_per_block), tiles_per_block * nr)
}

/// Per-thread buffers of [`run_block`]: the i32 sums, the decoded weight
/// panels and the packed activation tiles. Kept across calls, since
/// fresh zeroed buffers per block cost as much as a small GEMM; every
/// byte a block reads is written by it first (the first K slice stores
/// its sums, decode and packing fill their panels), so they need no
/// clearing.
#[derive(Default)]
struct Scratch {
    c: Vec<i32>,
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Scratch {
    /// The three buffers at least these lengths.
    fn sized(&mut self, c: usize, a: usize, b: usize) -> (&mut [i32], &mut [u8], &mut [u8]) {
        grow(&mut self.c, c);
        grow(&mut self.a, a);
        grow(&mut self.b, b);
        (&mut self.c[..c], &mut self.a[..a], &mut self.b[..b])
    }
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Block `t` (row-block major): its i32 sums, then its outputs.
fn run_block(p: &QuadsGemm, t: usize) {
    let (r0, j0) = ((t / p.col_blocks) * MB, (t % p.col_blocks) * p.nb);
    let (r1, j1) = ((r0 + MB).min(p.w.rows()), (j0 + p.nb).min(p.n));
    let ldc = (j1 - j0).div_ceil(p.tile.1) * p.tile.1;
    let block = |scratch: &mut Scratch| {
        let c = accumulate(p, (r0, r1), (j0, j1), ldc, scratch);
        write_block(p, c, ldc, (r0, r1), (j0, j1));
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => block(&mut scratch),
        // Only if a block ever ran inside another on this thread.
        Err(_) => block(&mut Scratch::default()),
    });
}

/// The i32 sums of output rows `r0..r1` (whole 16-row groups), columns
/// `j0..j1` (`ldc` wide, padded to NR), over all K slices: per slice the
/// quads are packed into NR-column tiles, the row groups decoded, and
/// the micro-kernel run over every (tile, MR-row panel).
fn accumulate<'s>(
    p: &QuadsGemm,
    (r0, r1): (usize, usize),
    (j0, j1): (usize, usize),
    ldc: usize,
    scratch: &'s mut Scratch,
) -> &'s [i32] {
    let (mr, nr) = p.tile;
    let (kp, micro) = (p.w.cols_pad(), (p.kern, p.qx.nonneg));
    let (g0, groups) = (r0 / GROUP_ROWS, (r1 - r0).div_ceil(GROUP_ROWS));
    let kc_max = KC.min(kp);
    let direct = p.qx.ld <= DIRECT_LDB_MAX;
    let (c, a, b) = scratch.sized(
        groups * GROUP_ROWS * ldc,
        groups * GROUP_ROWS * kc_max,
        if direct { 0 } else { kc_max * ldc },
    );
    for k0 in (0..kp).step_by(KC) {
        let kc = KC.min(kp - k0);
        let b = &mut b[..if direct { 0 } else { kc * ldc }];
        let (kq, cj) = ((k0 / 4, kc / 4), (j0, j1));
        if !direct {
            match nr {
                8 => pack_b::<8>(p.qx, kq, cj, b),
                16 => pack_b::<16>(p.qx, kq, cj, b),
                _ => {
                    debug_assert_eq!(nr, 32);
                    pack_b::<32>(p.qx, kq, cj, b)
                }
            }
        }
        let a = &mut a[..groups * GROUP_ROWS * kc];
        for (gi, ag) in a.chunks_exact_mut(GROUP_ROWS * kc).enumerate() {
            decode(p.kern, p.w, g0 + gi, k0, kc, ag);
        }
        // B tile in L1, A block in L2: loop tiles outside row panels.
        for ti in 0..ldc / nr {
            let bt = if direct {
                // In place: the quads buffer has NR * 4 readable bytes
                // past its last row (see `Quads`); columns read beyond n
                // are never stored.
                (&p.qx.q[kq.0 * p.qx.ld + (j0 + ti * nr) * 4..], p.qx.ld)
            } else {
                (&b[ti * kc * nr..(ti + 1) * kc * nr], nr * 4)
            };
            for (gi, ag) in a.chunks_exact(GROUP_ROWS * kc).enumerate() {
                for q in 0..GROUP_ROWS / mr {
                    let ci = (gi * GROUP_ROWS + q * mr) * ldc + ti * nr;
                    let (a, c) = (&ag[4 * q * mr..], &mut c[ci..]);
                    ukernel(micro, kc / 4, a, bt, c, ldc, k0 > 0);
                }
            }
        }
    }
    c
}

/// Turns the sums `c` of rows `r0..r1`, columns `j0..j1` into f32 (the
/// same stage as the scalar reference) straight into the output, then
/// applies the epilogue there while the row is in L1.
fn write_block(
    p: &QuadsGemm,
    c: &[i32],
    ldc: usize,
    (r0, r1): (usize, usize),
    (j0, j1): (usize, usize),
) {
    let n = p.n;
    for (r, cr) in (r0..r1).zip(c.chunks_exact(ldc)) {
        // SAFETY: r < rows and j1 <= n, so the run lies inside y (rows * n
        // values, exclusively borrowed by `gemm_quads`); the blocks' (row
        // block, column block) rectangles are disjoint, so no two threads
        // write the same element and none reads y while this slice lives.
        let dst = unsafe { std::slice::from_raw_parts_mut(p.y.get().add(r * n + j0), j1 - j0) };
        store_row(p.kern.isa(), p, cr, r, (j0, j1), dst);
    }
}

per_isa! {
    /// Output row `r`, columns `j0..j1` of a block from its sums `cr`,
    /// compiled for the kernel's ISA (a MobileNet 1x1 conv spends as long
    /// here as in its products).
    fn store_row = store_row_body(
        p: &QuadsGemm,
        cr: &[i32],
        r: usize,
        cols: (usize, usize),
        dst: &mut [f32]
    )
}

#[inline(always)]
fn store_row_body(p: &QuadsGemm, cr: &[i32], r: usize, (j0, j1): (usize, usize), dst: &mut [f32]) {
    let (sum, offset, deq) = (p.w.row_sums()[r], p.kern.offset(), &p.qx.deq[j0..j1]);
    for ((o, &v), &d) in dst.iter_mut().zip(cr).zip(deq) {
        *o = unoffset(v, sum, offset) as f32 * d;
    }
    if !p.epi.is_identity() {
        p.epi.row(r, j0..j1, p.n, dst);
    }
}
