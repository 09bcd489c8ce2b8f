//! The Q-SIMD engine against candle: packed models made by `dgms quantize`
//! / `dgms export` run on `dgms_qsimd::Engine` (every ISA this CPU has) and
//! on the dgms-models candle model with the same hard weights; top-1 must
//! agree on every image and logits within 1e-4 (max |diff| / max |logit|
//! per batch). Also the CLI's errors and the export's size report.
//!
//! Run with `cargo test -p dgms-cli --release --test qsimd_engine`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use dgms_cli::config::MixtureSettings;
use dgms_cli::export::{self, ShapeSource};
use dgms_cli::infer::candle_model;
use dgms_cli::phases;
use dgms_cli::train::session::Data;
use dgms_data::{Loader, LoaderConfig};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_qsimd::Engine;

const TOLERANCE: f32 = 1e-4;

/// The int8 engine against the exact one on the embedded test set: the
/// fraction of images whose top-1 must agree (measured: see the README).
const INT8_MIN_AGREEMENT: f64 = 0.99;

/// Int8 logits against exact ones on the parity fixtures (max |diff| /
/// max |logit|). Measured 3.0e-2 on resnet20 and 1.17e-1 on resnet18
/// (17 quantized layers; its fixture input is noise, whose 1000 logits lie
/// close together, so the largest logit is a small scale); a wrong scale
/// or column gives errors of order 1 or more.
const INT8_TOLERANCE: f32 = 0.25;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pretrained() -> PathBuf {
    repo().join("fixtures/pretrained/resnet20-fashion-mnist.safetensors")
}

/// The shared parity fixtures, if present.
fn shared_fixtures() -> Option<PathBuf> {
    let dir = match std::env::var_os("DGMS_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo().join("../shared/fixtures/models"),
    };
    dir.is_dir().then_some(dir)
}

