//! GEMM with fused epilogues: every SIMD ISA against the scalar reference.

mod kernels_util;

use dgms_qsimd::kernels::{gemm, gemm_f32, DenseMatrix, Epilogue, Isa, QMatrix};
use dgms_qsimd::QsimdError;
use dgms_test_support::rng::SplitMix64;
use kernels_util::{assert_close, qmatrix, simd_isas, EpiParts, KS};
use proptest::prelude::*;

/// (rows, cols, n): ragged tails everywhere; cols beyond 256 cross a K
/// block; the last arm is large enough for the threaded path.
fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        10 => (1usize..=40, 1usize..=300, 1usize..=80),
        2 => (1usize..=3, 1usize..=9, 1usize..=3),
        1 => (60usize..=140, 200usize..=600, 50usize..=200),
    ]
}

/// Bound of |output| per element: epilogue over sum_k |w| |x|.
fn magnitudes(w: &QMatrix, x: &[f32], n: usize, epi: &EpiParts) -> Vec<f32> {
    let mut out = vec![0.0f32; w.rows() * n];
    for r in 0..w.rows() {
        for k in 0..w.cols() {
            let wk = w.weight(r, k).unwrap().abs();
            for j in 0..n {
                out[r * n + j] += wk * x[k * n + j].abs();
            }
        }
        for j in 0..n {
            out[r * n + j] = epi.magnitude(r, j, n, out[r * n + j]);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn gemm_simd_matches_scalar(
        (rows, cols, n) in shape(),
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, rows, cols, KS[ki]);
        let x = rng.unit_vec(cols * n);
        let parts = EpiParts::new(&mut rng, mask, rows, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; rows * n];
        gemm(Isa::Scalar, &w, &x, n, &mut want, &epi).unwrap();
        let mag = magnitudes(&w, &x, n, &parts);
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; rows * n];
            gemm(isa, &w, &x, n, &mut got, &epi).unwrap();
            let what = format!("gemm {isa} {rows}x{cols}x{n} K={} mask={mask}", KS[ki]);
            assert_close(&what, &got, &want, &mag);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The f32 baseline on decoded weights gives the same result.
    #[test]
    fn gemm_f32_matches(
        (rows, cols, n) in shape(),
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, rows, cols, KS[ki]);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        let x = rng.unit_vec(cols * n);
        let parts = EpiParts::new(&mut rng, mask, rows, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; rows * n];
        gemm(Isa::Scalar, &w, &x, n, &mut want, &epi).unwrap();
        let mag = magnitudes(&w, &x, n, &parts);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; rows * n];
            gemm_f32(isa, &d, &x, n, &mut got, &epi).unwrap();
            assert_close(&format!("gemm_f32 {isa}"), &got, &want, &mag);
        }
    }
}

#[test]
fn scalar_gemm_is_the_definition() {
    let mut rng = SplitMix64::new(7);
    let (rows, cols, n) = (5, 13, 7);
    let (w, idx, cb) = qmatrix(&mut rng, rows, cols, 16);
    let x = rng.unit_vec(cols * n);
    let parts = EpiParts::new(&mut rng, 15, rows, n);
    let mut y = vec![0.0; rows * n];
    gemm(Isa::Scalar, &w, &x, n, &mut y, &parts.epilogue()).unwrap();
    for r in 0..rows {
        for j in 0..n {
            let mut s = 0.0f32;
            for k in 0..cols {
                s += cb[idx[r * cols + k] as usize] * x[k * n + j];
            }
            let v = s * parts.scale.as_ref().unwrap()[r]
                + parts.shift.as_ref().unwrap()[r]
                + parts.residual.as_ref().unwrap()[r * n + j];
            assert_eq!(y[r * n + j], v.max(0.0));
        }
    }
}

#[test]
fn gemm_n_zero_is_a_no_op() {
    let w = QMatrix::new(3, 4, &[1; 12], &[0.0, 1.0]).unwrap();
    for isa in Isa::available() {
        gemm(isa, &w, &[], 0, &mut [], &Epilogue::NONE).unwrap();
    }
}

#[test]
fn gemm_rejects_bad_shapes() {
    let w = QMatrix::new(3, 4, &[1; 12], &[0.0, 1.0]).unwrap();
    let x = vec![1.0; 4 * 5];
    let mut y = vec![0.0; 3 * 5];
    let e = gemm(Isa::Scalar, &w, &x[1..], 5, &mut y, &Epilogue::NONE).unwrap_err();
    assert!(e.to_string().contains("x (cols * n)"), "{e}");
    let e = gemm(Isa::Scalar, &w, &x, 5, &mut y[1..], &Epilogue::NONE).unwrap_err();
    assert!(e.to_string().contains("y (rows * n)"), "{e}");
    let short = [1.0f32; 2];
    let bad = [
        Epilogue {
            scale: Some(&short),
            ..Epilogue::NONE
        },
        Epilogue {
            shift: Some(&short),
            ..Epilogue::NONE
        },
        Epilogue {
            residual: Some(&short),
            ..Epilogue::NONE
        },
    ];
    for (epi, what) in bad.iter().zip(["scale", "shift", "residual"]) {
        for isa in Isa::available() {
            let e = gemm(isa, &w, &x, 5, &mut y, epi).unwrap_err();
            assert!(matches!(e, QsimdError::ShapeMismatch { .. }), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }
}
