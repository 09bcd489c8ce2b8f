//! Helpers shared by the `dgms` binary's integration tests: the repository
//! paths, running the binary, and comparing logits.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

use candle_core::Tensor;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn pretrained() -> PathBuf {
    repo().join("fixtures/pretrained/resnet20-fashion-mnist.safetensors")
}

/// The shared parity fixtures, if present.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = match std::env::var_os("DGMS_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo().join("../shared/fixtures/models"),
    };
    dir.is_dir().then_some(dir)
}

pub fn dgms(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dgms");
    println!(
        "$ dgms {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

pub fn dgms_ok(args: &[&str]) -> String {
    let out = dgms(args);
    assert!(
        out.status.success(),
        "dgms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn dgms_err(args: &[&str]) -> String {
    let out = dgms(args);
    assert_eq!(out.status.code(), Some(1), "dgms {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// Agreement of two logit batches (n x classes): (max |a-b| / max |b|,
/// images with the same top-1).
pub fn agreement(a: &[f32], b: &[f32], classes: usize) -> (f32, usize) {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    let scale = b.iter().fold(0.0f32, |m, y| m.max(y.abs()));
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
    let same = a
        .chunks_exact(classes)
        .zip(b.chunks_exact(classes))
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    (diff / scale, same)
}

pub fn tensor_values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}
