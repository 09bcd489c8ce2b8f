//! torchvision's ImageNet evaluation transform on a decoded image, step for
//! step as it runs on a PIL image: `Resize(resize)` (the shorter side to
//! `resize`, PIL's bilinear filter with antialiasing, i.e. a triangle
//! filter widened by the scale factor when shrinking: `fast_image_resize`'s
//! bilinear convolution implements the same), `CenterCrop(crop)`,
//! `ToTensor()` (/255) and `Normalize(mean, std)`, giving f32 (3, crop,
//! crop).

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{DataError, Result};
use crate::image_decode::{RgbImage, KEEP_BYTES};

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
    let mut pixels = Vec::new();
    resize_into(
        &mut Resizer::new(),
        img.as_view(),
        width,
        height,
        &mut pixels,
    )?;
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// Borrowed 8-bit RGB pixels: `width` x `height`, each row `stride` bytes
/// after the last (a window of a larger image, or a whole one).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RgbView<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub stride: usize,
}

impl<'a> RgbView<'a> {
    /// The `w` x `h` window at (`top`, `left`); the caller keeps it inside.
    pub fn window(&self, top: u32, left: u32, h: u32, w: u32) -> RgbView<'a> {
        let start = top as usize * self.stride + left as usize * 3;
        RgbView {
            pixels: &self.pixels[start..],
            width: w,
            height: h,
            stride: self.stride,
        }
    }

    /// Row `y` (`3 * width` bytes).
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.pixels[start..start + 3 * self.width as usize]
    }

    /// The pixels packed (rows adjacent), appended to `out`.
    pub fn extend_packed(&self, out: &mut Vec<u8>) {
        for y in 0..self.height as usize {
            out.extend_from_slice(self.row(y));
        }
    }
}

impl RgbImage {
    pub(crate) fn as_view(&self) -> RgbView<'_> {
        RgbView {
            pixels: &self.pixels,
            width: self.width,
            height: self.height,
            stride: 3 * self.width as usize,
        }
    }
}

/// Resizes the packed image `src` to `width` x `height` into the first
/// `3 * width * height` bytes of `out` (grown if short, never shrunk: every
/// byte of that span is written), with `resizer`'s scratch buffers.
pub(crate) fn resize_into(
    resizer: &mut Resizer,
    src: RgbView<'_>,
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let fail = |e: String| DataError::Transform { reason: e };
    let len = 3 * src.width as usize * src.height as usize;
    if src.stride != 3 * src.width as usize || src.pixels.len() < len {
        return Err(fail("resize_into needs a packed image".to_string()));
    }
    // Borrowed: the source pixels are not copied.
    let src = ImageRef::new(src.width, src.height, &src.pixels[..len], PixelType::U8x3)
        .map_err(|e| fail(e.to_string()))?;
    let out_len = 3 * width as usize * height as usize;
    if out.len() < out_len {
        out.resize(out_len, 0);
    }
    let mut dst = Image::from_slice_u8(width, height, &mut out[..out_len], PixelType::U8x3)
        .map_err(|e| fail(e.to_string()))?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(e.to_string()))
}

/// What a thread reuses from one resize to the next: the resizer (its
/// intermediate buffer), a region copy, the resized pixels.
pub(crate) struct ResizeBuffers {
    pub resizer: Resizer,
    pub region: Vec<u8>,
    pub out: Vec<u8>,
}

thread_local! {
    static RESIZE_BUFFERS: RefCell<Option<ResizeBuffers>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's reused resize buffers (fresh ones if they
/// are in use further up this thread's stack); large buffers are freed
/// afterwards, so memory stays bounded by the typical image.
pub(crate) fn with_resize_buffers<T>(f: impl FnOnce(&mut ResizeBuffers) -> T) -> T {
    let fresh = || ResizeBuffers {
        resizer: Resizer::new(),
        region: Vec::new(),
        out: Vec::new(),
    };
    RESIZE_BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let buffers = slot.get_or_insert_with(fresh);
            let out = f(buffers);
            if buffers.resizer.size_of_internal_buffers() > KEEP_BYTES {
                buffers.resizer.reset_internal_buffers();
            }
            for buffer in [&mut buffers.region, &mut buffers.out] {
                if buffer.capacity() > KEEP_BYTES {
                    *buffer = Vec::new();
                }
            }
            out
        }
        Err(_) => f(&mut fresh()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_resize_buffers_are_kept_unless_large() {
        // Each test runs on its own thread: these are its buffers alone.
        with_resize_buffers(|b| b.out = vec![1; 1000]);
        with_resize_buffers(|b| assert!(b.out.capacity() >= 1000));
        with_resize_buffers(|b| b.region = vec![0; KEEP_BYTES + 1]);
        with_resize_buffers(|b| assert_eq!(b.region.capacity(), 0));
        // Re-entered: fresh buffers, the outer ones untouched.
        with_resize_buffers(|outer| {
            outer.out[0] = 7;
            with_resize_buffers(|inner| assert!(inner.out.is_empty()));
            assert_eq!(outer.out[0], 7);
        });
    }
}
