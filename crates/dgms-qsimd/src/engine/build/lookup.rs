//! The builder's tensor lookups: every weight, bias and batch-norm tensor
//! an op needs, checked for presence and shape, converted for the weight
//! mode, and recorded as used; errors name the layer and keep the cause.

use super::{Builder, WeightMode};
use crate::engine::graph::Weights;
use crate::engine::Precision;
use crate::error::{QsimdError, Result};
use crate::kernels::{QMatrix, QMatrixI8};

impl Builder<'_> {
    /// An error of `layer` described by `reason`.
    pub fn err(&self, layer: &str, reason: impl Into<String>) -> QsimdError {
        QsimdError::Graph {
            arch: self.model.meta.arch.clone(),
            layer: layer.to_string(),
            reason: reason.into(),
        }
    }

    /// An error of `layer` caused by `source`, kept as the cause.
    pub fn cause(&self, layer: &str, source: QsimdError) -> QsimdError {
        QsimdError::InGraph {
            arch: self.model.meta.arch.clone(),
            layer: layer.to_string(),
            source: Box::new(source),
        }
    }

    /// The weight `name` of `shape` ([O, ...]): the quantized layer `name`,
    /// or else the full-precision tensor `name.weight`.
    pub(super) fn weights(&mut self, name: &str, shape: &[usize]) -> Result<Weights> {
        let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
        let fp_name = format!("{name}.weight");
        let model = self.model;
        let layer = model.layers.iter().find(|l| l.name == name);
        let fp = model.tensors.get(&fp_name);
        let w = match (layer, fp) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    name,
                    format!("both a quantized layer and a full-precision tensor {fp_name}"),
                ))
            }
            (None, None) => {
                return Err(self.err(
                    name,
                    format!(
                        "missing: expected a quantized layer `{name}` or a full-precision tensor `{fp_name}` of shape {shape:?}"
                    ),
                ))
            }
            (Some(l), None) => {
                // A hand-built layer could be inconsistent; unpacking it
                // unchecked could panic.
                l.validate().map_err(|e| self.cause(name, e))?;
                if l.shape != shape {
                    return Err(self.err(
                        name,
                        format!("quantized weight has shape {:?}, expected {shape:?}", l.shape),
                    ));
                }
                let bad = |e| self.cause(name, e);
                match self.mode {
                    WeightMode::Decoded => Weights::Dense {
                        data: l.decode(),
                        rows,
                        cols,
                    },
                    WeightMode::Packed(Precision::Exact) => Weights::Quant(
                        QMatrix::new(rows, cols, &l.indices(), &l.codebook).map_err(bad)?,
                    ),
                    WeightMode::Packed(Precision::Int8) => Weights::QuantI8(
                        QMatrixI8::new(rows, cols, &l.indices(), &l.codebook).map_err(bad)?,
                    ),
                }
            }
            (None, Some(t)) => {
                t.validate(&fp_name).map_err(|e| self.cause(name, e))?;
                if t.shape != shape {
                    return Err(self.err(
                        name,
                        format!("{fp_name} has shape {:?}, expected {shape:?}", t.shape),
                    ));
                }
                Weights::Dense {
                    data: t.data.clone(),
                    rows,
                    cols,
                }
            }
        };
        self.used.insert(name.to_string());
        self.used.insert(fp_name);
        Ok(w)
    }

    /// The full-precision tensor `name` of `shape`.
    pub(super) fn fp(&mut self, layer: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let model = self.model;
        let t = model.tensors.get(name).ok_or_else(|| {
            self.err(
                layer,
                format!("missing full-precision tensor `{name}` of shape {shape:?}"),
            )
        })?;
        t.validate(name).map_err(|e| self.cause(layer, e))?;
        if t.shape != shape {
            return Err(self.err(
                layer,
                format!("{name} has shape {:?}, expected {shape:?}", t.shape),
            ));
        }
        self.used.insert(name.to_string());
        Ok(t.data.clone())
    }

    /// Folded batch norm `bn`: (scale, shift) of `c` channels.
    pub(super) fn bn(&mut self, bn: &str, c: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.fp(bn, &format!("{bn}.scale"), &[c])?,
            self.fp(bn, &format!("{bn}.shift"), &[c])?,
        ))
    }

    /// Errors if the model holds a layer or tensor the graph did not use:
    /// a sign of a file made for another architecture or configuration.
    pub fn check_all_used(&self) -> Result<()> {
        let unused = self
            .model
            .layers
            .iter()
            .map(|l| &l.name)
            .chain(self.model.tensors.keys())
            .find(|n| !self.used.contains(n.as_str()));
        match unused {
            Some(n) => Err(self.err(
                n,
                format!(
                    "the model holds `{n}`, which {} does not use (a file for another architecture?)",
                    self.model.meta.arch
                ),
            )),
            None => Ok(()),
        }
    }
}
