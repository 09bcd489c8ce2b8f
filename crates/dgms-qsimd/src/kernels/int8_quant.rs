//! Activation quantization for the int8 GEMM: X (or a convolution's
//! im2col matrix, without building it in f32) to per-column scales and
//! `[k/4][n][4]` byte quads. Shares `quant` and `scales` with the scalar
//! reference, so every ISA sees the same int8 activations.

use rayon::prelude::*;

use super::conv::{im2col_unchecked, ConvGeometry};
use super::int8::{col_scales, quant, scales, Kern};
use super::int8_matrix::QMatrixI8;

/// Activations quantized per column of X (`cols` x `n`): `q[k/4][n][4]`
/// bytes, the 4 bytes of column j being the 4 consecutive k one lane
/// reduces (k zero-padded to the matrix's padded columns; offset kernels
/// get q + 128), and the per-column dequantization factors s_w * s_x.
pub(super) struct Quads {
    pub(super) q: Vec<u8>,
    pub(super) deq: Vec<f32>,
    /// No activation is negative: every finite q is in 0..=127.
    pub(super) nonneg: bool,
}

/// The byte the kernels of `kern` take for q.
pub(super) fn flip(kern: Kern) -> u8 {
    if kern.offset() {
        0x80
    } else {
        0
    }
}

/// Writes the quads of 4 rows of X (`rows[kk]`: row 4 kq + kk, n values)
/// quantized with the per-column `inv`.
#[inline(always)]
pub(super) fn quantize_quad(rows: [&[f32]; 4], inv: &[f32], flip: u8, out: &mut [u8]) {
    let it = out.chunks_exact_mut(4).zip(inv).zip(rows[0]).zip(rows[1]);
    for ((((o, &iv), &a), &b), (&c, &d)) in it.zip(rows[2].iter().zip(rows[3])) {
        let q = |v: f32| quant(v, iv) as u8 ^ flip;
        o.copy_from_slice(&[q(a), q(b), q(c), q(d)]);
    }
}

/// [`Quads`] of X, streaming X by rows (in parallel for large X).
pub(super) fn quantize(kern: Kern, w: &QMatrixI8, x: &[f32], n: usize) -> Quads {
    let (cols, flip) = (w.cols(), flip(kern));
    let (inv, deq, nonneg) = col_scales(x, n, w.weight_scale());
    let mut q = vec![0u8; w.cols_pad() * n];
    let zero = vec![0.0f32; n];
    let fill = |(kq, out): (usize, &mut [u8])| {
        let row = |kk: usize| {
            let k = 4 * kq + kk;
            if k < cols {
                &x[k * n..(k + 1) * n]
            } else {
                &zero[..]
            }
        };
        quantize_quad([row(0), row(1), row(2), row(3)], &inv, flip, out);
    };
    if q.len() >= 1 << 16 {
        q.par_chunks_mut(4 * n).enumerate().for_each(fill);
    } else {
        q.chunks_mut(4 * n).enumerate().for_each(fill);
    }
    Quads { q, deq, nonneg }
}

