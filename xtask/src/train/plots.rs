//! The main job's pictures in `target/train-plots/`: top-1 by width, and
//! two layers of a fine-tuned network with their mixture at initialisation
//! and after DGMS.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dgms_core::{init_params, InitConfig, MixtureOptions};
use dgms_plot::{layer_png, top1_bars_png, WidthTop1};
use dgms_train::config::MixtureSettings;
use dgms_train::layer_pictures::LayerPicture;
use dgms_train::train::checkpoint;

use super::Summary;

/// Writes the pictures; returns their paths. `trained` is a DGMS
/// checkpoint (mixtures not yet hardened) at `k`, fine-tuned from
/// `pretrained`: its first and last mixture layers are drawn.
pub fn write(
    dir: &Path,
    summary: &Summary,
    trained: &Path,
    pretrained: &Path,
    k: usize,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let bars: Vec<WidthTop1> = summary
        .rows
        .iter()
        .map(|r| WidthTop1 {
            label: format!("{}-bit (K = {})", r.bits, r.k),
            ptq: r.ptq_top1,
            lsq: r.lsq.as_ref().map(|l| l.top1),
            dgms: r.dgms_top1,
        })
        .collect();
    let path = dir.join("top1-by-width.png");
    top1_bars_png(&path, summary.fp32_top1, &bars)?;
    written.push(path);

    let ckpt = checkpoint::load(trained)?;
    let start = checkpoint::load_tensors(pretrained)?;
    let layers: Vec<&String> = ckpt.meta.mixture_k.keys().collect();
    let chosen = [layers.first(), layers.last()];
    let settings = MixtureSettings::with_k(k);
    let init_cfg = InitConfig {
        k,
        seed: settings.init_seed,
        tau: settings.tau,
        ..InitConfig::default()
    };
    for layer in chosen.into_iter().flatten().copied() {
        let weight = |tensors: &std::collections::HashMap<String, candle_core::Tensor>| {
            let key = format!("{layer}.weight");
            let t = tensors
                .get(&key)
                .with_context(|| format!("no tensor {key}"))?;
            anyhow::Ok(t.flatten_all()?.to_vec1::<f32>()?)
        };
        let (now, before) = (weight(&ckpt.tensors)?, weight(&start)?);
        let trained_params = ckpt
            .mixture(trained, layer, k, &MixtureOptions::default())?
            .params()?;
        let picture = LayerPicture {
            layer: layer.clone(),
            weights: now,
            initial: Some(init_params(layer, &before, &init_cfg)?.params),
            levels: trained_params.means_with_zero(),
            trained: Some(trained_params),
        };
        let path = dir.join(format!("{layer}-k{k}.png"));
        layer_png(&path, &picture.plot())?;
        written.push(path);
    }
    Ok(written)
}
