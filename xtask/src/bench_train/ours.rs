//! Our side of the training bench: the same steps `dgms pretrain` and `dgms
//! dgms` run (model, optimizer and loss from dgms-train), timed on given
//! batches.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_data::{Loader, LoaderConfig, Mode};
use dgms_models::{build_model_with_backend, ConvBackend, ModelConfig};
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::train::optim::Sgd;
use dgms_train::train::session::{Data, Model};
use dgms_train::train::trainer::optimizer_params;

/// A network and the batches to time it on (the first is the warm-up).
pub struct Workload<'a> {
    pub model: &'a str,
    pub config: &'a ModelConfig,
    pub batches: &'a [(Tensor, Tensor)],
}

/// Images/s of one workload.
pub struct Rates {
    pub train: f64,
    pub eval: f64,
    pub dgms_train: f64,
}

/// The first `count` training batches of the embedded data, as the
/// training loop would see them (augmented, shuffled from seed 0).
pub fn loader_batches(data: &Data, batch: usize, count: usize) -> Result<Vec<(Tensor, Tensor)>> {
    let loader = Loader::new(
        data.train.clone(),
        LoaderConfig::for_split(&data.train, Mode::Train, batch, 0),
    )?;
    loader
        .epoch(0)
        .take(count)
        .map(|b| Ok(b.map(|b| (b.images, b.labels))?))
        .collect()
}

/// A seeded model of the workload on `backend`.
fn model(w: &Workload, backend: ConvBackend) -> Result<Model> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = build_model_with_backend(w.model, w.config, backend, vb)?;
    let model = Model { varmap, net };
    model.reseed(0)?;
    Ok(model)
}

/// Images/s of training steps with `cfg`'s optimizer, after one warm-up.
fn train_rate(model: &Model, cfg: &RunConfig, batches: &[(Tensor, Tensor)]) -> Result<f64> {
    let mut sgd = Sgd::new(optimizer_params(model, cfg), cfg.sgd.clone());
    sgd.set_lr(0.01);
    let step = |(x, y): &(Tensor, Tensor), sgd: &mut Sgd| -> Result<()> {
        let logits = model.net.forward_t(x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        sgd.step(&loss.backward()?)?;
        Ok(())
    };
    step(&batches[0], &mut sgd)?;
    let start = Instant::now();
    for b in &batches[1..] {
        step(b, &mut sgd)?;
    }
    Ok(images(&batches[1..]) / start.elapsed().as_secs_f64())
}

/// Images/s of evaluation forward passes, after one warm-up.
fn eval_rate(model: &Model, batches: &[(Tensor, Tensor)]) -> Result<f64> {
    model.net.forward_t(&batches[0].0, false)?;
    let start = Instant::now();
    for (x, _) in &batches[1..] {
        model.net.forward_t(x, false)?;
    }
    Ok(images(&batches[1..]) / start.elapsed().as_secs_f64())
}

fn images(batches: &[(Tensor, Tensor)]) -> f64 {
    batches.iter().map(|(x, _)| x.dims()[0]).sum::<usize>() as f64
}

/// (training, evaluation) images/s at full precision.
pub fn measure_fp(w: &Workload, backend: ConvBackend) -> Result<(f64, f64)> {
    let model = model(w, backend)?;
    let cfg = RunConfig::pretrain(w.model, "embedded", "unused".into());
    let train = train_rate(&model, &cfg, w.batches)?;
    Ok((train, eval_rate(&model, w.batches)?))
}

/// Full precision, evaluation and a DGMS step with K components on the
/// default layers (the mixtures initialised outside the timing).
pub fn measure(w: &Workload, backend: ConvBackend, k: usize) -> Result<Rates> {
    let (train, eval) = measure_fp(w, backend)?;
    let model = model(w, backend)?;
    let mixture = MixtureSettings::with_k(k);
    model.enable_mixtures(&mixture)?;
    let cfg = RunConfig::dgms(w.model, "embedded", "unused".into(), None, mixture);
    let dgms_train = train_rate(&model, &cfg, w.batches)?;
    Ok(Rates {
        train,
        eval,
        dgms_train,
    })
}
