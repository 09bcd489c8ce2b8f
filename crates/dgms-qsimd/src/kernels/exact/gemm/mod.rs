//! Cache-blocked GEMM driver, BLIS style, computing the transposed output
//! tile by tile: the weights' 16-row groups are the vector dimension (a
//! group decodes into a `[k][16]` panel, one or two registers per k), and
//! the activations are packed into `[k][NR]` micro-panels whose values the
//! micro-kernel broadcasts. So M never needs padding beyond the 16-row
//! groups, and N only to NR (4 to 12) columns; AVX2 also has tail kernels
//! for a last panel narrower than NR.
//!
//! Work splits into rectangular tasks (row groups x column panels) sized
//! by a small cost model, so that both tall-N (64 x 3136) and wide-K
//! (512 x 49) problems give every thread an equal share. Within a task,
//! per column block and `KC` slice of the inner dimension, up to `MC_G`
//! row groups are decoded once into an L2-resident block, and each
//! activation panel is packed once and used by all of them: a matrix
//! right-hand side block by block, a convolution's im2col matrix panel by
//! panel straight from the (zero-bordered) images, so it is never
//! materialised and each panel is still in L1 when the micro-kernels read
//! it. Tasks accumulate a column block's C^T in a private buffer, then
//! transpose it out, apply the epilogue and copy their rectangle into the
//! output, so no two threads touch the same memory.

mod image;
mod micro;
mod pack;
mod source;

use std::cell::RefCell;

use rayon::prelude::*;

use image::Image;
use micro::{pack, tile_nr, transpose, ukernel, BSrc};
pub(crate) use pack::Rhs;
pub(crate) use source::Source;

use crate::kernels::epilogue::Epilogue;
use crate::kernels::isa::CheckedIsa;
use crate::kernels::layout::{COL_ALIGN, GROUP_ROWS};

/// Inner-dimension slice: a 16 x KC A panel (16 KiB) stays in L1.
const KC: usize = 256;
/// Columns of a matrix right-hand side packed per block: a KC x NC block
/// of B (240 KiB) stays in L2. A multiple of every NR.
const NC: usize = 240;
/// Values of the C^T block an image task accumulates (256 KiB, in L2):
/// its column blocks are this over the task's rows wide, at least NC.
const C_BLOCK: usize = 64 << 10;
/// Upper bound on an image task's column block.
const NC_MAX: usize = 1536;
/// Row groups decoded at a time: a 256 x KC block of A (256 KiB) in L2.
const MC_G: usize = 16;
/// Below this many multiply-adds everything runs on the calling thread.
const PAR_MIN_FMAS: usize = 1 << 20;
/// Width of the transpose-out buffer (16 rows x this many columns).
const OUT_W: usize = 128;

/// Per-thread buffers, kept between calls (the engine runs many GEMMs).
#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    zero: Vec<f32>,
    koff: Vec<usize>,
    out: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    /// The calling thread's zero-padded copy of a convolution's input.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `len` values of `v` starting at a 64-byte boundary (grows `v`).
fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len + 16 {
        v.resize(len + 16, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(16);
    &mut v[off..off + len]
}

/// The output pointer shared by tasks that write disjoint rectangles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks only write disjoint regions through it (see `run_task`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The problem every task shares.
struct Problem<'a> {
    isa: CheckedIsa,
    w: &'a Source<'a>,
    rhs: &'a BSrc<'a>,
    epi: &'a Epilogue<'a>,
    /// Output rows, inner dimension (unpadded and padded), columns.
    rows: usize,
    k: usize,
    kp: usize,
    n: usize,
    nr: usize,
    y: OutPtr,
}

/// Cycles-ish cost of a task of `m` rows x `nn` columns (see [`plan`]).
fn task_cost(m: usize, nn: usize, kp: usize) -> f64 {
    let (m, nn, kp) = (m as f64, nn as f64, kp as f64);
    let fma = m * nn * kp / 16.0;
    let pack = nn * kp * 0.5;
    let decode = m * kp * (nn / NC as f64).ceil() * 0.1;
    fma + pack + decode + 3000.0
}

