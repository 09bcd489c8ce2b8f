//! The errors of dgms-train: each names the file, layer or tensor at fault
//! and what was expected, and keeps the underlying error as its source, so
//! that `{:#}` (anyhow in the binaries) prints the whole chain.

use std::path::PathBuf;

use dgms_core::CoreError;
use dgms_data::DataError;
use dgms_models::ModelError;
use dgms_qsimd::QsimdError;

/// Result of dgms-train.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything that can go wrong in training, the phases, export and
/// inference.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file operation failed; `action` says which, e.g. "reading checkpoint".
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file (atomically, through dgms-io) failed, or an output
    /// would replace an input.
    #[error(transparent)]
    File(#[from] dgms_io::IoError),
    /// A file is not a readable safetensors file.
    #[error("{} is not a safetensors file (truncated or corrupt header)", path.display())]
    NotSafetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A safetensors file (checkpoint, `--init` weights, `infer --input`)
    /// fails the shared structural check (`dgms_io::check_safetensors`).
    #[error("{} is not a valid safetensors file", path.display())]
    BadSafetensors {
        path: PathBuf,
        #[source]
        source: dgms_io::SafetensorsCheckError,
    },
    /// Tensor data of a file could not be read.
    #[error("{}: corrupt tensor data", path.display())]
    CorruptTensors {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// A weights file (`--init`) could not be read.
    #[error("{} is not a readable safetensors file (truncated or corrupt)", path.display())]
    UnreadableWeights {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    /// Serialising tensors (a checkpoint, logits) failed.
    #[error("serialising {what}")]
    Serialise {
        what: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Serialising a checkpoint with candle's tensors failed.
    #[error("serialising checkpoint {}", path.display())]
    SerialiseCheckpoint {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// JSON encoding or decoding failed.
    #[error("{what}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file without dgms metadata.
    #[error(
        "{} has no `dgms` metadata: not a dgms checkpoint (a plain weights file? use --init for those)",
        path.display()
    )]
    NotACheckpoint { path: PathBuf },
    /// A file in the DGMS authors' format, which does not name its network,
    /// given without `--model`.
    #[error(
        "{} is a checkpoint in the DGMS authors' format, which does not record its network: pass --model NAME (one of {})",
        path.display(),
        dgms_models::MODEL_NAMES.join(", ")
    )]
    ReferenceNeedsModel { path: PathBuf },
    /// A PyTorch file without mixtures where a checkpoint is expected.
    #[error(
        "{} is a PyTorch state dict without mixtures (no `sub_distribution` keys): not a DGMS checkpoint; full-precision weights go to --weights or --init",
        path.display()
    )]
    PlainPyTorch { path: PathBuf },
    /// A checkpoint of another format version.
    #[error("{}: checkpoint format version {found}, expected {expected}", path.display())]
    FormatVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// Weights whose classifier has another number of classes than the data.
    #[error(
        "{}: the classifier `{classifier}` has {weights} classes, but the data has {data} \
         (class folders or the data set's labels)",
        path.display()
    )]
    ClassCount {
        path: PathBuf,
        classifier: String,
        weights: usize,
        data: usize,
    },
    /// A checkpoint of another model than the one asked for.
    #[error("{} is a checkpoint of model {found}, not {expected}", path.display())]
    WrongModel {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// A DGMS checkpoint trained with another K than the one requested.
    #[error(
        "{}: layer {layer} was trained with K = {saved}, but K = {requested} was requested",
        path.display()
    )]
    TrainedWithOtherK {
        path: PathBuf,
        layer: String,
        saved: usize,
        requested: usize,
    },
    /// A stored mixture with another number of components than expected.
    #[error(
        "{}: layer {layer} has a mixture with K = {found}, but K = {expected} was requested",
        path.display()
    )]
    MixtureK {
        path: PathBuf,
        layer: String,
        found: usize,
        expected: usize,
    },
    /// A stored codebook whose length is not the layer's K.
    #[error("{file}{name}.codebook has {found} values, expected K = {k}")]
    CodebookLength {
        /// `"<path>: "` or empty.
        file: String,
        name: String,
        found: usize,
        k: usize,
    },
    /// A scalar mixture parameter stored with other than one value.
    #[error(
        "{}: layer {layer}: a scalar mixture parameter has {found} values, expected 1",
        path.display()
    )]
    NotAScalar {
        path: PathBuf,
        layer: String,
        found: usize,
    },
    /// A mixture read from a checkpoint is not a valid mixture.
    #[error("{}: invalid mixture for layer {layer}", path.display())]
    InvalidMixture {
        path: PathBuf,
        layer: String,
        #[source]
        source: Box<CoreError>,
    },
    /// A tensor that must be present is missing; `file` is `"<path>: "` or
    /// empty, `hint` says what the absence suggests.
    #[error("{file}no tensor {name}{hint}")]
    MissingTensor {
        file: String,
        name: String,
        hint: &'static str,
    },
    /// A checkpoint names a mixture for a layer the model does not have.
    #[error("{}: mixture for unknown layer {layer}", path.display())]
    UnknownMixtureLayer { path: PathBuf, layer: String },
    /// The model has no conv of this name.
    #[error("no conv {layer}")]
    UnknownConv { layer: String },
    /// A conv weight that is not a trainable variable.
    #[error("layer {layer}: weight is not a variable")]
    NotAVariable { layer: String },
    /// Hardening a model without mixtures.
    #[error("the model has no mixture layer to harden (a full-precision checkpoint? use `dgms quantize`)")]
    NoMixtureLayer,
    /// Hardening a checkpoint that is hardened already.
    #[error("{} is already hardened", path.display())]
    AlreadyHardened { path: PathBuf },
    /// A hardened layer whose stored weight disagrees with its index and codebook.
    #[error("layer {layer}: weight {index} is {stored}, but its index and codebook give {decoded} (not a hardened layer?)")]
    NotHardWeights {
        layer: String,
        index: usize,
        stored: f32,
        decoded: f32,
    },
    /// An optimizer momentum buffer of the wrong shape.
    #[error("optimizer state {key} has shape {found:?}, expected {expected:?}")]
    OptimizerState {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// Updating one parameter failed.
    #[error("updating {param}")]
    Update {
        param: String,
        #[source]
        source: candle_core::Error,
    },
    /// The loss stopped being finite.
    #[error(
        "loss is {loss} at step {step} (epoch {epoch}, batch {batch}); training stopped, {kept}"
    )]
    NonFiniteLoss {
        loss: f64,
        step: usize,
        /// 1-based.
        epoch: usize,
        batch: usize,
        /// Which checkpoint survives.
        kept: String,
    },
    /// A hyper-parameter out of range (names the flag).
    #[error(transparent)]
    InvalidSetting(#[from] crate::config::InvalidSetting),
    /// A resumed run asked for a setting other than its checkpoint's.
    #[error(
        "{flag} {requested} differs from the checkpoint's {saved} ({}): a resumed run keeps its configuration; drop {flag}, or start a new run in another directory",
        path.display()
    )]
    ResumeMismatch {
        path: PathBuf,
        flag: &'static str,
        requested: String,
        saved: String,
    },
    /// A checkpoint resumed into a directory other than its own.
    #[error(
        "the checkpoint {} is not in the run directory {}: a run resumes in its own directory",
        checkpoint.display(),
        out_dir.display()
    )]
    ResumeElsewhere {
        checkpoint: PathBuf,
        out_dir: PathBuf,
    },
    /// A fresh run into a directory that holds a run already.
    #[error(
        "{} already holds a run ({found}); continue it with --resume {}, or start over with --force (replaces it)",
        dir.display(),
        dir.join("last.safetensors").display()
    )]
    RunExists { dir: PathBuf, found: String },
    /// Evaluation after an epoch gave a non-finite loss or logits.
    #[error(
        "training diverged: evaluation after epoch {epoch} (step {step}) gave {what}; training stopped, {kept}"
    )]
    Diverged {
        /// 1-based.
        epoch: usize,
        step: usize,
        /// E.g. "test loss NaN" or "3 rows with non-finite logits".
        what: String,
        kept: String,
    },
    /// An update left a parameter (or optimizer or batch-norm state) NaN
    /// or infinite.
    #[error(
        "{name} is not finite after optimizer step {step} (epoch {epoch}, batch {batch}); training stopped, {kept}"
    )]
    NonFiniteParameter {
        name: String,
        /// 1-based: the step whose update made it so.
        step: usize,
        /// 1-based.
        epoch: usize,
        batch: usize,
        kept: String,
    },
    /// The caller's stop flag was raised (Ctrl-C); the run stopped at a
    /// step boundary. `last` is the last checkpoint written, if any.
    #[error("interrupted at step {step} (epoch {epoch})")]
    Interrupted {
        step: usize,
        /// 1-based: the epoch in progress.
        epoch: usize,
        last: Option<PathBuf>,
    },
    /// A data source that does not parse or load.
    #[error("{what} {source_name}")]
    Data {
        /// "loading data set" or "data source".
        what: &'static str,
        source_name: String,
        #[source]
        source: DataError,
    },
    /// A model name no dgms-models architecture answers to.
    #[error("unknown model {model}")]
    UnknownModel { model: String },
    /// The models take square images only.
    #[error("input {c}x{h}x{w}: the {who} take square images")]
    NotSquare {
        c: usize,
        h: usize,
        w: usize,
        /// "models" or "candle models".
        who: &'static str,
    },
    /// A packed model's input shape is not [C, H, W].
    #[error("input_shape {found:?}, expected [C, H, W]")]
    InputShapeRank { found: Vec<usize> },
    /// The weights lack the classifier weight the class count is read from.
    #[error("{}: no {name} to read the classes from", path.display())]
    NoClassifier { path: PathBuf, name: String },
    /// The classifier weight is a scalar, so it gives no class count.
    #[error("{}: {name} is a scalar", path.display())]
    ScalarClassifier { path: PathBuf, name: String },
    /// An `infer` input file whose `input` tensor is missing or malformed.
    #[error("{}: {problem}", path.display())]
    BadInput { path: PathBuf, problem: String },
    /// A non-finite value in an `infer` input (refused unless allowed).
    #[error(
        "{}: `input` holds {value} at index [{}] (flat index {flat}); \
         logits of such an input mean nothing (pass --allow-nonfinite to run anyway)",
        path.display(),
        index.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    )]
    NonFiniteInput {
        path: PathBuf,
        value: f32,
        index: [usize; 4],
        flat: usize,
    },
    /// The candle engine asked for a quantized-activation path.
    #[error("the {precision} path is the qsimd engine's (--engine qsimd); candle runs the hard weights in f32")]
    CandleIsExact { precision: String },
    /// A batch-norm recalibration forward pass failed.
    #[error("batch-norm recalibration forward pass")]
    Recalibration(#[source] candle_core::Error),
    /// Building the candle model of a packed file failed.
    #[error("building the candle {arch} from the packed file")]
    CandleFromPacked {
        arch: String,
        #[source]
        source: Box<ModelError>,
    },
    /// A packed file that does not read or validate.
    #[error("{}", path.display())]
    PackedFile {
        path: PathBuf,
        #[source]
        source: QsimdError,
    },
    /// Writing a packed file failed.
    #[error("writing {}", path.display())]
    WritePacked {
        path: PathBuf,
        #[source]
        source: QsimdError,
    },
    /// Packing one layer, batch norm or tensor failed; `what` names it,
    /// e.g. "layer layer1.0.conv1".
    #[error("{what}")]
    Pack {
        what: String,
        #[source]
        source: QsimdError,
    },
    /// Exporting a checkpoint failed.
    #[error("exporting {}", path.display())]
    Export {
        path: PathBuf,
        #[source]
        source: Box<TrainError>,
    },
    /// The progress bar's template does not parse (a bug).
    #[error("progress bar template")]
    ProgressTemplate(#[source] indicatif::style::TemplateError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// A dgms-core operation (mixtures, hardening) failed (boxed: the
    /// error is large).
    #[error(transparent)]
    Core(Box<CoreError>),
    /// A dgms-data operation (the loader, subsets) failed.
    #[error(transparent)]
    DataOp(#[from] DataError),
    /// A dgms-models operation (building, loading weights) failed (boxed:
    /// the error is large).
    #[error(transparent)]
    Model(Box<ModelError>),
    /// A dgms-qsimd operation (packing, the engine) failed.
    #[error(transparent)]
    Qsimd(#[from] QsimdError),
    /// A data-parallel group or one of its collectives failed (boxed:
    /// the error is large).
    #[error(transparent)]
    Parallel(Box<crate::parallel::ParallelError>),
    /// Drawing or writing a layer's picture failed (the error names the
    /// layer or the file).
    #[error(transparent)]
    Plot(#[from] dgms_plot::PlotError),
    /// The requested device cannot be named or opened.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
}

impl TrainError {
    /// An [`TrainError::Io`] error for `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }

    /// A [`TrainError::Json`] error saying what was being encoded or decoded.
    pub fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let what = what.into();
        move |source| Self::Json { what, source }
    }
}

impl From<CoreError> for TrainError {
    fn from(e: CoreError) -> Self {
        Self::Core(Box::new(e))
    }
}

impl From<crate::parallel::ParallelError> for TrainError {
    fn from(e: crate::parallel::ParallelError) -> Self {
        Self::Parallel(Box::new(e))
    }
}

impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}
