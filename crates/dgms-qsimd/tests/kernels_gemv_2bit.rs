//! The 2-bit table-lookup GEMV and QMatrix2: every SIMD ISA against the
//! scalar kernel, every ISA against an f64 reference of c[idx] x within
//! the bound the kernel documents, and the packing round trip.

mod kernels_util;

use dgms_qsimd::kernels::{gemv, gemv_2bit, Isa, QMatrix, QMatrix2};
use dgms_qsimd::QsimdError;
use dgms_test_support::rng::SplitMix64;
use kernels_util::{assert_close, codebook, simd_isas};
use proptest::prelude::*;

/// Row and column counts: ragged against the 16-row groups, the 16-column
/// lines and the 512-column blocks (1 row, 1 column, odd column counts),
/// sometimes large enough for the threaded path (>= 64K weights) and
/// several column blocks.
fn shape() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        8 => (1usize..=70, 1usize..=300),
        1 => (1usize..=3, 1usize..=3),
        1 => (1usize..=2, 1usize..=1100),
        1 => (150usize..=400, 170usize..=1300),
    ]
}

/// A random rows x cols matrix over a K-entry codebook (K <= 4), with the
/// indices and the codebook.
fn qmatrix2(
    rng: &mut SplitMix64,
    rows: usize,
    cols: usize,
    k: usize,
) -> (QMatrix2, Vec<u8>, Vec<f32>) {
    let cb = codebook(rng, k);
    let idx: Vec<u8> = (0..rows * cols).map(|_| rng.below(k) as u8).collect();
    let w = QMatrix2::new(rows, cols, &idx, &cb).expect("valid matrix");
    (w, idx, cb)
}

/// Per row: the f64 sum of c[idx] x and the sum of |c[idx] x|.
fn reference(idx: &[u8], cb: &[f32], x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    idx.chunks_exact(x.len())
        .map(|row| {
            row.iter().zip(x).fold((0.0, 0.0), |(s, m), (&i, &xc)| {
                let t = f64::from(cb[usize::from(i)]) * f64::from(xc);
                (s + t, m + t.abs())
            })
        })
        .unzip()
}

/// gamma(P + 1) with P the padded pair count: the module docs' bound.
fn gamma(cols: usize) -> f64 {
    let n = (cols.div_ceil(16) * 8 + 1) as f64;
    let u = f64::from(f32::EPSILON) / 2.0;
    n * u / (1.0 - n * u)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn gemv_2bit_simd_matches_scalar((rows, cols) in shape(), k in 1usize..=4, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix2(&mut rng, rows, cols, k);
        let x = rng.unit_vec(cols);
        let mut want = vec![0.0; rows];
        gemv_2bit(Isa::Scalar, &w, &x, &mut want).unwrap();
        let mag: Vec<f32> = reference(&idx, &cb, &x).1.into_iter().map(|m| m as f32).collect();
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; rows];
            gemv_2bit(isa, &w, &x, &mut got).unwrap();
            assert_close(&format!("gemv_2bit {isa} {rows}x{cols} K={k}"), &got, &want, &mag);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Every ISA (the scalar kernel included) is within gamma(P + 1) M of
    /// the exact sum (f64), as the kernel's docs state.
    #[test]
    fn gemv_2bit_within_bound_of_f64((rows, cols) in shape(), k in 1usize..=4, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix2(&mut rng, rows, cols, k);
        let x = rng.unit_vec(cols);
        let (exact, mag) = reference(&idx, &cb, &x);
        let g = gamma(cols);
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; rows];
            gemv_2bit(isa, &w, &x, &mut y).unwrap();
            for r in 0..rows {
                let err = (f64::from(y[r]) - exact[r]).abs();
                prop_assert!(
                    err <= g * mag[r],
                    "{} {}x{} K={} row {}: |{} - {}| = {:e} > {:e}",
                    isa, rows, cols, k, r, y[r], exact[r], err, g * mag[r]
                );
            }
        }
    }

    /// The layout stores exactly the given indices and codebook.
    #[test]
    fn qmatrix2_round_trips((rows, cols) in shape(), k in 1usize..=4, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix2(&mut rng, rows, cols, k);
        prop_assert_eq!(w.to_indices(), idx.clone());
        prop_assert_eq!(w.codebook(), &cb[..]);
        prop_assert_eq!(w.k(), k);
        prop_assert_eq!((w.rows(), w.cols()), (rows, cols));
        let dense: Vec<f32> = idx.iter().map(|&i| cb[usize::from(i)]).collect();
        prop_assert_eq!(w.to_dense(), dense);
        prop_assert_eq!(w.index(rows, 0), None);
        prop_assert_eq!(w.index(0, cols), None);
    }

    /// The 2-bit kernel and the 4-bit exact GEMV compute the same function.
    #[test]
    fn gemv_2bit_matches_4bit_gemv((rows, cols) in shape(), k in 1usize..=4, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, idx, cb) = qmatrix2(&mut rng, rows, cols, k);
        let q = QMatrix::new(rows, cols, &idx, &cb).unwrap();
        let x = rng.unit_vec(cols);
        let mag: Vec<f32> = reference(&idx, &cb, &x).1.into_iter().map(|m| m as f32).collect();
        let isa = Isa::detect();
        let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
        gemv_2bit(isa, &w, &x, &mut a).unwrap();
        gemv(isa, &q, &x, &mut b).unwrap();
        assert_close(&format!("2-bit vs 4-bit {isa}"), &a, &b, &mag);
    }
}

