//! The shared canvas: an RGB buffer plotters draws into, the embedded
//! font, and the PNG written atomically.

use std::path::Path;
use std::sync::Once;

use image::{ImageBuffer, ImageFormat, Rgb};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{PlotError, Result};

/// Width and height of every picture, in pixels.
pub const SIZE: (u32, u32) = (960, 600);

/// The font family name the pictures use (registered from the embedded
/// file).
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded file is a valid font (checked by the tests); a
        // failure would only lose the text, never the picture.
        let _ = register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// Draws with `draw` on a white canvas and writes the PNG at `path`
/// atomically. `what` names the picture in errors.
pub fn render_png(
    path: &Path,
    what: &str,
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    register();
    let (w, h) = SIZE;
    let fail = |reason: String| PlotError::Render {
        what: what.to_string(),
        reason,
    };
    let mut buffer = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(w, h, buffer).ok_or_else(|| fail("buffer size".to_string()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    dgms_io::write_atomic(path, &png)?;
    Ok(())
}

/// Colours of successive series.
pub const PALETTE: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
