//! Bad input gives typed errors whose messages say what was wrong and where.

use candle_core::{DType, Device, Tensor};
use dgms_core::{CoreError, GaussianMixture, HardenedLayer, MixtureOptions, MixtureParams};

fn params() -> MixtureParams {
    MixtureParams {
        mu: vec![-0.1, 0.1],
        sigma: vec![0.02, 0.02],
        pi: vec![0.3, 0.3],
        pi_zero: 0.4,
        sigma_zero: 0.02,
        tau: 0.01,
    }
}

fn new(p: &MixtureParams) -> Result<GaussianMixture, CoreError> {
    GaussianMixture::new("layer1.0.conv1", p, &MixtureOptions::default())
}

fn message(e: CoreError) -> String {
    e.to_string()
}

#[test]
fn k_below_two_is_rejected() {
    let p = MixtureParams {
        mu: vec![],
        sigma: vec![],
        pi: vec![],
        ..params()
    };
    let e = new(&p).unwrap_err();
    assert!(
        matches!(e, CoreError::TooFewComponents { k: 1, .. }),
        "{e:?}"
    );
    let m = message(e);
    assert!(m.contains("layer1.0.conv1") && m.contains("K >= 2"), "{m}");
}

#[test]
fn non_finite_parameters_are_rejected() {
    for (field, value) in [
        ("mu", f32::NAN),
        ("pi", f32::INFINITY),
        ("sigma_zero", f32::NAN),
    ] {
        let mut p = params();
        match field {
            "mu" => p.mu[1] = value,
            "pi" => p.pi[0] = value,
            _ => p.sigma_zero = value,
        }
        let e = new(&p).unwrap_err();
        assert!(matches!(e, CoreError::NonFiniteParameter { .. }), "{e:?}");
        let m = message(e);
        assert!(m.contains(field) && m.contains("finite"), "{m}");
    }
}

#[test]
fn zero_sigma_is_rejected_and_a_negative_one_is_its_magnitude() {
    let mut p = params();
    p.sigma[1] = 0.0;
    let m = message(new(&p).unwrap_err());
    assert!(m.contains("sigma[1] = 0") && m.contains("non-zero"), "{m}");
    let mut p = params();
    p.sigma_zero = 0.0;
    let m = message(new(&p).unwrap_err());
    assert!(m.contains("sigma_zero[0] = 0"), "{m}");

    // Only sigma^2 enters the density (as in the reference): flipping the
    // signs of widths changes no soft weight.
    let w = Tensor::from_slice(&[-0.3f32, -0.05, 0.0, 0.02, 0.2, 0.31], 6, &Device::Cpu).unwrap();
    let soft = |p: &MixtureParams| -> Vec<f32> {
        new(p).unwrap().soft_weights(&w).unwrap().to_vec1().unwrap()
    };
    let mut flipped = params();
    flipped.sigma[0] = -flipped.sigma[0];
    flipped.sigma_zero = -flipped.sigma_zero;
    assert_eq!(soft(&params()), soft(&flipped));
}

#[test]
fn bad_temperature_and_all_zero_pi_are_rejected() {
    let mut p = params();
    p.tau = 0.0;
    assert!(matches!(
        new(&p).unwrap_err(),
        CoreError::BadTemperature { .. }
    ));
    let mut p = params();
    p.pi = vec![0.0, 0.0];
    p.pi_zero = 0.0;
    let m = message(new(&p).unwrap_err());
    assert!(m.contains("mixing weights"), "{m}");
}

#[test]
fn mismatched_parameter_lengths_are_rejected() {
    let mut p = params();
    p.sigma.push(0.1);
    let e = new(&p).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e:?}");
    let m = message(e);
    assert!(
        m.contains("sigma") && m.contains("[3]") && m.contains("[2]"),
        "{m}"
    );
}

