//! Depthwise k x k convolution (odd k, pad k / 2, stride 1 or 2; 3x3 for
//! MobileNetV2, 3x3 and 5x5 for MNASNet), SIMD over output pixels. Each
//! channel is copied into a zero-bordered plane so the inner loop has no
//! bounds logic; stride 2 additionally splits each padded row into even
//! and odd columns so every tap is a contiguous load. The inner loop is
//! plain Rust compiled once per ISA under `#[target_feature]` (with
//! hardware FMA), which LLVM vectorises over the output row.

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::matrix::QMatrix;
use super::scalar;
use crate::error::Result;
use crate::kernels::checks::check_depthwise;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::isa::{CheckedIsa, Isa};

/// `out[ch] = epilogue(sum_taps w[ch, tap] * input[ch, shifted])` per
/// channel; `w` is C x k*k (tap ky*k + kx), `geom` must be k x k with odd
/// k, pad k / 2, stride 1 or 2.
pub fn depthwise_conv(
    isa: Isa,
    w: &QMatrix,
    input: &[f32],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    let dims = (w.rows(), w.cols());
    let n = check_depthwise("depthwise_conv", dims, input, geom, out, epilogue)?;
    if isa.isa() == Isa::Scalar {
        return scalar::depthwise_direct(w, input, geom, out, epilogue);
    }
    let g = *geom;
    let kk = g.kh * g.kw;
    // Per worker: the channel's taps and its padded plane.
    let run = |(taps, scratch): &mut (Vec<f32>, Vec<f32>), (ch, o): (usize, &mut [f32])| {
        taps.clear();
        taps.extend((0..kk).map(|t| w.weight(ch, t).unwrap_or(0.0)));
        let plane = &input[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        channel(isa, taps, plane, &g, scratch, o);
        epilogue.apply(o, n, ch..ch + 1, 0..n, n);
    };
    if out.len() * kk >= 1 << 16 {
        out.par_chunks_mut(n)
            .enumerate()
            .for_each_init(Default::default, |s, job| run(s, job));
    } else {
        let mut s = Default::default();
        out.chunks_mut(n)
            .enumerate()
            .for_each(|job| run(&mut s, job));
    }
    Ok(())
}

/// One channel on the chosen ISA (never Scalar: that is the reference).
fn channel(
    isa: CheckedIsa,
    taps: &[f32],
    plane: &[f32],
    g: &ConvGeometry,
    s: &mut Vec<f32>,
    o: &mut [f32],
) {
    match isa.isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
        Isa::Avx512 => unsafe { channel_avx512(taps, plane, g, s, o) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { channel_avx2(taps, plane, g, s, o) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Isa::Neon => unsafe { channel_neon(taps, plane, g, s, o) },
        _ => channel_body(taps, plane, g, s, o),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn channel_avx512(taps: &[f32], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    channel_body(taps, plane, g, s, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn channel_avx2(taps: &[f32], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    channel_body(taps, plane, g, s, o)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn channel_neon(taps: &[f32], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    channel_body(taps, plane, g, s, o)
}

/// Three taps of one kernel row over a whole output row: `a`, `b`, `c`
/// are the inputs seen by kx = 0, 1, 2 (each at least as long as `out`).
#[inline(always)]
fn row3(out: &mut [f32], w: &[f32], a: &[f32], b: &[f32], c: &[f32]) {
    let n = out.len();
    // Reslicing to `n` lets LLVM drop the bounds checks in the loop.
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    for i in 0..n {
        // mul_add is one instruction in every SIMD instantiation.
        let v = w[0].mul_add(a[i], out[i]);
        let v = w[1].mul_add(b[i], v);
        out[i] = w[2].mul_add(c[i], v);
    }
}

/// Five taps of one kernel row (a 5x5 kernel), as [`row3`]: one load and
/// store of the output per five FMAs.
#[inline(always)]
fn row5(out: &mut [f32], w: &[f32], src: [&[f32]; 5]) {
    let n = out.len();
    let [a, b, c, d, e] = src;
    let (a, b, c, d, e) = (&a[..n], &b[..n], &c[..n], &d[..n], &e[..n]);
    for i in 0..n {
        let v = w[0].mul_add(a[i], out[i]);
        let v = w[1].mul_add(b[i], v);
        let v = w[2].mul_add(c[i], v);
        let v = w[3].mul_add(d[i], v);
        out[i] = w[4].mul_add(e[i], v);
    }
}

/// One tap over a whole output row: the fallback for other kernel sizes.
#[inline(always)]
fn row1(out: &mut [f32], w: f32, a: &[f32]) {
    let a = &a[..out.len()];
    for (o, &x) in out.iter_mut().zip(a) {
        *o = w.mul_add(x, *o);
    }
}

/// The taps `w` of one kernel row over an output row; `src(kx)` is the
/// input seen by tap kx.
#[inline(always)]
fn row<'a>(out: &mut [f32], w: &[f32], src: impl Fn(usize) -> &'a [f32]) {
    match w.len() {
        3 => row3(out, w, src(0), src(1), src(2)),
        5 => row5(out, w, [src(0), src(1), src(2), src(3), src(4)]),
        _ => {
            for (kx, &wk) in w.iter().enumerate() {
                row1(out, wk, src(kx));
            }
        }
    }
}

#[inline(always)]
fn channel_body(taps: &[f32], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    let (h, w, k, p) = (g.h, g.w, g.kh, g.pad);
    let (oh, ow) = (g.out_h(), g.out_w());
    let pw = w + 2 * p;
    // Stride 2: tap kx reads padded column 2 ox + kx, i.e. even column
    // ox + kx/2 or odd column ox + kx/2; ow + p of each cover every tap.
    let span = ow + p;
    // Zero-bordered copy of the channel: (h + 2p) x (w + 2p).
    s.clear();
    s.resize((h + 2 * p) * pw + 2 * span, 0.0);
    let (padded, eo) = s.split_at_mut((h + 2 * p) * pw);
    for (y, src) in plane.chunks_exact(w).enumerate() {
        padded[(y + p) * pw + p..(y + p) * pw + p + w].copy_from_slice(src);
    }
    for (oy, out) in o.chunks_exact_mut(ow).take(oh).enumerate() {
        out.fill(0.0);
        for ky in 0..k {
            let py = oy * g.stride + ky;
            let prow = &padded[py * pw..(py + 1) * pw];
            let wk = &taps[k * ky..k * ky + k];
            if g.stride == 1 {
                row(out, wk, |kx| &prow[kx..]);
            } else {
                let (even, odd) = eo.split_at_mut(span);
                for (i, e) in even.iter_mut().enumerate() {
                    *e = prow.get(2 * i).copied().unwrap_or(0.0);
                }
                for (i, d) in odd.iter_mut().enumerate() {
                    *d = prow.get(2 * i + 1).copied().unwrap_or(0.0);
                }
                let (even, odd) = (&*even, &*odd);
                row(out, wk, |kx| {
                    if kx.is_multiple_of(2) {
                        &even[kx / 2..]
                    } else {
                        &odd[kx / 2..]
                    }
                });
            }
        }
    }
}
