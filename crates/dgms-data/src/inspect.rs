//! What a model would see, written out for a person to check a pipeline:
//! a batch as safetensors (`images` N x C x H x W f32 after normalisation,
//! `labels` N u32) and a contact sheet PNG of the same images, mapped back
//! to pixels (`x * std + mean`).

use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{DataError, Result};
use crate::loader::Batch;
use crate::normalize::Normalize;

/// Gap between tiles of a contact sheet, in pixels (dark grey).
const GUTTER: usize = 2;
const GUTTER_GREY: u8 = 40;

fn write_error(what: &str) -> impl FnOnce(dgms_io::IoError) -> DataError + '_ {
    move |e| DataError::Write {
        what: what.to_string(),
        source: Box::new(e),
    }
}

fn tensor_error(e: candle_core::Error) -> DataError {
    DataError::Transform {
        reason: format!("batch tensor: {e}"),
    }
}

/// Writes `batch` to `path` (atomically) as safetensors: `images` f32
/// (N, C, H, W) as the model sees them and `labels` u32 (N), with the
/// dataset indices of the images in the metadata (`indices`, comma
/// separated).
pub fn write_batch(batch: &Batch, path: &Path) -> Result<()> {
    let indices = batch
        .indices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let images = batch.images.to_dtype(DType::F32).map_err(tensor_error)?;
    let labels = batch.labels.to_dtype(DType::U32).map_err(tensor_error)?;
    let tensors = [("images", &images), ("labels", &labels)];
    let meta = std::collections::HashMap::from([("indices".to_string(), indices)]);
    let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| DataError::Transform {
        reason: format!("encoding safetensors: {e}"),
    })?;
    dgms_io::write_atomic(path, &bytes).map_err(write_error("batch file"))
}

/// The images of `batch` (normalised with `normalize`) as one PNG: tiles
/// in rows of `ceil(sqrt(N))`, 2-pixel gutters, greyscale for 1-channel
/// images and RGB for 3.
pub fn contact_sheet(batch: &Batch, normalize: &Normalize) -> Result<Vec<u8>> {
    let (n, c, h, w) = batch.images.dims4().map_err(tensor_error)?;
    if c != 1 && c != 3 {
        return Err(DataError::Transform {
            reason: format!("a contact sheet needs 1 or 3 channels, the batch has {c}"),
        });
    }
    let values: Vec<f32> = batch
        .images
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(tensor_error)?;
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let (sheet_w, sheet_h) = (cols * (w + GUTTER) + GUTTER, rows * (h + GUTTER) + GUTTER);
    let mut sheet = vec![GUTTER_GREY; sheet_w * sheet_h * c];
    let plane = h * w;
    for (k, image) in values.chunks_exact(c * plane).enumerate() {
        let (ty, tx) = (k / cols, k % cols);
        let (oy, ox) = (GUTTER + ty * (h + GUTTER), GUTTER + tx * (w + GUTTER));
        for ch in 0..c {
            let (mean, std) = (normalize.mean[ch], normalize.std[ch]);
            for y in 0..h {
                for x in 0..w {
                    let v = image[ch * plane + y * w + x] * std + mean;
                    let px = ((oy + y) * sheet_w + ox + x) * c + ch;
                    sheet[px] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let color = if c == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &sheet,
        sheet_w as u32,
        sheet_h as u32,
        color,
    )
    .map_err(|e| DataError::Transform {
        reason: format!("encoding the contact sheet: {e}"),
    })?;
    Ok(png)
}

/// [`contact_sheet`] written to `path` atomically.
pub fn write_contact_sheet(batch: &Batch, normalize: &Normalize, path: &Path) -> Result<()> {
    let png = contact_sheet(batch, normalize)?;
    dgms_io::write_atomic(path, &png).map_err(write_error("contact sheet"))
}

/// Rebuilds the tensors of a file written by [`write_batch`] (for tests and
/// tools): (images, labels).
pub fn read_batch(path: &Path) -> Result<(Tensor, Tensor)> {
    let bad = |reason: String| DataError::InvalidDataset {
        name: path.display().to_string(),
        reason,
    };
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .map_err(|e| bad(e.to_string()))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .cloned()
            .ok_or_else(|| bad(format!("no tensor `{name}`")))
    };
    Ok((get("images")?, get("labels")?))
}
