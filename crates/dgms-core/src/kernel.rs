//! The per-weight mixture math on plain slices, in log space, parallel over
//! chunks of weights with rayon. No K x N intermediate is ever stored: the
//! backward pass recomputes the K responsibilities of each weight.
//!
//! For a weight w and components k = 0..K-1 (k = 0 the zero component):
//!
//! ```text
//! l_k     = log p_k - log |sigma_k| - log(2 pi)/2 - ((w - mu_k)/sigma_k)^2 / 2
//! gamma_k = exp(l_k - logsumexp_j l_j)          responsibilities
//! a_k     = softmax_k(gamma_k / tau)            assignment
//! s       = sum_k a_k mu_k                      soft weight (mu_0 = 0)
//! ```
//!
//! Backward, for an upstream gradient g = dL/ds:
//!
//! ```text
//! dz_k  = g a_k (mu_k - s)            z_k = gamma_k / tau
//! dg_k  = dz_k / tau                  dL/dgamma_k
//! t     = sum_k gamma_k dg_k
//! e_k   = gamma_k (dg_k - t)          dL/dl_k
//! r_k   = (w - mu_k) / sigma_k
//! dL/dw       = -sum_k e_k r_k / sigma_k
//! dL/dmu_k   +=  e_k r_k / sigma_k + g a_k
//! dL/dsigma_k += e_k (r_k^2 - 1) / sigma_k
//! dL/dpi_k    = sign(pi_k) (E_k / |pi_k| - sum_j E_j / sum_j |pi_j|),  E_k = sum_w e_k
//! dL/dtau    += -t / tau
//! ```
//!
//! Everything is computed in f64 (see [`Prepared`]); parameter gradients,
//! sums over every weight, accumulate in f64 too. The derivation and the
//! numerical choices are in `docs/METHOD.md#gradients` and
//! `docs/METHOD.md#numerics`.

use num_traits::Float;
use rayon::prelude::*;

use crate::params::PackedLayout;

/// Weights per rayon task: large enough to amortise scheduling, small
/// enough to balance two to many cores.
const CHUNK: usize = 4096;

/// exp(x) for x <= 0, flushing x < [`EXP_CUTOFF`] to 0.
///
/// Every sum of exponentials here has a largest term of exactly 1 (the max is
/// subtracted first), so a term below exp(-60) ~ 8.7e-27 cannot change it in
/// f64 (epsilon 2.2e-16). Most components of most weights are that far away,
/// so skipping their exp() is most of the kernel's speed.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    if x < EXP_CUTOFF {
        0.0
    } else {
        x.exp()
    }
}

/// See [`exp_nonpositive`].
const EXP_CUTOFF: f64 = -60.0;

/// Floating-point types the kernels run in (as loaded and stored; the math
/// itself runs in f64).
pub trait Real: Float + Send + Sync + Into<f64> + 'static {
    /// Conversion from f64 (rounding for f32).
    fn from_f64(x: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
}

/// Per-component constants derived once from the parameters.
///
/// Whatever the tensors' dtype, the math runs in f64: with tau = 0.01 the
/// 1/tau factors amplify f32 rounding of the responsibilities to ~1e-4
/// relative error in the gradients (measured on the composed f32 op against
/// f64), while f64 internals make the f32 results correctly rounded to
/// ~1e-7. Loads and stores stay in the tensors' dtype.
#[derive(Clone, Debug)]
pub struct Prepared {
    k: usize,
    mu: Vec<f64>,
    inv_sigma: Vec<f64>,
    /// log p_k - log sigma_k - log(2 pi)/2.
    log_coef: Vec<f64>,
    inv_tau: f64,
    /// sign(pi_k) and 1/|pi_k| (0 for a component with pi_k = 0).
    pi_sign: Vec<f64>,
    inv_abs_pi: Vec<f64>,
    inv_pi_sum: f64,
}

impl Prepared {
    /// Builds the constants from a packed parameter vector (see
    /// [`PackedLayout`]). The caller validates the values.
    pub fn from_packed<T: Real>(packed: &[T], layout: PackedLayout) -> Self {
        let k = layout.k;
        let pi = &packed[layout.pi()];
        let sigma = &packed[layout.sigma()];
        let mut mu = vec![0.0];
        mu.extend(packed[layout.mu()].iter().map(|&m| m.into()));
        let tau: f64 = packed[layout.tau()].into();

        let abs_pi: Vec<f64> = pi.iter().map(|&p| p.into().abs()).collect();
        let pi_sum: f64 = abs_pi.iter().sum();
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        let log_coef = (0..k)
            .map(|j| {
                // Only sigma^2 enters the density: a width's sign is free,
                // as in the reference (`docs/METHOD.md#training`).
                let s: f64 = sigma[j].into();
                (abs_pi[j] / pi_sum).ln() - s.abs().ln() - half_log_2pi
            })
            .collect();
        Self {
            k,
            mu,
            inv_sigma: sigma.iter().map(|&s| 1.0 / s.into()).collect(),
            log_coef,
            inv_tau: 1.0 / tau,
            pi_sign: pi.iter().map(|&p| p.into().signum()).collect(),
            inv_abs_pi: abs_pi
                .iter()
                .map(|&a| if a > 0.0 { 1.0 / a } else { 0.0 })
                .collect(),
            inv_pi_sum: 1.0 / pi_sum,
        }
    }

