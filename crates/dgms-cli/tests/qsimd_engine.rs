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
use common::{dgms_ok, shared_fixtures};
use dgms_qsimd::kernels::Isa;
use dgms_test_support::compare::logit_agreement as agreement;
use dgms_test_support::fixtures;
use dgms_test_support::rng::Lcg64;
use dgms_test_support::tensors::to_f32_vec;

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
    let want = to_f32_vec(want);
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
        let (d, same) = agreement(&to_f32_vec(got), &want, classes);
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
    let (d, same) = agreement(&to_f32_vec(&read(&out)["logits"]), &want, classes);
    println!("{name} int8 vs candle: max rel diff {d:.2e}, top-1 equal {same}/{n}");
    assert!(d > 0.0 && d <= INT8_TOLERANCE, "{name} int8: {d}");
}

/// (2, 3) The parity fixtures at K = 16: resnet20 from the repository,
/// resnet18 (.pth, no data: 3x224x224 by default), mobilenet_v2,
/// mnasnet1_0 and vggsmall from the shared folder when present (required when
/// `DGMS_REQUIRE_FIXTURES=1`).
#[test]
fn parity_fixtures_agree_with_candle_on_every_isa() {
    let dir = tempfile::tempdir().unwrap();
    let models = fixtures::repo_fixture("fixtures/models");
    check_fixture(
        dir.path(),
        "resnet20",
        &models.join("resnet20.safetensors"),
        &models.join("resnet20.io.safetensors"),
        &["--input-shape", "3,32,32"],
    );
    let Some(shared) = shared_fixtures("resnet18, mobilenet_v2, mnasnet1_0 and vggsmall") else {
        return;
    };
    let absent = fixtures::Absent::from_env();
    for (name, file, extra) in [
        ("resnet18", "resnet18.pth", &[][..]),
        ("mobilenet_v2", "mobilenet_v2.safetensors", &[][..]),
        ("mnasnet1_0", "mnasnet1_0.safetensors", &[][..]),
        (
            "vggsmall",
            "vggsmall.safetensors",
            &["--input-shape", "3,32,32"][..],
        ),
    ] {
        let what = format!("{name} against candle");
        let weights = absent.check(shared.join(file), &what);
        let io = absent.check(shared.join(format!("{name}.io.safetensors")), &what);
        let (Some(weights), Some(io)) = (weights, io) else {
            continue;
        };
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
    let values = Lcg64::from_state(5).unit_vec(2 * 3 * 64 * 64);
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

/// (2) MNASNet 1.0 from a seeded random initialisation with every
/// depthwise batch norm's shift at 7, so its ReLU outputs exceed 6 (the
/// parity fixture's activations stay below 6 and could not tell a ReLU6
/// from MNASNet's ReLU): through `dgms quantize` at 64 x 64 and `dgms
/// infer`, the engine on every ISA against candle.
#[test]
fn mnasnet1_0_agrees_with_candle_beyond_relu6() {
    use candle_nn::{VarBuilder, VarMap};
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let cfg = dgms_models::ModelConfig {
        in_channels: 3,
        num_classes: 20,
        image_size: 64,
    };
    dgms_models::build_model("mnasnet1_0", &cfg, vb).unwrap();
    let mut shifted = 0;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        if name.ends_with("layers.4.bias") {
            let t = (var.as_tensor().ones_like().unwrap() * 7.0).unwrap();
            var.set(&t).unwrap();
            shifted += 1;
        }
    }
    // The stem's layers.4 and one per inverted residual.
    assert_eq!(shifted, 17);
    let weights = dir.path().join("mnasnet1_0.safetensors");
    varmap.save(&weights).unwrap();
    let values = Lcg64::from_state(6).unit_vec(2 * 3 * 64 * 64);
    let input = Tensor::from_vec(values, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let io = dir.path().join("mnasnet1_0.io.safetensors");
    candle_core::safetensors::save(&[("input", input)].into_iter().collect(), &io).unwrap();
    check_fixture(
        dir.path(),
        "mnasnet1_0",
        &weights,
        &io,
        &["--input-shape", "3,64,64"],
    );
}
