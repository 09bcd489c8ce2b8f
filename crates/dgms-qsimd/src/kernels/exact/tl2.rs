//! The 2-bit table-lookup GEMV for codebooks of K <= 4 (in the manner of
//! T-MAC / TL1): [`QMatrix2`] stores one 4-bit *pair index* `4 i + j` per
//! row and pair of columns `(2p, 2p + 1)` (`i`, `j` the two weights'
//! codebook indices), and [`gemv_2bit`] looks the pair's contribution up
//! in a 16-entry table of partial sums built once per call from the
//! activations:
//!
//! ```text
//! T_p[4 i + j] = fl(fl(c[i] * x[2p]) + fl(c[j] * x[2p + 1]))
//! y[r]         = sum over p of T_p[pair index of (r, p)]
//! ```
//!
//! so a SIMD kernel spends one permute and one add per row and pair (two
//! weights) instead of a decode and an FMA per weight.
//!
//! # Layout
//!
//! The 64-byte [`Line`] layout of [`crate::kernels::layout`], with pairs in
//! place of columns: rows in groups of 16, dword `l` of a line belongs to
//! row `16 g + l`, and its 8 nibbles (bits `4n..4n+3`) are the pair indices
//! of pairs `8 m + n` for the group's line `m` (16 columns per line).
//! Columns are padded to a multiple of 16 and rows to a multiple of 16 with
//! index 0 (padded activations are 0, so padded pairs add table entries
//! that are exactly 0). The lines are stored column block by column block
//! ([`BLOCK_LINES`] lines of every group, group after group), so that the
//! kernel, which runs blocks outermost to keep a block's tables in L1,
//! streams the weights of a thread's run of groups contiguously: with
//! group-major lines (a 2 KiB run per group and block, then a jump) the
//! 4096 x 4096 GEMV took 0.47 instead of 0.38 ms on one thread.
//!
//! # Summation order and error bound
//!
//! Every ISA uses the same tables, built by [`pair_tables`] in portable
//! code (two rounded products and a rounded sum, no FMA), so the ISAs
//! differ only in the order in which each row's table entries are added:
//! the scalar kernel (`Isa::Scalar`, the oracle) adds them in pair order;
//! the SIMD kernels keep 8 (AVX-512) or 4 (AVX2, NEON) partial sums per
//! row, by pair modulo 8 or 4, over a block of [`BLOCK_LINES`] lines,
//! add those as a tree and add the block's sum to the row's running sum
//! in block order (the portable block kernel, for an ISA without one,
//! adds in pair order per block). With `u = 2^-24`, `P` the padded pair count
//! (`cols` rounded up to 16, halved), `gamma(n) = n u / (1 - n u)` and
//! `M(r) = sum over c of |c[idx(r, c)] * x[c]|`, every ISA's result obeys
//!
//! ```text
//! |y[r] - sum over c of c[idx(r, c)] * x[c]| <= gamma(P + 1) * M(r)
//! ```
//!
//! (each table entry is within `(1 + u)^2 - 1` of its exact value relative
//! to its terms' magnitudes, and any summation tree over `P` entries adds
//! at most `P - 1` further roundings to each; the tests check this bound
//! against an f64 reference).

use crate::error::{QsimdError, Result};
use crate::kernels::checks::check_len;
use crate::kernels::exact::gemv::split_rows;
use crate::kernels::exact::simd;
use crate::kernels::isa::{CheckedIsa, Isa};
use crate::kernels::layout::{validate_indices, Line, GROUP_ROWS};

/// Columns per line: 8 pair indices of 4 bits per row.
pub const COLS_PER_LINE: usize = 16;
/// Pairs per line (nibbles of a dword).
const PAIRS_PER_LINE: usize = 8;
/// Table entries per pair.
const TABLE_LEN: usize = 16;
/// Lines per column block: the block's tables (8 pairs x 64 bytes per
/// line, 16 KiB) stay in L1 while every row group of a thread streams its
/// part of the block's weights. 32 and 64 lines measured alike here
/// (0.25-0.27 ms for 4096 x 4096 on one AVX-512 thread), 16 and 128
/// (64 KiB of tables, past L1) slower (up to 0.33 ms).
pub(crate) const BLOCK_LINES: usize = 32;

