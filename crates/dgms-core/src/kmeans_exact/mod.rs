//! Exact 1-D k-means with one centre fixed at 0: the clustering that
//! minimises the error the mixture sees at initialisation,
//!
//! ```text
//!   E(mu_1..mu_{K-1}) = sum_w min_{c in {0, mu_1, .., mu_{K-1}}} (w - c)^2,
//! ```
//!
//! by dynamic programming over the sorted weights (Wang and Song's
//! Ckmeans.1d.dp, with the fixed centre as an extra cluster).
//!
//! **Why it splits at 0.** Take any optimal table {0, mu}; give every weight
//! its nearest table value, ties to 0 first. The weights that go to 0 are
//! those within the nearest midpoints around 0, a run `[a, b)` of the sorted
//! weights with `a <= p0 <= b`, where `p0` is the number of negative weights.
//! The other weights form contiguous runs on either side, each at the cost
//! of its own mean or less. So an optimum is: `j` free clusters covering the
//! `a` most negative weights, the zero cluster `[a, b)` at cost `sum w^2`,
//! and `K-1-j` free clusters covering the `n - b` most positive weights.
//! The two sides are independent given `j`, and the zero cluster's cost
//! splits into a negative and a positive part, so each side is a plain
//! k-means prefix DP, read from the far end towards 0:
//!
//! ```text
//!   D_1(i) = c(0, i),   D_j(i) = min_{t <= i} D_{j-1}(t) + c(t, i),
//!   side(j) = min_i D_j(i) + sum_{x in [i, L)} x^2,
//!   E*     = min_j side_neg(j) + side_pos(K-1-j),
//! ```
//!
//! where `c(t, i)` is the squared error of side weights `t..i` about their
//! mean (0 when empty: `D_j` is "at most j clusters", which only matters
//! with few distinct values). `c` obeys the quadrangle inequality on
//! monotone data, so the leftmost minimising `t` is non-decreasing in `i`
//! and each layer is solved by divide and conquer in O(L log L). Total
//! O(K n log n) after the sort, with layers' halves run in parallel. The
//! scans of wide windows skip blocks of columns that provably cannot hold
//! the minimum ([`scan`]), which halves the columns read on ResNet-18.
//!
//! Numerics: free-cluster costs use prefix sums of the side's weights minus
//! their median (the cost is shift-invariant; centring keeps the prefix sums
//! small so `S2 - S1^2 / m` loses little to cancellation), compensated
//! (Kahan). The zero cluster's cost uses prefix sums of the raw squares. The
//! final centres and error are recomputed by direct summation.

use rayon::prelude::*;

mod scan;

use crate::kmeans::{fill_empty_clusters, prefix, KMeans1d, SortedWeights};
use scan::{Columns, Leftmost, BLOCK};

/// Row ranges at least this long are split across rayon tasks.
const PAR_ROWS: usize = 1 << 14;

/// Row ranges this short are scanned row by row instead of split.
const LEAF_ROWS: usize = 8;

/// One side of 0, ordered from the far end towards 0 (ascending for the
/// negative weights, descending for the others), as prefix sums.
struct Side {
    /// Prefix sums of `x - shift`.
    s1: Vec<f64>,
    /// Prefix sums of `(x - shift)^2`.
    s2: Vec<f64>,
    /// Prefix sums of `x^2` (the zero cluster's cost).
    q: Vec<f64>,
    /// `recip[x] = 1 / (len + 1 - x)`: the inverse cluster size `1 / (i - t)`
    /// sits at `recip[len + 1 - i + t]`, contiguous in `t`, so the scan
    /// multiplies instead of dividing.
    recip: Vec<f64>,
    /// `s1` and `s2` at the last column of each whole block of
    /// [`BLOCK`] columns (the scan's pruning bounds).
    block_s1: Vec<f64>,
    block_s2: Vec<f64>,
    /// Rounding allowance of those bounds: far above the few ulps of
    /// the largest prefix sum they can be off by, far below any gap
    /// that pruning relies on.
    tol: f64,
}

