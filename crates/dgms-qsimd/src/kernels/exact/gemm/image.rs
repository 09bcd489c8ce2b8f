//! Packing the im2col matrix of a convolution straight from the images,
//! never materialising it. The images get their zero border first (one
//! copy of the input), so every im2col value is a plain read: row
//! `(ci, ky, kx)` of output pixel `(b, oy, ox)` is
//! `xp[(ci*N + b)*hp*wp + (oy*s + ky)*wp + ox*s + kx]`, the sum of a row
//! offset and a pixel offset. A packed panel (NR pixels, usually in one
//! output row) is then written sequentially, one NR-value run per k.

use rayon::prelude::*;

use super::super::conv::ConvGeometry;
use super::pack::panel_stride;

/// A C x N x H x W batch with a zero border of `pad` around every plane.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Image<'a> {
    /// The padded planes, C x N x hp x wp.
    pub xp: &'a [f32],
    pub g: ConvGeometry,
    pub images: usize,
    pub hp: usize,
    pub wp: usize,
}

impl<'a> Image<'a> {
    /// The batch as it is, when the convolution has no padding.
    pub fn unpadded(input: &'a [f32], g: ConvGeometry, images: usize) -> Self {
        Image {
            xp: input,
            g,
            images,
            hp: g.h,
            wp: g.w,
        }
    }

    /// Pads `input` into `buf` (grown as needed); the image borrows it.
    pub fn padded(input: &[f32], g: ConvGeometry, images: usize, buf: &'a mut Vec<f32>) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        let (hw, plane) = (g.h * g.w, hp * wp);
        let len = g.c * images * plane;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let fill = |(src, dst): (&[f32], &mut [f32])| {
            dst[..g.pad * wp].fill(0.0);
            dst[(g.pad + g.h) * wp..].fill(0.0);
            let rows = dst[g.pad * wp..(g.pad + g.h) * wp].chunks_exact_mut(wp);
            for (d, s) in rows.zip(src.chunks_exact(g.w)) {
                d[..g.pad].fill(0.0);
                d[g.pad..g.pad + g.w].copy_from_slice(s);
                d[g.pad + g.w..].fill(0.0);
            }
        };
        let planes = input
            .chunks_exact(hw)
            .zip(buf[..len].chunks_exact_mut(plane));
        if len >= 1 << 16 {
            let planes: Vec<_> = planes.collect();
            planes.into_par_iter().for_each(fill);
        } else {
            planes.for_each(fill);
        }
        Image {
            xp: &buf[..len],
            g,
            images,
            hp,
            wp,
        }
    }

    /// Columns (N).
    pub fn cols(&self) -> usize {
        self.images * self.g.out_pixels()
    }
}

impl Image<'_> {
    /// The offsets in `xp` of im2col rows `k0..(k0 + kc).min(k_rows)`
    /// (rows beyond K are zero and have none).
    pub fn row_offsets(&self, k_rows: usize, k0: usize, kc: usize, koff: &mut Vec<usize>) {
        let (g, plane) = (&self.g, self.hp * self.wp);
        koff.clear();
        let (mut ci, mut ky, mut kx) = (k0 / (g.kh * g.kw), k0 / g.kw % g.kh, k0 % g.kw);
        for _ in k0..(k0 + kc).min(k_rows) {
            koff.push(ci * self.images * plane + ky * self.wp + kx);
            kx += 1;
            if kx == g.kw {
                (kx, ky) = (0, ky + 1);
                if ky == g.kh {
                    (ky, ci) = (0, ci + 1);
                }
            }
        }
    }
}

