//! [`UniformQuantizer`]: the baseline the mixture is compared with, a
//! uniform grid with a learned step size trained by the straight-through
//! estimator, as LSQ (Esser et al., "Learned Step Size Quantization",
//! ICLR 2020).
//!
//! A b-bit layer's weights take the values `q * s` for the integers
//! `q` in `-2^(b-1) ..= 2^(b-1) - 1` (the signed grid of LSQ: 2^b levels, as
//! many as a DGMS layer with K = 2^b components, zero among them) and one
//! step `s` per layer, a trained parameter. Forward: `round(clamp(w / s,
//! -Qn, Qp)) * s`. Backward (LSQ's estimator): the weight's gradient passes
//! where `w / s` lies inside the grid and is 0 outside; the step's gradient
//! per weight is `round(w / s) - w / s` inside and `-Qn` or `Qp` outside,
//! scaled by `g = 1 / sqrt(N * Qp)` for a layer of N weights. The step
//! starts at `2 mean|w| / sqrt(Qp)`.
//!
//! The training forward pass builds that estimator from candle ops in a
//! form whose values are exactly the hard weights (every "gradient-only"
//! term is `x - x.detach()`, which is exactly 0), so that evaluating with
//! [`UniformQuantizer::hard_weights`] after training changes no bit.

use candle_core::{DType, Tensor, Var};

use crate::error::{CoreError, Result};

/// Fewest and most bits of a uniform grid (2 bits: `{-2, -1, 0, 1} * s`;
/// one bit would leave no positive level).
pub const MIN_BITS: u32 = 2;
pub const MAX_BITS: u32 = 8;

/// Smallest step a quantizer keeps during training (see
/// [`UniformQuantizer::project`]): a step driven to 0 or below would turn
/// the layer's weights into NaN or flip their signs.
pub const STEP_FLOOR: f64 = 1e-8;

/// One layer's uniform grid with its learned step.
#[derive(Clone, Debug)]
pub struct UniformQuantizer {
    name: String,
    bits: u32,
    step: Var,
}

impl UniformQuantizer {
    /// LSQ's initial step for `weights`: `2 mean|w| / sqrt(Qp)`.
    pub fn initial_step(name: &str, weights: &Tensor, bits: u32) -> Result<f32> {
        check_bits(name, bits)?;
        let abs_mean = weights
            .abs()?
            .flatten_all()?
            .to_dtype(DType::F64)?
            .mean_all()?
            .to_scalar::<f64>()?;
        if !abs_mean.is_finite() {
            return Err(CoreError::NonFiniteWeight {
                layer: name.to_string(),
                index: first_non_finite(weights)?,
                value: abs_mean,
            });
        }
        let qp = f64::from(levels(bits).1);
        let step = 2.0 * abs_mean / qp.sqrt();
        if step <= 0.0 {
            // All-zero weights: any positive step quantizes them exactly.
            return Ok(1.0);
        }
        Ok(step as f32)
    }

