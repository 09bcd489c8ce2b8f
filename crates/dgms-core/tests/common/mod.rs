//! Seeded random mixtures and layers shared by the integration tests (the
//! generic helpers are in `dgms-test-support`).
#![allow(dead_code)]

use dgms_core::MixtureParams;
use dgms_test_support::rng::chacha;
use rand::Rng;

/// A random but well-conditioned mixture with K components.
pub fn random_params(k: usize, tau: f32, seed: u64) -> MixtureParams {
    let mut rng = chacha(seed);
    let mut sample = |lo: f32, hi: f32, n: usize| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mu = sample(-0.15, 0.15, k - 1);
    let sigma = sample(0.005, 0.04, k - 1);
    let pi = sample(0.05, 1.0, k - 1);
    let rest = sample(0.005, 1.0, 2);
    MixtureParams {
        mu,
        sigma,
        pi,
        pi_zero: rest[1],
        sigma_zero: rest[0].min(0.04),
        tau,
    }
}

/// `n` random weights in [-0.2, 0.2].
pub fn random_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = chacha(seed ^ 0x5eed);
    (0..n).map(|_| rng.random_range(-0.2f32..0.2)).collect()
}
