//! Architectures: parameter names and shapes, depths, other input sizes and
//! channel counts, batch-norm statistics in the VarMap.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use dgms_core::{InitConfig, MixtureOptions};
use dgms_models::{build_model, is_batch_norm_stat, LayerSelection, ModelConfig};
use dgms_test_support::varmap::names_and_shapes;

fn on_varmap(name: &str, cfg: &ModelConfig) -> (Box<dyn dgms_models::DgmsModel>, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (build_model(name, cfg, vb).unwrap(), varmap)
}

#[test]
fn resnet20_parameters_are_the_authors() {
    let (_m, varmap) = on_varmap("resnet20", &ModelConfig::default());
    let ours = names_and_shapes(&varmap);
    let theirs: BTreeMap<String, Vec<usize>> = common::resnet20_params()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn vggsmall_parameters_are_the_authors() {
    let (model, varmap) = on_varmap("vggsmall", &ModelConfig::default());
    let ours = names_and_shapes(&varmap);
    let mut theirs = BTreeMap::new();
    let convs = [(0, 3, 128), (3, 128, 128), (7, 128, 256)];
    let convs = convs
        .into_iter()
        .chain([(10, 256, 256), (14, 256, 512), (17, 512, 512)]);
    for ((i, cin, cout), bn) in convs.zip([1, 5, 8, 12, 15, 19]) {
        theirs.insert(format!("features.{i}.weight"), vec![cout, cin, 3, 3]);
        theirs.insert(format!("features.{i}.bias"), vec![cout]);
        for p in ["weight", "bias", "running_mean", "running_var"] {
            theirs.insert(format!("features.{bn}.{p}"), vec![cout]);
        }
    }
    theirs.insert("classifier.weight".into(), vec![10, 8192]);
    theirs.insert("classifier.bias".into(), vec![10]);
    assert_eq!(ours, theirs);
    assert_eq!(model.convs()[0].name(), "features.0");
    assert_eq!(model.default_mixture_layers().len(), 5);
    assert_eq!(model.classifier_name(), "classifier");
}

#[test]
fn resnet_depths() {
    for (name, convs) in [("resnet20", 19), ("resnet32", 31), ("resnet56", 55)] {
        let (m, _vm) = on_varmap(name, &ModelConfig::default());
        assert_eq!(m.model_name(), name);
        assert_eq!(m.convs().len(), convs, "{name}");
    }
    let (m, _vm) = on_varmap("resnet56", &ModelConfig::default());
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    assert_eq!(m.forward_t(&x, false).unwrap().dims(), &[2, 10]);
}

#[test]
fn resnet20_one_channel_28x28() {
    let cfg = ModelConfig {
        in_channels: 1,
        num_classes: 10,
        image_size: 28,
    };
    let (model, _vm) = on_varmap("resnet20", &cfg);
    let x = Tensor::randn(0f32, 1.0, (3, 1, 28, 28), &Device::Cpu).unwrap();
    for train in [true, false] {
        let y = model.forward_t(&x, train).unwrap();
        assert_eq!(y.dims(), &[3, 10]);
    }
    let init = InitConfig {
        k: 8,
        ..InitConfig::default()
    };
    model
        .enable_mixtures(
            &init,
            &MixtureOptions::default(),
            &LayerSelection::default(),
        )
        .unwrap();
    let y = model.forward_t(&x, true).unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for v in model.mixture_trainable_vars() {
        assert!(grads.get(v.as_tensor()).is_some());
    }
    let y = model.forward_t(&x, false).unwrap();
    let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn vggsmall_one_channel_28x28() {
    let cfg = ModelConfig {
        in_channels: 1,
        num_classes: 10,
        image_size: 28,
    };
    let (model, varmap) = on_varmap("vggsmall", &cfg);
    // 28 -> 14 -> 7 -> 3 after the three max-pools.
    assert_eq!(
        names_and_shapes(&varmap)["classifier.weight"],
        vec![10, 512 * 9]
    );
    let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    assert_eq!(model.forward_t(&x, true).unwrap().dims(), &[2, 10]);
    assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[2, 10]);
}

#[test]
fn batch_norm_statistics_live_in_the_varmap() {
    let (model, varmap) = on_varmap("resnet20", &ModelConfig::default());
    let names = names_and_shapes(&varmap);
    let stats: Vec<&String> = names.keys().filter(|n| is_batch_norm_stat(n)).collect();
    // 19 batch norms, running mean and variance each.
    assert_eq!(stats.len(), 38);
    let read = |name: &str| -> Vec<f32> {
        let data = varmap.data().lock().unwrap();
        data[name].as_tensor().to_vec1().unwrap()
    };
    assert!(read("bn1.running_mean").iter().all(|&v| v == 0.0));
    let x = Tensor::randn(1f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    model.forward_t(&x, true).unwrap();
    // A train-mode forward pass moved the running mean (momentum 0.1) ...
    assert!(read("bn1.running_mean").iter().any(|&v| v != 0.0));
    // ... and an eval-mode one does not.
    let before = read("layer2.0.bn1.running_var");
    model.forward_t(&x, false).unwrap();
    assert_eq!(read("layer2.0.bn1.running_var"), before);
}

/// The candle network holds exactly the parameters its description lists
/// (names and shapes), so the description's parameter counts are the
/// models'.
#[test]
fn every_model_has_its_descriptions_parameters() {
    for name in dgms_models::MODEL_NAMES {
        let cfg = dgms_models::dgms_arch::designed_for(name).unwrap().config();
        let arch = dgms_models::dgms_arch::architecture(name, &cfg).unwrap();
        let (model, varmap) = on_varmap(name, &cfg);
        let described: BTreeMap<String, Vec<usize>> = arch
            .parameters()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        assert_eq!(names_and_shapes(&varmap), described, "{name}");
        let convs: Vec<&str> = model.convs().iter().map(|c| c.name()).collect();
        let described: Vec<&str> = arch.convs().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(convs, described, "{name}");
        assert_eq!(model.classifier_name(), arch.classifier, "{name}");
        // The default selection resolves to the description's mixture layers.
        let resolved = LayerSelection::default()
            .resolve(name, &model.convs(), 4)
            .unwrap();
        let chosen: Vec<String> = resolved
            .iter()
            .map(|&(i, _)| model.convs()[i].name().to_string())
            .collect();
        assert_eq!(chosen, arch.default_mixture_layers(), "{name}");
    }
}
