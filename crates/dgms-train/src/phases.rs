//! The phases after training: hardening, evaluation, the report
//! (docs/METHOD.md#report), and post-training quantization (init + harden, no training).

use std::path::Path;

use candle_core::{Device, Tensor};
pub use dgms_core::HardeningRule;
use dgms_core::{HardenedLayer, ModelReport};
use serde::Serialize;

use crate::config::InvalidSetting;
use crate::config::{MixtureSettings, RunConfig};
use crate::device::DeviceSpec;
use crate::error::{Result, TrainError};
use crate::image_settings::ImageSettings;
use crate::reference_import::{
    import_reference, open_checkpoint, read_weights_file, Origin, WeightsFile,
};
use crate::train::checkpoint::{self, Checkpoint, CheckpointMeta, FORMAT_VERSION};
use crate::train::metrics::Tally;
use crate::train::session::{batch_on, default_eval_batch, evaluate_with, Data, Model};
use dgms_data::{Loader, LoaderConfig, Mode};

pub use crate::model_report::{report, report_with, report_with_pictures, Report};

/// Accuracy of a model on a test set.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    /// Files left out because they could not be decoded (folder sources).
    pub skipped: usize,
}

impl From<Tally> for EvalResult {
    fn from(t: Tally) -> Self {
        Self {
            images: t.seen,
            top1: t.top1(),
            top5: t.top5(),
            loss: t.loss(),
            skipped: 0,
        }
    }
}

/// How a command reads a checkpoint.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions<'a> {
    /// The network (`--model`): required for the DGMS authors' format,
    /// checked against the checkpoint's record otherwise.
    pub model: Option<&'a str>,
    /// Input size of an imported network (default: its designed size).
    pub image_size: Option<usize>,
    /// Data source over the checkpoint's own (the authors' files record
    /// none).
    pub data: Option<&'a str>,
    /// Resize and crop of a folder source, over the checkpoint's settings.
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    /// Where the model computes (the CPU by default); the checkpoint is
    /// read on the host and moved there.
    pub device: DeviceSpec,
}

/// Loads a checkpoint's model (with its mixtures, or hardened) and its data
/// (`opts.data` overrides the run's source; the run's image settings
/// apply). A DGMS authors' checkpoint records no data: its data is `None`
/// unless `opts.data` names some, whose classes must then match.
pub fn open(path: &Path, opts: &OpenOptions<'_>) -> Result<(Checkpoint, Option<Data>, Model)> {
    let device = opts.device.to_device()?;
    let (ckpt, origin) = open_checkpoint(path, opts.model, opts.image_size)?;
    open_loaded(path, ckpt, origin, opts, None, &device)
}

/// [`open`] of a checkpoint already read from `path` onto `device`
/// (`opts.device` opened); `loaded`, when given, is the data already
/// loaded from `opts.data`.
fn open_loaded(
    path: &Path,
    ckpt: Checkpoint,
    origin: Origin,
    opts: &OpenOptions<'_>,
    loaded: Option<Data>,
    device: &Device,
) -> Result<(Checkpoint, Option<Data>, Model)> {
    let cfg = &ckpt.meta.config;
    let images = ImageSettings {
        resize: opts.resize.unwrap_or(cfg.images.resize),
        crop: opts.crop.unwrap_or(cfg.images.crop),
        ..cfg.images
    };
    images.validate()?;
    let (data, model) = match origin {
        Origin::Dgms => {
            let data = match loaded {
                Some(d) => d,
                None => Data::load_with(opts.data.unwrap_or(&cfg.data), &images)?,
            };
            let model = Model::new_on(&ckpt.meta.model, &data, ckpt.meta.seed, device)?;
            (Some(data), model)
        }
        Origin::Reference { model_config } => {
            let data = match loaded {
                Some(d) => Some(d),
                None => opts.data.map(|d| Data::load_with(d, &images)).transpose()?,
            };
            if let Some(d) = &data {
                let classes = d.model_config().num_classes;
                if classes != model_config.num_classes {
                    let classifier =
                        dgms_models::dgms_arch::architecture(&ckpt.meta.model, &model_config)
                            .map(|a| a.classifier_weight())
                            .unwrap_or_default();
                    return Err(TrainError::ClassCount {
                        path: path.to_path_buf(),
                        classifier,
                        weights: model_config.num_classes,
                        data: classes,
                    });
                }
            }
            (
                data,
                Model::with_config_on(&ckpt.meta.model, &model_config, 0, device)?,
            )
        }
    };
    model.restore(path, &ckpt, None)?;
    Ok((ckpt, data, model))
}

