//! Logit parity with PyTorch: for every `NAME.safetensors` +
//! `NAME.io.safetensors` pair in `$DGMS_PARITY_DIR` (default: the repo's
//! `fixtures/models/`) for which this crate has a model, load the
//! parameters, run `input` in eval mode and compare with `logits`:
//! max |diff| / max |logit| <= 1e-4. Fails if nothing was checked.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dgms_models::{build_model, ModelConfig, MODEL_NAMES};

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    match std::env::var_os("DGMS_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models"),
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("max |t|")
}

/// Relative error of the model `name` on its fixture pair.
fn check(dir: &std::path::Path, name: &str) -> f32 {
    let dev = Device::Cpu;
    let params = candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &dev)
        .expect("read parameters");
    let io = candle_core::safetensors::load(dir.join(format!("{name}.io.safetensors")), &dev)
        .expect("read input/logits");
    let input = &io["input"];
    let expected = &io["logits"];
    let (_, c, h, _) = input.dims4().expect("input is (N, C, H, W)");
    let cfg = ModelConfig {
        in_channels: c,
        num_classes: expected.dim(1).expect("logits are (N, classes)"),
        image_size: h,
    };
    let vb = VarBuilder::from_tensors(params, DType::F32, &dev);
    let model = build_model(name, &cfg, vb).expect("build the model from the fixture");
    let got = model.forward_t(input, false).expect("forward");
    assert_eq!(got.dims(), expected.dims(), "{name}: logits shape");
    let diff = max_abs(&(&got - expected).expect("diff"));
    diff / max_abs(expected)
}

#[test]
fn logits_match_pytorch() {
    let dir = fixture_dir();
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixture folder {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".io.safetensors").map(str::to_string))
        .collect();
    entries.sort();
    let mut checked = 0;
    let mut failures = Vec::new();
    for name in entries {
        if !MODEL_NAMES.contains(&name.as_str()) {
            println!("{name}: skipped (no model of that name in dgms-models)");
            continue;
        }
        if !dir.join(format!("{name}.safetensors")).exists() {
            println!("{name}: skipped (no {name}.safetensors beside {name}.io.safetensors)");
            continue;
        }
        let err = check(&dir, &name);
        println!("{name}: max|diff| / max|logit| = {err:.3e} (tolerance {TOLERANCE:.0e})");
        checked += 1;
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    assert!(
        checked > 0,
        "no model checked: no NAME.safetensors + NAME.io.safetensors pair with a known model in {}",
        dir.display()
    );
    assert!(failures.is_empty(), "parity failures: {failures:?}");
}
