//! The flags of `dgms pretrain` and `dgms dgms` (`TrainArgs`, with the
//! mixture, device and schedule flags it holds) and their conversion into
//! dgms-train's `RunConfig`, for a fresh run or a resumed one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use dgms_train::config::{self, MixtureSettings, RunConfig, ScheduleKind, UniformSettings};
use dgms_train::train::checkpoint;
use dgms_train::train::run::{checkpoint_dir, same_dir};
use dgms_train::DeviceSpec;

use crate::data_args::ImageArgs;

/// `--schedule`: the learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    OneCycle,
    Cosine,
    MultiStep,
    Constant,
}

impl From<ScheduleArg> for ScheduleKind {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::OneCycle => ScheduleKind::OneCycle,
            ScheduleArg::Cosine => ScheduleKind::Cosine,
            ScheduleArg::MultiStep => ScheduleKind::MultiStep,
            ScheduleArg::Constant => ScheduleKind::Constant,
        }
    }
}

/// The flags of `dgms pretrain` and `dgms dgms`. Every setting is an
/// `Option`, so that a resumed run knows which flags were given: those
/// must equal the checkpoint's, the others are taken from it. The defaults
/// (shown in brackets, from `dgms_train::config`) apply to a fresh run.
#[derive(Args)]
pub struct TrainArgs {
    /// Architecture [default: resnet20].
    #[arg(long)]
    pub model: Option<String>,
    /// `embedded`, `fashion-mnist[:DIR]`, `mnist:DIR` or `cifar10:DIR`
    /// [default: embedded].
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs [pretrain 8, dgms 4].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch, 1..=65536 [default: 128].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak (one-cycle) or base learning rate [pretrain 0.1, dgms 1e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule [default: one-cycle].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Multi-step milestones, in epochs (comma-separated, increasing).
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<usize>>,
    /// Multi-step factor [default: 0.1].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// SGD momentum, in [0, 1) [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub no_nesterov: bool,
    /// [default: 5e-4]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory (checkpoints, metrics.jsonl, config.json); with
    /// --resume the checkpoint's directory (the default).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from these full-precision weights.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Resume from a checkpoint of this run (restores everything; the
    /// configuration is the checkpoint's).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace a run already in --out (its checkpoints, metrics and
    /// config) instead of refusing.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Stop this invocation after N completed epochs (the schedule still
    /// spans --epochs); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// At most this many batches per epoch.
    #[arg(long)]
    pub max_batches: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    pub max_eval: Option<usize>,
    /// Data-parallel ranks, as threads of this process: each trains on its
    /// part of every batch (--batch-size stays the global batch) and the
    /// gradients are averaged; rank 0 writes the files. For running the
    /// multi-GPU logic on the CPU: no faster than one process. Resume with
    /// the same N.
    /// [default: 1, or the number of --devices]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub ranks: Option<u32>,
    /// Run the --ranks as processes of this machine (children of this
    /// one, reducing over local TCP) instead of threads: the same bits as
    /// threads, and the set-up a process per GPU uses.
    #[arg(long)]
    pub rank_processes: bool,
    /// Machines in a multi-machine run, each running the same command with
    /// its own --node-rank and --ranks processes (implies
    /// --rank-processes; needs --rendezvous).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub nodes: u32,
    /// This machine's index in a multi-machine run, 0..--nodes; node 0's
    /// first rank is rank 0 (it listens at --rendezvous and writes the
    /// run).
    #[arg(long, default_value_t = 0)]
    pub node_rank: u32,
    /// HOST:PORT where node 0 listens for the other ranks (default with
    /// one machine: a free port of 127.0.0.1).
    #[arg(long)]
    pub rendezvous: Option<String>,
    /// One rank process per listed GPU of this machine (e.g. 0,1,2,3),
    /// each on cuda:<id> (overrides --device; implies --rank-processes;
    /// --ranks absent or equal to the count). Gradients are averaged with
    /// NCCL in a build with --features nccl, else through the host.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<crate::devices::DeviceList>,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub images: ImageArgs,
}

/// Where a command computes (`pretrain`, `dgms`, `eval`, `harden`).
#[derive(Args, Clone, Copy, Debug)]
pub struct DeviceArg {
    /// cpu, cuda (GPU 0) or cuda:N. CUDA needs a dgms built with
    /// `--features cuda`; there the convs, batch norms and mixtures run on
    /// candle's own ops (the project's fused ops are CPU-only), and the
    /// mixture's soft weights then keep about 13 K floats per weight for
    /// the backward (K = 16: ~9 GB for resnet18). Checkpoints are the same
    /// files on every device.
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda|cuda:N")]
    pub device: DeviceSpec,
}

/// The mixture flags of `dgms dgms` and `dgms quantize` (options for the
/// same reason as [`TrainArgs`]).
#[derive(Args)]
pub struct MixtureArgs {
    /// Components per layer, 2..=256 (16 = 4-bit, 8 = 3-bit, 4 = 2-bit)
    /// [default: 16].
    #[arg(long)]
    pub k: Option<usize>,
    /// Temperature [default: 0.01].
    #[arg(long)]
    pub tau: Option<f32>,
    #[arg(long)]
    pub train_tau: bool,
    /// "Empirical" init: every sigma 0.01.
    #[arg(long)]
    pub empirical: bool,
    /// Layers with a mixture (comma-separated; default: every conv but the first).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Apply weight decay to the mixture parameters too.
    #[arg(long)]
    pub mixture_weight_decay: bool,
    /// Seed of the k-means restarts [default: 0].
    #[arg(long)]
    pub init_seed: Option<u64>,
}

impl MixtureArgs {
    /// The mixture settings these arguments ask for (defaults for the
    /// flags not given).
    pub fn settings(&self) -> MixtureSettings {
        let mut m = MixtureSettings::with_k(self.k.unwrap_or(config::DEFAULT_K));
        self.apply(&mut m);
        m
    }

