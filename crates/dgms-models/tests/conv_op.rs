//! Checks `dgms_models::conv_op::conv2d` against candle's own `Tensor::conv2d`: forward
//! values, both gradients through candle autograd, and error messages for bad arguments.

use candle_core::{DType, Device, Result, Tensor, Var};
use dgms_models::conv_op::conv2d;
use dgms_test_support::rng::Lcg64;
use dgms_test_support::tensors::{rel_diff_tensors, to_f32_vec};
use proptest::prelude::*;

/// Relative tolerance: max |ours - candle| over max |candle|.
const TOL: f32 = 1e-5;

/// A tensor of deterministic pseudo-random values in [-1, 1) (a 64-bit
/// LCG), so failures reproduce.
fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let len = dims.iter().product();
    Tensor::from_vec(Lcg64::seeded(seed).unit_vec(len), dims, &Device::Cpu).unwrap()
}

/// One convolution configuration: input (n, c, h, w), weight (o, c / groups, kh, kw).
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    o: usize,
    k: (usize, usize),
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Case {
    fn new(x: [usize; 4], o: usize, k: usize, stride: usize, padding: usize) -> Self {
        let groups = 1;
        let k = (k, k);
        Self {
            x,
            o,
            k,
            stride,
            padding,
            groups,
        }
    }

    fn w_dims(&self) -> [usize; 4] {
        [self.o, self.x[1] / self.groups, self.k.0, self.k.1]
    }
}

/// Direct-loop f64 convolution: returns (out, dL/dx, dL/dw) for L = sum(out * g). An
/// independent reference for the cases where candle's own conv backward fails (below).
fn naive(case: &Case, x: &[f32], w: &[f32], g: &[f32]) -> [Vec<f32>; 3] {
    let [n, c, h, wd] = case.x;
    let [o, cg, kh, kw] = case.w_dims();
    let (s, p, og) = (case.stride, case.padding, o / case.groups);
    let oh = (h + 2 * p - kh) / s + 1;
    let ow = (wd + 2 * p - kw) / s + 1;
    let mut out = vec![0f64; n * o * oh * ow];
    let (mut dx, mut dw) = (vec![0f64; x.len()], vec![0f64; w.len()]);
    for b in 0..n {
        for oc in 0..o {
            for (oy, ox) in (0..oh).flat_map(|oy| (0..ow).map(move |ox| (oy, ox))) {
                let oi = ((b * o + oc) * oh + oy) * ow + ox;
                for (ci, i, j) in (0..cg)
                    .flat_map(|ci| (0..kh).flat_map(move |i| (0..kw).map(move |j| (ci, i, j))))
                {
                    let (iy, ix) = ((oy * s + i).wrapping_sub(p), (ox * s + j).wrapping_sub(p));
                    if iy >= h || ix >= wd {
                        continue; // padding (negative coordinates wrap to huge values)
                    }
                    let xi = ((b * c + oc / og * cg + ci) * h + iy) * wd + ix;
                    let wi = ((oc * cg + ci) * kh + i) * kw + j;
                    out[oi] += x[xi] as f64 * w[wi] as f64;
                    dx[xi] += g[oi] as f64 * w[wi] as f64;
                    dw[wi] += g[oi] as f64 * x[xi] as f64;
                }
            }
        }
    }
    [out, dx, dw].map(|v| v.into_iter().map(|e| e as f32).collect())
}

/// Whether candle 0.11's conv2d backward handles `case`: it takes the output padding of its
/// `conv_transpose2d` from the height alone (and underflows if that is negative), so the
/// width must come out right with the same padding.
fn candle_backward_works(case: &Case) -> bool {
    let [_, _, h, w] = case.x;
    let [_, _, kh, kw] = case.w_dims();
    let (s, p) = (case.stride, case.padding);
    let (oh, ow) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
    let (full_h, full_w) = ((oh - 1) * s + kh, (ow - 1) * s + kw);
    // Output padding `h - (full_h - 2p)` must be >= 0 and also fit the width.
    full_h >= 2 * p && full_h - 2 * p <= h && full_w + h == w + full_h
}

