//! Checkpoints in the DGMS authors' own format (`.pth.tar`, see
//! [`dgms_models::reference_format`]) as this project's [`Checkpoint`]:
//! the network's tensors under its names, every stored mixture as
//! `<layer>.mixture.<param>`, and metadata saying where it came from. Every
//! command that reads a checkpoint goes through [`open_checkpoint`], so
//! such a file works wherever a dgms checkpoint does, given `--model`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use dgms_models::{is_pth, is_reference_state_dict, read_pth, ModelConfig, ReferenceStateDict};

use crate::config::{MixtureSettings, RunConfig};
use crate::error::{Result, TrainError};
use crate::train::checkpoint::{self, mixture_key, Checkpoint, CheckpointMeta, FORMAT_VERSION};

/// Where a loaded checkpoint came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// A dgms checkpoint (safetensors with `dgms` metadata).
    Dgms,
    /// A DGMS authors' checkpoint: it records no data set, so the network's
    /// shape comes from its tensors (and `--input-shape`).
    Reference { model_config: ModelConfig },
}

/// A weights file read once, by content: the DGMS authors' format, or
/// plain named tensors (a dgms checkpoint's or plain safetensors, or a
/// plain PyTorch file).
pub enum WeightsFile {
    /// A PyTorch file in the DGMS authors' format (it carries mixtures),
    /// its tensors as stored: [`import_reference`] checks and converts them.
    Reference(HashMap<String, Tensor>),
    /// Tensors under this project's (torchvision's) names.
    Plain(HashMap<String, Tensor>),
}

/// Reads the weights file at `path` once (see [`WeightsFile`]).
pub fn read_weights_file(path: &Path) -> Result<WeightsFile> {
    if !is_pth(path) {
        return Ok(WeightsFile::Plain(checkpoint::load_tensors(path)?));
    }
    let tensors = read_pth(path)?;
    Ok(match is_reference_state_dict(&tensors) {
        true => WeightsFile::Reference(tensors),
        false => WeightsFile::Plain(tensors),
    })
}

/// Reads the checkpoint at `path`, of either format (recognised by
/// content). `model` is required for the authors' format (their files do
/// not name the network) and, for a dgms checkpoint, must match the one
/// it records when given. `image_size` sets the input size of an imported
/// network (default: the size it was designed for).
pub fn open_checkpoint(
    path: &Path,
    model: Option<&str>,
    image_size: Option<usize>,
) -> Result<(Checkpoint, Origin)> {
    if !is_pth(path) {
        let ckpt = checkpoint::load(path)?;
        if let Some(m) = model.filter(|m| *m != ckpt.meta.model) {
            return Err(TrainError::WrongModel {
                path: path.to_path_buf(),
                found: ckpt.meta.model.clone(),
                expected: m.to_string(),
            });
        }
        return Ok((ckpt, Origin::Dgms));
    }
    let tensors = read_pth(path)?;
    if !is_reference_state_dict(&tensors) {
        return Err(TrainError::PlainPyTorch {
            path: path.to_path_buf(),
        });
    }
    let model = model.ok_or_else(|| TrainError::ReferenceNeedsModel {
        path: path.to_path_buf(),
    })?;
    import_reference(path, tensors, model, image_size)
}

/// The import proper of the tensors of an authors' file read from `path`:
/// checks every key against `model` and builds the checkpoint (see the
/// module docs).
pub fn import_reference(
    path: &Path,
    tensors: HashMap<String, Tensor>,
    model: &str,
    image_size: Option<usize>,
) -> Result<(Checkpoint, Origin)> {
    let name = path.display().to_string();
    let dict = ReferenceStateDict::from_tensors(&name, tensors)?;
    let model_config = dict.arch_config(model, image_size)?;
    let arch = dgms_models::dgms_arch::architecture(model, &model_config)
        .map_err(dgms_models::ModelError::from)?;
    dict.check_against(&name, &arch)?;
    let mut out = dict.tensors;
    let mut mixture_k = BTreeMap::new();
    for (layer, p) in &dict.mixtures {
        let scalar = |v: f32| Tensor::from_vec(vec![v], 1, &Device::Cpu);
        let entries = [
            (
                "mu",
                Tensor::from_vec(p.mu.clone(), p.mu.len(), &Device::Cpu)?,
            ),
            (
                "sigma",
                Tensor::from_vec(p.sigma.clone(), p.sigma.len(), &Device::Cpu)?,
            ),
            (
                "pi",
                Tensor::from_vec(p.pi.clone(), p.pi.len(), &Device::Cpu)?,
            ),
            ("pi_zero", scalar(p.pi_zero)?),
            ("sigma_zero", scalar(p.sigma_zero)?),
            ("tau", scalar(p.tau)?),
        ];
        for (param, t) in entries {
            out.insert(mixture_key(layer, param), t);
        }
        mixture_k.insert(layer.clone(), p.k());
    }
    let k = mixture_k.values().copied().max().unwrap_or(2);
    let tau = dict
        .mixtures
        .values()
        .next()
        .map(|p| p.tau)
        .unwrap_or(dgms_core::DEFAULT_TAU);
    let mixture = MixtureSettings {
        k,
        tau,
        layers: Some(mixture_k.keys().cloned().collect()),
        ..MixtureSettings::with_k(k)
    };
    // No data set is recorded; `--data` supplies one where a command needs it.
    let config = RunConfig::dgms(model, "", PathBuf::from("."), None, mixture);
    let meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        model: model.to_string(),
        epoch: 0,
        step: 0,
        seed: 0,
        top1: 0.0,
        best_top1: 0.0,
        mixture_k,
        train_tau: false,
        hardened: false,
        config,
    };
    let ckpt = Checkpoint {
        meta,
        tensors: out,
        metrics: String::new(),
    };
    Ok((ckpt, Origin::Reference { model_config }))
}
