//! Per-channel normalisation, `(pixel / 255 - mean[c]) / std[c]`.

use crate::dataset::{Dataset, DatasetKind};

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// The statistics of each dataset's full training set (population std over
    /// all pixels of all training images, per channel).
    ///
    /// - Fashion-MNIST: 0.2860 / 0.3530, recomputed here from the 60,000
    ///   images of Debian's `dataset-fashion-mnist` (0.28604, 0.35302). The
    ///   embedded 10,000-image subset gives 0.2879 / 0.3540; we keep the
    ///   full-set values so that a model trained on the subset and on the full
    ///   set sees the same input scale.
    /// - MNIST: 0.1307 / 0.3081, the well-known values (60,000 train images).
    /// - CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616)
    ///   over the 50,000 train images. (The often-quoted std (0.2023, 0.1994,
    ///   0.2010) is the mean of per-image stds, not the pixel std.)
    pub fn for_kind(kind: DatasetKind) -> Self {
        match kind {
            DatasetKind::FashionMnist => Normalize {
                mean: vec![0.2860],
                std: vec![0.3530],
            },
            DatasetKind::Mnist => Normalize {
                mean: vec![0.1307],
                std: vec![0.3081],
            },
            DatasetKind::Cifar10 => Normalize {
                mean: vec![0.4914, 0.4822, 0.4465],
                std: vec![0.2470, 0.2435, 0.2616],
            },
        }
    }

    /// No normalisation beyond scaling to [0, 1] (mean 0, std 1).
    pub fn unit(channels: usize) -> Self {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Computes the per-channel statistics of `dataset` (in f64, from a
    /// histogram of byte values, so exact up to rounding).
    pub fn compute(dataset: &Dataset) -> Self {
        let plane = dataset.height.saturating_mul(dataset.width);
        let mut hist = vec![[0u64; 256]; dataset.channels];
        // Guards a hand-built dataset with a zero dimension.
        if plane > 0 && dataset.channels > 0 {
            for (k, chunk) in dataset.images.chunks(plane).enumerate() {
                let h = &mut hist[k % dataset.channels];
                for &p in chunk {
                    h[usize::from(p)] += 1;
                }
            }
        }
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for h in &hist {
            let count: u64 = h.iter().sum();
            let count = count.max(1) as f64;
            let (mut s, mut s2) = (0.0f64, 0.0f64);
            for (v, &c) in h.iter().enumerate() {
                let x = v as f64 / 255.0;
                s += x * c as f64;
                s2 += x * x * c as f64;
            }
            let m = s / count;
            mean.push(m as f32);
            std.push((s2 / count - m * m).max(0.0).sqrt() as f32);
        }
        Normalize { mean, std }
    }

    /// Number of channels described.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Checks the statistics against a channel count: one mean and one std
    /// per channel, every std finite and > 0. Returns the reason on failure.
    pub(crate) fn check(&self, channels: usize) -> std::result::Result<(), String> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(format!(
                "normalisation has {} means and {} stds, expected {channels} (one per channel)",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(format!(
                "normalisation std {s}, expected a finite value > 0"
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("normalisation mean {m}, expected a finite value"));
        }
        Ok(())
    }

    /// A 256-entry table per channel: `table[c][v]` is the normalised value of
    /// byte `v` in channel `c`, so that normalising is one lookup per pixel.
    pub(crate) fn tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| {
                let mut t = [0f32; 256];
                for (v, out) in t.iter_mut().enumerate() {
                    *out = Self::value(v as u8, m, s);
                }
                t
            })
            .collect()
    }

    /// The normalised value of byte `v` under (mean, std): the formula the
    /// tables hold, public so that tests can compute expected batches.
    pub fn value(v: u8, mean: f32, std: f32) -> f32 {
        (f32::from(v) / 255.0 - mean) / std
    }

    /// Normalises one CHW image of `u8` into `out` (same length), channel `c`
    /// being the c-th of `channels()` equal planes.
    pub fn apply(&self, image: &[u8], out: &mut [f32]) {
        let plane = image.len() / self.channels().max(1);
        if plane == 0 {
            return;
        }
        let tables = self.tables();
        for ((o, i), table) in out.chunks_mut(plane).zip(image.chunks(plane)).zip(&tables) {
            for (o, &p) in o.iter_mut().zip(i) {
                *o = table[usize::from(p)];
            }
        }
    }
}
