//! Depthwise 3x3 convolution (pad 1, stride 1 or 2), SIMD over output
//! pixels. Each channel is copied into a zero-bordered plane so the inner
//! loop has no bounds logic; stride 2 additionally splits each padded row
//! into even and odd columns so every tap is a contiguous load. The inner
//! loop is plain Rust compiled once per ISA under `#[target_feature]`
//! (with hardware FMA), which LLVM vectorises over the output row.

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::matrix::QMatrix;
use super::scalar;
use crate::error::Result;
use crate::kernels::checks::check_depthwise;
use crate::kernels::epilogue::Epilogue;
use crate::kernels::isa::{CheckedIsa, Isa};

/// `out[ch] = epilogue(sum_taps w[ch, tap] * input[ch, shifted])` per
/// channel; `w` is C x 9 (ky*3 + kx), `geom` must be 3x3, pad 1,
/// stride 1 or 2.
pub fn depthwise3x3(
    isa: Isa,
    w: &QMatrix,
    input: &[f32],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    let dims = (w.rows(), w.cols());
    let n = check_depthwise("depthwise3x3", dims, input, geom, out, epilogue)?;
    if isa.isa() == Isa::Scalar {
        return scalar::depthwise3x3_direct(w, input, geom, out, epilogue);
    }
    let g = *geom;
    let run = |scratch: &mut Vec<f32>, (ch, o): (usize, &mut [f32])| {
        let mut taps = [0.0f32; 9];
        for (t, v) in taps.iter_mut().enumerate() {
            *v = w.weight(ch, t).unwrap_or(0.0);
        }
        let plane = &input[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        channel(isa, &taps, plane, &g, scratch, o);
        epilogue.apply(o, n, ch..ch + 1, 0..n, n);
    };
    if out.len() * 9 >= 1 << 16 {
        out.par_chunks_mut(n)
            .enumerate()
            .for_each_init(Vec::new, |s, job| run(s, job));
    } else {
        let mut s = Vec::new();
        out.chunks_mut(n)
            .enumerate()
            .for_each(|job| run(&mut s, job));
    }
    Ok(())
}

/// One channel on the chosen ISA (never Scalar: that is the reference).
fn channel(
    isa: CheckedIsa,
    taps: &[f32; 9],
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
fn channel_avx512(
    taps: &[f32; 9],
    plane: &[f32],
    g: &ConvGeometry,
    s: &mut Vec<f32>,
    o: &mut [f32],
) {
    channel_body(taps, plane, g, s, o)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn channel_avx2(taps: &[f32; 9], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    channel_body(taps, plane, g, s, o)
}

#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
fn channel_neon(taps: &[f32; 9], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    channel_body(taps, plane, g, s, o)
}

/// Three taps of one kernel row over a whole output row: `a`, `b`, `c`
/// are the inputs seen by kx = 0, 1, 2 (each as long as `out`).
#[inline(always)]
fn row3(out: &mut [f32], w: &[f32], a: &[f32], b: &[f32], c: &[f32]) {
    let n = out.len();
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    for i in 0..n {
        // mul_add is one instruction in every SIMD instantiation.
        let v = w[0].mul_add(a[i], out[i]);
        let v = w[1].mul_add(b[i], v);
        out[i] = w[2].mul_add(c[i], v);
    }
}

#[inline(always)]
fn channel_body(taps: &[f32; 9], plane: &[f32], g: &ConvGeometry, s: &mut Vec<f32>, o: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let (oh, ow) = (g.out_h(), g.out_w());
    let pw = w + 2;
    // Zero-bordered copy of the channel: (h + 2) x (w + 2).
    s.clear();
    s.resize((h + 2) * pw + 2 * (ow + 1) * 3, 0.0);
    let (padded, eo) = s.split_at_mut((h + 2) * pw);
    for (y, src) in plane.chunks_exact(w).enumerate() {
        padded[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].copy_from_slice(src);
    }
    for (oy, out) in o.chunks_exact_mut(ow).take(oh).enumerate() {
        out.fill(0.0);
        for ky in 0..3 {
            let py = oy * g.stride + ky;
            let prow = &padded[py * pw..(py + 1) * pw];
            let wk = &taps[3 * ky..3 * ky + 3];
            if g.stride == 1 {
                row3(out, wk, &prow[0..], &prow[1..], &prow[2..]);
            } else {
                // Even padded columns 2i (ow + 1 of them) and odd 2i + 1.
                let (even, odd) = eo.split_at_mut(ow + 1);
                for (i, e) in even.iter_mut().enumerate() {
                    *e = prow.get(2 * i).copied().unwrap_or(0.0);
                }
                for (i, d) in odd[..ow].iter_mut().enumerate() {
                    *d = prow[2 * i + 1];
                }
                row3(out, wk, &even[..], &odd[..ow], &even[1..]);
            }
        }
    }
}
