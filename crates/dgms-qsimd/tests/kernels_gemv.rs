//! GEMV and QMatrix: every SIMD ISA against the scalar reference, and the
//! scalar reference against a plain f32 dot product.

mod kernels_util;

use dgms_qsimd::kernels::{gemv, gemv_f32, DenseMatrix, Isa, Layout, QMatrix};
use dgms_qsimd::QsimdError;
use dgms_test_support::rng::SplitMix64;
use kernels_util::{assert_close, qmatrix, simd_isas, KS};
use proptest::prelude::*;

/// Row and column counts: mostly small with ragged tails, sometimes large
/// enough for the threaded path (>= 64K weights).
fn shape() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        8 => (1usize..=70, 1usize..=300),
        1 => (1usize..=3, 1usize..=3),
        1 => (150usize..=400, 170usize..=700),
    ]
}

fn magnitudes(w: &QMatrix, x: &[f32]) -> Vec<f32> {
    (0..w.rows())
        .map(|r| {
            (0..w.cols())
                .map(|c| (w.weight(r, c).unwrap() * x[c]).abs())
                .sum()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn gemv_simd_matches_scalar((rows, cols) in shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, rows, cols, KS[ki]);
        let x = rng.unit_vec(cols);
        let mut want = vec![0.0; rows];
        gemv(Isa::Scalar, &w, &x, &mut want).unwrap();
        let mag = magnitudes(&w, &x);
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; rows];
            gemv(isa, &w, &x, &mut got).unwrap();
            assert_close(&format!("gemv {isa} {rows}x{cols} K={}", KS[ki]), &got, &want, &mag);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The scalar kernel is a plain dot product of the decoded weights.
    #[test]
    fn scalar_gemv_is_decoded_dot_product((rows, cols) in shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix(&mut rng, rows, cols, KS[ki]);
        let x = rng.unit_vec(cols);
        let mut y = vec![0.0; rows];
        gemv(Isa::Scalar, &w, &x, &mut y).unwrap();
        for r in 0..rows {
            let mut s = 0.0f32;
            for c in 0..cols {
                s += cb[idx[r * cols + c] as usize] * x[c];
            }
            prop_assert_eq!(y[r], s);
        }
    }

    /// The f32 baseline agrees with the quantized GEMV on decoded weights.
    #[test]
    fn gemv_f32_matches((rows, cols) in shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, rows, cols, KS[ki]);
        let dense = w.to_dense();
        let d = DenseMatrix::new(&dense, rows, cols).unwrap();
        let x = rng.unit_vec(cols);
        let mut want = vec![0.0; rows];
        gemv(Isa::Scalar, &w, &x, &mut want).unwrap();
        let mag = magnitudes(&w, &x);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; rows];
            gemv_f32(isa, &d, &x, &mut got).unwrap();
            assert_close(&format!("gemv_f32 {isa}"), &got, &want, &mag);
        }
    }

    /// The layout stores exactly the given indices.
    #[test]
    fn qmatrix_round_trips((rows, cols) in shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix(&mut rng, rows, cols, KS[ki]);
        prop_assert_eq!(w.to_indices(), idx);
        prop_assert_eq!(w.codebook(), &cb[..]);
        prop_assert_eq!(w.layout(), if KS[ki] <= 16 { Layout::Nibble } else { Layout::Byte });
        prop_assert_eq!(w.index(rows, 0), None);
        prop_assert_eq!(w.index(0, cols), None);
    }
}

#[test]
fn gemv_known_values() {
    // Entry 0 is 0.0; a 17-entry table forces the 8-bit layout.
    let mut cb: Vec<f32> = (0..17).map(|i| i as f32 * 0.5).collect();
    cb[0] = 0.0;
    for k in [3usize, 17] {
        let idx: Vec<u8> = vec![0, 1, 2, 2, 1, 0];
        let w = QMatrix::new(2, 3, &idx, &cb[..k]).unwrap();
        for isa in Isa::available() {
            let mut y = [0.0f32; 2];
            gemv(isa, &w, &[1.0, 2.0, 3.0], &mut y).unwrap();
            assert_eq!(y, [0.5 * 2.0 + 1.0 * 3.0, 1.0 + 0.5 * 2.0], "{isa} K={k}");
        }
    }
}

#[test]
fn qmatrix_rejects_bad_input() {
    let cb = [0.0f32, 1.0, -1.0];
    assert!(matches!(
        QMatrix::new(2, 3, &[0; 5], &cb),
        Err(QsimdError::ShapeMismatch {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        QMatrix::new(0, 3, &[], &cb),
        Err(QsimdError::EmptyMatrix { rows: 0, cols: 3 })
    ));
    assert!(matches!(
        QMatrix::new(2, 2, &[0, 1, 3, 0], &cb),
        Err(QsimdError::InvalidIndex {
            row: 1,
            col: 0,
            index: 3,
            k: 3
        })
    ));
    assert!(matches!(
        QMatrix::new(1, 1, &[0], &[]),
        Err(QsimdError::InvalidCodebook { .. })
    ));
    assert!(matches!(
        QMatrix::new(1, 1, &[0], &vec![0.0; 257]),
        Err(QsimdError::InvalidCodebook { .. })
    ));
    let err = QMatrix::new(1, 1, &[0], &[0.0, f32::NAN]).unwrap_err();
    assert!(err.to_string().contains("entry 1"), "{err}");
}

#[test]
fn gemv_rejects_bad_shapes() {
    let w = QMatrix::new(4, 5, &[1; 20], &[0.0, 1.0]).unwrap();
    let mut y = vec![0.0; 4];
    let err = gemv(Isa::Scalar, &w, &[0.0; 4], &mut y).unwrap_err();
    assert!(
        matches!(
            err,
            QsimdError::ShapeMismatch {
                expected: 5,
                got: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("x (cols)"), "{err}");
    let err = gemv(Isa::Scalar, &w, &[0.0; 5], &mut y[..3]).unwrap_err();
    assert!(err.to_string().contains("y (rows)"), "{err}");
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let err = gemv(isa, &w, &[0.0; 5], &mut y).unwrap_err();
        assert!(matches!(err, QsimdError::IsaUnavailable { .. }), "{err}");
        assert!(err.to_string().contains(isa.name()), "{err}");
    }
}