    /// A quantizer for layer `name` with the given step variable (a scalar
    /// or one-element tensor, e.g. restored from a checkpoint).
    pub fn new(name: impl Into<String>, bits: u32, step: Var) -> Result<Self> {
        let name = name.into();
        check_bits(&name, bits)?;
        if step.elem_count() != 1 {
            return Err(CoreError::ShapeMismatch {
                layer: name,
                what: "step".into(),
                got: step.dims().to_vec(),
                expected: vec![1],
            });
        }
        Ok(Self { name, bits, step })
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bits per weight.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The trained step.
    pub fn step(&self) -> &Var {
        &self.step
    }

    /// The step's current value, checked finite and positive.
    pub fn step_value(&self) -> Result<f32> {
        let s = self.step.flatten_all()?.to_vec1::<f32>()?[0];
        if !(s.is_finite() && s > 0.0) {
            return Err(CoreError::BadStep {
                layer: self.name.clone(),
                value: f64::from(s),
            });
        }
        Ok(s)
    }

    /// `(Qn, Qp)`: the grid is `-Qn ..= Qp` steps.
    pub fn levels(&self) -> (i32, i32) {
        levels(self.bits)
    }

    /// The grid's values, `-Qn * s ..= Qp * s`, ascending (2^bits of them).
    pub fn codebook(&self) -> Result<Vec<f32>> {
        let s = self.step_value()?;
        let (qn, qp) = self.levels();
        Ok((-qn..=qp).map(|q| q as f32 * s).collect())
    }

    /// The quantized weights, no gradient: `round(clamp(w / s)) * s`.
    pub fn hard_weights(&self, w: &Tensor) -> Result<Tensor> {
        self.step_value()?;
        let (qn, qp) = self.levels();
        let s = self.step.as_tensor().detach().reshape(())?;
        let q = w
            .detach()
            .broadcast_div(&s)?
            .clamp(-qn as f32, qp as f32)?
            .round()?;
        Ok(q.broadcast_mul(&s)?)
    }

    /// The quantized weights for training: the values of
    /// [`Self::hard_weights`] (bit for bit), with LSQ's straight-through
    /// gradients to `w` and to the step (see the module docs).
    pub fn fake_quantized(&self, w: &Tensor) -> Result<Tensor> {
        self.step_value()?;
        let (qn, qp) = self.levels();
        let (qn_f, qp_f) = (-qn as f32, qp as f32);
        let grad_scale = 1.0 / ((w.elem_count() as f64) * f64::from(qp)).sqrt();
        let step = self.step.as_tensor().reshape(())?;
        // Value s, gradient scaled by g: s.detach() + (g s - (g s).detach()).
        let scaled = step.affine(grad_scale, 0.0)?;
        let s = (step.detach() + (&scaled - scaled.detach())?)?;
        let v = w.broadcast_div(&s)?;
        let inside = v
            .ge(qn_f as f64)?
            .to_dtype(v.dtype())?
            .mul(&v.le(qp_f as f64)?.to_dtype(v.dtype())?)?;
        // Value clamp(v); gradient passes only inside the grid.
        let clamped = (v.detach().clamp(qn_f, qp_f)? + (&v - v.detach())?.mul(&inside)?)?;
        // Value round(clamp(v)); gradient of the clamp (straight through).
        let rounded = (clamped.detach().round()? + (&clamped - clamped.detach())?)?;
        Ok(rounded.broadcast_mul(&s)?)
    }

    /// Keeps the step at least [`STEP_FLOOR`] after an optimizer step;
    /// returns whether it had to be raised.
    pub fn project(&self) -> Result<bool> {
        let s = f64::from(self.step.flatten_all()?.to_vec1::<f32>()?[0]);
        if s.is_nan() {
            return Err(CoreError::BadStep {
                layer: self.name.clone(),
                value: s,
            });
        }
        if s >= STEP_FLOOR {
            return Ok(false);
        }
        let floor = self.step.as_tensor().ones_like()?.affine(STEP_FLOOR, 0.0)?;
        self.step.set(&floor)?;
        Ok(true)
    }
}

/// `(Qn, Qp)` of the signed b-bit grid: `(2^(b-1), 2^(b-1) - 1)`.
pub fn levels(bits: u32) -> (i32, i32) {
    let half = 1i32 << (bits.clamp(MIN_BITS, MAX_BITS) - 1);
    (half, half - 1)
}

/// Flat index of the first NaN or infinite weight (0 if none).
fn first_non_finite(weights: &Tensor) -> Result<usize> {
    let v = weights
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(v.iter().position(|x| !x.is_finite()).unwrap_or(0))
}

fn check_bits(name: &str, bits: u32) -> Result<()> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(CoreError::Unsupported {
            layer: name.to_string(),
            what: format!("a {bits}-bit uniform grid, expected {MIN_BITS} to {MAX_BITS} bits"),
        })
    }
}

#[cfg(test)]
mod tests;