/// Evaluates the checkpoint at `path` on its data's test split (or
/// `data`'s), on the first `max_eval` images when given.
pub fn eval(path: &Path, data: Option<&str>, max_eval: Option<usize>) -> Result<EvalResult> {
    let opts = EvalOptions {
        data,
        max_eval,
        ..EvalOptions::default()
    };
    eval_with(EvalWeights::Checkpoint(path), &opts)
}

/// What `dgms eval` evaluates.
#[derive(Clone, Copy, Debug)]
pub enum EvalWeights<'a> {
    /// A dgms checkpoint (its model, data and image settings by default).
    Checkpoint(&'a Path),
    /// A weights file (safetensors, a dgms checkpoint or a PyTorch `.pth`)
    /// of the network `model`.
    File { model: &'a str, weights: &'a Path },
}

/// Options of `dgms eval`.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions<'a> {
    /// Data source; required with [`EvalWeights::File`].
    pub data: Option<&'a str>,
    /// Resize and crop of a folder source, over the checkpoint's settings
    /// (or 256 / 224 for a weights file).
    pub resize: Option<u32>,
    pub crop: Option<u32>,
    pub max_eval: Option<usize>,
    /// Images per batch (default [`default_eval_batch`]).
    pub batch_size: Option<usize>,
    /// Show a progress bar (images/s, ETA).
    pub progress: bool,
    /// The network of a DGMS authors' checkpoint (`--model`).
    pub model: Option<&'a str>,
    /// How mixture layers are hardened before evaluating.
    pub hardening: HardeningRule,
    /// Where the model computes (the CPU by default).
    pub device: DeviceSpec,
}

/// Evaluates a checkpoint or weights file on the test (val) split: mixture
/// layers use their hard weights. Undecodable files are skipped, counted in
/// the result and logged.
pub fn eval_with<'a>(weights: EvalWeights<'a>, opts: &EvalOptions<'a>) -> Result<EvalResult> {
    if opts.max_eval == Some(0) {
        return Err(TrainError::from(InvalidSetting {
            flag: "--max-eval",
            value: "0".into(),
            expected: "at least 1 image is needed to evaluate".into(),
        }));
    }
    if opts.batch_size == Some(0) {
        return Err(TrainError::from(InvalidSetting {
            flag: "--test-batch-size",
            value: "0".into(),
            expected: "at least 1".into(),
        }));
    }
    // Before any file is read: a device that cannot be opened is the
    // first error.
    let device = opts.device.to_device()?;
    let images = |base: ImageSettings| {
        let settings = ImageSettings {
            resize: opts.resize.unwrap_or(base.resize),
            crop: opts.crop.unwrap_or(base.crop),
            ..base
        };
        settings.validate().map(|()| settings)
    };
    let open_opts = |model: Option<&'a str>| OpenOptions {
        model,
        image_size: None,
        data: opts.data,
        resize: opts.resize,
        crop: opts.crop,
        device: opts.device,
    };
    let no_data = || {
        TrainError::from(InvalidSetting {
            flag: "--data",
            value: "(none)".into(),
            expected: "a data source: the DGMS authors' checkpoints record none".into(),
        })
    };
    let (data, model) = match weights {
        EvalWeights::Checkpoint(path) => {
            let (ckpt, origin) = open_checkpoint(path, opts.model, None)?;
            let opened = open_opts(opts.model);
            let (_, data, model) = open_loaded(path, ckpt, origin, &opened, None, &device)?;
            (data.ok_or_else(no_data)?, model)
        }
        EvalWeights::File { model, weights } => {
            // The data first (a weights file records none): listing a
            // folder costs less than reading the weights.
            let source = opts.data.ok_or_else(|| {
                TrainError::from(InvalidSetting {
                    flag: "--data",
                    value: "(none)".into(),
                    expected: "a data source: --weights carries no record of its data".into(),
                })
            })?;
            let data = Data::load_with(source, &images(ImageSettings::default())?)?;
            match read_weights_file(weights)? {
                // An authors' checkpoint given as --weights carries
                // mixtures: it is evaluated as the checkpoint it is.
                WeightsFile::Reference(tensors) => {
                    let (ckpt, origin) = import_reference(weights, tensors, model, None)?;
                    let opened = open_opts(Some(model));
                    let (_, data, net) =
                        open_loaded(weights, ckpt, origin, &opened, Some(data), &device)?;
                    (data.ok_or_else(no_data)?, net)
                }
                WeightsFile::Plain(tensors) => {
                    let net = Model::new_on(model, &data, 0, &device)?;
                    net.set_tensors(weights, &tensors)?;
                    (data, net)
                }
            }
        }
    };
    if opts.hardening != HardeningRule::LogSpace && !model.net.mixtures().is_empty() {
        harden_model_with(&model, opts.hardening)?;
    }
    let test = data.test_subset(opts.max_eval)?;
    let batch = opts.batch_size.unwrap_or_else(|| default_eval_batch(&test));
    let tally = evaluate_with(model.net.as_ref(), &test, batch, opts.progress)?;
    let mut result = EvalResult::from(tally);
    result.skipped = test.skipped().len();
    Ok(result)
}

