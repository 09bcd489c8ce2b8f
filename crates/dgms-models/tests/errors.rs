//! Error messages: unknown model, missing or mis-shaped checkpoint tensors,
//! bad configurations, bad inputs.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{resnet20_on_varmap, resnet20_params};
use dgms_models::dgms_arch::resnet_cifar::resnet_cifar;
use dgms_models::{build_model, set_varmap, ModelConfig, ModelError};
use dgms_test_support::tensors::rel_diff_tensors;

fn build_err(name: &str, cfg: &ModelConfig, vb: VarBuilder) -> ModelError {
    match build_model(name, cfg, vb) {
        Ok(_) => panic!("building {name} should fail"),
        Err(e) => e,
    }
}

fn empty_vb() -> VarBuilder<'static> {
    VarBuilder::from_tensors(Default::default(), DType::F32, &Device::Cpu)
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let err = build_err("resnet19", &ModelConfig::default(), empty_vb());
    assert!(matches!(err, ModelError::UnknownModel { .. }));
    assert_eq!(
        err.to_string(),
        "unknown model `resnet19`; known models: resnet20, resnet32, resnet56, vggsmall, \
         resnet18, resnet50, mobilenet_v2, mnasnet1_0"
    );
}

#[test]
fn missing_tensor_names_layer_and_tensor() {
    let mut params = resnet20_params();
    params.remove("layer2.1.conv2.weight");
    let vb = VarBuilder::from_tensors(params, DType::F32, &Device::Cpu);
    let err = build_err("resnet20", &ModelConfig::default(), vb);
    assert!(matches!(err, ModelError::Load { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("layer `layer2.1.conv2`: cannot load its parameters"),
        "{msg}"
    );
    assert!(msg.contains("layer2.1.conv2.weight"), "{msg}");

    let mut params = resnet20_params();
    params.remove("layer3.0.bn1.running_var");
    let vb = VarBuilder::from_tensors(params, DType::F32, &Device::Cpu);
    let msg = build_err("resnet20", &ModelConfig::default(), vb).to_string();
    assert!(msg.starts_with("layer `layer3.0.bn1`"), "{msg}");
    assert!(msg.contains("layer3.0.bn1.running_var"), "{msg}");
}

#[test]
fn wrong_shapes_name_the_layer() {
    // A 10-class checkpoint for a 100-class model.
    let cfg = ModelConfig {
        num_classes: 100,
        ..ModelConfig::default()
    };
    let vb = VarBuilder::from_tensors(resnet20_params(), DType::F32, &Device::Cpu);
    let msg = build_err("resnet20", &cfg, vb).to_string();
    assert!(msg.starts_with("layer `linear`"), "{msg}");
    // A 3-channel checkpoint for a 1-channel model.
    let cfg = ModelConfig {
        in_channels: 1,
        ..ModelConfig::default()
    };
    let vb = VarBuilder::from_tensors(resnet20_params(), DType::F32, &Device::Cpu);
    let msg = build_err("resnet20", &cfg, vb).to_string();
    assert!(msg.starts_with("layer `conv1`"), "{msg}");
}

#[test]
fn varmap_loading_checks_names_and_shapes() {
    let (_model, varmap) = resnet20_on_varmap();
    let before = resnet20_params()["layer1.0.conv1.weight"].clone();

    let mut params = resnet20_params();
    params.remove("layer1.2.bn2.weight");
    params.insert(
        "layer1.0.conv1.weight".into(),
        Tensor::zeros((16, 16, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = set_varmap(&varmap, &params, "ckpt.safetensors").unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint ckpt.safetensors: missing tensor `layer1.2.bn2.weight`"
    );
    // Nothing was set.
    let data = varmap.data().lock().unwrap();
    let now = data["layer1.0.conv1.weight"].as_tensor();
    assert_eq!(rel_diff_tensors(now, &before), 0.0);
    drop(data);

    let mut params = resnet20_params();
    params.insert(
        "linear.weight".into(),
        Tensor::zeros((100, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    let msg = set_varmap(&varmap, &params, "c").unwrap_err().to_string();
    assert_eq!(
        msg,
        "checkpoint c: tensor `linear.weight` has shape [100, 64], the model expects [10, 64]"
    );

    let vm = VarMap::new();
    let err = dgms_models::load_varmap(&vm, "/nonexistent/x.safetensors").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/x.safetensors"),
        "{err}"
    );
}

#[test]
fn bad_configurations() {
    // A depth outside MODEL_NAMES, through the family's description.
    let err = resnet_cifar(21, &ModelConfig::default()).unwrap_err();
    let msg = ModelError::from(err).to_string();
    assert!(msg.starts_with("model `resnet21`: depth 21"), "{msg}");
    let cfg = ModelConfig {
        image_size: 4,
        ..ModelConfig::default()
    };
    let msg = build_err("vggsmall", &cfg, empty_vb()).to_string();
    assert!(msg.contains("image_size 4"), "{msg}");
    let cfg = ModelConfig {
        num_classes: 0,
        ..ModelConfig::default()
    };
    let msg = build_err("resnet32", &cfg, empty_vb()).to_string();
    assert!(msg.contains("num_classes = 0"), "{msg}");
}

#[test]
fn bad_input_names_the_layer() {
    let (model, _vm) = resnet20_on_varmap();
    let x = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let msg = model.forward_t(&x, false).unwrap_err().to_string();
    assert!(
        msg.starts_with("layer `conv1`: forward pass failed"),
        "{msg}"
    );
}
