//! Checks the fused training batch norm against candle-nn's composed one:
//! outputs, the gradients of input, weight and bias, and the running
//! statistics (at momentum 0.1 and MNASNet's 3e-4), on shapes with odd channel counts and spatial sizes.
//! The same for the batch norm fused with a ReLU and a residual add (and
//! the residual's gradient), plus finite differences of that op.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use dgms_models::affine_relu_op::affine_relu;
use dgms_models::batch_norm::batch_norm_with;
use dgms_models::batch_norm_op::batch_norm_train;
use dgms_models::batch_norm_relu_op::batch_norm_relu_train;
use dgms_models::conv::ConvBackend;
use dgms_test_support::rng::Lcg64;
use dgms_test_support::tensors::{rel_diff_tensors, to_f32_vec};
use proptest::prelude::*;

/// Deterministic values in [-1, 1) plus an offset, so channels have a
/// nonzero mean.
fn data(len: usize, seed: u64, offset: f32) -> Vec<f32> {
    let mut g = Lcg64::scrambled(seed);
    (0..len).map(|_| g.unit() + offset).collect()
}

/// Output and (dx, dweight, dbias) of `loss = Σ y·r` for a fixed random r.
fn run(
    dims: &[usize],
    seed: u64,
    fused: bool,
) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Vec<f32>, Vec<f32>) {
    let c = dims[1];
    let x = Var::from_vec(data(dims.iter().product(), seed, 0.5), dims, &Device::Cpu).unwrap();
    let r = Tensor::from_vec(
        data(dims.iter().product(), seed + 1, 0.0),
        dims,
        &Device::Cpu,
    )
    .unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let backend = if fused {
        ConvBackend::Im2col
    } else {
        ConvBackend::Candle
    };
    // PyTorch's default momentum and MNASNet's 1 - 0.9997, by seed: both
    // backends must move the running statistics by the same amount.
    let momentum = [0.1, 1.0 - 0.9997][(seed % 2) as usize];
    let bn = batch_norm_with(c, (1e-5, momentum), backend, vb.pp("bn")).unwrap();
    // Non-trivial affine parameters.
    let vars = varmap.data().lock().unwrap().clone();
    vars["bn.weight"]
        .set(&Tensor::from_vec(data(c, seed + 2, 1.0), c, &Device::Cpu).unwrap())
        .unwrap();
    vars["bn.bias"]
        .set(&Tensor::from_vec(data(c, seed + 3, 0.0), c, &Device::Cpu).unwrap())
        .unwrap();
    let y = bn.forward_t(x.as_tensor(), true).unwrap();
    // Eval output after the running statistics moved once.
    let eval = bn.forward_t(x.as_tensor(), false).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g = |t: &Tensor| grads.get(t).unwrap().clone();
    (
        y.clone(),
        eval,
        g(x.as_tensor()),
        g(vars["bn.weight"].as_tensor()),
        g(vars["bn.bias"].as_tensor()),
        to_f32_vec(vars["bn.running_mean"].as_tensor()),
        to_f32_vec(vars["bn.running_var"].as_tensor()),
    )
}

/// `a` within 1e-4 of `b` relative to max |b|, or, for a per-channel sum
/// (`sum_floor` given), within that absolute floor.
fn assert_close(name: &str, a: &Tensor, b: &Tensor, sum_floor: Option<f32>, dims: &[usize]) {
    let d = rel_diff_tensors(a, b);
    if d < 1e-4 {
        return;
    }
    let worst = to_f32_vec(a)
        .iter()
        .zip(to_f32_vec(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        sum_floor.is_some_and(|f| worst <= f),
        "{name} differs by {d:e} (relative), {worst:e} (absolute) for {dims:?}"
    );
}

fn check(dims: &[usize], seed: u64) {
    let ours = run(dims, seed, true);
    let theirs = run(dims, seed, false);
    let what = ["output", "eval output", "dx", "dweight", "dbias"];
    // dweight and dbias are per-channel sums of m = N*H*W terms of size
    // ~1 (r, and r times the normalised input): when a sum nearly cancels,
    // a relative bound on it measures the summation order, not the op. So
    // they may also differ by what f32 summation of m such terms can:
    // 1e-6 * m absolute (the measured worst, [4, 1, 5, 4] with dbias near
    // 0, differed by ~2e-6 over 80 terms, relatively 1.02e-4).
    let per_channel = dims.iter().product::<usize>() / dims[1];
    let sum_floor = 1e-6 * per_channel as f32;
    for (name, (a, b)) in what.iter().zip([
        (&ours.0, &theirs.0),
        (&ours.1, &theirs.1),
        (&ours.2, &theirs.2),
        (&ours.3, &theirs.3),
        (&ours.4, &theirs.4),
    ]) {
        let is_sum = matches!(*name, "dweight" | "dbias");
        assert_close(name, a, b, is_sum.then_some(sum_floor), dims);
    }
    for (name, a, b) in [
        ("running_mean", &ours.5, &theirs.5),
        ("running_var", &ours.6, &theirs.6),
    ] {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{name}: {x} vs {y} for {dims:?}");
        }
    }
}