/// Hardens every mixture layer of `model`: the weight becomes its hard
/// weight; returns each layer's indices and table.
pub fn harden_model(model: &Model) -> Result<Vec<HardenedLayer>> {
    harden_model_with(model, HardeningRule::LogSpace)
}

/// [`harden_model`] with the given rule.
pub fn harden_model_with(model: &Model, rule: HardeningRule) -> Result<Vec<HardenedLayer>> {
    let mut layers = Vec::new();
    for (name, mixture) in model.net.mixtures() {
        let conv = model.conv(&name)?;
        let hardened = mixture.harden_with(conv.weight(), rule)?;
        let var = conv.weight_var().ok_or_else(|| TrainError::NotAVariable {
            layer: name.clone(),
        })?;
        var.set(&Tensor::from_vec(
            hardened.decode(),
            conv.weight().shape(),
            conv.weight().device(),
        )?)?;
        conv.set_mixture(None);
        layers.push(hardened);
    }
    if layers.is_empty() {
        return Err(TrainError::NoMixtureLayer);
    }
    Ok(layers)
}

/// Batches of `dgms harden --recalibrate-bn` by default.
pub const DEFAULT_RECALIBRATION_BATCHES: usize = 50;

/// Re-estimates every batch norm's running statistics under the model's
/// current (hardened) weights: `batches` train-mode forward passes over
/// the training set, without augmentation and without gradients, each
/// moving the running averages with momentum 0.1 (0.9^50 < 1%, so 50
/// batches forget the statistics gathered during training).
///
/// Why: during DGMS fine-tuning the running statistics follow the soft
/// weights, while evaluation runs the hard ones; the shift between the two
/// is largest for weights near component boundaries, exactly those that
/// receive large gradients. No weight or mixture parameter changes.
pub fn recalibrate_batch_norm(model: &Model, data: &Data, batches: usize, seed: u64) -> Result<()> {
    if batches == 0 {
        return Ok(());
    }
    let config = LoaderConfig::for_split(&data.train, Mode::Eval, 128, seed).with_shuffle(true);
    let loader = Loader::new(data.train.clone(), config)?;
    let available = loader.batches_per_epoch();
    if batches > available {
        return Err(TrainError::from(InvalidSetting {
            flag: "--recalibrate-bn",
            value: batches.to_string(),
            expected: format!(
                "the training set has {available} batches of 128 (one pass is the most)"
            ),
        }));
    }
    let device = model.device();
    for batch in loader.epoch(0).take(batches) {
        let batch = batch_on(batch?, &device)?;
        if batch.is_empty() {
            continue;
        }
        model
            .net
            .forward_t(&batch.images.detach(), true)
            .map_err(TrainError::Recalibration)?;
    }
    Ok(())
}

