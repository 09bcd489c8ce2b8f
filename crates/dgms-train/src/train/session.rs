//! A model with its data, built from a [`RunConfig`]: the pieces every
//! phase (pretrain, dgms, eval, harden, quantize) starts from.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_core::{workloads, InitConfig, MixtureOptions, SigmaInit};
use dgms_data::{DataSource, Dataset, DatasetKind, Loader, LoaderConfig};
use dgms_models::{
    build_model, is_batch_norm_stat, set_varmap, DgmsModel, LayerSelection, ModelConfig,
};

use crate::config::{MixtureSettings, RunConfig};
use crate::error::{Result, TrainError};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::metrics::Tally;

/// Train and test data of a run.
pub struct Data {
    pub kind: DatasetKind,
    pub train: Arc<Dataset>,
    pub test: Arc<Dataset>,
}

impl Data {
    /// Loads the data named by a source string (`embedded`, `cifar10:DIR`, ...).
    pub fn load(source: &str) -> Result<Self> {
        let source = DataSource::from_str(source)?;
        let splits = source.load().map_err(|e| TrainError::Data {
            what: "loading data set",
            source_name: source.to_string(),
            source: e,
        })?;
        Ok(Self {
            kind: source.kind(),
            train: Arc::new(splits.train),
            test: Arc::new(splits.test),
        })
    }

    /// The test split, cut to its first `limit` images.
    pub fn test_subset(&self, limit: Option<usize>) -> Result<Arc<Dataset>> {
        match limit {
            Some(n) if n < self.test.len() => {
                let idx: Vec<usize> = (0..n).collect();
                Ok(Arc::new(self.test.subset(&idx)?))
            }
            _ => Ok(self.test.clone()),
        }
    }

    /// The model shape for this data.
    pub fn model_config(&self) -> ModelConfig {
        let (channels, height, _) = self.kind.shape();
        ModelConfig {
            in_channels: channels,
            num_classes: self.kind.classes(),
            image_size: height,
        }
    }
}

/// A model and the `VarMap` holding its tensors.
pub struct Model {
    pub varmap: VarMap,
    pub net: Box<dyn DgmsModel>,
}

impl Model {
    /// A freshly initialised model of `name` for `data`, its weights drawn
    /// from `seed` (see [`Self::reseed`]).
    pub fn new(name: &str, data: &Data, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = build_model(name, &data.model_config(), vb)?;
        let model = Self { varmap, net };
        model.reseed(seed)?;
        Ok(model)
    }

