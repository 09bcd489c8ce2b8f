//! Decoding an image file to 8-bit RGB, as PIL's `Image.open(f).convert('RGB')`
//! does for the data pipelines of torchvision: the format is taken from the
//! content (a PNG named `.JPEG` is a PNG), greyscale is replicated to three
//! channels, CMYK JPEGs are converted by the decoder, alpha is dropped.
//!
//! A file that is not an image, is corrupt, or ends before its image data
//! does (a truncated JPEG: no end-of-image marker) is an
//! [`DataError::Undecodable`] naming the file: the caller skips it with a
//! warning. Decoding is bounded: images above [`MAX_SIDE`] pixels a side or
//! [`MAX_DECODE_BYTES`] of buffers are refused before they are allocated.
//!
//! The loader decodes through [`with_decoded`], which keeps each thread's
//! file bytes and pixel buffer from one image to the next (fresh buffers
//! for every image cost more in page clearing than the resize does).
//! Colour JPEGs go straight to `zune-jpeg`, the decoder `image` itself
//! calls, with the same options; every other file, and any JPEG that
//! path refuses, takes [`decode_rgb_bytes`], so results and error
//! messages are the same either way.

use std::cell::RefCell;
use std::io::{Cursor, Read};
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::error::{DataError, Result};

/// Largest accepted image side, in pixels.
pub const MAX_SIDE: u32 = 32_768;
/// Most memory the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Decodes the file at `path` to RGB (see the module docs).
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        what: "an image".to_string(),
        source,
    })?;
    decode_rgb_bytes(&bytes).map_err(|reason| DataError::Undecodable {
        path: path.to_path_buf(),
        reason,
    })
}

/// Decodes image bytes to RGB; the error says why not.
pub fn decode_rgb_bytes(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let format = reader
        .format()
        .ok_or_else(|| "not a known image format".to_string())?;
    if format == ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        // The Rust decoder fills a cut-off scan with grey; PIL refuses
        // such a file ("image file is truncated"), and so do we.
        return Err("truncated JPEG (no end-of-image marker)".to_string());
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let rgb = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// A thread's reused buffers above this size are freed after the image, so
/// one huge file does not pin its memory for the rest of the run (a 2048 x
/// 1536 photo's pixels, 9 MiB, are kept).
pub(crate) const KEEP_BYTES: usize = 16 << 20;

/// The file bytes and decoded pixels a thread reuses.
#[derive(Default)]
struct DecodeBuffers {
    file: Vec<u8>,
    pixels: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<DecodeBuffers> = RefCell::default();
}

/// Decodes the file at `path` as [`decode_rgb`] does and hands the image to
/// `f`, in this thread's reused buffers.
pub(crate) fn with_decoded<T>(path: &Path, f: impl FnOnce(&RgbImage) -> Result<T>) -> Result<T> {
    BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => buffers.decode_then(path, f),
        // Re-entered on this thread (not done today): fresh buffers.
        Err(_) => DecodeBuffers::default().decode_then(path, f),
    })
}

impl DecodeBuffers {
    fn decode_then<T>(&mut self, path: &Path, f: impl FnOnce(&RgbImage) -> Result<T>) -> Result<T> {
        self.file.clear();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut self.file))
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                what: "an image".to_string(),
                source,
            })?;
        let img = match decode_colour_jpeg(&self.file, std::mem::take(&mut self.pixels)) {
            Ok(img) => img,
            Err(pixels) => {
                self.pixels = pixels;
                decode_rgb_bytes(&self.file).map_err(|reason| DataError::Undecodable {
                    path: path.to_path_buf(),
                    reason,
                })?
            }
        };
        let out = f(&img);
        self.pixels = img.pixels;
        for buffer in [&mut self.file, &mut self.pixels] {
            if buffer.capacity() > KEEP_BYTES {
                *buffer = Vec::new();
            }
        }
        out
    }
}

