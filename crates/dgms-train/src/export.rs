//! Export to the packed deployment format (`*.dgms.safetensors`, see
//! `dgms_qsimd::format`): from a hardened checkpoint (`dgms export`), or
//! straight from full-precision weights by k-means init + harden
//! (`dgms quantize --out X.dgms.safetensors`), which needs no data set.
//!
//! What goes into the file: every hardened layer as packed indices and its
//! codebook; every batch norm folded to `BN.scale` / `BN.shift` (eps 1e-5,
//! PyTorch's); every other model tensor (first conv, conv biases,
//! classifier) in f32. Left out: the latent weights of quantized layers,
//! mixture parameters, optimizer state and running statistics.
//!
//! CPU only (no `--device`): export reads checkpoints on the host, which is
//! where every checkpoint is saved from, whatever device trained it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use dgms_core::{HardenedLayer, HardeningRule, ModelReport};
use dgms_data::DataSource;
use dgms_models::{set_varmap, ModelConfig};
use dgms_qsimd::format::{fold_batch_norm, FpTensor, ModelMeta, PackedLayer, PackedModel};

use crate::config::InvalidSetting;
use crate::config::MixtureSettings;
use crate::error::{Result, TrainError};
use crate::image_settings::ImageSettings;
use crate::phases::{harden_model, harden_model_with, report_of};
use crate::reference_import::{
    import_reference, open_checkpoint, read_weights_file, Origin, WeightsFile,
};
use crate::train::session::Model;

/// The batch-norm eps of every network (dgms-arch's descriptions say it).
pub const BN_EPS: f64 = dgms_arch::BATCH_NORM_EPS;

/// File-name ending that selects the packed format in `dgms quantize --out`.
pub const PACKED_SUFFIX: &str = ".dgms.safetensors";

/// Whether `path` names a packed model file (ends in `.dgms.safetensors`).
pub fn is_packed_path(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(PACKED_SUFFIX))
}

/// Sizes of an exported model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportSummary {
    pub arch: String,
    pub quantized_layers: usize,
    pub fp_tensors: usize,
    /// Every weight and tensor of the file as f32 (batch norm folded).
    pub fp32_bytes: usize,
    /// Payload as stored: packed indices, codebooks, f32 tensors.
    pub packed_bytes: usize,
    /// The file on disk (payload plus the safetensors header).
    pub file_bytes: u64,
}

impl ExportSummary {
    fn new(model: &PackedModel, file_bytes: u64) -> Self {
        Self {
            arch: model.meta.arch.clone(),
            quantized_layers: model.layers.len(),
            fp_tensors: model.tensors.len(),
            fp32_bytes: model.fp32_bytes(),
            packed_bytes: model.packed_bytes(),
            file_bytes,
        }
    }

    /// FP32 size over the true file size.
    pub fn ratio(&self) -> f64 {
        self.fp32_bytes as f64 / self.file_bytes.max(1) as f64
    }
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} quantized layers, {} full-precision tensors",
            self.arch, self.quantized_layers, self.fp_tensors
        )?;
        writeln!(f, "FP32 size:   {} bytes", self.fp32_bytes)?;
        writeln!(
            f,
            "packed size: {} bytes of tensors, {} bytes on disk",
            self.packed_bytes, self.file_bytes
        )?;
        writeln!(f, "ratio:       {:.2}x (FP32 / file on disk)", self.ratio())
    }
}

/// Writes `model` atomically to `out` and measures the file.
fn write(model: &PackedModel, out: &Path) -> Result<ExportSummary> {
    model.write(out).map_err(|source| TrainError::WritePacked {
        path: out.to_path_buf(),
        source,
    })?;
    let file_bytes = std::fs::metadata(out)
        .map_err(TrainError::io("reading the size of", out))?
        .len();
    Ok(ExportSummary::new(model, file_bytes))
}

/// Input shape [C, H, W] and classes of the data set named by `source`:
/// parsed only for in-memory sets; for folder sources the shape is
/// (3, crop, crop) and the classes are the training split's class folders
/// (listed, no image read).
pub fn data_shape(source: &str, images: &ImageSettings) -> Result<([usize; 3], usize)> {
    let parsed = DataSource::from_str(source).map_err(|e| TrainError::Data {
        what: "data source",
        source_name: format!("{source:?}"),
        source: e,
    })?;
    if let Some(kind) = parsed.kind() {
        let (c, h, w) = kind.shape();
        return Ok(([c, h, w], kind.classes()));
    }
    let classes = parsed.class_names().map_err(|e| TrainError::Data {
        what: "listing the classes of",
        source_name: parsed.to_string(),
        source: e,
    })?;
    let crop = images.crop as usize;
    Ok(([3, crop, crop], classes.len()))
}

