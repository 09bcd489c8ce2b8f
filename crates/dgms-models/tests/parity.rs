//! Logit parity with PyTorch: for every `NAME.io.safetensors` in
//! `$DGMS_PARITY_DIR` (default: the repo's `fixtures/models/`) for which
//! this crate has a model and whose parameters are beside it, as
//! `NAME.safetensors` or else as a PyTorch state dict `NAME.pth`, load the
//! parameters, run `input` in eval mode and compare with `logits`:
//! max |diff| / max |logit| <= 1e-4. Fails if nothing was checked.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use dgms_models::{build_model, load_tensors, ModelConfig, MODEL_NAMES};
use dgms_test_support::fixtures;

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    fixtures::dir_from_env("DGMS_PARITY_DIR", fixtures::repo_fixture("fixtures/models"))
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .and_then(|a| a.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("max |t|")
}

/// The parameter file of `name`: safetensors first, else `.pth`.
fn params_file(dir: &Path, name: &str) -> Option<PathBuf> {
    ["safetensors", "pth"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
}

/// Relative error of the model `name` with the parameters in `params`.
fn check(dir: &Path, name: &str, params: &Path) -> f32 {
    let dev = Device::Cpu;
    let params = load_tensors(params).unwrap_or_else(|e| panic!("read parameters: {e}"));
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
        let Some(params) = params_file(&dir, &name) else {
            println!("{name}: skipped (no {name}.safetensors or {name}.pth beside {name}.io.safetensors)");
            continue;
        };
        let err = check(&dir, &name, &params);
        let file = params.file_name().unwrap_or_default().to_string_lossy();
        println!("{name} ({file}): max|diff| / max|logit| = {err:.3e} (tolerance {TOLERANCE:.0e})");
        checked += 1;
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!("{name}: {err:.3e}"));
        }
    }
    assert!(
        checked > 0,
        "no model checked: no NAME.io.safetensors with NAME.safetensors or NAME.pth and a known model in {}",
        dir.display()
    );
    assert!(failures.is_empty(), "parity failures: {failures:?}");
}

/// MNASNet 1.0 on the shared fixture (`$DGMS_PARITY_DIR` when it holds it,
/// else `../shared/fixtures/models`): skipped with a note when absent, a
/// failure under `DGMS_REQUIRE_FIXTURES=1`. Its 5x5 depthwise convs and
/// ReLU (not ReLU6) blocks are nowhere else in the parity set.
#[test]
fn mnasnet1_0_matches_pytorch() {
    let from_env = fixture_dir();
    let dir = if from_env.join("mnasnet1_0.io.safetensors").exists() {
        from_env
    } else {
        fixtures::shared_dir().join("fixtures/models")
    };
    let what = "MNASNet 1.0 logit parity";
    let Some(io) = fixtures::Absent::from_env().check(dir.join("mnasnet1_0.io.safetensors"), what)
    else {
        return;
    };
    let dir = io.parent().expect("fixture folder");
    let params = dir.join("mnasnet1_0.safetensors");
    let err = check(dir, "mnasnet1_0", &params);
    println!("mnasnet1_0: max|diff| / max|logit| = {err:.3e} (tolerance {TOLERANCE:.0e})");
    assert!(err <= TOLERANCE, "mnasnet1_0: {err:.3e}");
}