/// Packs the `kc` im2col rows whose offsets are `koff` (zero after them),
/// columns `j0..j1` of `img` into `out` as `[panel][k][NR]` panels
/// [`panel_stride`] apart, the last panel zero-padded.
#[inline(always)]
pub(crate) fn pack_image<const NR: usize>(
    img: &Image,
    koff: &[usize],
    kc: usize,
    (j0, j1): (usize, usize),
    out: &mut [f32],
) {
    let (g, xp, wp) = (&img.g, img.xp, img.wp);
    let plane = img.hp * wp;
    let (oh, ow, s) = (g.out_h(), g.out_w(), g.stride);
    let kv = koff.len();
    let w = j1 - j0;
    let ps = panel_stride(kc, NR);
    // Output pixel of the panel's first column.
    let (pix, mut ox) = (j0 / ow, j0 % ow);
    let (mut b, mut oy) = (pix / oh, pix % oh);
    for p in 0..w.div_ceil(NR) {
        let (dst, zero) = out[p * ps..p * ps + kc * NR].split_at_mut(kv * NR);
        zero.fill(0.0);
        let cnt = NR.min(w - p * NR);
        if cnt == NR && ox + NR <= ow {
            // One output row: NR pixels s apart in one padded row.
            let po = b * plane + oy * s * wp + ox * s;
            match s {
                1 => runs::<NR, 1>(xp, koff, po, dst),
                2 => runs::<NR, 2>(xp, koff, po, dst),
                _ => runs_dyn::<NR>(xp, koff, [po; NR], s, dst),
            }
            ox += NR;
            if ox == ow {
                (ox, oy) = (0, oy + 1);
                if oy == oh {
                    (oy, b) = (0, b + 1);
                }
            }
        } else {
            // Across output rows (or the last, partial panel).
            let mut po = [usize::MAX; NR];
            for o in po.iter_mut().take(cnt) {
                *o = b * plane + oy * s * wp + ox * s;
                ox += 1;
                if ox == ow {
                    (ox, oy) = (0, oy + 1);
                    if oy == oh {
                        (oy, b) = (0, b + 1);
                    }
                }
            }
            if cnt == NR {
                gathers::<NR>(xp, koff, po, dst);
            } else {
                runs_dyn::<NR>(xp, koff, po, 0, dst);
            }
        }
    }
}

/// `dst[k][j] = xp[koff[k] + po[j]]` for every k of `koff` (NR pixels
/// across output rows).
#[inline(always)]
fn gathers<const NR: usize>(xp: &[f32], koff: &[usize], po: [usize; NR], dst: &mut [f32]) {
    let Some(&last) = koff.last() else {
        return;
    };
    let pmax = po.iter().copied().max().unwrap_or(0);
    assert!(last + pmax < xp.len() && dst.len() >= NR * koff.len());
    let (xp, dp) = (xp.as_ptr(), dst.as_mut_ptr());
    for (k, &ko) in koff.iter().enumerate() {
        for (j, &o) in po.iter().enumerate() {
            // SAFETY: ko + o <= last + pmax < xp.len() (asserted; koff is
            // increasing) and NR k + j < NR koff.len() <= dst.len().
            unsafe { *dp.add(NR * k + j) = *xp.add(ko + o) };
        }
    }
}

/// `dst[k][j] = xp[koff[k] + po + S j]` for every k of `koff`.
#[inline(always)]
fn runs<const NR: usize, const S: usize>(xp: &[f32], koff: &[usize], po: usize, dst: &mut [f32]) {
    // koff grows with k, so one check covers every read.
    let Some(&last) = koff.last() else {
        return;
    };
    assert!(last + po + S * (NR - 1) < xp.len() && dst.len() >= NR * koff.len());
    let (xp, dp) = (xp.as_ptr(), dst.as_mut_ptr());
    for (k, &ko) in koff.iter().enumerate() {
        for j in 0..NR {
            // SAFETY: ko + po + S j <= last + po + S (NR - 1) < xp.len()
            // (asserted; koff is increasing) and NR k + j < dst.len().
            unsafe { *dp.add(NR * k + j) = *xp.add(ko + po + S * j) };
        }
    }
}

/// `dst[k][j] = xp[koff[k] + po[j] + s j]` for every k of `koff`, 0 for a
/// column with `po[j] == usize::MAX`.
#[inline(always)]
fn runs_dyn<const NR: usize>(
    xp: &[f32],
    koff: &[usize],
    po: [usize; NR],
    s: usize,
    dst: &mut [f32],
) {
    for (d, &ko) in dst.chunks_exact_mut(NR).zip(koff) {
        for (j, (v, &o)) in d.iter_mut().zip(&po).enumerate() {
            *v = if o == usize::MAX {
                0.0
            } else {
                xp[ko + o + s * j]
            };
        }
    }
}
