//! The soft weights composed from ordinary candle ops, differentiated by
//! candle's autograd. It materialises N x K tensors and is slow; it is kept
//! as the oracle the fused op is tested against (and benchmarked against).
//!
//! Same log-space math as [`crate::kernel`]: the max subtracted before each
//! exponential is detached, which leaves the softmax and its gradient
//! unchanged.

use candle_core::{Tensor, D};

/// Soft weights of `w` (any shape) for a mixture given as tensors of the
/// weights' dtype: `mu` [K-1] (trained means), `sigma` [K] and `pi` [K]
/// (zero component first), `tau` [1].
pub fn soft_weights(
    w: &Tensor,
    mu: &Tensor,
    sigma: &Tensor,
    pi: &Tensor,
    tau: &Tensor,
) -> candle_core::Result<Tensor> {
    let gamma = responsibilities(w, mu, sigma, pi)?;
    let mu_all = means_with_zero(mu)?;
    // softmax(gamma / tau) over components.
    let z = gamma.broadcast_div(&tau.reshape((1, 1))?)?;
    let a = softmax_rows(&z)?;
    let s = a.broadcast_mul(&mu_all.unsqueeze(0)?)?.sum(D::Minus1)?;
    s.reshape(w.shape())
}

/// Responsibilities gamma, shape (N, K) for the N = `w.elem_count()`
/// weights, with the composed ops (differentiable).
pub fn responsibilities(
    w: &Tensor,
    mu: &Tensor,
    sigma: &Tensor,
    pi: &Tensor,
) -> candle_core::Result<Tensor> {
    let n = w.elem_count();
    let w = w.reshape((n, 1))?;
    let mu_all = means_with_zero(mu)?.unsqueeze(0)?;
    let sigma = sigma.unsqueeze(0)?;
    let abs_pi = pi.abs()?;
    let log_p = abs_pi.broadcast_div(&abs_pi.sum_keepdim(0)?)?.log()?;
    let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let log_coef = ((log_p.unsqueeze(0)? - sigma.abs()?.log()?)? - half_log_2pi)?;
    let r = w.broadcast_sub(&mu_all)?.broadcast_div(&sigma)?;
    let lp = log_coef.broadcast_sub(&(r.sqr()? * 0.5)?)?;
    softmax_rows(&lp)
}

fn means_with_zero(mu: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::cat(&[&mu.zeros_like()?.narrow(0, 0, 1)?, mu], 0)
}

/// Softmax over the last dimension with a detached max for stability.
fn softmax_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}