/// The rows of `model`'s classifier weight in `tensors` (read from `path`).
fn classifier_rows(model: &str, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<usize> {
    let name = classifier_weight(model).ok_or_else(|| TrainError::UnknownModel {
        model: model.to_string(),
    })?;
    let w = tensors.get(&name).ok_or_else(|| TrainError::NoClassifier {
        path: path.to_path_buf(),
        name: name.clone(),
    })?;
    w.dims()
        .first()
        .copied()
        .ok_or_else(|| TrainError::ScalarClassifier {
            path: path.to_path_buf(),
            name,
        })
}

/// `dgms export`: a hardened checkpoint to a packed file.
pub fn export_packed(hardened_checkpoint: &Path, out: &Path) -> Result<ExportSummary> {
    export_packed_with(hardened_checkpoint, out, &ExportOptions::default())
}

/// Options of `dgms export`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExportOptions<'a> {
    /// The network of a DGMS authors' checkpoint (`--model`).
    pub model: Option<&'a str>,
    /// The input [C, H, W] recorded in the file (`--input-shape`); by
    /// default the run's data shape, or for an authors' checkpoint its
    /// input channels at the network's designed size.
    pub input_shape: Option<[usize; 3]>,
    /// How a checkpoint that still has mixtures is hardened.
    pub hardening: HardeningRule,
}