    /// Number of components.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Fills `lp` with the log joint densities l_k(w) and returns the index
    /// of the largest one (the hard assignment).
    ///
    /// If every l_k is -inf ((w - mu_k) / sigma_k overflows for all k), the
    /// component nearest in units of its own sigma wins, so that a weight is
    /// never left without a component.
    #[inline]
    fn log_joint(&self, w: f64, lp: &mut [f64]) -> usize {
        let mut best = 0;
        let mut best_val = f64::NEG_INFINITY;
        for (j, l) in lp.iter_mut().enumerate() {
            let r = (w - self.mu[j]) * self.inv_sigma[j];
            *l = self.log_coef[j] - 0.5 * r * r;
            if *l > best_val {
                best_val = *l;
                best = j;
            }
        }
        if best_val == f64::NEG_INFINITY {
            best = self.nearest_in_sigmas(w);
        }
        best
    }

    fn nearest_in_sigmas(&self, w: f64) -> usize {
        let mut best = 0;
        let mut best_r = f64::INFINITY;
        for j in 0..self.k {
            let r = ((w - self.mu[j]) * self.inv_sigma[j]).abs();
            if r < best_r {
                best_r = r;
                best = j;
            }
        }
        best
    }

    /// Turns `lp` (from [`Self::log_joint`]) into responsibilities gamma in
    /// place.
    #[inline]
    fn responsibilities_in_place(&self, lp: &mut [f64], argmax: usize) {
        let m = lp[argmax];
        if m == f64::NEG_INFINITY {
            lp.iter_mut().for_each(|g| *g = 0.0);
            lp[argmax] = 1.0;
            return;
        }
        let mut sum = 0.0;
        for l in lp.iter_mut() {
            *l = exp_nonpositive(*l - m);
            sum += *l;
        }
        let inv = 1.0 / sum;
        lp.iter_mut().for_each(|g| *g *= inv);
    }

    /// Fills `a` with the temperature softmax of `gamma` and returns the soft
    /// weight sum_k a_k mu_k.
    #[inline]
    fn assign(&self, gamma: &[f64], argmax: usize, a: &mut [f64]) -> f64 {
        // The largest responsibility belongs to the largest l_k.
        let gmax = gamma[argmax];
        let mut sum = 0.0;
        for (aj, &g) in a.iter_mut().zip(gamma) {
            *aj = exp_nonpositive((g - gmax) * self.inv_tau);
            sum += *aj;
        }
        let inv = 1.0 / sum;
        let mut s = 0.0;
        for (aj, &m) in a.iter_mut().zip(&self.mu) {
            *aj *= inv;
            s += *aj * m;
        }
        s
    }
}

/// Soft weights of `weights` into `out` (same length).
pub fn soft_forward<T: Real>(prep: &Prepared, weights: &[T], out: &mut [T]) {
    out.par_chunks_mut(CHUNK)
        .zip(weights.par_chunks(CHUNK))
        .for_each(|(out, weights)| {
            let mut lp = vec![0.0; prep.k];
            let mut a = vec![0.0; prep.k];
            for (o, &w) in out.iter_mut().zip(weights) {
                let best = prep.log_joint(w.into(), &mut lp);
                prep.responsibilities_in_place(&mut lp, best);
                *o = T::from_f64(prep.assign(&lp, best, &mut a));
            }
        });
}

/// Index of the most likely component of every weight (0 = zero component).
pub fn hard_indices<T: Real>(prep: &Prepared, weights: &[T], out: &mut [u8]) {
    out.par_chunks_mut(CHUNK)
        .zip(weights.par_chunks(CHUNK))
        .for_each(|(out, weights)| {
            let mut lp = vec![0.0; prep.k];
            for (o, &w) in out.iter_mut().zip(weights) {
                // K <= 256 is validated before a Prepared is built.
                *o = prep.log_joint(w.into(), &mut lp) as u8;
            }
        });
}

/// Responsibilities gamma of every weight: `out` has `weights.len() * K`
/// values, weight-major.
pub fn responsibilities<T: Real>(prep: &Prepared, weights: &[T], out: &mut [T]) {
    let k = prep.k;
    out.par_chunks_mut(CHUNK * k)
        .zip(weights.par_chunks(CHUNK))
        .for_each(|(out, weights)| {
            let mut lp = vec![0.0; k];
            for (row, &w) in out.chunks_exact_mut(k).zip(weights) {
                let best = prep.log_joint(w.into(), &mut lp);
                prep.responsibilities_in_place(&mut lp, best);
                row.iter_mut()
                    .zip(&lp)
                    .for_each(|(o, &g)| *o = T::from_f64(g));
            }
        });
}

