//! Training-time augmentation: random crop with zero padding, then random
//! horizontal flip (torchvision's `RandomCrop(size, padding)` followed by
//! `RandomHorizontalFlip()`), on the raw `u8` pixels before normalisation.
//!
//! Padding is with pixel value 0 (black), as torchvision pads the image
//! before `Normalize`; after normalisation it becomes `-mean / std`.

use rand::Rng;

use crate::dataset::DatasetKind;

/// Augmentation settings of a loader in training mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side before the random crop back to the original
    /// size; 0 turns cropping off.
    pub pad: usize,
    /// Random horizontal flip with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment {
            pad: 0,
            flip: false,
        }
    }

    /// The per-dataset default: crop padding 2 for 28x28, 4 for 32x32; flips
    /// for Fashion-MNIST and CIFAR-10 but not MNIST digits.
    pub fn for_kind(kind: DatasetKind) -> Self {
        Augment {
            pad: kind.default_pad(),
            flip: kind.default_flip(),
        }
    }

    /// True when no image can change.
    pub fn is_identity(&self) -> bool {
        self.pad == 0 && !self.flip
    }

    /// Draws one image's crop offsets and flip. The draw order (dy, dx, flip)
    /// is fixed, so a given generator state always gives the same result.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> CropFlip {
        let dy = if self.pad > 0 {
            rng.random_range(0..=2 * self.pad)
        } else {
            0
        };
        let dx = if self.pad > 0 {
            rng.random_range(0..=2 * self.pad)
        } else {
            0
        };
        let flip = self.flip && rng.random_bool(0.5);
        CropFlip {
            pad: self.pad,
            dy,
            dx,
            flip,
        }
    }
}

/// One image's augmentation: the crop window's offset in the padded image
/// (`0..=2 * pad` each; `pad` means centred) and whether to mirror it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropFlip {
    pub pad: usize,
    pub dy: usize,
    pub dx: usize,
    pub flip: bool,
}

impl CropFlip {
    /// The transform that changes nothing.
    pub fn identity() -> Self {
        CropFlip {
            pad: 0,
            dy: 0,
            dx: 0,
            flip: false,
        }
    }

    /// Writes the transformed CHW image `src` (`channels x height x width`)
    /// into `out` (same shape): `out[c][y][x] = padded[c][y + dy][x' + dx]`
    /// with `x' = width - 1 - x` when flipped, and 0 outside the image.
    /// Mismatched slice lengths never panic: missing source pixels read as 0
    /// and extra output is left untouched.
    pub fn apply(&self, src: &[u8], channels: usize, height: usize, width: usize, out: &mut [u8]) {
        let plane = height.saturating_mul(width);
        // Offsets of the window relative to the unpadded image.
        let oy = self.dy as isize - self.pad as isize;
        let ox = self.dx as isize - self.pad as isize;
        let (h, w) = (height as isize, width as isize);
        for (k, o) in out
            .iter_mut()
            .take(channels.saturating_mul(plane))
            .enumerate()
        {
            let (c, rest) = (k / plane, k % plane);
            let (y, x) = ((rest / width) as isize, (rest % width) as isize);
            let x = if self.flip { w - 1 - x } else { x };
            let (sy, sx) = (y + oy, x + ox);
            *o = if (0..h).contains(&sy) && (0..w).contains(&sx) {
                let i = c * plane + sy as usize * width + sx as usize;
                src.get(i).copied().unwrap_or(0)
            } else {
                0
            };
        }
    }
}
