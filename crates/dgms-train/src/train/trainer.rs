//! The training loop shared by `pretrain` (full precision) and `dgms`
//! (mixture fine-tuning): SGD steps under a schedule, evaluation after every
//! epoch, a JSONL metrics file, the last and the best checkpoint.
//!
//! What a run promises (see [`crate::train::run`] for how):
//! - every NaN or infinite loss, parameter (after each update) or test
//!   logit stops the run with an error naming epoch and step, before
//!   anything of that epoch is saved;
//! - per epoch the files are written best (if improved), last, then
//!   `metrics.jsonl`, each atomically; the checkpoints carry the metrics
//!   history and a resume rewrites `metrics.jsonl` from it, so the three
//!   agree whenever the process dies;
//! - a resume continues bit for bit as if never stopped, and refuses a
//!   configuration other than the checkpoint's.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, ScheduleKind};
use crate::device::DeviceSpec;
use crate::error::{Result, TrainError};
use crate::train::checkpoint::mixture_key;
use crate::train::optim::Param;
use crate::train::run::Run;
use crate::train::schedule::Schedule;
use crate::train::session::Model;
use crate::train::uniform_baseline::uniform_key;

/// File names inside a run directory.
pub const LAST: &str = "last.safetensors";
pub const BEST: &str = "best.safetensors";
pub const METRICS: &str = "metrics.jsonl";
pub const CONFIG: &str = "config.json";

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainOutcome {
    pub epochs: usize,
    pub steps: usize,
    pub top1: f64,
    pub top5: f64,
    pub best_top1: f64,
    pub seconds: f64,
    pub last: PathBuf,
    pub best: PathBuf,
    /// Image files skipped because they could not be decoded (folder
    /// sources; each was logged as a warning when first met), in path
    /// order with the reason.
    pub skipped_files: Vec<(PathBuf, String)>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub test_loss: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    /// Wall-clock time of the epoch (the one field a resumed run does not
    /// reproduce).
    pub seconds: f64,
}

/// How one invocation of a run proceeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrainOptions<'a> {
    /// Continue from this checkpoint, which must lie in the run directory
    /// and have been trained with the same configuration.
    pub resume: Option<&'a Path>,
    /// Stop this invocation once this many epochs are complete (the
    /// schedule still spans all of them).
    pub stop_after: Option<usize>,
    /// A fresh run replaces a run already in the directory (otherwise that
    /// is an error).
    pub force: bool,
    /// Raised (by the binary's Ctrl-C handler) to stop at the next step
    /// boundary with [`TrainError::Interrupted`]; never inside a save.
    pub stop: Option<&'a AtomicBool>,
    /// Where the model computes (the CPU by default). Not part of the run's
    /// configuration: a run may resume on another device, and its
    /// checkpoints are the same files either way.
    pub device: DeviceSpec,
}

pub(crate) fn schedule_for(cfg: &RunConfig, steps_per_epoch: usize) -> Schedule {
    let total = cfg.epochs * steps_per_epoch;
    match cfg.schedule {
        ScheduleKind::OneCycle => Schedule::one_cycle(cfg.lr, total),
        ScheduleKind::Cosine => Schedule::Cosine {
            base_lr: cfg.lr,
            total_steps: total,
            min_lr: 0.0,
        },
        ScheduleKind::MultiStep => Schedule::MultiStep {
            base_lr: cfg.lr,
            milestones: cfg.milestones.iter().map(|e| e * steps_per_epoch).collect(),
            gamma: cfg.gamma,
        },
        ScheduleKind::Constant => Schedule::Constant { lr: cfg.lr },
    }
}

/// Model parameters (decayed), mixture parameters (decayed only when
/// the config says so) and the LSQ baseline's steps (never decayed: a
/// decayed step would pull the grid inwards and clip more weights).
pub fn optimizer_params(model: &Model, cfg: &RunConfig) -> Vec<Param> {
    let mut params: Vec<Param> = model
        .trained_tensors()
        .into_iter()
        .map(|(name, var)| Param {
            name,
            var,
            decay: true,
        })
        .collect();
    let mixture_decay = cfg.mixture.as_ref().is_some_and(|m| m.weight_decay);
    for (layer, mixture) in model.net.mixtures() {
        let trainable = mixture.trainable_vars();
        for (name, var) in mixture.named_vars() {
            if trainable
                .iter()
                .any(|t| t.as_tensor().id() == var.as_tensor().id())
            {
                params.push(Param {
                    name: mixture_key(&layer, name),
                    var,
                    decay: mixture_decay,
                });
            }
        }
    }
    for (layer, grid) in model.net.uniform_quantizers() {
        params.push(Param {
            name: uniform_key(&layer),
            var: grid.step().clone(),
            decay: false,
        });
    }
    params
}

pub(crate) fn progress_bar(len: usize, epoch: usize, epochs: usize) -> Result<ProgressBar> {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "epoch {}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}} {{elapsed}}<{{eta}}",
            epoch + 1
        ))
        .map_err(TrainError::ProgressTemplate)?,
    );
    Ok(bar)
}

/// A bar over `len` images, with their rate and the time left (used by
/// evaluation).
pub(crate) fn images_bar(len: u64) -> Result<ProgressBar> {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "eval [{bar:30}] {pos}/{len} images {per_sec} {elapsed}<{eta}",
        )
        .map_err(TrainError::ProgressTemplate)?,
    );
    Ok(bar)
}

/// Trains as `cfg` says, from scratch (or `cfg.init_from`) or resuming from
/// the checkpoint at `resume`. Writes into `cfg.out_dir`.
pub fn train(cfg: &RunConfig, resume: Option<&Path>) -> Result<TrainOutcome> {
    train_with(
        cfg,
        &TrainOptions {
            resume,
            ..TrainOptions::default()
        },
    )
}

/// As [`train`], but this invocation stops once `stop_after` epochs are
/// complete (the schedule still spans `cfg.epochs`), e.g. for time-sliced
/// jobs that resume later.
pub fn train_until(
    cfg: &RunConfig,
    resume: Option<&Path>,
    stop_after: Option<usize>,
) -> Result<TrainOutcome> {
    train_with(
        cfg,
        &TrainOptions {
            resume,
            stop_after,
            ..TrainOptions::default()
        },
    )
}

/// Trains as `cfg` and `opts` say: the hyper-parameters are validated
/// first, then every epoch trains, evaluates (a diverged epoch is an
/// error) and saves.
pub fn train_with(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    let start = Instant::now();
    let mut run = Run::start(cfg, opts)?;
    let stop = opts.stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
    while run.epoch < stop {
        let epoch_start = Instant::now();
        let (train, lr) = run.train_epoch(opts.stop)?;
        run.epoch += 1;
        let (test, improved) = run.evaluate()?;
        run.finish_epoch(&train, &test, lr, epoch_start, improved)?;
    }
    Ok(run.outcome(start))
}
