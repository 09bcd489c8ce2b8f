//! The shortcut of [`SideDp::extend`]: a layer computed only from the
//! previous layer's split onwards finds the split and cost that the whole
//! layer gives.

use super::{Side, SideDp};
use crate::kmeans::prefixes;
use crate::workloads;

/// The least `D_j(i) + zero_cost(i)` over every row of the layer just
/// completed, the leftmost on ties.
fn split_over_the_whole_row(dp: &SideDp) -> (f64, usize) {
    let side = dp.side;
    let mut best = (f64::INFINITY, usize::MAX);
    for (i, &d) in dp.row.iter().enumerate() {
        let v = d + side.zero_cost(i);
        if v < best.0 {
            best = (v, i);
        }
    }
    best
}

#[test]
fn a_layer_from_the_previous_split_on_finds_the_whole_layers_split() {
    let cases = [
        (0u64, 0.1f64, false),
        (1, 0.02, true),
        (2, 1.0, false),
        (3, 0.05, true),
    ];
    for (seed, spread, ties) in cases {
        let n = 3000 + 977 * seed as usize;
        // A negative side: ascending, from the far end towards 0.
        let mut x: Vec<f64> = workloads::normal_weights(n, spread, seed)
            .iter()
            .map(|&w| -(w as f64).abs())
            .collect();
        if ties {
            // Many equal weights: equal costs between rows.
            x.iter_mut()
                .for_each(|w| *w = (*w * 300.0 / spread).round());
        }
        x.sort_by(f64::total_cmp);
        let side = Side::new(&x);
        let mut dp = SideDp::new(&side);
        dp.extend();
        let mut skipped = 0;
        for j in 2..=9 {
            dp.extend();
            let from = dp.pending.expect("a layer past the first starts pending");
            skipped += from;
            // The next call fills in rows 0..from; check against them all.
            dp.complete();
            let whole = split_over_the_whole_row(&dp);
            assert_eq!(
                (dp.best[j], dp.split[j]),
                whole,
                "seed {seed} layer {j}: computed from row {from}"
            );
            assert!(dp.split[j] >= dp.split[j - 1], "seed {seed} layer {j}");
            assert!(dp.split[j] < n, "seed {seed} layer {j}: no zero cluster");
        }
        // The shortcut is taken, not vacuous.
        assert!(skipped > n, "seed {seed}: {skipped} rows skipped");
    }
}

/// `prefixes` keeps each sum's own chain: equal to one sum at a time.
#[test]
fn prefixes_in_one_pass_equal_one_at_a_time() {
    let x: Vec<f64> = workloads::normal_weights(5000, 0.3, 7)
        .iter()
        .map(|&w| w as f64)
        .collect();
    let [a, b, c] = prefixes(&x, |v| [v, v * v, v - 1.0]);
    let [a1] = prefixes(&x, |v| [v]);
    let [b1] = prefixes(&x, |v| [v * v]);
    let [c1] = prefixes(&x, |v| [v - 1.0]);
    assert_eq!((&a, &b, &c), (&a1, &b1, &c1));
    let direct: f64 = x.iter().sum();
    assert!((a1[x.len()] - direct).abs() < 1e-9);
}
