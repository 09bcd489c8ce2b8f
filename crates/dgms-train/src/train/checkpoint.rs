//! Checkpoints: one safetensors file holding the model's tensors (batch-norm
//! statistics included), every mixture's parameters
//! (`<layer>.mixture.<mu|sigma|pi|pi_zero|sigma_zero|tau>`), the optimizer's
//! momentum buffers (`optim.momentum.<param>`), and in its header metadata
//! (key `dgms`) the epoch, step, seed, accuracies and the resolved config;
//! a training checkpoint also holds (key `dgms.metrics`) the run's
//! `metrics.jsonl` up to its epoch, from which a resumed run rewrites that
//! file. Written through `dgms_io::write_atomic`, so a crash never leaves a
//! half-written checkpoint.
//!
//! Randomness needs no saved state: shuffling and augmentation derive from
//! (seed, epoch, image index), so the seed and the epoch restore them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use dgms_core::mixture::PARAM_NAMES;
use dgms_core::{GaussianMixture, MixtureOptions, MixtureParams};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Result, TrainError};

/// Format version written into every checkpoint.
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "dgms";
/// Header key of the metrics history (the lines of `metrics.jsonl`).
const METRICS_KEY: &str = "dgms.metrics";

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
    /// `<layer>.indices` (U8) and `<layer>.codebook` (F32 `[K]`) are stored
    /// for every layer of `mixture_k` instead of its mixture.
    #[serde(default)]
    pub hardened: bool,
    pub config: RunConfig,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, Tensor>,
    /// The run's metrics history saved with it (the text of
    /// `metrics.jsonl` up to its epoch; empty for a checkpoint without
    /// one, e.g. a hardened one).
    pub metrics: String,
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
    save_with_metrics(path, tensors, meta, None)
}

/// As [`save`], with the run's metrics history (the text of
/// `metrics.jsonl` up to this checkpoint's epoch) in the header.
pub fn save_with_metrics(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
    metrics: Option<&str>,
) -> Result<()> {
    let meta_json =
        serde_json::to_string(meta).map_err(TrainError::json("encoding checkpoint metadata"))?;
    let mut metadata: HashMap<String, String> = [(META_KEY.to_string(), meta_json)].into();
    if let Some(text) = metrics {
        metadata.insert(METRICS_KEY.to_string(), text.to_string());
    }
    // Always from host copies (a no-op for CPU tensors), so a checkpoint
    // saved on a GPU is the same file as one saved on the CPU and loads on
    // either (load reads to the host; the model moves tensors to its own
    // device).
    let host = tensors
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.to_device(&Device::Cpu)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(host.iter().map(|(k, v)| (*k, v)), Some(metadata)).map_err(
        |source| TrainError::SerialiseCheckpoint {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(dgms_io::write_atomic(path, &bytes)?)
}

/// Reads a checkpoint, with errors naming the file and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(TrainError::io("reading checkpoint", path))?;
    load_bytes(path, &bytes)
}

/// Parses the bytes of a checkpoint; `path` only names it in errors. The
/// bytes pass the shared structural check before any parser sees them.
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let (meta, metrics) = meta_of(path, bytes)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|source| {
        TrainError::CorruptTensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(Checkpoint {
        meta,
        tensors,
        metrics,
    })
}

/// What a checkpoint says about itself, without building its tensors (the
/// file still passes the structural check).
pub fn load_meta(path: &Path) -> Result<CheckpointMeta> {
    let bytes = std::fs::read(path).map_err(TrainError::io("reading checkpoint", path))?;
    Ok(meta_of(path, &bytes)?.0)
}

/// The checked metadata of checkpoint bytes and its metrics history. The
/// structural check parses the header; its metadata is used as it returns
/// it, not parsed a second time.
fn meta_of(path: &Path, bytes: &[u8]) -> Result<(CheckpointMeta, String)> {
    let metadata = check_structure(path, bytes)?.metadata.unwrap_or_default();
    let raw = metadata
        .get(META_KEY)
        .ok_or_else(|| TrainError::NotACheckpoint {
            path: path.to_path_buf(),
        })?;
    let meta: CheckpointMeta = serde_json::from_str(raw).map_err(TrainError::json(format!(
        "{}: unreadable checkpoint metadata",
        path.display()
    )))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(TrainError::FormatVersion {
            path: path.to_path_buf(),
            found: meta.format_version,
            expected: FORMAT_VERSION,
        });
    }
    let metrics = metadata.get(METRICS_KEY).cloned().unwrap_or_default();
    Ok((meta, metrics))
}

/// The shared structural check of safetensors bytes (header, dtypes,
/// offsets), with the error naming `path`; returns the checked layout
/// (tensors and metadata as the header declares them).
pub fn check_structure(path: &Path, bytes: &[u8]) -> Result<dgms_io::SafetensorsLayout> {
    dgms_io::check_safetensors(bytes).map_err(|source| TrainError::BadSafetensors {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads plain tensors from a safetensors file (a checkpoint or a weights
/// file), for `--init`.
pub fn load_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(TrainError::io("reading", path))?;
    check_structure(path, &bytes)?;
    candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|source| {
        TrainError::UnreadableWeights {
            path: path.to_path_buf(),
            source,
        }
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
            let t = self
                .tensors
                .get(&key)
                .ok_or_else(|| TrainError::MissingTensor {
                    file: format!("{}: ", path.display()),
                    name: key.clone(),
                    hint: " (a checkpoint of another model or layer selection?)",
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
            return Err(TrainError::MixtureK {
                path: path.to_path_buf(),
                layer: layer.to_string(),
                found: params.k(),
                expected: k,
            });
        }
        GaussianMixture::new(layer, &params, opts).map_err(|source| TrainError::InvalidMixture {
            path: path.to_path_buf(),
            layer: layer.to_string(),
            source: Box::new(source),
        })
    }
}

fn first(v: Vec<f32>, path: &Path, layer: &str) -> Result<f32> {
    match v.as_slice() {
        [x] => Ok(*x),
        _ => Err(TrainError::NotAScalar {
            path: path.to_path_buf(),
            layer: layer.to_string(),
            found: v.len(),
        }),
    }
}
