//! The Q-SIMD engine against candle through the `dgms` binary: packed
//! models made by `dgms quantize` run with `dgms infer` on
//! `dgms_qsimd::Engine` (every ISA this CPU has) and on the dgms-models
//! candle model with the same hard weights; top-1 must agree on every
//! image and logits within 1e-4 (max |diff| / max |logit| per batch).
//! The embedded test set through the library: dgms-train's
//! `tests/engine_agreement.rs`; export and errors: `tests/export_cli.rs`.
//!
//! Run with `cargo test -p dgms-cli --release --test qsimd_engine`.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{agreement, dgms_ok, repo, shared_fixtures, tensor_values};
use dgms_qsimd::kernels::Isa;

const TOLERANCE: f32 = 1e-4;

/// Int8 logits against exact ones on the parity fixtures (max |diff| /
/// max |logit|). Measured 3.0e-2 on resnet20 and 1.17e-1 on resnet18
/// (17 quantized layers; its fixture input is noise, whose 1000 logits lie
/// close together, so the largest logit is a small scale); a wrong scale
/// or column gives errors of order 1 or more.
const INT8_TOLERANCE: f32 = 0.25;

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
