//! Whole runs over in-process ranks (`train_in_process`, what
//! `dgms pretrain --ranks N` runs): one run directory written by rank 0,
//! and a resume with the same number of ranks continues bit for bit.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::tiny;
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::parallel::{in_process_group, train_in_process, train_rank, ParallelError};
use dgms_train::train::checkpoint;
use dgms_train::train::trainer::{train, train_until, TrainOptions, LAST, METRICS};
use dgms_train::TrainError;

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

/// Rank 1 of a group whose rank 0 is gone: it fails at its first
/// collective, and the run directory's files are as before.
fn run_rank_1_alone(cfg: &RunConfig, opts: &TrainOptions) {
    let mut comms = in_process_group(2).unwrap();
    let rank1 = comms.pop().unwrap();
    drop(comms);
    let err = train_rank(cfg, opts, &rank1).unwrap_err();
    assert!(
        matches!(&err, TrainError::Parallel(p) if matches!(**p, ParallelError::RankLeft { rank: 0 })),
        "{err}"
    );
}

/// Only rank 0 touches the run directory: rank 1 neither creates a fresh
/// one nor, with `--force`, removes an old run's files.
#[test]
fn ranks_other_than_0_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = tiny(&dir.path().join("fresh"));
    run_rank_1_alone(&fresh, &TrainOptions::default());
    assert!(!fresh.out_dir.exists());

    let old = tiny(&dir.path().join("old"));
    train_until(&old, None, Some(1)).unwrap();
    let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().to_string(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&old.out_dir);
    assert!(before.iter().any(|(n, _)| n == LAST));
    let force = TrainOptions {
        force: true,
        ..TrainOptions::default()
    };
    run_rank_1_alone(&old, &force);
    assert!(
        files(&old.out_dir) == before,
        "rank 1 changed the run directory"
    );
}
