//! The training loop shared by `pretrain` (full precision) and `dgms`
//! (mixture fine-tuning): SGD steps under a schedule, evaluation after every
//! epoch, a JSONL metrics file, the last and the best checkpoint.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::collections::BTreeMap;
use std::sync::Arc;

use dgms_core::GaussianMixture;
use dgms_data::{Batch, Dataset, Loader, LoaderConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{RunConfig, ScheduleKind};
use crate::error::{Result, TrainError};
use crate::train::checkpoint::{self, mixture_key, Checkpoint, CheckpointMeta, FORMAT_VERSION};
use crate::train::metrics::Tally;
use crate::train::optim::{Param, Sgd};
use crate::train::schedule::Schedule;
use crate::train::session::{evaluate, prepare, Data, Model};
use dgms_io::write_atomic;

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
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct EpochMetrics {
    epoch: usize,
    step: usize,
    lr: f64,
    train_loss: f64,
    train_top1: f64,
    test_loss: f64,
    test_top1: f64,
    test_top5: f64,
    seconds: f64,
}

fn schedule_for(cfg: &RunConfig, steps_per_epoch: usize) -> Schedule {
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

/// Model parameters (decayed) and mixture parameters (decayed only when
/// the config says so), sorted by name.
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
    params
}

fn progress_bar(len: usize, epoch: usize, epochs: usize) -> Result<ProgressBar> {
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

/// Trains as `cfg` says, from scratch (or `cfg.init_from`) or resuming from
/// the checkpoint at `resume`. Writes into `cfg.out_dir`.
pub fn train(cfg: &RunConfig, resume: Option<&Path>) -> Result<TrainOutcome> {
    train_until(cfg, resume, None)
}

/// As [`train`], but this invocation stops once `stop_after` epochs are
/// complete (the schedule still spans `cfg.epochs`), e.g. for time-sliced
/// jobs that `--resume` later.
pub fn train_until(
    cfg: &RunConfig,
    resume: Option<&Path>,
    stop_after: Option<usize>,
) -> Result<TrainOutcome> {
    let start = Instant::now();
    let mut run = Run::start(cfg, resume)?;
    let stop = stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
    while run.epoch < stop {
        let epoch_start = Instant::now();
        let (train, lr) = run.train_epoch()?;
        run.epoch += 1;
        let (test, improved) = run.evaluate()?;
        run.record_epoch(&train, &test, lr, epoch_start)?;
        run.save_checkpoints(improved)?;
    }
    Ok(run.outcome(start))
}

/// The checkpoint at `resume`, checked to be one of `cfg.model`.
fn load_resume<'p>(
    cfg: &RunConfig,
    resume: Option<&'p Path>,
) -> Result<Option<(&'p Path, Checkpoint)>> {
    let Some(path) = resume else {
        return Ok(None);
    };
    let ckpt = checkpoint::load(path)?;
    if ckpt.meta.config.model != cfg.model {
        return Err(TrainError::WrongModel {
            path: path.to_path_buf(),
            found: ckpt.meta.config.model.clone(),
            expected: cfg.model.clone(),
        });
    }
    Ok(Some((path, ckpt)))
}

/// A run in progress: its model, optimizer, data and position.
struct Run<'a> {
    cfg: &'a RunConfig,
    data: Data,
    model: Model,
    sgd: Sgd,
    loader: Loader,
    test: Arc<Dataset>,
    steps_per_epoch: usize,
    schedule: Schedule,
    mixtures: Vec<(String, GaussianMixture)>,
    /// Epochs completed and optimizer steps taken.
    epoch: usize,
    step: usize,
    /// Test top-1 and top-5 after the last epoch (NaN before), best top-1.
    top1: f64,
    top5: f64,
    best_top1: f64,
    last: PathBuf,
    best: PathBuf,
}

