//! The inner loop of the exact k-means DP: the least
//! `prev[t] + cost(t, i)` over a window of columns `t` for one row `i`.
//!
//! Almost all of the initialisation's time is spent here. Two things make
//! it fast:
//!
//! - **Pruning by blocks.** `prev` (the previous layer's row `D_{j-1}`) is
//!   non-decreasing in `t` (one more weight never makes the best clustering
//!   cheaper) and `cost(t, i)` is non-increasing in `t` (fewer weights), so
//!   over a block of columns `[a, b]` every value is at least
//!   `prev[a] + cost(b, i)`. A wide window first evaluates that bound per
//!   block of [`BLOCK`] columns from small per-block arrays, scans the block
//!   with the least bound, and then only the blocks whose bound does not
//!   exceed the best value found. Far from the minimum the bound is far
//!   above it, so most of a wide window is never read: the wide windows at
//!   the top of the divide and conquer stop streaming the side's arrays
//!   from memory.
//! - **Independent chains.** The column loop keeps [`ACCUMULATORS`]
//!   running minima, merged at the end.
//!
//! What was tried and measured not to pay (one thread, ResNet-18's convs):
//! the loop compiled per ISA through `pulp` (AVX2 instead of SSE2) changed
//! nothing measurable. Most of the time is per row (78 M rows, ~10 columns
//! each after pruning), not per column.
//!
//! Values are kept in the frame `prev[t] - s2[t] - d1^2 / (i - t)`, i.e.
//! `prev[t] + cost(t, i) - s2[i]`: the caller adds `s2[i]` after the minimum.

/// Columns per pruning block.
pub(super) const BLOCK: usize = 32;

/// Windows at least this wide are pruned by blocks; narrower ones are
/// scanned column by column (the bounds would cost more than they save).
const PRUNE_COLUMNS: usize = 4 * BLOCK;

/// Independent running minima in the column loop: one compare-and-select
/// chain would make every column wait for the previous one.
const ACCUMULATORS: usize = 4;

/// What a row's scan reads: the previous layer in the value frame, the
/// side's prefix sums and per-block summaries. Built once per layer.
pub(super) struct Columns<'a> {
    /// `prev[t] - s2[t]` for every column.
    pub less: &'a [f64],
    /// `prev[b * BLOCK]`: the least `prev` over block `b`.
    pub block_first: &'a [f64],
    /// Prefix sums of the side's centred weights.
    pub s1: &'a [f64],
    /// `s1` and `s2` at each block's last column.
    pub block_s1: &'a [f64],
    pub block_s2: &'a [f64],
    /// `recip[first + t] = 1 / (i - t)` with `first = s1.len() - i`.
    pub recip: &'a [f64],
    /// Rounding allowance of the bound (a block is pruned only when its
    /// bound exceeds the best value by more than this).
    pub tol: f64,
}

/// A running leftmost minimum `(value, column)`.
#[derive(Clone, Copy)]
pub(super) struct Leftmost(pub f64, pub usize);

impl Leftmost {
    /// Nothing yet.
    pub(super) const NONE: Self = Leftmost(f64::INFINITY, usize::MAX);

    pub(super) fn take(&mut self, (v, t): (f64, usize)) {
        if v < self.0 || (v == self.0 && t < self.1) {
            *self = Leftmost(v, t);
        }
    }
}

