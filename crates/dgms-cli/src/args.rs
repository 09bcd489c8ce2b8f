//! The command line: clap's argument structs, and their conversion into
//! dgms-train's plain configuration types. Defaults come from
//! `dgms_train::config`, the same constants `cargo xtask train` uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dgms_train::config::{self, MixtureSettings, RunConfig, ScheduleKind};
use dgms_train::infer::EngineKind;
use dgms_train::phases;
use dgms_train::train::optim::SgdConfig;

#[derive(Parser)]
#[command(
    name = "dgms",
    version,
    about = "DGMS quantization: train, harden, evaluate, export, infer"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Full-precision training.
    Pretrain(TrainArgs),
    /// DGMS fine-tuning: mixtures initialised from a full-precision
    /// checkpoint (--init), trained with the weights.
    Dgms {
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        mixture: MixtureArgs,
    },
    /// Hardens a DGMS checkpoint: every mixture weight becomes its hard
    /// weight; indices and codebooks are stored; prints the report.
    Harden {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Re-estimate batch-norm statistics under the hard weights with
        /// this many training batches (no gradients; 0 = keep the
        /// statistics gathered during training).
        #[arg(long, default_value_t = phases::DEFAULT_RECALIBRATION_BATCHES)]
        recalibrate_bn: usize,
    },
    /// Evaluates a checkpoint on its test set (mixture layers hard).
    Eval {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Data source (default: the one it was trained on).
        #[arg(long)]
        data: Option<String>,
        /// Evaluate on the first N test images only.
        #[arg(long)]
        max_eval: Option<usize>,
    },
    /// The report (docs/METHOD.md#report: sparsity, bits, compression) of a DGMS or
    /// hardened checkpoint.
    Report {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Post-training quantization: k-means init + harden, no training.
    /// Writes a hardened checkpoint, or with --out X.dgms.safetensors the
    /// packed deployment file.
    Quantize(QuantizeArgs),
    /// Exports a hardened checkpoint to the packed deployment format
    /// (FILE.dgms.safetensors); prints the FP32 size, packed size and ratio.
    Export {
        /// A hardened checkpoint (`dgms harden` or `dgms quantize`).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Runs a packed model on the tensor `input` (N, C, H, W) f32 of a
    /// safetensors file; writes the tensor `logits` (N, classes).
    Infer(InferArgs),
}

#[derive(Args)]
pub struct QuantizeArgs {
    #[arg(long)]
    pub model: String,
    /// Full-precision weights (a checkpoint or a safetensors state dict;
    /// for packed output also a PyTorch .pth state dict).
    #[arg(long)]
    pub weights: PathBuf,
    /// Data source giving the input shape and classes [default:
    /// embedded; for packed output of resnet18/resnet50/mobilenet_v2
    /// none: 3x224x224, classes from the classifier weight].
    #[arg(long)]
    pub data: Option<String>,
    /// Packed output only: the input shape C,H,W instead of --data
    /// (classes from the classifier weight), e.g. 3,32,32.
    #[arg(long, value_delimiter = ',', conflicts_with = "data")]
    pub input_shape: Option<Vec<usize>>,
    #[command(flatten)]
    pub mixture: MixtureArgs,
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluate the quantized model on the test set.
    #[arg(long)]
    pub eval: bool,
}

#[derive(Args)]
pub struct InferArgs {
    /// The packed model (FILE.dgms.safetensors).
    #[arg(long)]
    pub packed: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// qsimd: the bit-packed kernels; candle: the dgms-models model with
    /// the decoded hard weights.
    #[arg(long, value_enum, default_value_t = EngineArg::Qsimd)]
    pub engine: EngineArg,
    /// Kernel instruction set for --engine qsimd: auto, scalar, avx2,
    /// avx512 or neon [default: $DGMS_QSIMD, else auto].
    #[arg(long)]
    pub isa: Option<String>,
    /// --engine qsimd only: the int8 fast path (int8 codebooks,
    /// activations quantized per output pixel; faster, slightly less
    /// accurate: see the README) instead of the exact f32 one.
    #[arg(long)]
    pub int8: bool,
    /// Run the batch this many times, at most 100000 (timing; the first
    /// run includes buffer allocation).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Run even if the input holds NaN or infinite values (refused by
    /// default, naming the first such index).
    #[arg(long)]
    pub allow_nonfinite: bool,
}

/// `--engine`: which implementation runs a packed model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// dgms_qsimd's engine on the bit-packed kernels.
    Qsimd,
    /// The dgms-models candle model with the hard weights.
    Candle,
}

impl From<EngineArg> for EngineKind {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Qsimd => EngineKind::Qsimd,
            EngineArg::Candle => EngineKind::Candle,
        }
    }
}

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

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// `embedded`, `fashion-mnist[:DIR]`, `mnist:DIR` or `cifar10:DIR`.
    #[arg(long, default_value = "embedded")]
    pub data: String,
    /// Epochs [pretrain 8, dgms 4].
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = config::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Peak (one-cycle) or base learning rate [pretrain 0.1, dgms 1e-3].
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScheduleArg::OneCycle)]
    pub schedule: ScheduleArg,
    /// Multi-step milestones, in epochs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub milestones: Vec<usize>,
    #[arg(long, default_value_t = config::DEFAULT_GAMMA)]
    pub gamma: f64,
    #[arg(long, default_value_t = config::DEFAULT_MOMENTUM)]
    pub momentum: f64,
    #[arg(long)]
    pub no_nesterov: bool,
    #[arg(long, default_value_t = config::DEFAULT_WEIGHT_DECAY)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory (checkpoints, metrics.jsonl, config.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Start from these full-precision weights.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Resume from a checkpoint of this run (restores everything).
    #[arg(long)]
    pub resume: Option<PathBuf>,
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
}

#[derive(Args)]
pub struct MixtureArgs {
    /// Components per layer (16 = 4-bit, 8 = 3-bit, 4 = 2-bit).
    #[arg(long, default_value_t = config::DEFAULT_K)]
    pub k: usize,
    #[arg(long, default_value_t = default_tau())]
    pub tau: f32,
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
    #[arg(long, default_value_t = 0)]
    pub init_seed: u64,
}

/// The default temperature, as `MixtureSettings::with_k` sets it.
fn default_tau() -> f32 {
    MixtureSettings::with_k(config::DEFAULT_K).tau
}

impl MixtureArgs {
    /// The mixture settings these arguments ask for.
    pub fn settings(&self) -> MixtureSettings {
        MixtureSettings {
            k: self.k,
            tau: self.tau,
            train_tau: self.train_tau,
            empirical: self.empirical,
            layers: self.layers.clone(),
            weight_decay: self.mixture_weight_decay,
            init_seed: self.init_seed,
        }
    }
}

impl TrainArgs {
    /// The run configuration: `base` (the phase's defaults:
    /// `RunConfig::pretrain` or `RunConfig::dgms`) with the arguments
    /// applied.
    pub fn config(&self, base: RunConfig) -> RunConfig {
        RunConfig {
            epochs: self.epochs.unwrap_or(base.epochs),
            batch_size: self.batch_size,
            lr: self.lr.unwrap_or(base.lr),
            schedule: self.schedule.into(),
            milestones: self.milestones.clone(),
            gamma: self.gamma,
            sgd: SgdConfig {
                momentum: self.momentum,
                nesterov: !self.no_nesterov,
                weight_decay: self.weight_decay,
            },
            seed: self.seed,
            max_batches: self.max_batches,
            max_eval: self.max_eval,
            init_from: self.init.clone(),
            ..base
        }
    }
}
