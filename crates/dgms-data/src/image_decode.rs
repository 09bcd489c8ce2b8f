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

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};

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

/// Whether a JPEG stream ends its last scan: an end-of-image marker (FF D9)
/// after the last start-of-scan marker (FF DA). Inside entropy-coded data
/// every FF byte is stuffed (FF 00), so neither pair can occur there; an
/// embedded thumbnail's markers come before the main image's scan.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}
