//! Failure behaviour of the training loop, on tiny runs of the embedded
//! data: bad hyper-parameters are refused up front, a run that diverges
//! (even through the last update of an epoch) stops naming epoch and step
//! and saves nothing of it, a resume is exact or refused, the metrics file
//! is rebuilt from the checkpoint, an occupied run directory needs
//! `force`, and the stop flag ends a run at a step boundary.

mod common;

use common::tiny;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use dgms_train::train::checkpoint;
use dgms_train::train::trainer::{
    train, train_until, train_with, EpochMetrics, TrainOptions, BEST, CONFIG, LAST, METRICS,
};
use dgms_train::TrainError;

/// The lines of `metrics.jsonl` without the wall-clock `seconds`.
fn metrics_without_seconds(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(METRICS)).unwrap();
    text.lines()
        .map(|l| {
            let parsed: EpochMetrics = serde_json::from_str(l).unwrap();
            let mut v = serde_json::to_value(parsed).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn bad_hyper_parameters_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny(&dir.path().join("run"));
    cfg.lr = f64::NAN;
    let err = train(&cfg, None).unwrap_err();
    assert!(matches!(err, TrainError::InvalidSetting(_)), "{err}");
    assert!(err.to_string().starts_with("--lr NaN"), "{err}");
    assert!(
        !cfg.out_dir.exists(),
        "nothing is written for a refused run"
    );
}

/// The update of the only step of the only epoch makes the weights
/// infinite (lr 1e39 is finite in f64 but not in f32); the loss of that
/// step was finite. Caught after the update, named, nothing saved.
#[test]
fn divergence_in_the_last_update_of_an_epoch_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny(&dir.path().join("run"));
    cfg.epochs = 1;
    cfg.max_batches = Some(1);
    cfg.lr = 1e39;
    cfg.schedule = dgms_train::config::ScheduleKind::Constant;
    let err = train(&cfg, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            TrainError::NonFiniteParameter {
                step: 1,
                epoch: 1,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("after optimizer step 1 (epoch 1"), "{msg}");
    assert!(msg.contains("no checkpoint was written"), "{msg}");
    for f in [LAST, BEST, METRICS] {
        assert!(
            !cfg.out_dir.join(f).exists(),
            "{f} written for a diverged run"
        );
    }
}

/// Training that stays finite but an evaluation that does not: batch-norm
/// running means near -f32::MAX (used only in eval mode) make the test
/// logits overflow. The run stops naming epoch and step, and the first
/// epoch's checkpoint and metrics stay as they were.
#[test]
fn a_diverged_evaluation_is_never_saved() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&dir.path().join("run"));
    train_until(&cfg, None, Some(1)).unwrap();
    let before = std::fs::read(cfg.out_dir.join(LAST)).unwrap();
    let best_before = std::fs::read(cfg.out_dir.join(BEST)).unwrap();
    let metrics_before = std::fs::read(cfg.out_dir.join(METRICS)).unwrap();

    let mut ckpt = checkpoint::load(&cfg.out_dir.join(LAST)).unwrap();
    for (name, t) in ckpt.tensors.iter_mut() {
        if name.ends_with(".running_mean") {
            *t = (t.ones_like().unwrap() * -3e38).unwrap();
        } else if name.ends_with(".running_var") {
            *t = t.zeros_like().unwrap();
        }
    }
    let tensors: Vec<_> = ckpt.tensors.into_iter().collect();
    let metrics = ckpt.metrics.clone();
    let hot = cfg.out_dir.join("hot.safetensors");
    checkpoint::save_with_metrics(&hot, &tensors, &ckpt.meta, Some(&metrics)).unwrap();
    let err = train(&cfg, Some(&hot)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            TrainError::Diverged {
                epoch: 2,
                step: 4,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.starts_with("training diverged: evaluation after epoch 2 (step 4) gave"),
        "{msg}"
    );
    assert!(msg.contains("the last good checkpoint is"), "{msg}");
    assert_eq!(std::fs::read(cfg.out_dir.join(LAST)).unwrap(), before);
    assert_eq!(std::fs::read(cfg.out_dir.join(BEST)).unwrap(), best_before);
    assert_eq!(
        std::fs::read(cfg.out_dir.join(METRICS)).unwrap(),
        metrics_before
    );
}