/// Compares forward values and dL/dx, dL/dw for L = sum(out * g) with candle's conv and its
/// autograd, and with [`naive`]. candle 0.11's conv2d backward derives the transposed conv's
/// output padding from the height only, so it fails (shape mismatch or overflow panic) for
/// some strided or heavily padded shapes; see [`candle_backward_works`]. There only [`naive`]
/// is compared.
/// `track` selects which of (x, w) are variables.
fn check_case(case: Case, seed: u64, track: (bool, bool)) -> Result<()> {
    let Case {
        stride,
        padding,
        groups,
        ..
    } = case;
    let x = Var::from_tensor(&tensor(&case.x, seed))?;
    let w = Var::from_tensor(&tensor(&case.w_dims(), seed + 1))?;
    let xt = if track.0 {
        x.as_tensor().clone()
    } else {
        x.as_tensor().detach()
    };
    let wt = if track.1 {
        w.as_tensor().clone()
    } else {
        w.as_tensor().detach()
    };

    let expected = xt.conv2d(&wt, padding, stride, 1, groups)?;
    let got = conv2d(&xt, &wt, stride, padding, groups)?;
    let fwd = rel_diff_tensors(&got, &expected);
    assert!(fwd <= TOL, "{case:?}: forward rel diff {fwd}");

    let g = tensor(expected.dims(), seed + 2);
    let [n_out, n_dx, n_dw] = naive(&case, &to_f32_vec(&xt), &to_f32_vec(&wt), &to_f32_vec(&g));
    let d = rel_diff_tensors(&got, &Tensor::from_vec(n_out, got.dims(), &Device::Cpu)?);
    assert!(d <= TOL, "{case:?}: forward vs naive rel diff {d}");
    let grads_ref = match candle_backward_works(&case) {
        true => Some((expected * &g)?.sum_all()?.backward()?),
        false => None,
    };
    let grads = (got * &g)?.sum_all()?.backward()?;
    for (on, var, naive_grad, name) in [(track.0, &x, n_dx, "dx"), (track.1, &w, n_dw, "dw")] {
        let ours = grads.get(var);
        if !on {
            assert!(ours.is_none(), "{case:?}: unexpected {name}");
            continue;
        }
        let ours = ours.unwrap_or_else(|| panic!("{case:?}: no {name}"));
        if let Some(r) = grads_ref.as_ref().and_then(|gr| gr.get(var)) {
            let d = rel_diff_tensors(ours, r);
            assert!(d <= TOL, "{case:?}: {name} vs candle rel diff {d}");
        }
        let d = rel_diff_tensors(
            ours,
            &Tensor::from_vec(naive_grad, ours.dims(), &Device::Cpu)?,
        );
        assert!(d <= TOL, "{case:?}: {name} vs naive rel diff {d}");
    }
    Ok(())
}

fn check(case: Case) {
    check_case(case, 7, (true, true)).unwrap();
}

#[test]
fn forward_and_grads_3x3() {
    check(Case::new([1, 3, 8, 8], 4, 3, 1, 1));
    check(Case::new([3, 5, 7, 9], 6, 3, 2, 1));
    check(Case::new([3, 5, 7, 9], 6, 3, 1, 0));
    check(Case::new([1, 5, 7, 9], 6, 3, 2, 0));
    check(Case::new([3, 7, 6, 5], 9, 3, 1, 2));
    check(Case::new([3, 7, 11, 10], 9, 3, 2, 2));
}

#[test]
fn forward_and_grads_1x1() {
    check(Case::new([3, 10, 5, 6], 7, 1, 1, 0));
    check(Case::new([3, 10, 7, 6], 7, 1, 2, 0));
    check(Case::new([1, 10, 7, 6], 7, 1, 2, 1));
    check(Case::new([1, 3, 4, 4], 5, 1, 1, 2));
}

#[test]
fn forward_and_grads_7x7_stem() {
    check(Case::new([2, 3, 15, 13], 5, 7, 2, 3));
    check(Case::new([1, 1, 9, 9], 3, 7, 1, 0));
    check(Case::new([3, 1, 14, 14], 6, 7, 2, 2));
}

#[test]
fn forward_and_grads_cifar_like() {
    check(Case::new([2, 16, 32, 32], 16, 3, 1, 1));
    check(Case::new([2, 16, 32, 32], 32, 3, 2, 1));
    check(Case::new([3, 64, 8, 8], 64, 3, 1, 1));
    check(Case::new([3, 1, 28, 28], 16, 3, 1, 1));
}

