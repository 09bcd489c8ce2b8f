//! Helpers of the training-run tests of the `dgms` binary: comparing two
//! run directories bit for bit.

#![allow(dead_code)] // each test file uses its own subset

use dgms_test_support::tensors::tensor_bits;
use std::path::Path;

/// The lines of `metrics.jsonl` without the wall-clock `seconds`.
pub fn metrics_without_seconds(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

/// Both runs' `last` and `best` checkpoints hold the same tensors
/// (weights, statistics, optimizer state) bit for bit, and their metrics
/// agree in every field but `seconds`.
pub fn assert_same_run(expected: &Path, got: &Path) {
    for file in ["last.safetensors", "best.safetensors"] {
        let (a, b) = (
            tensor_bits(&expected.join(file)),
            tensor_bits(&got.join(file)),
        );
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{file}: tensor sets differ"
        );
        assert!(
            a.keys().any(|k| k.starts_with("optim.momentum.")),
            "{file}: no optimizer state"
        );
        for (name, value) in &a {
            assert!(&b[name] == value, "{file}: {name} differs");
        }
    }
    let (a, b) = (
        metrics_without_seconds(expected),
        metrics_without_seconds(got),
    );
    assert!(!a.is_empty());
    assert_eq!(a, b, "metrics.jsonl differs");
}
