//! End to end at 224 x 224: torchvision's ResNet-18, MobileNetV2 and
//! ResNet-50, quantized at K = 16 (k-means init + harden, every conv but
//! the first) and packed, run by the qsimd engine (exact and int8) on every
//! ISA of this CPU; ResNet-18 also against the same network in f32 through
//! candle (its own conv and batch norm, eval mode).
//!
//! The parent process quantizes each network once ([`prepare`]) into a
//! directory under target/; the children of every thread count read the
//! packed files from there, and so does the ONNX Runtime peer (`peer`).
//!
//! Weights: `../shared/fixtures/models/NET.pth` or `NET.safetensors` when
//! present (or under `$DGMS_PARITY_DIR`), else a seeded random
//! initialisation; speed does not depend on the values beyond the sparsity
//! of index 0.

use std::path::{Path, PathBuf};

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

/// The networks measured end to end (torchvision names, ImageNet shape).
pub const NETWORKS: [&str; 3] = ["resnet18", "mobilenet_v2", "resnet50"];

/// The benchmark's one input image (3 x 224 x 224 per image).
pub fn input(batch: usize) -> Vec<f32> {
    values(batch * 3 * 224 * 224, 11)
}

/// The `case` column of a network's rows.
pub fn case(net: &str) -> String {
    format!("{net} 224x224")
}

/// The packed model of `net` in `dir` (written by [`prepare`]).
pub fn packed_path(dir: &Path, net: &str) -> PathBuf {
    dir.join(format!("{net}.dgms.safetensors"))
}

fn shared_weights(net: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DGMS_PARITY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/models")
        });
    ["pth", "safetensors"]
        .iter()
        .map(|ext| dir.join(format!("{net}.{ext}")))
        .find(|p| p.is_file())
}

/// The f32 weights of `net`: the shared fixture, else a seeded random
/// initialisation saved in `dir` (by [`prepare`]).
fn weights(dir: &Path, net: &str) -> PathBuf {
    shared_weights(net).unwrap_or_else(|| dir.join(format!("{net}-random.safetensors")))
}

fn imagenet() -> ModelConfig {
    ModelConfig {
        in_channels: 3,
        num_classes: 1000,
        image_size: 224,
    }
}

/// Quantizes and packs every network of `nets` into `dir`.
pub fn prepare(dir: &Path, nets: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for &net in nets {
        let w = weights(dir, net);
        if !w.is_file() {
            let varmap = VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
            build_model(net, &imagenet(), vb)?;
            varmap.save(&w)?;
        }
        eprintln!("quantizing {net} ({})...", w.display());
        quantize_packed(
            net,
            &w,
            &ShapeSource::Input([3, 224, 224]),
            &MixtureSettings::with_k(16),
            &packed_path(dir, net),
        )
        .with_context(|| format!("quantizing {net} for the benchmark"))?;
    }
    Ok(())
}

/// Rows for `batches` (ResNet-18; the other networks at batch 1) at the
/// process's thread count, from the packed models in `dir`.
pub fn rows(dir: &Path, batches: &[usize], threads: usize, with_scalar: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for net in NETWORKS {
        let packed = PackedModel::read(packed_path(dir, net))?;
        let net_batches: Vec<usize> = match net {
            "resnet18" => batches.to_vec(),
            _ => vec![1],
        };
        for &b in &net_batches {
            let input = input(b);
            for precision in [Precision::Exact, Precision::Int8] {
                for isa in isas(with_scalar && b == 1) {
                    let mut engine = Engine::with_precision(&packed, isa, precision)?;
                    let ms = time_ms(|| {
                        engine.run(&input, b)?;
                        Ok(())
                    })?;
                    let imp = format!("qsimd-{precision}-{isa}");
                    rows.push(Row::new("model", &case(net), b, threads, imp, ms));
                }
            }
        }
    }
    rows.extend(candle_rows(dir, batches, threads)?);
    Ok(rows)
}

/// ResNet-18 in candle f32 with its own conv and batch norm, and with the
/// project's im2col conv op (what dgms-models runs by default).
fn candle_rows(dir: &Path, batches: &[usize], threads: usize) -> Result<Vec<Row>> {
    let weights = weights(dir, "resnet18");
    // Both networks share the VarMap's parameters.
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
        let x = Tensor::from_vec(input(b), (b, 3, 224, 224), &Device::Cpu)?;
        for (net, name) in &nets {
            let ms = time_ms(|| {
                net.forward_t(&x, false)?;
                Ok(())
            })?;
            rows.push(Row::new(
                "model",
                &case("resnet18"),
                b,
                threads,
                (*name).into(),
                ms,
            ));
        }
    }
    Ok(rows)
}
