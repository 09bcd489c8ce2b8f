//! Where the data comes from, parsed from a command-line string.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::dataset::{DatasetKind, Splits};
use crate::error::{DataError, Result};
use crate::file_split::FileSplit;
use crate::image_pipeline::ImageTransform;
use crate::split::{Split, SplitPair};

/// Environment variable that overrides the folder of the embedded subset.
pub const EMBEDDED_ENV: &str = "DGMS_EMBEDDED_DATA";

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The embedded subset's folder as seen when this crate was compiled: the
/// repository's `fixtures/fashion-mnist-subset`.
const EMBEDDED_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/fashion-mnist-subset"
);

/// A dataset location.
///
/// Parsed from `embedded`, `fashion-mnist`, `fashion-mnist:DIR`,
/// `mnist:DIR`, `cifar10:DIR`, `imagenet:DIR` or `folder:TRAIN,VAL`;
/// `Display` gives the same form back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The repository's Fashion-MNIST data (a balanced 10,000-image
    /// training subset, the full 10,000-image test set), in
    /// `fixtures/fashion-mnist-subset` or
    /// `$DGMS_EMBEDDED_DATA`.
    Embedded,
    /// A folder of Fashion-MNIST idx files.
    FashionMnist(PathBuf),
    /// A folder of MNIST idx files.
    Mnist(PathBuf),
    /// A folder of CIFAR-10 binary batches.
    Cifar10(PathBuf),
    /// An ImageNet-layout folder: `DIR/train/<class>/...` and
    /// `DIR/val/<class>/...`, images decoded per batch.
    ImageNet(PathBuf),
    /// Any two class-per-folder splits (CUB-200, Stanford Cars, ...).
    Folder { train: PathBuf, val: PathBuf },
}

impl DataSource {
    /// The folder of the embedded subset: `$DGMS_EMBEDDED_DATA` when set and
    /// non-empty, otherwise the repository's `fixtures/fashion-mnist-subset`
    /// (a path fixed at compile time, so a binary moved off the machine it
    /// was built on needs the variable).
    pub fn embedded_dir() -> PathBuf {
        match std::env::var_os(EMBEDDED_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from(EMBEDDED_DIR),
        }
    }

    /// The family of an in-memory data set (sets normalisation and
    /// augmentation defaults); `None` for image folders.
    pub fn kind(&self) -> Option<DatasetKind> {
        match self {
            DataSource::Embedded | DataSource::FashionMnist(_) => Some(DatasetKind::FashionMnist),
            DataSource::Mnist(_) => Some(DatasetKind::Mnist),
            DataSource::Cifar10(_) => Some(DatasetKind::Cifar10),
            DataSource::ImageNet(_) | DataSource::Folder { .. } => None,
        }
    }

    /// Whether the images are files decoded per batch (the folder sources).
    pub fn is_image_folder(&self) -> bool {
        self.kind().is_none()
    }

    /// The folder the data is read from (for `folder:`, the train folder).
    pub fn dir(&self) -> PathBuf {
        match self {
            DataSource::Embedded => Self::embedded_dir(),
            DataSource::FashionMnist(d)
            | DataSource::Mnist(d)
            | DataSource::Cifar10(d)
            | DataSource::ImageNet(d) => d.clone(),
            DataSource::Folder { train, .. } => train.clone(),
        }
    }