impl Side {
    fn new(x: &[f64]) -> Self {
        let shift = x.get(x.len() / 2).copied().unwrap_or(0.0);
        let top = x.len() + 1;
        let s1 = prefix(x, |v| v - shift);
        let s2 = prefix(x, |v| (v - shift) * (v - shift));
        let at_ends = |s: &[f64]| s.chunks_exact(BLOCK).map(|c| c[BLOCK - 1]).collect();
        let (block_s1, block_s2) = (at_ends(&s1), at_ends(&s2));
        let tol = 1e-11 * s2.last().copied().unwrap_or(0.0);
        Self {
            s1,
            s2,
            q: prefix(x, |v| v * v),
            recip: (0..top).map(|x| 1.0 / (top - x) as f64).collect(),
            block_s1,
            block_s2,
            tol,
        }
    }

    /// Number of side weights L (the prefix sums hold L + 1 values).
    fn len(&self) -> usize {
        self.s1.len() - 1
    }

    /// Squared error of side weights `t..i` about their mean (0 if empty).
    #[inline(always)]
    fn cost(&self, t: usize, i: usize) -> f64 {
        if t >= i {
            return 0.0;
        }
        let d1 = self.s1[i] - self.s1[t];
        let d2 = self.s2[i] - self.s2[t];
        (d2 - d1 * d1 / (i - t) as f64).max(0.0)
    }

    /// The scan's view of this side with the previous layer `prev` (its
    /// row `D_{j-1}`, `less` = `prev - s2`, `block_first` = `prev` at each
    /// block's first column).
    fn columns<'a>(&'a self, less: &'a [f64], block_first: &'a [f64]) -> Columns<'a> {
        Columns {
            less,
            block_first,
            s1: &self.s1,
            block_s1: &self.block_s1,
            block_s2: &self.block_s2,
            recip: &self.recip,
            tol: self.tol,
        }
    }

    /// Cost of the side weights `i..L` in the zero cluster.
    fn zero_cost(&self, i: usize) -> f64 {
        (self.q[self.len()] - self.q[i]).max(0.0)
    }
}

/// The DP of one side, one layer (free-cluster count) at a time.
struct SideDp<'a> {
    side: &'a Side,
    /// `best[j]`: least cost of the side with at most `j` free clusters and
    /// the rest in the zero cluster, for the layers computed so far.
    best: Vec<f64>,
    /// Where the zero cluster starts (side index) for `best[j]`.
    split: Vec<usize>,
    /// `opt[j - 2][i]`: start of the last of `j` clusters covering `0..i`.
    opt: Vec<Vec<u32>>,
    /// The last layer's row `D_j(0..=L)`.
    row: Vec<f64>,
    /// `row - s2` and `row` at each block's first column: what the next
    /// layer's scans read ([`Columns`]).
    less: Vec<f64>,
    block_first: Vec<f64>,
    /// The next row's buffers, swapped with `row` and `less` (no
    /// allocation per layer).
    spare: Vec<f64>,
    spare_less: Vec<f64>,
}

impl<'a> SideDp<'a> {
    /// Layer 0: everything in the zero cluster.
    fn new(side: &'a Side) -> Self {
        Self {
            side,
            best: vec![side.zero_cost(0)],
            split: vec![0],
            opt: Vec::new(),
            row: Vec::new(),
            less: Vec::new(),
            block_first: Vec::new(),
            spare: Vec::new(),
            spare_less: Vec::new(),
        }
    }

    /// Free-cluster layers computed.
    fn layers(&self) -> usize {
        self.best.len() - 1
    }

    /// Computes the next layer.
    fn extend(&mut self) {
        let (side, l) = (self.side, self.side.len());
        let split = if self.layers() == 0 {
            self.row = (0..=l).into_par_iter().map(|i| side.cost(0, i)).collect();
            self.less.clear();
            let less = self.row.iter().zip(&side.s2).map(|(c, q)| c - q);
            self.less.extend(less);
            let mut split = Leftmost::NONE;
            for (i, &d) in self.row.iter().enumerate() {
                split.take((d + side.zero_cost(i), i));
            }
            split
        } else {
            let mut arg = vec![0u32; l + 1];
            self.spare.resize(l + 1, 0.0);
            self.spare_less.resize(l + 1, 0.0);
            let prev = Prev {
                cost: &self.row,
                columns: side.columns(&self.less, &self.block_first),
                side,
            };
            let out = RowsOut {
                cost: &mut self.spare,
                less: &mut self.spare_less,
                arg: &mut arg,
            };
            let split = rows(&prev, 0, out, 0, l);
            self.opt.push(arg);
            std::mem::swap(&mut self.row, &mut self.spare);
            std::mem::swap(&mut self.less, &mut self.spare_less);
            split
        };
        self.block_first.clear();
        self.block_first.extend(self.row.iter().step_by(BLOCK));
        self.best.push(split.0);
        self.split.push(split.1);
    }
}

