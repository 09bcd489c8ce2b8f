//! Whole runs over in-process ranks (`train_in_process`, what
//! `dgms pretrain --ranks N` runs): one run directory written by rank 0,
//! and a resume with the same number of ranks continues bit for bit.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::tiny;
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::parallel::train_in_process;
use dgms_train::train::checkpoint;
use dgms_train::train::trainer::{train, TrainOptions, LAST, METRICS};

fn tensors(path: &Path) -> HashMap<String, Vec<u32>> {
    checkpoint::load(path)
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// `cfg` trained by 2 ranks for its 2 epochs straight, and for 1 epoch
/// then resumed by 2 ranks: the final checkpoints hold the same bits, and
/// the run directory holds one run (2 metrics lines, 4 steps).
fn assert_two_ranks_resume_equals_uninterrupted(make: impl Fn(&Path) -> RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let straight = make(&dir.path().join("straight"));
    let outcome = train_in_process(&straight, &TrainOptions::default(), 2).unwrap();
    assert_eq!((outcome.epochs, outcome.steps), (2, 4));
    assert!(outcome.top1.is_finite());
    let metrics = std::fs::read_to_string(straight.out_dir.join(METRICS)).unwrap();
    assert_eq!(metrics.lines().count(), 2);

    let split = make(&dir.path().join("split"));
    let first = TrainOptions {
        stop_after: Some(1),
        ..TrainOptions::default()
    };
    assert_eq!(train_in_process(&split, &first, 2).unwrap().epochs, 1);
    let last = split.out_dir.join(LAST);
    let resume = TrainOptions {
        resume: Some(&last),
        ..TrainOptions::default()
    };
    let outcome = train_in_process(&split, &resume, 2).unwrap();
    assert_eq!((outcome.epochs, outcome.steps), (2, 4));

    let a = tensors(&straight.out_dir.join(LAST));
    let b = tensors(&last);
    assert_eq!(a.len(), b.len());
    assert!(a.keys().any(|k| k.starts_with("optim.momentum.")));
    for (name, bits) in &a {
        assert_eq!(Some(bits), b.get(name), "{name} differs after resume");
    }
}

#[test]
fn two_ranks_resume_equals_uninterrupted_full_precision() {
    assert_two_ranks_resume_equals_uninterrupted(tiny);
}

#[test]
fn two_ranks_resume_equals_uninterrupted_dgms() {
    let dir = tempfile::tempdir().unwrap();
    let mut fp = tiny(&dir.path().join("fp"));
    fp.epochs = 1;
    let init = train(&fp, None).unwrap().last;
    assert_two_ranks_resume_equals_uninterrupted(|out| {
        let mut cfg = RunConfig::dgms(
            "resnet20",
            "embedded",
            out.to_path_buf(),
            Some(init.clone()),
            MixtureSettings::with_k(4),
        );
        cfg.epochs = 2;
        cfg.batch_size = 16;
        cfg.max_batches = Some(2);
        cfg.max_eval = Some(64);
        cfg
    });
}
