//! im2col, conv2d and depthwise (3x3, 5x5 and other odd kernels) against
//! direct convolution; the depthwise oracle against a block-diagonal
//! conv2d.

mod kernels_util;

use dgms_qsimd::kernels::reference::{conv2d_direct, depthwise_direct};
use dgms_qsimd::kernels::{conv2d, depthwise_conv, im2col, ConvGeometry, Epilogue, Isa, QMatrix};
use dgms_qsimd::QsimdError;
use dgms_test_support::rng::SplitMix64;
use kernels_util::{assert_close, qmatrix, EpiParts, KS};
use proptest::prelude::*;

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

/// |out| bound: the same convolution over |w| and |input|, then the epilogue.
fn magnitudes(
    w: &QMatrix,
    input: &[f32],
    g: &ConvGeometry,
    depthwise: bool,
    parts: &EpiParts,
) -> Vec<f32> {
    let cb: Vec<f32> = w.codebook().iter().map(|v| v.abs()).collect();
    let aw = QMatrix::new(w.rows(), w.cols(), &w.to_indices(), &cb).unwrap();
    let ai: Vec<f32> = input.iter().map(|v| v.abs()).collect();
    let n = g.out_pixels();
    let mut m = vec![0.0; w.rows() * n];
    if depthwise {
        depthwise_direct(&aw, &ai, g, &mut m, &Epilogue::NONE).unwrap();
    } else {
        conv2d_direct(&aw, &ai, g, &mut m, &Epilogue::NONE).unwrap();
    }
    for r in 0..w.rows() {
        for j in 0..n {
            m[r * n + j] = parts.magnitude(r, j, n, m[r * n + j]);
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_matches_direct(
        g in geometry(),
        o in 1usize..=20,
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, o, g.patch_len(), KS[ki]);
        let input = rng.unit_vec(g.input_len());
        let n = g.out_pixels();
        let parts = EpiParts::new(&mut rng, mask, o, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; o * n];
        conv2d_direct(&w, &input, &g, &mut want, &epi).unwrap();
        let mag = magnitudes(&w, &input, &g, false, &parts);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; o * n];
            conv2d(isa, &w, &input, &g, &mut got, &epi).unwrap();
            assert_close(&format!("conv2d {isa} {g:?} O={o}"), &got, &want, &mag);
        }
    }

    /// Every ISA's depthwise kernel against the scalar oracle on odd
    /// shapes: 3x3 and 5x5 (each with its unrolled row loop), and 1x1 and
    /// 7x7 (the per-tap fallback), stride 1 and 2.
    #[test]
    fn depthwise_matches_direct(
        c in 1usize..=20,
        h in 1usize..=21,
        wd in 1usize..=21,
        stride in 1usize..=2,
        k in prop::sample::select(vec![1usize, 3, 5, 7]),
        ki in 0..KS.len(),
        mask in 0u8..16,
        seed: u64,
    ) {
        let g = ConvGeometry { c, h, w: wd, kh: k, kw: k, stride, pad: k / 2 };
        let mut rng = SplitMix64::new(seed);
        let (w, _, _) = qmatrix(&mut rng, c, k * k, KS[ki]);
        let input = rng.unit_vec(g.input_len());
        let n = g.out_pixels();
        let parts = EpiParts::new(&mut rng, mask, c, n);
        let epi = parts.epilogue();
        let mut want = vec![0.0; c * n];
        depthwise_direct(&w, &input, &g, &mut want, &epi).unwrap();
        let mag = magnitudes(&w, &input, &g, true, &parts);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; c * n];
            depthwise_conv(isa, &w, &input, &g, &mut got, &epi).unwrap();
            assert_close(&format!("depthwise {isa} {g:?}"), &got, &want, &mag);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The depthwise oracle is the dense conv of a block-diagonal weight
    /// (channel ch's taps in row ch's own columns, the codebook's extra
    /// zero elsewhere): an independent check of its kernel offsets.
    #[test]
    fn depthwise_oracle_is_a_block_diagonal_conv(
        c in 1usize..=5,
        h in 1usize..=13,
        wd in 1usize..=13,
        stride in 1usize..=2,
        k in prop::sample::select(vec![1usize, 3, 5, 7]),
        seed: u64,
    ) {
        let g = ConvGeometry { c, h, w: wd, kh: k, kw: k, stride, pad: k / 2 };
        let mut rng = SplitMix64::new(seed);
        let (w, idx, mut cb) = qmatrix(&mut rng, c, k * k, 16);
        cb.push(0.0);
        let kk = k * k;
        let dense_idx: Vec<u8> = (0..c * c * kk)
            .map(|i| {
                let (row, col) = (i / (c * kk), i % (c * kk));
                if col / kk == row { idx[row * kk + col % kk] } else { 16 }
            })
            .collect();
        let dense = QMatrix::new(c, c * kk, &dense_idx, &cb).unwrap();
        let input = rng.unit_vec(g.input_len());
        let n = g.out_pixels();
        let mut want = vec![0.0; c * n];
        conv2d_direct(&dense, &input, &g, &mut want, &Epilogue::NONE).unwrap();
        let mut got = vec![f32::NAN; c * n];
        depthwise_direct(&w, &input, &g, &mut got, &Epilogue::NONE).unwrap();
        // The same products summed in the same order (zeros add nothing).
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// im2col against its definition, element by element.
    #[test]
    fn im2col_is_the_definition(g in geometry(), seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let input = rng.unit_vec(g.input_len());
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut out = vec![f32::NAN; g.patch_len() * oh * ow];
        im2col(&input, &g, &mut out).unwrap();
        for ci in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            let inside = iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                            let v = if inside { input[(ci * g.h + iy as usize) * g.w + ix as usize] } else { 0.0 };
                            prop_assert_eq!(out[row * oh * ow + oy * ow + ox], v);
                        }
                    }
                }
            }
        }
    }
}

