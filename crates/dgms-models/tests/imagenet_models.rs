//! torchvision's ResNet-18/50, MobileNetV2 and MNASNet 1.0: parameter names,
//! shapes and counts, batch-norm momentum, the default selection
//! (docs/METHOD.md#layers), mixture mode forward and backward, and `.pth`
//! loading (including corrupt files).
//!
//! Tests that need the shared fixtures (`$DGMS_PARITY_DIR`, default
//! `../shared/fixtures/models` beside the repo) say so and pass without
//! them, or fail when `DGMS_REQUIRE_FIXTURES=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use dgms_core::{InitConfig, MixtureOptions};
use dgms_models::dgms_arch::resnet_imagenet::resnet;
use dgms_models::{
    build_model, is_batch_norm_stat, load_tensors, load_varmap, read_pth, ConvBackend, DgmsModel,
    LayerSelection, ModelConfig, ModelError, Network,
};
use dgms_test_support::fixtures;
use dgms_test_support::varmap::{self, names_and_shapes};

/// ImageNet: 3 channels, 1000 classes, 224x224.
fn imagenet() -> ModelConfig {
    ModelConfig {
        in_channels: 3,
        num_classes: 1000,
        image_size: 224,
    }
}

fn on_varmap(name: &str, cfg: &ModelConfig) -> (Box<dyn DgmsModel>, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (build_model(name, cfg, vb).unwrap(), varmap)
}

/// Trainable parameters (no batch-norm statistics), as PyTorch's
/// `sum(p.numel() for p in model.parameters())` counts them.
fn parameter_count(varmap: &VarMap) -> usize {
    varmap::value_count(varmap, |n| !is_batch_norm_stat(n))
}

/// `$DGMS_PARITY_DIR`, else the shared `../shared/fixtures/models`, when it
/// holds `resnet18.pth`; if not, skips `what` with a note, or fails when
/// `DGMS_REQUIRE_FIXTURES=1`.
fn shared_fixtures(what: &str) -> Option<PathBuf> {
    let dir = fixtures::dir_from_env(
        "DGMS_PARITY_DIR",
        fixtures::shared_dir().join("fixtures/models"),
    );
    let weights = fixtures::Absent::from_env().check(dir.join("resnet18.pth"), what)?;
    weights.parent().map(Path::to_path_buf)
}

/// Names and shapes of a fixture's tensors, `num_batches_tracked` left out.
fn fixture_names(
    tensors: &std::collections::HashMap<String, Tensor>,
) -> BTreeMap<String, Vec<usize>> {
    tensors
        .iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect()
}

#[test]
fn parameter_counts_are_torchvisions() {
    for (name, count, convs) in [
        ("resnet18", 11_689_512, 20),
        ("resnet50", 25_557_032, 53),
        ("mobilenet_v2", 3_504_872, 52),
        ("mnasnet1_0", 4_383_312, 52),
    ] {
        let (model, varmap) = on_varmap(name, &imagenet());
        assert_eq!(parameter_count(&varmap), count, "{name}");
        assert_eq!(model.model_name(), name);
        assert_eq!(model.convs().len(), convs, "{name}");
    }
}

#[test]
fn resnet18_names_are_torchvisions() {
    let (model, varmap) = on_varmap("resnet18", &imagenet());
    let ours = names_and_shapes(&varmap);
    assert_eq!(ours["conv1.weight"], vec![64, 3, 7, 7]);
    assert_eq!(ours["layer1.0.conv1.weight"], vec![64, 64, 3, 3]);
    assert_eq!(ours["layer2.0.downsample.0.weight"], vec![128, 64, 1, 1]);
    assert_eq!(ours["layer2.0.downsample.1.running_var"], vec![128]);
    assert_eq!(ours["fc.weight"], vec![1000, 512]);
    assert!(!ours.contains_key("layer1.0.downsample.0.weight"));
    assert_eq!(model.classifier_name(), "fc");
    if let Some(dir) = shared_fixtures("the names check against resnet18.pth") {
        let theirs = read_pth(dir.join("resnet18.pth")).unwrap();
        assert_eq!(ours, fixture_names(&theirs));
    }
}

