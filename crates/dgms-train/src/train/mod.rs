//! Training: optimizer, schedules, checkpoints, metrics and the loop.

pub mod checkpoint;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod session;
mod sgd_update;
pub mod trainer;
pub mod uniform_baseline;
