//! `cargo xtask bench-train`: images/s of training steps and evaluation, ours
//! against PyTorch's on the same workloads in the same run (when Python with
//! torch is importable; the bench says so when not), and our conv op
//! against candle's own.
//!
//! Workloads (the issue's): ResNet-20 with a 1-channel stem on the embedded
//! data's shape (1 x 28 x 28, batch 128) and torchvision's ResNet-18 at
//! 3 x 112 x 112, batch 32 (1000 classes, random data). Each: a
//! full-precision step (forward, cross entropy, backward, SGD momentum 0.9
//! Nesterov, weight decay 5e-4), evaluation, and a DGMS step (K = 16 on
//! every conv but the first, the default layers). One warm-up step, then
//! `--steps` timed ones. Writes `target/bench-train.json`; ratios are
//! ours / theirs (> 1: we are faster).

mod ours;
mod torch_peer;

use anyhow::Result;
use candle_core::{Device, Tensor};
use dgms_arch::{architecture, ArchConfig};
use dgms_models::ConvBackend;
use dgms_train::train::session::Data;
use serde::Serialize;

use ours::{Rates, Workload};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed training steps (and evaluation batches) per measurement.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Batch of the ResNet-20 workload.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Skip the ResNet-18 workload (about a minute per side on 2 cores).
    #[arg(long)]
    no_resnet18: bool,
    /// Skip the comparison with candle's conv.
    #[arg(long)]
    no_candle: bool,
}

/// Mixture components of the DGMS steps.
const K: usize = 16;

/// One workload's figures: ours, PyTorch's (when it ran) and the ratios.
#[derive(Serialize, Default)]
struct Side {
    train_images_per_s: f64,
    eval_images_per_s: f64,
    dgms_train_images_per_s: f64,
    torch_train_images_per_s: Option<f64>,
    torch_eval_images_per_s: Option<f64>,
    torch_dgms_train_images_per_s: Option<f64>,
    vs_torch: Option<f64>,
    eval_vs_torch: Option<f64>,
    dgms_vs_torch: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    threads: usize,
    steps: usize,
    /// Why PyTorch did not run, if it did not.
    torch_status: String,
    torch_version: Option<String>,
    /// ResNet-20, 1 x 28 x 28, batch `batch_size`: the keys without prefix.
    batch_size: usize,
    #[serde(flatten)]
    resnet20: Side,
    candle_train_images_per_s: Option<f64>,
    candle_eval_images_per_s: Option<f64>,
    speedup_vs_candle_conv: Option<f64>,
    eval_speedup_vs_candle_conv: Option<f64>,
    /// ResNet-18, 3 x 112 x 112, batch 32.
    resnet18: Option<Side>,
    /// What a second thread can add on this machine at most: two
    /// independent copies of the f32 GEMV against one (see
    /// `parallel_ceiling`); both sides of the comparison are capped by it.
    parallel_ceiling: crate::parallel_ceiling::Ceiling,
}

fn side(ours: &Rates, torch: Option<&torch_peer::TorchResult>) -> Side {
    let ratio = |a: f64, b: Option<f64>| b.map(|b| a / b);
    let (t_train, t_eval) = (
        torch.map(|t| t.train_images_per_s),
        torch.map(|t| t.eval_images_per_s),
    );
    let t_dgms = torch.and_then(|t| t.dgms_train_images_per_s);
    Side {
        train_images_per_s: ours.train,
        eval_images_per_s: ours.eval,
        dgms_train_images_per_s: ours.dgms_train,
        torch_train_images_per_s: t_train,
        torch_eval_images_per_s: t_eval,
        torch_dgms_train_images_per_s: t_dgms,
        vs_torch: ratio(ours.train, t_train),
        eval_vs_torch: ratio(ours.eval, t_eval),
        dgms_vs_torch: ratio(ours.dgms_train, t_dgms),
    }
}

fn print_side(title: &str, s: &Side) {
    println!("{title}");
    println!(
        "  {:<22} {:>10} {:>10} {:>8}",
        "images/s", "dgms", "pytorch", "ratio"
    );
    let row = |name: &str, ours: f64, torch: Option<f64>, ratio: Option<f64>| {
        let t = torch.map_or("-".into(), |t| format!("{t:.1}"));
        let r = ratio.map_or("-".into(), |r| format!("{r:.2}x"));
        println!("  {name:<22} {ours:>10.1} {t:>10} {r:>8}");
    };
    row(
        "training step (fp32)",
        s.train_images_per_s,
        s.torch_train_images_per_s,
        s.vs_torch,
    );
    row(
        "evaluation",
        s.eval_images_per_s,
        s.torch_eval_images_per_s,
        s.eval_vs_torch,
    );
    row(
        "DGMS training step",
        s.dgms_train_images_per_s,
        s.torch_dgms_train_images_per_s,
        s.dgms_vs_torch,
    );
}

