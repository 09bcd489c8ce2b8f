//! The weight matrix of the int8 kernels.
//!
//! The codebook is mapped to int8 with one per-layer scale
//! s_w = max|c_k| / 127 (q_k = round(c_k / s_w), so an entry 0.0 stays 0 and
//! -128 never occurs). Rows are grouped by 16 into runs of 64-byte [`Line`]s
//! as in [`QMatrix`]: dword `l` of a line belongs to row `16g + l`.
//! The bytes of a dword are 4 consecutive columns, which is what the
//! dot-product instructions (`vpmaddubsw`, `vpdpbusd`, `sdot`) reduce:
//! - 4-bit layout (K <= 16): a line holds 8 columns; byte `b` has column
//!   `b` in its low nibble and column `b + 4` in its high one, so one mask
//!   (or one shift) and one 16-entry byte shuffle give the int8 weights of
//!   4 consecutive columns for all 16 rows.
//! - 8-bit layout (K > 16): a line holds 4 columns of int8 weights as they
//!   are (a 256-entry table does not fit a register).
//!
//! Columns are padded to a multiple of 8 and rows to a multiple of 16 with
//! weight 0.

use super::quant::{quant, scales};
use crate::error::{QsimdError, Result};
use crate::kernels::exact::matrix::QMatrix;
use crate::kernels::layout::{validate_indices, Layout, Line, COL_ALIGN, GROUP_ROWS};

/// Most columns an int8 matrix may have: |sum of q_w q_x| <= cols * 127^2
/// must fit the i32 accumulators (131072 * 16129 < 2^31).
pub const MAX_COLS_I8: usize = 1 << 17;

/// A rows x cols matrix of int8 codebook weights in the int8 kernel layout.
#[derive(Clone, Debug)]
pub struct QMatrixI8 {
    rows: usize,
    cols: usize,
    cols_pad: usize,
    layout: Layout,
    scale: f32,
    /// The K int8 codebook entries.
    codebook: Vec<i8>,
    /// The first 16 entries, zero-padded: the in-register table.
    table: [i8; 16],
    lines: Vec<Line>,
    /// Sum of each row's int8 weights over the padded columns (padded
    /// rows: 0), for kernels that offset activations to unsigned.
    row_sums: Vec<i32>,
}

impl QMatrixI8 {
    /// Builds the matrix from row-major indices (one per byte) and a codebook
    /// of K = `codebook.len()` finite values (1..=256), like
    /// [`QMatrix::new`]; at most [`MAX_COLS_I8`] columns.
    pub fn new(rows: usize, cols: usize, indices: &[u8], codebook: &[f32]) -> Result<QMatrixI8> {
        const OP: &str = "QMatrixI8::new";
        if rows == 0 || cols == 0 {
            return Err(QsimdError::EmptyMatrix { rows, cols });
        }
        if cols > MAX_COLS_I8 {
            return Err(QsimdError::InvalidGeometry {
                op: OP,
                reason: format!("{cols} columns exceed {MAX_COLS_I8} (i32 accumulators)"),
            });
        }
        let k = validate_indices(OP, rows, cols, indices, codebook)?;
        let max = codebook.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (inv, scale) = scales(max, false, 1.0);
        let qcb: Vec<i8> = codebook.iter().map(|&c| quant(c, inv)).collect();
        let mut table = [0i8; 16];
        for (t, &q) in table.iter_mut().zip(&qcb) {
            *t = q;
        }
        let layout = if k <= 16 {
            Layout::Nibble
        } else {
            Layout::Byte
        };
        let cols_pad = cols.div_ceil(COL_ALIGN) * COL_ALIGN;
        let groups = rows.div_ceil(GROUP_ROWS);
        let cpl = layout.cols_per_line();
        let lpg = cols_pad / cpl;
        let mut lines = vec![Line([0; 64]); groups * lpg];
        let mut row_sums = vec![0i32; groups * GROUP_ROWS];
        for (r, row) in indices.chunks_exact(cols).enumerate() {
            let (g, l) = (r / GROUP_ROWS, r % GROUP_ROWS);
            for (c, &idx) in row.iter().enumerate() {
                let line = &mut lines[g * lpg + c / cpl].0;
                let j = c % cpl;
                match layout {
                    Layout::Nibble => line[4 * l + j % 4] |= idx << (4 * (j / 4)),
                    Layout::Byte => line[4 * l + j] = qcb[usize::from(idx)] as u8,
                }
                row_sums[r] += i32::from(qcb[usize::from(idx)]);
            }
            // Padded columns of a 4-bit line decode to entry 0, which the
            // offset kernels multiply by 128 (signed ones by 0).
            if layout == Layout::Nibble {
                row_sums[r] += (cols_pad - cols) as i32 * i32::from(qcb[0]);
            }
        }
        Ok(QMatrixI8 {
            rows,
            cols,
            cols_pad,
            layout,
            scale,
            codebook: qcb,
            table,
            lines,
            row_sums,
        })
    }

    /// The int8 form of an exact kernel matrix (same indices and codebook).
    pub fn from_qmatrix(w: &QMatrix) -> Result<QMatrixI8> {
        QMatrixI8::new(w.rows(), w.cols(), &w.to_indices(), w.codebook())
    }

    /// Number of rows (output features / channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features / C*kh*kw).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of codebook entries K.
    pub fn k(&self) -> usize {
        self.codebook.len()
    }

    /// The storage layout chosen from K (4-bit indices, or int8 weights).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The weight scale s_w: weight = s_w * int8 weight (0 for an all-zero
    /// codebook).
    pub fn weight_scale(&self) -> f32 {
        self.scale
    }

    /// The K int8 codebook entries.
    pub fn codebook_i8(&self) -> &[i8] {
        &self.codebook
    }

    /// Bytes of weight storage (including padding), for size reports.
    pub fn storage_bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// The int8 weight at (`row`, `col`), or `None` outside the matrix.
    pub fn weight_i8(&self, row: usize, col: usize) -> Option<i8> {
        if row >= self.rows || col >= self.cols {
            return None;
        }
        let cpl = self.layout.cols_per_line();
        let line = &self.group(row / GROUP_ROWS)[col / cpl].0;
        let (l, j) = (row % GROUP_ROWS, col % cpl);
        Some(match self.layout {
            Layout::Nibble => {
                self.table[usize::from((line[4 * l + j % 4] >> (4 * (j / 4))) & 0x0F)]
            }
            Layout::Byte => line[4 * l + j] as i8,
        })
    }

    /// The dequantized weight s_w * q at (`row`, `col`).
    pub fn weight(&self, row: usize, col: usize) -> Option<f32> {
        self.weight_i8(row, col).map(|q| f32::from(q) * self.scale)
    }

    /// All int8 weights, row-major.
    pub fn to_i8(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend((0..self.cols).map(|c| self.weight_i8(r, c).unwrap_or(0)));
        }
        out
    }

    pub(crate) fn cols_pad(&self) -> usize {
        self.cols_pad
    }

    /// The 16-entry int8 table (4-bit layout).
    pub(crate) fn table(&self) -> &[i8; 16] {
        &self.table
    }

    /// Row sums of the int8 weights, padded to whole groups.
    pub(crate) fn row_sums(&self) -> &[i32] {
        &self.row_sums
    }

    /// The lines of row group `g`.
    pub(crate) fn group(&self, g: usize) -> &[Line] {
        let lpg = self.cols_pad / self.layout.cols_per_line();
        &self.lines[g * lpg..(g + 1) * lpg]
    }
}
