//! Depthwise k x k convolution (odd k, pad k / 2, stride 1 or 2; 3x3 for
//! MobileNetV2, 3x3 and 5x5 for MNASNet).
//!
//! 3x3 on AVX2 and AVX-512 runs the intrinsics kernels of
//! `simd/dw3x3.rs`, one channel at a time with the output stage fused
//! (stride 1 flat over the plane, stride 2 per row over even / odd
//! columns). Every other case (NEON, 5x5 and other odd k) runs a plain
//! Rust loop compiled once per ISA under `#[target_feature]` (with
//! hardware FMA), which LLVM vectorises over the output row: each channel
//! is copied into a zero-bordered plane so the inner loop has no bounds
//! logic; stride 2 additionally splits each padded row into even and odd
//! columns so every tap is a contiguous load; the epilogue runs after it.

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::matrix::QMatrix;
use super::scalar;
use crate::error::Result;
use crate::kernels::checks::check_depthwise;
use crate::kernels::epilogue::{Activation, Epilogue};
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
    let fast = g.kh == 3 && has_dw3x3(isa);
    // Per worker: the channel's taps and its padded plane.
    let run = |(taps, scratch): &mut (Vec<f32>, Vec<f32>), (ch, o): (usize, &mut [f32])| {
        taps.resize(kk, 0.0);
        w.decode_row(ch, taps);
        let plane = &input[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        if fast {
            let e = ChanEpi::of(epilogue, ch, n);
            let t: [f32; 9] = std::array::from_fn(|i| taps[i]);
            dw3x3(isa, &t, plane, &g, scratch, o, &e);
        } else {
            channel(isa, taps, plane, &g, scratch, o);
            epilogue.apply(o, n, ch..ch + 1, 0..n, n);
        }
    };
    // Jobs of whole channels, about 4096 outputs each: small maps (7x7)
    // would otherwise pay rayon's per-task cost per channel. The scratch
    // lives for this call only (one geometry: see `dw3x3`).
    let per = (1usize << 12).div_ceil(n);
    let block = |s: &mut (Vec<f32>, Vec<f32>), (b, blk): (usize, &mut [f32])| {
        for (i, o) in blk.chunks_mut(n).enumerate() {
            run(s, (b * per + i, o));
        }
    };
    // One rayon thread: run here, not through the pool (its hand-off
    // costs as much as a small layer).
    if out.len() * kk >= 1 << 16 && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(per * n)
            .enumerate()
            .for_each_init(Default::default, block);
    } else {
        let mut s = Default::default();
        out.chunks_mut(per * n)
            .enumerate()
            .for_each(|job| block(&mut s, job));
    }
    Ok(())
}

/// One channel's output stage: `act(v * scale + shift + residual[p])`.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct ChanEpi<'a> {
    pub scale: f32,
    pub shift: f32,
    /// The channel's residual plane (as long as its output).
    pub residual: Option<&'a [f32]>,
    pub act: Activation,
}

impl<'a> ChanEpi<'a> {
    /// Channel `ch` of `e`, for outputs of `n` pixels per channel.
    fn of(e: &Epilogue<'a>, ch: usize, n: usize) -> ChanEpi<'a> {
        ChanEpi {
            scale: e.scale.map_or(1.0, |s| s[ch]),
            shift: e.shift.map_or(0.0, |s| s[ch]),
            residual: e.residual.map(|r| &r[ch * n..(ch + 1) * n]),
            act: e.activation,
        }
    }
}

/// A stride-2 channel as the zero-bordered plane's even and odd columns:
/// padded row r (r = y + 1 for input row y, rows 0 and h + 1 zero) has
/// its even columns at `data[2 r pitch..]` and its odd ones `pitch`
/// later; padded column c is input column c - 1.
#[cfg(target_arch = "x86_64")]
pub(crate) struct S2Planes<'a> {
    pub data: &'a [f32],
    /// Output row width.
    pub ow: usize,
    /// At least `ow` rounded up to 16, plus 1 (the kx = 2 tap).
    pub pitch: usize,
}

