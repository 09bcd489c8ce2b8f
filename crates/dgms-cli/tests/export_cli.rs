//! `dgms export` and the binary's errors: the packed file of a hardened
//! checkpoint reads back, equals the one `dgms quantize` writes directly,
//! and the sizes printed agree with the file; bad models and inputs give
//! clear errors; a closed stdout ends any command quietly.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{dgms_err, dgms_ok, pretrained};
use dgms_qsimd::format::PackedModel;
use dgms_train::config::MixtureSettings;
use dgms_train::export::{self, ShapeSource};
use dgms_train::phases;

/// Writes `input` (N, C, H, W) zeros to `path`.
fn write_input(path: &Path, dims: &[usize]) {
    let t = Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&[("input", t)].into_iter().collect(), path).unwrap();
}

/// (5) `dgms export` of a hardened checkpoint: the file reads back, equals
/// the one `dgms quantize` writes directly, and the sizes printed agree
/// with the file. (4) The CLI's errors for bad models and inputs.
#[test]
fn export_sizes_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f);
    let ckpt = d("hard.safetensors");
    let mixture = MixtureSettings::with_k(4);
    phases::quantize("resnet20", &pretrained(), "embedded", &mixture, &ckpt).unwrap();
    let out = d("hard.dgms.safetensors");
    let stdout = dgms_ok(&[
        "export",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let model = PackedModel::read(&out).unwrap();
    assert_eq!(model.meta.arch, "resnet20");
    assert_eq!(model.meta.input_shape, [1, 28, 28]);
    assert!(model.layers.iter().all(|l| l.k == 4 && l.bits == 2));
    assert!(
        model.tensors.contains_key("bn1.scale") && !model.tensors.contains_key("bn1.running_var")
    );
    let file = std::fs::metadata(&out).unwrap().len() as usize;
    let (fp32, packed) = (model.fp32_bytes(), model.packed_bytes());
    assert!(
        stdout.contains(&format!("FP32 size:   {fp32} bytes")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "packed size: {packed} bytes of tensors, {file} bytes on disk"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ratio:       {:.2}x", fp32 as f64 / file as f64)),
        "{stdout}"
    );
    assert!(packed < file && 4 * file < fp32, "{packed} {file} {fp32}");
    let direct = d("direct.dgms.safetensors");
    let shape = ShapeSource::Data("embedded".into());
    export::quantize_packed("resnet20", &pretrained(), &shape, &mixture, &direct).unwrap();
    assert_eq!(
        PackedModel::read(&direct).unwrap(),
        model,
        "export vs direct quantize"
    );

    // Errors, through the binary.
    let err = dgms_err(&[
        "export",
        "--checkpoint",
        pretrained().to_str().unwrap(),
        "--out",
        "x.dgms.safetensors",
    ]);
    // A full-precision checkpoint has nothing to harden: export (which
    // hardens a checkpoint with mixtures itself) points to quantize.
    assert!(
        err.contains("no mixture layer to harden") && err.contains("dgms quantize"),
        "{err}"
    );
    let input = d("in.safetensors");
    write_input(&input, &[2, 1, 28, 28]);
    let (input_s, logits) = (input.to_str().unwrap(), d("logits.safetensors"));
    let run = |packed: &Path| {
        dgms_err(&[
            "infer",
            "--packed",
            packed.to_str().unwrap(),
            "--input",
            input_s,
            "--out",
            logits.to_str().unwrap(),
        ])
    };
    let mut bad = model.clone();
    bad.meta.arch = "resnet99".into();
    bad.write(d("arch.dgms.safetensors")).unwrap();
    let err = run(&d("arch.dgms.safetensors"));
    assert!(err.contains("unknown architecture `resnet99`"), "{err}");
    let mut bad = model.clone();
    bad.tensors.remove("linear.bias");
    bad.write(d("missing.dgms.safetensors")).unwrap();
    let err = run(&d("missing.dgms.safetensors"));
    assert!(
        err.contains("resnet20: linear: missing full-precision tensor `linear.bias`"),
        "{err}"
    );
    write_input(&input, &[2, 3, 28, 28]);
    let err = run(&out);
    assert!(
        err.contains("`input` is (2, 3, 28, 28), the model takes (N, 1, 28, 28)"),
        "{err}"
    );
    let err = dgms_err(&[
        "infer",
        "--packed",
        out.to_str().unwrap(),
        "--input",
        input_s,
        "--out",
        "y",
        "--isa",
        "sse9",
    ]);
    assert!(err.contains("unknown kernel ISA `sse9`"), "{err}");
    write_input(&input, &[2, 1, 28, 28]);
    let err = dgms_err(&[
        "infer",
        "--packed",
        out.to_str().unwrap(),
        "--input",
        input_s,
        "--out",
        logits.to_str().unwrap(),
        "--engine",
        "candle",
        "--int8",
    ]);
    assert!(
        err.contains("the int8 path is the qsimd engine's (--engine qsimd)"),
        "{err}"
    );
    assert!(!logits.exists());
    // A closed stdout: tests/cli_errors.rs, for every command.
}
