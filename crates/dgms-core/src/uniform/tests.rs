use candle_core::{Device, Tensor, Var};

use super::*;

fn quantizer(bits: u32, step: f32) -> UniformQuantizer {
    let s = Var::from_tensor(&Tensor::new(&[step], &Device::Cpu).unwrap()).unwrap();
    UniformQuantizer::new("layer", bits, s).unwrap()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Deterministic spread of values in about [-3, 3] (no two equal).
fn weights(n: usize) -> Tensor {
    let v: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.754_877_7).fract() - 0.5) * 6.0 + 1e-4 * i as f32)
        .collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

#[test]
fn the_grid_is_signed_with_two_to_the_bits_levels_and_zero() {
    assert_eq!(levels(2), (2, 1));
    assert_eq!(levels(4), (8, 7));
    let q = quantizer(3, 0.25);
    let c = q.codebook().unwrap();
    assert_eq!(c.len(), 8);
    assert_eq!(c.first(), Some(&-1.0));
    assert_eq!(c.last(), Some(&0.75));
    assert!(c.contains(&0.0));
}

#[test]
fn hard_weights_round_to_the_grid_and_clip_at_its_ends() {
    let q = quantizer(2, 0.5);
    let w = Tensor::new(&[-10f32, -0.26, 0.24, 0.26, 10.0], &Device::Cpu).unwrap();
    assert_eq!(
        vec(&q.hard_weights(&w).unwrap()),
        [-1.0, -0.5, 0.0, 0.5, 0.5]
    );
}

#[test]
fn the_training_forward_equals_the_hard_weights_bit_for_bit() {
    for bits in [2, 3, 4, 8] {
        let w = weights(1_001);
        let q = quantizer(bits, UniformQuantizer::initial_step("l", &w, bits).unwrap());
        let fake = vec(&q.fake_quantized(&w).unwrap());
        let hard = vec(&q.hard_weights(&w).unwrap());
        // Bit for bit up to the sign of zero (round(-0.3) is -0, and
        // -0 + 0 is +0 in the training form).
        let first_diff = fake
            .iter()
            .zip(&hard)
            .position(|(a, b)| a.to_bits() != b.to_bits() && !(*a == 0.0 && *b == 0.0));
        assert_eq!(first_diff, None, "{bits} bits: {fake:?} vs {hard:?}");
    }
}

#[test]
fn gradients_are_lsqs_straight_through_estimator() {
    let bits = 2;
    let w = Var::from_tensor(&weights(257)).unwrap();
    let q = quantizer(bits, 0.9);
    let coef = weights(257).affine(0.37, 0.1).unwrap();
    let loss = q
        .fake_quantized(w.as_tensor())
        .unwrap()
        .mul(&coef)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let gw = vec(grads.get(w.as_tensor()).unwrap());
    let gs = vec(grads.get(q.step().as_tensor()).unwrap())[0] as f64;

    let (qn, qp) = (-2.0f64, 1.0f64);
    let g = 1.0 / (257.0 * qp).sqrt();
    let (wv, cv) = (vec(w.as_tensor()), vec(&coef));
    let mut expected_s = 0.0;
    for i in 0..257 {
        let v = wv[i] as f64 / 0.9f32 as f64;
        let inside = (qn..=qp).contains(&v);
        let expected_w = if inside { cv[i] } else { 0.0 };
        assert!(
            (gw[i] - expected_w).abs() <= 1e-6,
            "weight {i}: {} vs {expected_w}",
            gw[i]
        );
        let ds = if inside {
            v.round() - v
        } else {
            v.clamp(qn, qp)
        };
        expected_s += cv[i] as f64 * ds;
    }
    expected_s *= g;
    assert!(
        (gs - expected_s).abs() <= 1e-4 * expected_s.abs().max(1.0),
        "step gradient {gs} vs {expected_s}"
    );
}

#[test]
fn the_initial_step_is_twice_the_mean_magnitude_over_root_qp() {
    let w = Tensor::new(&[-1f32, 1.0, -3.0, 3.0], &Device::Cpu).unwrap();
    let s4 = UniformQuantizer::initial_step("l", &w, 4).unwrap();
    assert!((s4 - 4.0 / 7f32.sqrt()).abs() < 1e-6);
    let zeros = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(UniformQuantizer::initial_step("l", &zeros, 2).unwrap(), 1.0);
}

#[test]
fn bad_settings_and_values_are_errors_naming_the_layer() {
    let s = Var::from_tensor(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap()).unwrap();
    for bits in [0, 1, 9] {
        let e = UniformQuantizer::new("conv9", bits, s.clone()).unwrap_err();
        assert!(e.to_string().contains("conv9"), "{e}");
    }
    let two = Var::from_tensor(&Tensor::new(&[0.5f32, 1.0], &Device::Cpu).unwrap()).unwrap();
    assert!(UniformQuantizer::new("conv9", 4, two).is_err());
    let w = weights(10);
    for bad in [0.0, -1.0, f32::NAN] {
        let e = quantizer(4, bad).hard_weights(&w).unwrap_err();
        assert!(e.to_string().contains("step"), "{e}");
    }
    let nan = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap();
    let e = UniformQuantizer::initial_step("conv9", &nan, 4).unwrap_err();
    assert!(
        e.to_string().contains("conv9") && e.to_string().contains("index 1"),
        "{e}"
    );
}

#[test]
fn projection_raises_a_step_below_the_floor_only() {
    let q = quantizer(4, -0.5);
    assert!(q.project().unwrap());
    assert_eq!(q.step_value().unwrap(), STEP_FLOOR as f32);
    let q = quantizer(4, 0.5);
    assert!(!q.project().unwrap());
    assert_eq!(q.step_value().unwrap(), 0.5);
}
