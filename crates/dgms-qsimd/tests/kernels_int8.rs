//! The int8 path: every SIMD ISA against the scalar int8 reference (equal
//! bit for bit: same i32 accumulators, shared float stages), and the int8
//! results against the exact f32 kernels within the bound derived from
//! the two quantization scales. Edge cases: `kernels_int8_edge.rs`.

mod kernels_util;

use dgms_qsimd::kernels::{
    conv2d, conv2d_i8, gemm, gemm_i8, gemv, gemv_i8, im2col, ConvGeometry, Isa, Layout, QMatrix,
    QMatrixI8,
};
use dgms_test_support::rng::SplitMix64;
use kernels_util::{qmatrix, simd_isas, EpiParts};
use proptest::prelude::*;

/// Codebook sizes: 1-, 2-bit, odd, the 4-bit / 8-bit boundary, 8-bit.
const KS: [usize; 7] = [2, 4, 5, 16, 17, 200, 256];

/// Both quantizers round to nearest: |v - s q| <= s / 2, plus a few ulp
/// of v / s from computing 1 / s and s separately.
const HALF: f32 = 0.5001;

/// The exact and int8 matrices of one random codebook matrix; one time in
/// four entry 0 is not 0.0 (allowed, though DGMS has it 0: padded columns
/// of the 4-bit layout decode to it).
fn both(rng: &mut SplitMix64, rows: usize, cols: usize, k: usize) -> (QMatrix, QMatrixI8) {
    let (mut w, idx, mut cb) = qmatrix(rng, rows, cols, k);
    if rng.below(4) == 0 {
        cb[0] = rng.unit() + 1.5;
        w = QMatrix::new(rows, cols, &idx, &cb).expect("valid matrix");
    }
    let w8 = QMatrixI8::from_qmatrix(&w).expect("valid matrix");
    (w, w8)
}

/// Activations with varied ranges (per column scales must adapt) and
/// some exact zeros; a third of the time none negative (as after a ReLU:
/// the kernels' unsigned fast path).
fn activations(rng: &mut SplitMix64, len: usize) -> Vec<f32> {
    let amp = [1.0f32, 1e-3, 50.0][rng.below(3)];
    let relu = rng.below(3) == 0;
    (0..len)
        .map(|_| match rng.below(8) {
            0 => 0.0,
            1 => rng.unit() * amp * 20.0,
            _ => rng.unit() * amp,
        })
        .map(|v| if relu { v.abs() } else { v })
        .collect()
}

/// Per output (r, j) of W X (X cols x n): the bound on |y_i8 - y_f32|
/// after the epilogue. Before it: sum_k |w| e_x + |x| e_w + e_w e_x with
/// e = HALF * scale, plus float rounding of both results; the epilogue
/// scales that by |scale| and adds its own rounding.
fn bounds(w: &QMatrix, w8: &QMatrixI8, x: &[f32], n: usize, epi: &EpiParts) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let ew = HALF * w8.weight_scale();
    let mut out = vec![0.0f32; rows * n];
    for j in 0..n {
        let ex = HALF * (0..cols).fold(0.0f32, |m, k| m.max(x[k * n + j].abs())) / 127.0;
        for r in 0..rows {
            let (mut quant, mut mag) = (0.0f32, 0.0f32);
            for k in 0..cols {
                let (a, b) = (w.weight(r, k).unwrap().abs(), x[k * n + j].abs());
                quant += a * ex + b * ew + ew * ex;
                mag += a * b;
            }
            let s = epi.scale.as_ref().map_or(1.0, |s| s[r].abs());
            let before = quant + 1e-5 * (mag + quant) + 1e-30;
            out[r * n + j] = s * before + 1e-6 * epi.magnitude(r, j, n, mag + quant);
        }
    }
    out
}

fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        assert!(
            (g - w).abs() <= b,
            "{what}: element {i}: int8 {g}, f32 {w}, |diff| {} > bound {b}",
            (g - w).abs()
        );
    }
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

/// (rows, cols): ragged tails; the last arm is large enough for threads.
fn gemv_shape() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        8 => (1usize..=70, 1usize..=300),
        1 => (1usize..=3, 1usize..=9),
        1 => (150usize..=400, 170usize..=700),
    ]
}

/// (rows, cols, n): ragged tails everywhere; cols beyond 512 cross a k
/// slice; the last arm takes the threaded path.
fn gemm_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        10 => (1usize..=40, 1usize..=300, 1usize..=80),
        2 => (1usize..=3, 1usize..=9, 1usize..=3),
        1 => (60usize..=140, 400usize..=1100, 20usize..=120),
    ]
}

