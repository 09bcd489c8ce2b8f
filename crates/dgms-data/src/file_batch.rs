//! Batches of a [`FileSplit`]: each image decoded, cropped, flipped and
//! normalised on the rayon pool; files that fail are left out.

use candle_core::Tensor;
use rand::Rng;
use rayon::prelude::*;

use crate::error::Result;
use crate::file_split::FileSplit;
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
        let loaded: Vec<Option<(Vec<f32>, u32)>> = indices
            .par_iter()
            .map(|&i| {
                let mut rng = rng_for(seed, epoch, STREAM_AUGMENT, i as u64);
                let mut mirror = false;
                let (hwc, label) = files.load(i, |img| match mode {
                    Mode::Train => {
                        let crop = transform.train(img, &mut rng)?;
                        mirror = flip && rng.random_bool(0.5);
                        Ok(crop)
                    }
                    Mode::Eval => transform.eval(img),
                })?;
                let mut chw = vec![0f32; 3 * plane];
                for (p, px) in hwc.chunks_exact(3).enumerate() {
                    let (y, x) = (p / side, p % side);
                    let x = if mirror { side - 1 - x } else { x };
                    for (c, (&v, table)) in px.iter().zip(tables).enumerate() {
                        chw[c * plane + y * side + x] = table[usize::from(v)];
                    }
                }
                Some((chw, label))
            })
            .collect();
        let mut images = Vec::with_capacity(indices.len() * 3 * plane);
        let (mut labels, mut kept) = (Vec::new(), Vec::new());
        for (&i, item) in indices.iter().zip(loaded) {
            if let Some((chw, label)) = item {
                images.extend_from_slice(&chw);
                labels.push(label);
                kept.push(i);
            }
        }
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
