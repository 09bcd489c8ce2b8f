//! `cargo xtask <task>`: repository automation, one module per task.
//!
//! Results are printed as tables and written as JSON under `target/`.

mod bench_core;
mod bench_train;
mod memory;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "dgms repository tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Benchmark dgms-core: fused vs composed mixture op (speed and peak
    /// memory) and whole-model initialisation; writes target/bench-core.json.
    BenchCore(bench_core::Args),
    /// Images/s of a ResNet-20 training step and evaluation, our conv op vs
    /// candle's; writes target/bench-train.json.
    BenchTrain(bench_train::Args),
    /// The main job: FP32 vs post-training quantization vs DGMS on the
    /// embedded data; writes target/train-summary.json.
    Train(train::Args),
    /// Internal: run one op in this process and print its peak memory.
    #[command(hide = true)]
    MeasurePeak(memory::PeakArgs),
}

fn main() -> Result<()> {
    dgms_cli::pin_rayon_threads();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().task {
        Task::BenchCore(args) => bench_core::run(&args),
        Task::Train(args) => train::run(&args),
        Task::BenchTrain(args) => bench_train::run(&args),
        Task::MeasurePeak(args) => memory::measure_peak(&args),
    }
}

/// The workspace's `target/` directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target"),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees a half-written file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