/// (row groups, column panels) per task: the split of `groups` x
/// `panels` into a multiple of `threads` tasks with the least estimated
/// time, counting each task's packing of its columns and decoding of its
/// rows (splitting N repeats the decoding, splitting M the packing).
fn plan(groups: usize, panels: usize, nr: usize, kp: usize, threads: usize) -> (usize, usize) {
    if threads <= 1 {
        return (groups, panels);
    }
    // Candidates from few to many tasks; more tasks (finer load balance
    // when other processes take a core for a while) win within 3 %.
    let mut cands = Vec::new();
    for tasks in [threads, 2 * threads, 3 * threads, 4 * threads] {
        for rb in (1..=tasks.min(groups)).filter(|rb| tasks % rb == 0) {
            let cb = tasks / rb;
            if cb > panels {
                continue;
            }
            let (gpt, ppt) = (groups.div_ceil(rb), panels.div_ceil(cb));
            let real = groups.div_ceil(gpt) * panels.div_ceil(ppt);
            let rounds = real.div_ceil(threads) as f64;
            cands.push((
                rounds * task_cost(gpt * GROUP_ROWS, ppt * nr, kp),
                real,
                gpt,
                ppt,
            ));
        }
    }
    let best = cands.iter().map(|c| c.0).fold(f64::INFINITY, f64::min);
    cands
        .iter()
        .filter(|c| c.0 <= best * 1.03)
        .max_by_key(|c| c.1)
        .map_or((groups, panels), |c| (c.2, c.3))
}

/// Y = epilogue(W X) for validated shapes on a SIMD ISA.
pub(crate) fn gemm(
    isa: CheckedIsa,
    w: &Source,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epi: &Epilogue,
) {
    if n == 1 {
        // A GEMV reads the weights once, without decoding them to f32.
        match w {
            Source::Quant(q) => super::gemv::gemv_q(isa, q, x, y),
            Source::Dense(d) => super::gemv::gemv_dense(isa, d, x, y),
        }
        epi.apply(y, 1, 0..w.rows(), 0..1, 1);
        return;
    }
    gemm_rhs(isa, w, &Rhs::Matrix { x, n }, y, epi);
}

/// Y = epilogue(W B) for any right-hand side; shapes already validated
/// (`y` is rows x `rhs.cols()`).
pub(crate) fn gemm_rhs(isa: CheckedIsa, w: &Source, rhs: &Rhs, y: &mut [f32], epi: &Epilogue) {
    match *rhs {
        Rhs::Matrix { x, n } => run(isa, w, &BSrc::Matrix(x, n), y, epi),
        Rhs::Im2col {
            input,
            geom,
            images,
        } if geom.pad == 0 => {
            let img = Image::unpadded(input, geom, images);
            run(isa, w, &BSrc::Image(img), y, epi);
        }
        Rhs::Im2col {
            input,
            geom,
            images,
        } => PADDED.with(|cell| {
            let mut own = Vec::new();
            let mut guard = cell.try_borrow_mut();
            let buf = match guard {
                Ok(ref mut b) => &mut **b,
                Err(_) => &mut own,
            };
            let img = Image::padded(input, geom, images, buf);
            run(isa, w, &BSrc::Image(img), y, epi);
        }),
    }
}

fn run(isa: CheckedIsa, w: &Source, rhs: &BSrc, y: &mut [f32], epi: &Epilogue) {
    let n = match rhs {
        BSrc::Matrix(_, n) => *n,
        BSrc::Image(img) => img.cols(),
    };
    let (rows, k) = (w.rows(), w.cols());
    if n == 0 || rows == 0 {
        return;
    }
    assert_eq!(y.len(), rows * n, "gemm output length");
    let nr = tile_nr(isa);
    let p = Problem {
        isa,
        w,
        rhs,
        epi,
        rows,
        k,
        kp: k.div_ceil(COL_ALIGN) * COL_ALIGN,
        n,
        nr,
        y: OutPtr(y.as_mut_ptr()),
    };
    let (groups, panels) = (rows.div_ceil(GROUP_ROWS), n.div_ceil(nr));
    let big = rows * k * n >= PAR_MIN_FMAS;
    let threads = if big { rayon::current_num_threads() } else { 1 };
    let (gpt, ppt) = plan(groups, panels, nr, p.kp, threads);
    let cb = panels.div_ceil(ppt);
    let tasks = groups.div_ceil(gpt) * cb;
    let task = |t: usize| {
        let (gi, ci) = (t / cb, t % cb);
        let g = (gi * gpt, ((gi + 1) * gpt).min(groups));
        let j = (ci * ppt * nr, ((ci + 1) * ppt * nr).min(n));
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => run_task(&p, g, j, &mut s),
            Err(_) => run_task(&p, g, j, &mut Scratch::default()),
        });
    };
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        task(0);
    }
}

