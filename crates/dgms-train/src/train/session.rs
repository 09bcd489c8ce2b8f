//! A model with its data, built from a [`RunConfig`]: the pieces every
//! phase (pretrain, dgms, eval, harden, quantize) starts from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_core::{workloads, InitConfig, MixtureOptions, SigmaInit};
use dgms_data::{Batch, DataSource, Loader, LoaderConfig, Mode, Split};
use dgms_models::{
    build_model, is_batch_norm_stat, set_varmap, DgmsModel, LayerSelection, ModelConfig, QConv2d,
};

use crate::config::{MixtureSettings, RunConfig};
use crate::error::{Result, TrainError};
use crate::image_settings::ImageSettings;
use crate::reference_import::{import_reference, read_weights_file, WeightsFile};
use crate::train::checkpoint::{self, Checkpoint};
use crate::train::metrics::Tally;
use crate::train::uniform_baseline;

/// Train and test data of a run.
pub struct Data {
    pub source: DataSource,
    pub train: Split,
    pub test: Split,
}

impl Data {
    /// Loads the data named by a source string (`embedded`, `cifar10:DIR`,
    /// ...), folder sources with the default transforms.
    pub fn load(source: &str) -> Result<Self> {
        Self::load_with(source, &ImageSettings::default())
    }

    /// Loads (in-memory sources) or lists (folder sources, decoded per
    /// batch with `images`' transforms) the data named by `source`.
    pub fn load_with(source: &str, images: &ImageSettings) -> Result<Self> {
        let parsed = DataSource::from_str(source)?;
        let splits = parsed
            .open(images.transform())
            .map_err(|e| TrainError::Data {
                what: "loading data set",
                source_name: parsed.to_string(),
                source: e,
            })?;
        Ok(Self {
            source: parsed,
            train: splits.train,
            test: splits.test,
        })
    }

    /// The test split, cut to its first `limit` images.
    pub fn test_subset(&self, limit: Option<usize>) -> Result<Split> {
        match limit {
            Some(n) => Ok(self.test.head(n)?),
            None => Ok(self.test.clone()),
        }
    }

    /// The model shape for this data.
    pub fn model_config(&self) -> ModelConfig {
        let (channels, height, _) = self.train.shape();
        ModelConfig {
            in_channels: channels,
            num_classes: self.train.classes(),
            image_size: height,
        }
    }

    /// Files of either split skipped so far because they could not be
    /// decoded, with the reason.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        let mut all = self.train.skipped();
        all.extend(self.test.skipped());
        all
    }
}

/// A model and the `VarMap` holding its tensors.
pub struct Model {
    pub varmap: VarMap,
    pub net: Box<dyn DgmsModel>,
}

impl Model {
    /// A freshly initialised model of `name` for `data`, its weights drawn
    /// from `seed` (see [`Self::reseed`]), on the CPU.
    pub fn new(name: &str, data: &Data, seed: u64) -> Result<Self> {
        Self::with_config(name, &data.model_config(), seed)
    }

    /// [`Self::new`] with its tensors on `device`.
    pub fn new_on(name: &str, data: &Data, seed: u64, device: &Device) -> Result<Self> {
        Self::with_config_on(name, &data.model_config(), seed, device)
    }

    /// A freshly initialised model of `name` for inputs and classes `cfg`
    /// (no data set needed), its weights drawn from `seed`, on the CPU.
    pub fn with_config(name: &str, cfg: &ModelConfig, seed: u64) -> Result<Self> {
        Self::with_config_on(name, cfg, seed, &Device::Cpu)
    }

