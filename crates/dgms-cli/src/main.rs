//! `dgms`: DGMS quantization from the command line.
//!
//! Exit codes: 0 on success, 1 on any error (printed with its chain of
//! causes), 2 on a usage error (clap).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use dgms_cli::config::{MixtureSettings, RunConfig, ScheduleKind};
use dgms_cli::export::{self, ShapeSource, PACKED_SUFFIX};
use dgms_cli::infer::{self, EngineKind};
use dgms_cli::phases;
use dgms_cli::train::optim::SgdConfig;
use dgms_cli::train::trainer::train_until;
use dgms_qsimd::engine::Precision;
use dgms_qsimd::kernels::Isa;

/// `println!` for the command's results that ends the process quietly
/// when stdout is closed (`dgms infer ... | head -1`) instead of
/// panicking, and returns other write errors.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::from(e).context("writing to stdout"));
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "dgms",
    version,
    about = "DGMS quantization: train, harden, evaluate, export, infer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// The SPEC section 5 report (sparsity, bits, compression) of a DGMS or
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
    Quantize {
        #[arg(long)]
        model: String,
        /// Full-precision weights (a checkpoint or a safetensors state dict;
        /// for packed output also a PyTorch .pth state dict).
        #[arg(long)]
        weights: PathBuf,
        /// Data source giving the input shape and classes [default:
        /// embedded; for packed output of resnet18/resnet50/mobilenet_v2
        /// none: 3x224x224, classes from the classifier weight].
        #[arg(long)]
        data: Option<String>,
        /// Packed output only: the input shape C,H,W instead of --data
        /// (classes from the classifier weight), e.g. 3,32,32.
        #[arg(long, value_delimiter = ',', conflicts_with = "data")]
        input_shape: Option<Vec<usize>>,
        #[command(flatten)]
        mixture: MixtureArgs,
        #[arg(long)]
        out: PathBuf,
        /// Evaluate the quantized model on the test set.
        #[arg(long)]
        eval: bool,
    },
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
    Infer {
        /// The packed model (FILE.dgms.safetensors).
        #[arg(long)]
        packed: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// qsimd: the bit-packed kernels; candle: the dgms-models model with
        /// the decoded hard weights.
        #[arg(long, value_enum, default_value_t = EngineKind::Qsimd)]
        engine: EngineKind,
        /// Kernel instruction set for --engine qsimd: auto, scalar, avx2,
        /// avx512 or neon [default: $DGMS_QSIMD, else auto].
        #[arg(long)]
        isa: Option<String>,
        /// --engine qsimd only: the int8 fast path (int8 codebooks,
        /// activations quantized per output pixel; faster, slightly less
        /// accurate: see the README) instead of the exact f32 one.
        #[arg(long)]
        int8: bool,
        /// Run the batch this many times (timing; the first run includes
        /// buffer allocation).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// `embedded`, `fashion-mnist[:DIR]`, `mnist:DIR` or `cifar10:DIR`.
    #[arg(long, default_value = "embedded")]
    data: String,
    /// Epochs [pretrain 8, dgms 4].
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Peak (one-cycle) or base learning rate [pretrain 0.1, dgms 1e-3].
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, value_enum, default_value_t = ScheduleKind::OneCycle)]
    schedule: ScheduleKind,
    /// Multi-step milestones, in epochs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    milestones: Vec<usize>,
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long)]
    no_nesterov: bool,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run directory (checkpoints, metrics.jsonl, config.json).
    #[arg(long)]
    out: PathBuf,
    /// Start from these full-precision weights.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Resume from a checkpoint of this run (restores everything).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop this invocation after N completed epochs (the schedule still
    /// spans --epochs); continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// At most this many batches per epoch.
    #[arg(long)]
    max_batches: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    max_eval: Option<usize>,
}

#[derive(Args)]
struct MixtureArgs {
    /// Components per layer (16 = 4-bit, 8 = 3-bit, 4 = 2-bit).
    #[arg(long, default_value_t = 16)]
    k: usize,
    #[arg(long, default_value_t = 0.01)]
    tau: f32,
    #[arg(long)]
    train_tau: bool,
    /// "Empirical" init: every sigma 0.01.
    #[arg(long)]
    empirical: bool,
    /// Layers with a mixture (comma-separated; default: every conv but the first).
    #[arg(long, value_delimiter = ',')]
    layers: Option<Vec<String>>,
    /// Apply weight decay to the mixture parameters too.
    #[arg(long)]
    mixture_weight_decay: bool,
    #[arg(long, default_value_t = 0)]
    init_seed: u64,
}

