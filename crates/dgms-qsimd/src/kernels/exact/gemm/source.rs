//! The GEMM's weights and their decoding into f32 row-group panels.

use super::super::matrix::{DenseMatrix, QMatrix};
#[cfg(target_arch = "aarch64")]
use super::super::simd::neon;
#[cfg(target_arch = "x86_64")]
use super::super::simd::{avx2, avx512};
use crate::kernels::isa::{CheckedIsa, Isa};
use crate::kernels::layout::{line_indices, Layout, GROUP_ROWS};

/// The weights of a GEMM.
pub(crate) enum Source<'a> {
    Quant(&'a QMatrix),
    Dense(DenseMatrix<'a>),
}

impl Source<'_> {
    /// Rows (output features).
    pub fn rows(&self) -> usize {
        match self {
            Source::Quant(w) => w.rows(),
            Source::Dense(w) => w.rows(),
        }
    }

    /// Columns (the inner dimension).
    pub fn cols(&self) -> usize {
        match self {
            Source::Quant(w) => w.cols(),
            Source::Dense(w) => w.cols(),
        }
    }

    /// Decodes row group `g`, columns `k0..k0 + kc` into a `[k][16]`
    /// panel (`out` = 16 * kc values, zero beyond the matrix). `k0` and
    /// `kc` are multiples of `COL_ALIGN`.
    pub fn decode(&self, isa: CheckedIsa, g: usize, k0: usize, kc: usize, out: &mut [f32]) {
        match self {
            Source::Quant(w) => decode_quant(isa, w, g, k0, kc, out),
            Source::Dense(w) => {
                let (rows, cols, data) = (w.rows(), w.cols(), w.data());
                let kv = cols.saturating_sub(k0).min(kc);
                let src: [&[f32]; GROUP_ROWS] = std::array::from_fn(|l| {
                    let r = g * GROUP_ROWS + l;
                    if r < rows {
                        &data[r * cols + k0..r * cols + k0 + kv]
                    } else {
                        &[]
                    }
                });
                let (head, tail) = out[..GROUP_ROWS * kc].split_at_mut(GROUP_ROWS * kv);
                tail.fill(0.0);
                #[cfg(target_arch = "x86_64")]
                if matches!(isa.isa(), Isa::Avx2 | Isa::Avx512) {
                    // SAFETY: `isa` is a CheckedIsa for Avx2 or Avx512, and
                    // Isa::check requires AVX2 and FMA for both.
                    unsafe { avx2::pack_rows(&src, kv, head) };
                    return;
                }
                // One k at a time: 16 reads from 16 row streams, one
                // contiguous write; rows beyond the matrix read zero.
                for (k, o) in head.chunks_exact_mut(GROUP_ROWS).enumerate() {
                    for (v, row) in o.iter_mut().zip(&src) {
                        *v = row.get(k).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }
}

fn decode_quant(isa: CheckedIsa, w: &QMatrix, g: usize, k0: usize, kc: usize, out: &mut [f32]) {
    let layout = w.layout();
    let cpl = layout.cols_per_line();
    let lines = &w.group(g)[k0 / cpl..(k0 + kc) / cpl];
    let table = w.table();
    let out = &mut out[..GROUP_ROWS * kc];
    match (isa.isa(), layout) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
        (Isa::Avx512, Layout::Nibble) => unsafe { avx512::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx512, Layout::Byte) => unsafe { avx512::decode_byte(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, Layout::Nibble) => unsafe { avx2::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, Layout::Byte) => unsafe { avx2::decode_byte(lines, table, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Isa::Neon, Layout::Nibble) => unsafe { neon::decode_nibble(lines, table, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        (Isa::Neon, Layout::Byte) => unsafe { neon::decode_byte(lines, table, out) },
        _ => {
            for (li, line) in lines.iter().enumerate() {
                for j in 0..cpl {
                    let k = li * cpl + j;
                    for (l, i) in line_indices(line, layout, j).into_iter().enumerate() {
                        out[k * GROUP_ROWS + l] = table[usize::from(i)];
                    }
                }
            }
        }
    }
}
