//! The in-memory dataset: raw `u8` pixels in N x C x H x W order and `u8`
//! labels, as read from disk, before any normalisation.
//!
//! Pixels stay `u8` (a quarter of the memory of f32) and are normalised per
//! batch by the loader.

use crate::error::{DataError, Result};
use crate::normalize::Normalize;

/// Which dataset the images come from: sets the per-dataset defaults
/// (normalisation statistics, crop padding, whether flipping makes sense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// MNIST hand-written digits, 1 x 28 x 28.
    Mnist,
    /// Fashion-MNIST (Zalando), 1 x 28 x 28; also the embedded subset.
    FashionMnist,
    /// CIFAR-10, 3 x 32 x 32.
    Cifar10,
}

impl DatasetKind {
    /// Short name, as used in data-source strings.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// Image shape (C, H, W).
    pub fn shape(self) -> (usize, usize, usize) {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => (1, 28, 28),
            DatasetKind::Cifar10 => (3, 32, 32),
        }
    }

    /// Number of classes (10 for all three).
    pub fn classes(self) -> usize {
        10
    }

    /// Human-readable class names, by label.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DatasetKind::Cifar10 => [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        }
    }

    /// Zero padding of the default random crop: 4 for 32x32 (the usual
    /// CIFAR recipe), 2 for 28x28 (the same ~1/8 of the side).
    pub fn default_pad(self) -> usize {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => 2,
            DatasetKind::Cifar10 => 4,
        }
    }

    /// Whether random horizontal flips are on by default. Off for MNIST: a
    /// mirrored digit (2, 3, 4, 5, 7, 9) is not the same digit, while a
    /// mirrored shirt or car is still a shirt or car.
    pub fn default_flip(self) -> bool {
        match self {
            DatasetKind::Mnist => false,
            DatasetKind::FashionMnist | DatasetKind::Cifar10 => true,
        }
    }

    /// Per-channel mean and std of the full training set (see
    /// [`Normalize::for_kind`]).
    pub fn normalize(self) -> Normalize {
        Normalize::for_kind(self)
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One split (train or test) of an image-classification dataset, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Pixels, `n * channels * height * width` bytes, image after image,
    /// each in channel-major (CHW) order.
    pub images: Vec<u8>,
    /// One label per image, each `< classes`.
    pub labels: Vec<u8>,
    /// Number of images.
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
    /// Where the data came from, e.g. `fashion-mnist-subset/train`; used in
    /// messages.
    pub name: String,
    /// The dataset family, for per-dataset defaults.
    pub kind: DatasetKind,
}

/// The train and test splits of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

impl Dataset {
    /// Builds a dataset and checks that its fields agree (see [`Self::validate`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        kind: DatasetKind,
        images: Vec<u8>,
        labels: Vec<u8>,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Result<Self> {
        let dataset = Dataset {
            n: labels.len(),
            images,
            labels,
            channels,
            height,
            width,
            classes,
            name: name.into(),
            kind,
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// Checks the invariants the loader relies on: non-empty image shape,
    /// `images.len() == n * C * H * W`, `labels.len() == n`, every label
    /// `< classes`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| DataError::InvalidDataset {
            name: self.name.clone(),
            reason,
        };
        if self.channels == 0 || self.height == 0 || self.width == 0 {
            return Err(bad(format!(
                "image shape {}x{}x{} has a zero dimension",
                self.channels, self.height, self.width
            )));
        }
        if self.classes == 0 || self.classes > 256 {
            return Err(bad(format!(
                "{} classes, expected 1..=256 (labels are u8)",
                self.classes
            )));
        }
        if self.labels.len() != self.n {
            return Err(bad(format!(
                "{} labels, expected n = {}",
                self.labels.len(),
                self.n
            )));
        }
        let expected = self
            .channels
            .checked_mul(self.height)
            .and_then(|p| p.checked_mul(self.width))
            .and_then(|p| p.checked_mul(self.n))
            .ok_or_else(|| bad("n * C * H * W overflows".to_string()))?;
        if self.images.len() != expected {
            return Err(bad(format!(
                "{} pixel bytes, expected n * C * H * W = {} * {} * {} * {} = {expected}",
                self.images.len(),
                self.n,
                self.channels,
                self.height,
                self.width
            )));
        }
        if let Some((index, &label)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= self.classes)
        {
            return Err(bad(format!(
                "label {label} at sample {index}, expected a class index < {}",
                self.classes
            )));
        }
        Ok(())
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes per image, C * H * W.
    pub fn image_len(&self) -> usize {
        // Saturating: a hand-edited dataset with absurd sizes then fails
        // `validate` instead of overflowing.
        self.channels
            .saturating_mul(self.height)
            .saturating_mul(self.width)
    }

    /// The pixels of image `i` (CHW), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let len = self.image_len();
        let start = i.checked_mul(len)?;
        self.images.get(start..start.checked_add(len)?)
    }

    /// Number of images of each class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &label in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(label)) {
                *c += 1;
            }
        }
        counts
    }

    /// A new dataset made of the images at `indices` (in that order), e.g.
    /// for a quick run on part of the data.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (Some(image), Some(&label)) = (self.image(i), self.labels.get(i)) else {
                return Err(DataError::InvalidDataset {
                    name: self.name.clone(),
                    reason: format!("subset index {i} is out of range (n = {})", self.n),
                });
            };
            images.extend_from_slice(image);
            labels.push(label);
        }
        Dataset::new(
            format!("{}[subset of {}]", self.name, indices.len()),
            self.kind,
            images,
            labels,
            self.channels,
            self.height,
            self.width,
            self.classes,
        )
    }
}
