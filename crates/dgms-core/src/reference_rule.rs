//! The DGMS authors' hardening rule, in their float32 arithmetic
//! (`docs/METHOD.md#hardening`): for a weight w,
//!
//! ```text
//! p_k     = |pi_k| / sum_j |pi_j|
//! N_k     = (1 / sqrt(2pi sigma_k^2)) exp(-(w - mu_k)^2 / (2 sigma_k^2)) p_k
//! gamma_k = N_k / (sum_j N_j + 1e-11)
//! a       = softmax(gamma / tau)
//! index   = the first k with the largest a_k
//! ```
//!
//! every step rounded to f32 as PyTorch computes it. Where the densities
//! of all components underflow in f32 (a weight far from every mean, or
//! narrow components), every gamma_k is 0 or too small for the softmax to
//! tell apart, the a_k tie, and the reference takes index 0: the weight
//! becomes 0. The log-space rule this project uses by default
//! ([`crate::kernel`]) picks the most probable component there instead.
//! Elsewhere the two agree except at exact ties of f32 rounding.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::params::MixtureParams;

/// Which rule hardening uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HardeningRule {
    /// The most probable component, computed in log space (f64): correct
    /// wherever the reference's densities underflow.
    #[default]
    LogSpace,
    /// The reference's float32 computation, underflow included: the
    /// released models' exact behaviour.
    Reference,
}

impl std::str::FromStr for HardeningRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log-space" | "logspace" | "default" => Ok(Self::LogSpace),
            "reference" => Ok(Self::Reference),
            other => Err(format!(
                "unknown hardening rule `{other}`: expected `log-space` or `reference`"
            )),
        }
    }
}

/// The reference's cfg.EPS, added to the sum of densities.
const EPS: f32 = 1e-11;

/// Weights per rayon task.
const CHUNK: usize = 4096;

/// Per-component f32 constants of the reference's density.
#[derive(Clone, Debug)]
pub struct ReferenceRule {
    /// Means, index 0 being the zero component (0).
    mu: Vec<f32>,
    /// 1 / sqrt(2pi sigma^2).
    coef: Vec<f32>,
    /// 2 sigma^2.
    two_var: Vec<f32>,
    /// Normalised |pi|.
    pi: Vec<f32>,
    tau: f32,
}

/// One weight's outcome under the reference rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceChoice {
    /// The component index the reference picks.
    pub index: u8,
    /// The largest assignment is shared by several components (all
    /// densities underflowed): the reference fell back to the first.
    pub undecided: bool,
}

impl ReferenceRule {
    /// The constants of `params` (validated by the caller).
    pub fn new(params: &MixtureParams) -> Self {
        let abs_pi: Vec<f32> = params.pis_with_zero().iter().map(|p| p.abs()).collect();
        let pi_sum: f32 = abs_pi.iter().sum();
        // torch.tensor([2 * math.pi]) is a float32 tensor.
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let sigmas = params.sigmas_with_zero();
        let var: Vec<f32> = sigmas.iter().map(|s| s * s).collect();
        Self {
            mu: params.means_with_zero(),
            coef: var.iter().map(|v| 1.0 / (two_pi * v).sqrt()).collect(),
            two_var: var.iter().map(|v| 2.0 * v).collect(),
            pi: abs_pi.iter().map(|p| p / pi_sum).collect(),
            tau: params.tau,
        }
    }

    /// The reference's choice for the weight `w`.
    pub fn choose(&self, w: f32) -> ReferenceChoice {
        let k = self.mu.len();
        let mut density = [0f32; crate::params::MAX_COMPONENTS];
        let density = &mut density[..k];
        let mut sum = 0f32;
        for (j, d) in density.iter_mut().enumerate() {
            let diff = w - self.mu[j];
            *d = self.coef[j] * (-(diff * diff) / self.two_var[j]).exp() * self.pi[j];
            sum += *d;
        }
        let denom = sum + EPS;
        let mut max = f32::NEG_INFINITY;
        for d in density.iter_mut() {
            *d = *d / denom / self.tau;
            max = max.max(*d);
        }
        let mut total = 0f32;
        for d in density.iter_mut() {
            *d = (*d - max).exp();
            total += *d;
        }
        let inv = 1.0 / total;
        let mut best = 0usize;
        let mut best_a = f32::NEG_INFINITY;
        let mut ties = 0usize;
        for (j, &e) in density.iter().enumerate() {
            let a = e * inv;
            if a > best_a {
                best_a = a;
                best = j;
                ties = 1;
            } else if a == best_a {
                ties += 1;
            }
        }
        ReferenceChoice {
            index: best as u8,
            undecided: ties > 1,
        }
    }

    /// Writes the reference's index of every weight into `out` (same
    /// length) and returns how many were undecided (sent to index 0 by
    /// underflow).
    pub fn indices(&self, weights: &[f32], out: &mut [u8]) -> usize {
        weights
            .par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .map(|(w, o)| {
                let mut undecided = 0;
                for (w, o) in w.iter().zip(o.iter_mut()) {
                    let c = self.choose(*w);
                    *o = c.index;
                    undecided += c.undecided as usize;
                }
                undecided
            })
            .sum()
    }

    /// How many of `weights` the reference leaves undecided.
    pub fn undecided(&self, weights: &[f32]) -> usize {
        weights
            .par_chunks(CHUNK)
            .map(|w| w.iter().filter(|&&w| self.choose(w).undecided).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MixtureParams {
        MixtureParams {
            mu: vec![-0.1, 0.1],
            sigma: vec![0.01, 0.01],
            pi: vec![1.0, 1.0],
            pi_zero: 2.0,
            sigma_zero: 0.01,
            tau: 0.01,
        }
    }

    #[test]
    fn near_a_mean_picks_it() {
        let r = ReferenceRule::new(&params());
        assert_eq!(r.choose(0.098).index, 2);
        assert_eq!(r.choose(-0.101).index, 1);
        assert_eq!(r.choose(0.003).index, 0);
        assert!(!r.choose(0.098).undecided);
    }

    #[test]
    fn far_weights_underflow_to_zero() {
        // 1.0 is 90 sigmas from the nearest mean: every f32 density is 0.
        let r = ReferenceRule::new(&params());
        let c = r.choose(1.0);
        assert_eq!(
            c,
            ReferenceChoice {
                index: 0,
                undecided: true
            }
        );
        let mut out = [9u8; 3];
        assert_eq!(r.indices(&[1.0, 0.1, -3.0], &mut out), 2);
        assert_eq!(out, [0, 2, 0]);
    }

    #[test]
    fn negative_sigma_acts_as_its_magnitude() {
        let mut p = params();
        let a = ReferenceRule::new(&p);
        p.sigma = vec![-0.01, 0.01];
        let b = ReferenceRule::new(&p);
        for w in [-0.2f32, -0.1, -0.05, 0.0, 0.04, 0.3] {
            assert_eq!(a.choose(w), b.choose(w), "w = {w}");
        }
    }

    #[test]
    fn rule_names_parse() {
        assert_eq!("reference".parse(), Ok(HardeningRule::Reference));
        assert_eq!("log-space".parse(), Ok(HardeningRule::LogSpace));
        assert!("nearest".parse::<HardeningRule>().is_err());
    }
}
