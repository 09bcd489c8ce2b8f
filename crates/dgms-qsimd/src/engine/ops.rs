//! The engine's data-movement ops on activations in its C x N x H x W
//! layout (channel-major, the batch inside each channel): pooling, the
//! option-A shortcut, flattening and the layout changes at the model's
//! input and output.
//!
//! In this layout a channel's N planes are contiguous, so a convolution of
//! the whole batch is one GEMM whose columns are (image, pixel) and whose
//! output is again C x N x H x W; per-channel epilogues and residual adds
//! need no reshuffling.

use rayon::prelude::*;

use crate::kernels::pool::max_pool_plane;
use crate::kernels::CheckedIsa;

/// Below this many output values an op runs on the calling thread: rayon's
/// fork-join costs more than the copy.
const PAR_MIN: usize = 1 << 15;

/// Runs `f` over `chunk`-sized pieces of `out` with their index, in
/// parallel when `out` is large.
fn for_chunks(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if chunk == 0 {
        return;
    }
    // One rayon thread: run here, not through the pool's hand-off.
    if out.len() >= PAR_MIN && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

pub(crate) use crate::kernels::pool::Window as Pool;

/// Max-pools each of the `input.len() / (h*w)` planes on `isa` (the
/// plane loop lives in `kernels/pool.rs`, compiled per ISA); with `post`
/// (per-channel scale, shift; `n` planes per channel) applies
/// `relu(v*scale + shift)` to the pooled values (VGG-Small's pool, then
/// batch norm, then ReLU).
pub(crate) fn max_pool(
    isa: CheckedIsa,
    input: &[f32],
    (h, w): (usize, usize),
    p: Pool,
    post: Option<(&[f32], &[f32], usize)>,
    out: &mut [f32],
) {
    let (oh, ow) = (p.out_len(h), p.out_len(w));
    for_chunks(out, oh * ow, |plane, dst| {
        let src = &input[plane * h * w..(plane + 1) * h * w];
        max_pool_plane(isa, src, (h, w), p, dst);
        if let Some((scale, shift, n)) = post {
            let (s, t) = (scale[plane / n], shift[plane / n]);
            dst.iter_mut().for_each(|v| *v = (*v * s + t).max(0.0));
        }
    });
}

/// Mean of each plane of `hw` values: C x N planes give the C x N matrix a
/// classifier GEMM takes (features as rows, images as columns).
pub(crate) fn global_avg_pool(input: &[f32], hw: usize, out: &mut [f32]) {
    let inv = hw as f32;
    for (o, plane) in out.iter_mut().zip(input.chunks_exact(hw)) {
        *o = plane.iter().sum::<f32>() / inv;
    }
}

/// The option-A shortcut: `x[:, :, ::stride, ::stride]` with `pad` zero
/// channels added on both sides (C_in + 2*pad channels out).
pub(crate) fn shortcut_a(
    input: &[f32],
    (c, n, h, w): (usize, usize, usize, usize),
    stride: usize,
    pad: usize,
    out: &mut [f32],
) {
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let plane_out = oh * ow;
    for_chunks(out, plane_out, |plane, dst| {
        let ch = plane / n;
        if ch < pad || ch >= pad + c {
            dst.fill(0.0);
            return;
        }
        let src_plane = (ch - pad) * n + plane % n;
        let src = &input[src_plane * h * w..(src_plane + 1) * h * w];
        for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
            let row = &src[oy * stride * w..(oy * stride + 1) * w];
            for (o, s) in d.iter_mut().zip(row.iter().step_by(stride)) {
                *o = *s;
            }
        }
    });
}

/// PyTorch's `x.view(N, -1)` for a classifier: C x N x HW in, the
/// (C*HW) x N matrix out (feature `c*HW + p` of image `b` at row
/// `c*HW + p`, column `b`).
pub(crate) fn flatten(input: &[f32], (c, n, hw): (usize, usize, usize), out: &mut [f32]) {
    for ch in 0..c {
        for b in 0..n {
            let src = &input[(ch * n + b) * hw..(ch * n + b + 1) * hw];
            for (p, &v) in src.iter().enumerate() {
                out[(ch * hw + p) * n + b] = v;
            }
        }
    }
}

