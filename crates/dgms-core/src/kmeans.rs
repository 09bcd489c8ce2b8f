//! Exact, fast 1-D k-means over sorted weights.
//!
//! In one dimension the clusters of a k-means fixed point are contiguous runs
//! of the sorted weights, split at the midpoints between adjacent centres.
//! Sorting once and keeping prefix sums of w and w^2 ([`SortedWeights`]) makes
//! every Lloyd step O(K log n): a split is a (galloping) binary search, a new
//! centre is a range mean, a cluster's SSE is O(1). k-means++ seeding works
//! the same way, so after the sort only one final pass touches every weight.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{CoreError, Result};
use crate::params::{check_finite_weights, check_k};

/// Settings of [`kmeans_1d`] and [`kmeans_sorted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KMeansConfig {
    /// Number of clusters K. Default 16 (4-bit indices).
    pub k: usize,
    /// Seed of restart 0; restart r uses `seed + r`. Default 0.
    pub seed: u64,
    /// Independent k-means++ restarts, the best by [`sse_with_zero`] is kept
    /// (0 counts as 1). Default 8.
    pub restarts: usize,
    /// Upper bound on Lloyd steps per restart. Default 1000.
    pub max_iters: usize,
}

impl Default for KMeansConfig {
    fn default() -> Self {
        Self {
            k: 16,
            seed: 0,
            restarts: 8,
            max_iters: 1000,
        }
    }
}

