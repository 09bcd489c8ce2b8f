//! `cargo xtask bench-train`: images/s of a ResNet-20 training step (forward,
//! backward, SGD update; batch 128) and of evaluation, on the embedded
//! data's shape (1 x 28 x 28), with the project's im2col + GEMM conv op and
//! with candle's own conv, measured in the same run. Writes
//! `target/bench-train.json`.

use std::time::Instant;

use anyhow::Result;
use dgms_data::{Loader, LoaderConfig, Mode};
use dgms_models::{build_model_with_backend, ConvBackend};
use dgms_train::config::RunConfig;
use dgms_train::train::optim::Sgd;
use dgms_train::train::session::{Data, Model};
use dgms_train::train::trainer::optimizer_params;
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed training steps (and evaluation batches) per backend.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
}

#[derive(Serialize)]
struct Report {
    model: &'static str,
    input: [usize; 3],
    batch_size: usize,
    steps: usize,
    threads: usize,
    train_images_per_s: f64,
    eval_images_per_s: f64,
    candle_train_images_per_s: f64,
    candle_eval_images_per_s: f64,
    speedup_vs_candle_conv: f64,
    eval_speedup_vs_candle_conv: f64,
}

/// (train images/s, eval images/s) of a model on `backend`.
fn measure(data: &Data, args: &Args, backend: ConvBackend) -> Result<(f64, f64)> {
    // `Model::new` with the backend chosen: the same seeded weights.
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    let net = build_model_with_backend("resnet20", &data.model_config(), backend, vb)?;
    let model = Model { varmap, net };
    model.reseed(0)?;
    let cfg = RunConfig::pretrain("resnet20", "embedded", "unused".into());
    let mut sgd = Sgd::new(optimizer_params(&model, &cfg), cfg.sgd);
    sgd.set_lr(0.01);
    let loader = Loader::new(
        data.train.clone(),
        LoaderConfig::for_split(&data.train, Mode::Train, args.batch_size, 0),
    )?;
    let batches: Vec<_> = loader
        .epoch(0)
        .take(args.steps + 1)
        .collect::<Result<_, _>>()?;
    let step = |b: &dgms_data::Batch, sgd: &mut Sgd| -> Result<()> {
        let logits = model.net.forward_t(&b.images, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &b.labels)?;
        sgd.step(&loss.backward()?)?;
        Ok(())
    };
    step(&batches[0], &mut sgd)?; // warm-up
    let start = Instant::now();
    for b in &batches[1..] {
        step(b, &mut sgd)?;
    }
    let train = (args.steps * args.batch_size) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for b in &batches[1..] {
        model.net.forward_t(&b.images, false)?;
    }
    let eval = (args.steps * args.batch_size) as f64 / start.elapsed().as_secs_f64();
    Ok((train, eval))
}

pub fn run(args: &Args) -> Result<()> {
    let data = Data::load("embedded")?;
    let (train, eval) = measure(&data, args, ConvBackend::Im2col)?;
    let (candle_train, candle_eval) = measure(&data, args, ConvBackend::Candle)?;
    let (c, h, w) = data.train.shape();
    let report = Report {
        model: "resnet20",
        input: [c, h, w],
        batch_size: args.batch_size,
        steps: args.steps,
        threads: rayon::current_num_threads(),
        train_images_per_s: train,
        eval_images_per_s: eval,
        candle_train_images_per_s: candle_train,
        candle_eval_images_per_s: candle_eval,
        speedup_vs_candle_conv: train / candle_train,
        eval_speedup_vs_candle_conv: eval / candle_eval,
    };
    println!(
        "ResNet-20 {c}x{h}x{w}, batch {}, {} threads, {} timed steps",
        args.batch_size, report.threads, args.steps
    );
    println!(
        "{:<28} {:>14} {:>14} {:>8}",
        "images/s", "im2col+gemm", "candle conv", "ratio"
    );
    println!(
        "{:<28} {:>14.1} {:>14.1} {:>7.2}x",
        "training step", train, candle_train, report.speedup_vs_candle_conv
    );
    println!(
        "{:<28} {:>14.1} {:>14.1} {:>7.2}x",
        "evaluation", eval, candle_eval, report.eval_speedup_vs_candle_conv
    );
    let path = crate::target_dir().join("bench-train.json");
    crate::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}