/// A rows x cols matrix over a codebook of at most 4 entries, stored for
/// [`gemv_2bit`] as one 4-bit pair index `4 i + j` per row and column pair
/// `(2p, 2p + 1)` (`i`, `j` the two weights' codebook indices): 8 pairs of
/// a row per dword, 16 rows per 64-byte line, columns padded to 16 and
/// rows to 16 with index 0.
#[derive(Clone, Debug)]
pub struct QMatrix2 {
    rows: usize,
    cols: usize,
    k: usize,
    /// The K entries, zero-padded to 4.
    codebook: [f32; 4],
    /// `groups * lines_per_group` lines, in the order of
    /// [`QMatrix2::line_at`].
    lines: Vec<Line>,
}

impl QMatrix2 {
    /// Builds the matrix from row-major indices (one per byte) and a codebook
    /// of K = `codebook.len()` finite values, K <= 4. Errors as
    /// [`crate::kernels::QMatrix::new`] does (empty shape, index count, a
    /// non-finite entry, index >= K), and with
    /// [`QsimdError::InvalidCodebook`] for K > 4.
    pub fn new(rows: usize, cols: usize, indices: &[u8], codebook: &[f32]) -> Result<QMatrix2> {
        let k = validate_indices("QMatrix2::new", rows, cols, indices, codebook)?;
        if k > 4 {
            return Err(QsimdError::InvalidCodebook {
                reason: format!(
                    "K = {k} entries: the 2-bit layout holds at most 4 (use QMatrix for K <= 256)"
                ),
            });
        }
        let mut cb = [0.0f32; 4];
        cb[..k].copy_from_slice(codebook);
        let lpg = cols.div_ceil(COLS_PER_LINE);
        let groups = rows.div_ceil(GROUP_ROWS);
        let mut w = QMatrix2 {
            rows,
            cols,
            k,
            codebook: cb,
            lines: vec![Line([0; 64]); groups * lpg],
        };
        for (r, row) in indices.chunks_exact(cols).enumerate() {
            let (g, l) = (r / GROUP_ROWS, r % GROUP_ROWS);
            for (p, pair) in row.chunks(2).enumerate() {
                let nib = pair[0] * 4 + pair.get(1).copied().unwrap_or(0);
                let n = p % PAIRS_PER_LINE;
                let line = w.line_at(g, p / PAIRS_PER_LINE);
                w.lines[line].0[4 * l + n / 2] |= nib << (4 * (n % 2));
            }
        }
        Ok(w)
    }

    /// Number of rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Number of codebook entries K (1..=4).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The K codebook values.
    pub fn codebook(&self) -> &[f32] {
        &self.codebook[..self.k]
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
        let nib = self.pair_index(row, col / 2);
        Some(if col.is_multiple_of(2) {
            nib >> 2
        } else {
            nib & 3
        })
    }

    /// The decoded weight at (`row`, `col`), or `None` outside the matrix.
    pub fn weight(&self, row: usize, col: usize) -> Option<f32> {
        self.index(row, col).map(|i| self.codebook[usize::from(i)])
    }

    /// All indices, row-major (what [`QMatrix2::new`] was given).
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
            .map(|i| self.codebook[usize::from(i)])
            .collect()
    }

    /// The pair index `4 i + j` of row `row` (< rows) and pair `p` (< padded pairs).
    fn pair_index(&self, row: usize, p: usize) -> u8 {
        let (g, l) = (row / GROUP_ROWS, row % GROUP_ROWS);
        let n = p % PAIRS_PER_LINE;
        let byte = self.lines[self.line_at(g, p / PAIRS_PER_LINE)].0[4 * l + n / 2];
        (byte >> (4 * (n % 2))) & 0x0F
    }

    /// Where line `m` of row group `g` is stored: column block by column
    /// block ([`BLOCK_LINES`] lines, the last one fewer), and within a
    /// block group after group, so a thread's part of a block (a run of
    /// groups) is one contiguous stream.
    fn line_at(&self, g: usize, m: usize) -> usize {
        let groups = self.rows.div_ceil(GROUP_ROWS);
        let (b, mb) = (m / BLOCK_LINES, m % BLOCK_LINES);
        let nl = BLOCK_LINES.min(self.lines_per_group() - b * BLOCK_LINES);
        groups * b * BLOCK_LINES + g * nl + mb
    }

    fn lines_per_group(&self) -> usize {
        self.cols.div_ceil(COLS_PER_LINE)
    }

    /// Padded pair count: 8 per line.
    fn pairs(&self) -> usize {
        self.lines_per_group() * PAIRS_PER_LINE
    }
}

