//! A run in progress ([`Run`]): its model, optimizer, data and position,
//! how it starts (fresh, forced over an old run, or resumed) and what it
//! checks and writes at every step and epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use dgms_core::GaussianMixture;
use dgms_data::{Batch, Loader, LoaderConfig, Mode, Split};
use dgms_io::write_atomic;

use crate::config::RunConfig;
use crate::error::{Result, TrainError};
use crate::parallel::AllReduce;
use crate::train::checkpoint::{self, Checkpoint, CheckpointMeta, FORMAT_VERSION};
use crate::train::metrics::Tally;
use crate::train::optim::Sgd;
use crate::train::schedule::Schedule;
use crate::train::session::{batch_on, evaluate, prepare_on, Data, Model};
mod rank;

use crate::train::trainer::{
    optimizer_params, progress_bar, schedule_for, EpochMetrics, TrainOptions, TrainOutcome, BEST,
    CONFIG, LAST, METRICS,
};

/// A run in progress: its model, optimizer, data and position.
pub(crate) struct Run<'a> {
    cfg: &'a RunConfig,
    data: Data,
    model: Model,
    sgd: Sgd,
    loader: Loader,
    test: Split,
    steps_per_epoch: usize,
    schedule: Schedule,
    mixtures: Vec<(String, GaussianMixture)>,
    /// Epochs completed and optimizer steps taken.
    pub(crate) epoch: usize,
    step: usize,
    /// Test top-1 and top-5 after the last epoch (NaN before), best top-1.
    top1: f64,
    top5: f64,
    best_top1: f64,
    /// The lines of `metrics.jsonl` so far (saved in every checkpoint).
    metrics: String,
    /// Epoch of the last checkpoint written or resumed from.
    saved_epoch: Option<usize>,
    last: PathBuf,
    best: PathBuf,
    /// The group of a data-parallel run (`None` for one process): every
    /// rank trains on its part of each batch, rank 0 alone writes files.
    comm: Option<&'a dyn AllReduce>,
    /// Where the model computes; batches are moved here.
    device: Device,
}

/// The checkpoint at `resume`, checked to be one of this run: same model,
/// in the run directory, trained with the same configuration.
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
    if !same_dir(&checkpoint_dir(path), &cfg.out_dir) {
        return Err(TrainError::ResumeElsewhere {
            checkpoint: path.to_path_buf(),
            out_dir: cfg.out_dir.clone(),
        });
    }
    if let Some(m) = cfg.resume_mismatch(&ckpt.meta.config) {
        return Err(TrainError::ResumeMismatch {
            path: path.to_path_buf(),
            flag: m.flag,
            requested: m.requested,
            saved: m.saved,
        });
    }
    Ok(Some((path, ckpt)))
}

/// The directory a checkpoint lies in (`.` for a bare file name).
pub fn checkpoint_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether two paths name the same existing directory.
pub fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Makes `dir` ready for a fresh run: an error if it holds a run already
/// (unless `force`, which removes that run's files, but never the `init`
/// weights the new run starts from).
fn claim_run_dir(dir: &Path, force: bool, init: Option<&Path>) -> Result<()> {
    let found: Vec<&str> = [CONFIG, LAST, METRICS, BEST]
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(TrainError::RunExists {
            dir: dir.to_path_buf(),
            found: found.join(", "),
        });
    }
    for f in &found {
        if let Some(init) = init {
            dgms_io::ensure_not_input("--force would remove", &dir.join(f), &[("--init", init)])?;
        }
    }
    tracing::warn!("--force: replacing the run in {}", dir.display());
    for f in found {
        let path = dir.join(f);
        std::fs::remove_file(&path).map_err(TrainError::io("removing", &path))?;
    }
    Ok(())
}

/// The dropout seed of optimizer step `step` of a run seeded `seed`, so
/// that the masks depend on nothing a resume does not restore.
fn dropout_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (step as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// The first NaN or infinite value among `tensors`, as `name[index] = v`.
/// Runs after every step, so it first reduces each tensor to its sum (one
/// pass, no copy to the host: a NaN or infinity anywhere makes the sum
/// non-finite) and scans values only where the sum is not finite (an
/// overflowing sum of finite values then finds nothing and passes).
fn first_non_finite(tensors: &[(String, Tensor)]) -> Result<Option<String>> {
    for (name, t) in tensors {
        if t.dtype() != DType::F32 {
            continue;
        }
        if t.sum_all()?.to_scalar::<f32>()?.is_finite() {
            continue;
        }
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Ok(Some(format!("{name}[{i}] = {}", values[i])));
        }
    }
    Ok(None)
}

impl<'a> Run<'a> {
    /// Validates the configuration, builds (or restores) the model and
    /// optimizer, writes `config.json` (and on resume `metrics.jsonl`, from
    /// the checkpoint's history) and prepares the loader and schedule.
    pub(crate) fn start(cfg: &'a RunConfig, opts: &TrainOptions) -> Result<Self> {
        Self::start_rank(cfg, opts, None)
    }

