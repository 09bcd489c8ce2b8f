//! 1-D k-means over sorted weights: the exact optimum of the error the
//! mixture sees ([`KMeansMethod::Exact`], in
//! [`crate::kmeans_exact`]), or seeded Lloyd restarts run to an exact fixed
//! point ([`KMeansMethod::Lloyd`], kept for comparison).
//!
//! Lloyd path:
//! In one dimension the clusters of a k-means fixed point are contiguous runs
//! of the sorted weights, split at the midpoints between adjacent centres.
//! Sorting once and keeping prefix sums of w and w^2 ([`SortedWeights`]) makes
//! every Lloyd step O(K log n): a split is a binary search, a new centre is a
//! range mean, a cluster's SSE is O(1). k-means++ seeding and the boundary
//! descent that refines Lloyd fixed points work the same way, so after the
//! sort only one final pass touches every weight. Lloyd reaches a local
//! optimum only, hence k-means++ restarts, kept by [`sse_with_zero`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::params::{check_finite_weights, check_k};

/// How the K clusters are found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KMeansMethod {
    /// The exact minimum of the SSE to {0, mu_1..mu_{K-1}} (one centre fixed
    /// at 0, the others at their clusters' means), by dynamic programming
    /// over the sorted weights ([`crate::kmeans_exact`]). No randomness:
    /// `seed`, `restarts` and `max_iters` are unused. The default: 1.8-2.1 s
    /// for all of ResNet-18's convs on two threads (`cargo xtask
    /// bench-core`), 5 % less error than Lloyd there.
    #[default]
    Exact,
    /// Plain k-means by k-means++ seeded Lloyd restarts with boundary
    /// descent; the restart with the least [`sse_with_zero`] is kept. A
    /// local optimum, at least the exact method's error; about 8x faster.
    Lloyd,
}

/// Settings of [`kmeans_1d`] and [`kmeans_sorted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KMeansConfig {
    /// Number of clusters K. Default 16 (4-bit indices).
    pub k: usize,
    /// Seed of restart 0 (Lloyd); restart r uses `seed + r`. Default 0.
    pub seed: u64,
    /// Independent k-means++ restarts (Lloyd), the best by [`sse_with_zero`]
    /// is kept (0 counts as 1). Default 8.
    pub restarts: usize,
    /// Upper bound on Lloyd steps (boundary-descent steps included) per
    /// restart. Default 1000.
    pub max_iters: usize,
    /// Exact (default) or Lloyd.
    pub method: KMeansMethod,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 16,
            seed: 0,
            restarts: 8,
            max_iters: 1000,
            method: KMeansMethod::Exact,
        }
    }
}

/// Result of a 1-D k-means: K clusters as contiguous ranges of the sorted weights.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans1d {
    /// Cluster centres, ascending: the means of their ranges, except the
    /// zero cluster's with [`KMeansMethod::Exact`], which is 0.
    pub centres: Vec<f64>,
    /// K+1 split indices into the sorted weights: cluster j is
    /// `sorted[bounds[j]..bounds[j + 1]]`; `bounds[0] = 0`, `bounds[K] = n`.
    pub bounds: Vec<usize>,
    /// Sum of squared distances of the weights to their own cluster's centre.
    pub sse: f64,
    /// Index of the zero cluster (the one whose centre becomes 0): with
    /// [`KMeansMethod::Exact`] the cluster the optimum measures to 0 (it may
    /// be empty), with Lloyd the non-empty cluster with the smallest
    /// |centre| (lowest index on ties).
    pub zero: usize,
    /// Lloyd steps taken by the kept restart (0 for the exact method).
    pub iterations: usize,
    /// Whether the kept restart reached a Lloyd fixed point (assignment
    /// unchanged); always true for the exact method.
    pub converged: bool,
}

