//! The per-image transforms of a folder data set, as torchvision composes
//! them on PIL images, producing `u8` RGB crops (HWC) that the loader
//! normalises:
//!
//! - evaluation: `Resize(resize)` then `CenterCrop(crop)`;
//! - training, [`TrainCrop::ResizeRandomCrop`] (the reference's ImageNet
//!   recipe): `Resize(resize)`, `RandomCrop(crop)`, then the loader's
//!   `RandomHorizontalFlip()`;
//! - training, [`TrainCrop::RandomResized`]: torchvision's
//!   `RandomResizedCrop(crop)` with its defaults (scale 0.08..1, ratio
//!   3/4..4/3, ten tries, then a centre crop of the clamped ratio), i.e.
//!   PIL's `crop` then `resize((crop, crop), BILINEAR)`.
//!
//! Random choices come from the generator the caller passes, which the
//! loader keys by `(seed, epoch, image index)`; the draw order is fixed.

use rand::Rng;

use crate::error::{DataError, Result};
use crate::image_decode::RgbImage;
use crate::image_transform::{
    crop_offset, resize_into, resized_size, resized_window, with_resize_buffers, RgbView,
};

/// How training images are cropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrainCrop {
    /// Resize the shorter side to `resize`, then a random `crop` square.
    #[default]
    ResizeRandomCrop,
    /// torchvision's `RandomResizedCrop(crop)` with default scale and ratio.
    RandomResized,
}

/// The sizes of a folder data set's transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageTransform {
    /// Shorter side after resizing (the reference's `--base-size`).
    pub resize: u32,
    /// Side of the square crop the model sees (`--crop-size`).
    pub crop: u32,
    pub train_crop: TrainCrop,
}

impl Default for ImageTransform {
    /// torchvision's ImageNet recipe: 256, 224.
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            train_crop: TrainCrop::ResizeRandomCrop,
        }
    }
}

/// torchvision's `RandomResizedCrop` defaults.
const RRC_SCALE: (f64, f64) = (0.08, 1.0);
const RRC_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
const RRC_TRIES: usize = 10;

impl ImageTransform {
    /// Checks the sizes: `crop` in `1..=resize`, `resize` at most 4096
    /// (a larger side is surely a typo and would make huge batches).
    pub fn validate(&self) -> Result<()> {
        if self.crop == 0 || self.crop > self.resize || self.resize > 4096 {
            return Err(DataError::Transform {
                reason: format!(
                    "--resize {} / --crop {}: expected 1 <= crop <= resize <= 4096",
                    self.resize, self.crop
                ),
            });
        }
        Ok(())
    }

    /// Bytes of one output crop (HWC).
    pub fn crop_len(&self) -> usize {
        3 * (self.crop as usize) * (self.crop as usize)
    }

    /// The evaluation crop of `img`: resize, centre crop; `u8` HWC.
    pub fn eval(&self, img: &RgbImage) -> Result<Vec<u8>> {
        let plan = self.eval_plan(img)?;
        self.crop_with(img, plan, packed)
    }

    /// A training crop of `img`, drawn from `rng`; `u8` HWC (not flipped:
    /// the loader flips).
    pub fn train<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> Result<Vec<u8>> {
        let plan = self.train_plan(img, rng)?;
        self.crop_with(img, plan, packed)
    }

    /// Where the evaluation crop of `img` comes from.
    pub(crate) fn eval_plan(&self, img: &RgbImage) -> Result<CropPlan> {
        self.validate()?;
        let (w, h) = shorter_to(img, self.resize)?;
        Ok(CropPlan::ResizedWindow {
            size: (w, h),
            top: crop_offset(h, self.crop),
            left: crop_offset(w, self.crop),
        })
    }

    /// Where a training crop of `img` comes from, drawn from `rng` (the
    /// same draws, in the same order, as torchvision's transforms).
    pub(crate) fn train_plan<R: Rng + ?Sized>(
        &self,
        img: &RgbImage,
        rng: &mut R,
    ) -> Result<CropPlan> {
        self.validate()?;
        match self.train_crop {
            TrainCrop::ResizeRandomCrop => {
                let (w, h) = shorter_to(img, self.resize)?;
                // torchvision's RandomCrop: randint(0, side - crop), both ends in.
                let top = rng.random_range(0..=h - self.crop);
                let left = rng.random_range(0..=w - self.crop);
                Ok(CropPlan::ResizedWindow {
                    size: (w, h),
                    top,
                    left,
                })
            }
            TrainCrop::RandomResized => {
                let (top, left, h, w) = random_resized_box(img.width, img.height, rng);
                Ok(CropPlan::RegionResized { top, left, h, w })
            }
        }
    }

    /// Carries out `plan` on `img` in this thread's reused buffers and
    /// hands the `crop` x `crop` result to `f` (a view, not a copy).
    pub(crate) fn crop_with<T>(
        &self,
        img: &RgbImage,
        plan: CropPlan,
        f: impl FnOnce(RgbView<'_>) -> T,
    ) -> Result<T> {
        let crop = self.crop;
        with_resize_buffers(|buffers| match plan {
            CropPlan::ResizedWindow {
                size: (w, h),
                top,
                left,
            } => {
                let window = resized_window(
                    &mut buffers.resizer,
                    img.as_view(),
                    (w, h),
                    (top, left),
                    crop,
                    &mut buffers.out,
                )?;
                Ok(f(window))
            }
            CropPlan::RegionResized { top, left, h, w } => {
                buffers.region.clear();
                img.as_view()
                    .window(top, left, h, w)
                    .extend_packed(&mut buffers.region);
                let region = RgbView {
                    pixels: &buffers.region,
                    width: w,
                    height: h,
                    stride: 3 * w as usize,
                };
                resize_into(&mut buffers.resizer, region, crop, crop, &mut buffers.out)?;
                let out = RgbView {
                    pixels: &buffers.out,
                    width: crop,
                    height: crop,
                    stride: 3 * crop as usize,
                };
                Ok(f(out))
            }
        })
    }
}

/// How one crop is made from a decoded image (its random choices made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CropPlan {
    /// Resize the whole image to `size` (width, height), then the `crop`
    /// square at (`top`, `left`).
    ResizedWindow {
        size: (u32, u32),
        top: u32,
        left: u32,
    },
    /// The `h` x `w` region at (`top`, `left`), resized to `crop` x `crop`.
    RegionResized { top: u32, left: u32, h: u32, w: u32 },
}

