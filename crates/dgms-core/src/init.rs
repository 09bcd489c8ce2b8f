//! Mixture parameters of a layer from its pretrained weights
//! (`docs/METHOD.md#initialisation`).
//!
//! One 1-D k-means per layer, by default the exact minimum of the error to
//! {0, mu_1..mu_{K-1}} ([`crate::kmeans_exact`]); its zero cluster becomes
//! the zero component, cluster fractions become the mixing weights and
//! cluster spreads the widths. The weights are sorted once per
//! layer and layers run in parallel, so a whole model initialises in seconds
//! (the reference loops over weights in Python and takes minutes to hours).

use rayon::prelude::*;

use crate::error::Result;
use crate::kmeans::{assign, check_input, kmeans_sorted, zero_cluster, zero_table};
use crate::kmeans::{KMeans1d, KMeansConfig, KMeansMethod, SortedWeights};
use crate::params::{MixtureParams, DEFAULT_TAU};

/// How the widths sigma (and sigma_0) are initialised.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum SigmaInit {
    /// The method's formula: the cluster's sample standard deviation about its
    /// centre (about 0 for the zero cluster), see [`init_params`].
    #[default]
    Cluster,
    /// Every width (sigma_0 included) set to this value.
    Empirical(f32),
}

impl SigmaInit {
    /// The "empirical" option of `docs/METHOD.md#initialisation`: every
    /// width 0.01.
    pub fn empirical() -> Self {
        Self::Empirical(0.01)
    }
}

/// Settings of [`init_params`].
#[derive(Clone, Debug, PartialEq)]
pub struct InitConfig {
    /// Number of components K, zero component included. Default 16.
    pub k: usize,
    /// Seed of the k-means++ restarts (Lloyd only). Default 0.
    pub seed: u64,
    /// k-means restarts, best kept (Lloyd only). Default 8.
    pub restarts: usize,
    /// Lloyd steps per restart at most (Lloyd only). Default 1000.
    pub max_iters: usize,
    /// How the clusters are found. Default [`KMeansMethod::Exact`].
    pub method: KMeansMethod,
    /// Width initialisation. Default [`SigmaInit::Cluster`].
    pub sigma: SigmaInit,
    /// Temperature of the assignment softmax. Default [`DEFAULT_TAU`].
    pub tau: f32,
}

impl Default for InitConfig {
    fn default() -> Self {
        let km = KMeansConfig::default();
        Self {
            k: km.k,
            seed: km.seed,
            restarts: km.restarts,
            max_iters: km.max_iters,
            method: km.method,
            sigma: SigmaInit::Cluster,
            tau: DEFAULT_TAU,
        }
    }
}

impl InitConfig {
    /// The k-means part of the settings.
    pub fn kmeans(&self) -> KMeansConfig {
        KMeansConfig {
            k: self.k,
            seed: self.seed,
            restarts: self.restarts,
            max_iters: self.max_iters,
            method: self.method,
        }
    }
}

/// What [`init_params`] produced, with the k-means it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct InitOutcome {
    /// The initial mixture (validated).
    pub params: MixtureParams,
    /// Cluster sizes per component: index 0 the zero component, then in the
    /// order of `params.mu`.
    pub counts: Vec<usize>,
    /// SSE of the weights to their nearest mixture mean, the zero
    /// component's being 0 ([`crate::kmeans::sse_with_zero`], the figure
    /// compared against the reference's k-means), by direct summation.
    pub sse_zero: f64,
    /// The k-means result (clusters in ascending centre order).
    pub kmeans: KMeans1d,
}