#[test]
fn resnet50_names_and_shapes() {
    let (model, varmap) = on_varmap("resnet50", &imagenet());
    let ours = names_and_shapes(&varmap);
    // Bottleneck v1.5: the stride sits on the 3x3 conv.
    assert_eq!(ours["layer2.0.conv1.weight"], vec![128, 256, 1, 1]);
    assert_eq!(ours["layer2.0.conv2.weight"], vec![128, 128, 3, 3]);
    assert_eq!(model.conv("layer2.0.conv1").unwrap().spec().stride, 1);
    assert_eq!(model.conv("layer2.0.conv2").unwrap().spec().stride, 2);
    assert_eq!(ours["layer2.0.conv3.weight"], vec![512, 128, 1, 1]);
    // layer1 changes 64 -> 256 channels, so it has a projection too.
    assert_eq!(ours["layer1.0.downsample.0.weight"], vec![256, 64, 1, 1]);
    assert_eq!(ours["layer4.2.bn3.weight"], vec![2048]);
    assert_eq!(ours["fc.weight"], vec![1000, 2048]);
    // 1 stem + 16 bottlenecks x 3 convs + 4 projections, each with a bn.
    let convs = ours.keys().filter(|n| n.ends_with("running_mean")).count();
    assert_eq!(convs, 53);
    assert_eq!(ours.len(), 53 * 5 + 2);
    let x = Tensor::randn(0f32, 1.0, (1, 3, 64, 48), &Device::Cpu).unwrap();
    assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[1, 1000]);
}

#[test]
fn mobilenet_v2_names_are_torchvisions() {
    let (model, varmap) = on_varmap("mobilenet_v2", &imagenet());
    let ours = names_and_shapes(&varmap);
    assert_eq!(ours["features.0.0.weight"], vec![32, 3, 3, 3]);
    assert_eq!(ours["features.1.conv.0.0.weight"], vec![32, 1, 3, 3]);
    assert_eq!(ours["features.1.conv.1.weight"], vec![16, 32, 1, 1]);
    assert_eq!(ours["features.2.conv.1.0.weight"], vec![96, 1, 3, 3]);
    assert_eq!(ours["features.18.0.weight"], vec![1280, 320, 1, 1]);
    assert_eq!(ours["classifier.1.weight"], vec![1000, 1280]);
    assert_eq!(model.classifier_name(), "classifier.1");
    let dw = model.conv("features.2.conv.1.0").unwrap().spec();
    assert_eq!((dw.groups, dw.stride), (96, 2));
    if let Some(dir) = shared_fixtures("the names check against mobilenet_v2.safetensors") {
        let theirs = load_tensors(dir.join("mobilenet_v2.safetensors")).unwrap();
        assert_eq!(ours, fixture_names(&theirs));
    }
}

#[test]
fn mnasnet1_0_names_are_torchvisions() {
    let (model, varmap) = on_varmap("mnasnet1_0", &imagenet());
    let ours = names_and_shapes(&varmap);
    assert_eq!(ours["layers.0.weight"], vec![32, 3, 3, 3]);
    assert_eq!(ours["layers.3.weight"], vec![32, 1, 3, 3]);
    assert_eq!(ours["layers.6.weight"], vec![16, 32, 1, 1]);
    assert_eq!(ours["layers.7.running_var"], vec![16]);
    assert_eq!(ours["layers.8.0.layers.0.weight"], vec![48, 16, 1, 1]);
    assert_eq!(ours["layers.9.0.layers.3.weight"], vec![72, 1, 5, 5]);
    assert_eq!(ours["layers.13.0.layers.6.weight"], vec![320, 1152, 1, 1]);
    assert_eq!(ours["layers.15.running_mean"], vec![1280]);
    assert_eq!(ours["classifier.1.weight"], vec![1000, 1280]);
    assert_eq!(model.classifier_name(), "classifier.1");
    let dw = model.conv("layers.12.0.layers.3").unwrap().spec();
    assert_eq!((dw.groups, dw.stride, dw.padding), (576, 2, 2));
    if let Some(dir) = shared_fixtures("the names check against mnasnet1_0.safetensors") {
        let theirs = load_tensors(dir.join("mnasnet1_0.safetensors")).unwrap();
        assert_eq!(ours, fixture_names(&theirs));
    }
}

