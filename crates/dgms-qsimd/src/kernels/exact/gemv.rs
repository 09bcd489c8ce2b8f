//! GEMV drivers: split the rows over rayon in contiguous runs of row groups
//! (each thread streams its own part of the weights) and dispatch one
//! 16-row group at a time to the ISA kernel.

use rayon::prelude::*;

use super::matrix::{DenseMatrix, QMatrix};
use super::simd;
use crate::kernels::isa::{CheckedIsa, Isa};
use crate::kernels::layout::{Layout, GROUP_ROWS};

/// Below this many weights a GEMV runs on the calling thread.
pub(crate) const PAR_MIN_WEIGHTS: usize = 1 << 16;

/// Runs `f(first_row, rows_out)` over chunks of `y` (`unit` rows each a
/// multiple of), in parallel when the problem is big enough.
pub(crate) fn split_rows<F>(y: &mut [f32], unit: usize, weights: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let units = y.len().div_ceil(unit);
    if weights < PAR_MIN_WEIGHTS || units < 2 {
        f(0, y);
        return;
    }
    // A few chunks per thread balance load while keeping streams long.
    let per = units.div_ceil(rayon::current_num_threads() * 4).max(1) * unit;
    y.par_chunks_mut(per)
        .enumerate()
        .for_each(|(i, ys)| f(i * per, ys));
}

/// y = W x for a validated quantized matrix on a SIMD ISA.
pub(crate) fn gemv_q(isa: CheckedIsa, w: &QMatrix, x: &[f32], y: &mut [f32]) {
    // Zero-padded activations: the kernels read whole lines, and padded
    // columns must meet 0.
    let mut xp = vec![0.0f32; w.cols_pad()];
    xp[..w.cols()].copy_from_slice(x);
    let (table, layout) = (w.table(), w.layout());
    // The AVX2 4-bit kernel takes the activations rearranged once per call.
    #[cfg(target_arch = "x86_64")]
    let xeo = if isa.isa() == Isa::Avx2 && layout == Layout::Nibble {
        simd::avx2::nibble_activations(&xp)
    } else {
        Vec::new()
    };
    let group = |g: usize| -> [f32; 16] {
        let lines = w.group(g);
        match (isa.isa(), layout) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
            (Isa::Avx512, Layout::Nibble) => unsafe {
                simd::avx512::gemv_nibble(lines, table, &xp)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Isa::Avx512, Layout::Byte) => unsafe { simd::avx512::gemv_byte(lines, table, &xp) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Isa::Avx2, Layout::Nibble) => unsafe { simd::avx2::gemv_nibble(lines, table, &xeo) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Isa::Avx2, Layout::Byte) => unsafe { simd::avx2::gemv_byte(lines, table, &xp) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            (Isa::Neon, Layout::Nibble) => unsafe { simd::neon::gemv_nibble(lines, table, &xp) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            (Isa::Neon, Layout::Byte) => unsafe { simd::neon::gemv_byte(lines, table, &xp) },
            _ => portable_group(w, g, &xp),
        }
    };
    split_rows(y, GROUP_ROWS, w.rows() * w.cols(), |r0, ys| {
        for (i, yg) in ys.chunks_mut(GROUP_ROWS).enumerate() {
            let v = group(r0 / GROUP_ROWS + i);
            yg.copy_from_slice(&v[..yg.len()]);
        }
    });
}

/// Portable group kernel (only reached for an ISA without a kernel).
fn portable_group(w: &QMatrix, g: usize, xp: &[f32]) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    for (l, o) in out.iter_mut().enumerate() {
        let r = g * GROUP_ROWS + l;
        *o = (0..w.cols())
            .map(|c| w.weight(r, c).unwrap_or(0.0) * xp[c])
            .sum();
    }
    out
}

/// y = W x for a validated dense matrix: the f32 baseline.
pub(crate) fn gemv_dense(isa: CheckedIsa, w: &DenseMatrix, x: &[f32], y: &mut [f32]) {
    let cols = w.cols();
    let data = w.data();
    let dot = |a: &[f32]| -> f32 {
        match isa.isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
            Isa::Avx512 => unsafe { simd::avx512::dot(a, x) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { simd::avx2::dot(a, x) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above.
            Isa::Neon => unsafe { simd::neon::dot(a, x) },
            _ => a.iter().zip(x).map(|(p, q)| p * q).sum(),
        }
    };
    split_rows(y, GROUP_ROWS, w.rows() * cols, |r0, ys| {
        for (i, yr) in ys.iter_mut().enumerate() {
            let r = r0 + i;
            *yr = dot(&data[r * cols..(r + 1) * cols]);
        }
    });
}
