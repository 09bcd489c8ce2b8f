//! The resolved configuration of a training run: every choice spelled out,
//! saved as `config.json` in the run directory and inside each checkpoint.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::train::optim::SgdConfig;

/// Defaults shared by every entry point (`dgms pretrain` / `dgms dgms` and
/// `cargo xtask train`), so that the same settings mean the same run.
pub const DEFAULT_BATCH_SIZE: usize = 128;
/// Multi-step factor.
pub const DEFAULT_GAMMA: f64 = 0.1;
pub const DEFAULT_MOMENTUM: f64 = 0.9;
pub const DEFAULT_WEIGHT_DECAY: f64 = 5e-4;
/// Epochs and peak learning rate of full-precision training.
pub const PRETRAIN_EPOCHS: usize = 8;
pub const PRETRAIN_LR: f64 = 0.1;
/// Epochs and peak learning rate of DGMS fine-tuning.
pub const DGMS_EPOCHS: usize = 4;
pub const DGMS_LR: f64 = 1e-3;
/// Mixture components by default (4-bit).
pub const DEFAULT_K: usize = 16;

/// Which schedule; turned into a [`crate::train::schedule::Schedule`]
/// once the number of steps is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    OneCycle,
    Cosine,
    MultiStep,
    Constant,
}

/// Mixture settings of a DGMS fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixtureSettings {
    /// Components per layer (K = 2^bits).
    pub k: usize,
    /// Temperature.
    pub tau: f32,
    /// Train tau as well.
    pub train_tau: bool,
    /// "Empirical" init: every sigma 0.01.
    pub empirical: bool,
    /// Layers with a mixture; `None` = the default (docs/METHOD.md#layers) (every conv
    /// but the first).
    pub layers: Option<Vec<String>>,
    /// Apply weight decay to the mixture parameters too (the reference
    /// does; off by default here).
    pub weight_decay: bool,
    /// Seed of the k-means restarts.
    pub init_seed: u64,
}

impl MixtureSettings {
    /// The defaults for K components (docs/METHOD.md#choices): tau 0.01 (fixed), cluster
    /// sigmas, every conv but the first, no decay on the mixture, seed 0.
    pub fn with_k(k: usize) -> Self {
        Self {
            k,
            tau: dgms_core::DEFAULT_TAU,
            train_tau: false,
            empirical: false,
            layers: None,
            weight_decay: false,
            init_seed: 0,
        }
    }
}

/// Everything a training run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    /// Data source, e.g. `embedded`, `fashion-mnist:DIR`, `cifar10:DIR`.
    pub data: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak (one-cycle) or base learning rate.
    pub lr: f64,
    pub schedule: ScheduleKind,
    /// Milestones in epochs, for multi-step.
    pub milestones: Vec<usize>,
    /// Factor applied at each milestone, for multi-step.
    pub gamma: f64,
    pub sgd: SgdConfig,
    pub seed: u64,
    /// Stop each epoch after this many batches (quick runs and tests).
    pub max_batches: Option<usize>,
    /// Evaluate on at most this many test images (quick runs and tests).
    pub max_eval: Option<usize>,
    pub out_dir: PathBuf,
    /// Full-precision checkpoint to start from.
    pub init_from: Option<PathBuf>,
    /// Mixture fine-tuning (None = full-precision training).
    pub mixture: Option<MixtureSettings>,
}

impl RunConfig {
    /// Defaults of `dgms pretrain`.
    pub fn pretrain(model: &str, data: &str, out_dir: PathBuf) -> Self {
        Self {
            model: model.to_string(),
            data: data.to_string(),
            epochs: PRETRAIN_EPOCHS,
            batch_size: DEFAULT_BATCH_SIZE,
            lr: PRETRAIN_LR,
            schedule: ScheduleKind::OneCycle,
            milestones: vec![],
            gamma: DEFAULT_GAMMA,
            sgd: SgdConfig {
                momentum: DEFAULT_MOMENTUM,
                nesterov: true,
                weight_decay: DEFAULT_WEIGHT_DECAY,
            },
            seed: 0,
            max_batches: None,
            max_eval: None,
            out_dir,
            init_from: None,
            mixture: None,
        }
    }

    /// Defaults of `dgms dgms`: fine-tuning the full-precision weights in
    /// `init` (`None` when resuming) with `mixture`, [`DGMS_EPOCHS`] epochs
    /// at peak lr [`DGMS_LR`]. `cargo xtask train` starts from the same.
    pub fn dgms(
        model: &str,
        data: &str,
        out_dir: PathBuf,
        init: Option<PathBuf>,
        mixture: MixtureSettings,
    ) -> Self {
        Self {
            epochs: DGMS_EPOCHS,
            lr: DGMS_LR,
            init_from: init,
            mixture: Some(mixture),
            ..Self::pretrain(model, data, out_dir)
        }
    }
}