/// One pair's 16 table entries, 64-byte aligned so that every SIMD load
/// of a table stays in one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct PairTable(pub(crate) [f32; TABLE_LEN]);

/// The pair tables of `x` (zero-padded to `2 * pairs`): `T_p[4 i + j] =
/// fl(fl(cb[i] * x[2p]) + fl(cb[j] * x[2p + 1]))`, pair after pair.
/// Portable code shared by every ISA, so all of them add the same values.
pub(crate) fn pair_tables(cb: &[f32; 4], x: &[f32], pairs: usize) -> Vec<PairTable> {
    let mut out = vec![PairTable([0.0; TABLE_LEN]); pairs];
    let full = x.len() / 2;
    for (t, xs) in out.iter_mut().zip(x.chunks_exact(2)) {
        fill_table(&mut t.0, cb, xs[0], xs[1]);
    }
    if x.len() % 2 == 1 {
        fill_table(&mut out[full].0, cb, x[x.len() - 1], 0.0);
    }
    out
}

#[inline(always)]
fn fill_table(t: &mut [f32; TABLE_LEN], cb: &[f32; 4], x0: f32, x1: f32) {
    let a = cb.map(|c| c * x0);
    let b = cb.map(|c| c * x1);
    for (ti, ai) in t.chunks_exact_mut(4).zip(a) {
        for (tij, bj) in ti.iter_mut().zip(b) {
            *tij = ai + bj;
        }
    }
}

/// y = W x with the decoded weights of a 2-bit [`QMatrix2`] (`x`: cols,
/// `y`: rows), by table lookup.
///
/// Per call, 16-entry tables `T_p[4 i + j] = fl(fl(c[i] x[2p]) +
/// fl(c[j] x[2p + 1]))` (built in portable code, the same on every ISA);
/// `y[r]` is the sum of row `r`'s entries `T_p[4 idx(r, 2p) + idx(r, 2p +
/// 1)]`, in pair order on `Isa::Scalar`, as partial sums per column block
/// (added in block order) on the SIMD ISAs. On every ISA,
///
/// ```text
/// |y[r] - sum over c of c[idx(r, c)] x[c]| <= gamma(P + 1) * sum over c of |c[idx(r, c)] x[c]|
/// ```
///
/// with `P` = cols rounded up to 16, halved, `gamma(n) = n u / (1 - n u)`
/// and `u = 2^-24`.
pub fn gemv_2bit(isa: Isa, w: &QMatrix2, x: &[f32], y: &mut [f32]) -> Result<()> {
    let isa = isa.check()?;
    check_len("gemv_2bit", "x (cols)", x.len(), w.cols())?;
    check_len("gemv_2bit", "y (rows)", y.len(), w.rows())?;
    let tables = pair_tables(&w.codebook, x, w.pairs());
    if isa.isa() == Isa::Scalar {
        scalar(w, &tables, y);
    } else {
        blocked(w, &tables, y, |lines, nl, tb, acc| {
            block(isa, lines, nl, tb, acc)
        });
    }
    Ok(())
}

/// The oracle: each row's table entries added in pair order.
fn scalar(w: &QMatrix2, tables: &[PairTable], y: &mut [f32]) {
    for (r, yr) in y.iter_mut().enumerate() {
        let mut s = 0.0f32;
        for (p, t) in tables.iter().enumerate() {
            s += t.0[usize::from(w.pair_index(r, p))];
        }
        *yr = s;
    }
}

