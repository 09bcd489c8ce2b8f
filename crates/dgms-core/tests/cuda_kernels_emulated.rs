//! The fused mixture op's CUDA kernels (`crates/dgms-cuda/kernels/
//! mixture.cu`) against the CPU kernel, without a GPU: dgms-cuda's
//! emulation runs the kernels' own source on CPU threads with the GPU
//! launch configuration (blocks, warps, barriers, shuffles, shared
//! memory that starts as NaN). Forward and weight gradients are the same
//! computation in the same order, so they must agree to the last bits;
//! the parameter sums are summed in another order (warp trees, blocks)
//! and agree to 1e-12 relative. f32 and f64 instantiations, K = 2..256,
//! odd weight counts, grid-stride loops that go round several times and
//! weights far outside every component.

mod common;

use common::{random_params, random_weights};
use dgms_core::kernel::{self, Prepared};
use dgms_core::params::PackedLayout;
use dgms_cuda::emulated;
use dgms_test_support::compare::rel_err;

/// The largest difference in units in the last place of f32 values.
fn max_ulps(a: &[f32], b: &[f32]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() as u32)
        .max()
        .unwrap_or(0)
}

/// The CPU kernel against the emulated CUDA kernels on the launch
/// configuration of the GPU, or on at most `max_blocks` blocks.
fn check_case(k: usize, n: usize, tau: f32, seed: u64, max_blocks: Option<u32>) {
    let fwd_cap = max_blocks.unwrap_or(dgms_cuda::launch::MAX_FORWARD_BLOCKS);
    let bwd_cap = max_blocks.unwrap_or(dgms_cuda::launch::MAX_BACKWARD_BLOCKS);
    let params = random_params(k, tau, seed);
    let packed = params.to_packed();
    let layout = PackedLayout { k };
    let mut w = random_weights(n, seed);
    if n > 3 {
        // Far outside every component: log densities ~1e15 apart.
        w[n / 3] = 5e4;
        w[n - 2] = -2e3;
    }
    let g: Vec<f32> = random_weights(n, seed + 99)
        .iter()
        .map(|v| v * 5.0)
        .collect();
    let prep = Prepared::from_packed(&packed, layout);

    // f32, as a model runs it.
    let mut cpu_soft = vec![0f32; n];
    kernel::soft_forward(&prep, &w, &mut cpu_soft);
    let gpu_soft = emulated::soft_forward_capped(&w, &packed, k, fwd_cap).unwrap();
    assert!(
        max_ulps(&cpu_soft, &gpu_soft) <= 1,
        "K={k} n={n}: soft weights {} ulps apart",
        max_ulps(&cpu_soft, &gpu_soft)
    );
    let mut cpu_gw = vec![0f32; n];
    let cpu_grads = kernel::backward(&prep, &w, &g, &mut cpu_gw);
    let (gpu_gw, totals) = emulated::backward_capped(&w, &packed, &g, k, bwd_cap).unwrap();
    assert!(
        max_ulps(&cpu_gw, &gpu_gw) <= 1,
        "K={k} n={n}: weight gradients {} ulps apart",
        max_ulps(&cpu_gw, &gpu_gw)
    );
    let gpu_grads = prep.param_grads(totals.e, totals.mu, totals.sigma, totals.tau);
    for (what, c, d) in [
        ("pi", &cpu_grads.pi, &gpu_grads.pi),
        ("sigma", &cpu_grads.sigma, &gpu_grads.sigma),
        ("mu", &cpu_grads.mu, &gpu_grads.mu),
        ("tau", &vec![cpu_grads.tau], &vec![gpu_grads.tau]),
    ] {
        let err = rel_err(d, c, 1e-30);
        assert!(err <= 1e-12, "K={k} n={n}: d{what} rel err {err:.3e}");
    }

    // f64.
    let w64: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    let g64: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
    let p64: Vec<f64> = packed.iter().map(|&v| f64::from(v)).collect();
    let prep64 = Prepared::from_packed(&p64, layout);
    let mut cpu64 = vec![0f64; n];
    kernel::soft_forward(&prep64, &w64, &mut cpu64);
    let gpu64 = emulated::soft_forward_capped(&w64, &p64, k, fwd_cap).unwrap();
    let err = rel_err(&gpu64, &cpu64, 1e-30);
    assert!(
        err <= 1e-14,
        "K={k} n={n}: f64 soft weights rel err {err:.3e}"
    );
    let mut cpu_gw64 = vec![0f64; n];
    let cpu_grads64 = kernel::backward(&prep64, &w64, &g64, &mut cpu_gw64);
    let (gpu_gw64, totals64) = emulated::backward_capped(&w64, &p64, &g64, k, bwd_cap).unwrap();
    let err = rel_err(&gpu_gw64, &cpu_gw64, 1e-30);
    assert!(
        err <= 1e-14,
        "K={k} n={n}: f64 weight gradients rel err {err:.3e}"
    );
    let gpu_grads64 = prep64.param_grads(totals64.e, totals64.mu, totals64.sigma, totals64.tau);
    let err = rel_err(&gpu_grads64.mu, &cpu_grads64.mu, 1e-30);
    assert!(err <= 1e-12, "K={k} n={n}: f64 dmu rel err {err:.3e}");
}

#[test]
fn emulated_cuda_kernels_match_the_cpu_kernel() {
    for (case, &(k, n, tau)) in [
        (2, 1, 0.01),
        (3, 127, 0.05),
        (4, 129, 0.01),
        (5, 1000, 0.02),
        (16, 4099, 0.01),
        (256, 300, 0.05),
    ]
    .iter()
    .enumerate()
    {
        check_case(k, n, tau, 40 + case as u64, None);
    }
}

#[test]
fn emulated_grid_stride_loops_match_the_cpu_kernel() {
    // On the GPU the grid-stride loops go round once N passes 65,535 x 128
    // (forward) or 1,024 x 128 (backward) weights; here 2 and 3 blocks
    // make them go round several times at a size the emulation runs fast.
    check_case(4, 1_001, 0.01, 7, Some(2));
    check_case(7, 2_000, 0.05, 8, Some(3));
}

#[test]
fn bad_launches_are_refused_before_the_kernels_run() {
    let err = emulated::soft_forward(&[0.1f32; 4], &[1.0; 5], 2).unwrap_err();
    assert!(err.contains("expected 3K = 6"), "{err}");
    let err = emulated::backward(&[0.1f32; 4], &[1.0; 6], &[1.0; 3], 2).unwrap_err();
    assert!(err.contains("3 upstream gradients for 4 weights"), "{err}");
    let err = emulated::soft_forward(&[0.1f32; 4], &[1.0; 3], 1).unwrap_err();
    assert!(err.contains("K = 1"), "{err}");
}
