//! Shared helpers of the integration tests: seeded random mixtures and
//! layers, and relative-error comparison.
#![allow(dead_code)]

use candle_core::{DType, Tensor};
use dgms_core::MixtureParams;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random but well-conditioned mixture with K components.
pub fn random_params(k: usize, tau: f32, seed: u64) -> MixtureParams {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
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
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    (0..n).map(|_| rng.random_range(-0.2f32..0.2)).collect()
}

/// A tensor's values as f64.
pub fn host(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1())
        .expect("tensor to host")
}

/// max |got - expected| / max(|expected|, floor).
pub fn rel_err(got: &[f64], expected: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), expected.len());
    let max_diff = got
        .iter()
        .zip(expected)
        .map(|(g, e)| (g - e).abs())
        .fold(0.0, f64::max);
    let max_ref = expected.iter().map(|e| e.abs()).fold(floor, f64::max);
    max_diff / max_ref
}