fn geometry() -> impl Strategy<Value = ConvGeometry> {
    (
        1usize..=6,
        1usize..=11,
        1usize..=11,
        1usize..=3,
        1usize..=3,
        1usize..=3,
        0usize..=2,
    )
        .prop_map(|(c, h, w, kh, kw, stride, pad)| ConvGeometry {
            c,
            h,
            w,
            kh,
            kw,
            stride,
            pad,
        })
        .prop_filter("kernel fits", |g| g.validate("test").is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn gemv_i8_simd_matches_scalar((rows, cols) in gemv_shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (_, w8) = both(&mut rng, rows, cols, KS[ki]);
        let x = activations(&mut rng, cols);
        let mut want = vec![0.0; rows];
        gemv_i8(Isa::Scalar, &w8, &x, &mut want).unwrap();
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; rows];
            gemv_i8(isa, &w8, &x, &mut got).unwrap();
            assert_same(&format!("gemv_i8 {isa} {rows}x{cols} K={}", KS[ki]), &got, &want);
        }
    }

    #[test]
    fn gemm_i8_simd_matches_scalar(
        (rows, cols, n) in gemm_shape(),
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (_, w8) = both(&mut rng, rows, cols, KS[ki]);
        let x = activations(&mut rng, cols * n);
        let parts = EpiParts::new(&mut rng, mask, rows, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; rows * n];
        gemm_i8(Isa::Scalar, &w8, &x, n, &mut want, &epi).unwrap();
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; rows * n];
            gemm_i8(isa, &w8, &x, n, &mut got, &epi).unwrap();
            let what = format!("gemm_i8 {isa} {rows}x{cols}x{n} K={} mask={mask}", KS[ki]);
            assert_same(&what, &got, &want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_i8_simd_matches_scalar(
        g in geometry(),
        o in 1usize..=20,
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (_, w8) = both(&mut rng, o, g.patch_len(), KS[ki]);
        let input = activations(&mut rng, g.input_len());
        let n = g.out_pixels();
        let parts = EpiParts::new(&mut rng, mask, o, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; o * n];
        conv2d_i8(Isa::Scalar, &w8, &input, &g, &mut want, &epi).unwrap();
        for isa in simd_isas() {
            let mut got = vec![f32::NAN; o * n];
            conv2d_i8(isa, &w8, &input, &g, &mut got, &epi).unwrap();
            assert_same(&format!("conv2d_i8 {isa} {g:?} O={o}"), &got, &want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn gemv_i8_close_to_f32((rows, cols) in gemv_shape(), ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, w8) = both(&mut rng, rows, cols, KS[ki]);
        let x = activations(&mut rng, cols);
        let (mut exact, mut got) = (vec![0.0; rows], vec![0.0; rows]);
        gemv(Isa::detect(), &w, &x, &mut exact).unwrap();
        gemv_i8(Isa::detect(), &w8, &x, &mut got).unwrap();
        let b = bounds(&w, &w8, &x, 1, &EpiParts::new(&mut rng, 0, rows, 1));
        assert_within(&format!("gemv_i8 {rows}x{cols} K={}", KS[ki]), &got, &exact, &b);
    }

    #[test]
    fn gemm_i8_close_to_f32(
        (rows, cols, n) in gemm_shape(),
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (w, w8) = both(&mut rng, rows, cols, KS[ki]);
        let x = activations(&mut rng, cols * n);
        let parts = EpiParts::new(&mut rng, mask, rows, n);
        let epi = parts.epilogue();
        let (mut exact, mut got) = (vec![0.0; rows * n], vec![0.0; rows * n]);
        gemm(Isa::detect(), &w, &x, n, &mut exact, &epi).unwrap();
        gemm_i8(Isa::detect(), &w8, &x, n, &mut got, &epi).unwrap();
        let what = format!("gemm_i8 {rows}x{cols}x{n} K={} mask={mask}", KS[ki]);
        assert_within(&what, &got, &exact, &bounds(&w, &w8, &x, n, &parts));
    }

    #[test]
    fn conv2d_i8_close_to_f32(
        g in geometry(),
        o in 1usize..=20,
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (w, w8) = both(&mut rng, o, g.patch_len(), KS[ki]);
        let input = activations(&mut rng, g.input_len());
        let n = g.out_pixels();
        let parts = EpiParts::new(&mut rng, mask, o, n);
        let epi = parts.epilogue();
        let (mut exact, mut got) = (vec![0.0; o * n], vec![0.0; o * n]);
        conv2d(Isa::detect(), &w, &input, &g, &mut exact, &epi).unwrap();
        conv2d_i8(Isa::detect(), &w8, &input, &g, &mut got, &epi).unwrap();
        // Per-pixel scales are those of the im2col columns.
        let mut cols = vec![0.0; g.patch_len() * n];
        im2col(&input, &g, &mut cols).unwrap();
        let b = bounds(&w, &w8, &cols, n, &parts);
        assert_within(&format!("conv2d_i8 {g:?} O={o}"), &got, &exact, &b);
    }

    /// The int8 codebook: entry 0.0 stays 0, the largest magnitude maps
    /// to +-127, every entry within half a step; weights follow the indices.
    #[test]
    fn qmatrix_i8_codebook(rows in 1usize..=40, cols in 1usize..=40, ki in 0..KS.len(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let (w, w8) = both(&mut rng, rows, cols, KS[ki]);
        let (cb, q, s) = (w.codebook(), w8.codebook_i8(), w8.weight_scale());
        prop_assert_eq!(q.len(), cb.len());
        if cb[0] == 0.0 {
            prop_assert_eq!(q[0], 0);
        }
        prop_assert_eq!(q.iter().map(|v| v.unsigned_abs()).max(), Some(127));
        for (&c, &v) in cb.iter().zip(q) {
            prop_assert!((c - s * f32::from(v)).abs() <= HALF * s, "{c} -> {v} * {s}");
        }
        let want = if KS[ki] <= 16 { Layout::Nibble } else { Layout::Byte };
        prop_assert_eq!(w8.layout(), want);
        let idx = w.to_indices();
        let dense = w8.to_i8();
        for (i, (&ix, &v)) in idx.iter().zip(&dense).enumerate() {
            prop_assert_eq!(v, q[usize::from(ix)]);
            prop_assert_eq!(w8.weight_i8(i / cols, i % cols), Some(v));
        }
        prop_assert_eq!(w8.weight_i8(rows, 0), None);
        prop_assert_eq!(w8.weight_i8(0, cols), None);
    }
}