    /// Sets in `m` the settings whose flags were given.
    fn apply(&self, m: &mut MixtureSettings) {
        if let Some(k) = self.k {
            m.k = k;
        }
        if let Some(tau) = self.tau {
            m.tau = tau;
        }
        m.train_tau |= self.train_tau;
        m.empirical |= self.empirical;
        if let Some(layers) = &self.layers {
            m.layers = Some(layers.clone());
        }
        m.weight_decay |= self.mixture_weight_decay;
        if let Some(seed) = self.init_seed {
            m.init_seed = seed;
        }
    }
}

/// Which training command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pretrain,
    Dgms,
}

impl Phase {
    pub fn command(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Dgms => "dgms",
        }
    }
}

impl TrainArgs {
    /// The run's configuration. Fresh: the phase's defaults
    /// (`RunConfig::pretrain` / `RunConfig::dgms`, as `cargo xtask train`
    /// uses) with the flags given. Resumed: the checkpoint's configuration
    /// with the flags given, which the library then refuses if they change
    /// it; the run directory is the checkpoint's.
    pub fn config(
        &self,
        phase: Phase,
        mixture: Option<&MixtureArgs>,
        lsq: bool,
    ) -> Result<RunConfig> {
        let mut cfg = match &self.resume {
            Some(path) => self.resumed_base(phase, path)?,
            None => {
                let Some(out) = self.out.clone() else {
                    bail!("--out DIR is required (the run directory), except with --resume");
                };
                let model = self.model.as_deref().unwrap_or("resnet20");
                let data = self.data.as_deref().unwrap_or("embedded");
                match phase {
                    Phase::Pretrain => RunConfig::pretrain(model, data, out),
                    Phase::Dgms => RunConfig::dgms(
                        model,
                        data,
                        out,
                        None,
                        mixture
                            .map(MixtureArgs::settings)
                            .unwrap_or_else(|| MixtureSettings::with_k(config::DEFAULT_K)),
                    ),
                }
            }
        };
        self.apply(&mut cfg);
        if let (Some(args), Some(m)) = (mixture, cfg.mixture.as_mut()) {
            args.apply(m);
        }
        if lsq && cfg.uniform.is_none() {
            // Fresh (or a mixture run asked to resume as LSQ, which the
            // library then refuses naming --lsq): the grid replaces the
            // mixture, with as many levels as its K.
            if let Some(m) = cfg.mixture.take() {
                let Some(mut u) = UniformSettings::with_levels(m.k) else {
                    bail!(
                        "--lsq --k {}: K must be a power of two (the grid has 2^bits levels)",
                        m.k
                    );
                };
                u.layers = m.layers;
                cfg.uniform = Some(u);
            }
        }
        Ok(cfg)
    }

    /// The configuration saved in the checkpoint at `path`, in its
    /// directory (which `--out`, if given, must name).
    fn resumed_base(&self, phase: Phase, path: &Path) -> Result<RunConfig> {
        // Only the metadata here; the library loads the tensors.
        let meta = checkpoint::load_meta(path)?;
        let dir = checkpoint_dir(path);
        if let Some(out) = &self.out {
            if !same_dir(out, &dir) {
                bail!(
                    "--out {} is not the directory of the checkpoint {}: a resumed run continues in its own directory (drop --out)",
                    out.display(),
                    path.display()
                );
            }
        }
        if meta.hardened {
            bail!(
                "{} is a hardened checkpoint (`dgms harden` or `dgms quantize`): there is no training run to resume",
                path.display()
            );
        }
        let saved_phase = if meta.config.mixture.is_some() || meta.config.uniform.is_some() {
            Phase::Dgms
        } else {
            Phase::Pretrain
        };
        if saved_phase != phase {
            bail!(
                "{} is a checkpoint of a `dgms {}` run: resume it with `dgms {} --resume {}`",
                path.display(),
                saved_phase.command(),
                saved_phase.command(),
                path.display()
            );
        }
        Ok(RunConfig {
            out_dir: dir,
            ..meta.config
        })
    }

    /// Sets in `cfg` the settings whose flags were given.
    fn apply(&self, cfg: &mut RunConfig) {
        if let Some(v) = &self.model {
            cfg.model = v.clone();
        }
        if let Some(v) = &self.data {
            cfg.data = v.clone();
        }
        if let Some(v) = self.epochs {
            cfg.epochs = v;
        }
        if let Some(v) = self.batch_size {
            cfg.batch_size = v;
        }
        if let Some(v) = self.lr {
            cfg.lr = v;
        }
        if let Some(v) = self.schedule {
            cfg.schedule = v.into();
        }
        if let Some(v) = &self.milestones {
            cfg.milestones = v.clone();
        }
        if let Some(v) = self.gamma {
            cfg.gamma = v;
        }
        if let Some(v) = self.momentum {
            cfg.sgd.momentum = v;
        }
        if self.no_nesterov {
            cfg.sgd.nesterov = false;
        }
        if let Some(v) = self.weight_decay {
            cfg.sgd.weight_decay = v;
        }
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = &self.init {
            cfg.init_from = Some(v.clone());
        }
        if let Some(v) = self.max_batches {
            cfg.max_batches = Some(v);
        }
        if let Some(v) = self.max_eval {
            cfg.max_eval = Some(v);
        }
        cfg.images = self.images.over(cfg.images);
    }
}
