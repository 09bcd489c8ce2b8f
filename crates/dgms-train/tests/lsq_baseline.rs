//! The LSQ baseline (`dgms dgms --lsq`, `cargo xtask train --baselines`) as
//! a training run: its steps train, live in checkpoints, resume bit for bit
//! and come back when the checkpoint is opened for evaluation, and its
//! evaluation uses weights on the grid.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::tiny;
use dgms_core::UniformQuantizer;
use dgms_train::config::{MixtureSettings, RunConfig, UniformSettings};
use dgms_train::phases::{self, OpenOptions};
use dgms_train::train::checkpoint;
use dgms_train::train::trainer::{train, train_until, LAST};
use dgms_train::train::uniform_baseline::uniform_key;

fn lsq(out: &Path, init: &Path, k: usize) -> RunConfig {
    let mut cfg = tiny(out);
    cfg.lr = 1e-3;
    cfg.init_from = Some(init.to_path_buf());
    cfg.uniform = UniformSettings::with_levels(k);
    cfg
}

fn f32_tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    checkpoint::load(path)
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

#[test]
fn lsq_runs_train_their_steps_resume_and_evaluate_on_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let mut fp = tiny(&dir.path().join("fp"));
    fp.epochs = 1;
    let fp = train(&fp, None).unwrap().last;
    let fp_tensors = checkpoint::load_tensors(&fp).unwrap();

    // Straight, and one epoch then resumed: the same bits.
    let straight = lsq(&dir.path().join("straight"), &fp, 4);
    let outcome = train(&straight, None).unwrap();
    let split = lsq(&dir.path().join("split"), &fp, 4);
    train_until(&split, None, Some(1)).unwrap();
    train(&split, Some(&split.out_dir.join(LAST))).unwrap();
    let (a, b) = (
        f32_tensors(&outcome.last),
        f32_tensors(&split.out_dir.join(LAST)),
    );
    assert_eq!(a.len(), b.len());
    for (name, values) in &a {
        assert_eq!(Some(values), b.get(name), "{name} differs after resume");
    }

    // A step for every conv but the first, trained away from LSQ's start,
    // with momentum state; no mixture.
    let ckpt = checkpoint::load(&outcome.last).unwrap();
    assert!(ckpt.meta.mixture_k.is_empty());
    let steps: Vec<&String> = a
        .keys()
        .filter(|k| k.ends_with(".uniform.step") && !k.starts_with("optim."))
        .collect();
    assert_eq!(steps.len(), 18);
    assert!(!a.contains_key(&uniform_key("conv1")));
    let layer = "layer2.1.conv2";
    let start =
        UniformQuantizer::initial_step(layer, &fp_tensors[&format!("{layer}.weight")], 2).unwrap();
    let trained = a[&uniform_key(layer)][0];
    assert_ne!(trained, start, "the step did not train");
    assert!(a.contains_key(&format!("optim.momentum.{}", uniform_key(layer))));

    // Opened for evaluation, the model quantizes with the stored steps:
    // every quantized layer's weights are 4 levels of its grid, the stem
    // stays full precision.
    let (_, _, model) = phases::open(&outcome.last, &OpenOptions::default()).unwrap();
    let grids = model.net.uniform_quantizers();
    assert_eq!(grids.len(), 18);
    for (name, grid) in &grids {
        let s = grid.step_value().unwrap();
        assert_eq!(s, a[&uniform_key(name)][0]);
        let conv = model.net.conv(name).unwrap();
        let w: Vec<f32> = conv
            .effective_weight(false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut levels: Vec<i64> = w.iter().map(|v| (v / s).round() as i64).collect();
        assert!(
            w.iter().all(|v| ((v / s) - (v / s).round()).abs() < 1e-4),
            "{name}: off the grid"
        );
        levels.sort_unstable();
        levels.dedup();
        assert!(
            levels.iter().all(|q| (-2..=1).contains(q)),
            "{name}: {levels:?}"
        );
    }
    assert!(model.net.conv("conv1").unwrap().uniform().is_none());
    let eval = phases::eval(&outcome.last, None, Some(64)).unwrap();
    assert!(eval.top1.is_finite() && eval.top1 > 0.0, "{eval:?}");
}

#[test]
fn lsq_settings_are_checked_naming_their_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut both = lsq(dir.path(), Path::new("fp.safetensors"), 16);
    both.mixture = Some(MixtureSettings::with_k(16));
    assert_eq!(both.validate().unwrap_err().flag, "--lsq");
    let mut one_bit = lsq(dir.path(), Path::new("fp.safetensors"), 16);
    one_bit.uniform = Some(UniformSettings {
        bits: 1,
        layers: None,
    });
    let e = one_bit.validate().unwrap_err();
    assert_eq!(e.flag, "--k");
    assert!(e.expected.contains("power of two"), "{e}");
    assert!(UniformSettings::with_levels(12).is_none());
    assert_eq!(UniformSettings::with_levels(8).unwrap().bits, 3);

    // A DGMS config asked of an LSQ checkpoint (or back) is refused.
    let saved = lsq(dir.path(), Path::new("fp.safetensors"), 16);
    let mut asked = saved.clone();
    asked.uniform = None;
    asked.mixture = Some(MixtureSettings::with_k(16));
    assert_eq!(asked.resume_mismatch(&saved).unwrap().flag, "--lsq");
    let mut other_bits = saved.clone();
    other_bits.uniform = UniformSettings::with_levels(4);
    assert_eq!(other_bits.resume_mismatch(&saved).unwrap().flag, "--k");
}
