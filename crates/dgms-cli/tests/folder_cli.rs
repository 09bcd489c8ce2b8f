//! The binary on an ImageNet-layout folder: training with --resize and
//! --crop, `dgms eval` from a checkpoint and from --model/--weights with
//! --json, `dgms data export` with a contact sheet, and the errors a user
//! meets first.

mod common;

use std::path::Path;

use common::{dgms_err, dgms_ok, path_str as s};

fn fixture() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/imagenet-mini");
    format!("imagenet:{}", dir.display())
}

#[test]
fn train_eval_and_export_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let data = fixture();
    let stdout = dgms_ok(&[
        "pretrain",
        "--model",
        "resnet18",
        "--data",
        &data,
        "--resize",
        "40",
        "--crop",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "5",
        "--max-batches",
        "2",
        "--out",
        s(&run),
    ]);
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let skipped = outcome["skipped_files"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{outcome}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["images"]["crop"], 32);

    // From the checkpoint: its data and transforms.
    let last = run.join("last.safetensors");
    let json = dir.path().join("eval.json");
    let stdout = dgms_ok(&["eval", "--checkpoint", s(&last), "--json", s(&json)]);
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(printed, written);
    assert_eq!(printed["images"], 5);
    assert_eq!(printed["skipped"], 0);

    // The same weights as a file of the named network give the same result.
    let stdout = dgms_ok(&[
        "eval",
        "--model",
        "resnet18",
        "--weights",
        s(&last),
        "--data",
        &data,
        "--resize",
        "40",
        "--crop",
        "32",
        "--test-batch-size",
        "2",
    ]);
    let by_weights: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(by_weights["top1"], printed["top1"]);
    let (a, b) = (
        by_weights["loss"].as_f64().unwrap(),
        printed["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");

    // What the model sees: 4 val images and a contact sheet of 2 x 2 tiles.
    let batch = dir.path().join("batch.safetensors");
    let png = dir.path().join("sheet.png");
    let stdout = dgms_ok(&[
        "data",
        "export",
        "--data",
        &data,
        "--split",
        "val",
        "--limit",
        "4",
        "--resize",
        "40",
        "--crop",
        "32",
        "--out",
        s(&batch),
        "--png",
        s(&png),
    ]);
    assert!(
        stdout.contains("4 images") && stdout.contains("3 x 32 x 32"),
        "{stdout}"
    );
    let (images, labels) = dgms_data::inspect::read_batch(&batch).unwrap();
    assert_eq!(images.dims(), &[4, 3, 32, 32]);
    assert_eq!(labels.to_vec1::<u32>().unwrap(), [0, 0, 1, 1]);
    let sheet = image::open(&png).unwrap();
    // 2 tiles of 32 and 3 gutters of 2 each way.
    assert_eq!((sheet.width(), sheet.height()), (70, 70));
}

#[test]
fn folder_mistakes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let err = dgms_err(&[
        "eval",
        "--model",
        "resnet18",
        "--weights",
        s(&missing),
        "--data",
        &format!("imagenet:{}", missing.display()),
    ]);
    assert!(err.contains("nowhere/train"), "{err}");
    let err = dgms_err(&[
        "pretrain",
        "--model",
        "resnet18",
        "--data",
        &fixture(),
        "--resize",
        "32",
        "--crop",
        "40",
        "--out",
        s(&dir.path().join("r")),
    ]);
    assert!(
        err.contains("--crop 40") && err.contains("--resize (32)"),
        "{err}"
    );
    let err = dgms_err(&["eval", "--model", "resnet18", "--weights", s(&missing)]);
    assert!(err.contains("--data"), "{err}");
}