#[test]
fn resume_is_exact_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let straight = tiny(&dir.path().join("straight"));
    train(&straight, None).unwrap();
    let split = tiny(&dir.path().join("split"));
    train_until(&split, None, Some(1)).unwrap();
    let last = split.out_dir.join(LAST);

    // Another setting: named with both values, nothing changes.
    let mut other = split.clone();
    other.lr = 0.1;
    let msg = train(&other, Some(&last)).unwrap_err().to_string();
    assert!(
        msg.starts_with("--lr 0.1 differs from the checkpoint's 0.05"),
        "{msg}"
    );
    let mut other = split.clone();
    other.max_batches = Some(3);
    let msg = train(&other, Some(&last)).unwrap_err().to_string();
    assert!(
        msg.starts_with("--max-batches 3 differs from the checkpoint's 2"),
        "{msg}"
    );

    // Another directory.
    let elsewhere = tiny(&dir.path().join("straight"));
    let msg = train(&elsewhere, Some(&last)).unwrap_err().to_string();
    assert!(msg.contains("is not in the run directory"), "{msg}");

    // Lines written after the checkpoint (a process that died later) are
    // dropped on resume: metrics.jsonl is rebuilt from the checkpoint.
    let mut metrics = std::fs::read_to_string(split.out_dir.join(METRICS)).unwrap();
    metrics.push_str("{\"epoch\": 99}\n");
    std::fs::write(split.out_dir.join(METRICS), metrics).unwrap();
    train(&split, Some(&last)).unwrap();
    assert_eq!(
        metrics_without_seconds(&split.out_dir),
        metrics_without_seconds(&straight.out_dir)
    );
    assert_eq!(metrics_without_seconds(&split.out_dir).len(), 2);
    // The checkpoint's history is the metrics file.
    assert_eq!(
        checkpoint::load(&last).unwrap().metrics,
        std::fs::read_to_string(split.out_dir.join(METRICS)).unwrap()
    );
}

#[test]
fn an_occupied_run_directory_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny(&dir.path().join("run"));
    cfg.epochs = 1;
    cfg.max_batches = Some(1);
    train(&cfg, None).unwrap();
    let err = train(&cfg, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::RunExists { .. }), "{msg}");
    assert!(
        msg.contains("already holds a run") && msg.contains("--resume") && msg.contains("--force"),
        "{msg}"
    );
    assert!(msg.contains(CONFIG) && msg.contains(LAST), "{msg}");

    // --force starts over: the old run's files are replaced (an extra
    // metrics line would survive an append).
    std::fs::write(cfg.out_dir.join(METRICS), "stale\n").unwrap();
    let opts = TrainOptions {
        force: true,
        ..TrainOptions::default()
    };
    train_with(&cfg, &opts).unwrap();
    assert_eq!(metrics_without_seconds(&cfg.out_dir).len(), 1);

    // --force never removes the weights the new run starts from.
    let last = cfg.out_dir.join(LAST);
    let before = std::fs::read(&last).unwrap();
    let mut from_last = cfg.clone();
    from_last.init_from = Some(last.clone());
    let msg = train_with(&from_last, &opts).unwrap_err().to_string();
    assert!(
        msg.starts_with("--force would remove ") && msg.contains("same file as --init"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&last).unwrap(), before);
}

#[test]
fn the_stop_flag_ends_the_run_at_a_step_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(&dir.path().join("run"));
    let stop = AtomicBool::new(true);
    let opts = TrainOptions {
        stop: Some(&stop),
        ..TrainOptions::default()
    };
    let err = train_with(&cfg, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::Interrupted {
                step: 0,
                epoch: 1,
                last: None
            }
        ),
        "{err}"
    );
    assert!(!cfg.out_dir.join(LAST).exists());

    // Resumed with the flag raised: stops before its first step, naming
    // the checkpoint it resumed from.
    let opts = TrainOptions {
        force: true,
        stop_after: Some(1),
        ..TrainOptions::default()
    };
    train_with(&cfg, &opts).unwrap();
    let last = cfg.out_dir.join(LAST);
    let opts = TrainOptions {
        resume: Some(&last),
        stop: Some(&stop),
        ..TrainOptions::default()
    };
    match train_with(&cfg, &opts).unwrap_err() {
        TrainError::Interrupted {
            step,
            epoch,
            last: Some(kept),
        } => {
            assert_eq!((step, epoch, kept), (2, 2, last.clone()));
        }
        e => panic!("{e}"),
    }
}

/// A model with dropout (seeded from (run seed, step)): a resumed run
/// equals an uninterrupted one bit for bit.
fn resume_is_exact(model: &str) {
    let dir = tempfile::tempdir().unwrap();
    let make = |out: &Path| {
        let mut cfg = tiny(out);
        cfg.model = model.into();
        cfg.batch_size = 4;
        cfg.max_eval = Some(8);
        cfg.lr = 0.01;
        cfg
    };
    let straight = make(&dir.path().join("straight"));
    train(&straight, None).unwrap();
    let split = make(&dir.path().join("split"));
    train_until(&split, None, Some(1)).unwrap();
    train(&split, Some(&split.out_dir.join(LAST))).unwrap();
    let load = |p: &Path| checkpoint::load(&p.join(LAST)).unwrap().tensors;
    let (a, b) = (load(&straight.out_dir), load(&split.out_dir));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{model}: {name} differs after resume"
        );
    }
}

#[test]
fn mobilenet_v2_resume_is_exact() {
    resume_is_exact("mobilenet_v2");
}

/// MNASNet: dropout too, and batch norms at momentum 1 - 0.9997.
#[test]
fn mnasnet1_0_resume_is_exact() {
    resume_is_exact("mnasnet1_0");
}
