//! The fused op against the composed autograd oracle, the composed op
//! against central finite differences (f64), and the underflow case the
//! reference gets wrong; negative widths (sign-free, as in the reference)
//! included.
//!
//! The fused op computes internally in f64, so on f32 tensors it is
//! correctly rounded (~1e-7 from exact). The composed op run in f32 is itself
//! up to ~1.1e-4 off exact at tau = 0.01 (1/tau amplifies f32 rounding of the
//! responsibilities; measured against its own f64 run), so the oracle for
//! the f32 fused op is the composed op run in f64 on the same f32 inputs and
//! parameters, at 1e-5; the two f32 ops are compared at 2e-4.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{random_params, random_weights};
use dgms_core::{GaussianMixture, MixtureOptions, MixtureParams};
use dgms_test_support::compare::rel_err;
use dgms_test_support::tensors::to_f64_vec as host;

/// Soft weights and every gradient of L = sum(soft * g), via the fused or
/// the composed path. Order: soft, weight, then the mixture's trainable vars.
fn soft_and_grads(
    mixture: &GaussianMixture,
    weights: &Tensor,
    upstream: &Tensor,
    fused: bool,
) -> Vec<Vec<f64>> {
    let dtype = mixture.trainable_vars()[0].dtype();
    let upstream = &upstream.to_dtype(dtype).unwrap();
    let w = Var::from_tensor(&weights.to_dtype(dtype).unwrap()).unwrap();
    let soft = if fused {
        mixture.soft_weights(w.as_tensor()).unwrap()
    } else {
        mixture.soft_weights_composed(w.as_tensor()).unwrap()
    };
    let loss = (&soft * upstream).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut out = vec![host(&soft), host(grads.get(w.as_tensor()).unwrap())];
    for v in mixture.trainable_vars() {
        out.push(host(
            grads
                .get(v.as_tensor())
                .expect("gradient for every trainable var"),
        ));
    }
    out
}

#[test]
fn fused_matches_composed_f32() {
    let cases = [
        (2, 1, 0.01),
        (3, 17, 0.01),
        (4, 257, 0.05),
        (8, 1000, 0.01),
        (16, 3 * 3 * 5 * 7, 0.1),
        (16, 4099, 0.01),
        (32, 513, 0.5),
    ];
    for (case, &(k, n, tau)) in cases.iter().enumerate() {
        for train_tau in [false, true] {
            let mut params = random_params(k, tau, case as u64);
            if case % 2 == 1 {
                // Negative widths (only sigma^2 enters the density; the
                // gradient in sigma changes sign with it).
                params.sigma[0] = -params.sigma[0];
                params.sigma_zero = -params.sigma_zero;
            }
            let opts = |dtype| MixtureOptions {
                train_tau,
                dtype,
                ..MixtureOptions::default()
            };
            let mixture = GaussianMixture::new("layer", &params, &opts(DType::F32)).unwrap();
            let mixture64 = GaussianMixture::new("layer", &params, &opts(DType::F64)).unwrap();
            let weights =
                Tensor::from_vec(random_weights(n, case as u64), n, &Device::Cpu).unwrap();
            let upstream =
                Tensor::from_vec(random_weights(n, 99 + case as u64), n, &Device::Cpu).unwrap();
            let fused = soft_and_grads(&mixture, &weights, &upstream, true);
            let composed = soft_and_grads(&mixture, &weights, &upstream, false);
            let oracle = soft_and_grads(&mixture64, &weights, &upstream, false);
            let names = [
                "soft",
                "weight",
                "mu",
                "sigma",
                "pi",
                "pi_zero",
                "sigma_zero",
                "tau",
            ];
            assert_eq!(fused.len(), 7 + train_tau as usize);
            assert_eq!(fused.len(), composed.len());
            for (((f, c), o), name) in fused.iter().zip(&composed).zip(&oracle).zip(names) {
                let err = rel_err(f, o, 1e-12);
                assert!(
                    err <= 1e-5,
                    "K={k} n={n} tau={tau} train_tau={train_tau}: {name} vs f64 oracle, rel err {err:.3e}"
                );
                let err = rel_err(f, c, 1e-12);
                assert!(
                    err <= 2e-4,
                    "K={k} n={n} tau={tau} train_tau={train_tau}: {name} vs f32 composed, rel err {err:.3e}"
                );
            }
        }
    }
}

