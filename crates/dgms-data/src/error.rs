//! Typed errors of the data crate.
//!
//! Every variant about a file names the file and says what was expected, so
//! that a message read in a training log tells which download is broken and
//! how.

use std::path::PathBuf;

/// The data-source forms accepted by [`crate::DataSource`]'s parser, quoted
/// in its errors.
pub const ACCEPTED_SOURCES: &str =
    "`embedded`, `fashion-mnist` (default folder), `fashion-mnist:DIR`, `mnist:DIR`, `cifar10:DIR`, `imagenet:DIR`, `folder:TRAIN_DIR,VAL_DIR`";

/// Errors returned by `dgms-data`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that should be there is not.
    #[error("{}: file not found, expected {what}", path.display())]
    MissingFile { path: PathBuf, what: String },

    /// None of the accepted names of a file exist in a folder.
    #[error("{}: no {what} in this folder, expected one of: {}", dir.display(), candidates.join(", "))]
    MissingInDir {
        dir: PathBuf,
        what: String,
        candidates: Vec<String>,
    },

    /// Reading failed (permissions, a corrupt or cut gzip stream, ...).
    #[error("{}: error reading {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An image-folder split without class folders.
    #[error("{}: no class folders (expected <split>/<class>/<image files>, as torchvision's ImageFolder)", dir.display())]
    NoClasses { dir: PathBuf },
    /// A class folder without any image file.
    #[error("{}: class `{class}` holds no image file (extensions: jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp, any case)", dir.display())]
    EmptyClass { dir: PathBuf, class: String },
    /// An image that cannot be decoded (corrupt, truncated, not an image).
    #[error("{}: cannot decode the image: {reason}", path.display())]
    Undecodable { path: PathBuf, reason: String },
    /// An image transform that cannot run (bad sizes, an empty image).
    #[error("image transform: {reason}")]
    Transform { reason: String },
    /// Writing a file (atomically, through dgms-io) failed.
    #[error("writing the {what}")]
    Write {
        what: String,
        #[source]
        source: Box<dgms_io::IoError>,
    },

    /// The file is shorter than its header (or format) says.
    #[error("{}: truncated {what}: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },

    /// The file is longer than its header says.
    #[error("{}: {what} has trailing data: expected {expected} bytes, found {found}", path.display())]
    TrailingData {
        path: PathBuf,
        what: String,
        expected: u64,
        found: u64,
    },

    /// The first four bytes are not the magic number of the expected idx file.
    #[error("{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({what})", path.display())]
    WrongMagic {
        path: PathBuf,
        what: String,
        expected: u32,
        found: u32,
    },

    /// Header dimensions that cannot describe images (zero size, overflow).
    #[error("{}: bad header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },

    /// An image file and its label file disagree on the number of samples.
    #[error(
        "{} has {images} images but {} has {labels} labels, expected the same count",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    /// A label is not a class index.
    #[error("{}: label {label} at sample {index}, expected a class index < {classes}", path.display())]
    BadLabel {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },

    /// A CIFAR-10 batch whose size is not a whole number of records.
    #[error(
        "{}: {found} bytes, expected a non-zero multiple of the {record}-byte CIFAR-10 record \
         (1 label byte + 3x32x32 image bytes; a full batch is 10000 records = 30730000 bytes)",
        path.display()
    )]
    CifarSize {
        path: PathBuf,
        found: u64,
        record: usize,
    },

    /// A data-source string with an unknown form.
    #[error("unknown data source `{given}`: expected one of {ACCEPTED_SOURCES}")]
    UnknownSource { given: String },

    /// A data-source string of a known form that cannot be used as given.
    #[error("data source `{given}`: {reason}")]
    BadSource { given: String, reason: String },

    /// A `Dataset` whose fields disagree with each other.
    #[error("dataset `{name}`: {reason}")]
    InvalidDataset { name: String, reason: String },

    /// A loader option that cannot work with its dataset.
    #[error("loader over `{dataset}`: {reason}")]
    InvalidConfig { dataset: String, reason: String },

    /// A batch index past the end of the epoch.
    #[error("batch {index} requested, but an epoch has {batches} batches")]
    BatchOutOfRange { index: usize, batches: usize },

    /// Fetching a dataset from the hub failed.
    #[cfg(feature = "hub")]
    #[error("fetching `{dataset}` from the Hugging Face hub: {source}")]
    Hub {
        dataset: String,
        #[source]
        source: candle_core::Error,
    },

    /// An error from candle while building tensors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, DataError>;
