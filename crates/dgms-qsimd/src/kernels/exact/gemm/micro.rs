//! Dispatch to the ISAs' micro-kernels, packing routines and transposes.

#[cfg(target_arch = "aarch64")]
use super::super::simd::neon;
#[cfg(target_arch = "x86_64")]
use super::super::simd::{avx2, avx512};
use super::image::{self, Image};
use super::pack as packing;
use super::{KC, NC};
use crate::kernels::isa::{CheckedIsa, Isa};
use crate::kernels::layout::{COL_ALIGN, GROUP_ROWS};

// Every micro-kernel computes one 16-row group.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(avx2::MR == GROUP_ROWS && avx512::MR == GROUP_ROWS);
#[cfg(target_arch = "aarch64")]
const _: () = assert!(neon::MR == GROUP_ROWS);
const _: () = assert!(NC.is_multiple_of(12) && KC.is_multiple_of(COL_ALIGN));

/// NR of the ISA's micro-kernel.
pub(super) fn tile_nr(isa: CheckedIsa) -> usize {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::NR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => avx2::NR,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => neon::NR,
        _ => PORTABLE_NR,
    }
}

const PORTABLE_NR: usize = 4;

/// Portable micro-kernel (only reached for an ISA without one).
fn ukernel_portable(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc_in: bool) {
    let mut acc = [[0.0f32; GROUP_ROWS]; PORTABLE_NR];
    for (ak, bk) in a
        .chunks_exact(GROUP_ROWS)
        .zip(b.chunks_exact(PORTABLE_NR))
        .take(kc)
    {
        for (col, &bv) in acc.iter_mut().zip(bk) {
            for (r, &av) in col.iter_mut().zip(ak) {
                *r += av * bv;
            }
        }
    }
    for (j, col) in acc.iter().enumerate() {
        for (o, &v) in c[j * ldc..j * ldc + GROUP_ROWS].iter_mut().zip(col) {
            *o = if acc_in { *o + v } else { v };
        }
    }
}

/// C^T (+)= (A B)^T for one group panel and one B panel of which the
/// first `cols` columns matter (an AVX2 tail panel computes only those).
#[allow(clippy::too_many_arguments)]
pub(super) fn ukernel(
    isa: CheckedIsa,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc_in: bool,
    cols: usize,
) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = cols;
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
        Isa::Avx512 => unsafe { avx512::ukernel(kc, a, b, c, ldc, acc_in) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (for every arm).
        Isa::Avx2 => unsafe {
            use avx2::ukernel as uk;
            match cols {
                1 => uk::<1>(kc, a, b, c, ldc, acc_in),
                2 => uk::<2>(kc, a, b, c, ldc, acc_in),
                3 => uk::<3>(kc, a, b, c, ldc, acc_in),
                4 => uk::<4>(kc, a, b, c, ldc, acc_in),
                5 => uk::<5>(kc, a, b, c, ldc, acc_in),
                _ => uk::<{ avx2::NR }>(kc, a, b, c, ldc, acc_in),
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { neon::ukernel(kc, a, b, c, ldc, acc_in) },
        _ => ukernel_portable(kc, a, b, c, ldc, acc_in),
    }
}

/// The right-hand side as the packing reads it.
pub(super) enum BSrc<'a> {
    /// A row-major matrix and its column count.
    Matrix(&'a [f32], usize),
    /// Images with their zero border, read as an im2col matrix.
    Image(Image<'a>),
}

/// Packs B rows `k0..k0 + kc`, columns `cols` with NR = `NR`; for images,
/// `koff` holds the rows' offsets (see [`Image::row_offsets`]).
#[inline(always)]
fn pack_nr<const NR: usize>(
    b: &BSrc,
    k_rows: usize,
    (k0, kc): (usize, usize),
    cols: (usize, usize),
    (zero, koff): (&mut [f32], &[usize]),
    out: &mut [f32],
) {
    match b {
        BSrc::Matrix(x, n) => packing::pack_matrix::<NR>((x, *n), k_rows, k0, kc, cols, zero, out),
        BSrc::Image(img) => image::pack_image::<NR>(img, koff, kc, cols, out),
    }
}

/// Packs B rows `k0..k0 + kc`, columns `cols` with the ISA's NR.
pub(super) fn pack(
    isa: CheckedIsa,
    b: &BSrc,
    k_rows: usize,
    ks: (usize, usize),
    cols: (usize, usize),
    s: (&mut [f32], &[usize]),
    out: &mut [f32],
) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pack_nr::<{ avx512::NR }>(b, k_rows, ks, cols, s, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pack_nr::<{ avx2::NR }>(b, k_rows, ks, cols, s, out),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => pack_nr::<{ neon::NR }>(b, k_rows, ks, cols, s, out),
        _ => pack_nr::<PORTABLE_NR>(b, k_rows, ks, cols, s, out),
    }
}

/// `out[l * tw + j] = c[j * ldc + l]` for 16 rows l and `tw` columns j.
pub(super) fn transpose(isa: CheckedIsa, c: &[f32], ldc: usize, out: &mut [f32], tw: usize) {
    // Columns done with SIMD; the rest are copied one by one.
    #[cfg(target_arch = "x86_64")]
    let j = if matches!(isa.isa(), Isa::Avx2 | Isa::Avx512) {
        for j in (0..tw / 8 * 8).step_by(8) {
            // SAFETY: `isa` is a CheckedIsa for Avx2 or Avx512, and
            // Isa::check requires AVX2 and FMA for both.
            unsafe { avx2::transpose_16x8(&c[j * ldc..], ldc, &mut out[j..], tw) };
        }
        tw / 8 * 8
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let j = {
        let _ = isa;
        0
    };
    for (l, row) in out.chunks_exact_mut(tw).take(GROUP_ROWS).enumerate() {
        for (jj, v) in row.iter_mut().enumerate().skip(j) {
            *v = c[jj * ldc + l];
        }
    }
}
