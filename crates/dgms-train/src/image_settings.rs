//! The image-folder transform settings of a run (`--resize`, `--crop`,
//! `--random-resized-crop`), saved in its config. They only matter for
//! folder data sources (`imagenet:DIR`, `folder:TRAIN,VAL`); in-memory
//! sets keep their fixed image size.

use dgms_data::{ImageTransform, TrainCrop};
use serde::{Deserialize, Serialize};

use crate::config::InvalidSetting;

/// Sizes and training crop of a folder data set's transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    /// Shorter side after resizing (the reference's `--base-size`).
    pub resize: u32,
    /// Side of the square crop the model sees (`--crop-size`).
    pub crop: u32,
    /// Train with torchvision's `RandomResizedCrop(crop)` instead of
    /// resize + random crop.
    pub random_resized_crop: bool,
}

impl Default for ImageSettings {
    /// torchvision's ImageNet recipe: resize 256, crop 224, resize + random
    /// crop + flip for training.
    fn default() -> Self {
        let t = ImageTransform::default();
        Self {
            resize: t.resize,
            crop: t.crop,
            random_resized_crop: false,
        }
    }
}

impl ImageSettings {
    /// The data crate's transform for these settings.
    pub fn transform(&self) -> ImageTransform {
        ImageTransform {
            resize: self.resize,
            crop: self.crop,
            train_crop: if self.random_resized_crop {
                TrainCrop::RandomResized
            } else {
                TrainCrop::ResizeRandomCrop
            },
        }
    }

    /// `1 <= crop <= resize <= 4096`, named by flag.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.resize == 0 || self.resize > 4096 {
            return Err(InvalidSetting {
                flag: "--resize",
                value: self.resize.to_string(),
                expected: "a side in 1..=4096 pixels".to_string(),
            });
        }
        if self.crop == 0 || self.crop > self.resize {
            return Err(InvalidSetting {
                flag: "--crop",
                value: self.crop.to_string(),
                expected: format!("a side in 1..=--resize ({})", self.resize),
            });
        }
        Ok(())
    }
}