/// Splits `plane` (h x w) into `s` as [`S2Planes`] describes, each
/// input row by `split(row, odd, even[1..])` (odd[j] = row[2j], even[j +
/// 1] = row[2j + 1]). Only what the kernels read unmasked is written:
/// rows 0 and h + 1, and per row even[0] and the pad after the last
/// input column; the rest of `s` keeps old values, which only reach
/// masked-off lanes.
#[cfg(target_arch = "x86_64")]
fn split_s2<'a>(
    plane: &[f32],
    g: &ConvGeometry,
    s: &'a mut Vec<f32>,
    split: impl Fn(&[f32], &mut [f32], &mut [f32]),
) -> S2Planes<'a> {
    let (h, w, ow) = (g.h, g.w, g.out_w());
    let pitch = ow.next_multiple_of(16) + 1;
    let len = 2 * (h + 2) * pitch;
    if s.len() < len {
        s.resize(len, 0.0);
    }
    s[..2 * pitch].fill(0.0);
    s[2 * (h + 1) * pitch..len].fill(0.0);
    for (y, row) in plane.chunks_exact(w).enumerate() {
        let r = y + 1;
        let (even, odd) = s[2 * r * pitch..(2 * r + 2) * pitch].split_at_mut(pitch);
        even[0] = 0.0;
        if w % 2 == 1 {
            // Padded column w + 1, read by the last output (index ow).
            even[w / 2 + 1] = 0.0;
        }
        split(row, odd, &mut even[1..]);
    }
    S2Planes {
        data: &s[..len],
        ow,
        pitch,
    }
}

/// Whether `isa` has the intrinsics 3x3 kernels.
fn has_dw3x3(isa: CheckedIsa) -> bool {
    cfg!(target_arch = "x86_64") && matches!(isa.isa(), Isa::Avx2 | Isa::Avx512)
}

/// One 3x3 channel with its output stage on AVX2 / AVX-512 (`has_dw3x3`).
fn dw3x3(
    isa: CheckedIsa,
    t: &[f32; 9],
    plane: &[f32],
    g: &ConvGeometry,
    s: &mut Vec<f32>,
    o: &mut [f32],
    e: &ChanEpi,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::simd::dw3x3 as k;
        if g.stride == 1 {
            // The zeros around the plane are written once per call: the
            // scratch serves one geometry and stride, and only the
            // plane's part changes between channels.
            let len = k::s1_len(plane.len(), g.w);
            if s.len() != len {
                s.clear();
                s.resize(len, 0.0);
            }
            s[g.w + 1..g.w + 1 + plane.len()].copy_from_slice(plane);
            match isa.isa() {
                // SAFETY: `isa` is a CheckedIsa: Isa::check found the ISA on this CPU.
                Isa::Avx512 => unsafe { k::s1_avx512(t, s, g.w, o, e) },
                // SAFETY: as above.
                Isa::Avx2 => unsafe { k::s1_avx2(t, s, g.w, o, e) },
                _ => unreachable!("has_dw3x3"),
            }
        } else {
            match isa.isa() {
                Isa::Avx512 => {
                    // SAFETY: as above.
                    let split = |r: &[f32], o: &mut [f32], e: &mut [f32]| unsafe {
                        k::split_avx512(r, o, e)
                    };
                    let planes = split_s2(plane, g, s, split);
                    // SAFETY: as above.
                    unsafe { k::s2_avx512(t, &planes, o, e) }
                }
                Isa::Avx2 => {
                    // SAFETY: as above.
                    let split =
                        |r: &[f32], o: &mut [f32], e: &mut [f32]| unsafe { k::split_avx2(r, o, e) };
                    let planes = split_s2(plane, g, s, split);
                    // SAFETY: as above.
                    unsafe { k::s2_avx2(t, &planes, o, e) }
                }
                _ => unreachable!("has_dw3x3"),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("has_dw3x3 is false off x86-64: {isa} {t:?} {plane:?} {g:?} {s:?} {o:?} {e:?}")
}

per_isa! {
    /// One channel on the chosen ISA (never Scalar: that is the
    /// reference).
    fn channel = channel_body(
        taps: &[f32],
        plane: &[f32],
        g: &ConvGeometry,
        s: &mut Vec<f32>,
        o: &mut [f32]
    )
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