/// A ResNet-like shape big enough for threading and several K blocks.
#[test]
fn conv2d_resnet_block_shape() {
    let g = ConvGeometry {
        c: 32,
        h: 14,
        w: 14,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let mut rng = SplitMix64::new(3);
    for k in [4usize, 16, 256] {
        let (w, _, _) = qmatrix(&mut rng, 48, g.patch_len(), k);
        let input = rng.unit_vec(g.input_len());
        let n = g.out_pixels();
        let parts = EpiParts::new(&mut rng, 15, 48, n);
        let mut want = vec![0.0; 48 * n];
        conv2d_direct(&w, &input, &g, &mut want, &parts.epilogue()).unwrap();
        let mag = magnitudes(&w, &input, &g, false, &parts);
        for isa in Isa::available() {
            let mut got = vec![0.0; 48 * n];
            conv2d(isa, &w, &input, &g, &mut got, &parts.epilogue()).unwrap();
            assert_close(&format!("conv2d {isa} K={k}"), &got, &want, &mag);
        }
    }
}

#[test]
fn conv_rejects_bad_geometry() {
    let w = QMatrix::new(2, 9, &[1; 18], &[0.0, 1.0]).unwrap();
    let input = vec![0.0; 2 * 4 * 4];
    let mut out = vec![0.0; 2 * 16];
    let g = ConvGeometry {
        c: 2,
        h: 4,
        w: 4,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    // Depthwise needs C x 9 weights: this one is fine.
    depthwise_conv(Isa::Scalar, &w, &input, &g, &mut out, &Epilogue::NONE).unwrap();
    // A 5x5 kernel wants 25 columns, an even kernel or other padding is
    // refused.
    let e = depthwise_conv(
        Isa::Scalar,
        &w,
        &input,
        &ConvGeometry {
            kh: 5,
            kw: 5,
            pad: 2,
            ..g
        },
        &mut out,
        &Epilogue::NONE,
    )
    .unwrap_err();
    assert!(e.to_string().contains("weight columns (kh*kw)"), "{e}");
    for bad in [
        ConvGeometry {
            kh: 2,
            kw: 2,
            pad: 1,
            ..g
        },
        ConvGeometry {
            kh: 5,
            kw: 5,
            pad: 1,
            ..g
        },
        ConvGeometry {
            kh: 3,
            kw: 5,
            pad: 1,
            ..g
        },
    ] {
        let e =
            depthwise_conv(Isa::Scalar, &w, &input, &bad, &mut out, &Epilogue::NONE).unwrap_err();
        assert!(
            matches!(e, QsimdError::InvalidGeometry { .. }),
            "{bad:?}: {e}"
        );
    }
    let e = depthwise_conv(
        Isa::Scalar,
        &w,
        &input,
        &ConvGeometry { stride: 3, ..g },
        &mut out,
        &Epilogue::NONE,
    )
    .unwrap_err();
    assert!(matches!(e, QsimdError::InvalidGeometry { .. }), "{e}");
    // conv2d wants C*kh*kw = 18 columns.
    let e = conv2d(Isa::Scalar, &w, &input, &g, &mut out, &Epilogue::NONE).unwrap_err();
    assert!(e.to_string().contains("weight columns"), "{e}");
    let e = im2col(&input, &ConvGeometry { stride: 0, ..g }, &mut out).unwrap_err();
    assert!(matches!(e, QsimdError::InvalidGeometry { .. }), "{e}");
    let e = im2col(&input, &ConvGeometry { kh: 9, ..g }, &mut out).unwrap_err();
    assert!(e.to_string().contains("does not fit"), "{e}");
    let e = im2col(&input[1..], &g, &mut out).unwrap_err();
    assert!(e.to_string().contains("input"), "{e}");
}