/// Gradients of the packed parameters, accumulated in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGrads {
    /// dL/dpi_k, k = 0..K-1 (zero component first).
    pub pi: Vec<f64>,
    /// dL/dsigma_k, k = 0..K-1 (zero component first).
    pub sigma: Vec<f64>,
    /// dL/dmu_k, k = 1..K-1.
    pub mu: Vec<f64>,
    /// dL/dtau.
    pub tau: f64,
}

impl ParamGrads {
    /// The gradients in the packed layout, converted to `T`.
    pub fn to_packed<T: Real>(&self) -> Vec<T> {
        self.pi
            .iter()
            .chain(&self.sigma)
            .chain(&self.mu)
            .chain(std::iter::once(&self.tau))
            .map(|&g| T::from_f64(g))
            .collect()
    }
}

/// Per-chunk partial sums: sum e_k, sum of the mu and sigma terms, tau.
struct Partial {
    e: Vec<f64>,
    mu: Vec<f64>,
    sigma: Vec<f64>,
    tau: f64,
}

impl Partial {
    fn zeros(k: usize) -> Self {
        Self {
            e: vec![0.0; k],
            mu: vec![0.0; k],
            sigma: vec![0.0; k],
            tau: 0.0,
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for (a, b) in [
            (&mut self.e, &other.e),
            (&mut self.mu, &other.mu),
            (&mut self.sigma, &other.sigma),
        ] {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.tau += other.tau;
        self
    }
}

/// Backward pass: writes dL/dw into `grad_w` and returns the parameter
/// gradients, for L with dL/ds = `grad_out`.
pub fn backward<T: Real>(
    prep: &Prepared,
    weights: &[T],
    grad_out: &[T],
    grad_w: &mut [T],
) -> ParamGrads {
    let k = prep.k;
    let total = grad_w
        .par_chunks_mut(CHUNK)
        .zip(weights.par_chunks(CHUNK))
        .zip(grad_out.par_chunks(CHUNK))
        .map(|((grad_w, weights), grad_out)| {
            let mut part = Partial::zeros(k);
            let mut gamma = vec![0.0; k];
            let mut a = vec![0.0; k];
            let mut dg = vec![0.0; k];
            for ((gw, &w), &g) in grad_w.iter_mut().zip(weights).zip(grad_out) {
                let (w, g): (f64, f64) = (w.into(), g.into());
                let best = prep.log_joint(w, &mut gamma);
                prep.responsibilities_in_place(&mut gamma, best);
                let s = prep.assign(&gamma, best, &mut a);
                let mut t = 0.0;
                for j in 0..k {
                    let d = g * a[j] * (prep.mu[j] - s) * prep.inv_tau;
                    dg[j] = d;
                    t += gamma[j] * d;
                }
                let mut dw = 0.0;
                for j in 0..k {
                    let e = gamma[j] * (dg[j] - t);
                    let r = (w - prep.mu[j]) * prep.inv_sigma[j];
                    let e_over_sigma = e * prep.inv_sigma[j];
                    dw -= e_over_sigma * r;
                    part.e[j] += e;
                    part.mu[j] += e_over_sigma * r + g * a[j];
                    part.sigma[j] += e_over_sigma * (r * r - 1.0);
                }
                part.tau -= t * prep.inv_tau;
                *gw = T::from_f64(dw);
            }
            part
        })
        .collect::<Vec<_>>()
        .into_iter()
        // Summed in chunk order, not by rayon's adaptive reduce tree, so the
        // gradients are bitwise the same whatever the thread count or
        // scheduling (resumed training must equal an uninterrupted run).
        .fold(Partial::zeros(k), Partial::merge);

    prep.param_grads(total.e, total.mu, total.sigma, total.tau)
}

impl Prepared {
    /// The parameter gradients from the sums over every weight of e_k,
    /// the mu terms and the sigma terms (k = 0..K-1) and the tau term:
    /// what the CPU backward and the CUDA backward both end with.
    pub fn param_grads(&self, e: Vec<f64>, mu: Vec<f64>, sigma: Vec<f64>, tau: f64) -> ParamGrads {
        let e_sum: f64 = e.iter().sum();
        let pi = (0..self.k)
            .map(|j| self.pi_sign[j] * (e[j] * self.inv_abs_pi[j] - e_sum * self.inv_pi_sum))
            .collect();
        ParamGrads {
            pi,
            sigma,
            mu: mu[1..].to_vec(),
            tau,
        }
    }
}
