//! # dgms-data
//!
//! Datasets for `dgms`: readers for the idx format (MNIST, Fashion-MNIST,
//! `.gz` or raw) and CIFAR-10 binary batches, the embedded default dataset (a
//! balanced 10,000-image Fashion-MNIST training subset and the full
//! 10,000-image test set, kept in the repository under
//! `fixtures/fashion-mnist-subset`), class-per-folder image sets
//! (ImageNet's layout) decoded per batch, and a [`Loader`] that shuffles,
//! augments, normalises and batches into candle tensors.
//!
//! ```
//! use dgms_data::{DataSource, ImageTransform, Loader, LoaderConfig, Mode};
//!
//! // `embedded`, `fashion-mnist[:DIR]`, `mnist:DIR`, `cifar10:DIR`,
//! // `imagenet:DIR` or `folder:TRAIN_DIR,VAL_DIR`.
//! let source: DataSource = "embedded".parse()?;
//! // In-memory sets are read whole (the transform is for image folders,
//! // which are only listed here and decoded per batch).
//! let splits = source.open(ImageTransform::default())?;
//! assert_eq!((splits.train.len(), splits.test.len()), (10_000, 10_000));
//!
//! // Training batches: seeded shuffle, random crop (pad 2) and flip,
//! // normalised with the Fashion-MNIST mean and std.
//! let config = LoaderConfig::for_split(&splits.train, Mode::Train, 64, 42);
//! let loader = Loader::new(splits.train.clone(), config)?;
//! assert_eq!(loader.batches_per_epoch(), 157);
//! let batch = loader.epoch(0).next().expect("one batch at least")?;
//! assert_eq!(batch.images.dims(), &[64, 1, 28, 28]);
//! assert_eq!(batch.labels.dims(), &[64]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Determinism
//!
//! The order of epoch `e` comes from a ChaCha8 generator keyed by
//! `(seed, e)`; each image's crop and flip from one keyed by
//! `(seed, e, image index)`. Batches are built in parallel with rayon but do
//! not depend on the thread count, and [`Loader::epoch_from`] resumes an
//! epoch at any batch with exactly the batches an uninterrupted run gets.
//!
//! ## Modules
//!
//! - [`source`]: [`DataSource`], parsed from a string;
//! - [`idx`], [`cifar`]: file readers (and idx writers);
//! - [`dataset`]: [`Dataset`] (raw `u8` pixels, N x C x H x W) and
//!   [`DatasetKind`] with the per-dataset defaults;
//! - [`split`]: [`Split`], either an in-memory [`Dataset`] or a
//!   [`FileSplit`] (an image folder's file list, decoded per batch);
//! - [`folder`], [`image_decode`], [`image_transform`]: class-per-folder
//!   image sets (torchvision's `ImageFolder` order), decoding to RGB as PIL
//!   does, and torchvision's ImageNet evaluation transform;
//! - [`image_pipeline`]: the train (resize + random crop, or
//!   RandomResizedCrop) and eval crops of folder images;
//! - [`augment`], [`normalize`], [`loader`]: the batch pipeline (with
//!   [`Loader::prefetch`] building batches ahead on a thread);
//! - [`inspect`]: a batch written out as tensors and as a contact sheet;
//! - `hub` (feature `hub`): fetching through `candle-datasets`.

pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod error;
mod file_batch;
pub mod file_split;
pub mod folder;
#[cfg(feature = "hub")]
pub mod hub;
pub mod idx;
pub mod image_decode;
pub mod image_pipeline;
pub mod image_transform;
pub mod inspect;
pub mod loader;
pub mod normalize;
mod prefetch;
pub mod source;
pub mod split;

pub use augment::{Augment, CropFlip};
pub use dataset::{Dataset, DatasetKind, Splits};
pub use error::{DataError, Result};
pub use file_split::FileSplit;
pub use folder::ImageFolder;
#[cfg(feature = "hub")]
pub use hub::load_hub;
pub use image_decode::{decode_rgb, RgbImage};
pub use image_pipeline::{ImageTransform, TrainCrop};
pub use image_transform::EvalTransform;
pub use loader::{Batch, BatchIter, Loader, LoaderConfig, Mode};
pub use normalize::Normalize;
pub use prefetch::Prefetch;
pub use source::DataSource;
pub use split::{Split, SplitPair};