impl MixtureArgs {
    fn settings(&self) -> MixtureSettings {
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
    fn config(&self, default_epochs: usize, default_lr: f64) -> RunConfig {
        RunConfig {
            epochs: self.epochs.unwrap_or(default_epochs),
            batch_size: self.batch_size,
            lr: self.lr.unwrap_or(default_lr),
            schedule: self.schedule,
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
            ..RunConfig::pretrain(&self.model, &self.data, self.out.clone())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain(args) => {
            let cfg = args.config(8, 0.1);
            let outcome = train_until(&cfg, args.resume.as_deref(), args.stop_after)?;
            say!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        Command::Dgms {
            train: args,
            mixture,
        } => {
            let mut cfg = args.config(4, 1e-3);
            cfg.mixture = Some(mixture.settings());
            if cfg.init_from.is_none() && args.resume.is_none() {
                anyhow::bail!("dgms needs --init FP_CHECKPOINT (or --resume CHECKPOINT)");
            }
            let outcome = train_until(&cfg, args.resume.as_deref(), args.stop_after)?;
            say!("{}", serde_json::to_string_pretty(&outcome)?);
        }
        Command::Harden {
            checkpoint,
            out,
            recalibrate_bn,
        } => {
            let report = phases::harden(&checkpoint, &out, recalibrate_bn)?;
            print!("{}", report.to_table());
            say!("wrote {}", out.display());
        }
        Command::Eval {
            checkpoint,
            data,
            max_eval,
        } => {
            let result = phases::eval(&checkpoint, data.as_deref(), max_eval)?;
            say!("{}", serde_json::to_string_pretty(&result)?);
        }
        Command::Report { checkpoint, json } => {
            let report = phases::report(&checkpoint)?;
            print!("{}", report.to_table());
            if let Some(path) = json {
                dgms_cli::fsutil::write_atomic(
                    &path,
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
                say!("wrote {}", path.display());
            }
        }
        Command::Quantize {
            model,
            weights,
            data,
            input_shape,
            mixture,
            out,
            eval,
        } => {
            if export::is_packed_path(&out) {
                return quantize_packed(&model, &weights, data, input_shape, &mixture, &out, eval);
            }
            if input_shape.is_some() {
                bail!("--input-shape is only for packed output (--out FILE{PACKED_SUFFIX})");
            }
            let data = data.unwrap_or_else(|| "embedded".to_string());
            let (report, quantized, data_set) =
                phases::quantize(&model, &weights, &data, &mixture.settings(), &out)?;
            print!("{}", report.to_table());
            say!("wrote {}", out.display());
            if eval {
                let tally = dgms_cli::train::session::evaluate(
                    quantized.net.as_ref(),
                    data_set.test.clone(),
                    data_set.kind,
                )
                .context("evaluating the quantized model")?;
                say!(
                    "{}",
                    serde_json::to_string_pretty(&phases::EvalResult::from(tally))?
                );
            }
        }
        Command::Export { checkpoint, out } => {
            let summary = export::export_packed(&checkpoint, &out)?;
            print!("{summary}");
            say!("wrote {}", out.display());
        }
        Command::Infer {
            packed,
            input,
            out,
            engine,
            isa,
            int8,
            repeat,
        } => {
            let precision = if int8 {
                Precision::Int8
            } else {
                Precision::Exact
            };
            // The ISA only matters to the qsimd engine (candle ignores it).
            let isa = match (engine, isa) {
                (EngineKind::Candle, _) => Isa::Scalar,
                (_, Some(choice)) => Isa::from_choice(Some(&choice)).context("--isa")?,
                (_, None) => Isa::from_env().context(dgms_qsimd::kernels::ISA_ENV_VAR)?,
            };
            let outcome = infer::infer(&packed, &input, &out, (engine, isa, precision), repeat)?;
            let mut sorted: Vec<f64> = outcome
                .times
                .iter()
                .map(|t| t.as_secs_f64() * 1e3)
                .collect();
            sorted.sort_by(f64::total_cmp);
            let what = match engine {
                EngineKind::Qsimd => format!("qsimd {precision} ({isa})"),
                EngineKind::Candle => "candle".to_string(),
            };
            say!(
                "{what}: {} images, {} classes; time per batch: {:.3} ms (median of {} runs, min {:.3} ms)",
                outcome.images,
                outcome.classes,
                sorted[sorted.len() / 2],
                sorted.len(),
                sorted[0]
            );
            say!("wrote {}", out.display());
        }
    }
    Ok(())
}

/// `dgms quantize --out X.dgms.safetensors`: the input shape comes from
/// --input-shape, --data, or (ImageNet models) 3x224x224, else the
/// embedded data, as for checkpoint output.
fn quantize_packed(
    model: &str,
    weights: &std::path::Path,
    data: Option<String>,
    input_shape: Option<Vec<usize>>,
    mixture: &MixtureArgs,
    out: &std::path::Path,
    eval: bool,
) -> Result<()> {
    let shape = match (input_shape, &data) {
        (Some(s), _) => ShapeSource::Input(
            s.try_into()
                .map_err(|s| anyhow::anyhow!("--input-shape {s:?}: expected C,H,W"))?,
        ),
        (None, Some(d)) => ShapeSource::Data(d.clone()),
        (None, None) if export::is_imagenet_model(model) => ShapeSource::Input([3, 224, 224]),
        (None, None) => ShapeSource::Data("embedded".to_string()),
    };
    if eval && !matches!(shape, ShapeSource::Data(_)) {
        bail!("--eval needs --data (the test set to evaluate on)");
    }
    let (report, summary, quantized) =
        export::quantize_packed(model, weights, &shape, &mixture.settings(), out)?;
    print!("{}", report.to_table());
    print!("{summary}");
    say!("wrote {}", out.display());
    if let (true, ShapeSource::Data(source)) = (eval, &shape) {
        let data_set = dgms_cli::train::session::Data::load(source)?;
        let tally = dgms_cli::train::session::evaluate(
            quantized.net.as_ref(),
            data_set.test.clone(),
            data_set.kind,
        )
        .context("evaluating the quantized model")?;
        say!(
            "{}",
            serde_json::to_string_pretty(&phases::EvalResult::from(tally))?
        );
    }
    Ok(())
}

fn main() {
    dgms_cli::init_process();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
