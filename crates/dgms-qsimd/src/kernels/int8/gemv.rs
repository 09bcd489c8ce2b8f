//! int8 GEMV driver: activations quantized once per call (per tensor), the
//! rows split over rayon in runs of 16-row groups as in the exact GEMV,
//! each group's i32 sums turned into f32 by the same stage as the scalar
//! reference.

use super::gemm::unoffset;
use super::kern::{Family, Kern};
use super::matrix::QMatrixI8;
use super::quant::{quant, vec_scales};
use super::simd;
use crate::kernels::exact::gemv::split_rows;
use crate::kernels::layout::{Layout, GROUP_ROWS};

/// y = W x for validated shapes on a SIMD ISA: x quantized once, then
/// each 16-row group's i32 sums (in parallel runs of groups) scaled to
/// f32.
pub(super) fn gemv(kern: Kern, w: &QMatrixI8, x: &[f32], y: &mut [f32]) {
    let x = Activations::new(kern, w, x);
    let (sums, offset) = (w.row_sums(), kern.offset());
    split_rows(y, GROUP_ROWS, w.rows() * w.cols(), |r0, ys| {
        for (i, yg) in ys.chunks_mut(GROUP_ROWS).enumerate() {
            let g = r0 / GROUP_ROWS + i;
            let acc = group_sums(kern, w, g, &x);
            for (l, o) in yg.iter_mut().enumerate() {
                *o = unoffset(acc[l], sums[g * GROUP_ROWS + l], offset) as f32 * x.deq;
            }
        }
    });
}

/// The quantized activations in the forms the kernels of `kern` read.
struct Activations {
    /// q as i8 bit patterns, zero-padded: kernels read whole lines.
    xs: Vec<u8>,
    /// The u8 operand of the x86 kernels: q + 128 (offset kernels) or |q|
    /// (sign tricks). NEON multiplies signed by signed.
    #[cfg(target_arch = "x86_64")]
    xa: Vec<u8>,
    /// No activation is negative (only the x86 kernels have a variant
    /// for that).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    nonneg: bool,
    /// s_w * s_x: the i32 sums to f32.
    deq: f32,
}

impl Activations {
    /// Quantizes `x` with one scale (per tensor).
    fn new(kern: Kern, w: &QMatrixI8, x: &[f32]) -> Activations {
        let (inv, deq, nonneg) = vec_scales(x, w.weight_scale());
        let mut xs = vec![0u8; w.cols_pad()];
        for (d, &v) in xs.iter_mut().zip(x) {
            *d = quant(v, inv) as u8;
        }
        #[cfg(target_arch = "x86_64")]
        let xa: Vec<u8> = if kern.offset() {
            xs.iter().map(|&q| q ^ 0x80).collect()
        } else {
            xs.iter().map(|&q| (q as i8).unsigned_abs()).collect()
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = kern;
        Activations {
            xs,
            #[cfg(target_arch = "x86_64")]
            xa,
            nonneg,
            deq,
        }
    }
}

/// The i32 sums of row group `g` on the kernels of `kern`.
fn group_sums(kern: Kern, w: &QMatrixI8, g: usize, x: &Activations) -> [i32; 16] {
    let (lines, layout, table) = (w.group(g), w.layout(), w.table());
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (lines, table);
    match (kern.family(), layout) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `kern` came from Kern::select on a CheckedIsa (the
        // ISA is on this CPU) and its dot-product feature tests.
        (Family::Avx2, Layout::Nibble) => unsafe {
            if x.nonneg {
                simd::avx2::gemv_nibble::<true>(lines, table, &x.xa, &x.xs)
            } else {
                simd::avx2::gemv_nibble::<false>(lines, table, &x.xa, &x.xs)
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Family::Avx2, Layout::Byte) => unsafe {
            if x.nonneg {
                simd::avx2::gemv_byte::<true>(lines, &x.xa, &x.xs)
            } else {
                simd::avx2::gemv_byte::<false>(lines, &x.xa, &x.xs)
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (VNNI detected).
        (Family::Avx512Vnni, Layout::Nibble) => unsafe {
            simd::avx512::gemv_nibble_vnni(lines, table, &x.xa)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (VNNI detected).
        (Family::Avx512Vnni, Layout::Byte) => unsafe { simd::avx512::gemv_byte_vnni(lines, &x.xa) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Family::Avx512Bw, Layout::Nibble) => unsafe {
            if x.nonneg {
                simd::avx512::gemv_nibble_bw::<true>(lines, table, &x.xa, &x.xs)
            } else {
                simd::avx512::gemv_nibble_bw::<false>(lines, table, &x.xa, &x.xs)
            }
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Family::Avx512Bw, Layout::Byte) => unsafe {
            if x.nonneg {
                simd::avx512::gemv_byte_bw::<true>(lines, &x.xa, &x.xs)
            } else {
                simd::avx512::gemv_byte_bw::<false>(lines, &x.xa, &x.xs)
            }
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above (dotprod detected).
        (Family::NeonDot, Layout::Nibble) => unsafe {
            simd::neon::gemv_nibble_dot(lines, table, &x.xs)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above (dotprod detected).
        (Family::NeonDot, Layout::Byte) => unsafe { simd::neon::gemv_byte_dot(lines, &x.xs) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Family::Neon, Layout::Nibble) => unsafe { simd::neon::gemv_nibble(lines, table, &x.xs) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Family::Neon, Layout::Byte) => unsafe { simd::neon::gemv_byte(lines, &x.xs) },
        _ => portable_group(w, g, &x.xs, kern.offset()),
    }
}

/// Portable group kernel (only reached for an ISA without a kernel, and
/// in tests): the SIMD kernels' sums, padding included; with `offset`
/// the activations are u8 q + 128 as VNNI takes them.
fn portable_group(w: &QMatrixI8, g: usize, xs: &[u8], offset: bool) -> [i32; 16] {
    let x = |c: usize| {
        let q = xs[c];
        if offset {
            i32::from(q ^ 0x80)
        } else {
            i32::from(q as i8)
        }
    };
    let mut out = [0i32; 16];
    for (c, line) in w.group(g).iter().enumerate() {
        for (o, d) in out.iter_mut().zip(line.0.chunks_exact(4)) {
            for (b, &v) in d.iter().enumerate() {
                *o = o.wrapping_add(match w.layout() {
                    Layout::Nibble => {
                        let lo = i32::from(w.table()[usize::from(v & 0x0F)]) * x(8 * c + b);
                        lo + i32::from(w.table()[usize::from(v >> 4)]) * x(8 * c + 4 + b)
                    }
                    Layout::Byte => i32::from(v as i8) * x(4 * c + b),
                });
            }
        }
    }
    out
}