#[test]
fn nan_weights_are_reported_with_their_index() {
    let mixture = new(&params()).unwrap();
    let w = Tensor::from_slice(&[0.1f32, 0.0, f32::NAN, 0.2], 4, &Device::Cpu).unwrap();
    for result in [
        mixture.soft_weights(&w).map(|_| ()),
        mixture.soft_weights_composed(&w).map(|_| ()),
        mixture.hard_weights(&w).map(|_| ()),
        mixture.harden(&w).map(|_| ()),
    ] {
        let e = result.unwrap_err();
        assert!(
            matches!(e, CoreError::NonFiniteWeight { index: 2, .. }),
            "{e:?}"
        );
        assert!(message(e).contains("flat index 2 is NaN"));
    }
}

#[test]
fn dtype_mismatch_is_rejected() {
    let mixture = new(&params()).unwrap();
    let w = Tensor::from_slice(&[0.1f64, 0.0], 2, &Device::Cpu).unwrap();
    let m = message(mixture.soft_weights(&w).unwrap_err());
    assert!(m.contains("F64") && m.contains("F32"), "{m}");
    let w = w.to_dtype(DType::U8).unwrap();
    assert!(mixture.soft_weights(&w).is_err());
}

#[test]
fn set_params_rejects_another_k() {
    let mixture = new(&params()).unwrap();
    let mut other = params();
    other.mu.push(0.2);
    other.sigma.push(0.02);
    other.pi.push(0.1);
    let m = message(mixture.set_params(&other).unwrap_err());
    assert!(
        m.contains("layer1.0.conv1") && m.contains("[3]") && m.contains("[2]"),
        "{m}"
    );
    // A valid update of the same K goes through and reads back.
    let mut same = params();
    same.mu = vec![-0.2, 0.2];
    mixture.set_params(&same).unwrap();
    assert_eq!(mixture.params().unwrap(), same);
}

#[test]
fn hardening_checks_the_shape() {
    let e = HardenedLayer::from_params("fc", &[2, 3], &[0.0; 5], &params()).unwrap_err();
    let m = message(e);
    assert!(
        m.contains("fc") && m.contains("[5]") && m.contains("[2, 3]"),
        "{m}"
    );
}

#[test]
fn too_many_components_are_rejected() {
    let k = 300;
    let p = MixtureParams {
        mu: vec![0.1; k - 1],
        sigma: vec![0.1; k - 1],
        pi: vec![0.1; k - 1],
        ..params()
    };
    let e = new(&p).unwrap_err();
    assert!(
        matches!(
            e,
            CoreError::TooManyComponents {
                k: 300,
                max: 256,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn project_lifts_tiny_widths_and_keeps_their_sign() {
    let mixture = new(&params()).unwrap();
    let mut p = params();
    p.sigma = vec![0.02, 0.02];
    mixture.set_params(&p).unwrap();
    assert_eq!(mixture.project().unwrap(), 0);
    // An optimizer step may take sigma through 0: set the Var directly.
    let (_, sigma) = mixture.named_vars().into_iter().nth(1).unwrap();
    sigma
        .set(&Tensor::from_slice(&[-0.5f32, 0.03], 2, &Device::Cpu).unwrap())
        .unwrap();
    // A negative width is a width: nothing to project.
    assert_eq!(mixture.project().unwrap(), 0);
    assert_eq!(mixture.params().unwrap().sigma, vec![-0.5, 0.03]);
    let floor = dgms_core::mixture::SIGMA_FLOOR as f32;
    sigma
        .set(&Tensor::from_slice(&[-1e-9f32, 0.0], 2, &Device::Cpu).unwrap())
        .unwrap();
    assert!(mixture
        .soft_weights(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())
        .is_err());
    assert_eq!(mixture.project().unwrap(), 2);
    assert_eq!(mixture.params().unwrap().sigma, vec![-floor, floor]);
    assert!(mixture
        .soft_weights(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())
        .is_ok());
}
