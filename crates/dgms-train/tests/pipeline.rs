//! End-to-end checks of the training pipeline on tiny runs of the embedded
//! data: resume equals an uninterrupted run (full precision and DGMS), the
//! phases after training agree, and bad input gives clear errors.

mod common;

use common::{chain, tiny};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::phases;
use dgms_train::train::checkpoint;
use dgms_train::train::trainer::{train, train_until, LAST};
use dgms_train::TrainError;

/// The error with its chain of causes, as the binaries print it.
fn message(e: TrainError) -> String {
    chain(&e)
}

fn mixture(k: usize) -> MixtureSettings {
    MixtureSettings::with_k(k)
}

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    checkpoint::load(path)
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// Trains `cfg` for 2 epochs straight, and for 1 epoch then resumed to 2;
/// both final checkpoints must hold the same tensors, bit for bit.
fn assert_resume_equals_uninterrupted(make: impl Fn(&Path) -> RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let straight = make(&dir.path().join("straight"));
    train(&straight, None).unwrap();

    let first = make(&dir.path().join("split"));
    let interrupted = train_until(&first, None, Some(1)).unwrap();
    assert_eq!(interrupted.epochs, 1);
    let resumed = make(&dir.path().join("split"));
    let checkpoint = resumed.out_dir.join(LAST);
    let outcome = train(&resumed, Some(&checkpoint)).unwrap();
    assert_eq!(outcome.epochs, 2);
    assert_eq!(outcome.steps, 4);

    let a = tensors(&straight.out_dir.join(LAST));
    let b = tensors(&resumed.out_dir.join(LAST));
    assert_eq!(a.len(), b.len());
    assert!(a.keys().any(|k| k.starts_with("optim.momentum.")));
    for (name, values) in &a {
        assert_eq!(
            Some(values),
            b.get(name),
            "tensor {name} differs after resume"
        );
    }
}

fn fp_checkpoint(dir: &Path) -> PathBuf {
    let mut cfg = tiny(&dir.join("fp"));
    cfg.epochs = 1;
    train(&cfg, None).unwrap().last
}

#[test]
fn resume_equals_uninterrupted_full_precision() {
    assert_resume_equals_uninterrupted(tiny);
}