impl Columns<'_> {
    /// Least value over columns `lo..end` of row `i` (`lo < end <= i`) and
    /// its column, the leftmost on ties, in the frame of the module docs.
    pub(super) fn least(&self, i: usize, lo: usize, end: usize) -> (f64, usize) {
        let (b0, b1) = (lo.div_ceil(BLOCK), end / BLOCK);
        if end - lo < PRUNE_COLUMNS || b1 < b0 + 2 {
            return self.run(i, lo, end);
        }
        let a1 = self.s1[i];
        let first = self.s1.len() - i;
        // Bound of block b: prev at its first column plus cost at its last.
        let bound = |b: usize| {
            let last = b * BLOCK + BLOCK - 1;
            let d1 = a1 - self.block_s1[b];
            self.block_first[b] - self.block_s2[b] - d1 * d1 * self.recip[first + last]
        };
        let mut best = Leftmost::NONE;
        if lo < b0 * BLOCK {
            best.take(self.run(i, lo, b0 * BLOCK));
        }
        if b1 * BLOCK < end {
            best.take(self.run(i, b1 * BLOCK, end));
        }
        let start = (b0..b1)
            .min_by(|&a, &b| bound(a).total_cmp(&bound(b)))
            .unwrap_or(b0);
        best.take(self.run(i, start * BLOCK, start * BLOCK + BLOCK));
        // The other blocks whose bound reaches the best value, consecutive
        // ones scanned as one run.
        let mut run_from = None;
        for b in b0..=b1 {
            let scan = b < b1 && b != start && bound(b) <= best.0 + self.tol;
            match (scan, run_from) {
                (true, None) => run_from = Some(b),
                (false, Some(r)) => {
                    best.take(self.run(i, r * BLOCK, b * BLOCK));
                    run_from = None;
                }
                _ => {}
            }
        }
        (best.0, best.1)
    }

    /// Every column of `lo..end`, without pruning (for tests).
    #[cfg(test)]
    pub(super) fn full(&self, i: usize, lo: usize, end: usize) -> (f64, usize) {
        self.run(i, lo, end)
    }

    /// Every column of `lo..end` (non-empty).
    fn run(&self, i: usize, lo: usize, end: usize) -> (f64, usize) {
        let first = self.s1.len() - i;
        let (v, k) = scan_columns(
            self.s1[i],
            &self.less[lo..end],
            &self.s1[lo..end],
            &self.recip[first + lo..first + end],
        );
        (v, lo + k)
    }
}

/// Least `p[t] - (a1 - x1[t])^2 * inv[t]` over `t` and its index, the
/// first on ties (`(inf, 0)` when nothing is below infinity). Column `t`
/// goes to accumulator `t % ACCUMULATORS` (the tail to the first); each
/// keeps its first minimum, and the merge takes the least value, then the
/// least index.
#[inline(always)]
fn scan_columns(a1: f64, p: &[f64], x1: &[f64], inv: &[f64]) -> (f64, usize) {
    const A: usize = ACCUMULATORS;
    let value = |t: usize| {
        let d1 = a1 - x1[t];
        p[t] - d1 * d1 * inv[t]
    };
    let mut low = [f64::INFINITY; A];
    let mut arg = [usize::MAX; A];
    let whole = p.len() / A * A;
    for t0 in (0..whole).step_by(A) {
        for k in 0..A {
            let v = value(t0 + k);
            if v < low[k] {
                (low[k], arg[k]) = (v, t0 + k);
            }
        }
    }
    for t in whole..p.len() {
        let v = value(t);
        if v < low[0] || (v == low[0] && t < arg[0]) {
            (low[0], arg[0]) = (v, t);
        }
    }
    let mut best = Leftmost::NONE;
    for k in 0..A {
        best.take((low[k], arg[k]));
    }
    match best.1 {
        usize::MAX => (f64::INFINITY, 0),
        at => (best.0, at),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Side, SideDp};
    use crate::workloads;

    /// The block-pruned scan finds what scanning every column finds (the
    /// same least value and the same leftmost column), on real layers'
    /// rows and on windows of every width, including the wide ones it
    /// prunes.
    #[test]
    fn pruned_scan_equals_the_full_scan() {
        for (case, spread) in [(0u64, 0.1f64), (1, 0.02), (2, 1.0)] {
            let mut x: Vec<f64> = workloads::normal_weights(6000, spread, case)
                .iter()
                .map(|&w| (w as f64).abs())
                .collect();
            if case == 1 {
                // Many equal weights: ties between columns.
                x.iter_mut().for_each(|w| *w = (*w * 500.0).round() / 500.0);
            }
            x.sort_by(f64::total_cmp);
            let side = Side::new(&x);
            let mut dp = SideDp::new(&side);
            for _ in 0..3 {
                dp.extend();
                let columns = side.columns(&dp.less, &dp.block_first);
                let l = side.len();
                let mut checked = 0;
                for i in (1..=l).step_by(37) {
                    for lo in [0, i / 7, i / 3, i / 2, i.saturating_sub(300)] {
                        for end in [i, (lo + i) / 2 + 1, lo + 200, lo + 129] {
                            if lo >= end || end > i {
                                continue;
                            }
                            let fast = columns.least(i, lo, end);
                            let full = columns.full(i, lo, end);
                            assert_eq!(fast, full, "case {case} row {i} window {lo}..{end}");
                            checked += 1;
                        }
                    }
                }
                assert!(checked > 500);
            }
        }
    }
}
