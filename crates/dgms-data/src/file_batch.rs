//! Batches of a [`FileSplit`]: each image decoded, cropped, flipped and
//! normalised on the rayon pool; files that fail are left out.

use candle_core::Tensor;
use rand::Rng;
use rayon::prelude::*;

use crate::error::Result;
use crate::file_split::FileSplit;
use crate::image_transform::RgbView;
use crate::loader::{rng_for, Batch, Loader, Mode, STREAM_AUGMENT};

impl Loader {
    /// [`Loader::batch_of`] for image files. A batch whose files all fail
    /// to decode is empty (0 images; see [`Batch::is_empty`]). In `Train` mode image `i`'s
    /// crop and then its flip are drawn from `(seed, epoch, i)`, so the
    /// batch does not depend on the thread count.
    pub(crate) fn file_batch(
        &self,
        files: &FileSplit,
        epoch: u64,
        index: usize,
        indices: &[usize],
    ) -> Result<Batch> {
        let transform = files.transform;
        let (seed, mode, flip) = (self.config.seed, self.config.mode, self.config.augment.flip);
        let side = transform.crop as usize;
        let plane = side * side;
        let tables = &self.tables;
        let image_len = 3 * plane;
        // One buffer for the batch, each image normalised straight into
        // its slot (no per-image buffer, no copy); slots of files that
        // failed are closed up afterwards.
        let mut images = vec![0f32; indices.len() * image_len];
        let loaded: Vec<Option<u32>> = images
            .par_chunks_mut(image_len)
            .zip(indices.par_iter())
            .map(|(slot, &i)| {
                let mut rng = rng_for(seed, epoch, STREAM_AUGMENT, i as u64);
                let mut mirror = false;
                // The crop is normalised straight from the resized image in
                // this thread's reused buffers into the batch slot.
                let ((), label) = files.load(i, |img| {
                    let plan = match mode {
                        Mode::Train => {
                            let plan = transform.train_plan(img, &mut rng)?;
                            mirror = flip && rng.random_bool(0.5);
                            plan
                        }
                        Mode::Eval => transform.eval_plan(img)?,
                    };
                    transform.crop_with(img, plan, |crop| {
                        normalise_into(crop, mirror, tables, &mut *slot);
                    })
                })?;
                Some(label)
            })
            .collect();
        let (mut labels, mut kept) = (Vec::new(), Vec::new());
        for (slot, (&i, item)) in indices.iter().zip(loaded).enumerate() {
            if let Some(label) = item {
                let to = kept.len();
                if to != slot {
                    images.copy_within(slot * image_len..(slot + 1) * image_len, to * image_len);
                }
                labels.push(label);
                kept.push(i);
            }
        }
        images.truncate(kept.len() * image_len);
        let b = kept.len();
        let device = &self.config.device;
        Ok(Batch {
            images: Tensor::from_vec(images, (b, 3, side, side), device)?,
            labels: Tensor::from_vec(labels, b, device)?,
            indices: kept,
            epoch,
            index,
        })
    }
}

/// Writes the square crop `crop` into `out` as normalised CHW planes
/// (`tables`: byte -> value per channel), mirrored left-right when
/// `mirror`. Row by row, each plane its own slice, so the loop has no
/// division and no bounds check per pixel.
fn normalise_into(crop: RgbView<'_>, mirror: bool, tables: &[[f32; 256]], out: &mut [f32]) {
    let side = crop.width as usize;
    let plane = side * side;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let [tr, tg, tb] = [&tables[0], &tables[1], &tables[2]];
    for y in 0..side {
        let row = crop.row(y);
        let span = y * side..(y + 1) * side;
        let (r, g, b) = (&mut r[span.clone()], &mut g[span.clone()], &mut b[span]);
        let pixels = row.chunks_exact(3);
        // Two loops rather than a choice per pixel.
        if mirror {
            for (((px, r), g), b) in pixels
                .zip(r.iter_mut().rev())
                .zip(g.iter_mut().rev())
                .zip(b.iter_mut().rev())
            {
                *r = tr[usize::from(px[0])];
                *g = tg[usize::from(px[1])];
                *b = tb[usize::from(px[2])];
            }
        } else {
            for (((px, r), g), b) in pixels.zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
                *r = tr[usize::from(px[0])];
                *g = tg[usize::from(px[1])];
                *b = tb[usize::from(px[2])];
            }
        }
    }
}