/// Result of a 1-D k-means: K clusters as contiguous ranges of the sorted weights.
#[derive(Clone, Debug, PartialEq)]
pub struct KMeans1d {
    /// Cluster centres (means of their ranges), ascending.
    pub centres: Vec<f64>,
    /// K+1 split indices into the sorted weights: cluster j is
    /// `sorted[bounds[j]..bounds[j + 1]]`; `bounds[0] = 0`, `bounds[K] = n`.
    pub bounds: Vec<usize>,
    /// Sum of squared distances of the weights to their own cluster's centre.
    pub sse: f64,
    /// Lloyd steps taken by the kept restart.
    pub iterations: usize,
    /// Whether the kept restart reached a Lloyd fixed point (assignment unchanged).
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

/// Maps an f32 to an i32 whose integer order is `f32::total_cmp` order, so the
/// sort compares integers (faster than float comparisons).
fn order_key(w: f32) -> i32 {
    let b = w.to_bits() as i32;
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

/// Inverse of [`order_key`] (the map is an involution).
fn from_key(k: i32) -> f32 {
    f32::from_bits((k ^ ((((k >> 31) as u32) >> 1) as i32)) as u32)
}

/// Prefix sums `[0, f(v0), f(v0)+f(v1), ...]` with Kahan compensation, so the
/// stored prefixes are correctly rounded up to a few ulps even for millions of terms.
fn prefix(values: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len() + 1);
    out.push(0.0);
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for &v in values {
        let y = f(v) - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
        out.push(sum - comp);
    }
    out
}

impl SortedWeights {
    /// Sorts the weights (rayon parallel sort) and builds the prefix sums.
    /// Weights are expected finite (see [`kmeans_1d`] for the checked entry).
    pub fn new(weights: &[f32]) -> Self {
        let mut keys: Vec<i32> = weights.par_iter().map(|&w| order_key(w)).collect();
        keys.par_sort_unstable();
        let values: Vec<f64> = keys.par_iter().map(|&k| from_key(k) as f64).collect();
        let (s1, s2) = rayon::join(|| prefix(&values, |x| x), || prefix(&values, |x| x * x));
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

/// Checks K, finiteness and n >= K, naming `layer` in the error.
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
    Ok(())
}

/// 1-D k-means of one layer's weights: validates, sorts once, then runs
/// [`kmeans_sorted`].
pub fn kmeans_1d(layer: &str, weights: &[f32], cfg: &KMeansConfig) -> Result<KMeans1d> {
    check_input(layer, weights, cfg.k)?;
    Ok(kmeans_sorted(&SortedWeights::new(weights), cfg))
}

/// Index of the zero cluster: the non-empty cluster whose centre has the
/// smallest |centre| (lowest index on ties). Empty clusters exist only with
/// fewer than K distinct weights and are never chosen.
pub fn zero_cluster(result: &KMeans1d) -> usize {
    zero_index(&result.centres, &result.bounds)
}

fn zero_index(centres: &[f64], bounds: &[usize]) -> usize {
    (0..centres.len())
        .filter(|&j| bounds[j + 1] > bounds[j])
        .min_by(|&a, &b| centres[a].abs().total_cmp(&centres[b].abs()))
        .unwrap_or(0)
}

/// SSE with the zero cluster measured to 0 instead of its centre (SPEC
/// section 2): the objective the restarts are compared by. O(K) via prefix sums.
pub fn sse_with_zero(sorted: &SortedWeights, result: &KMeans1d) -> f64 {
    sse_zero_of(sorted, &result.centres, &result.bounds)
}

fn sse_zero_of(s: &SortedWeights, centres: &[f64], bounds: &[usize]) -> f64 {
    let z = zero_index(centres, bounds);
    (0..centres.len())
        .map(|j| s.range_sse_about(bounds[j], bounds[j + 1], if j == z { 0.0 } else { centres[j] }))
        .sum()
}

/// k-means over already sorted weights; the best of `cfg.restarts` k-means++
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
    assert!(k >= 1 && n >= k, "k-means needs 1 <= K <= n (K = {k}, n = {n})");
    if sorted.distinct_upto(k) <= k {
        return few_distinct(sorted, k);
    }
    let runs: Vec<(KMeans1d, f64)> = (0..cfg.restarts.max(1) as u64)
        .into_par_iter()
        .map(|r| lloyd(sorted, k, cfg.seed.wrapping_add(r), cfg.max_iters))
        .collect();
    let best = (0..runs.len())
        .min_by(|&a, &b| runs[a].1.total_cmp(&runs[b].1))
        .expect("at least one restart");
    let mut out = runs.into_iter().nth(best).expect("best restart exists").0;
    refine(sorted, &mut out);
    out
}

/// Exact solution for d <= K distinct values (see [`kmeans_sorted`]).
fn few_distinct(s: &SortedWeights, k: usize) -> KMeans1d {
    let v = s.values();
    let (mut centres, mut bounds) = (Vec::with_capacity(k), vec![0]);
    while *bounds.last().expect("non-empty") < v.len() {
        let lo = *bounds.last().expect("non-empty");
        centres.push(v[lo]);
        bounds.push(lo + v[lo..].partition_point(|&y| y <= v[lo]));
    }
    while centres.len() < k {
        let gap = (1..centres.len())
            .max_by(|&a, &b| {
                let (ga, gb) = (centres[a] - centres[a - 1], centres[b] - centres[b - 1]);
                ga.total_cmp(&gb).then(b.cmp(&a))
            })
            .filter(|&j| centres[j] > centres[j - 1]);
        match gap {
            Some(j) => {
                centres.insert(j, 0.5 * (centres[j - 1] + centres[j]));
                bounds.insert(j, bounds[j]);
            }
            None => {
                centres.push(v[0]);
                bounds.push(v.len());
            }
        }
    }
    KMeans1d {
        centres,
        bounds,
        sse: 0.0,
        iterations: 0,
        converged: true,
    }
}

/// `partition_point(|x| x < t)` found by galloping out from `guess`: cheap
/// when the split moved little since the last Lloyd step.
fn partition_from(v: &[f64], t: f64, guess: usize) -> usize {
    let n = v.len();
    let g = guess.min(n);
    let mut step = 1;
    if g < n && v[g] < t {
        let mut lo = g + 1; // v[..lo] < t
        loop {
            let probe = lo + step - 1;
            if probe >= n {
                return lo + v[lo..].partition_point(|&x| x < t);
            }
            if v[probe] >= t {
                return lo + v[lo..probe].partition_point(|&x| x < t);
            }
            lo = probe + 1;
            step *= 2;
        }
    }
    let mut hi = g; // v[hi..] >= t
    loop {
        if hi < step {
            return v[..hi].partition_point(|&x| x < t);
        }
        let probe = hi - step;
        if v[probe] < t {
            return probe + 1 + v[probe + 1..hi].partition_point(|&x| x < t);
        }
        hi = probe;
        step *= 2;
    }
}

/// Split indices of strictly ascending centres: each weight goes to its
/// nearest centre (midpoint boundaries); `guess` is the previous assignment.
fn assign(v: &[f64], centres: &[f64], guess: Option<&[usize]>) -> Vec<usize> {
    let mut b = Vec::with_capacity(centres.len() + 1);
    b.push(0);
    for j in 1..centres.len() {
        let mid = 0.5 * (centres[j - 1] + centres[j]);
        b.push(match guess {
            Some(g) => partition_from(v, mid, g[j]),
            None => v.partition_point(|&x| x < mid),
        });
    }
    b.push(v.len());
    b
}

/// Removes empty clusters by splitting, at its mean, the non-empty cluster
/// with the largest SSE that holds at least two distinct values. Equal
/// weights are never separated, so range means stay strictly ascending.
fn repair(s: &SortedWeights, mut b: Vec<usize>) -> Vec<usize> {
    let v = s.values();
    while let Some(e) = (0..b.len() - 1).find(|&j| b[j] == b[j + 1]) {
        let splittable = (0..b.len() - 1).filter(|&j| b[j + 1] > b[j] && v[b[j]] < v[b[j + 1] - 1]);
        let sse = |j: usize| s.range_sse_about(b[j], b[j + 1], s.range_mean(b[j], b[j + 1]));
        let Some(i) = splittable.max_by(|&x, &y| sse(x).total_cmp(&sse(y)).then(y.cmp(&x))) else {
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

/// Range means of the clusters (empty ones, only possible when repair could
/// not split, keep a neighbouring weight).
fn means(s: &SortedWeights, b: &[usize]) -> Vec<f64> {
    let last = s.len() - 1;
    (0..b.len() - 1)
        .map(|j| match b[j + 1] > b[j] {
            true => s.range_mean(b[j], b[j + 1]),
            false => s.values()[b[j].min(last)],
        })
        .collect()
}

/// k-means++ seeding without a pass over the data per centre: the data
/// between adjacent chosen centres splits at the midpoint, each piece's D^2
/// mass is an O(1) range SSE, a piece is drawn by mass, then the point is
/// found by binary search on the piece's cumulative mass.
fn seed_centres(s: &SortedWeights, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let v = s.values();
    let mut centres = vec![v[rng.random_range(0..v.len())]];
    while centres.len() < k {
        let b = assign(v, &centres, None);
        let mass: Vec<f64> = (0..centres.len())
            .map(|j| s.range_sse_about(b[j], b[j + 1], centres[j]))
            .collect();
        let total: f64 = mass.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = None;
        for (j, &m) in mass.iter().enumerate() {
            if total > 0.0 && (u < m || (m > 0.0 && j + 1 == mass.len())) {
                let (lo, c) = (b[j], centres[j]);
                let (mut a, mut z) = (1, b[j + 1] - lo); // smallest prefix length whose mass > u
                while a < z {
                    let mid = a + (z - a) / 2;
                    if s.range_sse_about(lo, lo + mid, c) > u {
                        z = mid;
                    } else {
                        a = mid + 1;
                    }
                }
                pick = Some(v[lo + a - 1]);
                break;
            }
            u -= m;
        }
        // Rounding can land on an existing centre or leave no mass: then take
        // the weight farthest from its nearest centre (a piece's endpoint).
        let x = match pick {
            Some(x) if !centres.contains(&x) => x,
            _ => (0..centres.len())
                .filter(|&j| b[j + 1] > b[j])
                .flat_map(|j| [(v[b[j]], centres[j]), (v[b[j + 1] - 1], centres[j])])
                .max_by(|p, q| (p.0 - p.1).abs().total_cmp(&(q.0 - q.1).abs()))
                .expect("some weight")
                .0,
        };
        centres.insert(centres.partition_point(|&c| c < x), x);
    }
    centres
}

/// One restart: k-means++ seeding, then Lloyd steps until the assignment of
/// the current centres equals the previous one (a true fixed point: the
/// centres are the means of their clusters and every weight is nearest to its
/// own centre) or `max_iters` steps. Returns the run and its [`sse_with_zero`].
fn lloyd(s: &SortedWeights, k: usize, seed: u64, max_iters: usize) -> (KMeans1d, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres = seed_centres(s, k, &mut rng);
    let mut bounds: Option<Vec<usize>> = None;
    let (mut iterations, mut converged) = (0, false);
    while iterations < max_iters.max(1) {
        let raw = assign(s.values(), &centres, bounds.as_deref());
        if bounds.as_ref() == Some(&raw) {
            converged = true;
            break;
        }
        let b = repair(s, raw);
        centres = means(s, &b);
        bounds = Some(b);
        iterations += 1;
    }
    let bounds = bounds.expect("at least one Lloyd step");
    let sse = (0..k)
        .map(|j| s.range_sse_about(bounds[j], bounds[j + 1], centres[j]))
        .sum();
    let sse_zero = sse_zero_of(s, &centres, &bounds);
    let run = KMeans1d {
        centres,
        bounds,
        sse,
        iterations,
        converged,
    };
    (run, sse_zero)
}

/// Recomputes the kept run's centres and SSE by direct summation over each
/// cluster (one pass over the data, clusters in parallel, deterministic),
/// avoiding the cancellation of the prefix-sum formulas.
fn refine(s: &SortedWeights, out: &mut KMeans1d) {
    let b = &out.bounds;
    let per: Vec<(f64, f64)> = (0..out.centres.len())
        .into_par_iter()
        .map(|j| {
            let r = &s.values()[b[j]..b[j + 1]];
            let Some((&first, &last)) = r.first().zip(r.last()) else {
                return (out.centres[j], 0.0);
            };
            let c = (r.iter().sum::<f64>() / r.len() as f64).clamp(first, last);
            (c, r.iter().map(|&w| (w - c) * (w - c)).sum())
        })
        .collect();
    out.centres = per.iter().map(|p| p.0).collect();
    out.sse = per.iter().map(|p| p.1).sum();
}
