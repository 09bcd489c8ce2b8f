//! Statistics of accuracy comparisons on a finite test set: a confidence
//! interval for one model's top-1 and a paired test of two models on the
//! same images, so a table can say whether a difference is more than noise.

/// The 97.5 % quantile of the standard normal distribution (two-sided 95 %).
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson's score interval for a proportion with `successes` of `n`
/// trials at normal quantile `z` (use [`Z95`] for 95 %), as fractions in
/// [0, 1]. Unlike the normal approximation it stays inside [0, 1] and is
/// not degenerate at 0 or n successes. `n = 0` gives (0, 1).
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (successes.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// McNemar's exact test of two classifiers on the same images: `only_a`
/// images right only by the first, `only_b` right only by the second (the
/// discordant pairs; images both got right or both wrong carry no
/// information). Under the null hypothesis of equal accuracy each
/// discordant image is a fair coin, so the two-sided p-value is
/// `min(1, 2 P[X <= min(only_a, only_b)])` with X ~ Binomial(only_a +
/// only_b, 1/2). No discordant pair gives 1. Computed in log space, exact
/// to f64 rounding for any count.
pub fn mcnemar_exact(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let m = only_a.min(only_b);
    // log C(n, i) - n log 2 for i = 0..=m, summed with log-sum-exp.
    let ln2 = std::f64::consts::LN_2;
    let mut log_terms = Vec::with_capacity(m + 1);
    let mut log_binom = 0.0f64;
    for i in 0..=m {
        if i > 0 {
            log_binom += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        log_terms.push(log_binom - n as f64 * ln2);
    }
    let top = log_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = top + log_terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    (2.0 * tail.exp()).min(1.0)
}

/// The discordant counts of two per-image results on the same images:
/// (right only in `a`, right only in `b`). The slices must be equally long.
pub fn discordant(a: &[bool], b: &[bool]) -> (usize, usize) {
    a.iter().zip(b).fold((0, 0), |(x, y), (&ra, &rb)| {
        (x + usize::from(ra && !rb), y + usize::from(rb && !ra))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 81 of 263 (Wilson 1927 style example, values from R's prop.test
        // without continuity correction): 0.2553 .. 0.3662.
        let (lo, hi) = wilson_interval(81, 263, Z95);
        assert!(
            (lo - 0.2553).abs() < 1e-4 && (hi - 0.3662).abs() < 1e-4,
            "{lo} {hi}"
        );
        // All right: the interval ends at 1 and is not a point.
        let (lo, hi) = wilson_interval(10, 10, Z95);
        assert!(hi > 1.0 - 1e-12 && hi <= 1.0, "{hi}");
        assert!((lo - 0.7225).abs() < 1e-4, "{lo}");
        assert_eq!(wilson_interval(0, 0, Z95), (0.0, 1.0));
        // Narrower with more images at the same rate.
        let w = |k, n| {
            let (a, b) = wilson_interval(k, n, Z95);
            b - a
        };
        assert!(w(8_900, 10_000) < w(1_780, 2_000));
    }

    #[test]
    fn mcnemar_matches_the_binomial_tail() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        // 0 vs 6: 2 * 0.5^6.
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-15);
        // 2 vs 8: 2 * (1 + 10 + 45) / 1024.
        assert!((mcnemar_exact(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(8, 2), mcnemar_exact(2, 8));
        // Large counts stay finite and small: 100 vs 200.
        let p = mcnemar_exact(100, 200);
        assert!(p > 0.0 && p < 1e-7, "{p}");
    }

    #[test]
    fn discordant_counts_pairs() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        assert_eq!(discordant(&a, &b), (2, 1));
    }
}
