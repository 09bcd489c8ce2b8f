//! Plain (host-side) values of one layer's mixture, and their validation.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// Largest K supported: hard indices are stored as `u8`.
pub const MAX_COMPONENTS: usize = 256;

/// Default temperature of the assignment softmax (`docs/METHOD.md#mixture`).
pub const DEFAULT_TAU: f32 = 0.01;

/// The values of one layer's mixture, component 0 being the zero component.
///
/// `mu`, `sigma` and `pi` hold the K-1 trained components; the zero
/// component's mean is fixed at 0 and is not stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureParams {
    /// Means of components 1..K-1.
    pub mu: Vec<f32>,
    /// Widths (standard deviations) of components 1..K-1.
    pub sigma: Vec<f32>,
    /// Unnormalised mixing weights of components 1..K-1.
    pub pi: Vec<f32>,
    /// Unnormalised mixing weight of the zero component.
    pub pi_zero: f32,
    /// Width of the zero component.
    pub sigma_zero: f32,
    /// Temperature of the assignment softmax.
    pub tau: f32,
}

impl MixtureParams {
    /// Number of components K, the zero component included.
    pub fn k(&self) -> usize {
        self.mu.len() + 1
    }

    /// Means of all K components, index 0 being the zero component (0.0).
    /// This is also the hardening table.
    pub fn means_with_zero(&self) -> Vec<f32> {
        std::iter::once(0.0)
            .chain(self.mu.iter().copied())
            .collect()
    }

    /// Widths of all K components, index 0 being the zero component.
    pub fn sigmas_with_zero(&self) -> Vec<f32> {
        std::iter::once(self.sigma_zero)
            .chain(self.sigma.iter().copied())
            .collect()
    }

    /// Mixing weights of all K components, index 0 being the zero component.
    pub fn pis_with_zero(&self) -> Vec<f32> {
        std::iter::once(self.pi_zero)
            .chain(self.pi.iter().copied())
            .collect()
    }

    /// Checks K, lengths, finiteness, positive widths, a non-zero mixture and
    /// a positive temperature. `layer` names the layer in the error.
    pub fn validate(&self, layer: &str) -> Result<()> {
        let k = self.k();
        check_k(layer, k)?;
        for (what, len) in [("sigma", self.sigma.len()), ("pi", self.pi.len())] {
            if len != k - 1 {
                return Err(CoreError::ShapeMismatch {
                    layer: layer.to_string(),
                    what: what.to_string(),
                    got: vec![len],
                    expected: vec![k - 1],
                });
            }
        }
        let named: [(&'static str, &[f32]); 5] = [
            ("mu", &self.mu),
            ("sigma", &self.sigma),
            ("pi", &self.pi),
            ("pi_zero", std::slice::from_ref(&self.pi_zero)),
            ("sigma_zero", std::slice::from_ref(&self.sigma_zero)),
        ];
        for (param, values) in named {
            for (index, &v) in values.iter().enumerate() {
                if !v.is_finite() {
                    return Err(CoreError::NonFiniteParameter {
                        layer: layer.to_string(),
                        param,
                        index,
                        value: v as f64,
                    });
                }
                if param.starts_with("sigma") && v == 0.0 {
                    return Err(CoreError::ZeroSigma {
                        layer: layer.to_string(),
                        param,
                        index,
                        value: v as f64,
                    });
                }
            }
        }
        if self.pi_zero == 0.0 && self.pi.iter().all(|&p| p == 0.0) {
            return Err(CoreError::ZeroMixingWeights {
                layer: layer.to_string(),
            });
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(CoreError::BadTemperature {
                layer: layer.to_string(),
                value: self.tau as f64,
            });
        }
        Ok(())
    }

    /// The packed parameter vector the fused op consumes (see [`PackedLayout`]).
    pub fn to_packed(&self) -> Vec<f32> {
        let mut v = self.pis_with_zero();
        v.extend(self.sigmas_with_zero());
        v.extend(self.mu.iter().copied());
        v.push(self.tau);
        v
    }
}

/// Layout of the packed parameter vector of length 3K that the fused op
/// takes as its second input: `[pi_0..pi_{K-1}, sigma_0..sigma_{K-1},
/// mu_1..mu_{K-1}, tau]`, index 0 of `pi` and `sigma` being the zero
/// component. Packing lets one `CustomOp2` carry all parameters; candle's
/// `cat` routes the packed gradient back to each `Var`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    /// Number of components K.
    pub k: usize,
}

impl PackedLayout {
    /// Total length 3K.
    pub fn len(&self) -> usize {
        3 * self.k
    }
    /// Never empty: K >= 2 is validated before a layout is built.
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Range of `pi` (zero component first).
    pub fn pi(&self) -> std::ops::Range<usize> {
        0..self.k
    }
    /// Range of `sigma` (zero component first).
    pub fn sigma(&self) -> std::ops::Range<usize> {
        self.k..2 * self.k
    }
    /// Range of `mu_1..mu_{K-1}`.
    pub fn mu(&self) -> std::ops::Range<usize> {
        2 * self.k..3 * self.k - 1
    }
    /// Index of `tau`.
    pub fn tau(&self) -> usize {
        3 * self.k - 1
    }
}

/// Checks 2 <= K <= [`MAX_COMPONENTS`].
pub fn check_k(layer: &str, k: usize) -> Result<()> {
    if k < 2 {
        return Err(CoreError::TooFewComponents {
            layer: layer.to_string(),
            k,
        });
    }
    if k > MAX_COMPONENTS {
        return Err(CoreError::TooManyComponents {
            layer: layer.to_string(),
            k,
            max: MAX_COMPONENTS,
        });
    }
    Ok(())
}

/// Returns the first non-finite weight as an error naming `layer`.
pub fn check_finite_weights<T: Copy + Into<f64>>(layer: &str, weights: &[T]) -> Result<()> {
    match weights.iter().position(|&w| !w.into().is_finite()) {
        None => Ok(()),
        Some(index) => Err(CoreError::NonFiniteWeight {
            layer: layer.to_string(),
            index,
            value: weights[index].into(),
        }),
    }
}
