//! The README's "Using the authors' checkpoints" commands, through the
//! binary, on the checkpoint their own code made: report, export (harden
//! and pack in one step), infer in both engines against their logits,
//! harden with their rule, evaluate; and the errors a user meets first.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{dgms_err, dgms_ok, path_str as s};
use dgms_test_support::compare::logit_agreement;
use dgms_test_support::fixtures::shared_fixture;

const CKPT: &str = "fixtures/reference-checkpoints/resnet20_dgms_k16.pth.tar";
const IO: &str = "fixtures/reference-checkpoints/resnet20_dgms_k16.io.safetensors";

fn values(path: &Path, name: &str) -> Vec<f32> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    t[name].flatten_all().unwrap().to_vec1().unwrap()
}

fn tiny_cifar(dir: &Path) -> PathBuf {
    let dir = dir.join("cifar");
    std::fs::create_dir(&dir).unwrap();
    dgms_test_support::datasets::write_random_cifar(&dir, 8, 99).unwrap();
    dir
}

#[test]
fn from_their_file_to_packed_model_to_their_logits() {
    let (Some(ckpt), Some(io)) = (shared_fixture(CKPT), shared_fixture(IO)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The report, both ways, and as JSON.
    let json = d.join("report.json");
    let text = dgms_ok(&[
        "report",
        "--checkpoint",
        s(&ckpt),
        "--model",
        "resnet20",
        "--json",
        s(&json),
    ]);
    assert!(text.contains("ref-underflow"), "{text}");
    assert!(
        text.contains("As the DGMS authors' code reports it:"),
        "{text}"
    );
    assert!(
        text.contains("Total sparsity is 23429 / 267264:\t 0.0877"),
        "{text}"
    );
    assert!(
        text.contains("conv1\ttorch.Size([16, 3, 3, 3]):\tfp32"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["zeros"], 23429);
    assert_eq!(report["reference"]["zeros"], 23429);
    assert_eq!(report["reference"]["bits"], 4);

    // Export: hardens (the authors' rule) and packs in one step.
    let packed = d.join("r20.dgms.safetensors");
    dgms_ok(&[
        "export",
        "--checkpoint",
        s(&ckpt),
        "--model",
        "resnet20",
        "--hardening",
        "reference",
        "--out",
        s(&packed),
    ]);
    let expected = values(&io, "logits");
    let classes = 10;
    for engine in ["qsimd", "candle"] {
        let logits = d.join(format!("logits-{engine}.safetensors"));
        dgms_ok(&[
            "infer",
            "--packed",
            s(&packed),
            "--input",
            s(&io),
            "--out",
            s(&logits),
            "--engine",
            engine,
        ]);
        let got = values(&logits, "logits");
        let (err, same_top1) = logit_agreement(&got, &expected, classes);
        assert!(err < 1e-4, "{engine}: relative error {err}");
        assert_eq!(same_top1, expected.len() / classes, "{engine}: top-1");
    }

    // Harden to a checkpoint with the authors' rule, then evaluate it and
    // the original on data.
    let hard = d.join("hard.safetensors");
    let text = dgms_ok(&[
        "harden",
        "--checkpoint",
        s(&ckpt),
        "--model",
        "resnet20",
        "--hardening",
        "reference",
        "--out",
        s(&hard),
    ]);
    assert!(text.contains("8.77%"), "{text}");
    let data = format!("cifar10:{}", tiny_cifar(d).display());
    let from_file: serde_json::Value = serde_json::from_str(&dgms_ok(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--model",
        "resnet20",
        "--data",
        &data,
    ]))
    .unwrap();
    let from_hard: serde_json::Value = serde_json::from_str(&dgms_ok(&[
        "eval",
        "--checkpoint",
        s(&hard),
        "--data",
        &data,
    ]))
    .unwrap();
    assert_eq!(from_file["images"], 8);
    assert_eq!(from_file["top1"], from_hard["top1"]);
    let (a, b) = (
        from_file["loss"].as_f64().unwrap(),
        from_hard["loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");

    // The authors' final line after an evaluation.
    let text = dgms_ok(&[
        "report",
        "--checkpoint",
        s(&ckpt),
        "--model",
        "resnet20",
        "--data",
        &data,
    ]);
    assert!(text.contains("Best Top-1: "), "{text}");
    assert!(text.contains("| CR: 8.77"), "{text}");
}

#[test]
fn their_files_need_a_network_name() {
    let Some(ckpt) = shared_fixture(CKPT) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.dgms.safetensors");
    let err = dgms_err(&["export", "--checkpoint", s(&ckpt), "--out", s(&out)]);
    assert!(err.contains("pass --model NAME"), "{err}");
    assert!(!out.exists());
    let err = dgms_err(&["report", "--checkpoint", s(&ckpt), "--model", "vggsmall"]);
    assert!(
        err.contains("missing key `network.features.0.weight`") || err.contains("unexpected key"),
        "{err}"
    );
    let err = dgms_err(&["eval", "--checkpoint", s(&ckpt), "--model", "resnet20"]);
    assert!(err.contains("--data"), "{err}");
}