#[test]
fn edge_shapes() {
    // Non-square kernel, kernel as large as the padded input, 1x1 images.
    check(Case {
        k: (3, 5),
        ..Case::new([2, 3, 9, 8], 4, 3, 1, 2)
    });
    check(Case::new([1, 2, 3, 3], 3, 5, 1, 1));
    check(Case::new([2, 3, 1, 1], 4, 3, 1, 1));
    check(Case::new([2, 3, 1, 1], 4, 1, 1, 0));
    check(Case::new([2, 3, 2, 5], 4, 3, 3, 1));
    // Width-preserving stride-1 fast path with a taller kernel than the padding covers.
    check(Case {
        k: (5, 3),
        ..Case::new([2, 3, 9, 8], 4, 3, 1, 1)
    });
    check(Case {
        k: (1, 5),
        ..Case::new([2, 3, 4, 6], 4, 3, 1, 2)
    });
}

#[test]
fn grouped_and_depthwise() {
    check(Case {
        groups: 2,
        ..Case::new([2, 6, 7, 7], 8, 3, 1, 1)
    });
    check(Case {
        groups: 3,
        ..Case::new([3, 6, 9, 8], 9, 3, 2, 1)
    });
    check(Case {
        groups: 5,
        ..Case::new([2, 5, 9, 9], 5, 3, 2, 1)
    });
    check(Case {
        groups: 4,
        ..Case::new([1, 4, 6, 6], 8, 1, 1, 0)
    });
}

#[test]
fn batches_split_into_uneven_chunks() {
    // Large enough batches that a task covers several items (one batched matmul per chunk),
    // with a shorter last chunk.
    check(Case::new([10, 3, 6, 6], 5, 3, 1, 1));
    check(Case::new([11, 4, 7, 5], 6, 3, 2, 0));
    check(Case {
        groups: 2,
        ..Case::new([9, 4, 5, 5], 6, 3, 1, 1)
    });
    check_case(Case::new([10, 3, 6, 6], 5, 3, 1, 1), 9, (false, true)).unwrap();
    check_case(Case::new([10, 3, 6, 6], 5, 1, 1, 0), 9, (true, false)).unwrap();
}

#[test]
fn only_one_side_tracked() {
    let case = Case::new([2, 4, 9, 9], 5, 3, 2, 1);
    check_case(case, 11, (false, true)).unwrap();
    check_case(case, 12, (true, false)).unwrap();
}

#[test]
fn non_contiguous_inputs() -> Result<()> {
    // x stored as NHWC and w as IOHW, both permuted to the expected NCHW / OIHW views.
    let xv = Var::from_tensor(&tensor(&[2, 7, 7, 5], 3))?;
    let wv = Var::from_tensor(&tensor(&[5, 4, 3, 3], 4))?;
    let x = xv.permute((0, 3, 1, 2))?;
    let w = wv.transpose(0, 1)?;
    assert!(!x.is_contiguous() && !w.is_contiguous());
    let expected = x.conv2d(&w, 1, 2, 1, 1)?;
    let got = conv2d(&x, &w, 2, 1, 1)?;
    assert!(rel_diff_tensors(&got, &expected) <= TOL);
    let g = tensor(expected.dims(), 5).t()?.contiguous()?.t()?;
    let grads_ref = (expected * &g)?.sum_all()?.backward()?;
    let grads = (got * &g)?.sum_all()?.backward()?;
    for v in [&xv, &wv] {
        let d = rel_diff_tensors(grads.get(v).unwrap(), grads_ref.get(v).unwrap());
        assert!(d <= TOL, "grad rel diff {d}");
    }
    Ok(())
}

#[test]
fn repeated_calls_and_second_backward_agree() -> Result<()> {
    let x = Var::from_tensor(&tensor(&[3, 4, 8, 8], 21))?;
    let w = Var::from_tensor(&tensor(&[6, 4, 3, 3], 22))?;
    let a = conv2d(&x, &w, 1, 1, 1)?;
    let b = conv2d(&x, &w, 1, 1, 1)?;
    assert_eq!(rel_diff_tensors(&a, &b), 0.0);
    // Using the output twice accumulates both gradient paths.
    let y = (a.sqr()? + b)?.sum_all()?;
    let grads = y.backward()?;
    let r = x.conv2d(&w, 1, 1, 1, 1)?;
    let grads_ref = (r.sqr()? + r)?.sum_all()?.backward()?;
    for v in [&x, &w] {
        assert!(rel_diff_tensors(grads.get(v).unwrap(), grads_ref.get(v).unwrap()) <= TOL);
    }
    Ok(())
}

