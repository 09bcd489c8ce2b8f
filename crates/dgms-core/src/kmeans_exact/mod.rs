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

mod rows;
mod scan;
#[cfg(test)]
mod tests;

use crate::kmeans::{fill_empty_clusters, prefixes, KMeans1d, SortedWeights};
use rows::{rows, Prev, RowsOut};
use scan::{Columns, Leftmost, BLOCK};

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
        let [s1, s2, q] = prefixes(x, |v| [v - shift, (v - shift) * (v - shift), v * v]);
        let at_ends = |s: &[f64]| s.chunks_exact(BLOCK).map(|c| c[BLOCK - 1]).collect();
        let (block_s1, block_s2) = (at_ends(&s1), at_ends(&s2));
        let tol = 1e-11 * s2.last().copied().unwrap_or(0.0);
        Self {
            s1,
            s2,
            q,
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
    /// The last complete layer's row `D_j(0..=L)`.
    row: Vec<f64>,
    /// `row - s2` and `row` at each block's first column: what the next
    /// layer's scans read ([`Columns`]).
    less: Vec<f64>,
    block_first: Vec<f64>,
    /// The newest layer's `row` and `less`, swapped with them once it is
    /// complete (no allocation per layer).
    spare: Vec<f64>,
    spare_less: Vec<f64>,
    /// `Some(s)` while the newest layer holds only rows `s..=L` (see
    /// [`SideDp::extend`]).
    pending: Option<usize>,
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
            pending: None,
        }
    }

    /// Free-cluster layers computed.
    fn layers(&self) -> usize {
        self.best.len() - 1
    }

    /// Computes the next layer, `j`, but only its rows `i >= s`, where `s`
    /// is layer `j - 1`'s split (the start of its zero cluster): `best[j]`
    /// and `split[j]` need no others, and the rows below `s` are filled in
    /// only if layer `j + 1` is asked for. Most sides stop at the layer
    /// whose split sits near the zero end, so this skips most of the rows
    /// of their last layer (about one in eight of all rows on ResNet-18).
    ///
    /// Why the split moves only towards 0: write `g(i) = D_{j-1}(i) -
    /// D_j(i)`. The costs obey the quadrangle inequality, so `D_{j-1}(i) +
    /// D_j(i + 1) <= D_{j-1}(i + 1) + D_j(i)` (take the two optimal paths;
    /// some link of the `j`-link path to `i` lies inside a link of the
    /// `(j-1)`-link path to `i + 1`; exchanging their ends gives a
    /// `(j-1)`-link path to `i` and a `j`-link path to `i + 1` costing no
    /// more): `g` is non-decreasing. With `f_j(i) = D_j(i) + zero_cost(i)
    /// = f_{j-1}(i) - g(i)` and `s` the leftmost minimum of `f_{j-1}`,
    /// every `i < s` has `f_j(i) > f_{j-1}(s) - g(s) = f_j(s)`.
    fn extend(&mut self) {
        let (side, l) = (self.side, self.side.len());
        if self.layers() == 0 {
            self.row = (0..=l).into_par_iter().map(|i| side.cost(0, i)).collect();
            self.less.clear();
            let less = self.row.iter().zip(&side.s2).map(|(c, q)| c - q);
            self.less.extend(less);
            self.block_first.clear();
            self.block_first.extend(self.row.iter().step_by(BLOCK));
            let mut split = Leftmost::NONE;
            for (i, &d) in self.row.iter().enumerate() {
                split.take((d + side.zero_cost(i), i));
            }
            self.best.push(split.0);
            self.split.push(split.1);
            return;
        }
        self.complete();
        let from = self.split[self.layers()];
        let mut arg = vec![0u32; l + 1];
        self.spare.resize(l + 1, 0.0);
        self.spare_less.resize(l + 1, 0.0);
        let prev = Prev {
            cost: &self.row,
            columns: side.columns(&self.less, &self.block_first),
            side,
        };
        let mut out = RowsOut {
            cost: &mut self.spare[from..],
            less: &mut self.spare_less[from..],
            arg: &mut arg[from..],
        };
        // Row `from` alone first: its argmin bounds the window of every
        // later row from below, which the divide and conquer would
        // otherwise only learn row by row down its left edge.
        let first = prev.least(from, 0, l);
        let mut split = Leftmost::NONE;
        split.take(out.set(side, 0, from, first));
        if from < l {
            let (_, rest) = out.split_around(0);
            let after = rows(&prev, from + 1, rest, first.1, l);
            split.take((after.0, after.1));
        }
        self.opt.push(arg);
        self.pending = Some(from);
        self.best.push(split.0);
        self.split.push(split.1);
    }

    /// Fills in the newest layer's rows below its start (argmins there lie
    /// at or before row `s`'s) and makes it the one the next layer reads.
    fn complete(&mut self) {
        let (Some(from), Some(arg)) = (self.pending.take(), self.opt.last_mut()) else {
            return;
        };
        if from > 0 {
            let hi = arg[from] as usize;
            let prev = Prev {
                cost: &self.row,
                columns: self.side.columns(&self.less, &self.block_first),
                side: self.side,
            };
            let out = RowsOut {
                cost: &mut self.spare[..from],
                less: &mut self.spare_less[..from],
                arg: &mut arg[..from],
            };
            rows(&prev, 0, out, 0, hi);
        }
        std::mem::swap(&mut self.row, &mut self.spare);
        std::mem::swap(&mut self.less, &mut self.spare_less);
        self.block_first.clear();
        self.block_first.extend(self.row.iter().step_by(BLOCK));
    }
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
