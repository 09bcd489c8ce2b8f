//! Hardening: every weight becomes the index of its most likely component,
//! and the layer keeps a table of K values (index 0 = the zero component);
//! see `docs/METHOD.md#hardening`.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::kernel::{self, Prepared};
use crate::params::{check_finite_weights, MixtureParams, PackedLayout};
use crate::reference_rule::{HardeningRule, ReferenceRule};
use crate::report::LayerReport;

/// A hardened layer: one index per weight into `table`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HardenedLayer {
    /// Layer name.
    pub name: String,
    /// Shape of the weight tensor.
    pub shape: Vec<usize>,
    /// Component index of every weight, row-major; 0 is the zero component.
    pub indices: Vec<u8>,
    /// The K shared values; `table[0] == 0.0`.
    pub table: Vec<f32>,
    /// Weights whose densities all underflow in the reference's float32
    /// arithmetic (it sends them to 0; see [`crate::reference_rule`]), when
    /// hardened from a mixture; `None` when not known (e.g. read back from
    /// a hardened file).
    #[serde(default)]
    pub reference_underflow: Option<usize>,
}

impl HardenedLayer {
    /// Hardens `weights` (row-major, of `shape`) under `params` with the
    /// default (log-space) rule.
    pub fn from_params(
        name: impl Into<String>,
        shape: &[usize],
        weights: &[f32],
        params: &MixtureParams,
    ) -> Result<Self> {
        Self::from_params_with(name, shape, weights, params, HardeningRule::LogSpace)
    }

    /// Hardens `weights` (row-major, of `shape`) under `params` with `rule`,
    /// counting the weights the reference's arithmetic leaves undecided.
    pub fn from_params_with(
        name: impl Into<String>,
        shape: &[usize],
        weights: &[f32],
        params: &MixtureParams,
        rule: HardeningRule,
    ) -> Result<Self> {
        let name = name.into();
        params.validate(&name)?;
        let expected: usize = shape.iter().product();
        if expected != weights.len() {
            return Err(CoreError::ShapeMismatch {
                layer: name,
                what: "weights".into(),
                got: vec![weights.len()],
                expected: shape.to_vec(),
            });
        }
        check_finite_weights(&name, weights)?;
        let reference = ReferenceRule::new(params);
        let mut indices = vec![0u8; weights.len()];
        let underflow = match rule {
            HardeningRule::LogSpace => {
                let prep =
                    Prepared::from_packed(&params.to_packed(), PackedLayout { k: params.k() });
                kernel::hard_indices(&prep, weights, &mut indices);
                reference.undecided(weights)
            }
            HardeningRule::Reference => reference.indices(weights, &mut indices),
        };
        Ok(Self {
            name,
            shape: shape.to_vec(),
            indices,
            table: params.means_with_zero(),
            reference_underflow: Some(underflow),
        })
    }

    /// Number of components K.
    pub fn k(&self) -> usize {
        self.table.len()
    }

    /// Number of weights.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True for a layer without weights.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Number of weights assigned to the zero component.
    pub fn zeros(&self) -> usize {
        self.indices.iter().filter(|&&i| i == 0).count()
    }

    /// The hard weights, row-major.
    pub fn decode(&self) -> Vec<f32> {
        self.indices
            .iter()
            .map(|&i| self.table[i as usize])
            .collect()
    }

    /// The report figures of this layer (`docs/METHOD.md#report`).
    pub fn report(&self) -> LayerReport {
        let mut report =
            LayerReport::new(&self.name, &self.shape, self.k(), self.len(), self.zeros());
        report.reference_underflow = self.reference_underflow;
        report
    }
}