    /// Redraws every conv and linear weight from `seed`: Kaiming normal
    /// (std sqrt(2 / fan_in)), as the authors' CIFAR ResNets initialise
    /// them, and their biases 0. candle draws initial values from an
    /// unseeded RNG (its CPU device cannot be seeded), so without this two
    /// runs with the same seed would differ. Batch-norm tensors keep
    /// candle's deterministic 1 / 0 initial values.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        let vars = self.named_tensors();
        let ranks: std::collections::HashMap<&str, usize> =
            vars.iter().map(|(n, v)| (n.as_str(), v.rank())).collect();
        for (i, (name, var)) in vars.iter().enumerate() {
            let dims = var.dims();
            if name.ends_with(".weight") && dims.len() >= 2 {
                let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
                let std = (2.0 / fan_in as f64).sqrt();
                let values = workloads::normal_weights(
                    var.elem_count(),
                    std,
                    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .wrapping_add(i as u64),
                );
                var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
            } else if let Some(prefix) = name.strip_suffix(".bias") {
                if ranks
                    .get(format!("{prefix}.weight").as_str())
                    .is_some_and(|&r| r >= 2)
                {
                    var.set(&var.as_tensor().zeros_like()?)?;
                }
            }
        }
        Ok(())
    }

    /// Loads the model tensors of a checkpoint or weights file.
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let tensors = checkpoint::load_tensors(path)?;
        set_varmap(&self.varmap, &tensors, &path.display().to_string())?;
        Ok(())
    }

    /// Initialises the mixtures of a DGMS run from the current weights.
    pub fn enable_mixtures(&self, m: &MixtureSettings) -> Result<()> {
        let init = InitConfig {
            k: m.k,
            seed: m.init_seed,
            tau: m.tau,
            sigma: if m.empirical {
                SigmaInit::empirical()
            } else {
                SigmaInit::Cluster
            },
            ..InitConfig::default()
        };
        let opts = MixtureOptions {
            train_tau: m.train_tau,
            ..MixtureOptions::default()
        };
        let selection = match &m.layers {
            None => LayerSelection::default(),
            Some(names) => LayerSelection::names(names.clone()),
        };
        self.net.enable_mixtures(&init, &opts, &selection)?;
        Ok(())
    }

    /// Restores weights and mixtures from a checkpoint, checking that it is
    /// one of this model and, when `k` is given, of this K.
    pub fn restore(&self, path: &Path, ckpt: &Checkpoint, k: Option<usize>) -> Result<()> {
        if ckpt.meta.model != self.net.model_name() {
            return Err(TrainError::WrongModel {
                path: path.to_path_buf(),
                found: ckpt.meta.model.clone(),
                expected: self.net.model_name().to_string(),
            });
        }
        set_varmap(&self.varmap, &ckpt.tensors, &path.display().to_string())?;
        let opts = MixtureOptions {
            train_tau: ckpt.meta.train_tau,
            ..MixtureOptions::default()
        };
        if ckpt.meta.hardened {
            // The hard weights are the conv weights already.
            return Ok(());
        }
        for (layer, &saved_k) in &ckpt.meta.mixture_k {
            if let Some(k) = k.filter(|&k| k != saved_k) {
                return Err(TrainError::TrainedWithOtherK {
                    path: path.to_path_buf(),
                    layer: layer.clone(),
                    saved: saved_k,
                    requested: k,
                });
            }
            let conv = self
                .net
                .conv(layer)
                .ok_or_else(|| TrainError::UnknownMixtureLayer {
                    path: path.to_path_buf(),
                    layer: layer.clone(),
                })?;
            conv.set_mixture(Some(ckpt.mixture(path, layer, saved_k, &opts)?));
        }
        Ok(())
    }

    /// The model's tensors by name, sorted (trained parameters and batch-norm
    /// statistics).
    pub fn named_tensors(&self) -> Vec<(String, candle_core::Var)> {
        let data = self
            .varmap
            .data()
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let mut v: Vec<_> = data.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The trained model parameters (batch-norm statistics excluded).
    pub fn trained_tensors(&self) -> Vec<(String, candle_core::Var)> {
        self.named_tensors()
            .into_iter()
            .filter(|(n, _)| !is_batch_norm_stat(n))
            .collect()
    }

    /// Every tensor to save: the model's, then every mixture's.
    pub fn checkpoint_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        checkpoint::mixture_tensors(&self.net.mixtures(), &mut out);
        out
    }
}

/// Evaluates `net` (eval mode: hard weights where mixtures are set) on
/// every image of `data`.
pub fn evaluate(net: &dyn DgmsModel, data: Arc<Dataset>, kind: DatasetKind) -> Result<Tally> {
    let loader = Loader::new(data, LoaderConfig::eval(kind, 250))?;
    let mut tally = Tally::default();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = net.forward_t(&batch.images, false)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?.to_scalar::<f32>()?;
        tally.add(loss as f64, &logits, &batch.labels)?;
    }
    Ok(tally)
}

/// The model and data of a run config, restored or initialised as it says.
pub fn prepare(cfg: &RunConfig, resume: Option<(&Path, &Checkpoint)>) -> Result<(Data, Model)> {
    let data = Data::load(&cfg.data)?;
    let model = Model::new(&cfg.model, &data, cfg.seed)?;
    match resume {
        Some((path, ckpt)) => model.restore(path, ckpt, cfg.mixture.as_ref().map(|m| m.k))?,
        None => {
            if let Some(init) = &cfg.init_from {
                model.load_weights(init)?;
            }
            if let Some(m) = &cfg.mixture {
                model.enable_mixtures(m)?;
            }
        }
    }
    Ok((data, model))
}