/// L(params, w) = sum(soft * g) evaluated by the composed op in f64.
fn loss_f64(params: &MixtureParams, weights: &[f64], upstream: &[f64]) -> f64 {
    let opts = MixtureOptions {
        dtype: DType::F64,
        train_tau: true,
        ..MixtureOptions::default()
    };
    let mixture = GaussianMixture::new("fd", params, &opts).unwrap();
    let w = Tensor::from_slice(weights, weights.len(), &Device::Cpu).unwrap();
    let g = Tensor::from_slice(upstream, upstream.len(), &Device::Cpu).unwrap();
    let soft = mixture.soft_weights_composed(&w).unwrap();
    (soft * g)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn composed_matches_finite_differences_f64() {
    // A smooth regime (larger tau, wider components) so that f32-rounded
    // parameters still give well-conditioned differences.
    let mut params = random_params(4, 0.3, 7);
    params.sigma.iter_mut().for_each(|s| *s *= 3.0);
    params.sigma_zero = 0.05;
    params.sigma[1] = -params.sigma[1];
    let weights: Vec<f64> = random_weights(9, 7).iter().map(|&w| w as f64).collect();
    let upstream: Vec<f64> = random_weights(9, 8).iter().map(|&w| w as f64).collect();

    let opts = MixtureOptions {
        dtype: DType::F64,
        train_tau: true,
        ..MixtureOptions::default()
    };
    let mixture = GaussianMixture::new("fd", &params, &opts).unwrap();
    let w = Var::from_slice(&weights, weights.len(), &Device::Cpu).unwrap();
    let g = Tensor::from_slice(&upstream, upstream.len(), &Device::Cpu).unwrap();
    let soft = mixture.soft_weights_composed(w.as_tensor()).unwrap();
    let grads = (soft * &g).unwrap().sum_all().unwrap().backward().unwrap();

    let h = 1e-6;
    let central = |plus: f64, minus: f64| (plus - minus) / (2.0 * h);
    // d/dw_i
    let analytic_w = host(grads.get(w.as_tensor()).unwrap());
    for i in 0..weights.len() {
        let (mut wp, mut wm) = (weights.clone(), weights.clone());
        wp[i] += h;
        wm[i] -= h;
        let fd = central(
            loss_f64(&params, &wp, &upstream),
            loss_f64(&params, &wm, &upstream),
        );
        let err = (fd - analytic_w[i]).abs() / analytic_w[i].abs().max(1e-3);
        assert!(
            err < 1e-5,
            "dL/dw[{i}]: analytic {} vs fd {fd}",
            analytic_w[i]
        );
    }
    // Parameters: perturb one value at a time in the f64 Vars themselves.
    let w_fixed = w.as_tensor().detach();
    let loss_now = || -> f64 {
        let soft = mixture.soft_weights_composed(&w_fixed).unwrap();
        (soft * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for (name, var) in mixture.named_vars() {
        let analytic = host(grads.get(var.as_tensor()).expect("every var, tau included"));
        let base: Vec<f64> = var.as_tensor().to_vec1().unwrap();
        for i in 0..base.len() {
            let step = base[i].abs().max(1e-2) * 1e-6;
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, base.len(), &Device::Cpu).unwrap())
                    .unwrap();
                loss_now()
            };
            let fd = (at(step) - at(-step)) / (2.0 * step);
            var.set(&Tensor::from_vec(base.clone(), base.len(), &Device::Cpu).unwrap())
                .unwrap();
            let err = (fd - analytic[i]).abs() / analytic[i].abs().max(1e-2);
            assert!(
                err < 1e-5,
                "dL/d{name}[{i}]: analytic {} vs fd {fd} (rel err {err:.2e})",
                analytic[i]
            );
        }
    }
}

#[test]
fn far_weights_go_to_their_most_likely_component() {
    // Every sigma is 1e-3: a weight 20 sigma past the largest mean has raw
    // densities of at most exp(-200), which is 0 in f32 (the reference then
    // averages the means); in log space it goes to that mean.
    let params = MixtureParams {
        mu: vec![-0.1, 0.05, 0.1],
        sigma: vec![1e-3; 3],
        pi: vec![0.3, 0.3, 0.3],
        pi_zero: 0.1,
        sigma_zero: 1e-3,
        tau: 0.01,
    };
    assert_eq!(
        (-0.5f32 * 20.0 * 20.0).exp(),
        0.0,
        "the case must underflow in f32"
    );
    let far = [0.1f32 + 20e-3, -0.1 - 20e-3];
    let mixture = GaussianMixture::new("far", &params, &MixtureOptions::default()).unwrap();
    let w = Var::from_slice(&far, 2, &Device::Cpu).unwrap();
    let soft = host(&mixture.soft_weights(w.as_tensor()).unwrap());
    let hard = host(&mixture.hard_weights(w.as_tensor()).unwrap());
    let naive_average = params.mu.iter().sum::<f32>() as f64 / 4.0;
    for (i, expected) in [0.1f64, -0.1].into_iter().enumerate() {
        assert!(
            (soft[i] - expected).abs() < 1e-6,
            "soft[{i}] = {} expected {expected}",
            soft[i]
        );
        assert!(
            (hard[i] - expected).abs() < 1e-7,
            "hard[{i}] = {} expected {expected}",
            hard[i]
        );
        assert!((soft[i] - naive_average).abs() > 0.05);
    }
    let gamma = host(&mixture.responsibilities(w.as_tensor()).unwrap());
    assert!(
        (gamma[3] - 1.0).abs() < 1e-6,
        "gamma of mu=0.1 component: {:?}",
        &gamma[..4]
    );
    // Gradients stay finite there.
    let soft_t = mixture.soft_weights(w.as_tensor()).unwrap();
    let grads = soft_t.sum_all().unwrap().backward().unwrap();
    for v in mixture.trainable_vars() {
        let g = host(grads.get(v.as_tensor()).unwrap());
        assert!(g.iter().all(|x| x.is_finite()), "non-finite gradient {g:?}");
    }
    // A weight so far that ((w - mu) / sigma)^2 overflows f32 for every
    // component still gets one: the nearest in units of its sigma, which for
    // |w| -> inf is the widest component, the most likely one there.
    let mut wide = params.clone();
    wide.sigma = vec![1e-3, 1e-3, 2e-3];
    let mixture = GaussianMixture::new("huge", &wide, &MixtureOptions::default()).unwrap();
    let huge = Tensor::from_slice(&[1e30f32, -1e30], 2, &Device::Cpu).unwrap();
    let hard = host(&mixture.hard_weights(&huge).unwrap());
    assert_eq!(hard, vec![0.1f32 as f64, 0.1f32 as f64]);
    assert!(host(&mixture.soft_weights(&huge).unwrap())
        .iter()
        .all(|s| s.is_finite()));
}
