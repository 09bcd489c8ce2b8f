//! # dgms-cli
//!
//! The library behind the `dgms` command: run configuration, training loop
//! (SGD with momentum/Nesterov/weight decay, one-cycle/cosine/multi-step
//! schedules, checkpoints with exact resume) and the phases `pretrain`,
//! `dgms`, `harden`, `eval`, `report` and `quantize`. `cargo xtask train`
//! drives the same functions.

pub mod config;
pub mod fsutil;
pub mod phases;
pub mod train;
