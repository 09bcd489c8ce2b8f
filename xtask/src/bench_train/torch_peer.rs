//! The PyTorch peer of the training bench: `scripts/bench_train_torch.py`,
//! run in the same process tree as our measurement, on the same network,
//! batch, thread count and optimizer settings.
//!
//! The network reaches the script as a JSON rendering of its `dgms-arch`
//! description ([`description_json`]), so there is no second definition of
//! it in Python; the script checks that it built the same number of
//! trainable parameters.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use dgms_arch::{Activation, Architecture, Layer, Shortcut};
use serde::Deserialize;
use serde_json::{json, Value};

/// What the script prints (one JSON line).
#[derive(Debug, Deserialize)]
pub struct TorchResult {
    pub torch_version: String,
    pub threads: usize,
    pub train_images_per_s: f64,
    pub eval_images_per_s: f64,
    pub dgms_train_images_per_s: Option<f64>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_train_torch.py")
}

/// `None` when Python with torch can run the peer, else why not.
pub fn unavailable() -> Option<String> {
    crate::python::unavailable("torch", "pip install torch")
}

/// The layers as the script reads them.
fn layers_json(layers: &[Layer]) -> Vec<Value> {
    layers
        .iter()
        .map(|layer| match layer {
            Layer::Conv(c) => json!({
                "op": "conv", "name": c.name, "in": c.in_channels, "out": c.out_channels,
                "kernel": c.kernel, "stride": c.stride, "padding": c.padding,
                "groups": c.groups, "bias": c.bias,
            }),
            Layer::BatchNorm(b) => json!({"op": "bn", "name": b.name, "channels": b.channels}),
            Layer::Act(Activation::Relu) => json!({"op": "relu"}),
            Layer::Act(Activation::Relu6) => json!({"op": "relu6"}),
            Layer::MaxPool(p) => json!({
                "op": "maxpool", "kernel": p.kernel, "stride": p.stride, "padding": p.padding,
            }),
            Layer::Block(b) => {
                let shortcut = match &b.shortcut {
                    None => Value::Null,
                    Some(Shortcut::Identity) => json!({"kind": "identity"}),
                    Some(Shortcut::ZeroPad { stride, pad }) => {
                        json!({"kind": "zeropad", "stride": stride, "pad": pad})
                    }
                    Some(Shortcut::Projection(p)) => {
                        json!({"kind": "projection", "layers": layers_json(p)})
                    }
                };
                json!({"op": "block", "body": layers_json(&b.body), "shortcut": shortcut})
            }
            Layer::GlobalAvgPool => json!({"op": "gap"}),
            Layer::Flatten => json!({"op": "flatten"}),
            Layer::Dropout(p) => json!({"op": "dropout", "p": p}),
            Layer::Linear(l) => json!({
                "op": "linear", "name": l.name, "in": l.in_features, "out": l.out_features,
            }),
        })
        .collect()
}

/// The whole description: layers, input shape, classes, batch-norm
/// settings, the layers that get a mixture by default and the trainable
/// parameter count.
pub fn description_json(arch: &Architecture) -> Value {
    let cfg = &arch.config;
    json!({
        "name": arch.name,
        "input_shape": [cfg.in_channels, cfg.image_size, cfg.image_size],
        "classes": cfg.num_classes,
        "eps": arch.batch_norm_eps,
        "momentum": arch.batch_norm_momentum,
        "mixture_layers": arch.default_mixture_layers(),
        "parameter_count": arch.parameter_count(),
        "layers": layers_json(&arch.layers),
    })
}

/// The settings of one peer run.
pub struct PeerRun<'a> {
    pub arch: &'a Architecture,
    pub batch: usize,
    pub steps: usize,
    pub threads: usize,
    pub k: usize,
    pub dgms: bool,
}

/// Writes the description into `dir` and runs the script on it.
pub fn measure(dir: &Path, run: &PeerRun) -> Result<TorchResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.arch.json", run.arch.name));
    let text = serde_json::to_string_pretty(&description_json(run.arch))?;
    crate::write_atomic(&path, text.as_bytes())?;
    let mut cmd = Command::new(crate::python::python());
    cmd.arg(script())
        .arg("--arch")
        .arg(&path)
        .arg(format!("--batch={}", run.batch))
        .arg(format!("--steps={}", run.steps))
        .arg(format!("--threads={}", run.threads))
        .arg(format!("--k={}", run.k));
    if !run.dgms {
        cmd.arg("--no-dgms");
    }
    let out = cmd
        .output()
        .context("running scripts/bench_train_torch.py")?;
    if !out.status.success() {
        bail!(
            "bench_train_torch.py ({}) failed: {}",
            run.arch.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let line = text
        .lines()
        .last()
        .context("bench_train_torch.py printed nothing")?;
    let result: TorchResult = serde_json::from_str(line)
        .with_context(|| format!("parsing the script's output {line:?}"))?;
    if result.threads != run.threads {
        bail!(
            "PyTorch ran on {} threads, not the {} asked for",
            result.threads,
            run.threads
        );
    }
    Ok(result)
}
