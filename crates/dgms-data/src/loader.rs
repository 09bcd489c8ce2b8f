//! Batching: seeded per-epoch shuffling, augmentation and normalisation in
//! parallel, candle tensors out.
//!
//! Every random choice comes from a ChaCha8 generator keyed by
//! `(seed, epoch, stream, index)` — the epoch's order from `(seed, epoch)`,
//! each image's crop and flip from `(seed, epoch, image index)` — so a batch
//! depends only on the seed, the epoch and its position, not on the thread
//! count, the order threads run in, or the batches built before it. Resuming
//! at epoch `e`, batch `b` reproduces exactly the batches of an uninterrupted
//! run.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::Augment;
use crate::dataset::{Dataset, DatasetKind};
use crate::error::{DataError, Result};
use crate::normalize::Normalize;
use crate::split::Split;

/// Generator streams: distinct keys for distinct uses of the same
/// (seed, epoch), so that shuffling and augmentation never share numbers.
const STREAM_SHUFFLE: u64 = 1;
pub(crate) const STREAM_AUGMENT: u64 = 2;

/// The generator for one use: the 32-byte ChaCha key is the four numbers.
pub(crate) fn rng_for(seed: u64, epoch: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, v) in key.chunks_exact_mut(8).zip([seed, epoch, stream, index]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Training (augmentation on) or evaluation (augmentation off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Options of a [`Loader`].
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Images per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: usize,
    /// Seed of the shuffling and augmentation.
    pub seed: u64,
    /// Shuffle the order every epoch; otherwise dataset order.
    pub shuffle: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// In `Eval` mode `augment` is ignored.
    pub mode: Mode,
    pub augment: Augment,
    pub normalize: Normalize,
    /// Where the batch tensors are created.
    pub device: Device,
}

impl LoaderConfig {
    /// Training defaults for a dataset family: shuffled, the family's
    /// augmentation ([`Augment::for_kind`]) and normalisation
    /// ([`Normalize::for_kind`]), last partial batch kept, CPU.
    pub fn train(kind: DatasetKind, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            seed,
            shuffle: true,
            drop_last: false,
            mode: Mode::Train,
            augment: Augment::for_kind(kind),
            normalize: Normalize::for_kind(kind),
            device: Device::Cpu,
        }
    }

    /// Defaults for a split of either kind ([`Split::default_augment`],
    /// [`Split::default_normalize`]): in `Train` mode shuffled, otherwise
    /// in order; the last partial batch kept; CPU.
    pub fn for_split(split: &Split, mode: Mode, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            seed,
            shuffle: mode == Mode::Train,
            drop_last: false,
            mode,
            augment: match mode {
                Mode::Train => split.default_augment(),
                Mode::Eval => Augment::none(),
            },
            normalize: split.default_normalize(),
            device: Device::Cpu,
        }
    }

    /// Evaluation defaults: dataset order, no augmentation, every image
    /// (partial last batch kept), the family's normalisation, CPU.
    pub fn eval(kind: DatasetKind, batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            seed: 0,
            shuffle: false,
            drop_last: false,
            mode: Mode::Eval,
            augment: Augment::none(),
            normalize: Normalize::for_kind(kind),
            device: Device::Cpu,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }
    /// Overrides the family's default flip (e.g. `false` for Fashion-MNIST).
    pub fn with_flip(mut self, flip: bool) -> Self {
        self.augment.flip = flip;
        self
    }
    /// Overrides the family's default crop padding (0 = no crop).
    pub fn with_pad(mut self, pad: usize) -> Self {
        self.augment.pad = pad;
        self
    }
    pub fn with_normalize(mut self, normalize: Normalize) -> Self {
        self.normalize = normalize;
        self
    }
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
}

/// One batch: images f32 `(B, C, H, W)` normalised, labels u32 `(B)`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    /// Dataset index of each image, in batch order.
    pub indices: Vec<usize>,
    pub epoch: u64,
    /// Position of the batch in its epoch.
    pub index: usize,
}

/// Batches over a split.
#[derive(Debug, Clone)]
pub struct Loader {
    pub(crate) split: Split,
    pub(crate) config: LoaderConfig,
    /// Per-channel byte -> normalised value lookup tables.
    pub(crate) tables: Vec<[f32; 256]>,
}

impl Loader {
    /// Checks the split and the options against each other.
    pub fn new(split: impl Into<Split>, config: LoaderConfig) -> Result<Self> {
        let split = split.into();
        if let Split::Memory(d) = &split {
            d.validate()?;
        }
        let bad = |reason: String| DataError::InvalidConfig {
            dataset: split.name().to_string(),
            reason,
        };
        if config.batch_size == 0 {
            return Err(bad("batch size 0, expected at least 1".to_string()));
        }
        config.normalize.check(split.shape().0).map_err(bad)?;
        let tables = config.normalize.tables();
        Ok(Loader {
            split,
            config,
            tables,
        })
    }