/// Computes output rows of groups `g0..g1`, columns `j0..j1`, one column
/// block at a time: C^T of a block is accumulated over all K slices, then
/// written out while in cache.
fn run_task(p: &Problem, (g0, g1): (usize, usize), (j0, j1): (usize, usize), s: &mut Scratch) {
    let (isa, nr) = (p.isa, p.nr);
    let ldm = (g1 - g0) * GROUP_ROWS;
    let Scratch {
        a,
        b,
        c,
        zero,
        koff,
        out,
    } = s;
    // A matrix is packed a whole block at a time; images one panel at a
    // time, right before the micro-kernels use it (so it stays in L1).
    let image = match p.rhs {
        BSrc::Image(img) => Some(img),
        BSrc::Matrix(..) => None,
    };
    // Column block: the packed B block of a matrix stays in L2; an image
    // task's C^T block does (fewer blocks decode the weights fewer times).
    let nc = match image {
        Some(_) => (C_BLOCK / ldm / 12 * 12).clamp(NC, NC_MAX),
        None => NC,
    };
    let c = aligned(c, ldm * nc);
    let a = aligned(a, MC_G.min(g1 - g0) * GROUP_ROWS * KC);
    let panels = if image.is_some() { 1 } else { NC / nr };
    let b = aligned(b, panels * pack::panel_stride(KC, nr));
    if zero.len() < NC {
        zero.resize(NC, 0.0);
    }
    for jc in (j0..j1).step_by(nc) {
        let je = (jc + nc).min(j1);
        let np = (je - jc).div_ceil(nr);
        for pc in (0..p.kp).step_by(KC) {
            let kc = KC.min(p.kp - pc);
            let ps = pack::panel_stride(kc, nr);
            match image {
                Some(img) => img.row_offsets(p.k, pc, kc, koff),
                None => pack(isa, p.rhs, p.k, (pc, kc), (jc, je), (zero, koff), b),
            }
            for gc in (g0..g1).step_by(MC_G) {
                let ge = (gc + MC_G).min(g1);
                let a = &mut a[..(ge - gc) * GROUP_ROWS * kc];
                for (g, ag) in (gc..ge).zip(a.chunks_exact_mut(GROUP_ROWS * kc)) {
                    p.w.decode(isa, g, pc, kc, ag);
                }
                for pi in 0..np {
                    let bp = if image.is_some() {
                        let cols = (jc + pi * nr, (jc + (pi + 1) * nr).min(je));
                        pack(isa, p.rhs, p.k, (pc, kc), cols, (zero, koff), b);
                        &b[..ps]
                    } else {
                        &b[pi * ps..(pi + 1) * ps]
                    };
                    let cols = nr.min(je - jc - pi * nr);
                    for (g, ag) in (gc..ge).zip(a.chunks_exact(GROUP_ROWS * kc)) {
                        let ci = pi * nr * ldm + (g - g0) * GROUP_ROWS;
                        ukernel(isa, kc, ag, bp, &mut c[ci..], ldm, pc > 0, cols);
                    }
                }
            }
        }
        write_out(p, c, ldm, (g0, g1), (jc, je), out);
    }
}

/// Transposes C^T of columns `j0..j1` (`ldm` rows per column) into the
/// output rows, through a 16 x [`OUT_W`] buffer where the epilogue is
/// applied.
fn write_out(
    p: &Problem,
    c: &[f32],
    ldm: usize,
    (g0, g1): (usize, usize),
    (j0, j1): (usize, usize),
    buf: &mut Vec<f32>,
) {
    buf.resize(GROUP_ROWS * OUT_W, 0.0);
    for g in g0..g1 {
        let r0 = g * GROUP_ROWS;
        let rv = GROUP_ROWS.min(p.rows - r0);
        for jb in (j0..j1).step_by(OUT_W) {
            let tw = OUT_W.min(j1 - jb);
            transpose(
                p.isa,
                &c[(jb - j0) * ldm + (g - g0) * GROUP_ROWS..],
                ldm,
                buf,
                tw,
            );
            p.epi.apply(buf, tw, r0..r0 + rv, jb..jb + tw, p.n);
            for (l, src) in buf.chunks_exact(tw).take(rv).enumerate() {
                // SAFETY: r0 + l < rows and jb + tw <= j1 <= n, so the run
                // lies inside y (rows * n values, exclusively borrowed by
                // `gemm_rhs`); the tasks' (row groups, columns) rectangles
                // are disjoint, so no two threads write the same element
                // and none reads y.
                unsafe {
                    let dst = p.y.get().add((r0 + l) * p.n + jb);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, tw);
                }
            }
        }
    }
}
