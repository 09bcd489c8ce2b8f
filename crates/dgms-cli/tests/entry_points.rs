//! The same configuration gives the same bits whichever entry point runs
//! it: a tiny DGMS run through the library functions `cargo xtask train`
//! calls (`RunConfig::dgms`, `train`, `phases::harden`, `phases::report_with`)
//! and through the `dgms` binary (`dgms dgms`, `dgms harden`, `dgms
//! report`) must give identical checkpoints (weights, mixtures, optimizer
//! state), identical hardened weights, indices and codebooks, and the same
//! report. (They once differed: the README's "Repeatability" note.)

mod common;

use dgms_test_support::tensors::tensor_bits;
use std::path::Path;

use common::{dgms_ok, pretrained};
use dgms_train::config::{MixtureSettings, RunConfig};
use dgms_train::phases;
use dgms_train::train::trainer::{train, CONFIG, LAST};

const K: usize = 4;
const BATCH_SIZE: usize = 64;
const MAX_BATCHES: usize = 3;
const MAX_EVAL: usize = 64;
const RECALIBRATION_BATCHES: usize = 2;

fn assert_same_tensors(library: &Path, binary: &Path) {
    let (a, b) = (tensor_bits(library), tensor_bits(binary));
    let mut names: Vec<&String> = a.keys().collect();
    names.sort();
    assert_eq!(names.len(), b.len(), "tensor sets differ");
    for name in names {
        assert!(
            Some(&a[name]) == b.get(name),
            "{name} differs between the library and the binary ({} vs {})",
            library.display(),
            binary.display()
        );
    }
}

/// `config.json` of a run directory without its `out_dir`.
fn config_without_out_dir(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join(CONFIG)).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("out_dir");
    value
}

#[test]
fn library_and_binary_give_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let init = pretrained();

    // The library, as `cargo xtask train` drives it.
    let lib_run = dir.path().join("library");
    let mut cfg = RunConfig::dgms(
        "resnet20",
        "embedded",
        lib_run.clone(),
        Some(init.clone()),
        MixtureSettings::with_k(K),
    );
    cfg.epochs = 1;
    cfg.batch_size = BATCH_SIZE;
    cfg.max_batches = Some(MAX_BATCHES);
    cfg.max_eval = Some(MAX_EVAL);
    let trained = train(&cfg, None).unwrap();
    let lib_hard = dir.path().join("library-hard.safetensors");
    phases::harden(&trained.last, &lib_hard, RECALIBRATION_BATCHES).unwrap();
    let lib_report = phases::report_with(
        &lib_hard,
        &phases::OpenOptions::default(),
        phases::HardeningRule::LogSpace,
        None,
    )
    .unwrap();

    // The binary, with the same settings spelled as arguments (everything
    // else left at the CLI's defaults).
    let cli_run = dir.path().join("binary");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (k, batch, max_batches, max_eval, recal) = (
        K.to_string(),
        BATCH_SIZE.to_string(),
        MAX_BATCHES.to_string(),
        MAX_EVAL.to_string(),
        RECALIBRATION_BATCHES.to_string(),
    );
    let (init_s, run_s) = (s(&init), s(&cli_run));
    dgms_ok(&[
        "dgms",
        "--init",
        &init_s,
        "--k",
        &k,
        "--epochs",
        "1",
        "--batch-size",
        &batch,
        "--max-batches",
        &max_batches,
        "--max-eval",
        &max_eval,
        "--out",
        &run_s,
    ]);
    let cli_hard = dir.path().join("binary-hard.safetensors");
    let (last_s, hard_s) = (s(&cli_run.join(LAST)), s(&cli_hard));
    dgms_ok(&[
        "harden",
        "--checkpoint",
        &last_s,
        "--out",
        &hard_s,
        "--recalibrate-bn",
        &recal,
    ]);
    let report_json = dir.path().join("binary-report.json");
    let report_s = s(&report_json);
    dgms_ok(&["report", "--checkpoint", &hard_s, "--json", &report_s]);

    assert_eq!(
        config_without_out_dir(&lib_run),
        config_without_out_dir(&cli_run),
        "the two entry points resolved different configurations"
    );
    assert_same_tensors(&trained.last, &cli_run.join(LAST));
    assert_same_tensors(&lib_hard, &cli_hard);
    // As text: serde_json's parser may round the last digit of a float.
    let cli_report = std::fs::read_to_string(&report_json).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&lib_report).unwrap(),
        cli_report
    );
}