    /// [`Self::start`] for one rank of the data-parallel group `comm`
    /// (every rank builds the same model from the same seeds and
    /// checkpoint); only rank 0 touches the run directory.
    pub(crate) fn start_rank(
        cfg: &'a RunConfig,
        opts: &TrainOptions,
        comm: Option<&'a dyn AllReduce>,
    ) -> Result<Self> {
        cfg.validate()?;
        // Before anything is read or written: a device that cannot be
        // opened leaves the run directory untouched.
        let device = opts.device.to_device()?;
        let primary = comm.is_none_or(|c| c.is_primary());
        let resumed = load_resume(cfg, opts.resume)?;
        if resumed.is_none() && primary {
            claim_run_dir(&cfg.out_dir, opts.force, cfg.init_from.as_deref())?;
        }
        let (data, model) = prepare_on(cfg, resumed.as_ref().map(|(p, c)| (*p, c)), &device)?;
        let mut sgd = Sgd::new(optimizer_params(&model, cfg), cfg.sgd.clone());
        let (mut epoch, mut step, mut best_top1) = (0, 0, f64::NEG_INFINITY);
        let (mut metrics, mut saved_epoch) = (String::new(), None);
        if let Some((_, ckpt)) = &resumed {
            sgd.load_state(&ckpt.tensors)?;
            (epoch, step, best_top1) = (ckpt.meta.epoch, ckpt.meta.step, ckpt.meta.best_top1);
            metrics = ckpt.metrics.clone();
            saved_epoch = Some(epoch);
        }
        if primary {
            std::fs::create_dir_all(&cfg.out_dir)
                .map_err(TrainError::io("creating run directory", &cfg.out_dir))?;
            let config = serde_json::to_string_pretty(cfg)
                .map_err(TrainError::json("encoding config.json"))?;
            write_atomic(&cfg.out_dir.join(CONFIG), config.as_bytes())?;
        }
        if resumed.is_some() && primary {
            // Lines written after the checkpoint (by a process that died
            // before its next checkpoint) are dropped: the epochs rerun.
            write_atomic(&cfg.out_dir.join(METRICS), metrics.as_bytes())?;
        }

        let loader = Loader::new(
            data.train.clone(),
            LoaderConfig::for_split(&data.train, Mode::Train, cfg.batch_size, cfg.seed),
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
            metrics,
            saved_epoch,
            last: cfg.out_dir.join(LAST),
            best: cfg.out_dir.join(BEST),
            comm,
            device,
        })
    }

    /// Whether this process writes the run's files: a single process, or
    /// rank 0 of a group.
    pub(crate) fn is_primary(&self) -> bool {
        self.comm.is_none_or(|c| c.is_primary())
    }

    /// One epoch of optimizer steps (at most `steps_per_epoch`), with a
    /// progress bar; returns the epoch's training tally and its last lr.
    /// Before each step `stop` is looked at; after each the parameters and
    /// optimizer state are checked to be finite.
    pub(crate) fn train_epoch(&mut self, stop: Option<&AtomicBool>) -> Result<(Tally, f64)> {
        if let Some(comm) = self.comm {
            return self.train_epoch_rank(stop, comm);
        }
        let bar = progress_bar(self.steps_per_epoch, self.epoch, self.cfg.epochs)?;
        let mut tally = Tally::default();
        let mut lr = self.schedule.lr(self.step);
        // Built two ahead on their own thread: decoding image files
        // overlaps the step.
        let batches = self
            .loader
            .prefetch(self.epoch as u64, 0, self.steps_per_epoch, 2)?;
        for batch in batches {
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                bar.abandon();
                return Err(self.interrupted());
            }
            let batch = batch_on(batch?, &self.device)?;
            if batch.is_empty() {
                // Every file of the batch was undecodable (each is logged
                // and counted): the step passes without an update, so the
                // schedule keeps its place.
                self.step += 1;
                bar.inc(1);
                continue;
            }
            lr = self.schedule.lr(self.step);
            let momentum = self.schedule.momentum(self.step);
            self.model
                .net
                .set_dropout_seed(dropout_seed(self.cfg.seed, self.step));
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
            self.step += 1;
            // Before the projection, which could clamp a NaN width back
            // into range and hide it.
            if let Err(e) = self.check_finite(batch.index) {
                bar.abandon();
                return Err(e);
            }
            self.project_parameters()?;
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

    /// After step `self.step` (1-based here) of batch `batch`: every
    /// tensor a checkpoint would hold is finite, or the run stops naming
    /// the first bad one.
    fn check_finite(&self, batch: usize) -> Result<()> {
        let mut tensors = self.model.checkpoint_tensors();
        tensors.extend(self.sgd.state()?);
        match first_non_finite(&tensors)? {
            None => Ok(()),
            Some(name) => Err(TrainError::NonFiniteParameter {
                name,
                step: self.step,
                epoch: self.epoch + 1,
                batch,
                kept: self.kept(),
            }),
        }
    }

    /// After every optimizer step: mixture widths (and a trained tau), and
    /// the LSQ baseline's steps, back to their floors.
    fn project_parameters(&self) -> Result<()> {
        self.project_mixtures()?;
        self.project_uniform()
    }

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

    /// After every optimizer step: the LSQ baseline's steps back to their
    /// floor (`dgms_core::uniform::STEP_FLOOR`).
    fn project_uniform(&self) -> Result<()> {
        for (layer, grid) in self.model.net.uniform_quantizers() {
            if grid.project()? {
                tracing::debug!(
                    "step {}: {layer}: uniform step raised to its floor",
                    self.step
                );
            }
        }
        Ok(())
    }

    /// Which checkpoint survives a stop, for the error messages.
    fn kept(&self) -> String {
        match self.saved_epoch {
            Some(epoch) => format!(
                "the last good checkpoint is {} (epoch {epoch})",
                self.last.display()
            ),
            None => "no checkpoint was written before it".to_string(),
        }
    }

    /// The error for a NaN or infinite loss at batch `batch` of the current
    /// epoch, naming the checkpoint that survives.
    fn non_finite_loss(&self, loss: f64, batch: usize) -> TrainError {
        TrainError::NonFiniteLoss {
            loss,
            step: self.step,
            epoch: self.epoch + 1,
            batch,
            kept: self.kept(),
        }
    }

    fn interrupted(&self) -> TrainError {
        TrainError::Interrupted {
            step: self.step,
            epoch: self.epoch + 1,
            last: self.saved_epoch.map(|_| self.last.clone()),
        }
    }

    /// Evaluates on the test subset; a non-finite loss or logit is a
    /// diverged epoch (an error: nothing of it is saved). Updates top-1/top-5
    /// and the best top-1, and says whether this epoch improved on it.
    pub(crate) fn evaluate(&mut self) -> Result<(Tally, bool)> {
        let eval = evaluate(self.model.net.as_ref(), &self.test)?;
        if !eval.is_finite() {
            let what = if eval.non_finite_rows > 0 {
                format!(
                    "non-finite logits in {} of {} test images",
                    eval.non_finite_rows, eval.seen
                )
            } else {
                format!("test loss {}", eval.loss())
            };
            return Err(TrainError::Diverged {
                epoch: self.epoch,
                step: self.step,
                what,
                kept: self.kept(),
            });
        }
        (self.top1, self.top5) = (eval.top1(), eval.top5());
        let improved = self.top1 > self.best_top1;
        self.best_top1 = self.best_top1.max(self.top1);
        Ok((eval, improved))
    }

    /// Logs the epoch, adds its line to the metrics history and saves, in
    /// this order: the best checkpoint (if `improved`), the last one, then
    /// `metrics.jsonl` (whole, from the history). Each write is atomic and
    /// each checkpoint carries the history, so whatever write a crash
    /// interrupts, resuming from `last` restores agreeing files.
    pub(crate) fn finish_epoch(
        &mut self,
        train: &Tally,
        test: &Tally,
        lr: f64,
        epoch_start: Instant,
        improved: bool,
    ) -> Result<()> {
        let seconds = epoch_start.elapsed().as_secs_f64();
        tracing::info!(
            "epoch {}/{}: train loss {:.4} top1 {:.2}% | test loss {:.4} top1 {:.2}% top5 {:.2}% | {seconds:.1}s",
            self.epoch,
            self.cfg.epochs,
            train.loss(),
            train.top1(),
            test.loss(),
            self.top1,
            self.top5,
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
            seconds,
        };
        let json =
            serde_json::to_string(&line).map_err(TrainError::json("encoding a metrics line"))?;
        self.metrics.push_str(&json);
        self.metrics.push('\n');

        let meta = self.meta();
        let mut tensors = self.model.checkpoint_tensors();
        tensors.extend(self.sgd.state()?);
        if improved {
            checkpoint::save_with_metrics(&self.best, &tensors, &meta, Some(&self.metrics))?;
        }
        checkpoint::save_with_metrics(&self.last, &tensors, &meta, Some(&self.metrics))?;
        self.saved_epoch = Some(self.epoch);
        write_atomic(&self.cfg.out_dir.join(METRICS), self.metrics.as_bytes())?;
        Ok(())
    }

    fn meta(&self) -> CheckpointMeta {
        CheckpointMeta {
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
        }
    }

    /// K of every mixture layer.
    fn mixture_k(&self) -> BTreeMap<String, usize> {
        self.mixtures
            .iter()
            .map(|(l, m)| (l.clone(), m.k()))
            .collect()
    }

    pub(crate) fn outcome(self, start: Instant) -> TrainOutcome {
        TrainOutcome {
            epochs: self.epoch,
            steps: self.step,
            top1: self.top1,
            top5: self.top5,
            best_top1: self.best_top1,
            seconds: start.elapsed().as_secs_f64(),
            last: self.last,
            best: self.best,
            skipped_files: self.data.skipped(),
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
