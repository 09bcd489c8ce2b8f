//! Checks the mixture against the authors' reference implementation: for
//! every `*.safetensors` case in `$DGMS_REFERENCE_DIR` (default: the repo's
//! `fixtures/reference/`), soft and hard weights, all six gradients, and the
//! k-means quality of the initialisation.
//!
//! Only entries with `valid == 1` are compared (where the reference's raw
//! densities did not underflow). The parameter gradients are sums over all
//! weights, so they are computed with the upstream gradient zeroed where
//! `valid == 0`: there the reference's own contribution is meaningless.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use dgms_core::kmeans::KMeansMethod;
use dgms_core::{init_params, GaussianMixture, InitConfig, MixtureOptions, MixtureParams};
use dgms_test_support::compare::rel_err_masked as rel_err;
use dgms_test_support::fixtures::{dir_from_env, repo_fixture};
use dgms_test_support::tensors::to_f64_vec as vec_f64;

const SOFT_TOL: f64 = 1e-4;
const PARAM_GRAD_TOL: f64 = 2e-4;
/// The exact init is the minimum of the SSE to {0, mu} the reference
/// measures its own k-means by, so it is never worse; the slack only covers
/// the f32 rounding of the stored `init_kmeans_sse`. (Measured: 3-14 % below
/// the reference on the four fixtures.)
const SSE_SLACK: f64 = 1.0 + 1e-6;
/// The Lloyd restarts (the default) reach a fixed point within this of the
/// reference's.
const LLOYD_SLACK: f64 = 1.0001;

/// `$DGMS_REFERENCE_DIR`, else the repository's `fixtures/reference` (always
/// present: a missing or empty folder fails the test, it never skips).
fn reference_dir() -> PathBuf {
    dir_from_env("DGMS_REFERENCE_DIR", repo_fixture("fixtures/reference"))
}

fn metadata_k(path: &Path) -> usize {
    let bytes = std::fs::read(path).expect("read fixture");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let k = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("k"))
        .unwrap_or_else(|| panic!("{}: metadata has no `k`", path.display()));
    k.parse()
        .unwrap_or_else(|_| panic!("{}: metadata k = {k:?} is not an integer", path.display()))
}

fn scalar(t: &HashMap<String, Tensor>, name: &str) -> f32 {
    t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
}

fn host(t: &HashMap<String, Tensor>, name: &str) -> Vec<f32> {
    t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Checks one case; returns the failures found (empty if it passes).
fn check_case(path: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let t = candle_core::safetensors::load(path, &Device::Cpu).expect("load fixture");
    let k = metadata_k(path);
    let params = MixtureParams {
        mu: host(&t, "mu"),
        sigma: host(&t, "sigma"),
        pi: host(&t, "pi"),
        pi_zero: scalar(&t, "pi_zero"),
        sigma_zero: scalar(&t, "sigma_zero"),
        tau: scalar(&t, "tau"),
    };
    let mut failures = Vec::new();
    if params.k() != k {
        failures.push(format!(
            "{name}: mu has {} values, metadata k = {k}",
            params.mu.len()
        ));
        return failures;
    }

    let mixture = GaussianMixture::new(&name, &params, &MixtureOptions::default()).unwrap();
    let weight = Var::from_tensor(&t["weight"]).unwrap();
    let valid: Vec<bool> = vec_f64(&t["valid"]).iter().map(|&v| v == 1.0).collect();
    let mask = Tensor::from_vec(
        valid.iter().map(|&v| v as u8 as f32).collect::<Vec<_>>(),
        t["weight"].shape(),
        &Device::Cpu,
    )
    .unwrap();

    let soft = mixture.soft_weights(weight.as_tensor()).unwrap();
    let grad_output = (&t["grad_output"] * &mask).unwrap();
    let loss = (&soft * &grad_output).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad_of = |v: &Var| vec_f64(grads.get(v.as_tensor()).expect("gradient present"));

    let mut check = |what: &str, got: Vec<f64>, expected: &str, mask: &[bool], tol: f64| {
        let err = rel_err(&got, &vec_f64(&t[expected]), mask);
        println!("{name}: {what:<16} rel err {err:.2e} (tol {tol:.0e})");
        if err > tol {
            failures.push(format!("{name}: {what} rel err {err:.3e} > {tol:.0e}"));
        }
    };
    check("soft", vec_f64(&soft), "soft", &valid, SOFT_TOL);
    check(
        "grad_weight",
        grad_of(&weight),
        "grad_weight",
        &valid,
        SOFT_TOL,
    );
    let named: HashMap<&str, Var> = mixture.named_vars().into_iter().collect();
    for (param, file_name) in [
        ("mu", "grad_mu"),
        ("sigma", "grad_sigma"),
        ("pi", "grad_pi"),
        ("pi_zero", "grad_pi_zero"),
        ("sigma_zero", "grad_sigma_zero"),
    ] {
        let all = vec![true; named[param].elem_count()];
        check(
            file_name,
            grad_of(&named[param]),
            file_name,
            &all,
            PARAM_GRAD_TOL,
        );
    }

    let hard = vec_f64(&mixture.hard_weights(&t["weight"]).unwrap());
    let expected_hard = vec_f64(&t["hard"]);
    let mismatched = hard
        .iter()
        .zip(&expected_hard)
        .zip(&valid)
        .filter(|((h, e), &v)| v && h != e)
        .count();
    println!("{name}: hard             {mismatched} mismatches");
    if mismatched > 0 {
        failures.push(format!("{name}: {mismatched} hard weights differ"));
    }

    let weights = host(&t, "weight");
    let reference_sse = scalar(&t, "init_kmeans_sse") as f64;
    // The default (Lloyd restarts) within LLOYD_SLACK of the reference's;
    // the exact method never worse (SSE_SLACK covers f32 rounding only).
    for (method, slack) in [
        (KMeansMethod::Lloyd, LLOYD_SLACK),
        (KMeansMethod::Exact, SSE_SLACK),
    ] {
        let cfg = InitConfig {
            k,
            method,
            ..InitConfig::default()
        };
        let outcome = init_params(&name, &weights, &cfg).unwrap();
        println!(
            "{name}: k-means SSE ({method:?}) {:.6} vs reference {reference_sse:.6}",
            outcome.sse_zero
        );
        if outcome.sse_zero > reference_sse * slack {
            failures.push(format!(
                "{name}: {method:?} k-means SSE {} worse than the reference's {reference_sse} x {slack}",
                outcome.sse_zero
            ));
        }
    }
    failures
}

#[test]
fn matches_reference_fixtures() {
    let dir = reference_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "reference fixture folder {} cannot be read: {e}",
            dir.display()
        )
    });
    let mut cases: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no *.safetensors reference cases in {}",
        dir.display()
    );
    let failures: Vec<String> = cases.iter().flat_map(|p| check_case(p)).collect();
    assert!(
        failures.is_empty(),
        "{} checks failed over {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
