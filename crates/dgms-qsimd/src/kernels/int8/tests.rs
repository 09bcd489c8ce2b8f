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
    for kern in [Kern::PORTABLE_OFFSET, Kern::PORTABLE] {
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
    for kern in [Kern::PORTABLE_OFFSET, Kern::PORTABLE] {
        let mut got = vec![0.0; rows * images * n];
        let qx = conv_quads(kern, &w, &batch, &g, images);
        gemm_quads(kern, &w, &qx, images * n, &mut got, &Epilogue::NONE);
        same(&format!("batched conv {kern:?}"), &got, &want);
    }
}
