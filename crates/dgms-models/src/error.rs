//! Typed errors of the model crate.
//!
//! Every variant that concerns one layer names it by its parameter-name
//! prefix (e.g. `layer1.0.conv1`), so a message in the log of a whole-model
//! run says where the problem is. Mixture errors from `dgms-core` already
//! name their layer and are passed through unchanged.

use dgms_core::CoreError;

/// Errors returned by `dgms-models`.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// [`crate::build_model`] was asked for a model it does not know.
    #[error("unknown model `{name}`; known models: {}", known.join(", "))]
    UnknownModel {
        name: String,
        known: Vec<&'static str>,
    },

    /// A model's settings are unusable (depth, channels, classes, image size).
    #[error("model `{model}`: {what}")]
    Config { model: String, what: String },

    /// A layer's parameters could not be created or loaded (missing tensor,
    /// wrong shape, ...).
    #[error("layer `{layer}`: cannot load its parameters: {source}")]
    Load {
        layer: String,
        #[source]
        source: candle_core::Error,
    },

    /// A layer failed in a forward pass.
    #[error("layer `{layer}`: forward pass failed: {source}")]
    Forward {
        layer: String,
        #[source]
        source: candle_core::Error,
    },

    /// A layer selection names a convolution the model does not have.
    #[error("layer selection names `{layer}`, which is not a convolution of `{model}`; its convolutions are: {}", known.join(", "))]
    UnknownLayer {
        model: String,
        layer: String,
        known: Vec<String>,
    },

    /// A per-layer K was given for a convolution that is not selected.
    #[error("layer `{layer}`: K = {k} given, but the layer is not selected for a mixture")]
    KForUnselectedLayer { layer: String, k: usize },

    /// The mixture's dtype differs from the weights' dtype.
    #[error("layer `{layer}`: weights are {weights:?} but the mixture options ask for {mixture:?}; they must match")]
    DTypeMismatch {
        layer: String,
        weights: candle_core::DType,
        mixture: candle_core::DType,
    },

    /// A checkpoint lacks a tensor the model needs.
    #[error("checkpoint {path}: missing tensor `{name}`")]
    MissingTensor { path: String, name: String },

    /// A checkpoint tensor has a shape other than the model's.
    #[error(
        "checkpoint {path}: tensor `{name}` has shape {got:?}, the model expects {expected:?}"
    )]
    TensorShape {
        path: String,
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A checkpoint file could not be read: missing, truncated, corrupt or
    /// not in the expected format.
    #[error("checkpoint {path}: cannot read it: {source}")]
    Checkpoint {
        path: String,
        #[source]
        source: candle_core::Error,
    },

    /// A `.pth` file refused by the bounded pre-scan ([`crate::pth_scan`]):
    /// it exceeds a limit or is malformed; the source says which, where.
    #[error("checkpoint {path}: cannot read it: {source}")]
    PthRefused {
        path: String,
        #[source]
        source: crate::pth_scan::PthScanError,
    },

    /// A safetensors checkpoint fails the shared structural check
    /// (`dgms_io::check_safetensors`).
    #[error("checkpoint {path}: not a valid safetensors file: {source}")]
    Safetensors {
        path: String,
        #[source]
        source: dgms_io::SafetensorsCheckError,
    },

    /// A file in the DGMS authors' format that does not fit: every missing,
    /// unexpected or mis-shaped key and every unusable mixture parameter,
    /// each named as the file has it.
    #[error("checkpoint {path}: not usable as a DGMS authors' checkpoint of this network:\n  - {}", problems.join("\n  - "))]
    ReferenceCheckpoint { path: String, problems: Vec<String> },

    /// A mixture error from `dgms-core` (its message names the layer).
    #[error(transparent)]
    Core(#[from] CoreError),

    /// Any other candle error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// A [`ModelError::Load`] for the layer at `layer`.
    pub(crate) fn load(layer: impl Into<String>, source: candle_core::Error) -> Self {
        Self::Load {
            layer: layer.into(),
            source,
        }
    }

    /// Turns the error into a candle error, for `ModuleT::forward_t`, which
    /// must return candle's error type; the message is kept.
    pub(crate) fn into_candle(self) -> candle_core::Error {
        candle_core::Error::Wrapped(Box::new(self))
    }
}

impl From<dgms_arch::ArchError> for ModelError {
    /// The same messages: an unknown name lists the known ones; a shape
    /// error names the image size and the layer.
    fn from(e: dgms_arch::ArchError) -> Self {
        use dgms_arch::ArchError;
        match e {
            ArchError::UnknownModel { name, known } => Self::UnknownModel { name, known },
            ArchError::Config { model, what } => Self::Config { model, what },
            ArchError::Shape {
                model,
                image_size,
                layer,
                what,
            } => Self::Config {
                model,
                what: format!("image_size {image_size}: layer `{layer}`: {what}"),
            },
        }
    }
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, ModelError>;
