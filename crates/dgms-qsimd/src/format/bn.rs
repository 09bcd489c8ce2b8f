//! Batch-norm folding: the file stores `y = x*scale + shift` per channel so
//! a runtime needs no running statistics and no division.

use crate::error::{QsimdError, Result};

fn bn_err(reason: String) -> QsimdError {
    QsimdError::BatchNorm { reason }
}

/// Folds inference-mode batch norm into per-channel `(scale, shift)`:
/// `scale = gamma / sqrt(var + eps)`, `shift = beta - mean * scale`.
///
/// Computed in f64 and rounded once, so the result is the f32 nearest the
/// exact fold. Errors if the four slices differ in length or are empty, if
/// any input is non-finite, if `eps` is negative or non-finite, if a
/// variance is negative or `var + eps` is 0, or if a result is not finite.
pub fn fold_batch_norm(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = gamma.len();
    if c == 0 || beta.len() != c || mean.len() != c || var.len() != c {
        return Err(bn_err(format!(
            "gamma, beta, running_mean, running_var must have one equal, non-zero length; got {}, {}, {}, {}",
            c,
            beta.len(),
            mean.len(),
            var.len()
        )));
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(bn_err(format!("eps = {eps}, expected a finite value >= 0")));
    }
    for (what, xs) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", mean),
        ("running_var", var),
    ] {
        if let Some((i, v)) = xs.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bn_err(format!("{what}[{i}] = {v} is not finite")));
        }
    }
    let mut scale = Vec::with_capacity(c);
    let mut shift = Vec::with_capacity(c);
    for (i, (((&g, &b), &m), &v)) in gamma.iter().zip(beta).zip(mean).zip(var).enumerate() {
        let denom = f64::from(v) + eps;
        if v < 0.0 || denom <= 0.0 {
            return Err(bn_err(format!(
                "channel {i}: running_var = {v}, eps = {eps}: var + eps must be > 0"
            )));
        }
        let s = f64::from(g) / denom.sqrt();
        let t = f64::from(b) - f64::from(m) * s;
        let (s32, t32) = (s as f32, t as f32);
        if !s32.is_finite() || !t32.is_finite() {
            return Err(bn_err(format!(
                "channel {i}: scale = {s}, shift = {t} do not fit in a finite f32"
            )));
        }
        scale.push(s32);
        shift.push(t32);
    }
    Ok((scale, shift))
}
