//! `cargo xtask <task>`: repository automation, one module per task.
//!
//! Results are printed as tables and written as JSON under `target/`.

mod bench_core;
mod bench_data;
mod bench_qsimd;
mod bench_train;
mod gpu_memory;
mod memory;
mod parallel_ceiling;
mod python;
mod train;

use anyhow::Result;

/// mimalloc keeps freed memory for reuse (see the workspace Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Images/s of training steps (full precision and DGMS) and evaluation,
    /// ResNet-20 and ResNet-18, against PyTorch when importable and
    /// against candle's conv; writes target/bench-train.json.
    BenchTrain(bench_train::Args),
    /// Images/s of the image-folder pipeline (decode, resize, crop,
    /// normalise) with 1 and 2 threads against Pillow on generated
    /// ImageNet-like JPEGs; writes target/bench-data.json.
    BenchData(bench_data::Args),
    /// Bit-packed qsimd kernels vs f32 (candle, gemm crate) per ResNet-18
    /// layer and a 4096x4096 linear layer, and end to end on ResNet-18,
    /// MobileNetV2 and ResNet-50 vs ONNX Runtime (when Python has it);
    /// writes target/bench-qsimd.json.
    BenchQsimd(bench_qsimd::Args),
    /// The main job: FP32 vs post-training quantization vs DGMS on the
    /// embedded data; writes target/train-summary.json.
    Train(train::Args),
    /// Memory of one DGMS training step per network at the reference's
    /// batch size, measured on the CPU through the graph a GPU runs;
    /// writes target/gpu-memory.json.
    GpuMemory(gpu_memory::Args),
    /// Internal: one network's DGMS steps in this process, peak memory out.
    #[command(hide = true)]
    StepMemory(gpu_memory::ChildArgs),
    /// Internal: run one op in this process and print its peak memory.
    #[command(hide = true)]
    MeasurePeak(memory::PeakArgs),
}

fn main() -> Result<()> {
    dgms_train::process::init_process();
    match Cli::parse().task {
        Task::BenchCore(args) => bench_core::run(&args),
        Task::Train(args) => train::run(&args),
        Task::BenchTrain(args) => bench_train::run(&args),
        Task::BenchQsimd(args) => bench_qsimd::run(&args),
        Task::BenchData(args) => bench_data::run(&args),
        Task::MeasurePeak(args) => memory::measure_peak(&args),
        Task::GpuMemory(args) => gpu_memory::run(&args),
        Task::StepMemory(args) => gpu_memory::child(&args),
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

pub use dgms_io::write_atomic;