#[test]
fn mnasnet1_0_batch_norm_momentum_is_torchvisions() {
    // torchvision's _BN_MOMENTUM = 1 - 0.9997: one train-mode pass moves a
    // running mean from 0 by 3e-4 of the batch mean (PyTorch's default
    // would move it by 0.1 of it).
    let (model, varmap) = on_varmap("mnasnet1_0", &ModelConfig::default());
    let x = (Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap() + 5.0).unwrap();
    model.forward_t(&x, true).unwrap();
    let mean = |name: &str| -> Vec<f32> {
        let data = varmap.data().lock().unwrap();
        data[name].as_tensor().to_vec1().unwrap()
    };
    // layers.1 follows the stem conv, whose output's batch mean is the
    // conv of the input's; compare against an eval of that conv alone.
    let stem = model.conv("layers.0").unwrap();
    let y = stem.forward_t(&x, false).unwrap();
    let batch_mean: Vec<f32> = y
        .mean_keepdim(0)
        .unwrap()
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let running = mean("layers.1.running_mean");
    for (r, b) in running.iter().zip(&batch_mean) {
        assert!(
            (r - 3e-4 * b).abs() <= 1e-6 + 1e-4 * b.abs(),
            "{r} vs 3e-4 * {b}"
        );
    }
    assert!(batch_mean.iter().any(|b| b.abs() > 1e-2));
}

#[test]
fn default_selection_is_every_conv_but_the_first() {
    for (name, first, mixtures) in [
        ("resnet18", "conv1", 19),
        ("resnet50", "conv1", 52),
        ("mobilenet_v2", "features.0.0", 51),
        ("mnasnet1_0", "layers.0", 51),
    ] {
        let (model, _vm) = on_varmap(name, &ModelConfig::default());
        let convs = model.convs();
        assert_eq!(convs[0].name(), first, "{name}");
        let layers = model.default_mixture_layers();
        assert_eq!(layers.len(), mixtures, "{name}");
        assert!(!layers.iter().any(|l| l == first), "{name}");
        assert!(model.conv(model.classifier_name()).is_none(), "{name}");
        let resolved = LayerSelection::default().resolve(name, &convs, 4).unwrap();
        assert_eq!(resolved.len(), mixtures, "{name}");
        assert!(resolved.iter().all(|&(i, _)| i > 0), "{name}");
    }
}

