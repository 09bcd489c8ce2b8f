//! Typed errors of dgms-qsimd. Every message names the file, layer or
//! tensor at fault and what was expected.

use std::path::PathBuf;

/// Result with [`QsimdError`].
pub type Result<T, E = QsimdError> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or running a packed model.
#[derive(Debug, thiserror::Error)]
pub enum QsimdError {
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file atomically failed (the error names the file).
    #[error(transparent)]
    Write(#[from] dgms_io::IoError),
    // --- packed model format (`format`) ---
    /// An error while reading `path`; wraps the format error so that every
    /// message about a file names it.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<QsimdError>,
    },
    /// The bytes are not a well-formed safetensors file.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(#[source] safetensors::SafeTensorError),
    /// The file fails the shared structural check of safetensors files
    /// (`dgms_io::check_safetensors`): header length, header JSON, dtypes,
    /// shapes against offsets, offsets tiling the data section.
    #[error("not a valid safetensors file: {0}")]
    Structure(#[source] dgms_io::SafetensorsCheckError),
    /// The safetensors header is malformed in a way caught before handing it
    /// to the `safetensors` crate (e.g. data offsets beyond the end).
    #[error("not a valid safetensors file: {reason}")]
    Header { reason: String },
    /// A `__metadata__` entry is missing, unknown or malformed.
    #[error("metadata `{key}`: {reason}")]
    Metadata { key: String, reason: String },
    /// A `__metadata__` entry that is not the JSON it should be (or a
    /// value that cannot be encoded as JSON); `source` says where.
    #[error("metadata `{key}`: {reason}: {source}")]
    MetadataJson {
        key: String,
        reason: String,
        #[source]
        source: serde_json::Error,
    },
    /// The file declares a `format_version` this reader does not know.
    #[error("unsupported format_version {found} (this reader supports {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// A quantized layer is inconsistent (shape, K, bits, codebook, indices).
    #[error("layer {layer}: {reason}")]
    Layer { layer: String, reason: String },
    /// A quantized layer is inconsistent because of `source` (e.g. a K no
    /// index width holds, or a codebook tensor that is not F32).
    #[error("layer {layer}: {source}")]
    InLayer {
        layer: String,
        #[source]
        source: Box<QsimdError>,
    },
    /// A codebook size outside `2..=256`.
    #[error("K = {k} is outside the supported range 2..=256")]
    InvalidK { k: usize },
    /// A packed index is not a valid codebook entry.
    #[error("layer {layer}: index {index} at weight {weight} is >= K = {k}")]
    IndexOutOfRange {
        layer: String,
        index: u8,
        weight: usize,
        k: usize,
    },
    /// A stored tensor is inconsistent (dtype, shape, values, name).
    #[error("tensor {tensor}: {reason}")]
    Tensor { tensor: String, reason: String },
    /// Lookup of a quantized layer that the model does not have.
    #[error("no quantized layer named `{name}`")]
    MissingLayer { name: String },
    /// Lookup of a full-precision tensor that the model does not have.
    #[error("no full-precision tensor named `{name}`")]
    MissingTensor { name: String },
    /// Batch-norm folding inputs are inconsistent or give non-finite values.
    #[error("batch norm fold: {reason}")]
    BatchNorm { reason: String },
    /// `DGMS_QSIMD` (or an ISA name) is not one of scalar|avx2|avx512|neon|auto.
    #[error("unknown kernel ISA `{value}` (expected scalar, avx2, avx512, neon or auto)")]
    UnknownIsa { value: String },
    /// A kernel ISA was asked for that this CPU (or build target) lacks.
    #[error("kernel ISA {isa} is not available on this CPU")]
    IsaUnavailable { isa: String },
    /// A kernel argument has the wrong length.
    #[error("{op}: {what} has length {got}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A kernel weight matrix with no rows or no columns (or too large).
    #[error("weight matrix of {rows} x {cols}: both dimensions must be positive")]
    EmptyMatrix { rows: usize, cols: usize },
    /// A kernel codebook with the wrong size or a non-finite value.
    #[error("kernel codebook: {reason}")]
    InvalidCodebook { reason: String },
    /// A kernel index that is not a valid codebook entry.
    #[error("weight ({row}, {col}): index {index} is >= K = {k}")]
    InvalidIndex {
        row: usize,
        col: usize,
        index: u8,
        k: usize,
    },
    /// Convolution geometry that cannot be computed.
    #[error("{op}: invalid geometry: {reason}")]
    InvalidGeometry { op: &'static str, reason: String },
    // --- inference engine (`engine`) ---
    /// The model's `arch` is not one the engine can run.
    #[error("unknown architecture `{arch}` (the engine runs {supported})")]
    UnknownArch { arch: String, supported: String },
    /// A layer of the architecture is missing from the model, has the wrong
    /// shape, or the model holds a tensor the architecture does not use.
    #[error("{arch}: {layer}: {reason}")]
    Graph {
        arch: String,
        layer: String,
        reason: String,
    },
    /// A layer of the architecture could not be built (an inconsistent
    /// quantized layer or tensor, a map too small for its kernel) or run
    /// (a kernel refused its arguments); `source` is the error it met.
    #[error("{arch}: {layer}: {source}")]
    InGraph {
        arch: String,
        layer: String,
        #[source]
        source: Box<QsimdError>,
    },
    /// The input handed to the engine does not match the model.
    #[error("input: {reason}")]
    Input { reason: String },
}
