//! The committed seeds of the `load_checkpoint` fuzz target (`fuzz/` at the
//! repository root): the valid ones still load, the corrupt ones are still
//! refused. Regenerate with
//! `cargo test -p dgms-train --test fuzz_seeds -- --ignored write_fuzz_seeds`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use dgms_train::config::RunConfig;
use dgms_train::train::checkpoint::{self, CheckpointMeta, FORMAT_VERSION};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/load_checkpoint")
}

/// A small checkpoint: a weight, a mixture and a momentum buffer.
fn valid_checkpoint(path: &Path) {
    let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
    let tensors = vec![
        ("conv1.weight".to_string(), t(&[0.5, -1.0, 2.0, 0.0])),
        (checkpoint::mixture_key("conv1", "mu"), t(&[-0.1, 0.1])),
        (checkpoint::mixture_key("conv1", "tau"), t(&[0.01])),
        ("optim.momentum.conv1.weight".to_string(), t(&[0.0; 4])),
    ];
    let meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        model: "resnet20".into(),
        epoch: 2,
        step: 10,
        seed: 7,
        top1: 50.0,
        best_top1: 55.0,
        mixture_k: BTreeMap::from([("conv1".to_string(), 3)]),
        train_tau: false,
        hardened: false,
        config: RunConfig::pretrain("resnet20", "embedded", PathBuf::from("run")),
    };
    checkpoint::save(path, &tensors, &meta).unwrap();
}

/// Corrupt variants of a valid checkpoint's bytes, by file name.
fn corrupt_variants(valid: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut trailing = valid.to_vec();
    trailing.extend_from_slice(&[0; 4]);
    let mut long_header = valid.to_vec();
    long_header[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    vec![
        ("truncated.safetensors", valid[..valid.len() / 2].to_vec()),
        ("trailing.safetensors", trailing),
        ("long_header.safetensors", long_header),
    ]
}

#[test]
#[ignore = "writes the fuzz seeds; run by hand after a format change"]
fn write_fuzz_seeds() {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let valid = dir.join("valid.safetensors");
    valid_checkpoint(&valid);
    let bytes = std::fs::read(&valid).unwrap();
    for (name, bad) in corrupt_variants(&bytes) {
        std::fs::write(dir.join(name), bad).unwrap();
    }
}

#[test]
fn fuzz_seeds_are_current() {
    let dir = seeds_dir();
    let ckpt = checkpoint::load(&dir.join("valid.safetensors")).unwrap();
    assert_eq!(ckpt.meta.epoch, 2);
    assert_eq!(ckpt.tensors.len(), 4);
    // The committed valid seed is what the writer writes today.
    let tmp = tempfile::tempdir().unwrap();
    let fresh = tmp.path().join("valid.safetensors");
    valid_checkpoint(&fresh);
    let written = std::fs::read(&fresh).unwrap();
    assert_eq!(
        std::fs::read(dir.join("valid.safetensors")).unwrap(),
        written,
        "regenerate the seeds (see the module docs)"
    );
    for (name, _) in corrupt_variants(&written) {
        let err = checkpoint::load(&dir.join(name)).err();
        assert!(err.is_some(), "{name} loads");
    }
}
