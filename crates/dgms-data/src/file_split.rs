//! A split read from image files on demand: a file list ([`ImageFolder`])
//! and the transform sizes; images are decoded when a batch needs them and
//! never held, so memory does not grow with the folder.
//!
//! A file that cannot be decoded (corrupt, truncated, not an image) is
//! skipped: the loader leaves it out of its batch, the first failure of
//! each file is logged as a warning naming it, and [`FileSplit::skipped`]
//! lists every such file for the run's summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::folder::ImageFolder;
use crate::image_decode::{with_decoded, RgbImage};
use crate::image_pipeline::ImageTransform;

/// One split of a class-per-folder image set.
#[derive(Debug)]
pub struct FileSplit {
    /// Used in messages, e.g. `imagenet/val`.
    pub name: String,
    pub folder: ImageFolder,
    pub transform: ImageTransform,
    /// Files that failed to decode: path -> reason. Shared between
    /// the subsets cut from one split.
    skipped: Arc<Mutex<BTreeMap<PathBuf, String>>>,
}

impl FileSplit {
    /// Lists `root` (see [`ImageFolder::scan`]) and checks the transform.
    pub fn scan(name: impl Into<String>, root: &Path, transform: ImageTransform) -> Result<Self> {
        transform.validate()?;
        let folder = ImageFolder::scan(root)?;
        tracing::info!(
            root = %root.display(),
            classes = folder.classes.len(),
            images = folder.len(),
            "listed image folder"
        );
        Ok(Self {
            name: name.into(),
            folder,
            transform,
            skipped: Arc::default(),
        })
    }

    /// Number of files (including any that will turn out undecodable).
    pub fn len(&self) -> usize {
        self.folder.len()
    }

    pub fn is_empty(&self) -> bool {
        self.folder.is_empty()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.folder.classes.len()
    }

    /// The model's input shape (3, crop, crop).
    pub fn shape(&self) -> (usize, usize, usize) {
        let c = self.transform.crop as usize;
        (3, c, c)
    }

    /// Label of sample `i`.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.folder.samples.get(i).map(|(_, l)| *l)
    }

    /// The first `n` samples (same skipped-file record).
    pub fn head(&self, n: usize) -> Self {
        let mut folder = self.folder.clone();
        folder.samples.truncate(n);
        Self {
            name: format!("{}[first {}]", self.name, folder.samples.len()),
            folder,
            transform: self.transform,
            skipped: self.skipped.clone(),
        }
    }

    /// Decodes sample `i` and applies `crop` to it; `None` (recorded and
    /// warned about once) when the file cannot be decoded or transformed.
    /// The image lives in buffers this thread reuses for its next file.
    pub fn load<T, F>(&self, i: usize, crop: F) -> Option<(T, u32)>
    where
        F: FnOnce(&RgbImage) -> Result<T>,
    {
        let (path, label) = self.folder.samples.get(i)?;
        match with_decoded(path, crop) {
            Ok(pixels) => Some((pixels, *label)),
            Err(e) => {
                self.record_skip(path, e.to_string());
                None
            }
        }
    }

    fn record_skip(&self, path: &Path, reason: String) {
        let Ok(mut skipped) = self.skipped.lock() else {
            return;
        };
        if !skipped.contains_key(path) {
            tracing::warn!("skipping an image file: {reason}");
            skipped.insert(path.to_path_buf(), reason);
        }
    }

    /// Every file skipped so far, with the reason, in path order.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        self.skipped
            .lock()
            .map(|s| s.iter().map(|(p, r)| (p.clone(), r.clone())).collect())
            .unwrap_or_default()
    }
}