/// [`Quads`] of the im2col matrix of `images` images stored C x N x H x W
/// (one image: CHW; see [`super::im2col`]), whose columns are (image,
/// output pixel), equal to [`quantize`] of it: a column's max is the max
/// of the per-pixel channel maxima over its window (padding adds zeros),
/// and the rows come 4 channels at a time (4 kh kw rows: whole quads)
/// through a small im2col buffer, in parallel over channel groups.
pub(super) fn conv_quads(
    kern: Kern,
    w: &QMatrixI8,
    input: &[f32],
    g: &ConvGeometry,
    images: usize,
) -> Quads {
    let (hw, khw, pixels) = (g.h * g.w, g.kh * g.kw, g.out_pixels());
    let n = images * pixels;
    // Per image and input pixel: max |x| over the channels, and x * 0
    // summed (NaN iff some channel there is not finite), as `col_scales`
    // does. Plane i of the input is channel i / images of image i % images.
    let len = images * hw;
    let (mut cm, mut cz, mut lo) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0f32; len]);
    for (i, plane) in input.chunks_exact(hw).enumerate() {
        let b = i % images;
        let at = b * hw..(b + 1) * hw;
        let it = cm[at.clone()]
            .iter_mut()
            .zip(cz[at.clone()].iter_mut())
            .zip(lo[at].iter_mut());
        for (((m, z), lo), &v) in it.zip(plane) {
            *m = m.max(v.abs());
            *z += v * 0.0;
            *lo = lo.min(v);
        }
    }
    let nonneg = lo.iter().all(|&v| v >= 0.0);
    let (mut inv, mut deq) = (vec![0.0f32; n], vec![0.0f32; n]);
    for (j, (iv, dq)) in inv.iter_mut().zip(deq.iter_mut()).enumerate() {
        let (b, p) = (j / pixels, j % pixels);
        let (cm, cz) = (&cm[b * hw..(b + 1) * hw], &cz[b * hw..(b + 1) * hw]);
        let (oy, ox) = (p / g.out_w(), p % g.out_w());
        let (mut m, mut bad) = (0.0f32, false);
        for ky in 0..g.kh {
            let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
            if iy >= g.h {
                continue;
            }
            for kx in 0..g.kw {
                let ix = (ox * g.stride + kx).wrapping_sub(g.pad);
                if ix < g.w {
                    m = m.max(cm[iy * g.w + ix]);
                    bad |= cz[iy * g.w + ix].is_nan();
                }
            }
        }
        (*iv, *dq) = scales(m, bad, w.weight_scale());
    }
    let (cols, flip) = (w.cols(), flip(kern));
    let mut q = vec![0u8; w.cols_pad() * n];
    let zero = vec![0.0f32; pixels];
    // Chunk c: quads c kh kw .. (c + 1) kh kw, i.e. channels 4c .. 4c + 4;
    // `buf` (one per worker: im2col writes all of it) holds their rows.
    // im2col of the planes (channel, image) as one multi-channel image
    // gives row (channel, ky, kx) of image b at ((ch * images + b) khw +
    // ky kw + kx) * pixels.
    let group = |buf: &mut Vec<f32>, (c, out): (usize, &mut [u8])| {
        let c0 = (4 * c).min(g.c);
        let cg = (g.c - c0).min(4);
        let buf = &mut buf[..cg * khw * n];
        if cg > 0 {
            let sub = ConvGeometry {
                c: cg * images,
                ..*g
            };
            let planes = &input[c0 * images * hw..(c0 + cg) * images * hw];
            im2col_unchecked(planes, &sub, buf);
        }
        for (kq, o) in out.chunks_exact_mut(4 * n).enumerate() {
            for (b, ob) in o.chunks_exact_mut(4 * pixels).enumerate() {
                let row = |kk: usize| {
                    let r = 4 * kq + kk;
                    if r < cg * khw && c0 * khw + r < cols {
                        let at = ((r / khw * images + b) * khw + r % khw) * pixels;
                        &buf[at..at + pixels]
                    } else {
                        &zero[..]
                    }
                };
                let inv = &inv[b * pixels..(b + 1) * pixels];
                quantize_quad([row(0), row(1), row(2), row(3)], inv, flip, ob);
            }
        }
    };
    let (chunk, buf_len) = (khw * 4 * n, 4 * khw * n);
    if q.len() >= 1 << 16 {
        q.par_chunks_mut(chunk)
            .enumerate()
            .for_each_init(|| vec![0.0f32; buf_len], group);
    } else {
        let mut buf = vec![0.0f32; buf_len];
        q.chunks_mut(chunk)
            .enumerate()
            .for_each(|job| group(&mut buf, job));
    }
    Quads { q, deq, nonneg }
}

#[cfg(test)]
mod tests {
    //! The VNNI offset convention (u8 activations, row-sum correction,
    //! padded columns) through the real drivers with portable kernels that
    //! use it, on any CPU, against the scalar reference; codebook entry 0
    //! is nonzero so that padding matters.
    use super::*;
    use crate::kernels::epilogue::Epilogue;
    use crate::kernels::int8::{gemm_ref, gemv_ref};
    use crate::kernels::int8_gemm::{gemm, gemm_quads};
    use crate::kernels::int8_gemv::gemv;

