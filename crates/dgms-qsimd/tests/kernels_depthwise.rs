//! The depthwise 3x3 kernels of every ISA (AVX2 / AVX-512 intrinsics,
//! the autovectorised loop elsewhere) against the scalar oracle on fixed
//! odd shapes: tiny maps (1x1, 2x3, 1xW, Hx1), widths on both sides of
//! the vector widths 8 and 16, stride 2 on odd and even sizes, odd
//! channel counts, MobileNetV2's shapes, and every output stage (scale,
//! shift, residual, ReLU, ReLU6) fused. The proptest in `kernels_conv.rs`
//! covers random shapes up to 21 x 21.

mod kernels_util;

use dgms_qsimd::kernels::reference::depthwise_direct;
use dgms_qsimd::kernels::{depthwise_conv, Activation, ConvGeometry, Epilogue, Isa, QMatrix};
use dgms_test_support::rng::SplitMix64;
use kernels_util::{assert_close, qmatrix};

/// (channels, h, w, stride).
const SHAPES: [(usize, usize, usize, usize); 22] = [
    (1, 1, 1, 1),
    (1, 1, 1, 2),
    (3, 2, 3, 1),
    (3, 2, 3, 2),
    (2, 1, 19, 1),
    (2, 1, 19, 2),
    (2, 19, 1, 1),
    (2, 19, 1, 2),
    (5, 7, 7, 1),
    (5, 7, 7, 2),
    (3, 8, 8, 1),
    (3, 9, 16, 1),
    (3, 15, 17, 2),
    (3, 16, 33, 2),
    (7, 14, 14, 1),
    (7, 14, 14, 2),
    (5, 31, 23, 1),
    (5, 33, 35, 2),
    (3, 34, 32, 2),
    (33, 28, 28, 1),
    (33, 56, 56, 2),
    (32, 112, 112, 1),
];

fn run_case(rng: &mut SplitMix64, (c, h, w, stride): (usize, usize, usize, usize), mask: u8) {
    let g = ConvGeometry {
        c,
        h,
        w,
        kh: 3,
        kw: 3,
        stride,
        pad: 1,
    };
    let (wq, _, _) = qmatrix(rng, c, 9, 16);
    let input = rng.unit_vec(g.input_len());
    let n = g.out_pixels();
    let scale = (mask & 1 != 0).then(|| rng.unit_vec(c));
    let shift = (mask & 2 != 0).then(|| rng.unit_vec(c));
    let residual = (mask & 4 != 0).then(|| rng.unit_vec(c * n));
    let activation = [Activation::None, Activation::Relu, Activation::Relu6][(mask >> 3) as usize];
    let epi = Epilogue {
        scale: scale.as_deref(),
        shift: shift.as_deref(),
        residual: residual.as_deref(),
        activation,
    };
    let mut want = vec![0.0; c * n];
    depthwise_direct(&wq, &input, &g, &mut want, &epi).unwrap();
    // |out| bound: the conv over |w| and |x|, then |scale|, |shift|, |res|.
    let cb: Vec<f32> = wq.codebook().iter().map(|v| v.abs()).collect();
    let aw = QMatrix::new(c, 9, &wq.to_indices(), &cb).unwrap();
    let ai: Vec<f32> = input.iter().map(|v| v.abs()).collect();
    let mut mag = vec![0.0; c * n];
    depthwise_direct(&aw, &ai, &g, &mut mag, &Epilogue::NONE).unwrap();
    for (i, m) in mag.iter_mut().enumerate() {
        let ch = i / n;
        *m = *m * scale.as_ref().map_or(1.0, |s| s[ch].abs())
            + shift.as_ref().map_or(0.0, |s| s[ch].abs())
            + residual.as_ref().map_or(0.0, |r| r[i].abs());
    }
    for isa in Isa::available() {
        let mut got = vec![f32::NAN; c * n];
        depthwise_conv(isa, &wq, &input, &g, &mut got, &epi).unwrap();
        let what = format!("depthwise {isa} {g:?} mask {mask}");
        assert_close(&what, &got, &want, &mag);
    }
}

#[test]
fn depthwise3x3_matches_direct_on_odd_shapes() {
    let mut rng = SplitMix64::new(7);
    for shape in SHAPES {
        for mask in [0u8, 3, 7, 8 | 3, 16 | 3, 16 | 7] {
            run_case(&mut rng, shape, mask);
        }
    }
}

/// Every width 1..=40 at both strides on a few rows: each lane of the
/// column masks and each tail length of the 8- and 16-wide kernels.
#[test]
fn depthwise3x3_every_width() {
    let mut rng = SplitMix64::new(11);
    for w in 1..=40 {
        for (h, stride) in [(3, 1), (5, 2), (4, 2)] {
            run_case(&mut rng, (3, h, w, stride), 16 | 7);
        }
    }
}

/// ReLU keeps f32::max's NaN rule (NaN -> 0) and ReLU6 clamp's (NaN stays).
#[test]
fn depthwise3x3_nan_follows_the_epilogue() {
    let g = ConvGeometry {
        c: 1,
        h: 4,
        w: 19,
        kh: 3,
        kw: 3,
        stride: 1,
        pad: 1,
    };
    let w = QMatrix::new(1, 9, &[1; 9], &[0.0, 1.0]).unwrap();
    let mut input = vec![1.0; g.input_len()];
    input[0] = f32::NAN;
    for act in [Activation::None, Activation::Relu, Activation::Relu6] {
        let epi = Epilogue {
            activation: act,
            ..Epilogue::NONE
        };
        let mut want = vec![0.0; g.out_pixels()];
        depthwise_direct(&w, &input, &g, &mut want, &epi).unwrap();
        for isa in Isa::available() {
            let mut got = vec![0.0; g.out_pixels()];
            depthwise_conv(isa, &w, &input, &g, &mut got, &epi).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{isa} {act:?} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