/// `dgms export`: a checkpoint to a packed file. A hardened checkpoint is
/// packed as it is; one that still has mixtures (a dgms DGMS checkpoint,
/// or a DGMS authors' one) is hardened with `opts.hardening` and packed in
/// one step, its batch-norm statistics as stored.
pub fn export_packed_with(
    path: &Path,
    out: &Path,
    opts: &ExportOptions<'_>,
) -> Result<ExportSummary> {
    dgms_io::ensure_not_input("--out", out, &[("--checkpoint", path)])?;
    if let Some([c, h, w]) = opts.input_shape.filter(|[_, h, w]| h != w) {
        return Err(TrainError::NotSquare {
            c,
            h,
            w,
            who: "models",
        });
    }
    let image_size = opts.input_shape.map(|s| s[1]);
    let (ckpt, origin) = open_checkpoint(path, opts.model, image_size)?;
    let cfg = &ckpt.meta.config;
    let classes = || classifier_rows(&ckpt.meta.model, &ckpt.tensors, path);
    let (input_shape, classes) = match (&origin, opts.input_shape) {
        (_, Some(shape)) => (shape, classes()?),
        (Origin::Reference { model_config }, None) => {
            let s = model_config.image_size;
            ([model_config.in_channels, s, s], model_config.num_classes)
        }
        // A folder run: the shape from its crop, the classes from its own
        // classifier (the data folder need not exist where it is exported).
        (Origin::Dgms, None) => match DataSource::from_str(&cfg.data) {
            Ok(source) if source.is_image_folder() => {
                let crop = cfg.images.crop as usize;
                ([3, crop, crop], classes()?)
            }
            _ => data_shape(&cfg.data, &cfg.images)?,
        },
    };
    let meta = ModelMeta::new(&ckpt.meta.model, input_shape.to_vec(), classes);
    let packed = if ckpt.meta.hardened {
        packed_from_tensors(meta, &ckpt.tensors, &ckpt.meta.mixture_k)
    } else {
        let [c, h, _] = input_shape;
        let model_config = ModelConfig {
            in_channels: c,
            num_classes: classes,
            image_size: h,
        };
        let model = Model::with_config(&ckpt.meta.model, &model_config, 0)?;
        model.restore(path, &ckpt, None)?;
        let hardened = harden_model_with(&model, opts.hardening)?;
        packed_from_model(meta, &model, &hardened)
    }
    .map_err(|e| TrainError::Export {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    write(&packed, out)
}

/// The packed model of a hardened candle model: its tensors with each
/// hardened layer's indices and codebook.
fn packed_from_model(
    meta: ModelMeta,
    model: &Model,
    hardened: &[HardenedLayer],
) -> Result<PackedModel> {
    let mut all: HashMap<String, Tensor> = model.checkpoint_tensors().into_iter().collect();
    let mut quantized = BTreeMap::new();
    for l in hardened {
        let n = l.indices.len();
        all.insert(
            format!("{}.indices", l.name),
            Tensor::from_vec(l.indices.clone(), n, &Device::Cpu)?,
        );
        all.insert(
            format!("{}.codebook", l.name),
            Tensor::from_vec(l.table.clone(), l.k(), &Device::Cpu)?,
        );
        quantized.insert(l.name.clone(), l.k());
    }
    packed_from_tensors(meta, &all, &quantized)
}

/// Builds the packed model from a hardened model's tensors: `quantized`
/// maps each hardened layer to its K (its `NAME.indices`, `NAME.codebook`
/// and hard `NAME.weight` must be present and agree).
pub fn packed_from_tensors(
    meta: ModelMeta,
    tensors: &HashMap<String, Tensor>,
    quantized: &BTreeMap<String, usize>,
) -> Result<PackedModel> {
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| TrainError::MissingTensor {
            file: String::new(),
            name: name.to_string(),
            hint: "",
        })
    };
    let mut layers = Vec::with_capacity(quantized.len());
    for (name, &k) in quantized {
        let weight = get(&format!("{name}.weight"))?;
        let indices: Vec<u8> = get(&format!("{name}.indices"))?
            .flatten_all()?
            .to_dtype(DType::U8)?
            .to_vec1()?;
        let codebook: Vec<f32> = f32_values(get(&format!("{name}.codebook"))?)?;
        if codebook.len() != k {
            return Err(TrainError::CodebookLength {
                file: String::new(),
                name: name.clone(),
                found: codebook.len(),
                k,
            });
        }
        let layer = PackedLayer::from_indices(name, weight.dims().to_vec(), &indices, codebook)
            .map_err(|source| TrainError::Pack {
                what: format!("layer {name}"),
                source,
            })?;
        // The stored weights must be the hard weights the indices give.
        let hard = f32_values(weight)?;
        if let Some(i) = layer.decode().iter().zip(&hard).position(|(a, b)| a != b) {
            return Err(TrainError::NotHardWeights {
                layer: name.clone(),
                index: i,
                stored: hard[i],
                decoded: layer.codebook[usize::from(indices[i])],
            });
        }
        layers.push(layer);
    }
    let mut fp = BTreeMap::new();
    let mut bns: Vec<&str> = tensors
        .keys()
        .filter_map(|n| n.strip_suffix(".running_var"))
        .collect();
    bns.sort();
    for bn in &bns {
        let v = |p: &str| -> Result<Vec<f32>> { f32_values(get(&format!("{bn}.{p}"))?) };
        let (scale, shift) = fold_batch_norm(
            &v("weight")?,
            &v("bias")?,
            &v("running_mean")?,
            &v("running_var")?,
            BN_EPS,
        )
        .map_err(|source| TrainError::Pack {
            what: format!("batch norm {bn}"),
            source,
        })?;
        let c = scale.len();
        fp.insert(format!("{bn}.scale"), FpTensor::new(vec![c], scale)?);
        fp.insert(format!("{bn}.shift"), FpTensor::new(vec![c], shift)?);
    }
    for (name, t) in tensors {
        if is_left_out(name, quantized, &bns) {
            continue;
        }
        let data = f32_values(t)?;
        let tensor = FpTensor::new(t.dims().to_vec(), data).map_err(|source| TrainError::Pack {
            what: format!("tensor {name}"),
            source,
        })?;
        fp.insert(name.clone(), tensor);
    }
    Ok(PackedModel::new(meta, layers, fp)?)
}