/// The previous layer as one layer's rows read it.
struct Prev<'a> {
    /// Its row `D_{j-1}(0..=L)`.
    cost: &'a [f64],
    columns: Columns<'a>,
    side: &'a Side,
}

impl Prev<'_> {
    /// Least `D_{j-1}(t) + cost(t, i)` over `t` in `lo..=hi`, `t <= i`, the
    /// leftmost on ties: `t < i` scanned, `t = i` (the empty last cluster,
    /// cost 0) checked apart.
    fn least(&self, i: usize, lo: usize, hi: usize) -> (f64, usize) {
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
struct RowsOut<'a> {
    cost: &'a mut [f64],
    less: &'a mut [f64],
    arg: &'a mut [u32],
}

impl<'a> RowsOut<'a> {
    fn len(&self) -> usize {
        self.cost.len()
    }

    /// Rows `..mid` and `mid + 1..` (row `mid` is written by the caller).
    fn split_around(self, mid: usize) -> (Self, Self) {
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
    fn set(&mut self, side: &Side, r: usize, i: usize, (best, at): (f64, usize)) -> (f64, usize) {
        self.cost[r] = best;
        self.less[r] = best - side.s2[i];
        self.arg[r] = at as u32;
        (best + side.zero_cost(i), i)
    }
}

/// Divide and conquer over rows `row0..row0 + out.len()` of one layer, whose
/// minimising columns are known to lie in `lo..=hi`: the middle row is
/// scanned, then the rows above search `lo..=its argmin` and those below
/// `its argmin..=hi` (monotone argmins, from the quadrangle inequality).
/// Returns the least split candidate of the range (see [`RowsOut::set`]),
/// the leftmost on ties.
fn rows(prev: &Prev, row0: usize, mut out: RowsOut, lo: usize, hi: usize) -> Leftmost {
    let side = prev.side;
    let mut split = Leftmost::NONE;
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

impl SideDp<'_> {
    /// A lower bound on `best[j]` for a layer not computed yet, from the
    /// layers that are: `best` is non-increasing, >= 0 and convex in `j`.
    /// Convex because the side's cost is a minimum `(j + 1)`-link path
    /// (j free clusters, then the zero cluster) over a weight matrix with
    /// the quadrangle inequality: the free clusters' costs have it, and so
    /// do the zero cluster's, since moving the weights `[a, b)` (farther
    /// from 0 than the cluster `[b, c)`) into that cluster costs at most
    /// their squares, as its mean lies between them and 0. Minimum k-link
    /// paths over such matrices are convex in k (Aggarwal, Schieber and
    /// Tokuyama, 1994). So the line through the last two layers bounds the
    /// rest from below.
    fn lower_bound(&self, j: usize) -> f64 {
        let a = self.layers();
        if j <= a {
            return self.best[j];
        }
        let slope = match a {
            0 => return 0.0,
            _ => self.best[a] - self.best[a - 1],
        };
        (self.best[a] + (j - a) as f64 * slope).max(0.0)
    }
}

/// The number of free clusters on the negative side, if the layers computed
/// settle it: the best `j` with both sides' costs known (the fewest on
/// ties), provided every other `j` is bounded below by at least as much
/// ([`SideDp::lower_bound`] for a side not computed that far). Otherwise
/// which sides need a layer.
fn choose(dn: &SideDp, dp: &SideDp, kf: usize) -> Result<usize, (bool, bool)> {
    let (ln, lp) = (dn.layers(), dp.layers());
    let known = |j: usize| j <= ln && kf - j <= lp;
    let total = |j: usize| dn.best[j] + dp.best[kf - j];
    let best = (0..=kf)
        .filter(|&j| known(j))
        .min_by(|&a, &b| total(a).total_cmp(&total(b)));
    let Some(best) = best else {
        return Err((ln < kf, lp < kf));
    };
    let bound = |j: usize| dn.lower_bound(j) + dp.lower_bound(kf - j);
    let open: Vec<usize> = (0..=kf)
        .filter(|&j| !known(j) && bound(j) < total(best))
        .collect();
    match open.is_empty() {
        true => Ok(best),
        false => Err((
            open.iter().any(|&j| j > ln),
            open.iter().any(|&j| kf - j > lp),
        )),
    }
}

/// The runs (side indices `[t, i)`, far end first) of `j` clusters covering
/// side weights `0..end`; some may be empty.
fn backtrack(dp: &SideDp, j: usize, end: usize) -> Vec<(usize, usize)> {
    let mut runs = Vec::with_capacity(j);
    let mut i = end;
    for layer in (2..=j).rev() {
        let t = dp.opt[layer - 2][i] as usize;
        runs.push((t, i));
        i = t;
    }
    if j >= 1 {
        runs.push((0, i));
    }
    runs.reverse();
    runs
}

/// The exact clustering of [`crate::kmeans::KMeansMethod::Exact`] (see the
/// module docs). `k >= 2`, `1 <= n < 2^32` (checked by the callers).
pub(crate) fn exact_with_zero(s: &SortedWeights, k: usize) -> KMeans1d {
    let v = s.values();
    let n = v.len();
    let p0 = v.partition_point(|&x| x < 0.0);
    let neg: Vec<f64> = v[..p0].to_vec();
    let pos: Vec<f64> = v[p0..].iter().rev().copied().collect();
    let kf = k - 1;
    let (neg, pos) = rayon::join(|| Side::new(&neg), || Side::new(&pos));
    let (mut dn, mut dp) = (SideDp::new(&neg), SideDp::new(&pos));
    // Layers are added to a side only while some split j could still beat
    // the best one evaluated (see `choose`): most layers with many free
    // clusters on one side are never needed.
    let half = kf.div_ceil(2);
    let j = loop {
        let (need_n, need_p) = match choose(&dn, &dp, kf) {
            Ok(j) => break j,
            Err(need) => need,
        };
        let (grow_n, grow_p) = (need_n || dn.layers() < half, need_p || dp.layers() < half);
        rayon::join(
            || grow_n.then(|| dn.extend()),
            || grow_p.then(|| dp.extend()),
        );
    };
    let (an, ap) = (dn.split[j], dp.split[kf - j]);
    // Global [lo, hi) runs in ascending order; `true` marks the zero run.
    let mut runs: Vec<(usize, usize, bool)> = backtrack(&dn, j, an)
        .into_iter()
        .map(|(t, i)| (t, i, false))
        .collect();
    runs.push((an, n - ap, true));
    let pos_runs = backtrack(&dp, kf - j, ap);
    runs.extend(pos_runs.iter().rev().map(|&(t, i)| (n - i, n - t, false)));
    runs.retain(|&(lo, hi, zero)| hi > lo || zero);
    finish(v, runs, k)
}

/// Builds the result from the non-empty free runs and the zero run (all in
/// ascending order): centres and error by direct summation, then the
/// surplus clusters (only with few distinct values) as empty ranges at the
/// midpoint of the widest gap between centres (lowest on ties), or at the
/// common centre when all coincide.
fn finish(v: &[f64], runs: Vec<(usize, usize, bool)>, k: usize) -> KMeans1d {
    let per: Vec<(f64, f64)> = runs
        .par_iter()
        .map(|&(lo, hi, zero)| {
            let r = &v[lo..hi];
            let c = match zero {
                true => 0.0,
                false => (r.iter().sum::<f64>() / r.len() as f64).clamp(r[0], r[r.len() - 1]),
            };
            (c, r.iter().map(|&w| (w - c) * (w - c)).sum())
        })
        .collect();
    let sse = per.iter().map(|p| p.1).sum();
    let mut centres: Vec<f64> = per.iter().map(|p| p.0).collect();
    let mut bounds: Vec<usize> = runs.iter().map(|r| r.0).collect();
    bounds.push(v.len());
    let mut zero = runs.iter().position(|r| r.2).unwrap_or(0);
    fill_empty_clusters(&mut centres, &mut bounds, k, &mut zero);
    KMeans1d {
        centres,
        bounds,
        sse,
        zero,
        iterations: 0,
        converged: true,
    }
}
