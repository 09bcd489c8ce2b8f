//! `dgms`: DGMS quantization from the command line. A thin binary over the
//! `dgms-train` library: clap parsing ([`args`]), one small function per
//! command, and one writer ([`Output`]) through which every result reaches
//! stdout.
//!
//! Exit codes: 0 on success, and also when stdout is closed by its reader
//! (`dgms report ... | head -1`); 1 on any other error (printed with its
//! chain of causes); 2 on a usage error (clap); 130 when Ctrl-C stopped a
//! training run (`pretrain`, `dgms`: the first Ctrl-C stops at the next
//! step boundary and says how to resume, a second exits at once).

mod args;
mod data_args;
mod data_commands;
mod devices;
mod train_args;

use std::fmt::Display;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

/// mimalloc keeps freed memory for reuse (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use args::{Cli, Command, ImportArgs, InferArgs, MixtureArgs, Phase, QuantizeArgs, TrainArgs};
use clap::Parser;
use dgms_qsimd::engine::Precision;
use dgms_qsimd::kernels::{Isa, ISA_ENV_VAR};
use dgms_train::config::RunConfig;
use dgms_train::export::{self, ShapeSource, PACKED_SUFFIX};
use dgms_train::infer::{self, EngineKind};
use dgms_train::layer_pictures::write_layer_pictures;
use dgms_train::parallel::{
    child_rank_from_env, train_child_rank, train_in_process, train_processes, ProcessGroup,
};
use dgms_train::phases::{self, EvalResult};
use dgms_train::train::session::{evaluate, Data};
use dgms_train::train::trainer::{train_with, TrainOptions};
use dgms_train::{DeviceSpec, TrainError};

/// stdout was closed by its reader: the command ends quietly, exit 0.
#[derive(Debug)]
struct StdoutClosed;

impl Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Exit code of a training run stopped by Ctrl-C (128 + SIGINT, as shells
/// report it).
const EXIT_INTERRUPTED: i32 = 130;

/// Raised by the first Ctrl-C; the training loop stops at the next step
/// boundary.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// A training run stopped by Ctrl-C: the message says what survives and
/// how to resume; `main` exits with [`EXIT_INTERRUPTED`].
#[derive(Debug)]
struct Interrupted(String);

impl Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The first Ctrl-C raises [`STOP_REQUESTED`]; a second exits at once
/// (every file is written atomically, so none is left half-written).
fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP_REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting now");
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!("interrupt: stopping at the next step (Ctrl-C again to exit at once)");
    })
    .context("installing the Ctrl-C handler")
}

/// The one way results reach stdout. A write to a closed stdout becomes
/// [`StdoutClosed`], which `main` turns into a quiet exit 0 for every
/// command; other write errors are errors.
pub(crate) struct Output {
    stdout: std::io::Stdout,
}

impl Output {
    fn new() -> Self {
        Self {
            stdout: std::io::stdout(),
        }
    }

    /// Writes `text` as it is (tables end in their own newline).
    pub(crate) fn text(&mut self, text: impl Display) -> Result<()> {
        let mut lock = self.stdout.lock();
        match write!(lock, "{text}").and_then(|()| lock.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
            Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
        }
    }

    /// Writes `text` and a newline.
    pub(crate) fn line(&mut self, text: impl Display) -> Result<()> {
        self.text(format_args!("{text}\n"))
    }

    /// Writes `value` as pretty JSON and a newline.
    pub(crate) fn json(&mut self, value: &impl serde::Serialize) -> Result<()> {
        self.line(serde_json::to_string_pretty(value)?)
    }
}