    /// [`Self::with_config`] with its tensors on `device`. Off the CPU the
    /// network runs candle's conv and batch norm instead of the project's
    /// CPU-only ops (`dgms_models::ConvBackend::for_device`).
    pub fn with_config_on(
        name: &str,
        cfg: &ModelConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = build_model(name, cfg, vb)?;
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
                // Drawn on the host (the same values on every device).
                var.set(&Tensor::from_vec(values, dims, var.device())?)?;
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

    /// The device the model's tensors are on.
    pub fn device(&self) -> Device {
        net_device(self.net.as_ref())
    }

    /// The conv layer `name` (e.g. a mixture layer's), or
    /// [`TrainError::UnknownConv`].
    pub fn conv(&self, name: &str) -> Result<&QConv2d> {
        self.net.conv(name).ok_or_else(|| TrainError::UnknownConv {
            layer: name.to_string(),
        })
    }

    /// Loads the model tensors of a checkpoint or weights file. A
    /// classifier with another number of classes than the data's is an
    /// error naming both.
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let tensors = match read_weights_file(path)? {
            // The authors' format: its own names, checked key by key.
            WeightsFile::Reference(t) => {
                import_reference(path, t, self.net.model_name(), None)?
                    .0
                    .tensors
            }
            WeightsFile::Plain(t) => t,
        };
        self.set_tensors(path, &tensors)
    }

    /// Sets the model's tensors to `tensors` (read from `path`, named in
    /// errors), checking the classifier's rows first.
    pub fn set_tensors(&self, path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.check_classes(path, tensors)?;
        set_varmap(&self.varmap, tensors, &path.display().to_string())?;
        Ok(())
    }

    /// The classifier's rows in `tensors` against this model's classes.
    fn check_classes(&self, path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let name = format!("{}.weight", self.net.classifier_name());
        let ours = self
            .named_tensors()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.dims().first().copied().unwrap_or(0));
        let theirs = tensors.get(&name).and_then(|t| t.dims().first().copied());
        match (ours, theirs) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(TrainError::ClassCount {
                path: path.to_path_buf(),
                classifier: name,
                weights: theirs,
                data: ours,
            }),
            _ => Ok(()),
        }
    }

    /// Loads the starting point of a DGMS run (or of `dgms quantize`) from
    /// `path`: full-precision weights, whose mixtures are then initialised
    /// by `m`; or a DGMS authors' checkpoint, whose stored mixtures are
    /// continued as they are (no k-means), which must have `m.k` components.
    pub fn load_init(&self, path: &Path, m: &MixtureSettings) -> Result<()> {
        let tensors = match read_weights_file(path)? {
            WeightsFile::Plain(t) => {
                self.set_tensors(path, &t)?;
                return self.enable_mixtures(m);
            }
            WeightsFile::Reference(t) => t,
        };
        let (ckpt, _) = import_reference(path, tensors, self.net.model_name(), None)?;
        self.check_classes(path, &ckpt.tensors)?;
        self.restore(path, &ckpt, Some(m.k))?;
        tracing::info!(
            "{}: continuing its {} stored mixtures (no k-means)",
            path.display(),
            ckpt.meta.mixture_k.len()
        );
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
        if let Some(u) = &ckpt.meta.config.uniform {
            return self.restore_uniform(path, u, &ckpt.tensors);
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
            // Saved from the host; the mixture goes where the layer is.
            let opts = MixtureOptions {
                device: conv.weight().device().clone(),
                ..opts.clone()
            };
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

    /// Every tensor to save: the model's, then every mixture's (on the
    /// model's device; [`checkpoint::save`] copies them to the host).
    pub fn checkpoint_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        checkpoint::mixture_tensors(&self.net.mixtures(), &mut out);
        uniform_baseline::uniform_tensors(self, &mut out);
        out
    }
}

/// The device `net` runs on: that of its first conv's weights (the CPU
/// for a network without convs).
pub fn net_device(net: &dyn DgmsModel) -> Device {
    net.convs()
        .first()
        .map_or(Device::Cpu, |c| c.weight().device().clone())
}

/// `batch` with its images and labels on `device`. Batches are built on
/// the host (the loader's threads) and moved here, on the thread that
/// runs the model.
pub fn batch_on(batch: Batch, device: &Device) -> Result<Batch> {
    if device.is_cpu() {
        return Ok(batch);
    }
    Ok(Batch {
        images: batch.images.to_device(device)?,
        labels: batch.labels.to_device(device)?,
        ..batch
    })
}

/// Images per evaluation batch when not given: 250 for in-memory sets,
/// 50 for folders (a 224 x 224 batch of 50 is 30 MB of f32).
pub fn default_eval_batch(split: &Split) -> usize {
    match split {
        Split::Memory(_) => 250,
        Split::Files(_) => 50,
    }
}

