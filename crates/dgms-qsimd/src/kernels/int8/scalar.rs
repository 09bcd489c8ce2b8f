//! The int8 path's scalar reference: plain loops over the int8 weights,
//! with the quantization every ISA shares ([`super::quant`]). `Isa::Scalar`
//! runs it, and the tests hold every SIMD kernel to it bit for bit.

use super::matrix::QMatrixI8;
use super::quant::{col_scales, quant, vec_scales};
use crate::kernels::epilogue::Epilogue;

/// Scalar reference GEMV: plain loops over the int8 weights.
pub(crate) fn gemv(w: &QMatrixI8, x: &[f32], y: &mut [f32]) {
    let (inv, deq, _) = vec_scales(x, w.weight_scale());
    let q: Vec<i32> = x.iter().map(|&v| i32::from(quant(v, inv))).collect();
    let wq = w.to_i8();
    for (yr, wr) in y.iter_mut().zip(wq.chunks_exact(w.cols())) {
        let acc: i32 = wr.iter().zip(&q).map(|(&a, &b)| i32::from(a) * b).sum();
        *yr = acc as f32 * deq;
    }
}

/// Scalar reference GEMM: plain loops over the int8 weights, then the
/// epilogue. Shapes already checked.
pub(crate) fn gemm(w: &QMatrixI8, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) {
    if n == 0 {
        return;
    }
    let (inv, deq, _) = col_scales(x, n, w.weight_scale());
    let q: Vec<i32> = x
        .chunks_exact(n)
        .flat_map(|row| row.iter().zip(&inv).map(|(&v, &i)| i32::from(quant(v, i))))
        .collect();
    let wq = w.to_i8();
    let mut acc = vec![0i32; n];
    for (yr, wr) in y.chunks_exact_mut(n).zip(wq.chunks_exact(w.cols())) {
        acc.fill(0);
        for (&wk, qk) in wr.iter().zip(q.chunks_exact(n)) {
            for (a, &v) in acc.iter_mut().zip(qk) {
                *a += i32::from(wk) * v;
            }
        }
        for ((o, &a), &d) in yr.iter_mut().zip(&acc).zip(&deq) {
            *o = a as f32 * d;
        }
    }
    epi.apply(y, n, 0..w.rows(), 0..n, n);
}
