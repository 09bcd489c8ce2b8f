//! `cargo xtask train --baselines`: the LSQ baseline at each width, a
//! uniform grid of 2^bits levels per layer with a learned step, trained by
//! the straight-through estimator (`dgms dgms --lsq`) from the same
//! full-precision weights, with the same layers, epochs, schedule, lr and
//! seed as DGMS; scored on the same test images and compared with DGMS
//! image by image.

use std::path::Path;

use anyhow::{Context, Result};
use dgms_train::config::{RunConfig, UniformSettings};
use dgms_train::phases::{self, OpenOptions};
use dgms_train::stats::{discordant, mcnemar_exact};
use dgms_train::train::trainer::train;
use serde::Serialize;

use super::{score, Args, Scored, DATA};

/// The baseline's figures at one width (`rows[].lsq` of the summary).
#[derive(Serialize)]
pub struct LsqRow {
    pub top1: f64,
    /// 95 % Wilson interval, in percent.
    pub ci95: [f64; 2],
    /// Share of the quantized layers' weights on the zero level.
    pub sparsity: f64,
    /// Test images right only with DGMS, and only with LSQ.
    pub dgms_only_right: usize,
    pub lsq_only_right: usize,
    /// Two-sided p-value of McNemar's exact test, DGMS vs LSQ.
    pub mcnemar_p_vs_dgms: f64,
    pub seconds: f64,
}

/// The LSQ run of `dgms_cfg`'s width: the same settings with the grid in
/// place of the mixture, in its own run directory.
fn lsq_config(dgms_cfg: &RunConfig, k: usize, out: &Path) -> Result<RunConfig> {
    let mut cfg = dgms_cfg.clone();
    let mixture = cfg.mixture.take().context("the DGMS run has no mixture")?;
    let mut grid = UniformSettings::with_levels(k)
        .with_context(|| format!("--baselines: K = {k} is not a power of two"))?;
    grid.layers = mixture.layers;
    cfg.uniform = Some(grid);
    cfg.out_dir = out.join(format!("lsq-k{k}"));
    Ok(cfg)
}

/// Trains and scores the baseline at `k`; `dgms` are the DGMS model's
/// results on the same images.
pub fn run(
    args: &Args,
    k: usize,
    dgms_cfg: &RunConfig,
    dgms: &Scored,
    out: &Path,
) -> Result<LsqRow> {
    let start = std::time::Instant::now();
    let cfg = lsq_config(dgms_cfg, k, out)?;
    tracing::info!("LSQ baseline: straight-through training of a uniform grid, K = {k}");
    let _ = std::fs::remove_dir_all(&cfg.out_dir);
    let trained = train(&cfg, None)?;
    let opts = OpenOptions {
        data: Some(DATA),
        ..OpenOptions::default()
    };
    let (_, data, model) = phases::open(&trained.last, &opts)?;
    let data = data.context("the LSQ checkpoint's data")?;
    let lsq = score(&model, &data, args)?;
    if lsq.hits.len() != dgms.hits.len() || lsq.hits.iter().zip(&dgms.hits).any(|(a, b)| a.0 != b.0)
    {
        anyhow::bail!("K = {k}: LSQ and DGMS were evaluated on different test images");
    }
    let right = |s: &Scored| s.hits.iter().map(|h| h.1).collect::<Vec<bool>>();
    let (dgms_only, lsq_only) = discordant(&right(dgms), &right(&lsq));
    let (mut zeros, mut total) = (0usize, 0usize);
    for (layer, grid) in model.net.uniform_quantizers() {
        let conv = model
            .net
            .conv(&layer)
            .context("a quantized layer vanished")?;
        let hard = grid
            .hard_weights(conv.weight())?
            .flatten_all()?
            .to_vec1::<f32>()?;
        zeros += hard.iter().filter(|w| **w == 0.0).count();
        total += hard.len();
    }
    Ok(LsqRow {
        top1: lsq.top1,
        ci95: lsq.ci95,
        sparsity: zeros as f64 / total.max(1) as f64,
        dgms_only_right: dgms_only,
        lsq_only_right: lsq_only,
        mcnemar_p_vs_dgms: mcnemar_exact(dgms_only, lsq_only),
        seconds: start.elapsed().as_secs_f64(),
    })
}