impl<'a> Run<'a> {
    /// Builds (or restores) the model and optimizer, writes `config.json`
    /// into the run directory and prepares the loader and schedule.
    fn start(cfg: &'a RunConfig, resume: Option<&Path>) -> Result<Self> {
        let resumed = load_resume(cfg, resume)?;
        let (data, model) = prepare(cfg, resumed.as_ref().map(|(p, c)| (*p, c)))?;
        let mut sgd = Sgd::new(optimizer_params(&model, cfg), cfg.sgd.clone());
        let (mut epoch, mut step, mut best_top1) = (0, 0, f64::NEG_INFINITY);
        if let Some((_, ckpt)) = &resumed {
            sgd.load_state(&ckpt.tensors)?;
            (epoch, step, best_top1) = (ckpt.meta.epoch, ckpt.meta.step, ckpt.meta.best_top1);
        }
        std::fs::create_dir_all(&cfg.out_dir)
            .map_err(TrainError::io("creating run directory", &cfg.out_dir))?;
        let config =
            serde_json::to_string_pretty(cfg).map_err(TrainError::json("encoding config.json"))?;
        write_atomic(&cfg.out_dir.join(CONFIG), config.as_bytes())?;

        let loader = Loader::new(
            data.train.clone(),
            LoaderConfig::train(data.kind, cfg.batch_size, cfg.seed),
        )?;
        let test = data.test_subset(cfg.max_eval)?;
        let per_epoch = loader.batches_per_epoch();
        let steps_per_epoch = cfg.max_batches.map_or(per_epoch, |m| m.min(per_epoch));
        let mixtures = model.net.mixtures();
        Ok(Self {
            cfg,
            schedule: schedule_for(cfg, steps_per_epoch),
            data,
            model,
            sgd,
            loader,
            test,
            steps_per_epoch,
            mixtures,
            epoch,
            step,
            top1: f64::NAN,
            top5: f64::NAN,
            best_top1,
            last: cfg.out_dir.join(LAST),
            best: cfg.out_dir.join(BEST),
        })
    }