fn main() {
    dgms_train::process::init_process();
    let mut out = Output::new();
    let command = Cli::parse().command;
    let training = matches!(command, Command::Pretrain(_) | Command::Dgms { .. });
    let result = match training {
        true => install_interrupt_handler().and_then(|()| run(command, &mut out)),
        false => run(command, &mut out),
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is::<StdoutClosed>() => {}
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            std::process::exit(EXIT_INTERRUPTED);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(command: Command, out: &mut Output) -> Result<()> {
    match command {
        Command::Pretrain(args) => pretrain(&args, out),
        Command::Dgms {
            train,
            mixture,
            lsq,
        } => dgms(&train, &mixture, lsq, out),
        Command::Harden {
            checkpoint,
            out: path,
            recalibrate_bn,
            import,
            data,
            device,
        } => harden(
            &checkpoint,
            &path,
            recalibrate_bn,
            &import,
            (data.as_deref(), device.device),
            out,
        ),
        Command::Eval(args) => data_commands::eval(&args, out),
        Command::Data { command } => match command {
            args::DataCommand::Export(args) => data_commands::export(&args, out),
        },
        Command::Report {
            checkpoint,
            json,
            import,
            data,
            max_eval,
            plot,
        } => report(
            &checkpoint,
            json.as_deref(),
            plot.as_deref(),
            &import,
            data.as_deref(),
            max_eval,
            out,
        ),
        Command::Quantize(args) => quantize(&args, out),
        Command::Export {
            checkpoint,
            out: path,
            import,
            input_shape,
        } => {
            let opts = export::ExportOptions {
                model: import.model.as_deref(),
                input_shape: input_shape
                    .as_deref()
                    .map(export::input_shape)
                    .transpose()?,
                hardening: import.hardening.into(),
            };
            out.text(export::export_packed_with(&checkpoint, &path, &opts)?)?;
            out.line(format_args!("wrote {}", path.display()))
        }
        Command::Infer(args) => run_infer(&args, out),
    }
}

/// `dgms pretrain`.
fn pretrain(args: &TrainArgs, out: &mut Output) -> Result<()> {
    let cfg = args.config(Phase::Pretrain, None, false)?;
    run_training(Phase::Pretrain, args, &cfg, out)
}

/// `dgms dgms`: the same defaults as `cargo xtask train` (`RunConfig::dgms`).
fn dgms(args: &TrainArgs, mixture: &MixtureArgs, lsq: bool, out: &mut Output) -> Result<()> {
    let cfg = args.config(Phase::Dgms, Some(mixture), lsq)?;
    if cfg.init_from.is_none() && args.resume.is_none() {
        bail!("dgms needs --init FP_CHECKPOINT (or --resume CHECKPOINT)");
    }
    run_training(Phase::Dgms, args, &cfg, out)
}

/// Trains `cfg`, stopping at the next step boundary after a Ctrl-C with
/// [`Interrupted`], whose message names the last good checkpoint and the
/// command that resumes it.
fn run_training(phase: Phase, args: &TrainArgs, cfg: &RunConfig, out: &mut Output) -> Result<()> {
    let opts = TrainOptions {
        resume: args.resume.as_deref(),
        stop_after: args.stop_after,
        force: args.force,
        stop: Some(&STOP_REQUESTED),
        device: args.device.device,
    };
    let trained = match child_rank_from_env()? {
        // A rank started by a launcher: it trains its part, rank 0 reports.
        Some((rank, world, addr)) => {
            train_child_rank(cfg, &opts, rank, world, &addr)?;
            return Ok(());
        }
        None => match process_group(args)? {
            Some(group) => {
                let exe =
                    std::env::current_exe().context("finding this program to start the ranks")?;
                let argv: Vec<_> = std::env::args_os().skip(1).collect();
                train_processes(cfg, &opts, &group, &exe, &argv)
            }
            None => match devices::local_ranks(args.ranks, None)? {
                1 => train_with(cfg, &opts),
                n => train_in_process(cfg, &opts, n),
            },
        },
    };
    match trained {
        Ok(outcome) => out.json(&outcome),
        Err(TrainError::Interrupted { step, epoch, last }) => {
            let kept = match last {
                Some(last) => format!(
                    "the last good checkpoint is {last}; resume with: dgms {} --resume {last}",
                    phase.command(),
                    last = last.display()
                ),
                None => format!(
                    "no checkpoint was written yet; start again with --force (the run directory {} holds only its config)",
                    cfg.out_dir.display()
                ),
            };
            Err(Interrupted(format!(
                "interrupted: training stopped at step {step} (epoch {epoch}); {kept}"
            ))
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The process group of `--rank-processes` / `--nodes`, or `None` for
/// ranks as threads (or one process).
fn process_group(args: &TrainArgs) -> Result<Option<ProcessGroup>> {
    let local_ranks = devices::local_ranks(args.ranks, args.devices.as_ref())?;
    if args.nodes == 1 && !args.rank_processes && args.devices.is_none() {
        if args.node_rank != 0 || args.rendezvous.is_some() {
            bail!("--node-rank and --rendezvous belong to a run with --rank-processes or --nodes");
        }
        return Ok(None);
    }
    if args.node_rank >= args.nodes {
        bail!(
            "--node-rank {}: must be below --nodes {}",
            args.node_rank,
            args.nodes
        );
    }
    if args.nodes > 1 && args.rendezvous.is_none() {
        bail!(
            "--nodes {}: needs --rendezvous HOST:PORT (where node 0 listens)",
            args.nodes
        );
    }
    Ok(Some(ProcessGroup {
        nodes: args.nodes as usize,
        node_rank: args.node_rank as usize,
        local_ranks,
        rendezvous: args.rendezvous.clone(),
        devices: args.devices.as_ref().map(|d| d.0.clone()),
    }))
}

/// `dgms harden`.
fn harden(
    checkpoint: &Path,
    path: &Path,
    recalibrate_bn: Option<usize>,
    import: &ImportArgs,
    (data, device): (Option<&str>, DeviceSpec),
    out: &mut Output,
) -> Result<()> {
    let opts = phases::OpenOptions {
        model: import.model.as_deref(),
        data,
        device,
        ..Default::default()
    };
    let report = phases::harden_with(
        checkpoint,
        path,
        recalibrate_bn,
        &opts,
        import.hardening.into(),
    )?;
    out.text(report.to_table())?;
    out.line(format_args!("wrote {}", path.display()))
}

/// `dgms report`: this project's table, then the authors' report; with
/// `plot`, one picture per mixture layer in that directory.
fn report(
    checkpoint: &Path,
    json: Option<&Path>,
    plot: Option<&Path>,
    import: &ImportArgs,
    data: Option<&str>,
    max_eval: Option<usize>,
    out: &mut Output,
) -> Result<()> {
    if let Some(path) = json {
        dgms_io::ensure_not_input("--json", path, &[("--checkpoint", checkpoint)])?;
    }
    // Before the work: an unusable directory is reported at once.
    if let Some(dir) = plot {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--plot {}: cannot create the directory", dir.display()))?;
    }
    let opts = phases::OpenOptions {
        model: import.model.as_deref(),
        data,
        ..Default::default()
    };
    let eval = phases::EvalOptions {
        data,
        max_eval,
        progress: true,
        ..Default::default()
    };
    let (report, pictures) = phases::report_with_pictures(
        checkpoint,
        &opts,
        import.hardening.into(),
        data.is_some().then_some(&eval),
        plot.is_some(),
    )?;
    // The files first, so that they are written even when stdout is closed.
    if let Some(path) = json {
        dgms_io::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    let drawn = match plot {
        Some(dir) => write_layer_pictures(dir, &pictures)
            .with_context(|| format!("--plot {}: writing the layer pictures", dir.display()))?,
        None => Vec::new(),
    };
    out.text(report.table.to_table())?;
    out.line(format_args!("\nAs the DGMS authors' code reports it:"))?;
    out.text(report.reference.to_text())?;
    for path in json
        .iter()
        .copied()
        .chain(drawn.iter().map(|p| p.as_path()))
    {
        out.line(format_args!("wrote {}", path.display()))?;
    }
    Ok(())
}

/// `dgms quantize`: a hardened checkpoint, or a packed file when `--out`
/// ends in `.dgms.safetensors`.
fn quantize(args: &QuantizeArgs, out: &mut Output) -> Result<()> {
    if export::is_packed_path(&args.out) {
        return quantize_packed(args, out);
    }
    if args.input_shape.is_some() {
        bail!("--input-shape is only for packed output (--out FILE{PACKED_SUFFIX})");
    }
    let data = args.data.as_deref().unwrap_or("embedded");
    let (report, quantized, data_set) = phases::quantize(
        &args.model,
        &args.weights,
        data,
        &args.mixture.settings(),
        &args.out,
    )?;
    out.text(report.to_table())?;
    out.line(format_args!("wrote {}", args.out.display()))?;
    if args.eval {
        let tally = evaluate(quantized.net.as_ref(), &data_set.test)
            .context("evaluating the quantized model")?;
        out.json(&EvalResult::from(tally))?;
    }
    Ok(())
}

/// `dgms quantize --out X.dgms.safetensors`: the input shape comes from
/// --input-shape, --data, or (ImageNet models) 3x224x224, else the
/// embedded data, as for checkpoint output.
fn quantize_packed(args: &QuantizeArgs, out: &mut Output) -> Result<()> {
    let shape = match (&args.input_shape, &args.data) {
        (Some(s), _) => ShapeSource::Input(export::input_shape(s)?),
        (None, Some(d)) => ShapeSource::Data(d.clone()),
        (None, None) if export::is_imagenet_model(&args.model) => ShapeSource::Input([3, 224, 224]),
        (None, None) => ShapeSource::Data("embedded".to_string()),
    };
    if args.eval && !matches!(shape, ShapeSource::Data(_)) {
        bail!("--eval needs --data (the test set to evaluate on)");
    }
    let mixture = args.mixture.settings();
    let (report, summary, quantized) =
        export::quantize_packed(&args.model, &args.weights, &shape, &mixture, &args.out)?;
    out.text(report.to_table())?;
    out.text(summary)?;
    out.line(format_args!("wrote {}", args.out.display()))?;
    if let (true, ShapeSource::Data(source)) = (args.eval, &shape) {
        let data_set = Data::load(source)?;
        let tally = evaluate(quantized.net.as_ref(), &data_set.test)
            .context("evaluating the quantized model")?;
        out.json(&EvalResult::from(tally))?;
    }
    Ok(())
}

/// `dgms infer`: runs the packed model, writes the logits, prints the
/// timing.
fn run_infer(args: &InferArgs, out: &mut Output) -> Result<()> {
    let engine = EngineKind::from(args.engine);
    let precision = if args.int8 {
        Precision::Int8
    } else {
        Precision::Exact
    };
    // The ISA only matters to the qsimd engine (candle ignores it).
    let isa = match (engine, &args.isa) {
        (EngineKind::Candle, _) => Isa::Scalar,
        (_, Some(choice)) => Isa::from_choice(Some(choice)).context("--isa")?,
        (_, None) => Isa::from_env().context(ISA_ENV_VAR)?,
    };
    let settings = infer::InferSettings {
        engine,
        isa,
        precision,
        repeat: args.repeat,
        allow_nonfinite: args.allow_nonfinite,
    };
    let outcome = infer::infer(&args.packed, &args.input, &args.out, settings)?;
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
    out.line(format_args!(
        "{what}: {} images, {} classes; time per batch: {:.3} ms (median of {} runs, min {:.3} ms)",
        outcome.images,
        outcome.classes,
        sorted[sorted.len() / 2],
        sorted.len(),
        sorted[0]
    ))?;
    out.line(format_args!("wrote {}", args.out.display()))
}
