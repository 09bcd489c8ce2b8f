//! The VNNI offset convention (u8 activations, row-sum correction,
//! padded columns) through the real drivers with portable kernels that
//! use it, on any CPU, against the scalar reference; codebook entry 0
//! is nonzero so that padding matters.

use super::gemm::{gemm, gemm_quads};
use super::gemv::gemv;
use super::kern::Kern;
use super::matrix::QMatrixI8;
use super::quant::conv_quads;
use super::scalar::{gemm as gemm_ref, gemv as gemv_ref};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::exact::conv::{im2col_unchecked, ConvGeometry};

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
    // The last one has quads rows over 16 KiB: packed tiles, not read in
    // place (gemm::DIRECT_LDB_MAX).
    let big = [
        (40, 600, 33, 200),
        (16, 1030, 3, 16),
        (70, 200, 300, 16),
        (20, 40, 4500, 16),
    ];
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
        for (kern, nonneg) in [
            (Kern::PORTABLE_OFFSET, false),
            (Kern::PORTABLE_OFFSET, true),
        ]
        .into_iter()
        .chain([(Kern::PORTABLE, false)])
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
}

/// A convolution quantized from the images (C x N x H x W), against
/// im2col + the reference, for one and several images; `poison` puts an
/// infinity into one input value (the columns whose window holds it are
/// NaN on both sides).
fn check_conv_quads(seed: &mut u64, g: &ConvGeometry, rows: usize, images: usize, poison: bool) {
    let (cols, n) = (g.patch_len(), g.out_pixels());
    let idx: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 5) as u8).collect();
    let w = QMatrixI8::new(rows, cols, &idx, &[0.5, -1.0, 0.25, 2.0, -0.125]).unwrap();
    let mut batch = values(seed, images * g.input_len(), false);
    if poison {
        let at = batch.len() / 3;
        batch[at] = f32::INFINITY;
    }
    let mut cols_f32 = vec![0.0; cols * images * n];
    for b in 0..images {
        let image: Vec<f32> = (0..g.c)
            .flat_map(|c| {
                let plane = (c * images + b) * g.h * g.w;
                batch[plane..plane + g.h * g.w].to_vec()
            })
            .collect();
        let mut one = vec![0.0; cols * n];
        im2col_unchecked(&image, g, &mut one);
        for (r, row) in one.chunks_exact(n).enumerate() {
            let at = r * images * n + b * n;
            cols_f32[at..at + n].copy_from_slice(row);
        }
    }
    let mut want = vec![0.0; rows * images * n];
    gemm_ref(&w, &cols_f32, images * n, &mut want, &Epilogue::NONE);
    assert_eq!(want.iter().any(|v| v.is_nan()), poison);
    for kern in [Kern::PORTABLE_OFFSET, Kern::PORTABLE] {
        let mut got = vec![0.0; rows * images * n];
        let qx = conv_quads(kern, &w, &batch, g, images);
        gemm_quads(kern, &w, &qx, images * n, &mut got, &Epilogue::NONE);
        let what = format!("conv {g:?} x {images} {kern:?}");
        let eq = got
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        assert!(eq, "{what}");
    }
}

#[test]
fn conv_quads_equal_quantized_im2col() {
    let mut seed = 7u64;
    let small = ConvGeometry {
        c: 6,
        h: 5,
        w: 4,
        kh: 3,
        kw: 2,
        stride: 1,
        pad: 1,
    };
    check_conv_quads(&mut seed, &small, 9, 1, false);
    check_conv_quads(&mut seed, &small, 9, 3, false);
    // A stem: 7x7 stride 2 over few channels, large enough to split
    // into several blocks of output rows and to run in parallel.
    let stem = ConvGeometry {
        c: 5,
        h: 41,
        w: 38,
        kh: 7,
        kw: 7,
        stride: 2,
        pad: 3,
    };
    check_conv_quads(&mut seed, &stem, 20, 1, false);
    check_conv_quads(&mut seed, &stem, 20, 2, false);
    check_conv_quads(&mut seed, &stem, 20, 2, true);
}