/// Tensors that do not go into the packed file as they are.
fn is_left_out(name: &str, quantized: &BTreeMap<String, usize>, bns: &[&str]) -> bool {
    let owner = |suffix: &str| name.strip_suffix(suffix);
    name.starts_with("optim.")
        || name.contains(".mixture.")
        || name.ends_with(".num_batches_tracked")
        || owner(".indices").is_some_and(|l| quantized.contains_key(l))
        || owner(".codebook").is_some_and(|l| quantized.contains_key(l))
        || owner(".weight").is_some_and(|l| quantized.contains_key(l))
        || ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .any(|p| owner(&format!(".{p}")).is_some_and(|b| bns.contains(&b)))
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// Where `dgms quantize` takes the model's input shape and classes from.
#[derive(Clone, Debug)]
pub enum ShapeSource {
    /// A data source (`embedded`, `cifar10:DIR`, ...): its image shape and
    /// classes.
    Data(String),
    /// An explicit [C, H, W]; the classes are read from the classifier's
    /// weight.
    Input([usize; 3]),
}

/// Largest accepted side of an input (`--input-shape`), and largest
/// accepted number of values of one image: far beyond any classifier's
/// input (ImageNet is 3 x 224 x 224 = 150,528), and small enough that the
/// engine's buffers for it cannot overflow or exhaust memory.
pub const MAX_INPUT_SIDE: usize = 16_384;
pub const MAX_INPUT_VALUES: usize = 1 << 26;

/// Checks a `--input-shape` (C,H,W): three dimensions, each at least 1
/// and at most [`MAX_INPUT_SIDE`], at most [`MAX_INPUT_VALUES`] values in
/// all (overflow-safe).
pub fn input_shape(dims: &[usize]) -> Result<[usize; 3]> {
    let bad = |expected: String| {
        TrainError::from(InvalidSetting {
            flag: "--input-shape",
            value: dims
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
            expected,
        })
    };
    let shape: [usize; 3] = dims
        .try_into()
        .map_err(|_| bad(format!("expected C,H,W (3 numbers), got {}", dims.len())))?;
    if let Some(d) = shape.iter().find(|&&d| d == 0 || d > MAX_INPUT_SIDE) {
        return Err(bad(format!(
            "every dimension must be in 1..={MAX_INPUT_SIDE}, got {d}"
        )));
    }
    let values = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&v| v <= MAX_INPUT_VALUES);
    if values.is_none() {
        return Err(bad(format!(
            "more than {MAX_INPUT_VALUES} values per image"
        )));
    }
    Ok(shape)
}

/// The classifier weight of `model` (rows = classes), from its description.
fn classifier_weight(model: &str) -> Option<String> {
    dgms_arch::architecture(model, &dgms_arch::ArchConfig::default())
        .ok()
        .map(|arch| arch.classifier_weight())
}

/// The networks designed for ImageNet, which default to 3 x 224 x 224
/// without data.
pub fn is_imagenet_model(model: &str) -> bool {
    dgms_arch::designed_for(model) == Ok(dgms_arch::Dataset::ImageNet)
}

/// `dgms quantize --out X.dgms.safetensors`: post-training quantization
/// (k-means init + harden, no training) of the weights in `weights`
/// (safetensors, a dgms checkpoint or a PyTorch `.pth`) written as a packed
/// file. Returns the report (docs/METHOD.md#report), the sizes and the hardened candle model.
pub fn quantize_packed(
    model_name: &str,
    weights: &Path,
    shape: &ShapeSource,
    mixture: &MixtureSettings,
    out: &Path,
) -> Result<(ModelReport, ExportSummary, Model)> {
    dgms_io::ensure_not_input("--out", out, &[("--weights", weights)])?;
    // The DGMS authors' format: its trained mixtures are used as they are,
    // not re-initialised.
    let (imported, tensors) = match read_weights_file(weights)? {
        WeightsFile::Reference(t) => {
            let size = match shape {
                ShapeSource::Input(s) => Some(s[1]),
                ShapeSource::Data(_) => None,
            };
            let ckpt = import_reference(weights, t, model_name, size)?.0;
            let tensors = ckpt.tensors.clone();
            (Some(ckpt), tensors)
        }
        WeightsFile::Plain(t) => (None, t),
    };
    let (input_shape, classes) = match shape {
        ShapeSource::Data(source) => data_shape(source, &ImageSettings::default())?,
        ShapeSource::Input(s) => (*s, classifier_rows(model_name, &tensors, weights)?),
    };
    let [c, h, w] = input_shape;
    if h != w {
        return Err(TrainError::NotSquare {
            c,
            h,
            w,
            who: "models",
        });
    }
    let cfg = ModelConfig {
        in_channels: c,
        num_classes: classes,
        image_size: h,
    };
    let model = Model::with_config(model_name, &cfg, 0)?;
    if let Some(ckpt) = &imported {
        model.restore(weights, ckpt, None)?;
        tracing::info!(
            "{}: hardening its own mixtures (no k-means)",
            weights.display()
        );
    } else {
        set_varmap(&model.varmap, &tensors, &weights.display().to_string())?;
        model.enable_mixtures(mixture)?;
    }
    let hardened = harden_model(&model)?;
    let meta = ModelMeta::new(model_name, input_shape.to_vec(), classes);
    let packed = packed_from_model(meta, &model, &hardened)?;
    let summary = write(&packed, out)?;
    Ok((report_of(&hardened), summary, model))
}
