//! # dgms-train
//!
//! The library behind the `dgms` command and `cargo xtask train`: the run
//! configuration ([`config`], plain types), the training loop (SGD with
//! momentum/Nesterov/weight decay, one-cycle/cosine/multi-step schedules,
//! checkpoints with exact resume: [`train`]), the phases after training
//! (`harden`, `eval`, `quantize`: [`phases`]; `report`: [`model_report`],
//! its per-layer pictures: [`layer_pictures`]),
//! export to the packed Q-SIMD format ([`export`]) and inference on it
//! ([`infer`]), data-parallel training over N ranks ([`parallel`]); the
//! DGMS authors' own checkpoints are read wherever a checkpoint is
//! ([`reference_import`], [`reference_import::read_weights_file`]).
//! Errors are typed ([`TrainError`]); command-line parsing lives in the
//! `dgms-cli` binary, which converts its arguments into these types.
//!
//! The same configuration gives the same bits whichever program runs it:
//! initial weights, shuffling and augmentation derive from the run's seeds,
//! and every reduction in the training step has a fixed order (see
//! `dgms_models::conv_op`).

pub mod config;
pub mod device;
pub mod error;
pub mod export;
pub mod image_settings;
pub mod infer;
pub mod layer_pictures;
pub mod model_report;
pub mod parallel;
pub mod phases;
pub mod process;
pub mod reference_import;
pub mod reference_report;
pub mod stats;
pub mod train;

pub use device::{DeviceError, DeviceSpec};
pub use error::{Result, TrainError};
pub use image_settings::ImageSettings;