/// Random images and labels: `batches` batches of `shape` for the
/// workloads without a data set here.
fn random_batches(
    batches: usize,
    batch: usize,
    arch: &ArchConfig,
) -> Result<Vec<(Tensor, Tensor)>> {
    let dev = Device::Cpu;
    let (c, s) = (arch.in_channels, arch.image_size);
    (0..batches)
        .map(|b| {
            let images = Tensor::randn(0f32, 1f32, (batch, c, s, s), &dev)?;
            let labels: Vec<u32> = (0..batch)
                .map(|i| ((b * batch + i) * 7919 % arch.num_classes) as u32)
                .collect();
            Ok((images, Tensor::new(labels, &dev)?))
        })
        .collect()
}

pub fn run(args: &Args) -> Result<()> {
    let threads = rayon::current_num_threads();
    let peer_dir = crate::target_dir().join("bench-train");
    let unavailable = torch_peer::unavailable();
    if let Some(why) = &unavailable {
        println!("PyTorch peer skipped: {why}");
    }
    let mut torch_version = None;
    let mut peer = |arch: &dgms_arch::Architecture, batch: usize| -> Result<_> {
        if unavailable.is_some() {
            return Ok(None);
        }
        let run = torch_peer::PeerRun {
            arch,
            batch,
            steps: args.steps,
            threads,
            k: K,
            dgms: true,
        };
        let result = torch_peer::measure(&peer_dir, &run)?;
        torch_version = Some(result.torch_version.clone());
        Ok(Some(result))
    };

    // ResNet-20 on the embedded data.
    let data = Data::load("embedded")?;
    let cfg20 = data.model_config();
    let batches = ours::loader_batches(&data, args.batch_size, args.steps + 1)?;
    let w20 = Workload {
        model: "resnet20",
        config: &cfg20,
        batches: &batches,
    };
    let ours20 = ours::measure(&w20, ConvBackend::Im2col, K)?;
    let torch20 = peer(&architecture("resnet20", &cfg20)?, args.batch_size)?;
    let resnet20 = side(&ours20, torch20.as_ref());
    let candle = match args.no_candle {
        true => None,
        false => Some(ours::measure_fp(&w20, ConvBackend::Candle)?),
    };

    // ResNet-18 at 112 x 112.
    let resnet18 = match args.no_resnet18 {
        true => None,
        false => {
            let cfg18 = ArchConfig {
                in_channels: 3,
                num_classes: 1000,
                image_size: 112,
            };
            let batches = random_batches(args.steps + 1, 32, &cfg18)?;
            let w18 = Workload {
                model: "resnet18",
                config: &cfg18,
                batches: &batches,
            };
            let ours18 = ours::measure(&w18, ConvBackend::Im2col, K)?;
            let torch18 = peer(&architecture("resnet18", &cfg18)?, 32)?;
            Some(side(&ours18, torch18.as_ref()))
        }
    };

    let report = Report {
        threads,
        steps: args.steps,
        torch_status: unavailable.clone().unwrap_or_else(|| "ran".into()),
        torch_version,
        batch_size: args.batch_size,
        candle_train_images_per_s: candle.map(|c| c.0),
        candle_eval_images_per_s: candle.map(|c| c.1),
        speedup_vs_candle_conv: candle.map(|c| resnet20.train_images_per_s / c.0),
        eval_speedup_vs_candle_conv: candle.map(|c| resnet20.eval_images_per_s / c.1),
        resnet20,
        resnet18,
        parallel_ceiling: crate::parallel_ceiling::measure(crate::parallel_ceiling::Kernel::F32)?,
    };
    println!(
        "{threads} threads, {} timed steps, K = {K} for DGMS; ratio = dgms / pytorch",
        args.steps
    );
    let (c, h, w) = data.train.shape();
    print_side(
        &format!("ResNet-20 {c}x{h}x{w}, batch {}", args.batch_size),
        &report.resnet20,
    );
    if let Some(s) = &report.resnet18 {
        print_side("ResNet-18 3x112x112, batch 32", s);
    }
    if let (Some(t), Some(e)) = (
        report.candle_train_images_per_s,
        report.candle_eval_images_per_s,
    ) {
        println!(
            "ResNet-20 with candle's conv: training {t:.1} images/s ({:.2}x ours), evaluation {e:.1} ({:.2}x ours)",
            t / report.resnet20.train_images_per_s,
            e / report.resnet20.eval_images_per_s
        );
    }
    println!(
        "{}",
        crate::parallel_ceiling::describe(&report.parallel_ceiling)
    );
    let path = crate::target_dir().join("bench-train.json");
    crate::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
