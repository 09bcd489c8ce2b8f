//! The command line: clap's argument structs, and their conversion into
//! dgms-train's plain configuration types (the training flags are in
//! `train_args.rs`, the data commands' in `data_args.rs`). Defaults come from
//! `dgms_train::config`, the same constants `cargo xtask train` uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dgms_train::infer::EngineKind;
use dgms_train::phases;

pub use crate::data_args::{DataCommand, EvalArgs};
pub use crate::train_args::{DeviceArg, MixtureArgs, Phase, TrainArgs};

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
        /// Train the baseline instead of DGMS: a uniform grid of K levels
        /// per layer (K a power of two from 4 to 256; the grid is -K/2 ..
        /// K/2 - 1 steps) with a learned step, trained by the
        /// straight-through estimator as LSQ, on the same layers (README:
        /// Results). The mixture-only flags (--tau, --empirical, ...) do
        /// not apply.
        #[arg(long)]
        lsq: bool,
    },
    /// Hardens a DGMS checkpoint (or a DGMS authors' .pth.tar, with
    /// --model): every mixture weight becomes its hard weight; indices and
    /// codebooks are stored; prints the report.
    Harden {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Re-estimate batch-norm statistics under the hard weights with
        /// this many training batches (no gradients; 0 = keep the
        /// statistics gathered during training) [default: 50; 0 for a
        /// DGMS authors' checkpoint, which records no data].
        #[arg(long)]
        recalibrate_bn: Option<usize>,
        #[command(flatten)]
        import: ImportArgs,
        /// Data source for --recalibrate-bn (default: the run's).
        #[arg(long)]
        data: Option<String>,
        #[command(flatten)]
        device: DeviceArg,
    },
    /// Evaluates a checkpoint (mixture layers hard) or a weights file on
    /// the test (val) split: prints images, top-1, top-5, loss and skipped
    /// files as JSON, with a progress bar on stderr.
    Eval(EvalArgs),
    /// Data tools: `dgms data export` writes what the model would see.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The report (docs/METHOD.md#report: sparsity, bits, compression) of a
    /// DGMS, hardened or DGMS authors' checkpoint, then the same figures
    /// as the authors' code prints them; with --data, also their final
    /// "Best Top-1 | Top-5 | NZ | #Params | CR" line after an evaluation.
    Report {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        import: ImportArgs,
        /// Evaluate the hardened model on this data source's test split
        /// for the authors' final line.
        #[arg(long)]
        data: Option<String>,
        /// With --data: evaluate on the first N test images only.
        #[arg(long, requires = "data")]
        max_eval: Option<usize>,
        /// Also draw every mixture layer into this directory (created if
        /// missing): LAYER.png, the weight histogram with the mixture's
        /// components (after DGMS) and the hard levels over it. Layers kept
        /// in fp32 get none.
        #[arg(long, value_name = "DIR")]
        plot: Option<PathBuf>,
    },
    /// Post-training quantization: k-means init + harden, no training.
    /// Writes a hardened checkpoint, or with --out X.dgms.safetensors the
    /// packed deployment file.
    Quantize(QuantizeArgs),
    /// Exports a checkpoint to the packed deployment format
    /// (FILE.dgms.safetensors); prints the FP32 size, packed size and ratio.
    /// A checkpoint that still has mixtures (a DGMS run's, or a DGMS
    /// authors' .pth.tar with --model) is hardened and packed in one step.
    Export {
        /// A hardened checkpoint (`dgms harden` or `dgms quantize`), a
        /// DGMS checkpoint, or a DGMS authors' checkpoint.
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        import: ImportArgs,
        /// The input shape C,H,W recorded in the file [default: the run's
        /// data; for a DGMS authors' checkpoint its input channels at the
        /// network's designed size, e.g. 3,224,224 for resnet18].
        #[arg(long, value_delimiter = ',')]
        input_shape: Option<Vec<usize>>,
    },
    /// Runs a packed model on the tensor `input` (N, C, H, W) f32 of a
    /// safetensors file; writes the tensor `logits` (N, classes).
    Infer(InferArgs),
}

/// How a command reads the DGMS authors' checkpoints, and hardens.
#[derive(Args, Clone, Debug)]
pub struct ImportArgs {
    /// The network of a DGMS authors' checkpoint (their .pth.tar files do
    /// not record it), e.g. resnet18; checked against a dgms checkpoint's
    /// record when given.
    #[arg(long)]
    pub model: Option<String>,
    /// How mixture weights are hardened: log-space (the most probable
    /// component, computed so that it is right where float32 densities
    /// underflow) or reference (the authors' float32 rule exactly: weights
    /// whose densities all underflow become 0, as in their released models).
    #[arg(long, value_enum, default_value_t = HardeningArg::LogSpace)]
    pub hardening: HardeningArg,
}

/// `--hardening`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HardeningArg {
    LogSpace,
    Reference,
}

impl From<HardeningArg> for phases::HardeningRule {
    fn from(a: HardeningArg) -> Self {
        match a {
            HardeningArg::LogSpace => Self::LogSpace,
            HardeningArg::Reference => Self::Reference,
        }
    }
}

#[derive(Args)]
pub struct QuantizeArgs {
    #[arg(long)]
    pub model: String,
    /// Full-precision weights (a checkpoint, a safetensors or PyTorch
    /// state dict); a DGMS authors' checkpoint is hardened with its own
    /// mixtures (no k-means).
    #[arg(long)]
    pub weights: PathBuf,
    /// Data source giving the input shape and classes [default:
    /// embedded; for packed output of the ImageNet models (resnet18,
    /// resnet50, mobilenet_v2, mnasnet1_0) none: 3x224x224, classes from
    /// the classifier weight].
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
