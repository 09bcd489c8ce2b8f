//! [`PackedModel`]: the whole file in memory, its lookups, cross-checks and
//! size accounting.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::layer::{layer_err, tensor_err, FpTensor, PackedLayer};
use super::meta::{LayerMeta, ModelMeta};
use super::{read, write};
use crate::error::{QsimdError, Result};

/// Tensor-name suffixes reserved for quantized layers.
pub const QUANTIZED_SUFFIXES: [&str; 2] = [".indices", ".codebook"];

/// A packed DGMS model: metadata, quantized layers (in file order) and the
/// full-precision tensors by name.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedModel {
    /// Model-level metadata.
    pub meta: ModelMeta,
    /// Quantized layers, in the order of the metadata `layers` array.
    pub layers: Vec<PackedLayer>,
    /// Full-precision tensors (incl. batch-norm `BN.scale` / `BN.shift`).
    pub tensors: BTreeMap<String, FpTensor>,
}

impl PackedModel {
    /// Builds a model and runs [`PackedModel::validate`] on it.
    pub fn new(
        meta: ModelMeta,
        layers: Vec<PackedLayer>,
        tensors: BTreeMap<String, FpTensor>,
    ) -> Result<Self> {
        let model = Self {
            meta,
            layers,
            tensors,
        };
        model.validate()?;
        Ok(model)
    }

    /// The quantized layer called `name`.
    pub fn layer(&self, name: &str) -> Result<&PackedLayer> {
        self.layers
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| QsimdError::MissingLayer {
                name: name.to_string(),
            })
    }

    /// The full-precision tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&FpTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| QsimdError::MissingTensor {
                name: name.to_string(),
            })
    }

    /// The metadata `layers` array this model is written with.
    pub fn layer_metas(&self) -> Vec<LayerMeta> {
        self.layers.iter().map(PackedLayer::meta).collect()
    }

    /// Checks everything the reader checks: metadata, every layer, every
    /// tensor, and the cross-checks of [`PackedModel::validate_structure`].
    pub fn validate(&self) -> Result<()> {
        self.meta.validate()?;
        for layer in &self.layers {
            layer.validate()?;
        }
        for (name, t) in &self.tensors {
            t.validate(name)?;
        }
        self.validate_structure()
    }

    /// Cross-checks between entries, without re-scanning layer indices:
    /// unique layer names, no full-precision tensor under a reserved
    /// quantized name, and batch-norm `scale`/`shift` coming in 1-D pairs of
    /// one shape (a runtime needs both to apply `y = x*scale + shift`).
    pub fn validate_structure(&self) -> Result<()> {
        let mut seen = HashSet::new();
        for layer in &self.layers {
            if !seen.insert(layer.name.as_str()) {
                return Err(layer_err(
                    &layer.name,
                    "listed more than once (layer names must be unique)".into(),
                ));
            }
        }
        for (name, t) in &self.tensors {
            if name.is_empty() || name == "__metadata__" {
                return Err(tensor_err(
                    name,
                    "tensor names must be non-empty and not \"__metadata__\"".into(),
                ));
            }
            if let Some(suffix) = QUANTIZED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
                return Err(tensor_err(
                    name,
                    format!(
                        "full-precision tensor under a name ending in {suffix:?}, which is reserved for quantized layers"
                    ),
                ));
            }
            if let Some(base) = name.strip_suffix(".scale") {
                self.check_bn_pair(name, t, &format!("{base}.shift"))?;
            } else if let Some(base) = name.strip_suffix(".shift") {
                self.check_bn_pair(name, t, &format!("{base}.scale"))?;
            }
        }
        Ok(())
    }

    fn check_bn_pair(&self, name: &str, t: &FpTensor, other: &str) -> Result<()> {
        let Some(o) = self.tensors.get(other) else {
            return Err(tensor_err(
                name,
                format!("batch-norm tensor without its partner {other}"),
            ));
        };
        if t.shape.len() != 1 || o.shape != t.shape {
            return Err(tensor_err(
                name,
                format!(
                    "batch-norm tensors must be 1-D [C] of one shape, found {:?} and {other} {:?}",
                    t.shape, o.shape
                ),
            ));
        }
        Ok(())
    }

    /// Payload size as stored: packed indices and f32 codebooks of every
    /// layer plus 4 bytes per full-precision value (the safetensors header
    /// is not counted; `to_bytes().len()` is the exact file size).
    pub fn packed_bytes(&self) -> usize {
        let layers = self.layers.iter().fold(0usize, |a, l| {
            a.saturating_add(l.packed.len())
                .saturating_add(l.codebook.len().saturating_mul(4))
        });
        layers.saturating_add(self.fp_tensor_bytes())
    }

    /// Size of the same model with every weight of every layer and tensor
    /// stored as f32: the baseline of the compression ratio.
    pub fn fp32_bytes(&self) -> usize {
        let layers = self.layers.iter().fold(0usize, |a, l| {
            a.saturating_add(l.num_weights().saturating_mul(4))
        });
        layers.saturating_add(self.fp_tensor_bytes())
    }

    fn fp_tensor_bytes(&self) -> usize {
        self.tensors.values().fold(0usize, |a, t| {
            a.saturating_add(t.data.len().saturating_mul(4))
        })
    }

    /// Serializes to the bytes of a `*.dgms.safetensors` file, after
    /// [`PackedModel::validate`]. Deterministic: one model, one byte string.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        write::to_bytes(self)
    }

    /// Parses and fully validates a `*.dgms.safetensors` file; any byte
    /// string gives either a valid model or a typed error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        read::from_bytes(bytes)
    }

    /// Writes atomically (`dgms_io::write_atomic`: a synced temporary file
    /// in the same directory renamed over `path`), so readers see either
    /// the old file or the complete new one.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        Ok(dgms_io::write_atomic(path.as_ref(), &bytes)?)
    }

    /// Reads and validates the file at `path`; every error names the path.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| QsimdError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes).map_err(|e| QsimdError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }
}
