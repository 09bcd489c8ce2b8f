//! The exact k-means with one centre fixed at 0 (`KMeansMethod::Exact`,
//! `docs/METHOD.md#initialisation`) held to exhaustive search on small
//! inputs, to the Lloyd path on random layers, and on a 1x1 conv where Lloyd
//! stays measurably above the optimum.

use dgms_core::kmeans::{kmeans_sorted, sse_with_zero, SortedWeights};
use dgms_core::{
    init_params, kmeans_1d, workloads, InitConfig, KMeans1d, KMeansConfig, KMeansMethod,
};
use dgms_test_support::rng::chacha;
use proptest::prelude::*;
use rand::Rng;

fn cfg(k: usize, method: KMeansMethod) -> KMeansConfig {
    KMeansConfig {
        k,
        method,
        ..KMeansConfig::default()
    }
}

fn exact(w: &[f32], k: usize) -> KMeans1d {
    kmeans_1d("exact", w, &cfg(k, KMeansMethod::Exact)).unwrap()
}

/// SSE of a labelling: label 0 measured to 0, every other label to the mean
/// of its members.
fn labelled_sse(w: &[f64], labels: &[usize], k: usize) -> f64 {
    let mut sse = 0.0;
    for c in 0..k {
        let xs: Vec<f64> = (0..w.len())
            .filter(|&i| labels[i] == c)
            .map(|i| w[i])
            .collect();
        if xs.is_empty() {
            continue;
        }
        let m = if c == 0 {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        sse += xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>();
    }
    sse
}

/// Minimum over every assignment of the weights to the zero cluster or to
/// one of K-1 free clusters (free labels in order of first use, so each
/// partition is visited once): the optimum by definition.
fn brute_assignments(w: &[f64], k: usize) -> f64 {
    fn go(w: &[f64], k: usize, labels: &mut Vec<usize>, used: usize, best: &mut f64) {
        if labels.len() == w.len() {
            *best = best.min(labelled_sse(w, labels, k));
            return;
        }
        for c in 0..=(used + 1).min(k - 1) {
            labels.push(c);
            go(w, k, labels, used.max(c), best);
            labels.pop();
        }
    }
    let mut best = f64::INFINITY;
    go(w, k, &mut Vec::new(), 0, &mut best);
    best
}

/// Minimum over every split of the sorted weights into K contiguous runs
/// (empty runs allowed), any one of them being the zero cluster.
fn brute_contiguous(w: &[f64], k: usize) -> f64 {
    let mut v = w.to_vec();
    v.sort_by(f64::total_cmp);
    fn go(v: &[f64], k: usize, bounds: &mut Vec<usize>, best: &mut f64) {
        if bounds.len() == k {
            bounds.push(v.len());
            for z in 0..k {
                let labels: Vec<usize> = (0..v.len())
                    .map(|i| {
                        let run = (0..k).find(|&r| i < bounds[r + 1]).unwrap();
                        // Run z is the zero cluster; the others get distinct free labels.
                        match run.cmp(&z) {
                            std::cmp::Ordering::Equal => 0,
                            std::cmp::Ordering::Less => run + 1,
                            std::cmp::Ordering::Greater => run,
                        }
                    })
                    .collect();
                *best = best.min(labelled_sse(v, &labels, k));
            }
            bounds.pop();
            return;
        }
        let last = *bounds.last().unwrap();
        for b in last..=v.len() {
            bounds.push(b);
            go(v, k, bounds, best);
            bounds.pop();
        }
    }
    let mut best = f64::INFINITY;
    go(&v, k, &mut vec![0], &mut best);
    best
}

/// The result is a consistent clustering whose error is its `sse`: ranges
/// cover the weights in order, centres ascend, the zero cluster's centre is
/// 0 and every non-empty other centre is its range's mean.
fn assert_consistent(w: &[f32], r: &KMeans1d, k: usize) {
    let sorted = SortedWeights::new(w);
    let v = sorted.values();
    assert_eq!((r.centres.len(), r.bounds.len()), (k, k + 1));
    assert_eq!((r.bounds[0], r.bounds[k]), (0, v.len()));
    assert!(r.bounds.windows(2).all(|b| b[0] <= b[1]), "{:?}", r.bounds);
    assert!(
        r.centres.windows(2).all(|c| c[0] <= c[1]),
        "{:?}",
        r.centres
    );
    assert_eq!(r.centres[r.zero], 0.0);
    let scale = sorted.max_abs().max(1e-30);
    let mut sse = 0.0;
    for j in 0..k {
        let xs = &v[r.bounds[j]..r.bounds[j + 1]];
        if j != r.zero && !xs.is_empty() {
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            assert!((r.centres[j] - mean).abs() <= 1e-12 * scale, "centre {j}");
        }
        sse += xs.iter().map(|x| (x - r.centres[j]).powi(2)).sum::<f64>();
    }
    let tol = 1e-9 * sse + 1e-15 * scale * scale;
    assert!((sse - r.sse).abs() <= tol, "{sse} vs {}", r.sse);
    // Measured to the nearest table value (as the mixture sees it) it is the same.
    assert!((sse_with_zero(&sorted, r) - r.sse).abs() <= tol);
}

/// Small layers: signed, negative-only, positive-only, on a coarse grid
/// (duplicates and exact zeros), or all equal.
fn small_case(case: u64, n_max: usize, k: usize) -> Vec<f32> {
    let mut rng = chacha(case);
    let n = rng.random_range(k..=n_max);
    let kind = case % 5;
    let mut w: Vec<f32> = (0..n)
        .map(|_| match kind {
            0 => rng.random_range(-1.0f32..1.0),
            1 => rng.random_range(-1.0f32..-0.01),
            2 => rng.random_range(0.2f32..3.0),
            3 => (rng.random_range(-1.0f32..1.0) * 3.0).round() / 3.0,
            _ => rng.random_range(-0.05f32..0.3),
        })
        .collect();
    if case.is_multiple_of(23) {
        w.iter_mut().for_each(|x| *x = 0.7);
    }
    w
}

#[test]
fn equals_exhaustive_search_on_small_inputs() {
    let mut checked = 0;
    for (k, n_max, cases) in [(2, 10, 300), (3, 9, 300), (4, 8, 200), (5, 7, 150)] {
        for case in 0..cases {
            let w = small_case(case * 7 + k as u64, n_max, k);
            let r = exact(&w, k);
            assert_consistent(&w, &r, k);
            let wf: Vec<f64> = w.iter().map(|&x| x as f64).collect();
            let (all, runs) = (brute_assignments(&wf, k), brute_contiguous(&wf, k));
            let tol = 1e-9 * all + 1e-300;
            assert!(
                (all - runs).abs() <= tol,
                "contiguity: {all} vs {runs} for {w:?}"
            );
            assert!(
                (r.sse - all).abs() <= tol,
                "K={k} {w:?}: DP {} vs exhaustive {all}",
                r.sse
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 950);
}

#[test]
fn hand_made_cases() {
    // All weights 0: everything in the zero cluster, error 0.
    let r = exact(&[0.0; 6], 3);
    assert_eq!((r.sse, r.bounds[r.zero + 1] - r.bounds[r.zero]), (0.0, 6));
    // All weights equal and far from 0: the zero cluster stays empty.
    let r = exact(&[2.0; 5], 2);
    assert_eq!((r.sse, r.centres.clone(), r.zero), (0.0, vec![0.0, 2.0], 0));
    assert_eq!(r.bounds, vec![0, 0, 5]);
    // n = K distinct values: error 0, one value per cluster, 0 in the zero one.
    let r = exact(&[-1.0, 0.0, 3.0], 3);
    assert_eq!((r.sse, r.centres.clone()), (0.0, vec![-1.0, 0.0, 3.0]));
    // Fewer distinct values than K: surplus clusters empty, centres distinct.
    let r = exact(&[1.0, 1.0, 2.0, 2.0, 2.0], 5);
    assert_eq!(r.sse, 0.0);
    assert!(r.centres.windows(2).all(|c| c[0] < c[1]), "{:?}", r.centres);
    // A layer the Lloyd path clusters the plain way: K = 2 on {-1, 1, 1.2}
    // must put -1 in the zero cluster (error 1 + 0.02) rather than the
    // plain k-means split measured to {0, 1.1}.
    let r = exact(&[-1.0, 1.0, 1.2], 2);
    assert!((r.sse - 1.02).abs() < 1e-6, "{}", r.sse);
}

#[test]
fn fewer_weights_than_components_is_an_error() {
    let e = kmeans_1d("tiny", &[0.1, 0.2], &cfg(3, KMeansMethod::Exact)).unwrap_err();
    assert!(e.to_string().contains("tiny"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Never above the Lloyd path's error to {0, mu}, on random layers.
    #[test]
    fn never_worse_than_lloyd(n in 20usize..3000, k in 2usize..=16, seed in 0u64..1000, coarse in any::<bool>()) {
        let mut w = workloads::normal_weights(n, 0.05, seed);
        if coarse {
            w.iter_mut().for_each(|x| *x = (*x * 200.0).round() / 200.0);
        }
        let k = k.min(n);
        let sorted = SortedWeights::new(&w);
        let e = kmeans_sorted(&sorted, &cfg(k, KMeansMethod::Exact));
        let l = kmeans_sorted(&sorted, &cfg(k, KMeansMethod::Lloyd));
        let (se, sl) = (sse_with_zero(&sorted, &e), sse_with_zero(&sorted, &l));
        prop_assert!(se <= sl * (1.0 + 1e-12) + 1e-300, "exact {} > lloyd {}", se, sl);
        prop_assert!((se - e.sse).abs() <= 1e-9 * se + 1e-300);
    }
}

/// A 1x1 conv (ResNet-18 layer2 downsample shape, Kaiming weights) with
/// K = 8 where the Lloyd path's 8 restarts stay measurably above the optimum.
#[test]
fn one_by_one_conv_k8_lloyd_above_the_optimum() {
    let w = workloads::kaiming_weights(&[128, 64, 1, 1], REGRESSION_SEED);
    let sorted = SortedWeights::new(&w);
    let e = kmeans_sorted(&sorted, &cfg(8, KMeansMethod::Exact));
    let l = kmeans_sorted(&sorted, &cfg(8, KMeansMethod::Lloyd));
    let (se, sl) = (sse_with_zero(&sorted, &e), sse_with_zero(&sorted, &l));
    assert!(sl > se * (1.0 + 1e-4), "Lloyd {sl} vs exact {se}");
    // The initialisation with the exact method reaches it.
    let init = InitConfig {
        k: 8,
        method: KMeansMethod::Exact,
        ..InitConfig::default()
    };
    let out = init_params("ds", &w, &init).unwrap();
    assert!((out.sse_zero - se).abs() <= 1e-9 * se);
}

const REGRESSION_SEED: u64 = 0;

/// How [`contiguous_dp`] prices a free cluster of sorted weights `t..i`.
#[derive(Clone, Copy)]
enum FreeCost {
    /// Squared deviations from the mean summed directly (O(n) per cluster).
    Direct,
    /// From prefix sums, `S2 - S1^2 / m` (O(1) per cluster).
    PrefixSums,
}

/// Straightforward DP over contiguous runs of the sorted weights with the
/// state (free clusters used, zero run placed): checks the fast DP (its
/// scans, their pruning and the layer pruning) on inputs too large for
/// exhaustive search. O(K n^3) with [`FreeCost::Direct`], O(K n^2) with
/// [`FreeCost::PrefixSums`] (for layers wide enough that the fast DP prunes
/// blocks of columns). Index loops mirror the recurrence.
#[allow(clippy::needless_range_loop)]
fn contiguous_dp(w: &[f32], k: usize, cost: FreeCost) -> f64 {
    let mut v: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let (mut s1, mut s2) = (vec![0.0], vec![0.0]);
    for &x in &v {
        s1.push(s1[s1.len() - 1] + x);
        s2.push(s2[s2.len() - 1] + x * x);
    }
    let free = |t: usize, i: usize| match (i - t, cost) {
        (0, _) => 0.0,
        (m, FreeCost::Direct) => {
            let mean = (s1[i] - s1[t]) / m as f64;
            v[t..i].iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
        }
        (m, FreeCost::PrefixSums) => {
            let d = s1[i] - s1[t];
            (s2[i] - s2[t] - d * d / m as f64).max(0.0)
        }
    };
    let zero = |t: usize, i: usize| s2[i] - s2[t];
    // f[z][i]: first i weights, j free clusters so far, z = zero run placed.
    let inf = f64::INFINITY;
    let mut f = [vec![inf; n + 1], vec![inf; n + 1]];
    f[0][0] = 0.0;
    for t in 0..=n {
        f[1][t] = zero(0, t);
    }
    for _ in 0..k - 1 {
        let mut g = [vec![inf; n + 1], vec![inf; n + 1]];
        for i in 0..=n {
            for t in 0..=i {
                let c = free(t, i);
                g[0][i] = g[0][i].min(f[0][t] + c);
                g[1][i] = g[1][i].min(f[1][t] + c);
            }
        }
        for i in 0..=n {
            for t in 0..=i {
                g[1][i] = g[1][i].min(g[0][t] + zero(t, i));
            }
        }
        f = g;
    }
    f[1][n]
}

#[test]
fn equals_quadratic_dp_on_mid_sized_layers() {
    for case in 0..24u64 {
        let mut rng = chacha(1000 + case);
        let (n, k) = (rng.random_range(40..400), rng.random_range(2..=9));
        let mut w = workloads::normal_weights(n, 0.1, case);
        match case % 4 {
            1 => w.iter_mut().for_each(|x| *x = x.abs() + 0.05),
            2 => w.iter_mut().for_each(|x| *x = (*x * 30.0).round() / 30.0),
            3 => w.iter_mut().for_each(|x| *x -= 0.08),
            _ => {}
        }
        let (r, want) = (exact(&w, k), contiguous_dp(&w, k, FreeCost::Direct));
        assert!(
            (r.sse - want).abs() <= 1e-9 * want + 1e-300,
            "case {case} n={n} K={k}: {} vs {want}",
            r.sse
        );
    }
}

#[test]
fn equals_prefix_sum_dp_on_layers_wide_enough_to_prune() {
    for case in 0..6u64 {
        let mut rng = chacha(2000 + case);
        let n = rng.random_range(1200..2000);
        let k = [4, 9, 16][case as usize % 3];
        let mut w = workloads::normal_weights(n, 0.1, 50 + case);
        match case % 4 {
            1 => w.iter_mut().for_each(|x| *x = (*x * 30.0).round() / 30.0),
            2 => w.iter_mut().for_each(|x| *x -= 0.08),
            _ => {}
        }
        let (r, want) = (exact(&w, k), contiguous_dp(&w, k, FreeCost::PrefixSums));
        assert_consistent(&w, &r, k);
        assert!(
            (r.sse - want).abs() <= 1e-9 * want + 1e-300,
            "case {case} n={n} K={k}: {} vs {want}",
            r.sse
        );
    }
}
