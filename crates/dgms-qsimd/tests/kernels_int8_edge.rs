//! Edge cases of the int8 path: the extreme values that would saturate
//! `vpmaddubsw` or overflow i32 if mishandled, zero and non-finite
//! activations, and the typed errors.

mod kernels_util;

use dgms_qsimd::kernels::{
    conv2d_i8, gemm_i8, gemv_i8, ConvGeometry, Epilogue, Isa, QMatrixI8, MAX_COLS_I8,
};
use dgms_qsimd::QsimdError;
use dgms_test_support::rng::SplitMix64;
use kernels_util::{qmatrix, simd_isas};

fn int8(rng: &mut SplitMix64, rows: usize, cols: usize, k: usize) -> QMatrixI8 {
    let (w, _, _) = qmatrix(rng, rows, cols, k);
    QMatrixI8::from_qmatrix(&w).expect("valid matrix")
}

fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    let same = got
        .iter()
        .zip(want)
        .all(|(g, w)| g.to_bits() == w.to_bits());
    assert!(
        same && got.len() == want.len(),
        "{what}: {got:?} != {want:?}"
    );
}

/// Every product at +-127 * +-127 with signs chosen so that adjacent pairs
/// reach -+32258 (the `vpmaddubsw` limit is 32767), over the most columns
/// allowed: accumulators up to 131072 * 16129, near i32::MAX.
#[test]
fn extreme_values_do_not_saturate() {
    for (rows, cols) in [(17, 40), (16, MAX_COLS_I8)] {
        // x alternates +-3; rows: w = +1, -1, sign(x) (pairs +32258),
        // -sign(x) (pairs -32258).
        let idx: Vec<u8> = (0..rows * cols)
            .map(|i| match (i / cols) % 4 {
                0 => 1,
                1 => 2,
                2 => (1 + (i % cols) % 2) as u8,
                _ => (2 - (i % cols) % 2) as u8,
            })
            .collect();
        let w8 = QMatrixI8::new(rows, cols, &idx, &[0.0, 1.0, -1.0]).unwrap();
        let x: Vec<f32> = (0..cols)
            .map(|c| if c % 2 == 0 { 3.0 } else { -3.0 })
            .collect();
        let mut want = vec![0.0; rows];
        gemv_i8(Isa::Scalar, &w8, &x, &mut want).unwrap();
        let s = w8.weight_scale() * (3.0 / 127.0);
        let full = cols as f32 * 127.0 * 127.0 * s;
        assert_eq!(want[2], full, "row 2 (w = x signs) sums every product");
        for isa in simd_isas() {
            let mut got = vec![0.0; rows];
            gemv_i8(isa, &w8, &x, &mut got).unwrap();
            assert_same(&format!("gemv_i8 {isa} extremes {cols}"), &got, &want);
            let n = 3;
            let xm: Vec<f32> = x.iter().flat_map(|&v| [v, -v, v * 0.5]).collect();
            let (mut g, mut r) = (vec![0.0; rows * n], vec![0.0; rows * n]);
            gemm_i8(Isa::Scalar, &w8, &xm, n, &mut r, &Epilogue::NONE).unwrap();
            gemm_i8(isa, &w8, &xm, n, &mut g, &Epilogue::NONE).unwrap();
            assert_same(&format!("gemm_i8 {isa} extremes {cols}"), &g, &r);
            assert_eq!(r[2 * n], full);
            // No negative activation (the unsigned path): row 0 has every
            // pair at +32258, row 1 at -32258.
            let xp: Vec<f32> = x.iter().flat_map(|&v| [v.abs(), 3.0]).collect();
            let (mut g, mut r) = (vec![0.0; rows * 2], vec![0.0; rows * 2]);
            gemm_i8(Isa::Scalar, &w8, &xp, 2, &mut r, &Epilogue::NONE).unwrap();
            gemm_i8(isa, &w8, &xp, 2, &mut g, &Epilogue::NONE).unwrap();
            assert_same(&format!("gemm_i8 {isa} extremes >= 0 {cols}"), &g, &r);
            assert_eq!((r[0], r[2]), (full, -full));
            let xv = vec![3.0; cols];
            let (mut g, mut r) = (vec![0.0; rows], vec![0.0; rows]);
            gemv_i8(Isa::Scalar, &w8, &xv, &mut r).unwrap();
            gemv_i8(isa, &w8, &xv, &mut g).unwrap();
            assert_same(&format!("gemv_i8 {isa} extremes >= 0 {cols}"), &g, &r);
            assert_eq!((r[0], r[1]), (full, -full));
        }
    }
}