/// The SIMD driver: rows split over rayon in runs of 16-row groups; per
/// thread, column blocks of [`BLOCK_LINES`] lines outermost, so one
/// block's tables serve every group of the thread from L1.
/// `kernel` is [`block`] (or, in the unit tests, [`portable_block`]).
fn blocked<K>(w: &QMatrix2, tables: &[PairTable], y: &mut [f32], kernel: K)
where
    K: Fn(&[Line], usize, &[PairTable], &mut [f32]) + Sync,
{
    let block_tables = BLOCK_LINES * PAIRS_PER_LINE;
    split_rows(y, GROUP_ROWS, w.rows() * w.cols(), |r0, ys| {
        let g0 = r0 / GROUP_ROWS;
        let mut sums = vec![0.0f32; ys.len().div_ceil(GROUP_ROWS) * GROUP_ROWS];
        for (b, tb) in tables.chunks(block_tables).enumerate() {
            let nl = tb.len() / PAIRS_PER_LINE;
            for (gi, acc) in sums.chunks_exact_mut(GROUP_ROWS).enumerate() {
                // This group's lines of the block (and those after them).
                let lines = &w.lines[w.line_at(g0 + gi, b * BLOCK_LINES)..];
                kernel(lines, nl, tb, acc);
            }
        }
        for (yg, s) in ys.chunks_mut(GROUP_ROWS).zip(sums.chunks_exact(GROUP_ROWS)) {
            yg.copy_from_slice(&s[..yg.len()]);
        }
    });
}

/// `acc[16] +=` the sums of the first `nl` lines of `lines` (one row
/// group's part of a block) over the block's tables `tb`.
fn block(isa: CheckedIsa, lines: &[Line], nl: usize, tb: &[PairTable], acc: &mut [f32]) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is a CheckedIsa: Isa::check found AVX-512 F/BW/VL (and AVX2, FMA) on this CPU.
        Isa::Avx512 => unsafe { simd::tl2::gemv_block_avx512(lines, nl, tb, acc) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Isa::Avx2 => unsafe { simd::tl2::gemv_block_avx2(lines, nl, tb, acc) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above, for NEON.
        Isa::Neon => unsafe { simd::tl2::gemv_block_neon(lines, nl, tb, acc) },
        _ => portable_block(lines, nl, tb, acc),
    }
}

/// The block kernel in portable code (an ISA without its own kernel).
fn portable_block(lines: &[Line], nl: usize, tb: &[PairTable], acc: &mut [f32]) {
    for (l, a) in acc.iter_mut().enumerate().take(GROUP_ROWS) {
        let mut s = 0.0f32;
        for (line, t) in lines[..nl].iter().zip(tb.chunks_exact(PAIRS_PER_LINE)) {
            for (n, tn) in t.iter().enumerate() {
                let nib = (line.0[4 * l + n / 2] >> (4 * (n % 2))) & 0x0F;
                s += tn.0[usize::from(nib)];
            }
        }
        *a += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable block kernel (only run on targets without a SIMD
    /// kernel) agrees with the scalar oracle through the blocked driver,
    /// over several column blocks, ragged rows and an odd column count.
    #[test]
    fn portable_block_matches_scalar() {
        for (rows, cols) in [(1, 1), (17, 3), (40, 1201), (300, 555)] {
            let mut s = 0x2545_F491_4F6C_DD1Du64;
            let mut next = || {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            };
            let idx: Vec<u8> = (0..rows * cols).map(|_| (next() % 4) as u8).collect();
            let x: Vec<f32> = (0..cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let w = QMatrix2::new(rows, cols, &idx, &[0.0, 0.5, -0.25, 1.5]).unwrap();
            let tables = pair_tables(&w.codebook, &x, w.pairs());
            let (mut want, mut got) = (vec![0.0; rows], vec![f32::NAN; rows]);
            scalar(&w, &tables, &mut want);
            blocked(&w, &tables, &mut got, portable_block);
            for (r, (g, e)) in got.iter().zip(&want).enumerate() {
                let mag: f32 = (0..cols)
                    .map(|c| (w.weight(r, c).unwrap() * x[c]).abs())
                    .sum();
                assert!(
                    (g - e).abs() <= 1e-5 * mag + 1e-6,
                    "{rows}x{cols} row {r}: {g} vs {e}"
                );
            }
        }
    }
}