/// A view's pixels packed into a new vector.
fn packed(view: RgbView<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * view.width as usize * view.height as usize);
    view.extend_packed(&mut out);
    out
}

/// The size of `img` with its shorter side resized to `size`
/// (torchvision's `Resize`).
fn shorter_to(img: &RgbImage, size: u32) -> Result<(u32, u32)> {
    if img.width == 0 || img.height == 0 {
        return Err(DataError::Transform {
            reason: "an empty image".to_string(),
        });
    }
    Ok(resized_size(img.width, img.height, size))
}

/// torchvision's `RandomResizedCrop.get_params` for a `width` x `height`
/// image with the default scale and ratio: (top, left, height, width).
pub fn random_resized_box<R: Rng + ?Sized>(
    width: u32,
    height: u32,
    rng: &mut R,
) -> (u32, u32, u32, u32) {
    let area = f64::from(width) * f64::from(height);
    let (log_lo, log_hi) = (RRC_RATIO.0.ln(), RRC_RATIO.1.ln());
    for _ in 0..RRC_TRIES {
        let target = area * rng.random_range(RRC_SCALE.0..RRC_SCALE.1);
        let aspect = rng.random_range(log_lo..log_hi).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w > 0.0 && h > 0.0 && w <= f64::from(width) && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    // Fallback: the whole image, its ratio clamped into the range, centred.
    let ratio = f64::from(width) / f64::from(height);
    let (w, h) = if ratio < RRC_RATIO.0 {
        let h = (f64::from(width) / RRC_RATIO.0).round_ties_even() as u32;
        (width, h.clamp(1, height))
    } else if ratio > RRC_RATIO.1 {
        let w = (f64::from(height) * RRC_RATIO.1).round_ties_even() as u32;
        (w.clamp(1, width), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn image(width: u32, height: u32) -> RgbImage {
        let pixels = (0..width * height * 3).map(|i| (i % 251) as u8).collect();
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn random_resized_boxes_stay_inside_and_follow_the_defaults() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (w, h) in [(500, 375), (64, 640), (31, 17), (1, 1), (1000, 3)] {
            for _ in 0..200 {
                let (top, left, bh, bw) = random_resized_box(w, h, &mut rng);
                assert!(bh >= 1 && bw >= 1, "{w}x{h}: empty box");
                assert!(top + bh <= h && left + bw <= w, "{w}x{h}: box outside");
            }
        }
        // On a large square image the ten tries nearly always succeed, so
        // the areas cover 8%..100% and the ratios 3/4..4/3.
        let (mut min_area, mut max_area) = (f64::MAX, 0f64);
        for _ in 0..2000 {
            let (_, _, bh, bw) = random_resized_box(1000, 1000, &mut rng);
            let a = f64::from(bh) * f64::from(bw) / 1e6;
            min_area = min_area.min(a);
            max_area = max_area.max(a);
            let r = f64::from(bw) / f64::from(bh);
            assert!((0.74..=1.34).contains(&r), "ratio {r}");
        }
        assert!(min_area < 0.1 && max_area > 0.9, "{min_area}..{max_area}");
    }

    #[test]
    fn training_crops_have_the_crop_size_and_depend_on_the_generator() {
        let img = image(90, 60);
        for train_crop in [TrainCrop::ResizeRandomCrop, TrainCrop::RandomResized] {
            let t = ImageTransform {
                resize: 40,
                crop: 32,
                train_crop,
            };
            let a = t.train(&img, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            let b = t.train(&img, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            assert_eq!(a.len(), t.crop_len());
            assert_eq!(a, b, "{train_crop:?}: same generator, same crop");
            let differs =
                (2..20).any(|s| t.train(&img, &mut ChaCha8Rng::seed_from_u64(s)).unwrap() != a);
            assert!(differs, "{train_crop:?}: every seed gave the same crop");
        }
    }

    #[test]
    fn the_eval_crop_is_the_centre_of_the_resized_image() {
        // Resize to the image's own size is the identity, so the eval crop
        // is exactly the centre window.
        let img = image(50, 40);
        let t = ImageTransform {
            resize: 40,
            crop: 20,
            train_crop: TrainCrop::ResizeRandomCrop,
        };
        let crop = t.eval(&img).unwrap();
        assert_eq!(crop, packed(img.as_view().window(10, 15, 20, 20)));
    }

    #[test]
    fn bad_sizes_are_refused() {
        let img = image(8, 8);
        for (resize, crop) in [(8, 9), (8, 0), (5000, 224)] {
            let t = ImageTransform {
                resize,
                crop,
                train_crop: TrainCrop::ResizeRandomCrop,
            };
            let err = t.eval(&img).unwrap_err().to_string();
            assert!(err.contains("--resize"), "{err}");
        }
    }
}