/// The gradients' bits in a rayon pool of `threads` threads: (dL/dx, dL/dw) for
/// L = sum(conv(x, w) * g).
fn grad_bits(case: &Case, threads: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool");
    pool.install(|| {
        let x = Var::from_tensor(&tensor(&case.x, 31))?;
        let w = Var::from_tensor(&tensor(&case.w_dims(), 32))?;
        let y = conv2d(&x, &w, case.stride, case.padding, case.groups)?;
        let g = tensor(y.dims(), 33);
        let grads = (y * g)?.sum_all()?.backward()?;
        let bits = |v: &Var| -> Vec<u32> {
            to_f32_vec(grads.get(v).unwrap())
                .iter()
                .map(|f| f.to_bits())
                .collect()
        };
        Ok((bits(&x), bits(&w)))
    })
}

/// The weight gradient sums over the batch. Its bits must not depend on the pool size (which
/// used to set the chunking) nor on how rayon's threads steal work (which used to set the
/// reduction tree): otherwise the same training run gives different weights each time, as
/// `cargo xtask train` and the CLI did (README, "Repeatability").
#[test]
fn gradients_are_bitwise_the_same_in_any_thread_pool() -> Result<()> {
    let cases = [
        Case::new([64, 16, 14, 14], 16, 3, 1, 1),
        Case::new([48, 32, 8, 8], 32, 1, 1, 0),
        Case {
            groups: 8,
            ..Case::new([40, 8, 10, 10], 8, 3, 2, 1)
        },
    ];
    for case in cases {
        let reference = grad_bits(&case, 1)?;
        for threads in [2, 3, 4, 8] {
            for run in 0..3 {
                let (dx, dw) = grad_bits(&case, threads)?;
                assert!(
                    dx == reference.0,
                    "{case:?}: dL/dx differs, {threads} threads, run {run}"
                );
                assert!(
                    dw == reference.1,
                    "{case:?}: dL/dw differs, {threads} threads, run {run}"
                );
            }
        }
    }
    Ok(())
}

fn err_msg(r: Result<Tensor>) -> String {
    match r {
        Ok(t) => panic!("expected an error, got a tensor of shape {:?}", t.dims()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_arguments_give_errors() {
    let x = tensor(&[2, 4, 8, 8], 1);
    let w = tensor(&[3, 4, 3, 3], 2);
    let cases: Vec<(Result<Tensor>, &str)> = vec![
        (
            conv2d(&x.to_dtype(DType::F64).unwrap(), &w, 1, 1, 1),
            "input must be f32",
        ),
        (
            conv2d(&x, &w.to_dtype(DType::F16).unwrap(), 1, 1, 1),
            "weight must be f32",
        ),
        (
            conv2d(&x.flatten_from(2).unwrap(), &w, 1, 1, 1),
            "input must be 4-D",
        ),
        (
            conv2d(&x, &w.flatten_from(2).unwrap(), 1, 1, 1),
            "weight must be 4-D",
        ),
        (
            conv2d(&x, &tensor(&[3, 5, 3, 3], 3), 1, 1, 1),
            "in_channel mismatch",
        ),
        (
            conv2d(&x, &tensor(&[3, 2, 3, 3], 3), 1, 1, 2),
            "not divisible by groups",
        ),
        (conv2d(&x, &w, 0, 1, 1), "stride must be at least 1"),
        (conv2d(&x, &w, 1, 1, 0), "groups must be at least 1"),
        (
            conv2d(&x, &tensor(&[3, 4, 11, 3], 3), 1, 1, 1),
            "larger than the padded input",
        ),
        (
            conv2d(&x, &tensor(&[3, 4, 0, 3], 3), 1, 1, 1),
            "zero-sized dimension",
        ),
    ];
    for (r, want) in cases {
        let msg = err_msg(r);
        assert!(msg.contains(want), "error {msg:?} should mention {want:?}");
        assert!(
            msg.contains("conv2d_im2col"),
            "error {msg:?} should name the op"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_candle_on_random_shapes(
        n in 1usize..=6,
        groups in 1usize..=3,
        cg in 1usize..=4,
        og in 1usize..=4,
        h in 1usize..=9,
        w in 1usize..=9,
        kh in 1usize..=4,
        kw in 1usize..=4,
        stride in 1usize..=3,
        padding in 0usize..=2,
        seed in 0u64..1000,
    ) {
        prop_assume!(h + 2 * padding >= kh && w + 2 * padding >= kw);
        let case = Case {
            x: [n, cg * groups, h, w],
            o: og * groups,
            k: (kh, kw),
            stride,
            padding,
            groups,
        };
        check_case(case, seed, (true, true)).unwrap();
    }
}