/// Evaluates `net` (eval mode: hard weights where mixtures are set) on
/// every image of `split` that decodes.
pub fn evaluate(net: &dyn DgmsModel, split: &Split) -> Result<Tally> {
    evaluate_with(net, split, default_eval_batch(split), false)
}

/// [`evaluate`] with a batch size, and a progress bar (images/s, ETA) when
/// `progress` is set. Batches are decoded one ahead of the model.
pub fn evaluate_with(
    net: &dyn DgmsModel,
    split: &Split,
    batch_size: usize,
    progress: bool,
) -> Result<Tally> {
    evaluate_recording(net, split, batch_size, progress, None)
}

/// [`evaluate_with`], also saying for every image evaluated (skipped files
/// left out) whether its top-1 is right: `(index in the split, right)`, in
/// split order. Two models evaluated this way on the same split are paired
/// image by image (see [`crate::stats::mcnemar_exact`]).
pub fn evaluate_per_image(
    net: &dyn DgmsModel,
    split: &Split,
    batch_size: usize,
    progress: bool,
) -> Result<(Tally, Vec<(usize, bool)>)> {
    let mut hits = Vec::with_capacity(split.len());
    let tally = evaluate_recording(net, split, batch_size, progress, Some(&mut hits))?;
    Ok((tally, hits))
}

fn evaluate_recording(
    net: &dyn DgmsModel,
    split: &Split,
    batch_size: usize,
    progress: bool,
    mut hits: Option<&mut Vec<(usize, bool)>>,
) -> Result<Tally> {
    let loader = Loader::new(
        split.clone(),
        LoaderConfig::for_split(split, Mode::Eval, batch_size, 0),
    )?;
    let bar = if progress {
        crate::train::trainer::images_bar(split.len() as u64)?
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut tally = Tally::default();
    let batches = loader.batches_per_epoch();
    let device = net_device(net);
    for batch in loader.prefetch(0, 0, batches, 1)? {
        let batch = batch_on(batch?, &device)?;
        // Requested images, skipped files included, so the bar ends full.
        let remaining = split.len() as u64 - bar.position().min(split.len() as u64);
        bar.inc((batch_size as u64).min(remaining));
        if batch.is_empty() {
            continue;
        }
        let logits = net.forward_t(&batch.images, false)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?.to_scalar::<f32>()?;
        tally.add(loss as f64, &logits, &batch.labels)?;
        if let Some(hits) = hits.as_deref_mut() {
            let right = crate::train::metrics::top1_hits(&logits, &batch.labels)?;
            hits.extend(batch.indices.iter().copied().zip(right));
        }
    }
    bar.finish_and_clear();
    Ok(tally)
}

/// The model and data of a run config, restored or initialised as it says,
/// on the CPU.
pub fn prepare(cfg: &RunConfig, resume: Option<(&Path, &Checkpoint)>) -> Result<(Data, Model)> {
    prepare_on(cfg, resume, &Device::Cpu)
}

/// [`prepare`] with the model on `device` (checkpoints and weights files
/// are read on the host and moved there).
pub fn prepare_on(
    cfg: &RunConfig,
    resume: Option<(&Path, &Checkpoint)>,
    device: &Device,
) -> Result<(Data, Model)> {
    let data = Data::load_with(&cfg.data, &cfg.images)?;
    let model = Model::new_on(&cfg.model, &data, cfg.seed, device)?;
    match resume {
        Some((path, ckpt)) => model.restore(path, ckpt, cfg.mixture.as_ref().map(|m| m.k))?,
        None => match (&cfg.init_from, &cfg.mixture) {
            (Some(init), Some(m)) => model.load_init(init, m)?,
            (Some(init), None) => model.load_weights(init)?,
            (None, Some(m)) => model.enable_mixtures(m)?,
            (None, None) => {}
        },
    }
    if let (None, Some(u)) = (resume, &cfg.uniform) {
        model.enable_uniform(u)?;
    }
    Ok((data, model))
}