/// A colour JPEG (not greyscale, not with alpha) decoded into `pixels`
/// exactly as [`decode_rgb_bytes`] would (the decoder and options `image`
/// uses, a zeroed buffer); `Err` gives the buffer back for anything else,
/// including every failure, which the caller then decodes the slow way.
fn decode_colour_jpeg(bytes: &[u8], mut pixels: Vec<u8>) -> std::result::Result<RgbImage, Vec<u8>> {
    if image::guess_format(bytes).ok() != Some(ImageFormat::Jpeg) || !has_jpeg_end(bytes) {
        return Err(pixels);
    }
    let options = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    if decoder.decode_headers().is_err() {
        return Err(pixels);
    }
    let (Some((w, h)), Some(colour), Some(len)) = (
        decoder.dimensions(),
        decoder.input_colorspace(),
        decoder.output_buffer_size(),
    ) else {
        return Err(pixels);
    };
    // `image` keeps these colour spaces and converts afterwards.
    let kept = matches!(
        colour,
        ColorSpace::Luma | ColorSpace::LumaA | ColorSpace::RGBA
    );
    let fits = (1..=MAX_SIDE as usize).contains(&w)
        && (1..=MAX_SIDE as usize).contains(&h)
        && len == w * h * 3
        && len as u64 <= MAX_DECODE_BYTES;
    if kept || !fits {
        return Err(pixels);
    }
    // Zeroed as `image`'s fresh buffer is: nothing of the last image shows
    // through wherever the decoder leaves bytes unwritten.
    pixels.clear();
    pixels.resize(len, 0);
    if decoder.decode_into(&mut pixels).is_err() {
        return Err(pixels);
    }
    Ok(RgbImage {
        width: w as u32,
        height: h as u32,
        pixels,
    })
}

/// Whether a JPEG stream ends its last scan: an end-of-image marker (FF D9)
/// after the last start-of-scan marker (FF DA). Inside entropy-coded data
/// every FF byte is stuffed (FF 00), so neither pair can occur there; an
/// embedded thumbnail's markers come before the main image's scan.
///
/// Searched from the end for the last of the two markers (normally the
/// end-of-image marker in the last two bytes), then from the start for a
/// scan before it: two short scans rather than two passes over the file.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let last = bytes
        .windows(2)
        .rposition(|w| w[0] == 0xFF && (w[1] == 0xD9 || w[1] == 0xDA));
    match last {
        Some(at) if bytes[at + 1] == 0xD9 => bytes[..at].windows(2).any(|w| w == [0xFF, 0xDA]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: the last scan marker, then an end marker after it.
    fn has_jpeg_end_by_definition(bytes: &[u8]) -> bool {
        let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
        match last_scan {
            Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
            None => false,
        }
    }

    #[test]
    fn end_marker_cases() {
        for (bytes, want) in [
            (&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2, 0xFF, 0xD9][..], true),
            (&[0xFF, 0xD8, 0xFF, 0xDA, 1, 2][..], false),
            (&[0xFF, 0xD9, 0xFF, 0xDA, 1, 2][..], false),
            (&[0xFF, 0xDA, 0xFF, 0xD9, 0xFF, 0xDA, 3][..], false),
            (&[0xFF, 0xDA, 0xFF, 0xD9, 0xFF, 0xDA, 0xFF, 0xD9][..], true),
            (&[0xFF, 0xFF, 0xDA, 0xFF, 0xFF, 0xD9][..], true),
            (&[0xFF, 0xD9][..], false),
            (&[0xFF][..], false),
            (&[][..], false),
        ] {
            assert_eq!(has_jpeg_end(bytes), want, "{bytes:?}");
            assert_eq!(has_jpeg_end_by_definition(bytes), want, "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn end_marker_search_matches_the_definition(
            bytes in proptest::collection::vec(
                prop_oneof![Just(0xFFu8), Just(0xD9u8), Just(0xDAu8), any::<u8>()],
                0..40,
            )
        ) {
            prop_assert_eq!(has_jpeg_end(&bytes), has_jpeg_end_by_definition(&bytes));
        }
    }
}
