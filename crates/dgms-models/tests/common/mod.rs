//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_models::{build_model, load_varmap, DgmsModel, ModelConfig};
use dgms_test_support::fixtures;

/// The repo's `fixtures/models/`.
pub fn fixture_dir() -> PathBuf {
    fixtures::repo_fixture("fixtures/models")
}

/// The ResNet-20 parity parameters.
pub fn resnet20_params() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("resnet20.safetensors"), &Device::Cpu)
        .expect("read resnet20.safetensors")
}

/// The ResNet-20 parity input (4, 3, 32, 32) and logits (4, 10).
pub fn resnet20_io() -> (Tensor, Tensor) {
    let io =
        candle_core::safetensors::load(fixture_dir().join("resnet20.io.safetensors"), &Device::Cpu)
            .expect("read resnet20.io.safetensors");
    (io["input"].clone(), io["logits"].clone())
}

/// ResNet-20 on a `VarMap` (the training setup) loaded with the fixture.
pub fn resnet20_on_varmap() -> (Box<dyn DgmsModel>, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = build_model("resnet20", &ModelConfig::default(), vb).expect("build resnet20");
    load_varmap(&varmap, fixture_dir().join("resnet20.safetensors")).expect("load resnet20");
    (model, varmap)
}

/// A model built from plain tensors (no `Var`s).
pub fn from_tensors(
    name: &str,
    cfg: &ModelConfig,
    t: HashMap<String, Tensor>,
) -> Box<dyn DgmsModel> {
    let vb = VarBuilder::from_tensors(t, DType::F32, &Device::Cpu);
    build_model(name, cfg, vb).expect("build from tensors")
}