#[test]
fn gemv_2bit_known_values() {
    let cb = [0.0f32, 0.5, -1.0, 2.0];
    // Rows: [0 1 2 3 1], [3 3 0 2 2]; x = 1..=5 (odd column count).
    let idx = [0u8, 1, 2, 3, 1, 3, 3, 0, 2, 2];
    let x = [1.0f32, 2.0, 3.0, 4.0, 5.0];
    let want = [1.0 - 3.0 + 8.0 + 2.5, 2.0 + 4.0 - 4.0 - 5.0];
    let w = QMatrix2::new(2, 5, &idx, &cb).unwrap();
    for isa in Isa::available() {
        let mut y = [f32::NAN; 2];
        gemv_2bit(isa, &w, &x, &mut y).unwrap();
        assert_eq!(y, want, "{isa}");
    }
}

#[test]
fn qmatrix2_rejects_bad_input() {
    let cb = [0.0f32, 1.0, -1.0];
    assert!(matches!(
        QMatrix2::new(2, 3, &[0; 5], &cb),
        Err(QsimdError::ShapeMismatch {
            expected: 6,
            got: 5,
            ..
        })
    ));
    assert!(matches!(
        QMatrix2::new(0, 3, &[], &cb),
        Err(QsimdError::EmptyMatrix { rows: 0, cols: 3 })
    ));
    assert!(matches!(
        QMatrix2::new(2, 2, &[0, 1, 3, 0], &cb),
        Err(QsimdError::InvalidIndex {
            row: 1,
            col: 0,
            index: 3,
            k: 3
        })
    ));
    assert!(matches!(
        QMatrix2::new(1, 1, &[0], &[]),
        Err(QsimdError::InvalidCodebook { .. })
    ));
    // K = 5 fits QMatrix, not the 2-bit layout, whatever the indices.
    let err = QMatrix2::new(1, 2, &[0, 1], &[0.0, 1.0, 2.0, 3.0, 4.0]).unwrap_err();
    assert!(matches!(err, QsimdError::InvalidCodebook { .. }), "{err}");
    assert!(err.to_string().contains("K = 5"), "{err}");
    assert!(err.to_string().contains("at most 4"), "{err}");
    let err = QMatrix2::new(1, 1, &[0], &[0.0, f32::NAN]).unwrap_err();
    assert!(matches!(err, QsimdError::InvalidCodebook { .. }), "{err}");
    assert!(err.to_string().contains("entry 1"), "{err}");
    let err = QMatrix2::new(1, 1, &[0], &[f32::INFINITY]).unwrap_err();
    assert!(err.to_string().contains("entry 0"), "{err}");
}

#[test]
fn gemv_2bit_rejects_bad_shapes() {
    let w = QMatrix2::new(4, 5, &[1; 20], &[0.0, 1.0]).unwrap();
    let mut y = vec![0.0; 4];
    let err = gemv_2bit(Isa::Scalar, &w, &[0.0; 4], &mut y).unwrap_err();
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
    assert!(err.to_string().contains("gemv_2bit"), "{err}");
    assert!(err.to_string().contains("x (cols)"), "{err}");
    let err = gemv_2bit(Isa::Scalar, &w, &[0.0; 5], &mut y[..3]).unwrap_err();
    assert!(err.to_string().contains("y (rows)"), "{err}");
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let err = gemv_2bit(isa, &w, &[0.0; 5], &mut y).unwrap_err();
        assert!(matches!(err, QsimdError::IsaUnavailable { .. }), "{err}");
        assert!(err.to_string().contains(isa.name()), "{err}");
    }
}