    fn values(seed: &mut u64, len: usize, nonneg: bool) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let v = (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                if nonneg {
                    v.abs()
                } else {
                    v
                }
            })
            .collect()
    }

    fn same(what: &str, got: &[f32], want: &[f32]) {
        let eq = got
            .iter()
            .zip(want)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(eq, "{what}: {got:?} != {want:?}");
    }

    #[test]
    fn offset_kernels_match_reference() {
        let mut seed = 1u64;
        let shapes = [
            (1, 1, 1, 2),
            (17, 13, 5, 5),
            (33, 70, 19, 16),
            (20, 9, 40, 17),
        ];
        let big = [(40, 600, 33, 200), (16, 1030, 3, 16), (70, 200, 300, 16)];
        for (rows, cols, n, k) in shapes.into_iter().chain(big) {
            let cb: Vec<f32> = (0..k)
                .map(|i| 0.25 + (i as f32 * 0.37) % 1.5 - 0.7)
                .collect();
            let idx: Vec<u8> = values(&mut seed, rows * cols, true)
                .iter()
                .map(|v| ((v * k as f32) as usize).min(k - 1) as u8)
                .collect();
            let w = QMatrixI8::new(rows, cols, &idx, &cb).unwrap();
            assert_ne!(w.codebook_i8()[0], 0);
            for (kern, nonneg) in [(Kern::PortableOffset, false), (Kern::PortableOffset, true)]
                .into_iter()
                .chain([(Kern::Portable, false)])
            {
                let what = format!("{kern:?} {rows}x{cols}x{n} K={k} nonneg={nonneg}");
                let x = values(&mut seed, cols * n, nonneg);
                let (mut got, mut want) = (vec![0.0; rows], vec![0.0; rows]);
                gemv(kern, &w, &x[..cols], &mut got);
                gemv_ref(&w, &x[..cols], &mut want);
                same(&format!("gemv {what}"), &got, &want);
                let (mut got, mut want) = (vec![0.0; rows * n], vec![0.0; rows * n]);
                gemm(kern, &w, &x, n, &mut got, &Epilogue::NONE);
                gemm_ref(&w, &x, n, &mut want, &Epilogue::NONE);
                same(&format!("gemm {what}"), &got, &want);
            }
        }
        // A convolution quantized from the image, against im2col + reference.
        let g = ConvGeometry {
            c: 6,
            h: 5,
            w: 4,
            kh: 3,
            kw: 2,
            stride: 1,
            pad: 1,
        };
        let (rows, cols, n) = (9, g.patch_len(), g.out_pixels());
        let idx: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 5) as u8).collect();
        let w = QMatrixI8::new(rows, cols, &idx, &[0.5, -1.0, 0.25, 2.0, -0.125]).unwrap();
        let input = values(&mut seed, g.input_len(), false);
        let mut cols_f32 = vec![0.0; cols * n];
        im2col_unchecked(&input, &g, &mut cols_f32);
        let mut want = vec![0.0; rows * n];
        gemm_ref(&w, &cols_f32, n, &mut want, &Epilogue::NONE);
        for kern in [Kern::PortableOffset, Kern::Portable] {
            let mut got = vec![0.0; rows * n];
            let qx = conv_quads(kern, &w, &input, &g, 1);
            gemm_quads(kern, &w, &qx, n, &mut got, &Epilogue::NONE);
            same(&format!("conv {kern:?}"), &got, &want);
        }
        // Three images stored C x N x H x W: columns (image, pixel), each
        // image's quantized on its own.
        let images = 3;
        let batch = values(&mut seed, images * g.input_len(), false);
        let mut cols_f32 = vec![0.0; cols * images * n];
        for b in 0..images {
            let image: Vec<f32> = (0..g.c)
                .flat_map(|c| {
                    let plane = (c * images + b) * g.h * g.w;
                    batch[plane..plane + g.h * g.w].to_vec()
                })
                .collect();
            let mut one = vec![0.0; cols * n];
            im2col_unchecked(&image, &g, &mut one);
            for (r, row) in one.chunks_exact(n).enumerate() {
                let at = r * images * n + b * n;
                cols_f32[at..at + n].copy_from_slice(row);
            }
        }
        let mut want = vec![0.0; rows * images * n];
        gemm_ref(&w, &cols_f32, images * n, &mut want, &Epilogue::NONE);
        for kern in [Kern::PortableOffset, Kern::Portable] {
            let mut got = vec![0.0; rows * images * n];
            let qx = conv_quads(kern, &w, &batch, &g, images);
            gemm_quads(kern, &w, &qx, images * n, &mut got, &Epilogue::NONE);
            same(&format!("batched conv {kern:?}"), &got, &want);
        }
    }
}
