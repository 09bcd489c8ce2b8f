//! The training loop shared by `pretrain` (full precision) and `dgms`
//! (mixture fine-tuning): SGD steps under a schedule, evaluation after every
//! epoch, a JSONL metrics file, the last and the best checkpoint.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dgms_data::{Loader, LoaderConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{RunConfig, ScheduleKind};
use crate::fsutil::write_atomic;
use crate::train::checkpoint::{self, mixture_key, CheckpointMeta, FORMAT_VERSION};
use crate::train::metrics::Tally;
use crate::train::optim::{Param, Sgd};
use crate::train::schedule::Schedule;
use crate::train::session::{evaluate, prepare, Model};

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
        .context("progress bar template")?,
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
    let resumed = resume
        .map(|p| checkpoint::load(p).map(|c| (p, c)))
        .transpose()?;
    if let Some((path, ckpt)) = &resumed {
        if ckpt.meta.config.model != cfg.model {
            bail!(
                "{} is a checkpoint of model {}, not {}",
                path.display(),
                ckpt.meta.config.model,
                cfg.model
            );
        }
    }
    let (data, model) = prepare(cfg, resumed.as_ref().map(|(p, c)| (*p, c)))?;
    let params = optimizer_params(&model, cfg);
    let mut sgd = Sgd::new(params, cfg.sgd.clone());
    let (mut epoch, mut step, mut best_top1) = (0, 0, f64::NEG_INFINITY);
    if let Some((_, ckpt)) = &resumed {
        sgd.load_state(&ckpt.tensors)?;
        (epoch, step, best_top1) = (ckpt.meta.epoch, ckpt.meta.step, ckpt.meta.best_top1);
    }

    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating run directory {}", cfg.out_dir.display()))?;
    write_atomic(
        &cfg.out_dir.join(CONFIG),
        serde_json::to_string_pretty(cfg)?.as_bytes(),
    )?;
    let last = cfg.out_dir.join(LAST);
    let best = cfg.out_dir.join(BEST);

    let loader = Loader::new(
        data.train.clone(),
        LoaderConfig::train(data.kind, cfg.batch_size, cfg.seed),
    )?;
    let test = data.test_subset(cfg.max_eval)?;
    let steps_per_epoch = cfg.max_batches.map_or(loader.batches_per_epoch(), |m| {
        m.min(loader.batches_per_epoch())
    });
    let schedule = schedule_for(cfg, steps_per_epoch);
    let mixture_k: std::collections::BTreeMap<String, usize> = model
        .net
        .mixtures()
        .iter()
        .map(|(l, m)| (l.clone(), m.k()))
        .collect();
    let mixtures = model.net.mixtures();
    let train_tau = cfg.mixture.as_ref().is_some_and(|m| m.train_tau);
    let (mut top1, mut top5) = (f64::NAN, f64::NAN);

    let stop = stop_after.map_or(cfg.epochs, |s| s.min(cfg.epochs));
    while epoch < stop {
        let epoch_start = Instant::now();
        let bar = progress_bar(steps_per_epoch, epoch, cfg.epochs)?;
        let mut tally = Tally::default();
        let mut lr = schedule.lr(step);
        for batch in loader.epoch(epoch as u64).take(steps_per_epoch) {
            let batch = batch?;
            lr = schedule.lr(step);
            sgd.set_lr(lr);
            if let Some(m) = schedule.momentum(step) {
                sgd.set_momentum(m);
            }
            let logits = model.net.forward_t(&batch.images, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                bar.abandon();
                let kept = if last.exists() {
                    format!(
                        "the last good checkpoint is {} (epoch {epoch})",
                        last.display()
                    )
                } else {
                    "no checkpoint was written before it".to_string()
                };
                bail!(
                    "loss is {loss_value} at step {step} (epoch {}, batch {}); training stopped, {kept}",
                    epoch + 1,
                    batch.index
                );
            }
            let grads = loss.backward()?;
            sgd.step(&grads)?;
            for (layer, mixture) in &mixtures {
                let clamped = mixture.project()?;
                if clamped > 0 {
                    tracing::debug!("step {step}: {layer}: {clamped} sigma/tau values clamped");
                }
            }
            tally.add(loss_value, &logits.detach(), &batch.labels)?;
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} top1 {:.2}% lr {lr:.2e}",
                tally.loss(),
                tally.top1()
            ));
        }
        bar.finish_and_clear();
        epoch += 1;

        let eval = evaluate(model.net.as_ref(), test.clone(), data.kind)?;
        (top1, top5) = (eval.top1(), eval.top5());
        let improved = top1 > best_top1;
        best_top1 = best_top1.max(top1);
        tracing::info!(
            "epoch {epoch}/{}: train loss {:.4} top1 {:.2}% | test loss {:.4} top1 {:.2}% top5 {:.2}% | {:.1}s",
            cfg.epochs,
            tally.loss(),
            tally.top1(),
            eval.loss(),
            top1,
            top5,
            epoch_start.elapsed().as_secs_f64()
        );
        let line = EpochMetrics {
            epoch,
            step,
            lr,
            train_loss: tally.loss(),
            train_top1: tally.top1(),
            test_loss: eval.loss(),
            test_top1: top1,
            test_top5: top5,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cfg.out_dir.join(METRICS))
            .context("opening metrics.jsonl")?;
        writeln!(metrics, "{}", serde_json::to_string(&line)?).context("writing metrics.jsonl")?;

        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            model: cfg.model.clone(),
            epoch,
            step,
            seed: cfg.seed,
            top1,
            best_top1,
            mixture_k: mixture_k.clone(),
            train_tau,
            hardened: false,
            config: cfg.clone(),
        };
        let mut tensors = model.checkpoint_tensors();
        tensors.extend(sgd.state());
        checkpoint::save(&last, &tensors, &meta)?;
        if improved {
            checkpoint::save(&best, &tensors, &meta)?;
        }
    }
    Ok(TrainOutcome {
        epochs: epoch,
        steps: step,
        top1,
        top5,
        best_top1,
        seconds: start.elapsed().as_secs_f64(),
        last,
        best,
    })
}
