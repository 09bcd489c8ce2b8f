//! torchvision's ImageNet evaluation transform on a decoded image, step for
//! step as it runs on a PIL image: `Resize(resize)` (the shorter side to
//! `resize`, PIL's bilinear filter with antialiasing, i.e. a triangle
//! filter widened by the scale factor when shrinking: `fast_image_resize`'s
//! bilinear convolution implements the same), `CenterCrop(crop)`,
//! `ToTensor()` (/255) and `Normalize(mean, std)`, giving f32 (3, crop,
//! crop).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{DataError, Result};
use crate::image_decode::RgbImage;

/// ImageNet's per-channel mean and standard deviation (torchvision's).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The evaluation transform's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalTransform {
    /// The shorter side after resizing (the reference's `--base-size`).
    pub resize: u32,
    /// The side of the centre crop (`--crop-size`), at most `resize`.
    pub crop: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for EvalTransform {
    /// torchvision's ImageNet evaluation: resize 256, crop 224.
    fn default() -> Self {
        Self {
            resize: 256,
            crop: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }
}

/// The size torchvision's `Resize(size)` gives an image of `w` x `h`: the
/// shorter side becomes `size`, the longer `int(size * long / short)`
/// (Python's float division, truncated).
pub fn resized_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// The top-left corner of torchvision's centre crop of `crop` from a side
/// of `side`: `int(round((side - crop) / 2.0))`, Python's round (ties to
/// even).
pub fn crop_offset(side: u32, crop: u32) -> u32 {
    ((f64::from(side) - f64::from(crop)) / 2.0).round_ties_even() as u32
}

/// Resizes `img` to `width` x `height` with PIL's antialiased bilinear
/// filter.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> Result<RgbImage> {
    let fail = |e: String| DataError::Transform { reason: e };
    // Borrowed: the decoded pixels are not copied.
    let src = ImageRef::new(img.width, img.height, &img.pixels, PixelType::U8x3)
        .map_err(|e| fail(e.to_string()))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(e.to_string()))?;
    Ok(RgbImage {
        width,
        height,
        pixels: dst.into_vec(),
    })
}

impl EvalTransform {
    /// The transform of `img` as f32 (3, crop, crop), channel-major.
    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>> {
        if self.crop == 0 || self.crop > self.resize {
            return Err(DataError::Transform {
                reason: format!("crop {} must be in 1..=resize ({})", self.crop, self.resize),
            });
        }
        if img.width == 0 || img.height == 0 {
            return Err(DataError::Transform {
                reason: "an empty image".to_string(),
            });
        }
        let (w, h) = resized_size(img.width, img.height, self.resize);
        let resized = resize_bilinear(img, w, h)?;
        let (top, left) = (crop_offset(h, self.crop), crop_offset(w, self.crop));
        let c = self.crop as usize;
        let mut out = vec![0f32; 3 * c * c];
        for y in 0..c {
            let row = (top as usize + y) * w as usize;
            for x in 0..c {
                let px = (row + left as usize + x) * 3;
                for ch in 0..3 {
                    let v = f32::from(resized.pixels[px + ch]) / 255.0;
                    out[ch * c * c + y * c + x] = (v - self.mean[ch]) / self.std[ch];
                }
            }
        }
        Ok(out)
    }
}
