//! DGMS on an ImageNet-layout folder (the repository's fixture): two
//! mixture-mode training steps of ResNet-18 move its weights and mixtures
//! with a finite loss and count the truncated file; the result evaluates
//! end to end from its checkpoint and as a plain weights file; weights of
//! another class count are refused naming both counts.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::phases::{eval_with, EvalOptions, EvalWeights};
use dgms_train::train::checkpoint;
use dgms_train::train::session::prepare;
use dgms_train::train::trainer::train;
use dgms_train::{ImageSettings, TrainError};

fn fixture_source() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/imagenet-mini");
    format!("imagenet:{}", dir.display())
}

fn dgms_config(out: PathBuf) -> RunConfig {
    let mut cfg = RunConfig::dgms(
        "resnet18",
        &fixture_source(),
        out,
        None,
        MixtureSettings::with_k(4),
    );
    cfg.images = ImageSettings {
        resize: 40,
        crop: 32,
        random_resized_crop: false,
    };
    cfg.epochs = 1;
    // Two steps of 5: every one of the 10 training files once.
    cfg.batch_size = 5;
    cfg.max_batches = Some(2);
    cfg.lr = 0.01;
    cfg
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn two_dgms_steps_of_resnet18_on_a_folder_then_eval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dgms_config(dir.path().join("run"));
    // The starting point the run itself builds: seeded weights, k-means
    // mixtures.
    let (_, start) = prepare(&cfg, None).unwrap();
    let before: HashMap<String, Tensor> = start.checkpoint_tensors().into_iter().collect();
    assert!(
        before.keys().any(|k| k.contains("mixture")),
        "no mixture in {:?}",
        before.keys()
    );

    let outcome = train(&cfg, None).unwrap();
    assert_eq!(outcome.steps, 2);
    assert_eq!(
        outcome.skipped_files.len(),
        1,
        "{:?}",
        outcome.skipped_files
    );
    assert!(outcome.skipped_files[0].0.ends_with("truncated.JPEG"));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(line["train_loss"].as_f64().unwrap().is_finite(), "{line}");

    let after = checkpoint::load(&outcome.last).unwrap().tensors;
    let moved = |pred: &dyn Fn(&str) -> bool| {
        before
            .iter()
            .filter(|(k, _)| pred(k))
            .filter(|(k, t)| values(t) != values(&after[*k]))
            .count()
    };
    let mixture = |k: &str| k.contains("mixture");
    let conv = |k: &str| k.ends_with(".weight") && k.contains("conv");
    assert!(moved(&mixture) > 0, "no mixture parameter moved");
    assert!(moved(&conv) > 0, "no conv weight moved");

    // Evaluation: from the checkpoint, and from the same weights as a file
    // of the named network; 5 val images, none skipped.
    let opts = EvalOptions {
        resize: Some(40),
        crop: Some(32),
        ..EvalOptions::default()
    };
    let from_ckpt = eval_with(EvalWeights::Checkpoint(&outcome.last), &opts).unwrap();
    assert_eq!((from_ckpt.images, from_ckpt.skipped), (5, 0));
    assert!(from_ckpt.loss.is_finite());

    // Weights with 7 classes against 3 class folders.
    let mut wrong = after.clone();
    wrong.insert(
        "fc.weight".into(),
        Tensor::zeros((7, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    wrong.insert(
        "fc.bias".into(),
        Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
    );
    wrong.retain(|k, _| !k.contains("mixture") && !k.starts_with("sgd"));
    let path = dir.path().join("wrong.safetensors");
    candle_core::safetensors::save(&wrong, &path).unwrap();
    let data = fixture_source();
    let opts = EvalOptions {
        data: Some(&data),
        ..opts
    };
    let err = eval_with(
        EvalWeights::File {
            model: "resnet18",
            weights: &path,
        },
        &opts,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::ClassCount {
                weights: 7,
                data: 3,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("fc.weight") && msg.contains("7 classes") && msg.contains("has 3"),
        "{msg}"
    );
}