/// Initialises one layer's mixture from its weights
/// (`docs/METHOD.md#initialisation`).
///
/// - k-means with K clusters ([`KMeansMethod::Exact`]: the partition that
///   minimises the error to {0, mu}, whose zero cluster becomes component 0;
///   Lloyd: the non-empty cluster with the smallest |centre| becomes
///   component 0); component 0 has mean 0, the other K-1 centres (their
///   clusters' means) become `mu` in ascending order;
/// - `pi_k = n_k / n` (f32);
/// - [`SigmaInit::Cluster`]: `sigma_k = sqrt(sum_{w in k} (w - c_k)^2 / (n_k - 1))`
///   with `c_0 = 0` for the zero cluster and `c_k = mu_k` otherwise.
///
/// **Fallback for clusters with fewer than 2 members** (the formula divides
/// by zero there): `sigma_k` is half the distance from the component's mean
/// (0 for the zero component) to the nearest other component mean (0
/// included). An empty cluster, only possible with fewer than K distinct
/// weights (or, for the zero cluster with the exact method, when no weight
/// is nearer to 0 than to a mean), gets `pi_k = 0.5 / n`.
///
/// **Floor**: with [`SigmaInit::Cluster`] every width is raised to at least
/// `max(1e-6 * max|w|, f32::MIN_POSITIVE)`, so it is always > 0 (this only
/// acts on clusters of (nearly) identical weights or coinciding means).
/// [`SigmaInit::Empirical`] widths are used as given.
///
/// Errors: K outside 2..=256, a non-finite weight, fewer weights than K, or
/// parameters failing [`MixtureParams::validate`] (e.g. a bad `tau`); every
/// error names `layer`. The same `cfg` gives bitwise the same result.
pub fn init_params(layer: &str, weights: &[f32], cfg: &InitConfig) -> Result<InitOutcome> {
    check_input(layer, weights, cfg.k)?;
    let sorted = SortedWeights::new(weights);
    let kmeans = kmeans_sorted(&sorted, &cfg.kmeans());
    let outcome = from_kmeans(&sorted, kmeans, cfg);
    outcome.params.validate(layer)?;
    Ok(outcome)
}

/// Initialises several layers in parallel (deterministic: the result, and
/// the error returned, are those of a sequential run in `layers` order).
pub fn init_layers(layers: &[(&str, &[f32])], cfg: &InitConfig) -> Result<Vec<InitOutcome>> {
    let all: Vec<Result<InitOutcome>> = layers
        .par_iter()
        .map(|(name, w)| init_params(name, w, cfg))
        .collect();
    all.into_iter().collect()
}

/// Builds the mixture from a k-means result (see [`init_params`]).
fn from_kmeans(s: &SortedWeights, kmeans: KMeans1d, cfg: &InitConfig) -> InitOutcome {
    let (k, n) = (kmeans.centres.len(), s.len() as f64);
    let z = zero_cluster(&kmeans);
    // Component order: zero cluster first, then the others ascending.
    let order: Vec<usize> = std::iter::once(z)
        .chain((0..k).filter(|&j| j != z))
        .collect();
    let means: Vec<f64> = order
        .iter()
        .map(|&j| if j == z { 0.0 } else { kmeans.centres[j] })
        .collect();
    let ranges: Vec<(usize, usize)> = order
        .iter()
        .map(|&j| (kmeans.bounds[j], kmeans.bounds[j + 1]))
        .collect();
    let counts: Vec<usize> = ranges.iter().map(|(lo, hi)| hi - lo).collect();
    // Direct (not prefix-sum) SSEs: each cluster about its component mean,
    // and every weight about its nearest table value (the zero SSE).
    let direct = |(lo, hi): (usize, usize), c: f64| -> f64 {
        s.values()[lo..hi].iter().map(|&w| (w - c) * (w - c)).sum()
    };
    let sse: Vec<f64> = (0..k)
        .into_par_iter()
        .map(|i| direct(ranges[i], means[i]))
        .collect();
    let table = zero_table(&kmeans);
    let tb = assign(s.values(), &table);
    let sse_zero: Vec<f64> = (0..k)
        .into_par_iter()
        .map(|j| direct((tb[j], tb[j + 1]), table[j]))
        .collect();
    let floor = ((1e-6 * s.max_abs()) as f32).max(f32::MIN_POSITIVE);
    let sigma: Vec<f32> = (0..k)
        .map(|i| match cfg.sigma {
            SigmaInit::Empirical(v) => v,
            SigmaInit::Cluster => {
                let raw = match counts[i] {
                    0 | 1 => 0.5 * nearest_other(&means, i),
                    c => (sse[i] / (c - 1) as f64).sqrt(),
                };
                (raw as f32).max(floor)
            }
        })
        .collect();
    let pi: Vec<f32> = counts
        .iter()
        .map(|&c| if c == 0 { 0.5 / n } else { c as f64 / n } as f32)
        .collect();
    let params = MixtureParams {
        mu: means[1..].iter().map(|&m| m as f32).collect(),
        sigma: sigma[1..].to_vec(),
        pi: pi[1..].to_vec(),
        pi_zero: pi[0],
        sigma_zero: sigma[0],
        tau: cfg.tau,
    };
    InitOutcome {
        params,
        counts,
        sse_zero: sse_zero.iter().sum(),
        kmeans,
    }
}

/// Distance from `means[i]` to the nearest other mean.
fn nearest_other(means: &[f64], i: usize) -> f64 {
    means
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &m)| (m - means[i]).abs())
        .fold(f64::INFINITY, f64::min)
}
