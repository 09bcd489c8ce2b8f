//! `--device` of `pretrain`, `dgms`, `eval` and `harden`: a bad string is a
//! usage error naming the accepted forms; CUDA in a build without the
//! `cuda` feature is a clean error (exit 1) that writes nothing; an
//! explicit `--device cpu` is the default, bit for bit.

mod common;
mod train_support;

use common::{dgms_ok, fails_with, path_str as s, pretrained};
use dgms_test_support::tensors::tensor_bits;
use train_support::assert_same_run;

/// A tiny run's flags.
const TINY: [&str; 10] = [
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--max-batches",
    "2",
    "--max-eval",
    "16",
    "--seed",
    "5",
];

#[test]
fn a_bad_device_is_a_usage_error_naming_the_accepted_forms() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
        let mut args = vec!["pretrain", "--device", bad, "--out", s(&run)];
        args.extend(TINY);
        let stderr = fails_with(&args, 2);
        assert!(
            stderr.contains("expected cpu, cuda or cuda:N"),
            "--device {bad}: {stderr}"
        );
        assert!(!run.exists(), "--device {bad} created the run directory");
    }
}

/// Every command given `--device cuda` in a build without CUDA says how to
/// get one, exits 1 and leaves its outputs unwritten. The inputs are real
/// (a full-precision checkpoint and the embedded data), so a command that
/// ignored the flag would succeed and fail the test.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clean_error_that_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let json = dir.path().join("eval.json");
    let hard = dir.path().join("hard.safetensors");
    let fp = pretrained();
    let mut pretrain = vec!["pretrain", "--device", "cuda", "--out", s(&run)];
    pretrain.extend(TINY);
    let mut fine_tune = vec!["dgms", "--init", s(&fp), "--k", "4", "--out", s(&run)];
    fine_tune.extend(TINY);
    fine_tune.extend(["--device", "cuda:1"]);
    let eval = [
        "eval",
        "--model",
        "resnet20",
        "--weights",
        s(&fp),
        "--data",
        "embedded",
        "--max-eval",
        "16",
        "--json",
        s(&json),
        "--device",
        "cuda",
    ];
    // Hardening reads the checkpoint after opening the device.
    let harden = [
        "harden",
        "--checkpoint",
        s(&fp),
        "--out",
        s(&hard),
        "--device",
        "cuda",
    ];
    let cases: [(&[&str], &str); 4] = [
        (&pretrain, "cuda:0"),
        (&fine_tune, "cuda:1"),
        (&eval, "cuda:0"),
        (&harden, "cuda:0"),
    ];
    for (args, device) in cases {
        let stderr = fails_with(args, 1);
        assert_eq!(
            stderr.lines().next().unwrap_or_default(),
            format!(
                "error: --device {device}: this dgms was built without CUDA: rebuild with --features cuda"
            ),
            "dgms {args:?}"
        );
    }
    for output in [&run, &json, &hard] {
        assert!(!output.exists(), "{} was written", output.display());
    }
}

/// `--device cpu` given explicitly trains, fine-tunes, hardens and
/// evaluates exactly as the default.
#[test]
fn explicit_cpu_is_the_default_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let fp = pretrained();
    for (suffix, device) in [("default", None), ("cpu", Some("cpu"))] {
        let extra: Vec<&str> = device.map_or(vec![], |d| vec!["--device", d]);
        let run = path(&format!("pre-{suffix}"));
        let mut args = vec!["pretrain", "--out", s(&run)];
        args.extend(TINY);
        args.extend(&extra);
        dgms_ok(&args);

        let run = path(&format!("dgms-{suffix}"));
        let mut args = vec!["dgms", "--init", s(&fp), "--k", "4", "--out", s(&run)];
        args.extend(TINY);
        args.extend(&extra);
        dgms_ok(&args);

        let last = run.join("last.safetensors");
        let hard = path(&format!("hard-{suffix}.safetensors"));
        let mut args = vec!["harden", "--checkpoint", s(&last), "--out", s(&hard)];
        args.extend(["--recalibrate-bn", "2"]);
        args.extend(&extra);
        dgms_ok(&args);

        let json = path(&format!("eval-{suffix}.json"));
        let mut args = vec!["eval", "--checkpoint", s(&hard), "--json", s(&json)];
        args.extend(["--max-eval", "32"]);
        args.extend(&extra);
        dgms_ok(&args);
    }
    assert_same_run(&path("pre-default"), &path("pre-cpu"));
    assert_same_run(&path("dgms-default"), &path("dgms-cpu"));
    let (a, b) = (
        tensor_bits(&path("hard-default.safetensors")),
        tensor_bits(&path("hard-cpu.safetensors")),
    );
    assert!(!a.is_empty());
    assert!(a == b, "the hardened checkpoints differ");
    let read = |name: &str| std::fs::read_to_string(path(name)).unwrap();
    let eval = read("eval-default.json");
    assert!(eval.contains("\"images\": 32"), "{eval}");
    assert_eq!(eval, read("eval-cpu.json"));
}
