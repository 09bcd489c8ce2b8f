//! The ONNX Runtime peer: the same networks with the same (hardened,
//! decoded) weights, run by onnxruntime's CPU provider from Python
//! (`scripts/bench_qsimd_ort.py`) in the same run as the engine.
//!
//! [`export`] writes, per network, the engine's own graph
//! (`dgms_qsimd::engine::export`, derived from the `dgms-arch` description,
//! so there is no second definition of any network) as `NET.graph.json`
//! and its f32 weights as `NET.weights.safetensors`, with the benchmark
//! input (`__input`) and the exact engine's logits on it (`__logits`). The
//! script builds the ONNX graph from these with the `onnx` package (torch
//! is not needed), checks that ORT's logits match and times it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use dgms_qsimd::engine::{export, Precision};
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_qsimd::Engine;
use serde::Deserialize;

use super::e2e;

/// What the script prints (one JSON line).
#[derive(Debug, Deserialize)]
pub struct PeerResult {
    pub ort_version: String,
    /// Median wall time of one batch-1 run, ms.
    pub ort_ms: f64,
    /// max |ORT logit - exact engine logit| / max |exact engine logit|.
    pub max_rel_diff: f64,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_qsimd_ort.py")
}

/// `None` when Python with onnxruntime, onnx and numpy can run the peer,
/// else why not.
pub fn unavailable() -> Option<String> {
    crate::python::unavailable(
        "onnxruntime, onnx, numpy",
        "pip install onnxruntime onnx numpy",
    )
}

/// The files of `net` in `dir`, without extension.
pub fn stem(dir: &Path, net: &str) -> PathBuf {
    dir.join(net)
}

/// Writes `NET.graph.json` and `NET.weights.safetensors` of the packed
/// model of `net` in `dir`.
pub fn export(dir: &Path, net: &str) -> Result<()> {
    let packed = PackedModel::read(e2e::packed_path(dir, net))?;
    let graph = export::export(&packed).with_context(|| format!("exporting the {net} graph"))?;
    let dev = Device::Cpu;
    let mut tensors = std::collections::HashMap::new();
    for t in &graph.tensors {
        tensors.insert(
            t.name.clone(),
            Tensor::from_vec(t.data.clone(), t.shape.as_slice(), &dev)?,
        );
    }
    let input = e2e::input(1);
    let mut engine = Engine::with_precision(&packed, Isa::detect(), Precision::Exact)?;
    let logits = engine.run(&input, 1)?;
    let [c, h, w] = graph.input_shape;
    tensors.insert(
        "__input".into(),
        Tensor::from_vec(input, (1, c, h, w), &dev)?,
    );
    let classes = logits.len();
    tensors.insert(
        "__logits".into(),
        Tensor::from_vec(logits, (1, classes), &dev)?,
    );
    let stem = stem(dir, net);
    candle_core::safetensors::save(&tensors, stem.with_extension("weights.safetensors"))?;
    let json = serde_json::json!({
        "arch": graph.arch,
        "input_shape": graph.input_shape,
        "output": graph.output,
        "ops": graph.ops,
    });
    crate::write_atomic(
        &stem.with_extension("graph.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(())
}

/// Runs the script on `net` with `threads` intra-op threads.
pub fn measure(dir: &Path, net: &str, threads: usize) -> Result<PeerResult> {
    let out = Command::new(crate::python::python())
        .arg(script())
        .arg("--graph")
        .arg(stem(dir, net))
        .arg(format!("--threads={threads}"))
        .output()
        .context("running scripts/bench_qsimd_ort.py")?;
    if !out.status.success() {
        bail!(
            "bench_qsimd_ort.py ({net}, {threads} threads) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .last()
        .context("bench_qsimd_ort.py printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("parsing the script's output {line:?}"))
}
