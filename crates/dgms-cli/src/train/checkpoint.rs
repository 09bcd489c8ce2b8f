//! Checkpoints: one safetensors file holding the model's tensors (batch-norm
//! statistics included), every mixture's parameters
//! (`<layer>.mixture.<mu|sigma|pi|pi_zero|sigma_zero|tau>`), the optimizer's
//! momentum buffers (`optim.momentum.<param>`), and in its header metadata
//! (key `dgms`) the epoch, step, seed, accuracies and the resolved config.
//! Written to a temporary file and renamed, so a crash never leaves a
//! half-written checkpoint.
//!
//! Randomness needs no saved state: shuffling and augmentation derive from
//! (seed, epoch, image index), so the seed and the epoch restore them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use dgms_core::mixture::PARAM_NAMES;
use dgms_core::{GaussianMixture, MixtureOptions, MixtureParams};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::fsutil::write_atomic_with;

/// Format version written into every checkpoint.
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "dgms";

/// What a checkpoint says about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format_version: u32,
    pub model: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    pub seed: u64,
    /// Test top-1 (%) after the last completed epoch, and the best so far.
    pub top1: f64,
    pub best_top1: f64,
    /// K of every mixture layer (empty for a full-precision model).
    pub mixture_k: BTreeMap<String, usize>,
    pub train_tau: bool,
    /// Hardened: conv weights are already the hard weights, and
    /// `<layer>.indices` (U8) and `<layer>.codebook` (F32 [K]) are stored
    /// for every layer of `mixture_k` instead of its mixture.
    #[serde(default)]
    pub hardened: bool,
    pub config: RunConfig,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
}

/// Name of a mixture tensor in a checkpoint.
pub fn mixture_key(layer: &str, param: &str) -> String {
    format!("{layer}.mixture.{param}")
}

/// Adds every mixture's tensors to `out`.
pub fn mixture_tensors(mixtures: &[(String, GaussianMixture)], out: &mut Vec<(String, Tensor)>) {
    for (layer, mixture) in mixtures {
        for (param, var) in mixture.named_vars() {
            out.push((mixture_key(layer, param), var.as_tensor().clone()));
        }
    }
}

/// Writes `tensors` and `meta` to `path` atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &CheckpointMeta) -> Result<()> {
    let metadata: HashMap<String, String> =
        [(META_KEY.to_string(), serde_json::to_string(meta)?)].into();
    write_atomic_with(path, |tmp| {
        safetensors::serialize_to_file(
            tensors.iter().map(|(k, v)| (k.as_str(), v)),
            Some(metadata),
            tmp,
        )
        .with_context(|| format!("serialising checkpoint {}", tmp.display()))
    })
}

/// Reads a checkpoint, with errors naming the file and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).with_context(|| {
        format!(
            "{} is not a safetensors file (truncated or corrupt header)",
            path.display()
        )
    })?;
    let raw = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .with_context(|| {
            format!(
                "{} has no `{META_KEY}` metadata: not a dgms checkpoint (a plain weights file? use --init for those)",
                path.display()
            )
        })?;
    let meta: CheckpointMeta = serde_json::from_str(raw)
        .with_context(|| format!("{}: unreadable checkpoint metadata", path.display()))?;
    if meta.format_version != FORMAT_VERSION {
        bail!(
            "{}: checkpoint format version {}, expected {FORMAT_VERSION}",
            path.display(),
            meta.format_version
        );
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("{}: corrupt tensor data", path.display()))?;
    Ok(Checkpoint { meta, tensors })
}

/// Loads plain tensors from a safetensors file (a checkpoint or a weights
/// file), for `--init`.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).with_context(|| {
        format!(
            "{} is not a readable safetensors file (truncated or corrupt)",
            path.display()
        )
    })
}

impl Checkpoint {
    /// The mixture of `layer` as saved, checked against the expected K.
    pub fn mixture(
        &self,
        path: &Path,
        layer: &str,
        k: usize,
        opts: &MixtureOptions,
    ) -> Result<GaussianMixture> {
        let get = |param: &str| -> Result<Vec<f32>> {
            let key = mixture_key(layer, param);
            let t = self.tensors.get(&key).with_context(|| {
                format!(
                    "{}: no tensor {key} (a checkpoint of another model or layer selection?)",
                    path.display()
                )
            })?;
            Ok(t.flatten_all()?.to_vec1()?)
        };
        let [mu, sigma, pi, pi_zero, sigma_zero, tau] = PARAM_NAMES.map(get);
        let params = MixtureParams {
            mu: mu?,
            sigma: sigma?,
            pi: pi?,
            pi_zero: first(pi_zero?, path, layer)?,
            sigma_zero: first(sigma_zero?, path, layer)?,
            tau: first(tau?, path, layer)?,
        };
        if params.k() != k {
            bail!(
                "{}: layer {layer} has a mixture with K = {}, but K = {k} was requested",
                path.display(),
                params.k()
            );
        }
        GaussianMixture::new(layer, &params, opts)
            .with_context(|| format!("{}: invalid mixture for layer {layer}", path.display()))
    }
}

fn first(v: Vec<f32>, path: &Path, layer: &str) -> Result<f32> {
    match v.as_slice() {
        [x] => Ok(*x),
        _ => bail!(
            "{}: layer {layer}: a scalar mixture parameter has {} values, expected 1",
            path.display(),
            v.len()
        ),
    }
}