/// Mixtures with K = 4 on the default selection; a train forward and
/// backward reaching every conv weight and mixture parameter; an eval
/// forward with hard weights.
fn mixture_round_trip(name: &str) {
    let cfg = ModelConfig::default();
    let (model, _vm) = on_varmap(name, &cfg);
    let init = InitConfig {
        k: 4,
        ..InitConfig::default()
    };
    let outcomes = model
        .enable_mixtures(
            &init,
            &MixtureOptions::default(),
            &LayerSelection::default(),
        )
        .unwrap();
    assert_eq!(outcomes.len(), model.default_mixture_layers().len());
    assert!(!model.convs()[0].has_mixture());
    // Two images: batch statistics of the final 1x1 maps need more than one value.
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let logits = model.forward_t(&x, true).unwrap();
    assert_eq!(logits.dims(), &[2, 10]);
    let labels = Tensor::new(&[1u32, 7], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let grads = loss.backward().unwrap();
    for conv in model.convs() {
        let var = conv.weight_var().unwrap();
        let g = grads.get(var.as_tensor());
        assert!(g.is_some(), "{name}: no gradient for {}", conv.name());
    }
    for var in model.mixture_trainable_vars() {
        let g = grads.get(var.as_tensor()).expect("mixture gradient");
        let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
    let eval = model.forward_t(&x, false).unwrap();
    let v: Vec<f32> = eval.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "{name}");
    // Hard weights: at most K values, one of them 0.
    let conv = &model.convs()[1];
    let mut w: Vec<f32> = conv
        .hard_weight()
        .unwrap()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    w.sort_by(f32::total_cmp);
    w.dedup();
    assert!(w.len() <= 4 && w.contains(&0.0), "{name}: {w:?}");
}

#[test]
fn resnet18_mixture_forward_backward() {
    mixture_round_trip("resnet18");
}

#[test]
fn mobilenet_v2_mixture_forward_backward() {
    // Includes the depthwise (grouped) convolutions.
    mixture_round_trip("mobilenet_v2");
}

#[test]
fn mnasnet1_0_mixture_forward_backward() {
    // 3x3 and 5x5 depthwise convolutions carry mixtures too.
    mixture_round_trip("mnasnet1_0");
}

#[test]
fn other_inputs_and_depths() {
    let cfg = ModelConfig {
        in_channels: 1,
        num_classes: 10,
        image_size: 28,
    };
    for name in ["resnet18", "mobilenet_v2", "mnasnet1_0"] {
        let (model, _vm) = on_varmap(name, &cfg);
        let x = Tensor::randn(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
        for train in [true, false] {
            assert_eq!(model.forward_t(&x, train).unwrap().dims(), &[2, 10]);
        }
    }
    // Depths outside MODEL_NAMES, through the family's description.
    let err = resnet(20, &imagenet()).unwrap_err().to_string();
    assert!(err.starts_with("model `resnet20`: depth 20"), "{err}");
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let r34 = Network::new(resnet(34, &imagenet()).unwrap(), ConvBackend::default(), vb).unwrap();
    // 1 stem + 16 blocks x 2 convs + 3 projections.
    assert_eq!(r34.convs().len(), 36);
    assert_eq!(parameter_count(&vm), 21_797_672);
}

#[test]
fn pth_loads_into_a_varmap() {
    let Some(dir) = shared_fixtures("loading resnet18.pth") else {
        return;
    };
    let (model, varmap) = on_varmap("resnet18", &imagenet());
    load_varmap(&varmap, dir.join("resnet18.pth")).unwrap();
    let io = load_tensors(dir.join("resnet18.io.safetensors")).unwrap();
    let got = model.forward_t(&io["input"], false).unwrap();
    let diff = (&got - &io["logits"]).unwrap().abs().unwrap();
    let diff: f32 = diff.max_all().unwrap().to_scalar().unwrap();
    let scale: f32 = io["logits"]
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff / scale <= 1e-4, "{}", diff / scale);
}

/// A file in the target dir's temporary folder (cleaned with the target).
fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_names_file(err: ModelError, path: &std::path::Path) {
    // Checkpoint: candle's reader failed; PthRefused: the bounded pre-scan
    // refused the file first (not a zip, malformed or hostile pickle).
    assert!(
        matches!(
            err,
            ModelError::Checkpoint { .. } | ModelError::PthRefused { .. }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    let shown = path.display().to_string();
    assert!(
        msg.starts_with(&format!("checkpoint {shown}: cannot read it")),
        "{msg}"
    );
}

#[test]
fn corrupt_pth_files_give_errors_naming_the_file() {
    let missing = PathBuf::from("/nonexistent/weights.pth");
    assert_names_file(read_pth(&missing).unwrap_err(), &missing);
    let empty = temp_file("empty.pth", b"");
    assert_names_file(read_pth(&empty).unwrap_err(), &empty);
    let garbage = temp_file(
        "garbage.pth",
        b"PK\x03\x04 this is not a zip archive at all",
    );
    assert_names_file(read_pth(&garbage).unwrap_err(), &garbage);
    // Through load_varmap too, chosen by the extension.
    let (_model, varmap) = on_varmap("resnet18", &imagenet());
    assert_names_file(load_varmap(&varmap, &garbage).unwrap_err(), &garbage);

    let Some(dir) = shared_fixtures("the truncated and corrupt resnet18.pth cases") else {
        return;
    };
    let full = std::fs::read(dir.join("resnet18.pth")).unwrap();
    // Cut inside the tensor data, and just before the end (the zip
    // directory is at the end, so both lose it).
    for (i, len) in [full.len() / 2, full.len() - 10].into_iter().enumerate() {
        let cut = temp_file(&format!("truncated{i}.pth"), &full[..len]);
        assert_names_file(read_pth(&cut).unwrap_err(), &cut);
    }
    // Corrupt bytes in the pickle (the first entry, stored uncompressed):
    // an error, never a panic or abort.
    let start = full.windows(8).position(|w| w == b"data.pkl").unwrap() + 8;
    for offset in [40, 200, 1000, 3000] {
        let mut bytes = full.clone();
        for b in &mut bytes[start + offset..start + offset + 16] {
            *b = b.wrapping_add(0x5a);
        }
        let bad = temp_file(&format!("bad_pickle{offset}.pth"), &bytes);
        if let Err(e) = read_pth(&bad) {
            assert_names_file(e, &bad);
        }
    }
}
