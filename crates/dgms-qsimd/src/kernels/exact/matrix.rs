//! The exact path's weight matrices: [`QMatrix`] (codebook indices in
//! the line layout of [`crate::kernels::layout`], decoded inside the
//! kernels) and [`DenseMatrix`] (borrowed f32, the full-precision
//! baseline on the same kernels).

use crate::error::{QsimdError, Result};
use crate::kernels::layout::{validate_indices, Layout, Line, COL_ALIGN, GROUP_ROWS};

/// A rows x cols matrix of codebook indices in the kernel layout.
#[derive(Clone, Debug)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    cols_pad: usize,
    k: usize,
    layout: Layout,
    /// The K entries, zero-padded to 16 (4-bit) or 256 (8-bit) so table
    /// loads of a whole register stay in bounds.
    table: Vec<f32>,
    lines: Vec<Line>,
}

impl QMatrix {
    /// Builds the matrix from row-major indices (one per byte) and a codebook
    /// of K = `codebook.len()` finite values (DGMS puts 0.0 at entry 0, not
    /// required here). 4-bit layout for K <= 16, 8-bit otherwise.
    pub fn new(rows: usize, cols: usize, indices: &[u8], codebook: &[f32]) -> Result<QMatrix> {
        let k = validate_indices("QMatrix::new", rows, cols, indices, codebook)?;
        let layout = if k <= 16 {
            Layout::Nibble
        } else {
            Layout::Byte
        };
        let mut table = vec![0.0f32; if k <= 16 { 16 } else { 256 }];
        table[..k].copy_from_slice(codebook);
        let cols_pad = cols.div_ceil(COL_ALIGN) * COL_ALIGN;
        let groups = rows.div_ceil(GROUP_ROWS);
        let lpg = cols_pad / layout.cols_per_line();
        let mut lines = vec![Line([0; 64]); groups * lpg];
        for (r, row) in indices.chunks_exact(cols).enumerate() {
            let (g, l) = (r / GROUP_ROWS, r % GROUP_ROWS);
            for (c, &idx) in row.iter().enumerate() {
                let line = &mut lines[g * lpg + c / layout.cols_per_line()].0;
                let j = c % layout.cols_per_line();
                match layout {
                    Layout::Nibble => line[4 * l + j / 2] |= idx << (4 * (j % 2)),
                    Layout::Byte => line[4 * l + j] = idx,
                }
            }
        }
        Ok(QMatrix {
            rows,
            cols,
            cols_pad,
            k,
            layout,
            table,
            lines,
        })
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
        self.k
    }

    /// The K codebook values.
    pub fn codebook(&self) -> &[f32] {
        &self.table[..self.k]
    }

    /// The storage layout chosen from K.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Bytes of index storage (including padding), for size reports.
    pub fn storage_bytes(&self) -> usize {
        self.lines.len() * 64
    }

    /// The index at (`row`, `col`), or `None` outside the matrix.
    pub fn index(&self, row: usize, col: usize) -> Option<u8> {
        if row >= self.rows || col >= self.cols {
            return None;
        }
        let cpl = self.layout.cols_per_line();
        let line = &self.lines[(row / GROUP_ROWS) * self.lines_per_group() + col / cpl].0;
        let l = row % GROUP_ROWS;
        let j = col % cpl;
        Some(match self.layout {
            Layout::Nibble => (line[4 * l + j / 2] >> (4 * (j % 2))) & 0x0F,
            Layout::Byte => line[4 * l + j],
        })
    }

    /// The decoded weight at (`row`, `col`), or `None` outside the matrix.
    pub fn weight(&self, row: usize, col: usize) -> Option<f32> {
        self.index(row, col).map(|i| self.table[usize::from(i)])
    }

    /// The decoded weights of `row` into `out` (`cols` long): what
    /// [`QMatrix::weight`] gives, one line lookup per line instead of per
    /// weight (the depthwise kernels' taps).
    pub(crate) fn decode_row(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows && out.len() == self.cols);
        let first = (row / GROUP_ROWS) * self.lines_per_group();
        let l = row % GROUP_ROWS;
        let cpl = self.layout.cols_per_line();
        for (chunk, line) in out.chunks_mut(cpl).zip(&self.lines[first..]) {
            for (j, o) in chunk.iter_mut().enumerate() {
                let i = match self.layout {
                    Layout::Nibble => (line.0[4 * l + j / 2] >> (4 * (j % 2))) & 0x0F,
                    Layout::Byte => line.0[4 * l + j],
                };
                *o = self.table[usize::from(i)];
            }
        }
    }

    /// All indices, row-major (what [`QMatrix::new`] was given).
    pub fn to_indices(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            out.extend((0..self.cols).map(|c| self.index(r, c).unwrap_or(0)));
        }
        out
    }

    /// All decoded weights, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        self.to_indices()
            .into_iter()
            .map(|i| self.table[usize::from(i)])
            .collect()
    }

    pub(crate) fn cols_pad(&self) -> usize {
        self.cols_pad
    }

    pub(crate) fn lines_per_group(&self) -> usize {
        self.cols_pad / self.layout.cols_per_line()
    }

    /// The padded table: 16 entries (4-bit) or 256 (8-bit).
    pub(crate) fn table(&self) -> &[f32] {
        &self.table
    }

    /// The lines of row group `g`.
    pub(crate) fn group(&self, g: usize) -> &[Line] {
        let lpg = self.lines_per_group();
        &self.lines[g * lpg..(g + 1) * lpg]
    }
}

/// A borrowed row-major f32 matrix: the full-precision baseline (and the
/// engine's unquantized layers) on the same kernels.
#[derive(Clone, Copy, Debug)]
pub struct DenseMatrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> DenseMatrix<'a> {
    /// Wraps `data` (rows x cols, row-major).
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<DenseMatrix<'a>> {
        if rows == 0 || cols == 0 {
            return Err(QsimdError::EmptyMatrix { rows, cols });
        }
        let n = rows
            .checked_mul(cols)
            .ok_or(QsimdError::EmptyMatrix { rows, cols })?;
        if data.len() != n {
            return Err(QsimdError::ShapeMismatch {
                op: "DenseMatrix::new",
                what: "data",
                expected: n,
                got: data.len(),
            });
        }
        Ok(DenseMatrix { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, row-major.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
}
