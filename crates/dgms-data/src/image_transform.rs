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
    resize_box_into(resizer, src, None, (width, height), out)
}

/// Resizes `source_box` (left, top, width, height in source pixels; the
/// whole image if `None`) of the packed image `src` to `width` x `height`
/// into the first `3 * width * height` bytes of `out`, as [`resize_into`].
/// The filter reads source pixels around the box too, as a whole-image
/// resize does.
fn resize_box_into(
    resizer: &mut Resizer,
    src: RgbView<'_>,
    source_box: Option<(f64, f64, f64, f64)>,
    (width, height): (u32, u32),
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
    let mut options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    if let Some((left, top, w, h)) = source_box {
        options = options.crop(left, top, w, h);
    }
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(e.to_string()))
}

/// torchvision's `Resize` to `size` then the `crop` x `crop` window at
/// `corner` (top, left), with `out` as the destination.
///
/// When both sides shrink (the ImageNet case) only the window is resized:
/// the source box handed to the resizer maps onto it and the filter still
/// reads the pixels around the box, as in the whole-image resize. That is
/// 1.2-1.8x faster on photo sizes, and the bytes are the whole resize's
/// window except that fast_image_resize picks its fixed-point precision
/// from the largest weight among the pixels it computes, so about one
/// image size in ten has a few bytes in a thousand one level apart
/// (`window_resize_is_the_whole_resize_window_within_one_level`). An
/// enlarged side (up to two levels apart) takes the whole resize.
pub(crate) fn resized_window<'o>(
    resizer: &mut Resizer,
    src: RgbView<'_>,
    size: (u32, u32),
    corner: (u32, u32),
    crop: u32,
    out: &'o mut Vec<u8>,
) -> Result<RgbView<'o>> {
    let (width, height) = size;
    let (top, left) = corner;
    if top + crop > height || left + crop > width {
        return Err(DataError::Transform {
            reason: format!(
                "a {crop} x {crop} window at ({top}, {left}) is outside {width} x {height}"
            ),
        });
    }
    if width <= src.width && height <= src.height {
        resize_window_into(resizer, src, size, corner, crop, out)?;
        Ok(RgbView {
            pixels: out,
            width: crop,
            height: crop,
            stride: 3 * crop as usize,
        })
    } else {
        resize_into(resizer, src, width, height, out)?;
        let whole = RgbView {
            pixels: out,
            width,
            height,
            stride: 3 * width as usize,
        };
        Ok(whole.window(top, left, crop, crop))
    }
}

/// The window of [`resized_window`] resized alone, packed into the first
/// `3 * crop * crop` bytes of `out`.
fn resize_window_into(
    resizer: &mut Resizer,
    src: RgbView<'_>,
    (width, height): (u32, u32),
    (top, left): (u32, u32),
    crop: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    // Output pixel x of the whole resize samples the source around
    // (x + 0.5) * scale; the window's pixels are x = left.., so the box
    // starts at left * scale and spans crop * scale at the same scale.
    let scale_x = f64::from(src.width) / f64::from(width);
    let scale_y = f64::from(src.height) / f64::from(height);
    // Rounding may put the far edge a hair past the image: clamp it.
    let (box_left, box_top) = (f64::from(left) * scale_x, f64::from(top) * scale_y);
    let box_width = (f64::from(crop) * scale_x).min(f64::from(src.width) - box_left);
    let box_height = (f64::from(crop) * scale_y).min(f64::from(src.height) - box_top);
    let source_box = (box_left, box_top, box_width, box_height);
    resize_box_into(resizer, src, Some(source_box), (crop, crop), out)
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
        let corner = (crop_offset(h, self.crop), crop_offset(w, self.crop));
        let mut pixels = Vec::new();
        let window = resized_window(
            &mut Resizer::new(),
            img.as_view(),
            (w, h),
            corner,
            self.crop,
            &mut pixels,
        )?;
        let c = self.crop as usize;
        let mut out = vec![0f32; 3 * c * c];
        for y in 0..c {
            let row = window.row(y);
            for x in 0..c {
                for ch in 0..3 {
                    let v = f32::from(row[3 * x + ch]) / 255.0;
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
    use proptest::prelude::*;

    fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let pixels = (0..3 * width as usize * height as usize)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    /// Checks `resized_window` against the whole resize's window at the
    /// centre, the corners and one more place; returns how many bytes
    /// differ (by at most one level).
    fn check_window(img: &RgbImage, resize: u32, crop: u32, random_corner: (u32, u32)) -> usize {
        let (w, h) = resized_size(img.width, img.height, resize);
        let whole = resize_bilinear(img, w, h).unwrap();
        let corners = [
            (crop_offset(h, crop), crop_offset(w, crop)),
            (0, 0),
            (h - crop, w - crop),
            (
                random_corner.0 % (h - crop + 1),
                random_corner.1 % (w - crop + 1),
            ),
        ];
        let mut differ = 0;
        for (top, left) in corners {
            let mut expected = Vec::new();
            whole
                .as_view()
                .window(top, left, crop, crop)
                .extend_packed(&mut expected);
            let mut out = Vec::new();
            let mut got = Vec::new();
            resized_window(
                &mut Resizer::new(),
                img.as_view(),
                (w, h),
                (top, left),
                crop,
                &mut out,
            )
            .unwrap()
            .extend_packed(&mut got);
            assert_eq!(got.len(), expected.len());
            for (a, b) in expected.iter().zip(&got) {
                assert!(
                    a.abs_diff(*b) <= 1,
                    "{}x{} -> {w}x{h}, window {crop} at ({top}, {left}): {a} against {b}",
                    img.width,
                    img.height
                );
                differ += usize::from(a != b);
            }
        }
        differ
    }

    #[test]
    fn window_resize_is_exact_on_whole_scales_and_close_on_photo_shapes() {
        // Scale 1 and 2: every weight is a power of two, the same in both.
        for (w, h) in [(256, 256), (512, 512), (512, 256), (300, 256)] {
            assert_eq!(
                check_window(&noise(w, h, 1), 256, 224, (37, 91)),
                0,
                "{w}x{h}"
            );
        }
        let (mut differ, mut total) = (0, 0);
        for (i, (w, h)) in [
            (500, 375),
            (375, 500),
            (640, 480),
            (451, 300),
            (1024, 683),
            (4000, 3000),
            (200, 150),
        ]
        .into_iter()
        .enumerate()
        {
            differ += check_window(&noise(w, h, i as u64), 256, 224, (37, 91));
            total += 4 * 3 * 224 * 224;
        }
        assert!(differ * 100 < total, "{differ} of {total} bytes differ");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn window_resize_is_the_whole_resize_window_within_one_level(
            w in 1u32..700,
            h in 1u32..700,
            resize in 1u32..300,
            crop_frac in 0.05f64..=1.0,
            corner in (0u32..1000, 0u32..1000),
            seed in 0u64..1000,
        ) {
            let crop = ((f64::from(resize) * crop_frac) as u32).clamp(1, resize);
            let img = noise(w, h, seed);
            let differ = check_window(&img, resize, crop, corner);
            let total = 4 * 3 * (crop as usize).pow(2);
            prop_assert!(differ * 20 <= total, "{differ} of {total} bytes differ");
        }
    }

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
