//! End to end: torchvision's ResNet-18 at 224 x 224, quantized at K = 16
//! (k-means init + harden, every conv but the first) and packed, run by
//! the qsimd engine (exact and int8) on every ISA of this CPU, against the same network in
//! f32 through candle (its own conv and batch norm, eval mode).
//!
//! Weights: `../shared/fixtures/models/resnet18.pth` when present (or
//! `$DGMS_PARITY_DIR/resnet18.pth`), else a seeded random initialisation;
//! speed does not depend on the values beyond the sparsity of index 0.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_models::{build_model, build_model_with_backend, ConvBackend, ModelConfig};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::Engine;
use dgms_train::config::MixtureSettings;
use dgms_train::export::{quantize_packed, ShapeSource};

use super::layers::{isas, values};
use super::{time_ms, Row};

const CASE: &str = "resnet18 224x224";

fn weights(dir: &std::path::Path) -> Result<PathBuf> {
    let shared = std::env::var_os("DGMS_PARITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/models")
        })
        .join("resnet18.pth");
    if shared.is_file() {
        return Ok(shared);
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    build_model("resnet18", &imagenet(), vb)?;
    let path = dir.join("resnet18-random.safetensors");
    varmap.save(&path)?;
    Ok(path)
}

fn imagenet() -> ModelConfig {
    ModelConfig {
        in_channels: 3,
        num_classes: 1000,
        image_size: 224,
    }
}

/// Rows for batch sizes `batches` at the process's thread count.
pub fn rows(batches: &[usize], threads: usize, with_scalar: bool) -> Result<Vec<Row>> {
    let dir = std::env::temp_dir().join(format!("dgms-bench-qsimd-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, batches, threads, with_scalar);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    dir: &std::path::Path,
    batches: &[usize],
    threads: usize,
    with_scalar: bool,
) -> Result<Vec<Row>> {
    let weights = weights(dir)?;
    let packed_path = dir.join("resnet18.dgms.safetensors");
    let shape = ShapeSource::Input([3, 224, 224]);
    let (_, _, _) = quantize_packed(
        "resnet18",
        &weights,
        &shape,
        &MixtureSettings::with_k(16),
        &packed_path,
    )
    .context("quantizing ResNet-18 for the benchmark")?;
    let packed = PackedModel::read(&packed_path)?;

    // The f32 network for candle, from the same weights, once per conv
    // backend (both networks share the VarMap's parameters).
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net_with = |backend| build_model_with_backend("resnet18", &imagenet(), backend, vb.clone());
    let nets = [
        (net_with(ConvBackend::Candle)?, "candle-f32"),
        (net_with(ConvBackend::Im2col)?, "candle-f32-im2col-op"),
    ];
    let tensors = dgms_models::checkpoint::load_tensors(&weights)?;
    dgms_models::set_varmap(&varmap, &tensors, &weights.display().to_string())?;

    let mut rows = Vec::new();
    for &b in batches {
        let input = values(b * 3 * 224 * 224, 11);
        for precision in [Precision::Exact, Precision::Int8] {
            for isa in isas(with_scalar && b == 1) {
                let mut engine = Engine::with_precision(&packed, isa, precision)?;
                let ms = time_ms(|| {
                    engine.run(&input, b)?;
                    Ok(())
                })?;
                rows.push(Row::new(
                    "model",
                    CASE,
                    b,
                    threads,
                    format!("qsimd-{precision}-{isa}"),
                    ms,
                ));
            }
        }
        // candle f32 with its own conv and batch norm, and with the
        // project's im2col conv op (what dgms-models runs by default).
        let x = Tensor::from_vec(input, (b, 3, 224, 224), &Device::Cpu)?;
        for (net, name) in &nets {
            let ms = time_ms(|| {
                net.forward_t(&x, false)?;
                Ok(())
            })?;
            rows.push(Row::new("model", CASE, b, threads, (*name).into(), ms));
        }
    }
    Ok(rows)
}
