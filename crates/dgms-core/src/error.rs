//! Typed errors of the mixture core.
//!
//! Every variant names the layer it concerns (the mixture's `name`, or the
//! name given to an initialisation call) so that a message read in a log of a
//! whole-model run says where the problem is.

/// Errors returned by `dgms-core`.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A mixture needs the zero component plus at least one trained component.
    #[error("layer `{layer}`: K = {k} components requested, but a mixture needs K >= 2 (the zero component and at least one mean)")]
    TooFewComponents { layer: String, k: usize },

    /// Indices are stored as `u8`, so K is bounded.
    #[error("layer `{layer}`: K = {k} components requested, but at most {max} are supported (indices are stored as u8)")]
    TooManyComponents { layer: String, k: usize, max: usize },

    /// A weight was NaN or infinite.
    #[error("layer `{layer}`: weight at flat index {index} is {value}, expected a finite number")]
    NonFiniteWeight {
        layer: String,
        index: usize,
        value: f64,
    },

    /// A mixture parameter was NaN or infinite.
    #[error(
        "layer `{layer}`: mixture parameter {param}[{index}] is {value}, expected a finite number"
    )]
    NonFiniteParameter {
        layer: String,
        param: &'static str,
        index: usize,
        value: f64,
    },

    /// A width was zero (its sign is free: only sigma^2 enters the density).
    #[error("layer `{layer}`: {param}[{index}] = {value}, expected a non-zero standard deviation")]
    ZeroSigma {
        layer: String,
        param: &'static str,
        index: usize,
        value: f64,
    },

    /// The mixing weights are all zero, so no component has any probability.
    #[error("layer `{layer}`: all mixing weights (pi_zero and pi) are 0, expected at least one non-zero")]
    ZeroMixingWeights { layer: String },

    /// The temperature must be positive.
    #[error("layer `{layer}`: temperature tau = {value}, expected a finite number > 0")]
    BadTemperature { layer: String, value: f64 },

    /// A parameter vector or tensor had the wrong length or shape.
    #[error("layer `{layer}`: {what} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        layer: String,
        what: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    /// A uniform grid's step (see `uniform`) must be positive and finite.
    #[error("layer `{layer}`: uniform-grid step = {value}, expected a finite number > 0")]
    BadStep { layer: String, value: f64 },

    /// A layer has fewer weights than components, so k-means cannot place K centres.
    #[error("layer `{layer}`: {n} weights cannot be clustered into K = {k} components, expected at least K weights")]
    TooFewWeights { layer: String, n: usize, k: usize },

    /// The mixture op runs on the CPU and in f32 or f64.
    #[error("layer `{layer}`: {what}")]
    Unsupported { layer: String, what: String },

    /// An error from candle while building or running tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, CoreError>;
