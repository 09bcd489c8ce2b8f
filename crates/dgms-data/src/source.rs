//! Where the data comes from, parsed from a command-line string.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::dataset::{DatasetKind, Splits};
use crate::error::{DataError, Result};

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
/// `mnist:DIR` or `cifar10:DIR`; `Display` gives the same form back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The repository's Fashion-MNIST subset (10,000 train / 2,000 test
    /// images, balanced), in `fixtures/fashion-mnist-subset` or
    /// `$DGMS_EMBEDDED_DATA`.
    Embedded,
    /// A folder of Fashion-MNIST idx files.
    FashionMnist(PathBuf),
    /// A folder of MNIST idx files.
    Mnist(PathBuf),
    /// A folder of CIFAR-10 binary batches.
    Cifar10(PathBuf),
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

    /// The dataset family (sets normalisation and augmentation defaults).
    pub fn kind(&self) -> DatasetKind {
        match self {
            DataSource::Embedded | DataSource::FashionMnist(_) => DatasetKind::FashionMnist,
            DataSource::Mnist(_) => DatasetKind::Mnist,
            DataSource::Cifar10(_) => DatasetKind::Cifar10,
        }
    }

    /// The folder the data is read from.
    pub fn dir(&self) -> PathBuf {
        match self {
            DataSource::Embedded => Self::embedded_dir(),
            DataSource::FashionMnist(d) | DataSource::Mnist(d) | DataSource::Cifar10(d) => {
                d.clone()
            }
        }
    }

    /// Reads the train and test splits into memory.
    pub fn load(&self) -> Result<Splits> {
        let dir = self.dir();
        let splits = match self {
            DataSource::Embedded => {
                crate::idx::load_dir(&dir, DatasetKind::FashionMnist, "fashion-mnist-subset")?
            }
            DataSource::FashionMnist(_) | DataSource::Mnist(_) => {
                crate::idx::load_dir(&dir, self.kind(), self.kind().name())?
            }
            DataSource::Cifar10(_) => crate::cifar::load_dir(&dir, "cifar10")?,
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
        }
    }
}
