//! One layer of the exact k-means DP: its rows by divide and conquer over
//! monotone argmins, reading the previous layer ([`Prev`]) and writing
//! [`RowsOut`].

use super::scan::{Columns, Leftmost};
use super::Side;

/// Row ranges at least this long are split across rayon tasks.
const PAR_ROWS: usize = 1 << 14;

/// Row ranges this short are scanned row by row instead of split.
const LEAF_ROWS: usize = 16;

/// The previous layer as one layer's rows read it.
pub(super) struct Prev<'a> {
    /// Its row `D_{j-1}(0..=L)`.
    pub(super) cost: &'a [f64],
    pub(super) columns: Columns<'a>,
    pub(super) side: &'a Side,
}

impl Prev<'_> {
    /// Least `D_{j-1}(t) + cost(t, i)` over `t` in `lo..=hi`, `t <= i`, the
    /// leftmost on ties: `t < i` scanned, `t = i` (the empty last cluster,
    /// cost 0) checked apart.
    pub(super) fn least(&self, i: usize, lo: usize, hi: usize) -> (f64, usize) {
        let end = (hi + 1).min(i);
        let (mut best, mut at) = match end > lo {
            true => {
                let (v, t) = self.columns.least(i, lo, end);
                (v + self.side.s2[i], t)
            }
            false => (f64::INFINITY, lo),
        };
        if hi >= i && self.cost[i] < best {
            (best, at) = (self.cost[i], i);
        }
        (best, at)
    }
}

/// Where one layer's rows go: `D_j(i)`, `D_j(i) - s2[i]` (the next layer's
/// scan frame, written here while the row is in cache rather than in a pass
/// of its own) and the argmin, for a range of rows.
pub(super) struct RowsOut<'a> {
    pub(super) cost: &'a mut [f64],
    pub(super) less: &'a mut [f64],
    pub(super) arg: &'a mut [u32],
}

impl<'a> RowsOut<'a> {
    pub(super) fn len(&self) -> usize {
        self.cost.len()
    }

    /// Rows `..mid` and `mid + 1..` (row `mid` is written by the caller).
    pub(super) fn split_around(self, mid: usize) -> (Self, Self) {
        let (c_lo, c_hi) = self.cost.split_at_mut(mid);
        let (l_lo, l_hi) = self.less.split_at_mut(mid);
        let (a_lo, a_hi) = self.arg.split_at_mut(mid);
        let lo = RowsOut {
            cost: c_lo,
            less: l_lo,
            arg: a_lo,
        };
        let hi = RowsOut {
            cost: &mut c_hi[1..],
            less: &mut l_hi[1..],
            arg: &mut a_hi[1..],
        };
        (lo, hi)
    }

    /// Writes local row `r` (global `i`) and returns its split candidate,
    /// `D_j(i)` plus the zero cluster's cost of the rest of the side.
    pub(super) fn set(
        &mut self,
        side: &Side,
        r: usize,
        i: usize,
        (best, at): (f64, usize),
    ) -> (f64, usize) {
        self.cost[r] = best;
        self.less[r] = best - side.s2[i];
        self.arg[r] = at as u32;
        (best + side.zero_cost(i), i)
    }
}

/// Row ranges of about this many rows are read through once, in order,
/// before their divide and conquer (see [`warm`]).
const CHUNK_ROWS: usize = 2048;

/// Reads the data of rows `row0..row0 + out.len()` and of a narrow enough
/// column window in order, so the hardware prefetcher brings it into cache
/// at streaming speed: the divide and conquer then visits them in an order
/// no prefetcher follows, and would otherwise wait on memory at most rows.
fn warm(prev: &Prev, row0: usize, out: &RowsOut, lo: usize, hi: usize) {
    // One read per cache line (8 f64, 16 u32) is all it takes.
    let side = prev.side;
    let mut sum = 0.0;
    for i in (row0..row0 + out.len()).step_by(8) {
        sum += side.s1[i] + side.s2[i] + side.q[i] + prev.cost[i];
    }
    for r in (0..out.len()).step_by(8) {
        sum += out.cost[r] + out.less[r];
    }
    sum += out.arg.iter().step_by(16).map(|&a| a as f64).sum::<f64>();
    if hi < lo + 4 * CHUNK_ROWS {
        for t in (lo..=hi.min(prev.cost.len() - 1)).step_by(8) {
            sum += prev.columns.less[t] + side.s1[t];
        }
    }
    std::hint::black_box(sum);
}

/// Divide and conquer over rows `row0..row0 + out.len()` of one layer, whose
/// minimising columns are known to lie in `lo..=hi`: the middle row is
/// scanned, then the rows above search `lo..=its argmin` and those below
/// `its argmin..=hi` (monotone argmins, from the quadrangle inequality).
/// Returns the least split candidate of the range (see [`RowsOut::set`]),
/// the leftmost on ties.
pub(super) fn rows(prev: &Prev, row0: usize, mut out: RowsOut, lo: usize, hi: usize) -> Leftmost {
    let side = prev.side;
    let mut split = Leftmost::NONE;
    if out.len() <= CHUNK_ROWS && out.len() * 2 > CHUNK_ROWS {
        warm(prev, row0, &out, lo, hi);
    }
    if out.len() <= LEAF_ROWS {
        // Few rows: scan each in order from the previous row's argmin (the
        // argmins are monotone), saving the recursion's per-row overhead.
        let mut lo = lo;
        for r in 0..out.len() {
            let (best, at) = prev.least(row0 + r, lo, hi);
            split.take(out.set(side, r, row0 + r, (best, at)));
            lo = at;
        }
        return split;
    }
    let mid = out.len() / 2;
    let i = row0 + mid;
    let (best, at) = prev.least(i, lo, hi);
    let here = out.set(side, mid, i, (best, at));
    let (out_lo, out_hi) = out.split_around(mid);
    let (a, b) = match out_lo.len() + out_hi.len() >= PAR_ROWS {
        true => rayon::join(
            || rows(prev, row0, out_lo, lo, at),
            || rows(prev, i + 1, out_hi, at, hi),
        ),
        false => (
            rows(prev, row0, out_lo, lo, at),
            rows(prev, i + 1, out_hi, at, hi),
        ),
    };
    split = a;
    split.take(here);
    split.take((b.0, b.1));
    split
}