/// N x C x HW (the caller's layout) to the engine's C x N x HW.
pub(crate) fn nchw_to_cnhw(input: &[f32], (n, c, hw): (usize, usize, usize), out: &mut [f32]) {
    for (i, dst) in out.chunks_exact_mut(hw).enumerate() {
        let (ch, b) = (i / n, i % n);
        dst.copy_from_slice(&input[(b * c + ch) * hw..(b * c + ch + 1) * hw]);
    }
}

/// The classifier's classes x N output to the caller's N x classes.
pub(crate) fn transpose(input: &[f32], (rows, cols): (usize, usize), out: &mut [f32]) {
    for (r, row) in input.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Isa;

    #[test]
    fn max_pool_pads_with_minus_infinity() {
        // 3x3 / 2 / pad 1 over a 3x3 plane of negatives: padding must not win.
        let x: Vec<f32> = (0..9).map(|i| -(i as f32) - 1.0).collect();
        let p = Pool {
            k: 3,
            stride: 2,
            pad: 1,
        };
        let mut out = vec![0.0; 4];
        max_pool(CheckedIsa::scalar(), &x, (3, 3), p, None, &mut out);
        assert_eq!(out, [-1.0, -2.0, -4.0, -5.0]);
    }

    /// Every window size, stride and padding the unrolled and generic
    /// paths take, on odd and tiny planes, on every ISA (the plane loop
    /// is compiled per ISA), against the definition.
    #[test]
    fn max_pool_matches_the_definition() {
        let mut seed = 5u32;
        for (h, w) in [
            (1, 1),
            (2, 3),
            (3, 2),
            (7, 7),
            (9, 20),
            (17, 33),
            (112, 112),
        ] {
            let x: Vec<f32> = (0..2 * h * w)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
                })
                .collect();
            for (k, stride, pad) in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 2, 0), (5, 3, 2)] {
                let p = Pool { k, stride, pad };
                let (oh, ow) = (p.out_len(h), p.out_len(w));
                let mut got = vec![f32::NAN; 2 * oh * ow];
                for isa in Isa::available() {
                    let isa = isa.check().unwrap();
                    got.fill(f32::NAN);
                    max_pool(isa, &x, (h, w), p, None, &mut got);
                    for (i, &g) in got.iter().enumerate() {
                        let (c, oy, ox) = (i / (oh * ow), i / ow % oh, i % ow);
                        let mut m = f32::NEG_INFINITY;
                        for y in (oy * stride).saturating_sub(pad)..(oy * stride + k - pad).min(h) {
                            for xx in
                                (ox * stride).saturating_sub(pad)..(ox * stride + k - pad).min(w)
                            {
                                m = m.max(x[(c * h + y) * w + xx]);
                            }
                        }
                        assert_eq!(g, m, "{isa} {h}x{w} k{k} s{stride} p{pad} at {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn shortcut_subsamples_and_pads_channels() {
        // c = 1, n = 2, 3x3 planes, stride 2, pad 1: channels 0 and 2 zero.
        let x: Vec<f32> = (0..18).map(|i| i as f32).collect();
        let mut out = vec![f32::NAN; 3 * 2 * 4];
        shortcut_a(&x, (1, 2, 3, 3), 2, 1, &mut out);
        assert!(out[..8].iter().chain(&out[16..]).all(|&v| v == 0.0));
        assert_eq!(&out[8..16], &[0.0, 2.0, 6.0, 8.0, 9.0, 11.0, 15.0, 17.0]);
    }

    #[test]
    fn layout_changes_round_trip() {
        let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32).collect();
        let mut cnhw = vec![0.0; x.len()];
        nchw_to_cnhw(&x, (2, 3, 4), &mut cnhw);
        assert_eq!(&cnhw[4..8], &x[12..16]); // channel 0 of image 1
        let mut flat = vec![0.0; x.len()];
        flatten(&cnhw, (3, 2, 4), &mut flat);
        let mut back = vec![0.0; x.len()];
        transpose(&flat, (12, 2), &mut back);
        assert_eq!(back, x);
    }
}