    /// One epoch of optimizer steps (at most `steps_per_epoch`), with a
    /// progress bar; returns the epoch's training tally and its last lr.
    fn train_epoch(&mut self) -> Result<(Tally, f64)> {
        let bar = progress_bar(self.steps_per_epoch, self.epoch, self.cfg.epochs)?;
        let mut tally = Tally::default();
        let mut lr = self.schedule.lr(self.step);
        let batches = self
            .loader
            .epoch(self.epoch as u64)
            .take(self.steps_per_epoch);
        for batch in batches {
            let batch = batch?;
            lr = self.schedule.lr(self.step);
            let momentum = self.schedule.momentum(self.step);
            let loss = train_step(
                &self.model,
                &mut self.sgd,
                &batch,
                (lr, momentum),
                &mut tally,
            )?;
            if !loss.is_finite() {
                bar.abandon();
                return Err(self.non_finite_loss(loss, batch.index));
            }
            self.project_mixtures()?;
            self.step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} top1 {:.2}% lr {lr:.2e}",
                tally.loss(),
                tally.top1()
            ));
        }
        bar.finish_and_clear();
        Ok((tally, lr))
    }

    /// After every optimizer step: mixture widths (and a trained tau) back
    /// to their floor.
    fn project_mixtures(&self) -> Result<()> {
        for (layer, mixture) in &self.mixtures {
            let clamped = mixture.project()?;
            if clamped > 0 {
                tracing::debug!(
                    "step {}: {layer}: {clamped} sigma/tau values clamped",
                    self.step
                );
            }
        }
        Ok(())
    }

    /// The error for a NaN or infinite loss at batch `batch` of the current
    /// epoch, naming the checkpoint that survives.
    fn non_finite_loss(&self, loss: f64, batch: usize) -> TrainError {
        let kept = if self.last.exists() {
            format!(
                "the last good checkpoint is {} (epoch {})",
                self.last.display(),
                self.epoch
            )
        } else {
            "no checkpoint was written before it".to_string()
        };
        TrainError::NonFiniteLoss {
            loss,
            step: self.step,
            epoch: self.epoch + 1,
            batch,
            kept,
        }
    }

    /// Evaluates on the test subset; updates top-1/top-5 and the best
    /// top-1, and says whether this epoch improved on it.
    fn evaluate(&mut self) -> Result<(Tally, bool)> {
        let eval = evaluate(self.model.net.as_ref(), self.test.clone(), self.data.kind)?;
        (self.top1, self.top5) = (eval.top1(), eval.top5());
        let improved = self.top1 > self.best_top1;
        self.best_top1 = self.best_top1.max(self.top1);
        Ok((eval, improved))
    }

    /// Logs the epoch and appends its line to `metrics.jsonl`.
    fn record_epoch(
        &self,
        train: &Tally,
        test: &Tally,
        lr: f64,
        epoch_start: Instant,
    ) -> Result<()> {
        tracing::info!(
            "epoch {}/{}: train loss {:.4} top1 {:.2}% | test loss {:.4} top1 {:.2}% top5 {:.2}% | {:.1}s",
            self.epoch,
            self.cfg.epochs,
            train.loss(),
            train.top1(),
            test.loss(),
            self.top1,
            self.top5,
            epoch_start.elapsed().as_secs_f64()
        );
        let line = EpochMetrics {
            epoch: self.epoch,
            step: self.step,
            lr,
            train_loss: train.loss(),
            train_top1: train.top1(),
            test_loss: test.loss(),
            test_top1: self.top1,
            test_top5: self.top5,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        let path = self.cfg.out_dir.join(METRICS);
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(TrainError::io("opening", &path))?;
        let json =
            serde_json::to_string(&line).map_err(TrainError::json("encoding a metrics line"))?;
        writeln!(metrics, "{json}").map_err(TrainError::io("writing", &path))
    }

    /// Writes the last checkpoint, and the best one if this epoch improved.
    fn save_checkpoints(&self, improved: bool) -> Result<()> {
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            model: self.cfg.model.clone(),
            epoch: self.epoch,
            step: self.step,
            seed: self.cfg.seed,
            top1: self.top1,
            best_top1: self.best_top1,
            mixture_k: self.mixture_k(),
            train_tau: self.cfg.mixture.as_ref().is_some_and(|m| m.train_tau),
            hardened: false,
            config: self.cfg.clone(),
        };
        let mut tensors = self.model.checkpoint_tensors();
        tensors.extend(self.sgd.state());
        checkpoint::save(&self.last, &tensors, &meta)?;
        if improved {
            checkpoint::save(&self.best, &tensors, &meta)?;
        }
        Ok(())
    }

    /// K of every mixture layer.
    fn mixture_k(&self) -> BTreeMap<String, usize> {
        self.mixtures
            .iter()
            .map(|(l, m)| (l.clone(), m.k()))
            .collect()
    }

    fn outcome(self, start: Instant) -> TrainOutcome {
        TrainOutcome {
            epochs: self.epoch,
            steps: self.step,
            top1: self.top1,
            top5: self.top5,
            best_top1: self.best_top1,
            seconds: start.elapsed().as_secs_f64(),
            last: self.last,
            best: self.best,
        }
    }
}

/// One optimizer step on `batch` at `(lr, momentum if the schedule cycles
/// it)`: forward, loss, backward, update; adds the batch to `tally`.
/// Returns the batch's loss; a NaN or infinite one returns before any
/// update.
fn train_step(
    model: &Model,
    sgd: &mut Sgd,
    batch: &Batch,
    (lr, momentum): (f64, Option<f64>),
    tally: &mut Tally,
) -> Result<f64> {
    sgd.set_lr(lr);
    if let Some(m) = momentum {
        sgd.set_momentum(m);
    }
    let logits = model.net.forward_t(&batch.images, true)?;
    let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
    let loss_value = loss.to_scalar::<f32>()? as f64;
    if !loss_value.is_finite() {
        return Ok(loss_value);
    }
    let grads = loss.backward()?;
    sgd.step(&grads)?;
    tally.add(loss_value, &logits.detach(), &batch.labels)?;
    Ok(loss_value)
}
