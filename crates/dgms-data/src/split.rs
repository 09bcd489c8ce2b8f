//! One split as the loader sees it: raw pixels in memory (idx, CIFAR, the
//! embedded subset) or image files decoded per batch (folders).

use std::path::PathBuf;
use std::sync::Arc;

use crate::augment::Augment;
use crate::dataset::Dataset;
use crate::error::Result;
use crate::file_split::FileSplit;
use crate::image_transform::{IMAGENET_MEAN, IMAGENET_STD};
use crate::normalize::Normalize;

/// A split of either kind; cheap to clone (shared).
#[derive(Debug, Clone)]
pub enum Split {
    Memory(Arc<Dataset>),
    Files(Arc<FileSplit>),
}

/// The train and evaluation splits of a data source.
#[derive(Debug, Clone)]
pub struct SplitPair {
    pub train: Split,
    pub test: Split,
}

impl Split {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Split::Memory(d) => d.len(),
            Split::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Used in messages.
    pub fn name(&self) -> &str {
        match self {
            Split::Memory(d) => &d.name,
            Split::Files(f) => &f.name,
        }
    }

    /// The shape (C, H, W) of the images the loader makes.
    pub fn shape(&self) -> (usize, usize, usize) {
        match self {
            Split::Memory(d) => (d.channels, d.height, d.width),
            Split::Files(f) => f.shape(),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        match self {
            Split::Memory(d) => d.classes,
            Split::Files(f) => f.classes(),
        }
    }

    /// Class names, by label.
    pub fn class_names(&self) -> Vec<String> {
        match self {
            Split::Memory(d) => d.kind.class_names().map(String::from).to_vec(),
            Split::Files(f) => f.folder.classes.clone(),
        }
    }

    /// The default training augmentation: the family's crop and flip for
    /// in-memory sets; for folders only the flip (the crop is the
    /// [`crate::ImageTransform`]'s).
    pub fn default_augment(&self) -> Augment {
        match self {
            Split::Memory(d) => Augment::for_kind(d.kind),
            Split::Files(_) => Augment { pad: 0, flip: true },
        }
    }

    /// The default normalisation: the family's statistics, or ImageNet's
    /// for folders (as the reference uses for every folder data set).
    pub fn default_normalize(&self) -> Normalize {
        match self {
            Split::Memory(d) => Normalize::for_kind(d.kind),
            Split::Files(_) => Normalize {
                mean: IMAGENET_MEAN.to_vec(),
                std: IMAGENET_STD.to_vec(),
            },
        }
    }

    /// The first `n` samples (all when `n >= len`).
    pub fn head(&self, n: usize) -> Result<Split> {
        if n >= self.len() {
            return Ok(self.clone());
        }
        Ok(match self {
            Split::Memory(d) => {
                let idx: Vec<usize> = (0..n).collect();
                Split::Memory(Arc::new(d.subset(&idx)?))
            }
            Split::Files(f) => Split::Files(Arc::new(f.head(n))),
        })
    }

    /// Files skipped so far because they could not be decoded (always
    /// empty for in-memory sets).
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        match self {
            Split::Memory(_) => Vec::new(),
            Split::Files(f) => f.skipped(),
        }
    }
}

impl From<Dataset> for Split {
    fn from(d: Dataset) -> Self {
        Split::Memory(Arc::new(d))
    }
}

impl From<Arc<Dataset>> for Split {
    fn from(d: Arc<Dataset>) -> Self {
        Split::Memory(d)
    }
}

impl From<FileSplit> for Split {
    fn from(f: FileSplit) -> Self {
        Split::Files(Arc::new(f))
    }
}

impl From<Arc<FileSplit>> for Split {
    fn from(f: Arc<FileSplit>) -> Self {
        Split::Files(f)
    }
}
