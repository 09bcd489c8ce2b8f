//! The report figures (`docs/METHOD.md#report`): sparsity, bits and
//! compression ratio.

use candle_core::{Device, Tensor};
use dgms_core::report::{bits_ceil, bits_floor};
use dgms_core::{GaussianMixture, LayerReport, MixtureOptions, MixtureParams, ModelReport};

#[test]
fn bits_follow_the_reference_and_the_packing() {
    assert_eq!(
        (bits_floor(2), bits_floor(4), bits_floor(16), bits_floor(5)),
        (1, 2, 4, 2)
    );
    assert_eq!(
        (bits_ceil(2), bits_ceil(4), bits_ceil(16), bits_ceil(5)),
        (1, 2, 4, 3)
    );
    assert_eq!((bits_floor(256), bits_ceil(256)), (8, 8));
}

#[test]
fn layer_figures_use_the_reference_formula() {
    let r = LayerReport::new("conv", &[4, 4], 16, 16, 4);
    assert_eq!(r.sparsity, 0.25);
    assert_eq!(r.bits, 4);
    // CR = 1 / ((1 - 0.25) * 4 / 32) = 32 / 3
    assert!((r.compression_ratio - 32.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.fp32_bytes, 64);
    assert_eq!(r.packed_bytes, 8 + 64); // 16 x 4 bits + a 16-entry f32 table
}

#[test]
fn model_totals_weight_layers_by_size() {
    let a = LayerReport::new("a", &[100], 16, 100, 50);
    let b = LayerReport::new("b", &[300], 16, 300, 0);
    let m = ModelReport::from_layers(vec![a, b]);
    assert_eq!(m.weights, 400);
    assert!((m.sparsity - 0.125).abs() < 1e-12);
    assert_eq!(m.bits, Some(4));
    assert!((m.compression_ratio - 1.0 / ((1.0 - 0.125) * 4.0 / 32.0)).abs() < 1e-9);
    let mixed = ModelReport::from_layers(vec![
        LayerReport::new("a", &[8], 4, 8, 0),
        LayerReport::new("b", &[8], 16, 8, 0),
    ]);
    assert_eq!(mixed.bits, None);
    // 32 x 16 / (8 x 2 + 8 x 4)
    assert!((mixed.compression_ratio - 512.0 / 48.0).abs() < 1e-9);
    let table = m.to_table();
    assert!(
        table.contains("total") && table.contains("12.50%"),
        "{table}"
    );
}

#[test]
fn hardened_layer_reports_its_zeros() {
    let params = MixtureParams {
        mu: vec![-0.1, 0.1],
        sigma: vec![0.01, 0.01],
        pi: vec![1.0, 1.0],
        pi_zero: 1.0,
        sigma_zero: 0.01,
        tau: 0.01,
    };
    let mixture = GaussianMixture::new("conv", &params, &MixtureOptions::default()).unwrap();
    let w = Tensor::from_slice(
        &[0.0f32, 0.001, -0.1, 0.09, -0.002, 0.11],
        (2, 3),
        &Device::Cpu,
    )
    .unwrap();
    let hardened = mixture.harden(&w).unwrap();
    assert_eq!(hardened.indices, vec![0, 0, 1, 2, 0, 2]);
    assert_eq!(hardened.decode(), vec![0.0, 0.0, -0.1, 0.1, 0.0, 0.1]);
    let r = hardened.report();
    assert_eq!((r.weights, r.zeros, r.shape.clone()), (6, 3, vec![2, 3]));
    assert_eq!(r.sparsity, 0.5);
}

#[test]
fn underflowing_weights_are_counted_and_the_reference_rule_zeroes_them() {
    use dgms_core::{HardenedLayer, HardeningRule};
    // Narrow components: 0.5 is ~40 sigmas from the nearest mean (0.1), so
    // every float32 density underflows; 0.11 and -0.004 are ordinary.
    let params = MixtureParams {
        mu: vec![-0.1, 0.1],
        sigma: vec![0.01, 0.01],
        pi: vec![1.0, 1.0],
        pi_zero: 2.0,
        sigma_zero: 0.01,
        tau: 0.01,
    };
    let w = [0.5f32, 0.11, -0.004, -0.5];
    let ours = HardenedLayer::from_params("c", &[4], &w, &params).unwrap();
    let theirs =
        HardenedLayer::from_params_with("c", &[4], &w, &params, HardeningRule::Reference).unwrap();
    // The most probable component of 0.5 is mu = 0.1 (index 2); the
    // authors' float32 rule ties every component and takes index 0.
    assert_eq!(ours.indices, vec![2, 2, 0, 1]);
    assert_eq!(theirs.indices, vec![0, 2, 0, 0]);
    assert_eq!(ours.reference_underflow, Some(2));
    assert_eq!(theirs.reference_underflow, Some(2));
    let report = ModelReport::from_layers(vec![ours.report()]);
    assert_eq!(report.reference_underflow, Some(2));
    assert!(report.to_table().contains("ref-underflow"));
}
