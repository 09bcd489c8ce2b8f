//! `cargo xtask gpu-memory`: the memory one DGMS training step holds, per
//! network, at the reference's batch size (issue 15, "Scaling out").
//!
//! No GPU here, so it is measured on the CPU through the graph a GPU runs:
//! candle's convolution and batch norm (what `ConvBackend::for_device`
//! picks off the CPU) and the fused mixture op, whose CUDA body keeps the
//! same tensors as its CPU body. Each (network, batch) runs in a child
//! process, which reports its peak RSS (model, mixtures, SGD state, input
//! batch and two training steps) minus its RSS before building anything;
//! two batch sizes give a fixed part and a per-image part, extrapolated
//! linearly to the reference's batch. The GPU adds what this cannot see:
//! the CUDA context, cuDNN's workspaces and the caching allocator's slack.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_models::{build_model_with_backend, ConvBackend, ModelConfig};
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::train::optim::Sgd;
use dgms_train::train::session::Model;
use dgms_train::train::trainer::optimizer_params;
use serde::Serialize;

use crate::memory::{child_number, status_kib};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Networks to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "resnet20,resnet18,mobilenet_v2,resnet50"
    )]
    models: Vec<String>,
    /// The two batch sizes measured (the line through them is
    /// extrapolated); default 32,64 for the CIFAR networks and 4,8 for the
    /// ImageNet ones (smaller batches overstate the per-image part: the
    /// allocator's granularity is a larger share).
    #[arg(long, value_delimiter = ',')]
    batches: Option<Vec<usize>>,
    /// Mixture components (16 = 4 bits).
    #[arg(long, default_value_t = 16)]
    k: usize,
}

#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    #[arg(long)]
    model: String,
    #[arg(long)]
    batch: usize,
    #[arg(long)]
    k: usize,
}

/// Whether `model` is one of the CIFAR networks.
fn is_cifar(model: &str) -> bool {
    ["resnet20", "resnet32", "resnet56", "vgg_small"].contains(&model)
}

/// The reference's input and batch: CIFAR-10 at 128 for the CIFAR
/// networks, ImageNet at 256 for the others.
fn reference(model: &str) -> (ModelConfig, usize) {
    if is_cifar(model) {
        let cfg = ModelConfig {
            in_channels: 3,
            num_classes: 10,
            image_size: 32,
        };
        (cfg, 128)
    } else {
        let cfg = ModelConfig {
            in_channels: 3,
            num_classes: 1000,
            image_size: 224,
        };
        (cfg, 256)
    }
}

/// Child side: builds the model with mixtures on the GPU's ops, runs two
/// DGMS steps on a random batch, prints the peak RSS growth in bytes.
pub fn child(args: &ChildArgs) -> Result<()> {
    let (cfg, _) = reference(&args.model);
    let before = status_kib("VmRSS:")?;
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak-RSS counter via /proc/self/clear_refs")?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = build_model_with_backend(&args.model, &cfg, ConvBackend::Candle, vb)?;
    let model = Model { varmap, net };
    model.reseed(0)?;
    let mixture = MixtureSettings::with_k(args.k);
    model.enable_mixtures(&mixture)?;
    let run = RunConfig::dgms(&args.model, "random", "unused".into(), None, mixture);
    let mut sgd = Sgd::new(optimizer_params(&model, &run), run.sgd.clone());
    sgd.set_lr(0.01);
    let s = cfg.image_size;
    let x = Tensor::randn(0f32, 1.0, (args.batch, cfg.in_channels, s, s), &Device::Cpu)?;
    let labels: Vec<u32> = (0..args.batch)
        .map(|i| (i % cfg.num_classes) as u32)
        .collect();
    let y = Tensor::from_vec(labels, args.batch, &Device::Cpu)?;
    // Two steps: the first allocates the momentum buffers.
    for _ in 0..2 {
        let logits = model.net.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        sgd.step(&loss.backward()?)?;
    }
    let peak = status_kib("VmHWM:")?;
    println!("{}", peak.saturating_sub(before) * 1024);
    Ok(())
}

fn measure(model: &str, batch: usize, k: usize) -> Result<f64> {
    let (b, k) = (batch.to_string(), k.to_string());
    child_number(
        &format!("the step-memory child for {model} at batch {batch}"),
        &["step-memory", "--model", model, "--batch", &b, "--k", &k],
    )
}

#[derive(Serialize)]
struct Row {
    model: String,
    k: usize,
    batches: Vec<usize>,
    peak_bytes: Vec<f64>,
    fixed_bytes: f64,
    per_image_bytes: f64,
    reference_batch: usize,
    at_reference_batch_bytes: f64,
}

/// The two batch sizes for `model`.
fn batches(args: &Args, model: &str) -> Result<(usize, usize)> {
    let (b1, b2) = match &args.batches {
        Some(b) if b.len() == 2 => (b[0], b[1]),
        Some(b) => bail!("--batches takes two sizes, got {b:?}"),
        None if is_cifar(model) => (32, 64),
        None => (4, 8),
    };
    if b1 == 0 || b2 <= b1 {
        bail!("--batches: expected 0 < first < second, got {b1},{b2}");
    }
    Ok((b1, b2))
}

pub fn run(args: &Args) -> Result<()> {
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!(
        "DGMS training step memory (K = {}), measured on the CPU with candle's conv and batch norm and the fused mixture op:",
        args.k
    );
    println!(
        "{:14} {:>16} {:>16} {:>10} {:>12} {:>16}",
        "network", "first (batch)", "second (batch)", "fixed", "per image", "at ref. batch"
    );
    let mut rows = Vec::new();
    for model in &args.models {
        let (b1, b2) = batches(args, model)?;
        let (_, reference_batch) = reference(model);
        let p1 = measure(model, b1, args.k)?;
        let p2 = measure(model, b2, args.k)?;
        let per_image = ((p2 - p1) / (b2 - b1) as f64).max(0.0);
        let fixed = p1 - per_image * b1 as f64;
        let at_ref = fixed + per_image * reference_batch as f64;
        println!(
            "{model:14} {:>6.3} GiB ({b1:>3}) {:>6.3} GiB ({b2:>3}) {:>6.3} GiB {:>8.1} MiB {:>9.2} GiB (batch {reference_batch})",
            gib(p1),
            gib(p2),
            gib(fixed),
            per_image / (1u64 << 20) as f64,
            gib(at_ref)
        );
        rows.push(Row {
            model: model.clone(),
            k: args.k,
            batches: vec![b1, b2],
            peak_bytes: vec![p1, p2],
            fixed_bytes: fixed,
            per_image_bytes: per_image,
            reference_batch,
            at_reference_batch_bytes: at_ref,
        });
    }
    let path = crate::target_dir().join("gpu-memory.json");
    crate::write_atomic(&path, serde_json::to_string_pretty(&rows)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