/// Weights sorted ascending (as f64) with prefix sums of w and w^2, so that
/// sums, means and SSEs over any index range cost O(1).
#[derive(Clone, Debug)]
pub struct SortedWeights {
    values: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

/// Maps f32 bits (as i32) to an i32 whose integer order is `f32::total_cmp`
/// order, and back (an involution), so the sort compares integers (faster).
fn flip(b: i32) -> i32 {
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

/// `N` prefix sums `[0, f(v0), f(v0)+f(v1), ...]` in one pass, with Kahan
/// compensation, so the stored prefixes are correctly rounded up to a few
/// ulps even for millions of terms. Each sum is a chain of dependent
/// additions, so `N` chains side by side cost about as much time as one.
pub(crate) fn prefixes<const N: usize>(
    values: &[f64],
    f: impl Fn(f64) -> [f64; N],
) -> [Vec<f64>; N] {
    let mut out: [Vec<f64>; N] = std::array::from_fn(|_| {
        let mut v = Vec::with_capacity(values.len() + 1);
        v.push(0.0);
        v
    });
    let (mut sum, mut comp) = ([0.0f64; N], [0.0f64; N]);
    for &v in values {
        let terms = f(v);
        for k in 0..N {
            let y = terms[k] - comp[k];
            let t = sum[k] + y;
            comp[k] = (t - sum[k]) - y;
            sum[k] = t;
            out[k].push(sum[k] - comp[k]);
        }
    }
    out
}

impl SortedWeights {
    /// Sorts the weights (radix sort of integer keys in the order of the
    /// values) and builds the prefix sums. Weights are expected finite (see
    /// [`kmeans_1d`] for the checked entry).
    pub fn new(weights: &[f32]) -> Self {
        let mut keys: Vec<i32> = weights
            .par_iter()
            .map(|w| flip(w.to_bits() as i32))
            .collect();
        radsort::sort(&mut keys);
        let values: Vec<f64> = keys
            .par_iter()
            .map(|&k| f32::from_bits(flip(k) as u32) as f64)
            .collect();
        let [s1, s2] = prefixes(&values, |x| [x, x * x]);
        Self { values, s1, s2 }
    }

    /// The sorted weights.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Number of weights n.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no weights.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Largest |w| (0 when empty).
    pub fn max_abs(&self) -> f64 {
        match (self.values.first(), self.values.last()) {
            (Some(a), Some(b)) => a.abs().max(b.abs()),
            _ => 0.0,
        }
    }

    /// Sum of `sorted[lo..hi]`.
    pub fn range_sum(&self, lo: usize, hi: usize) -> f64 {
        self.s1[hi] - self.s1[lo]
    }

    /// Sum of squares of `sorted[lo..hi]`.
    pub fn range_sum_sq(&self, lo: usize, hi: usize) -> f64 {
        self.s2[hi] - self.s2[lo]
    }

    /// Sum of `(w - c)^2` over `sorted[lo..hi]`, i.e. `S2 - 2 c S1 + m c^2`,
    /// clamped at 0 against rounding.
    pub fn range_sse_about(&self, lo: usize, hi: usize, c: f64) -> f64 {
        let m = (hi - lo) as f64;
        (self.range_sum_sq(lo, hi) - c * (2.0 * self.range_sum(lo, hi) - m * c)).max(0.0)
    }

    /// Mean of the non-empty range `sorted[lo..hi]`, clamped into
    /// `[sorted[lo], sorted[hi-1]]` so rounding can never reorder centres.
    pub fn range_mean(&self, lo: usize, hi: usize) -> f64 {
        let mean = self.range_sum(lo, hi) / (hi - lo) as f64;
        mean.clamp(self.values[lo], self.values[hi - 1])
    }

    /// Number of distinct values, counting at most up to `cap + 1`.
    fn distinct_upto(&self, cap: usize) -> usize {
        let (v, mut i, mut d) = (&self.values, 0, 0);
        while i < v.len() && d <= cap {
            let x = v[i];
            i += v[i..].partition_point(|&y| y <= x);
            d += 1;
        }
        d
    }
}

/// Checks K, finiteness, n >= K and (the exact method stores split
/// indices as u32) n < 2^32, naming `layer` in the error.
pub(crate) fn check_input(layer: &str, weights: &[f32], k: usize) -> Result<()> {
    check_k(layer, k)?;
    check_finite_weights(layer, weights)?;
    if weights.len() < k {
        return Err(CoreError::TooFewWeights {
            layer: layer.to_string(),
            n: weights.len(),
            k,
        });
    }
    if u32::try_from(weights.len()).is_err() {
        return Err(CoreError::Unsupported {
            layer: layer.to_string(),
            what: format!("{} weights in one layer, at most 2^32 - 1", weights.len()),
        });
    }
    Ok(())
}

/// 1-D k-means of one layer's weights: validates, sorts once, then runs
/// [`kmeans_sorted`].
pub fn kmeans_1d(layer: &str, weights: &[f32], cfg: &KMeansConfig) -> Result<KMeans1d> {
    check_input(layer, weights, cfg.k)?;
    Ok(kmeans_sorted(&SortedWeights::new(weights), cfg))
}

/// Index of the zero cluster ([`KMeans1d::zero`]).
pub fn zero_cluster(result: &KMeans1d) -> usize {
    result.zero
}

/// The Lloyd path's zero cluster: the non-empty cluster whose centre has the
/// smallest |centre| (lowest index on ties). Empty clusters exist only with
/// fewer than K distinct weights and are never chosen.
fn nearest_zero(centres: &[f64], bounds: &[usize]) -> usize {
    let (c, b) = (centres, bounds);
    (0..c.len())
        .filter(|&j| b[j + 1] > b[j])
        .min_by(|&x, &y| c[x].abs().total_cmp(&c[y].abs()))
        .unwrap_or(0)
}

/// The table of values the weights harden to: the centres, ascending, with
/// the zero cluster's centre replaced by 0 (`docs/METHOD.md#initialisation`).
pub fn zero_table(result: &KMeans1d) -> Vec<f64> {
    let mut table = result.centres.clone();
    table[zero_cluster(result)] = 0.0;
    table.sort_by(f64::total_cmp); // already ascending but for exact ties
    table
}

/// SSE with the zero cluster measured to 0: the sum over the weights of the
/// squared distance to the nearest value of [`zero_table`]. This is how the
/// reference measures its k-means (`init_kmeans_sse` of the fixtures equals
/// it to f32 precision: weights are re-assigned once the zero centre moves to
/// 0), so restarts are compared by it. O(K log n) via prefix sums.
pub fn sse_with_zero(sorted: &SortedWeights, result: &KMeans1d) -> f64 {
    let table = zero_table(result);
    let b = assign(sorted.values(), &table);
    (0..table.len())
        .map(|j| sorted.range_sse_about(b[j], b[j + 1], table[j]))
        .sum()
}

/// k-means over already sorted weights.
///
/// [`KMeansMethod::Exact`]: the exact minimum of [`sse_with_zero`] over all
/// tables {0, mu_1..mu_{K-1}} ([`crate::kmeans_exact`]); `sse` is that
/// minimum, the zero cluster's centre is 0.
///
/// [`KMeansMethod::Lloyd`]: the best of `cfg.restarts` k-means++
/// restarts by [`sse_with_zero`]. Restarts run in parallel, and the result
/// depends only on the data and `cfg` (ties go to the lowest restart).
///
/// With at most K distinct values the exact answer is returned directly (one
/// cluster per value, SSE 0); the K - d surplus clusters are empty, with
/// centres placed at the midpoint of the widest gap between centres
/// (repeatedly), or equal to the single value when all weights are equal.
///
/// Panics unless `1 <= cfg.k <= sorted.len()` (checked by [`kmeans_1d`]).
pub fn kmeans_sorted(sorted: &SortedWeights, cfg: &KMeansConfig) -> KMeans1d {
    let (k, n) = (cfg.k, sorted.len());
    assert!(k >= 1 && n >= k, "k-means needs 1 <= K <= n");
    if cfg.method == KMeansMethod::Exact && k >= 2 {
        return crate::kmeans_exact::exact_with_zero(sorted, k);
    }
    if sorted.distinct_upto(k) <= k {
        return few_distinct(sorted, k);
    }
    let runs: Vec<(KMeans1d, f64)> = (0..cfg.restarts.max(1) as u64)
        .into_par_iter()
        .map(|r| lloyd(sorted, k, cfg.seed.wrapping_add(r), cfg.max_iters))
        .map(|run| {
            let zero = sse_with_zero(sorted, &run);
            (run, zero)
        })
        .collect();
    // min_by keeps the first of equal minima: the lowest restart wins ties.
    let best = runs.into_iter().min_by(|a, b| a.1.total_cmp(&b.1));
    let mut out = best.expect("at least one restart").0;
    refine(sorted, &mut out);
    out.zero = nearest_zero(&out.centres, &out.bounds);
    out
}

/// Exact solution for d <= K distinct values (see [`kmeans_sorted`]).
fn few_distinct(s: &SortedWeights, k: usize) -> KMeans1d {
    let (v, mut bounds) = (s.values(), vec![0]);
    while let Some(&lo) = bounds.last().filter(|&&lo| lo < v.len()) {
        bounds.push(lo + v[lo..].partition_point(|&y| y <= v[lo]));
    }
    let mut centres: Vec<f64> = bounds[..bounds.len() - 1].iter().map(|&i| v[i]).collect();
    fill_empty_clusters(&mut centres, &mut bounds, k, &mut 0);
    let (sse, iterations, converged) = (0.0, 0, true);
    let zero = nearest_zero(&centres, &bounds);
    KMeans1d {
        centres,
        bounds,
        sse,
        zero,
        iterations,
        converged,
    }
}

/// Adds empty clusters until there are `k` (only with fewer distinct
/// weights than clusters): each at the midpoint of the widest gap between
/// the ascending `centres` (the lowest gap on ties), or repeating the common
/// centre at the end when all coincide. `bounds` (one more than `centres`)
/// gets an empty range for each; `tracked`, an index into `centres`, is
/// moved along so that it names the same cluster afterwards.
pub(crate) fn fill_empty_clusters(
    centres: &mut Vec<f64>,
    bounds: &mut Vec<usize>,
    k: usize,
    tracked: &mut usize,
) {
    while centres.len() < k {
        let gap = |j: usize| centres[j] - centres[j - 1];
        // Widest gap, the lowest on ties (max_by keeps the last maximum).
        let widest = (1..centres.len())
            .rev()
            .max_by(|&a, &b| gap(a).total_cmp(&gap(b)));
        match widest.filter(|&j| gap(j) > 0.0) {
            Some(j) => {
                centres.insert(j, 0.5 * (centres[j - 1] + centres[j]));
                bounds.insert(j, bounds[j]);
                *tracked += usize::from(j <= *tracked);
            }
            None => {
                let (last, end) = (centres[centres.len() - 1], bounds[bounds.len() - 1]);
                centres.push(last);
                bounds.push(end);
            }
        }
    }
}

/// Split indices of ascending centres: each weight goes to its nearest
/// centre, i.e. clusters split at midpoints (K binary searches; the sort, not
/// this, dominates the run time).
pub(crate) fn assign(v: &[f64], centres: &[f64]) -> Vec<usize> {
    let mids = centres.windows(2).map(|c| 0.5 * (c[0] + c[1]));
    let inner = mids.map(|mid| v.partition_point(|&x| x < mid));
    std::iter::once(0).chain(inner).chain([v.len()]).collect()
}

/// Removes empty clusters by splitting, at its mean, the non-empty cluster
/// with the largest SSE that holds at least two distinct values. Equal
/// weights are never separated, so range means stay strictly ascending.
fn repair(s: &SortedWeights, mut b: Vec<usize>) -> Vec<usize> {
    let v = s.values();
    while let Some(e) = (0..b.len() - 1).find(|&j| b[j] == b[j + 1]) {
        let sse = |j: usize| s.range_sse_about(b[j], b[j + 1], s.range_mean(b[j], b[j + 1]));
        let splittable = (0..b.len() - 1).filter(|&j| b[j + 1] > b[j] && v[b[j]] < v[b[j + 1] - 1]);
        let best = splittable.max_by(|&x, &y| sse(x).total_cmp(&sse(y)).then(y.cmp(&x)));
        let Some(i) = best else {
            break; // fewer distinct values than clusters: nothing to split
        };
        let (lo, hi) = (b[i], b[i + 1]);
        let (r, mean) = (&v[lo..hi], s.range_mean(lo, hi));
        let first_run_end = lo + r.partition_point(|&x| x <= r[0]);
        let last_run_start = lo + r.partition_point(|&x| x < r[r.len() - 1]);
        let cut = (lo + r.partition_point(|&x| x < mean)).clamp(first_run_end, last_run_start);
        b.remove(e + 1);
        let at = b.partition_point(|&x| x < cut);
        b.insert(at, cut);
    }
    b
}

/// k-means++ seeding without a pass over the data per centre: the data
/// between adjacent chosen centres splits at the midpoint, each piece's D^2
/// mass is an O(1) range SSE, a piece is drawn by mass, then the point is
/// found by binary search on the piece's cumulative mass.
fn seed_centres(s: &SortedWeights, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let v = s.values();
    let mut centres = vec![v[rng.random_range(0..v.len())]];
    while centres.len() < k {
        // Pieces are never empty: each holds its own centre, a weight.
        let b = assign(v, &centres);
        let mass = |j: usize| s.range_sse_about(b[j], b[j + 1], centres[j]);
        let total: f64 = (0..centres.len()).map(mass).sum();
        let (mut u, mut j) = (rng.random::<f64>() * total, 0);
        while j + 1 < centres.len() && u >= mass(j) {
            u -= mass(j);
            j += 1;
        }
        // First index of piece j whose cumulative mass exceeds u.
        let (lo, c) = (b[j], centres[j]);
        let (mut a, mut z) = (lo, b[j + 1] - 1);
        while a < z {
            let mid = a + (z - a) / 2;
            match s.range_sse_about(lo, mid + 1, c) > u {
                true => z = mid,
                false => a = mid + 1,
            }
        }
        // Rounding (or no mass left) can land on an existing centre: then
        // take the weight farthest from its nearest centre, a piece's end.
        let x = match v[a] {
            x if !centres.contains(&x) => x,
            _ => (0..centres.len())
                .flat_map(|j| [(v[b[j]], centres[j]), (v[b[j + 1] - 1], centres[j])])
                .max_by(|p, q| (p.0 - p.1).abs().total_cmp(&(q.0 - q.1).abs()))
                .map_or(v[0], |p| p.0),
        };
        centres.insert(centres.partition_point(|&c| c < x), x);
    }
    centres
}

/// Boundary descent between adjacent clusters (Hartigan's criterion in 1-D):
/// each split index moves, holding its neighbours fixed, while the two
/// clusters' summed SSE (with re-computed means) strictly drops; steps gallop
/// and only cut between distinct values. Escapes many Lloyd fixed points that
/// are not optimal; a Hartigan-stable split is also Lloyd-stable. Returns
/// whether a split moved.
fn descend(s: &SortedWeights, b: &mut [usize]) -> bool {
    let v = s.values();
    let run_start = |t: usize| v.partition_point(|&x| x < v[t]);
    let mut changed = false;
    for j in 1..b.len() - 1 {
        let (lo, hi) = (b[j - 1], b[j + 1]);
        let sse = |a: usize, z: usize| s.range_sse_about(a, z, s.range_mean(a, z));
        // Cut `step` weights right or left of `cur`, snapped to a run start.
        let shift = |cur: usize, step: usize, right: bool| match right {
            true if cur + step < hi => {
                Some(run_start(cur + step).max(v.partition_point(|&x| x <= v[cur])))
            }
            false if cur > lo + step => Some(run_start(cur - step)),
            _ => None,
        };
        let (mut cur, mut best) = (b[j], sse(lo, b[j]) + sse(b[j], hi));
        let mut moved = true;
        while moved {
            moved = false;
            for right in [true, false] {
                let mut step = 1;
                while step > 0 {
                    let cand = shift(cur, step, right).filter(|&c| c > lo && c < hi);
                    let f = cand.map_or(f64::INFINITY, |c| sse(lo, c) + sse(c, hi));
                    match cand {
                        Some(c) if f < best - 1e-12 * best => {
                            (cur, best, moved, step) = (c, f, true, step * 2)
                        }
                        _ => step /= 2,
                    }
                }
            }
        }
        changed |= cur != b[j];
        b[j] = cur;
    }
    changed
}

/// One restart: k-means++ seeding, then Lloyd steps until the assignment of
/// the current centres equals the previous one (a true fixed point: the
/// centres are the means of their clusters and every weight is nearest to its
/// own centre). At a fixed point [`descend`] tries to improve it; the run
/// ends when it cannot, or after `max_iters` steps (`converged` false).
fn lloyd(s: &SortedWeights, k: usize, seed: u64, max_iters: usize) -> KMeans1d {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres = seed_centres(s, k, &mut rng);
    let mut bounds: Option<Vec<usize>> = None;
    let (mut iterations, mut converged) = (0, false);
    while iterations < max_iters.max(1) {
        let mut raw = assign(s.values(), &centres);
        if bounds.as_ref() == Some(&raw) {
            // A Lloyd fixed point: try to escape it by moving single boundaries.
            if !descend(s, &mut raw) {
                converged = true;
                break;
            }
        }
        // With more than K distinct values repair leaves no cluster empty.
        let b = repair(s, raw);
        centres = (0..k).map(|j| s.range_mean(b[j], b[j + 1])).collect();
        bounds = Some(b);
        iterations += 1;
    }
    let bounds = bounds.expect("at least one Lloyd step");
    let sse = (0..k)
        .map(|j| s.range_sse_about(bounds[j], bounds[j + 1], centres[j]))
        .sum();
    let zero = nearest_zero(&centres, &bounds);
    KMeans1d {
        centres,
        bounds,
        sse,
        zero,
        iterations,
        converged,
    }
}

/// Recomputes the kept run's centres and SSE by direct summation over each
/// cluster (one pass over the data, clusters in parallel, deterministic),
/// avoiding the cancellation of the prefix-sum formulas.
fn refine(s: &SortedWeights, out: &mut KMeans1d) {
    let (b, old) = (&out.bounds, &out.centres);
    let per: Vec<(f64, f64)> = (0..old.len())
        .into_par_iter()
        .map(|j| match &s.values()[b[j]..b[j + 1]] {
            [] => (old[j], 0.0),
            r => {
                let c = (r.iter().sum::<f64>() / r.len() as f64).clamp(r[0], r[r.len() - 1]);
                (c, r.iter().map(|&w| (w - c) * (w - c)).sum())
            }
        })
        .collect();
    out.sse = per.iter().map(|p| p.1).sum();
    out.centres = per.into_iter().map(|p| p.0).collect();
}
