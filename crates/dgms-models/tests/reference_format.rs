//! The DGMS authors' checkpoint format: the fixture made by their code
//! reads (a zip64 archive candle's own reader refuses), and every
//! malformed variant gives an error naming each bad key.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use dgms_arch::{architecture, Dataset};
use dgms_models::{is_reference_state_dict, read_pth, ModelError, ReferenceStateDict};
use dgms_test_support::fixtures::shared_fixture;

const CKPT: &str = "fixtures/reference-checkpoints/resnet20_dgms_k16.pth.tar";

fn fixture() -> Option<HashMap<String, Tensor>> {
    Some(read_pth(shared_fixture(CKPT)?).unwrap())
}

/// The error's list of problems.
fn problems(result: Result<(), ModelError>) -> Vec<String> {
    match result {
        Err(ModelError::ReferenceCheckpoint { problems, .. }) => problems,
        other => panic!("expected a reference-checkpoint error, got {other:?}"),
    }
}

fn split(tensors: HashMap<String, Tensor>) -> Result<ReferenceStateDict, ModelError> {
    ReferenceStateDict::from_tensors("ckpt.pth.tar", tensors)
}

fn check(tensors: HashMap<String, Tensor>, model: &str) -> Vec<String> {
    problems(split(tensors).and_then(|d| {
        let arch = architecture(model, &Dataset::Cifar10.config()).unwrap();
        d.check_against("ckpt.pth.tar", &arch)
    }))
}

#[test]
fn the_authors_file_reads_and_fits_resnet20() {
    let Some(tensors) = fixture() else {
        return;
    };
    assert!(is_reference_state_dict(&tensors));
    let dict = split(tensors).unwrap();
    assert_eq!(dict.prefix, "network.");
    assert_eq!(dict.mixtures.len(), 18);
    assert!(dict.mixtures.values().all(|m| m.k() == 16));
    assert!(dict
        .mixtures
        .values()
        .all(|m| m.sigma.iter().all(|&s| s > 0.0) && m.sigma_zero > 0.0));
    let cfg = dict.arch_config("resnet20", None).unwrap();
    assert_eq!(
        (cfg.in_channels, cfg.num_classes, cfg.image_size),
        (3, 10, 32)
    );
    let arch = architecture("resnet20", &cfg).unwrap();
    dict.check_against("ckpt", &arch).unwrap();
}

#[test]
fn every_accepted_prefix_reads_the_same() {
    let Some(tensors) = fixture() else {
        return;
    };
    let base = split(tensors.clone()).unwrap();
    for prefix in ["module.network.", ""] {
        let renamed: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| (format!("{prefix}{}", &k["network.".len()..]), t.clone()))
            .collect();
        let dict = split(renamed).unwrap();
        assert_eq!(dict.prefix, prefix);
        assert_eq!(dict.mixtures, base.mixtures);
        assert_eq!(dict.tensors.len(), base.tensors.len());
    }
}

#[test]
fn malformed_variants_name_each_key() {
    let Some(tensors) = fixture() else {
        return;
    };
    let cpu = &Device::Cpu;

    // A missing parameter and a mis-shaped one, reported together.
    let mut t = tensors.clone();
    t.remove("network.layer1.0.bn1.running_var");
    t.insert(
        "network.linear.weight".into(),
        Tensor::zeros((10, 32), candle_core::DType::F32, cpu).unwrap(),
    );
    t.insert(
        "network.extra.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, cpu).unwrap(),
    );
    let p = check(t, "resnet20").join("\n");
    assert!(
        p.contains("missing key `network.layer1.0.bn1.running_var`"),
        "{p}"
    );
    assert!(
        p.contains("key `network.linear.weight` has shape [10, 32]") && p.contains("[10, 64]"),
        "{p}"
    );
    assert!(p.contains("unexpected key `network.extra.weight`"), "{p}");

    // A mixture parameter missing, one with NaN, one of the wrong length.
    let mut t = tensors.clone();
    t.remove("network.layer1.0.conv1.sub_distribution.temperature");
    let mu = "network.layer2.0.conv2.sub_distribution.mu";
    let mut values: Vec<f32> = t[mu].to_vec1().unwrap();
    values[3] = f32::NAN;
    t.insert(mu.into(), Tensor::new(values, cpu).unwrap());
    t.insert(
        "network.layer3.0.conv1.sub_distribution.pi_k".into(),
        Tensor::ones(7, candle_core::DType::F32, cpu).unwrap(),
    );
    let p = problems(split(t).map(|_| ())).join("\n");
    assert!(
        p.contains("missing key `network.layer1.0.conv1.sub_distribution.temperature`"),
        "{p}"
    );
    assert!(
        p.contains(&format!("key `{mu}`: value NaN at index 3")),
        "{p}"
    );
    assert!(
        p.contains("key `network.layer3.0.conv1.sub_distribution.pi_k` has 7 values"),
        "{p}"
    );

    // A zero sigma and a non-positive temperature.
    let mut t = tensors.clone();
    t.insert(
        "network.layer1.1.conv2.sub_distribution.sigma_zero".into(),
        Tensor::new(&[0f32], cpu).unwrap(),
    );
    t.insert(
        "network.layer1.1.conv1.sub_distribution.temperature".into(),
        Tensor::new(&[-0.01f32], cpu).unwrap(),
    );
    let p = problems(split(t).map(|_| ())).join("\n");
    assert!(
        p.contains("layer1.1.conv2.sub_distribution.sigma_zero`: sigma is 0"),
        "{p}"
    );
    assert!(p.contains("temperature -0.01 is not positive"), "{p}");

    // The wrong network: ResNet-32 lacks every layerN.3..4 key.
    let p = check(tensors.clone(), "resnet32").join("\n");
    assert!(
        p.contains("missing key `network.layer1.3.conv1.weight`"),
        "{p}"
    );

    // A mixture on something that is not a convolution is not dropped
    // silently.
    let mut t = tensors;
    for (k, v) in t.clone() {
        if let Some(rest) = k.strip_prefix("network.layer1.0.conv1.sub_distribution.") {
            t.insert(format!("network.linear.sub_distribution.{rest}"), v);
        }
    }
    let p = check(t, "resnet20").join("\n");
    assert!(
        p.contains("unexpected mixture `network.linear.sub_distribution`"),
        "{p}"
    );
}

#[test]
fn plain_state_dicts_are_not_the_authors_format() {
    let mut t = HashMap::new();
    t.insert(
        "conv1.weight".to_string(),
        Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(!is_reference_state_dict(&t));
}