fn dgms(args: &[&str]) -> Output {
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

fn dgms_ok(args: &[&str]) -> String {
    let out = dgms(args);
    assert!(
        out.status.success(),
        "dgms {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dgms_err(args: &[&str]) -> String {
    let out = dgms(args);
    assert_eq!(out.status.code(), Some(1), "dgms {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// Agreement of two logit batches (n x classes): (max |a-b| / max |b|,
/// images with the same top-1).
fn agreement(a: &[f32], b: &[f32], classes: usize) -> (f32, usize) {
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

fn tensor_values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// (1) The shipped Fashion-MNIST ResNet-20 at K = 16 on all 2,000 embedded
/// test images: engine vs candle on the packed hard weights, and vs the
/// hardened candle model itself (batch norm unfolded, running statistics).
#[test]
fn embedded_test_set_agrees_with_candle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r20.dgms.safetensors");
    let shape = ShapeSource::Data("embedded".into());
    let (_, summary, hardened) = export::quantize_packed(
        "resnet20",
        &pretrained(),
        &shape,
        &MixtureSettings::with_k(16),
        &out,
    )
    .unwrap();
    assert_eq!(summary.quantized_layers, 18);
    let packed = PackedModel::read(&out).unwrap();
    let candle = candle_model(&packed).unwrap();
    let mut engine = Engine::new(&packed, Isa::detect()).unwrap();
    let mut int8 = Engine::with_precision(&packed, Isa::detect(), Precision::Int8).unwrap();

    let data = Data::load("embedded").unwrap();
    let loader = Loader::new(data.test.clone(), LoaderConfig::eval(data.kind, 250)).unwrap();
    let (mut images, mut same_candle, mut same_hardened, mut correct) = (0, 0, 0, 0);
    let (mut worst_candle, mut worst_hardened) = (0.0f32, 0.0f32);
    let (mut same_int8, mut correct_int8, mut worst_int8) = (0, 0, 0.0f32);
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        let n = batch.images.dim(0).unwrap();
        let x = tensor_values(&batch.images);
        let got = engine.run(&x, n).unwrap();
        let want = tensor_values(&candle.forward_t(&batch.images, false).unwrap());
        let (d, same) = agreement(&got, &want, 10);
        worst_candle = worst_candle.max(d);
        same_candle += same;
        let want = tensor_values(&hardened.net.forward_t(&batch.images, false).unwrap());
        let (d, same) = agreement(&got, &want, 10);
        worst_hardened = worst_hardened.max(d);
        same_hardened += same;
        let labels: Vec<u32> = batch.labels.to_vec1().unwrap();
        let hits = |logits: &[f32]| {
            logits
                .chunks_exact(10)
                .zip(&labels)
                .filter(|(l, &y)| {
                    (0..10).max_by(|&i, &j| l[i].total_cmp(&l[j])) == Some(y as usize)
                })
                .count()
        };
        correct += hits(&got);
        let fast = int8.run(&x, n).unwrap();
        let (d, same) = agreement(&fast, &got, 10);
        worst_int8 = worst_int8.max(d);
        same_int8 += same;
        correct_int8 += hits(&fast);
        images += n;
    }
    println!(
        "embedded test set, {images} images: engine ({}) vs candle hard weights: max rel diff {worst_candle:.2e}, top-1 equal {same_candle}/{images}; vs the hardened candle model: {worst_hardened:.2e}, {same_hardened}/{images}; engine top-1 accuracy {:.2} %",
        engine.isa(),
        100.0 * correct as f64 / images as f64
    );
    println!(
        "int8 engine vs exact engine: top-1 equal {same_int8}/{images}, max rel diff {worst_int8:.2e}; int8 top-1 accuracy {:.2} %",
        100.0 * correct_int8 as f64 / images as f64
    );
    assert_eq!(images, 2000);
    assert!(
        same_int8 as f64 >= INT8_MIN_AGREEMENT * images as f64,
        "int8 top-1 agrees on {same_int8}/{images}"
    );
    assert!(worst_int8 > 0.0, "int8 logits equal the exact ones");
    assert!(worst_candle <= TOLERANCE, "{worst_candle}");
    assert!(worst_hardened <= TOLERANCE, "{worst_hardened}");
    assert_eq!(same_candle, images);
    assert_eq!(same_hardened, images);
}

/// Quantizes `weights` with the CLI to a packed file, runs the fixture's
/// input through `dgms infer` with the candle engine and every ISA of the
/// qsimd engine, and checks agreement (2, 3).
fn check_fixture(dir: &Path, name: &str, weights: &Path, io: &Path, extra: &[&str]) {
    let packed = dir.join(format!("{name}.dgms.safetensors"));
    let packed_s = packed.to_str().unwrap();
    let mut args = vec![
        "quantize",
        "--model",
        name,
        "--weights",
        weights.to_str().unwrap(),
        "--k",
        "16",
        "--out",
        packed_s,
    ];
    args.extend_from_slice(extra);
    let stdout = dgms_ok(&args);
    assert!(stdout.contains("ratio:"), "{stdout}");
    let read = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let input = &read(io)["input"];
    let n = input.dim(0).unwrap();

    let candle_out = dir.join(format!("{name}.candle.safetensors"));
    let io_s = io.to_str().unwrap();
    let stdout = dgms_ok(&[
        "infer",
        "--packed",
        packed_s,
        "--input",
        io_s,
        "--out",
        candle_out.to_str().unwrap(),
        "--engine",
        "candle",
    ]);
    assert!(stdout.contains("time per batch"), "{stdout}");
    let want = &read(&candle_out)["logits"];
    let classes = want.dim(1).unwrap();
    let want = tensor_values(want);
    for isa in Isa::available() {
        let out = dir.join(format!("{name}.{isa}.safetensors"));
        let stdout = dgms_ok(&[
            "infer",
            "--packed",
            packed_s,
            "--input",
            io_s,
            "--out",
            out.to_str().unwrap(),
            "--engine",
            "qsimd",
            "--isa",
            isa.name(),
        ]);
        assert!(stdout.contains(&format!("qsimd exact ({isa})")), "{stdout}");
        let got = &read(&out)["logits"];
        assert_eq!(got.dims(), &[n, classes]);
        let (d, same) = agreement(&tensor_values(got), &want, classes);
        println!("{name} on {isa} vs candle: max rel diff {d:.2e}, top-1 equal {same}/{n}");
        assert!(d <= TOLERANCE, "{name} on {isa}: {d}");
        assert_eq!(same, n, "{name} on {isa}: top-1");
    }
    let out = dir.join(format!("{name}.int8.safetensors"));
    let stdout = dgms_ok(&[
        "infer",
        "--packed",
        packed_s,
        "--input",
        io_s,
        "--out",
        out.to_str().unwrap(),
        "--int8",
    ]);
    assert!(stdout.contains("qsimd int8"), "{stdout}");
    let (d, same) = agreement(&tensor_values(&read(&out)["logits"]), &want, classes);
    println!("{name} int8 vs candle: max rel diff {d:.2e}, top-1 equal {same}/{n}");
    assert!(d > 0.0 && d <= INT8_TOLERANCE, "{name} int8: {d}");
}

/// (2, 3) The parity fixtures at K = 16: resnet20 from the repository,
/// resnet18 (.pth, no data: 3x224x224 by default), mobilenet_v2 and
/// vggsmall from the shared folder when present.
#[test]
fn parity_fixtures_agree_with_candle_on_every_isa() {
    let dir = tempfile::tempdir().unwrap();
    let models = repo().join("fixtures/models");
    check_fixture(
        dir.path(),
        "resnet20",
        &models.join("resnet20.safetensors"),
        &models.join("resnet20.io.safetensors"),
        &["--input-shape", "3,32,32"],
    );
    let Some(shared) = shared_fixtures() else {
        println!("note: no shared parity fixtures ($DGMS_PARITY_DIR or ../shared/fixtures/models): resnet18 and vggsmall skipped");
        return;
    };
    for (name, file, extra) in [
        ("resnet18", "resnet18.pth", &[][..]),
        ("mobilenet_v2", "mobilenet_v2.safetensors", &[][..]),
        (
            "vggsmall",
            "vggsmall.safetensors",
            &["--input-shape", "3,32,32"][..],
        ),
    ] {
        let (weights, io) = (
            shared.join(file),
            shared.join(format!("{name}.io.safetensors")),
        );
        if !weights.exists() || !io.exists() {
            println!(
                "note: {} has no {file} or {name}.io.safetensors: skipped",
                shared.display()
            );
            continue;
        }
        check_fixture(dir.path(), name, &weights, &io, extra);
    }
}

/// (2) ResNet-50 (no fixture in the shared folder: a seeded random
/// torchvision-layout initialisation from dgms-models, saved as
/// safetensors) through `dgms quantize` at 64 x 64 and `dgms infer`, the
/// engine on every ISA against candle.
#[test]
fn resnet50_agrees_with_candle_on_every_isa() {
    use candle_nn::{VarBuilder, VarMap};
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let cfg = dgms_models::ModelConfig {
        in_channels: 3,
        num_classes: 20,
        image_size: 64,
    };
    dgms_models::build_model("resnet50", &cfg, vb).unwrap();
    let weights = dir.path().join("resnet50.safetensors");
    varmap.save(&weights).unwrap();
    // Two images of seeded noise.
    let mut seed = 5u64;
    let values: Vec<f32> = (0..2 * 3 * 64 * 64)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let input = Tensor::from_vec(values, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let io = dir.path().join("resnet50.io.safetensors");
    candle_core::safetensors::save(&[("input", input)].into_iter().collect(), &io).unwrap();
    check_fixture(
        dir.path(),
        "resnet50",
        &weights,
        &io,
        &["--input-shape", "3,64,64"],
    );
}

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
    assert!(
        err.contains("is not hardened (run `dgms harden` first"),
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

    // A closed stdout (`dgms infer ... | head -1`) ends the run quietly:
    // no panic, exit status 0, the logits written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgms"))
        .args([
            "infer",
            "--packed",
            out.to_str().unwrap(),
            "--input",
            input_s,
        ])
        .args(["--out", logits.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(logits.exists());
}
