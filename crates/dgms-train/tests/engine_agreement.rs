//! The Q-SIMD engine against candle on the embedded test set: the packed
//! model `export::quantize_packed` makes from the shipped ResNet-20 runs on
//! `dgms_qsimd::Engine` (exact and int8) and on the dgms-models candle
//! model with the same hard weights; top-1 must agree on every image and
//! logits within 1e-4 (max |diff| / max |logit| per batch). The same
//! through the `dgms` binary, and on the parity fixtures: dgms-cli's
//! `tests/qsimd_engine.rs`.
//!
//! Run with `cargo test -p dgms-train --release --test engine_agreement`.

use std::path::PathBuf;

use dgms_data::{Loader, LoaderConfig, Mode};
use dgms_qsimd::engine::Precision;
use dgms_qsimd::format::PackedModel;
use dgms_qsimd::kernels::Isa;
use dgms_qsimd::Engine;
use dgms_test_support::compare::logit_agreement as agreement;
use dgms_test_support::fixtures;
use dgms_test_support::tensors::to_f32_vec;
use dgms_train::config::MixtureSettings;
use dgms_train::export::{self, ShapeSource};
use dgms_train::infer::candle_model;
use dgms_train::train::session::Data;

const TOLERANCE: f32 = 1e-4;

/// The int8 engine against the exact one on the embedded test set: the
/// fraction of images whose top-1 must agree (measured: see the README).
const INT8_MIN_AGREEMENT: f64 = 0.99;

fn pretrained() -> PathBuf {
    fixtures::repo_fixture("fixtures/pretrained/resnet20-fashion-mnist.safetensors")
}

/// (1) The shipped Fashion-MNIST ResNet-20 at K = 16 on all 10,000 embedded
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
    let config = LoaderConfig::for_split(&data.test, Mode::Eval, 250, 0);
    let loader = Loader::new(data.test.clone(), config).unwrap();
    let (mut images, mut same_candle, mut same_hardened, mut correct) = (0, 0, 0, 0);
    let (mut worst_candle, mut worst_hardened) = (0.0f32, 0.0f32);
    let (mut same_int8, mut correct_int8, mut worst_int8) = (0, 0, 0.0f32);
    for batch in loader.epoch(0) {
        let batch = batch.unwrap();
        let n = batch.images.dim(0).unwrap();
        let x = to_f32_vec(&batch.images);
        let got = engine.run(&x, n).unwrap();
        let want = to_f32_vec(&candle.forward_t(&batch.images, false).unwrap());
        let (d, same) = agreement(&got, &want, 10);
        worst_candle = worst_candle.max(d);
        same_candle += same;
        let want = to_f32_vec(&hardened.net.forward_t(&batch.images, false).unwrap());
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
    assert_eq!(images, 10_000);
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