/// Zero columns give exactly 0 (then the epilogue); a NaN or infinity
/// makes its whole column (GEMM) or output (GEMV) NaN, and only that.
#[test]
fn zero_and_non_finite_activations() {
    let mut rng = SplitMix64::new(7);
    let (rows, cols, n) = (21, 37, 5);
    let w8 = int8(&mut rng, rows, cols, 16);
    let mut x = rng.unit_vec(cols * n);
    for k in 0..cols {
        x[k * n] = 0.0;
        x[k * n + 2] = if k == 3 { f32::NAN } else { 1.0 };
    }
    x[10 * n + 4] = f32::INFINITY;
    let shift = rng.unit_vec(rows);
    let epi = Epilogue {
        shift: Some(&shift),
        ..Epilogue::NONE
    };
    for isa in Isa::available() {
        let mut y = vec![0.0; rows * n];
        gemm_i8(isa, &w8, &x, n, &mut y, &epi).unwrap();
        for r in 0..rows {
            assert_eq!(y[r * n], shift[r], "{isa}: zero column");
            assert!(
                y[r * n + 1].is_finite() && y[r * n + 3].is_finite(),
                "{isa}"
            );
            assert!(y[r * n + 2].is_nan() && y[r * n + 4].is_nan(), "{isa}");
        }
        let mut v = vec![1.0; rows];
        gemv_i8(isa, &w8, &vec![0.0; cols], &mut v).unwrap();
        assert!(v.iter().all(|&e| e == 0.0), "{isa}: zero vector");
        let mut xv = rng.unit_vec(cols);
        xv[5] = f32::NEG_INFINITY;
        gemv_i8(isa, &w8, &xv, &mut v).unwrap();
        assert!(v.iter().all(|e| e.is_nan()), "{isa}: infinite input");
    }
    // Convolution: NaN exactly at the output pixels whose window sees the
    // bad input pixel, in every ISA (the SIMD ones quantize from the image).
    let g = ConvGeometry {
        c: 5,
        h: 7,
        w: 6,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let wc = int8(&mut rng, 3, g.patch_len(), 5);
    for bad in [f32::NAN, f32::INFINITY] {
        let mut input: Vec<f32> = rng
            .unit_vec(g.input_len())
            .iter()
            .map(|v| v.abs())
            .collect();
        input[(2 * g.h + 3) * g.w + 4] = bad;
        let n = g.out_pixels();
        let mut want = vec![0.0; 3 * n];
        conv2d_i8(Isa::Scalar, &wc, &input, &g, &mut want, &Epilogue::NONE).unwrap();
        for (j, v) in want[..n].iter().enumerate() {
            let (oy, ox) = (j / g.w, j % g.w);
            let hit = oy.abs_diff(3) <= 1 && ox.abs_diff(4) <= 1;
            assert_eq!(v.is_nan(), hit, "pixel {j}");
        }
        for isa in simd_isas() {
            let mut got = vec![0.0; 3 * n];
            conv2d_i8(isa, &wc, &input, &g, &mut got, &Epilogue::NONE).unwrap();
            assert_same(&format!("conv2d_i8 {isa} with {bad}"), &got, &want);
        }
    }
}

#[test]
fn constructors_reject_bad_input() {
    let err = |r: Result<QMatrixI8, QsimdError>| r.err().map(|e| e.to_string());
    assert!(matches!(
        QMatrixI8::new(0, 3, &[], &[0.0]),
        Err(QsimdError::EmptyMatrix { .. })
    ));
    assert!(matches!(
        QMatrixI8::new(2, 2, &[0, 1, 0], &[0.0, 1.0]),
        Err(QsimdError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        QMatrixI8::new(1, 2, &[0, 2], &[0.0, 1.0]),
        Err(QsimdError::InvalidIndex { index: 2, .. })
    ));
    assert!(matches!(
        QMatrixI8::new(1, 1, &[0], &[f32::NAN]),
        Err(QsimdError::InvalidCodebook { .. })
    ));
    assert!(matches!(
        QMatrixI8::new(1, 1, &[0], &[]),
        Err(QsimdError::InvalidCodebook { .. })
    ));
    let wide = err(QMatrixI8::new(
        1,
        MAX_COLS_I8 + 1,
        &[0; MAX_COLS_I8 + 1],
        &[0.0],
    ));
    assert!(wide.unwrap().contains("131073 columns"));
    // An all-zero codebook: scale 0, every output 0.
    let z = QMatrixI8::new(2, 2, &[0, 1, 1, 0], &[0.0, 0.0]).unwrap();
    assert_eq!(z.weight_scale(), 0.0);
    let mut y = [1.0; 2];
    gemv_i8(Isa::detect(), &z, &[1.0, 2.0], &mut y).unwrap();
    assert_eq!(y, [0.0, 0.0]);
}

#[test]
fn kernels_reject_bad_shapes_and_isas() {
    let mut rng = SplitMix64::new(3);
    let w8 = int8(&mut rng, 4, 6, 5);
    let shape = |r: dgms_qsimd::Result<()>| matches!(r, Err(QsimdError::ShapeMismatch { .. }));
    for isa in Isa::available() {
        assert!(shape(gemv_i8(isa, &w8, &[0.0; 5], &mut [0.0; 4])));
        assert!(shape(gemv_i8(isa, &w8, &[0.0; 6], &mut [0.0; 5])));
        let mut y = vec![0.0; 8];
        assert!(shape(gemm_i8(
            isa,
            &w8,
            &[0.0; 11],
            2,
            &mut y,
            &Epilogue::NONE
        )));
        assert!(shape(gemm_i8(
            isa,
            &w8,
            &[0.0; 12],
            2,
            &mut y[..7],
            &Epilogue::NONE
        )));
        let bad = Epilogue {
            scale: Some(&[1.0; 3]),
            ..Epilogue::NONE
        };
        assert!(shape(gemm_i8(isa, &w8, &[0.0; 12], 2, &mut y, &bad)));
        assert!(gemm_i8(isa, &w8, &[], 0, &mut [], &Epilogue::NONE).is_ok());
        let g = ConvGeometry {
            c: 2,
            h: 3,
            w: 3,
            kh: 1,
            kw: 3,
            stride: 1,
            pad: 0,
        };
        let mut out = vec![0.0; 4 * 3];
        assert!(conv2d_i8(isa, &w8, &[0.0; 18], &g, &mut out, &Epilogue::NONE).is_ok());
        assert!(shape(conv2d_i8(
            isa,
            &w8,
            &[0.0; 17],
            &g,
            &mut out,
            &Epilogue::NONE
        )));
        assert!(shape(conv2d_i8(
            isa,
            &w8,
            &[0.0; 18],
            &g,
            &mut out[..11],
            &Epilogue::NONE
        )));
        let g3 = ConvGeometry { kh: 3, ..g };
        assert!(shape(conv2d_i8(
            isa,
            &w8,
            &[0.0; 18],
            &g3,
            &mut out,
            &Epilogue::NONE
        )));
        let g0 = ConvGeometry { stride: 0, ..g };
        assert!(matches!(
            conv2d_i8(isa, &w8, &[0.0; 18], &g0, &mut out, &Epilogue::NONE),
            Err(QsimdError::InvalidGeometry { .. })
        ));
    }
    for isa in Isa::ALL.into_iter().filter(|i| !i.is_available()) {
        let un = |r: dgms_qsimd::Result<()>| matches!(r, Err(QsimdError::IsaUnavailable { .. }));
        let mut y = vec![0.0; 4];
        assert!(un(gemv_i8(isa, &w8, &[0.0; 6], &mut y)));
        assert!(un(gemm_i8(isa, &w8, &[0.0; 6], 1, &mut y, &Epilogue::NONE)));
        let g = ConvGeometry {
            c: 2,
            h: 1,
            w: 3,
            kh: 1,
            kw: 3,
            stride: 1,
            pad: 0,
        };
        assert!(un(conv2d_i8(
            isa,
            &w8,
            &[0.0; 6],
            &g,
            &mut y,
            &Epilogue::NONE
        )));
    }
}