    pub fn split(&self) -> &Split {
        &self.split
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Switches between training and evaluation (augmentation on or off).
    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.split.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Images seen in one epoch (all of them unless `drop_last` drops some).
    pub fn samples_per_epoch(&self) -> usize {
        if self.config.drop_last {
            self.batches_per_epoch() * self.config.batch_size
        } else {
            self.split.len()
        }
    }

    /// The order of the dataset's images in `epoch`: a permutation drawn from
    /// `(seed, epoch)` when shuffling, `0..n` otherwise.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.split.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut rng_for(self.config.seed, epoch, STREAM_SHUFFLE, 0));
        }
        order
    }

    /// Batch `index` of `epoch` (recomputes the epoch's order: to go through
    /// an epoch use [`Self::epoch`] or [`Self::epoch_from`]).
    pub fn batch(&self, epoch: u64, index: usize) -> Result<Batch> {
        let order = self.order(epoch);
        let range = self.batch_range(index)?;
        self.batch_of(epoch, index, &order[range])
    }

    /// The batches of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> BatchIter<'_> {
        BatchIter {
            loader: self,
            epoch,
            order: self.order(epoch),
            next: 0,
            end: self.batches_per_epoch(),
        }
    }

    /// The batches of `epoch` from batch `start` on, identical to the tail of
    /// [`Self::epoch`]: resumes a run interrupted mid-epoch. `start` may equal
    /// [`Self::batches_per_epoch`] (nothing left); beyond that is an error.
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Result<BatchIter<'_>> {
        let batches = self.batches_per_epoch();
        if start > batches {
            return Err(DataError::BatchOutOfRange {
                index: start,
                batches,
            });
        }
        let mut iter = self.epoch(epoch);
        iter.next = start;
        Ok(iter)
    }

    /// Positions in the epoch's order covered by batch `index`.
    fn batch_range(&self, index: usize) -> Result<std::ops::Range<usize>> {
        let batches = self.batches_per_epoch();
        if index >= batches {
            return Err(DataError::BatchOutOfRange { index, batches });
        }
        let b = self.config.batch_size;
        let start = index * b;
        Ok(start..(start + b).min(self.split.len()))
    }

    /// Builds a batch from explicit dataset indices, with the augmentation
    /// of `epoch` (in `Train` mode). Each image is processed on the rayon
    /// pool; its crop and flip come from `(seed, epoch, dataset index)`.
    pub fn batch_of(&self, epoch: u64, index: usize, indices: &[usize]) -> Result<Batch> {
        let n = self.split.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(DataError::InvalidDataset {
                name: self.split.name().to_string(),
                reason: format!("sample index {bad} requested, but n = {n}"),
            });
        }
        match &self.split {
            Split::Memory(ds) => self.memory_batch(ds, epoch, index, indices),
            Split::Files(files) => self.file_batch(files, epoch, index, indices),
        }
    }

    /// [`Self::batch_of`] for pixels in memory.
    fn memory_batch(
        &self,
        ds: &Dataset,
        epoch: u64,
        index: usize,
        indices: &[usize],
    ) -> Result<Batch> {
        let (c, h, w) = (ds.channels, ds.height, ds.width);
        let chw = ds.image_len();
        let augment = match self.config.mode {
            Mode::Train if !self.config.augment.is_identity() => Some(self.config.augment),
            _ => None,
        };
        let seed = self.config.seed;
        let tables = &self.tables;
        let mut images = vec![0f32; indices.len() * chw];
        // chw > 0: `validate` rejects zero-sized images.
        images
            .par_chunks_mut(chw)
            .zip(indices.par_iter())
            .for_each_init(
                || vec![0u8; chw],
                |scratch, (out, &i)| {
                    let src = ds.image(i).unwrap_or(&[]);
                    let pixels: &[u8] = match augment {
                        Some(a) => {
                            let mut rng = rng_for(seed, epoch, STREAM_AUGMENT, i as u64);
                            a.sample(&mut rng).apply(src, c, h, w, scratch);
                            scratch
                        }
                        None => src,
                    };
                    for ((o, p), table) in
                        out.chunks_mut(h * w).zip(pixels.chunks(h * w)).zip(tables)
                    {
                        for (o, &v) in o.iter_mut().zip(p) {
                            *o = table[usize::from(v)];
                        }
                    }
                },
            );
        let labels: Vec<u32> = indices
            .iter()
            .map(|&i| ds.labels.get(i).copied().map_or(0, u32::from))
            .collect();
        let b = indices.len();
        let device = &self.config.device;
        Ok(Batch {
            images: Tensor::from_vec(images, (b, c, h, w), device)?,
            labels: Tensor::from_vec(labels, b, device)?,
            indices: indices.to_vec(),
            epoch,
            index,
        })
    }
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when every file of the batch was undecodable (folder sources
    /// only): consumers skip it.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// The batches of one epoch, from a start position; see [`Loader::epoch`].
#[derive(Debug)]
pub struct BatchIter<'a> {
    loader: &'a Loader,
    epoch: u64,
    order: Vec<usize>,
    next: usize,
    end: usize,
}

impl BatchIter<'_> {
    /// Index of the batch the next call to `next` returns.
    pub fn position(&self) -> usize {
        self.next
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let batch = self.loader.batch_range(index).and_then(|range| {
            let indices = self.order.get(range).unwrap_or(&[]);
            self.loader.batch_of(self.epoch, index, indices)
        });
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}
