//! The kernels' weight layout.
//!
//! Rows are grouped by [`GROUP_ROWS`] = 16 (one AVX-512 register of f32).
//! A group is a run of 64-byte [`Line`]s, each holding a 16-row x c-column
//! tile "column-major by dword": dword `l` (little-endian u32 at byte 4l)
//! belongs to row `16g + l`, and its nibbles (4-bit layout, c = 8) or bytes
//! (8-bit layout, c = 4) are consecutive columns. A SIMD kernel therefore
//! gets the indices of one column for 16 rows by a single shift of one
//! register, decodes them with one table lookup, and needs no horizontal
//! sums: each lane accumulates one row. Rows are padded to a multiple of 16
//! and columns to a multiple of 8 with index 0; padded columns meet zero
//! activations and padded rows are never written out.
//!
//! Both weight matrices use it: [`super::QMatrix`] (exact path: codebook
//! indices) and [`super::QMatrixI8`] (int8 path: 4-bit indices into an
//! int8 table, or the int8 weights themselves).

use crate::error::{QsimdError, Result};

/// Rows per group (lanes of one AVX-512 f32 register).
pub const GROUP_ROWS: usize = 16;
/// Columns are padded to a multiple of this (one 4-bit line).
pub const COL_ALIGN: usize = 8;

/// 64 bytes, cache-line aligned: the unit every kernel loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Line(pub [u8; 64]);

/// How indices are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 4-bit indices, 8 columns per line: K <= 16.
    Nibble,
    /// 8-bit indices, 4 columns per line: K <= 256.
    Byte,
}

impl Layout {
    /// Columns held by one line.
    pub fn cols_per_line(self) -> usize {
        match self {
            Layout::Nibble => 8,
            Layout::Byte => 4,
        }
    }

    /// Bits per stored index.
    pub fn bits(self) -> usize {
        match self {
            Layout::Nibble => 4,
            Layout::Byte => 8,
        }
    }
}

/// Checks the arguments of a matrix constructor: a nonempty `rows` x `cols`
/// shape, one index per weight, 1..=256 finite codebook entries, every
/// index < K. Returns K. Shared by [`super::QMatrix::new`] and
/// [`super::QMatrixI8::new`].
pub(crate) fn validate_indices(
    op: &'static str,
    rows: usize,
    cols: usize,
    indices: &[u8],
    codebook: &[f32],
) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Err(QsimdError::EmptyMatrix { rows, cols });
    }
    let n = rows
        .checked_mul(cols)
        .ok_or(QsimdError::EmptyMatrix { rows, cols })?;
    if indices.len() != n {
        return Err(QsimdError::ShapeMismatch {
            op,
            what: "indices",
            expected: n,
            got: indices.len(),
        });
    }
    let k = codebook.len();
    if !(1..=256).contains(&k) {
        return Err(QsimdError::InvalidCodebook {
            reason: format!("K = {k} entries, expected 1..=256"),
        });
    }
    if let Some((i, v)) = codebook.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QsimdError::InvalidCodebook {
            reason: format!("entry {i} is {v}, expected a finite value"),
        });
    }
    if let Some(pos) = indices.iter().position(|&i| usize::from(i) >= k) {
        return Err(QsimdError::InvalidIndex {
            row: pos / cols,
            col: pos % cols,
            index: indices[pos],
            k,
        });
    }
    Ok(k)
}

/// Portable decoder of one line column: the 16 rows' indices of column `j`.
#[inline(always)]
pub(crate) fn line_indices(line: &Line, layout: Layout, j: usize) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (l, o) in out.iter_mut().enumerate() {
        let d = u32::from_le_bytes([
            line.0[4 * l],
            line.0[4 * l + 1],
            line.0[4 * l + 2],
            line.0[4 * l + 3],
        ]);
        *o = match layout {
            Layout::Nibble => ((d >> (4 * j)) & 0x0F) as u8,
            Layout::Byte => ((d >> (8 * j)) & 0xFF) as u8,
        };
    }
    out
}
