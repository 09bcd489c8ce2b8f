//! Why there is no int8 depthwise kernel: an ignored timing test that
//! puts the fast f32 depthwise kernel next to the least an int8 one must
//! do first when its input arrives as f32 (as every activation does in
//! the engine): one pass per channel for its max |x|, one to quantize it
//! to i8 (`quant::vec_scales`, or a lane-wise max, + `quant::quant`, the
//! int8 path's own rounding). Run: `RAYON_NUM_THREADS=1 cargo test -p dgms-qsimd
//! --release --lib depthwise_int8_bound -- --ignored --nocapture`.

use std::time::Instant;

use super::quant::{quant, vec_scales};
use crate::kernels::{depthwise_conv, Activation, ConvGeometry, Epilogue, Isa, QMatrix};

/// MobileNetV2's 17 depthwise convs at 224 x 224: (C, H = W, stride).
const LAYERS: [(usize, usize, usize); 17] = [
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (384, 14, 1),
    (384, 14, 1),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
    (960, 7, 1),
    (960, 7, 1),
];

/// Median ms of `f` over 41 runs after 10.
fn time(mut f: impl FnMut()) -> f64 {
    (0..10).for_each(|_| f());
    let mut t: Vec<f64> = (0..41)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// max |x| in 16 independent lanes (a loop LLVM vectorises, unlike the
/// one running max of `vec_scales`, which also sums x * 0 for NaN).
fn max_abs(x: &[f32]) -> f32 {
    let mut m = [0.0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        m.iter_mut().zip(c).for_each(|(m, &v)| *m = m.max(v.abs()));
    }
    let tail = it.remainder().iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    m.iter().fold(tail, |a, &v| a.max(v))
}

#[test]
#[ignore]
fn depthwise_int8_bound() {
    let isa = Isa::detect();
    let mut sums = [0.0; 3];
    eprintln!("C x H x W / stride: f32 depthwise ({isa}) vs int8 pre-pass, ms");
    for (c, hw, stride) in LAYERS {
        let g = ConvGeometry {
            c,
            h: hw,
            w: hw,
            kh: 3,
            kw: 3,
            stride,
            pad: 1,
        };
        let x: Vec<f32> = (0..g.input_len())
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.3)
            .collect();
        let idx: Vec<u8> = (0..9 * c).map(|i| (i % 16) as u8).collect();
        let cb: Vec<f32> = (0..16).map(|i| i as f32 / 8.0 - 1.0).collect();
        let w = QMatrix::new(c, 9, &idx, &cb).unwrap();
        let (scale, shift) = (vec![0.5; c], vec![0.1; c]);
        let epi = Epilogue {
            scale: Some(&scale),
            shift: Some(&shift),
            residual: None,
            activation: Activation::Relu6,
        };
        let mut out = vec![0.0; c * g.out_pixels()];
        let f = time(|| depthwise_conv(isa, &w, &x, &g, &mut out, &epi).unwrap());
        let mut q = vec![0i8; x.len()];
        let mut quantize = |lanes: bool| {
            for (plane, qp) in x.chunks_exact(hw * hw).zip(q.chunks_exact_mut(hw * hw)) {
                let inv = if lanes {
                    127.0 / max_abs(plane)
                } else {
                    vec_scales(plane, 1.0).0
                };
                qp.iter_mut()
                    .zip(plane)
                    .for_each(|(q, &v)| *q = quant(v, inv));
            }
        };
        let crate_pass = time(|| quantize(false));
        let lane_pass = time(|| quantize(true));
        std::hint::black_box((&out, &q));
        eprintln!(
            "{c:>4} x {hw:>3} x {hw:>3} / {stride}: f32 {f:.3}  pre-pass: vec_scales {crate_pass:.3}, lane-wise max {lane_pass:.3}"
        );
        sums = [sums[0] + f, sums[1] + crate_pass, sums[2] + lane_pass];
    }
    eprintln!(
        "sum: f32 {:.3}  int8 pre-pass alone: vec_scales {:.3}, lane-wise max {:.3}",
        sums[0], sums[1], sums[2]
    );
}