    /// The train and evaluation folders of a folder source.
    fn split_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        match self {
            DataSource::ImageNet(d) => Some((d.join("train"), d.join("val"))),
            DataSource::Folder { train, val } => Some((train.clone(), val.clone())),
            _ => None,
        }
    }

    /// Opens both splits: in-memory sources are read whole; folder sources
    /// are listed (their images are decoded per batch with `transform`).
    /// The evaluation split of a folder source must have the training
    /// split's classes, in the same order; otherwise labels would mean
    /// different things.
    pub fn open(&self, transform: ImageTransform) -> Result<SplitPair> {
        let Some((train_dir, val_dir)) = self.split_dirs() else {
            let splits = self.load()?;
            return Ok(SplitPair {
                train: Split::from(splits.train),
                test: Split::from(splits.test),
            });
        };
        let train = FileSplit::scan(format!("{self} train"), &train_dir, transform)?;
        let val = FileSplit::scan(format!("{self} val"), &val_dir, transform)?;
        if train.folder.classes != val.folder.classes {
            let (t, v) = (&train.folder.classes, &val.folder.classes);
            let first = t
                .iter()
                .zip(v)
                .position(|(a, b)| a != b)
                .unwrap_or(t.len().min(v.len()));
            return Err(DataError::BadSource {
                given: self.to_string(),
                reason: format!(
                    "{} has {} classes and {} has {}; they first differ at label {first} \
                     ({:?} vs {:?}): both splits need the same class folders",
                    train_dir.display(),
                    t.len(),
                    val_dir.display(),
                    v.len(),
                    t.get(first),
                    v.get(first),
                ),
            });
        }
        Ok(SplitPair {
            train: Split::from(train),
            test: Split::from(val),
        })
    }

    /// The class names of a source without reading its images (in-memory
    /// sources: the family's names; folders: the training split's class
    /// folders).
    pub fn class_names(&self) -> Result<Vec<String>> {
        match (self.kind(), self.split_dirs()) {
            (Some(kind), _) => Ok(kind.class_names().map(String::from).to_vec()),
            (None, Some((train, _))) => crate::folder::class_names(&train),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// Reads the train and test splits of an in-memory source; a folder
    /// source is an error (use [`Self::open`]).
    pub fn load(&self) -> Result<Splits> {
        let dir = self.dir();
        let splits = match self {
            DataSource::Embedded => {
                crate::idx::load_dir(&dir, DatasetKind::FashionMnist, "fashion-mnist-subset")?
            }
            DataSource::FashionMnist(_) => {
                crate::idx::load_dir(&dir, DatasetKind::FashionMnist, "fashion-mnist")?
            }
            DataSource::Mnist(_) => crate::idx::load_dir(&dir, DatasetKind::Mnist, "mnist")?,
            DataSource::Cifar10(_) => crate::cifar::load_dir(&dir, "cifar10")?,
            DataSource::ImageNet(_) | DataSource::Folder { .. } => {
                return Err(DataError::BadSource {
                    given: self.to_string(),
                    reason: "an image folder is read per batch, not into memory \
                             (DataSource::open)"
                        .to_string(),
                })
            }
        };
        tracing::info!(
            source = %self,
            train = splits.train.len(),
            test = splits.test.len(),
            "loaded dataset"
        );
        Ok(splits)
    }
}

impl FromStr for DataSource {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        let given = s.trim();
        let (prefix, dir) = match given.split_once(':') {
            Some((p, d)) => (p, Some(d)),
            None => (given, None),
        };
        let dir = dir.filter(|d| !d.is_empty()).map(PathBuf::from);
        let needs_dir = |kind: &str| DataError::BadSource {
            given: given.to_string(),
            reason: format!("`{kind}` needs a folder: `{kind}:DIR`"),
        };
        match (prefix, dir) {
            ("embedded", None) => Ok(DataSource::Embedded),
            ("embedded", Some(_)) => Err(DataError::BadSource {
                given: given.to_string(),
                reason: format!(
                    "`embedded` takes no folder (set {EMBEDDED_ENV} to move it); \
                     for a folder of Fashion-MNIST files use `fashion-mnist:DIR`"
                ),
            }),
            ("fashion-mnist", Some(d)) => Ok(DataSource::FashionMnist(d)),
            ("fashion-mnist", None) => {
                if Path::new(DEBIAN_FASHION_MNIST).is_dir() {
                    Ok(DataSource::FashionMnist(PathBuf::from(
                        DEBIAN_FASHION_MNIST,
                    )))
                } else {
                    Err(DataError::BadSource {
                        given: given.to_string(),
                        reason: format!(
                            "no folder given and the default {DEBIAN_FASHION_MNIST} \
                             (Debian package dataset-fashion-mnist) does not exist: \
                             use `fashion-mnist:DIR` or `embedded`"
                        ),
                    })
                }
            }
            ("mnist", Some(d)) => Ok(DataSource::Mnist(d)),
            ("mnist", None) => Err(needs_dir("mnist")),
            ("cifar10", Some(d)) => Ok(DataSource::Cifar10(d)),
            ("cifar10", None) => Err(needs_dir("cifar10")),
            ("imagenet", Some(d)) => Ok(DataSource::ImageNet(d)),
            ("imagenet", None) => Err(needs_dir("imagenet")),
            ("folder", Some(d)) => {
                let text = d.to_string_lossy().into_owned();
                match text.split_once(',') {
                    Some((t, v)) if !t.is_empty() && !v.is_empty() => Ok(DataSource::Folder {
                        train: PathBuf::from(t),
                        val: PathBuf::from(v),
                    }),
                    _ => Err(DataError::BadSource {
                        given: given.to_string(),
                        reason: "`folder` needs two folders: `folder:TRAIN_DIR,VAL_DIR`"
                            .to_string(),
                    }),
                }
            }
            ("folder", None) => Err(DataError::BadSource {
                given: given.to_string(),
                reason: "`folder` needs two folders: `folder:TRAIN_DIR,VAL_DIR`".to_string(),
            }),
            _ => Err(DataError::UnknownSource {
                given: given.to_string(),
            }),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Embedded => f.write_str("embedded"),
            DataSource::FashionMnist(d) => write!(f, "fashion-mnist:{}", d.display()),
            DataSource::Mnist(d) => write!(f, "mnist:{}", d.display()),
            DataSource::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSource::ImageNet(d) => write!(f, "imagenet:{}", d.display()),
            DataSource::Folder { train, val } => {
                write!(f, "folder:{},{}", train.display(), val.display())
            }
        }
    }
}
