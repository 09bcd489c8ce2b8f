//! Cache-blocked GEMM driver, BLIS style: per task (a block of output rows
//! x a block of output columns) and per `KC` slice of the inner dimension,
//! the activations are packed into `[tile][k][NR]` panels and the weights
//! decoded into `[k][MR]` f32 row panels; an ISA micro-kernel then
//! accumulates MR x NR tiles in registers. The decode costs one pass over
//! the weights per task and k slice, amortised over all NR-wide tiles.
//! Tasks accumulate into a private buffer, apply the epilogue there and
//! copy their rectangle out, so no two threads touch the same memory.

use rayon::prelude::*;

use super::epilogue::Epilogue;
use super::isa::Isa;
use super::matrix::{line_indices, DenseMatrix, Layout, QMatrix, COL_ALIGN, GROUP_ROWS};

/// Inner-dimension slice: A panel 16 x KC and B tile KC x NR stay in cache.
const KC: usize = 256;
/// Output rows per task (a multiple of 16).
const MB: usize = 64;
/// Upper bound on output columns per task.
const NB_MAX: usize = 512;
/// Below this many multiply-adds everything runs on the calling thread.
const PAR_MIN_FMAS: usize = 1 << 20;

/// The weights of a GEMM.
pub(crate) enum Source<'a> {
    Quant(&'a QMatrix),
    Dense(DenseMatrix<'a>),
}

impl Source<'_> {
    fn rows(&self) -> usize {
        match self {
            Source::Quant(w) => w.rows(),
            Source::Dense(w) => w.rows(),
        }
    }

    fn cols(&self) -> usize {
        match self {
            Source::Quant(w) => w.cols(),
            Source::Dense(w) => w.cols(),
        }
    }

    /// Decodes row group `g`, columns `k0..k0 + kc` into 16 / `mr` row
    /// panels `[k][mr]` (panel p at `p * mr * kc`). `k0` and `kc` are
    /// multiples of [`COL_ALIGN`]; `mr` is the ISA's micro-tile height.
    fn decode(&self, isa: Isa, g: usize, k0: usize, kc: usize, mr: usize, out: &mut [f32]) {
        match self {
            Source::Quant(w) => decode_quant(isa, w, g, k0, kc, mr, out),
            Source::Dense(w) => {
                let (rows, cols, data) = (w.rows(), w.cols(), w.data());
                for (l, r) in (g * GROUP_ROWS..(g + 1) * GROUP_ROWS).enumerate() {
                    let panel = &mut out[(l / mr) * mr * kc..(l / mr + 1) * mr * kc];
                    for (kk, v) in panel.iter_mut().skip(l % mr).step_by(mr).enumerate() {
                        let k = k0 + kk;
                        *v = if r < rows && k < cols {
                            data[r * cols + k]
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

fn decode_quant(isa: Isa, w: &QMatrix, g: usize, k0: usize, kc: usize, mr: usize, out: &mut [f32]) {
    let layout = w.layout();
    let cpl = layout.cols_per_line();
    let lines = &w.group(g)[k0 / cpl..(k0 + kc) / cpl];
    let table = w.table();
    match (isa, layout) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry point checked isa.ensure_available().
        (Isa::Avx512, Layout::Nibble) => unsafe { super::avx512::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx512, Layout::Byte) => unsafe { super::avx512::decode_byte(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, Layout::Nibble) => unsafe { super::avx2::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, Layout::Byte) => unsafe { super::avx2::decode_byte(lines, table, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Isa::Neon, Layout::Nibble) => unsafe { super::neon::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Isa::Neon, Layout::Byte) => unsafe { super::neon::decode_byte(lines, table, out) },
        _ => {
            for (li, line) in lines.iter().enumerate() {
                for j in 0..cpl {
                    let k = li * cpl + j;
                    for (l, i) in line_indices(line, layout, j).into_iter().enumerate() {
                        out[(l / mr) * mr * kc + k * mr + l % mr] = table[usize::from(i)];
                    }
                }
            }
        }
    }
}

/// (MR, NR) of the ISA's micro-kernel.
fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (super::avx512::MR, super::avx512::NR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (super::avx2::MR, super::avx2::NR),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => (super::neon::MR, super::neon::NR),
        _ => (PORTABLE_MR, PORTABLE_NR),
    }
}

const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// Portable micro-kernel (only reached for an ISA without one).
fn ukernel_portable(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    let mut acc = [[0.0f32; PORTABLE_NR]; PORTABLE_MR];
    for k in 0..kc {
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = a[k * PORTABLE_MR + i];
            for (r, &bv) in row
                .iter_mut()
                .zip(&b[k * PORTABLE_NR..(k + 1) * PORTABLE_NR])
            {
                *r += ai * bv;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (o, &v) in c[i * ldc..i * ldc + PORTABLE_NR].iter_mut().zip(row) {
            *o = if acc_in { *o + v } else { v };
        }
    }
}

fn ukernel(isa: Isa, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry point checked isa.ensure_available().
        Isa::Avx512 => unsafe { super::avx512::ukernel(kc, a, b, c, ldc, acc_in) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { super::avx2::ukernel(kc, a, b, c, ldc, acc_in) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { super::neon::ukernel(kc, a, b, c, ldc, acc_in) },
        _ => ukernel_portable(kc, a, b, c, ldc, acc_in),
    }
}

/// Packs rows `k0..k0 + kc`, columns `j0..j1` of X (`cols` x `n`) into
/// `[tile][k][nr]`, zero beyond X.
#[allow(clippy::too_many_arguments)]
fn pack_b(
    x: &[f32],
    n: usize,
    cols: usize,
    k0: usize,
    kc: usize,
    j0: usize,
    j1: usize,
    nr: usize,
    out: &mut [f32],
) {
    for (t, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
        let jt = j0 + t * nr;
        let width = j1.saturating_sub(jt).min(nr);
        for (kk, dst) in panel.chunks_exact_mut(nr).enumerate() {
            let k = k0 + kk;
            if k < cols && width > 0 {
                dst[..width].copy_from_slice(&x[k * n + jt..k * n + jt + width]);
                dst[width..].fill(0.0);
            } else {
                dst.fill(0.0);
            }
        }
    }
}

/// The output pointer shared by tasks that write disjoint rectangles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks only write disjoint regions through it (see `gemm`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Y = epilogue(W X) for validated shapes on an available SIMD ISA.
pub(crate) fn gemm(isa: Isa, w: &Source, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) {
    let (rows, cols) = (w.rows(), w.cols());
    if n == 0 {
        return;
    }
    debug_assert!(x.len() == cols * n && y.len() == rows * n);
    let kp = cols.div_ceil(COL_ALIGN) * COL_ALIGN;
    let (mr, nr) = tile(isa);
    let row_blocks = rows.div_ceil(MB);
    let n_tiles = n.div_ceil(nr);
    let big = rows * cols * n >= PAR_MIN_FMAS;
    // Enough column blocks to keep blocks under NB_MAX and, with few row
    // blocks, to give every thread some work.
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
    let nb = tiles_per_block * nr;
    let col_blocks = n_tiles.div_ceil(tiles_per_block);
    let yp = OutPtr(y.as_mut_ptr());

    let task = |t: usize| {
        let (r0, j0) = ((t / col_blocks) * MB, (t % col_blocks) * nb);
        let (r1, j1) = ((r0 + MB).min(rows), (j0 + nb).min(n));
        let (g0, groups) = (r0 / GROUP_ROWS, (r1 - r0).div_ceil(GROUP_ROWS));
        let ntile = (j1 - j0).div_ceil(nr);
        let ldc = ntile * nr;
        let mut c = vec![0.0f32; groups * GROUP_ROWS * ldc];
        let mut a = vec![0.0f32; groups * GROUP_ROWS * KC];
        let mut b = vec![0.0f32; KC * ldc];
        for k0 in (0..kp).step_by(KC) {
            let kc = KC.min(kp - k0);
            let b = &mut b[..kc * ldc];
            pack_b(x, n, cols, k0, kc, j0, j1, nr, b);
            let a = &mut a[..groups * GROUP_ROWS * kc];
            for (gi, ag) in a.chunks_exact_mut(GROUP_ROWS * kc).enumerate() {
                w.decode(isa, g0 + gi, k0, kc, mr, ag);
            }
            // B tile in L1, A block in L2: loop tiles outside row panels.
            for (ti, bt) in b.chunks_exact(kc * nr).enumerate() {
                for (pi, ap) in a.chunks_exact(mr * kc).enumerate() {
                    let ci = pi * mr * ldc + ti * nr;
                    ukernel(isa, kc, ap, bt, &mut c[ci..], ldc, k0 > 0);
                }
            }
        }
        epi.apply(&mut c, ldc, r0..r1, j0..j1, n);
        for (r, src) in (r0..r1).zip(c.chunks_exact(ldc)) {
            // SAFETY: r < rows and j1 <= n, so the run lies inside y
            // (rows * n values, exclusively borrowed for this call); the
            // tasks' (row block, column block) rectangles are disjoint, so
            // no two threads write the same element and none reads y.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), yp.get().add(r * n + j0), j1 - j0);
            }
        }
    };
    let tasks = row_blocks * col_blocks;
    if big && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}