#[test]
fn resume_equals_uninterrupted_dgms_and_phases_agree() {
    let dir = tempfile::tempdir().unwrap();
    let fp = fp_checkpoint(dir.path());
    let dgms = |out: &Path| {
        let mut cfg = tiny(out);
        cfg.lr = 1e-3;
        cfg.init_from = Some(fp.clone());
        cfg.mixture = Some(mixture(4));
        cfg
    };
    assert_resume_equals_uninterrupted(dgms);

    // The checkpoint holds a mixture for every conv but the first.
    let trained = dir.path().join("fp").join(LAST);
    let straight = dgms(&dir.path().join("check"));
    let outcome = train(&straight, None).unwrap();
    let meta = checkpoint::load(&outcome.last).unwrap().meta;
    assert_eq!(meta.mixture_k.len(), 18);
    assert!(!meta.mixture_k.contains_key("conv1"));
    assert!(meta.mixture_k.values().all(|&k| k == 4));

    // Evaluating the DGMS checkpoint (hard weights) equals evaluating its
    // hardened version, and hardened weights take at most K values.
    let before = phases::eval(&outcome.last, None, Some(64)).unwrap();
    let hardened = dir.path().join("hard.safetensors");
    let report = phases::harden(&outcome.last, &hardened, 0).unwrap();
    // Export hardens a checkpoint with mixtures itself: the same packed
    // model as exporting its hardened checkpoint (statistics kept).
    let (direct, via) = (
        dir.path().join("a.dgms.safetensors"),
        dir.path().join("b.dgms.safetensors"),
    );
    dgms_train::export::export_packed(&outcome.last, &direct).unwrap();
    dgms_train::export::export_packed(&hardened, &via).unwrap();
    assert_eq!(
        dgms_qsimd::format::PackedModel::read(&direct).unwrap(),
        dgms_qsimd::format::PackedModel::read(&via).unwrap(),
        "export of the DGMS checkpoint vs of its hardened checkpoint"
    );
    let after = phases::eval(&hardened, None, Some(64)).unwrap();
    assert_eq!(before.top1, after.top1);
    assert!(
        (before.loss - after.loss).abs() < 1e-4,
        "{before:?} vs {after:?}"
    );
    assert_eq!(report.bits, Some(2));
    assert!(report.sparsity > 0.0 && report.sparsity < 1.0);
    let again = phases::report(&hardened).unwrap();
    assert_eq!(again.zeros, report.zeros);
    let t = checkpoint::load(&hardened).unwrap().tensors;
    let w: Vec<f32> = t["layer1.0.conv1.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut distinct: Vec<f32> = w.clone();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();
    assert!(
        distinct.len() <= 4 && distinct.contains(&0.0),
        "{distinct:?}"
    );
    assert!(t.contains_key("layer1.0.conv1.indices") && t.contains_key("layer1.0.conv1.codebook"));

    // Batch-norm recalibration moves the running statistics and nothing
    // else, the same way every time.
    let recal = |name: &str| {
        let path = dir.path().join(name);
        phases::harden(&outcome.last, &path, 3).unwrap();
        tensors(&path)
    };
    let (plain, r1, r2) = (tensors(&hardened), recal("r1"), recal("r2"));
    assert_eq!(r1, r2, "recalibration is not repeatable");
    assert_eq!(plain.len(), r1.len());
    for (name, values) in &plain {
        let stat = name.ends_with(".running_mean") || name.ends_with(".running_var");
        assert_eq!(
            stat,
            &r1[name] != values,
            "{name}: changed by recalibration = {}",
            &r1[name] != values
        );
    }

    // Hardening a full-precision checkpoint is refused with a hint.
    let msg = message(phases::harden(&trained, &dir.path().join("x"), 0).unwrap_err());
    assert!(
        msg.contains("no mixture layer") && msg.contains("quantize"),
        "{msg}"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let fp = fp_checkpoint(dir.path());

    // A checkpoint of another model.
    let mut vgg = tiny(&dir.path().join("vgg"));
    vgg.model = "vggsmall".into();
    let msg = message(train(&vgg, Some(&fp)).unwrap_err());
    assert!(
        msg.contains("checkpoint of model resnet20, not vggsmall"),
        "{msg}"
    );

    // A DGMS checkpoint resumed with another K.
    let mut k4 = tiny(&dir.path().join("k4"));
    k4.epochs = 1;
    k4.init_from = Some(fp.clone());
    k4.mixture = Some(mixture(4));
    let k4_ckpt = train(&k4, None).unwrap().last;
    let mut k16 = k4.clone();
    k16.epochs = 2;
    k16.mixture = Some(mixture(16));
    // (A resumed run keeps its configuration: the first setting that
    // differs is named with both values, here K before the epochs.)
    let msg = message(train(&k16, Some(&k4_ckpt)).unwrap_err());
    assert!(
        msg.starts_with("--k 16 differs from the checkpoint's 4"),
        "{msg}"
    );

    // A truncated checkpoint.
    let bytes = std::fs::read(&fp).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let msg = message(phases::eval(&cut, None, Some(8)).unwrap_err());
    assert!(msg.contains("cut.safetensors"), "{msg}");
    assert!(
        msg.contains("corrupt") || msg.contains("truncated"),
        "{msg}"
    );

    // A missing file.
    let msg = message(phases::eval(&dir.path().join("nope"), None, None).unwrap_err());
    assert!(msg.contains("nope"), "{msg}");

    // NaN loss: training stops, says at which step, keeps the last good
    // checkpoint. (lr 1e37: the first update leaves the weights finite,
    // which the per-step parameter check accepts, but so large that the
    // next forward pass overflows.)
    let mut diverge = tiny(&dir.path().join("diverge"));
    diverge.epochs = 3;
    diverge.max_batches = Some(3);
    diverge.lr = 1e37;
    diverge.schedule = dgms_train::config::ScheduleKind::Constant;
    let msg = message(train(&diverge, None).unwrap_err());
    assert!(msg.contains("loss is") && msg.contains("at step"), "{msg}");
    assert!(msg.contains("training stopped"), "{msg}");

    // A plain weights file is not a checkpoint to resume from.
    let plain = dir.path().join("plain.safetensors");
    let t = Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    t.save_safetensors("x", &plain).unwrap();
    let msg = message(train(&tiny(&dir.path().join("p")), Some(&plain)).unwrap_err());
    assert!(msg.contains("not a dgms checkpoint"), "{msg}");
}
