//! Property tests of the mixture: hard weights lie in the table, soft
//! weights tend to hard ones as tau -> 0, and scaling every pi leaves the
//! mixture unchanged.

use candle_core::{Device, Tensor};
use dgms_core::{GaussianMixture, MixtureOptions, MixtureParams};
use dgms_test_support::tensors::to_f64_vec as host;
use proptest::prelude::*;

fn mixture_strategy() -> impl Strategy<Value = (MixtureParams, Vec<f32>)> {
    (2usize..=17).prop_flat_map(|k| {
        (
            prop::collection::vec(-0.3f32..0.3, k - 1),
            prop::collection::vec(1e-3f32..0.1, k),
            prop::collection::vec(1e-3f32..1.0, k),
            prop::collection::vec(-0.5f32..0.5, 1..300),
        )
            .prop_map(|(mu, sigma, pi, weights)| {
                let params = MixtureParams {
                    mu,
                    sigma: sigma[1..].to_vec(),
                    pi: pi[1..].to_vec(),
                    pi_zero: pi[0],
                    sigma_zero: sigma[0],
                    tau: 0.01,
                };
                (params, weights)
            })
    })
}

fn build(params: &MixtureParams) -> GaussianMixture {
    GaussianMixture::new("prop", params, &MixtureOptions::default()).unwrap()
}

fn tensor(w: &[f32]) -> Tensor {
    Tensor::from_slice(w, w.len(), &Device::Cpu).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn hard_weights_take_only_table_values((params, weights) in mixture_strategy()) {
        let mixture = build(&params);
        let hardened = mixture.harden(&tensor(&weights)).unwrap();
        let table = params.means_with_zero();
        prop_assert_eq!(&hardened.table, &table);
        prop_assert_eq!(hardened.table[0], 0.0);
        for h in host(&mixture.hard_weights(&tensor(&weights)).unwrap()) {
            prop_assert!(table.iter().any(|&t| t as f64 == h), "{} not in {:?}", h, table);
        }
        prop_assert!(hardened.indices.iter().all(|&i| (i as usize) < params.k()));
    }

    #[test]
    fn soft_tends_to_hard_as_tau_goes_to_zero((params, weights) in mixture_strategy()) {
        let mut cold = params.clone();
        cold.tau = 1e-5;
        let mixture = build(&cold);
        let w = tensor(&weights);
        let soft = host(&mixture.soft_weights(&w).unwrap());
        let hard = host(&mixture.hard_weights(&w).unwrap());
        let gamma = host(&mixture.responsibilities(&w).unwrap());
        let k = params.k();
        let scale = params.mu.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
        for (i, (s, h)) in soft.iter().zip(&hard).enumerate() {
            // Only where the two most likely components are not tied: the
            // limit is the hard weight when the gap is >> tau.
            let mut row: Vec<f64> = gamma[i * k..(i + 1) * k].to_vec();
            row.sort_by(|a, b| b.total_cmp(a));
            if row[0] - row[1] > 1e-3 {
                prop_assert!((s - h).abs() <= 1e-5 * scale.max(1e-3),
                    "weight {}: soft {} hard {} gap {}", weights[i], s, h, row[0] - row[1]);
            }
        }
    }

    #[test]
    fn scaling_pi_changes_nothing((params, weights) in mixture_strategy(), c in 0.01f32..100.0) {
        let mut scaled = params.clone();
        scaled.pi.iter_mut().for_each(|p| *p *= c);
        scaled.pi_zero *= c;
        let (a, b) = (build(&params), build(&scaled));
        let w = tensor(&weights);
        let (sa, sb) = (host(&a.soft_weights(&w).unwrap()), host(&b.soft_weights(&w).unwrap()));
        for (x, y) in sa.iter().zip(&sb) {
            prop_assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{} vs {}", x, y);
        }
        let (ga, gb) = (host(&a.responsibilities(&w).unwrap()), host(&b.responsibilities(&w).unwrap()));
        for (x, y) in ga.iter().zip(&gb) {
            prop_assert!((x - y).abs() <= 1e-5, "gamma {} vs {}", x, y);
        }
    }
}