/// Writes a hardened checkpoint: hard conv weights plus `<layer>.indices`
/// and `<layer>.codebook` of every hardened layer.
pub fn save_hardened(
    path: &Path,
    model: &Model,
    layers: &[HardenedLayer],
    mut meta: CheckpointMeta,
) -> Result<ModelReport> {
    let mut tensors = model.checkpoint_tensors();
    for l in layers {
        let n = l.indices.len();
        tensors.push((
            format!("{}.indices", l.name),
            Tensor::from_vec(l.indices.clone(), n, &candle_core::Device::Cpu)?,
        ));
        tensors.push((
            format!("{}.codebook", l.name),
            Tensor::from_vec(l.table.clone(), l.k(), &candle_core::Device::Cpu)?,
        ));
    }
    meta.hardened = true;
    meta.mixture_k = layers.iter().map(|l| (l.name.clone(), l.k())).collect();
    checkpoint::save(path, &tensors, &meta)?;
    Ok(report_of(layers))
}

/// The report (docs/METHOD.md#report) of hardened layers.
pub fn report_of(layers: &[HardenedLayer]) -> ModelReport {
    ModelReport::from_layers(layers.iter().map(HardenedLayer::report).collect())
}

/// [`harden_with`] of a dgms checkpoint with its own data, the default
/// rule and `recalibrate_bn` batches.
pub fn harden(path: &Path, out: &Path, recalibrate_bn: usize) -> Result<ModelReport> {
    harden_with(
        path,
        out,
        Some(recalibrate_bn),
        &OpenOptions::default(),
        HardeningRule::LogSpace,
    )
}

/// `dgms harden`: a trained DGMS checkpoint (or a DGMS authors' one) to a
/// hardened one, with the batch-norm statistics re-estimated under the
/// hard weights from `recalibrate_bn` training batches (0: kept as
/// trained). `None` means [`DEFAULT_RECALIBRATION_BATCHES`] for a dgms
/// checkpoint and 0 for an authors' one (which records no data, and whose
/// released statistics are those the authors evaluate with).
pub fn harden_with(
    path: &Path,
    out: &Path,
    recalibrate_bn: Option<usize>,
    opts: &OpenOptions<'_>,
    rule: HardeningRule,
) -> Result<ModelReport> {
    dgms_io::ensure_not_input("--out", out, &[("--checkpoint", path)])?;
    let (ckpt, data, model) = open(path, opts)?;
    if ckpt.meta.hardened {
        return Err(TrainError::AlreadyHardened {
            path: path.to_path_buf(),
        });
    }
    let batches = recalibrate_bn.unwrap_or(if data.is_some() && opts.data.is_none() {
        DEFAULT_RECALIBRATION_BATCHES
    } else {
        0
    });
    let layers = harden_model_with(&model, rule)?;
    if batches > 0 {
        let data = data.ok_or_else(|| {
            TrainError::from(InvalidSetting {
                flag: "--recalibrate-bn",
                value: batches.to_string(),
                expected: "0, or --data: the DGMS authors' checkpoints record no data".into(),
            })
        })?;
        recalibrate_batch_norm(&model, &data, batches, ckpt.meta.seed)?;
    }
    save_hardened(out, &model, &layers, ckpt.meta)
}

/// `dgms quantize`: post-training quantization of full-precision weights
/// (k-means init + harden, no training), written as a hardened checkpoint.
pub fn quantize(
    model_name: &str,
    weights: &Path,
    data: &str,
    mixture: &MixtureSettings,
    out: &Path,
) -> Result<(ModelReport, Model, Data)> {
    dgms_io::ensure_not_input("--out", out, &[("--weights", weights)])?;
    let data_set = Data::load(data)?;
    let model = Model::new(model_name, &data_set, 0)?;
    model.load_init(weights, mixture)?;
    let layers = harden_model(&model)?;
    let mut config = RunConfig::pretrain(
        model_name,
        data,
        out.parent().unwrap_or(Path::new(".")).to_path_buf(),
    );
    config.epochs = 0;
    config.init_from = Some(weights.to_path_buf());
    config.mixture = Some(mixture.clone());
    let meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        model: model_name.to_string(),
        epoch: 0,
        step: 0,
        seed: 0,
        // Not evaluated here (JSON has no NaN).
        top1: 0.0,
        best_top1: 0.0,
        mixture_k: Default::default(),
        train_tau: false,
        hardened: true,
        config,
    };
    let report = save_hardened(out, &model, &layers, meta)?;
    Ok((report, model, data_set))
}