#[test]
fn fused_matches_candle_nn() {
    for (dims, seed) in [
        (vec![4, 3, 5, 7], 1),
        (vec![1, 16, 28, 28], 2),
        (vec![7, 5, 1, 1], 3),
        (vec![3, 2, 9], 4),
        (vec![5, 4], 5),
    ] {
        check(&dims, seed);
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(32));
    runner
        .run(
            &(1usize..6, 1usize..9, 1usize..8, 1usize..8, 0u64..1000),
            |(n, c, h, w, seed)| {
                // With a handful of elements per channel the normalised
                // output barely depends on x: dx is a difference of nearly
                // equal terms and f32 rounding in candle-nn's composition
                // (the reference) dominates it. Real layers have hundreds.
                prop_assume!(n * h * w >= 8);
                check(&[n, c, h, w], seed);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
    let w3 = Tensor::ones(3, DType::F32, &dev).unwrap();
    let w4 = Tensor::ones(4, DType::F32, &dev).unwrap();
    let err = batch_norm_train(&x, &w4, &w3, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight must have shape [3]"), "{err}");
    let err = batch_norm_train(&x, &w3, &w4, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias must have shape [3]"), "{err}");
    let v = Tensor::zeros(3, DType::F32, &dev).unwrap();
    let err = batch_norm_train(&v, &w3, &w3, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2 dimensions"), "{err}");
    let xd = x.to_dtype(DType::F64).unwrap();
    let err = batch_norm_train(&xd, &w3, &w3, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input must be f32"), "{err}");
}

/// How [`relu_run`] computes `relu(bn(x) + res)`.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// The fused op (`forward_relu_t` on the im2col backend).
    Fused,
    /// Our batch-norm op, then candle's add and ReLU.
    OursUnfused,
    /// candle-nn's batch norm, candle's add and ReLU.
    Candle,
}

/// Output, dx, dweight, dbias, dres (if any) of `loss = Σ relu(bn(x) +
/// res)·r`, in training then in evaluation, and the running mean and
/// variance.
struct ReluRun {
    tensors: Vec<(&'static str, Tensor)>,
    running: [Vec<f32>; 2],
}

fn relu_run(dims: &[usize], seed: u64, path: Path, residual: bool) -> ReluRun {
    let c = dims[1];
    let len: usize = dims.iter().product();
    let dev = &Device::Cpu;
    let x = Var::from_vec(data(len, seed, 0.5), dims, dev).unwrap();
    // Residual values ~ the normalised output's, so the ReLU cuts through
    // both signs of the sum.
    let res = Var::from_vec(data(len, seed + 4, 0.0), dims, dev).unwrap();
    let r = Tensor::from_vec(data(len, seed + 1, 0.0), dims, dev).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, dev);
    let backend = match path {
        Path::Candle => ConvBackend::Candle,
        _ => ConvBackend::Im2col,
    };
    let momentum = [0.1, 1.0 - 0.9997][(seed % 2) as usize];
    let bn = batch_norm_with(c, (1e-5, momentum), backend, vb.pp("bn")).unwrap();
    let vars = varmap.data().lock().unwrap().clone();
    vars["bn.weight"]
        .set(&Tensor::from_vec(data(c, seed + 2, 1.0), c, dev).unwrap())
        .unwrap();
    vars["bn.bias"]
        .set(&Tensor::from_vec(data(c, seed + 3, 0.0), c, dev).unwrap())
        .unwrap();
    let res_t = residual.then(|| res.as_tensor());
    let forward = |train: bool| match path {
        Path::OursUnfused => {
            let y = bn.forward_t(x.as_tensor(), train).unwrap();
            match res_t {
                Some(t) => (y + t).unwrap().relu().unwrap(),
                None => y.relu().unwrap(),
            }
        }
        _ => bn.forward_relu_t(x.as_tensor(), res_t, train).unwrap(),
    };
    let mut tensors = vec![];
    // Training, then evaluation (after the running statistics moved once).
    for (train, names) in [
        (true, ["output", "dx", "dweight", "dbias", "dresidual"]),
        (
            false,
            [
                "eval output",
                "eval dx",
                "eval dweight",
                "eval dbias",
                "eval dresidual",
            ],
        ),
    ] {
        let y = forward(train);
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g = |t: &Tensor| grads.get(t).unwrap().clone();
        tensors.extend([
            (names[0], y.clone()),
            (names[1], g(x.as_tensor())),
            (names[2], g(vars["bn.weight"].as_tensor())),
            (names[3], g(vars["bn.bias"].as_tensor())),
        ]);
        if residual {
            tensors.push((names[4], g(res.as_tensor())));
        }
    }
    ReluRun {
        tensors,
        running: [
            to_f32_vec(vars["bn.running_mean"].as_tensor()),
            to_f32_vec(vars["bn.running_var"].as_tensor()),
        ],
    }
}

/// Returns the fused training output.
fn check_relu(dims: &[usize], seed: u64, residual: bool) -> Vec<f32> {
    let fused = relu_run(dims, seed, Path::Fused, residual);
    // Forward, the fused op rounds as our unfused op followed by candle's
    // add and ReLU: bit for bit the same output.
    // The same in evaluation.
    let unfused = relu_run(dims, seed, Path::OursUnfused, residual);
    for ((name, a), (_, b)) in fused.tensors.iter().zip(&unfused.tensors) {
        if name.ends_with("output") {
            assert_eq!(
                to_f32_vec(a),
                to_f32_vec(b),
                "fused vs unfused {name} for {dims:?}"
            );
        }
    }
    let candle = relu_run(dims, seed, Path::Candle, residual);
    // As in `check`: per-channel sums may differ by the summation order.
    let sum_floor = 1e-6 * (dims.iter().product::<usize>() / dims[1]) as f32;
    for reference in [&unfused, &candle] {
        assert_eq!(fused.tensors.len(), reference.tensors.len());
        for ((name, a), (_, b)) in fused.tensors.iter().zip(&reference.tensors) {
            let is_sum = name.ends_with("dweight") || name.ends_with("dbias");
            assert_close(name, a, b, is_sum.then_some(sum_floor), dims);
        }
        for (a, b) in fused.running.iter().zip(&reference.running) {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() < 1e-5,
                    "running stats: {x} vs {y} for {dims:?}"
                );
            }
        }
    }
    to_f32_vec(&fused.tensors[0].1)
}

#[test]
fn fused_relu_matches_composed() {
    // Batch 1, one channel, channel counts that are not multiples of 8,
    // 1x1 maps, rank 3 and 2.
    for (dims, seed) in [
        (vec![1, 1, 5, 7], 11),
        (vec![4, 3, 5, 7], 12),
        (vec![2, 13, 4, 3], 13),
        (vec![1, 16, 28, 28], 14),
        (vec![9, 5, 1, 1], 15),
        (vec![3, 2, 9], 16),
        (vec![10, 4], 17),
    ] {
        for residual in [false, true] {
            let out = check_relu(&dims, seed, residual);
            // The ReLU did cut, so the masks were exercised (random
            // tiny cases below may not).
            assert!(
                out.contains(&0.0) && out.iter().any(|&v| v > 0.0),
                "{dims:?}"
            );
        }
    }
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    runner
        .run(
            &(
                1usize..6,
                1usize..11,
                1usize..8,
                1usize..8,
                0u64..1000,
                any::<bool>(),
            ),
            |(n, c, h, w, seed, residual)| {
                // As in `fused_matches_candle_nn`.
                prop_assume!(n * h * w >= 8);
                check_relu(&[n, c, h, w], seed, residual);
                Ok(())
            },
        )
        .unwrap();
}

/// `Σ y·r` in f64 for the fused op's f32 output.
fn relu_loss(x: &Tensor, w: &Tensor, b: &Tensor, res: &Tensor, r: &[f64]) -> (f64, Vec<bool>) {
    let (y, _) = batch_norm_relu_train(x, w, b, Some(res), 1e-5).unwrap();
    let y = to_f32_vec(&y);
    let loss = y.iter().zip(r).map(|(&v, &r)| v as f64 * r).sum();
    (loss, y.iter().map(|&v| v > 0.0).collect())
}

/// The fused op's gradients in x, weight, bias and the residual against
/// central differences of its own f32 forward pass. Coordinates whose step
/// moves an output across the ReLU's kink are skipped (the difference
/// quotient is not the derivative there).
#[test]
fn fused_relu_matches_finite_differences() {
    let dims = [2, 3, 3, 5];
    let (c, len) = (dims[1], dims.iter().product::<usize>());
    let dev = &Device::Cpu;
    let inputs = [
        Var::from_vec(data(len, 21, 0.5), &dims[..], dev).unwrap(),
        Var::from_vec(data(c, 22, 1.0), c, dev).unwrap(),
        Var::from_vec(data(c, 23, 0.0), c, dev).unwrap(),
        Var::from_vec(data(len, 24, 0.0), &dims[..], dev).unwrap(),
    ];
    let r: Vec<f64> = data(len, 25, 0.0).iter().map(|&v| v as f64).collect();
    let t = |i: usize| inputs[i].as_tensor();
    let (y, _) = batch_norm_relu_train(t(0), t(1), t(2), Some(t(3)), 1e-5).unwrap();
    let rt = Tensor::from_vec(r.iter().map(|&v| v as f32).collect(), &dims[..], dev).unwrap();
    let grads = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
    let h = 1e-2f32;
    let mut checked = 0;
    for (i, name) in ["x", "weight", "bias", "residual"].iter().enumerate() {
        let analytic = to_f32_vec(grads.get(t(i)).unwrap());
        let base = to_f32_vec(t(i));
        for k in 0..base.len() {
            let at = |delta: f32| {
                let mut v = base.clone();
                v[k] += delta;
                let p = Tensor::from_vec(v, t(i).dims(), dev).unwrap();
                let mut args: Vec<Tensor> = (0..4).map(|j| t(j).clone()).collect();
                args[i] = p;
                relu_loss(&args[0], &args[1], &args[2], &args[3], &r)
            };
            let ((plus, mask_plus), (minus, mask_minus)) = (at(h), at(-h));
            if mask_plus != mask_minus {
                continue;
            }
            let fd = (plus - minus) / (2.0 * h as f64);
            let a = analytic[k] as f64;
            assert!(
                (fd - a).abs() <= 2e-3 * a.abs().max(1.0),
                "d{name}[{k}]: finite difference {fd}, backward {a}"
            );
            checked += 1;
        }
    }
    // Most coordinates are away from the kink.
    assert!(checked > (2 * len + 2 * c) / 2, "only {checked} checked");
}

#[test]
fn fused_relu_bad_arguments_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &dev).unwrap();
    let w = Tensor::ones(3, DType::F32, &dev).unwrap();
    let res = Tensor::zeros((2, 3, 4, 5), DType::F32, &dev).unwrap();
    let err = batch_norm_relu_train(&x, &w, &w, Some(&res), 1e-5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("residual must have the input's shape"),
        "{err}"
    );
    let w4 = Tensor::ones(4, DType::F32, &dev).unwrap();
    let err = batch_norm_relu_train(&x, &w4, &w, None, 1e-5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("weight must have shape [3]"), "{err}");
    let err = affine_relu(&x, &w, &w, Some(&res)).unwrap_err().to_string();
    assert!(
        err.contains("residual must have the input's shape"),
        "{err}"
    );
    let err = affine_relu(&x, &w, &w4, None).unwrap_err().to_string();
    assert!(err.contains("shift must have shape [3]"), "{err}");
}
