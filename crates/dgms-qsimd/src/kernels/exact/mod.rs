//! The exact path: f32 activations times the decoded codebook values (or
//! f32 weights), so results equal the hard-weight model's up to summation
//! order.
//!
//! - [`scalar`]: the oracle, plain loops in index order; `Isa::Scalar`
//!   runs it and the tests hold every SIMD kernel to it.
//! - [`gemv`](mod@gemv), [`gemm`](mod@gemm), [`conv`], [`depthwise`]: the drivers (threading,
//!   blocking, packing) that call the ISA kernels.
//! - [`tl2`]: the 2-bit table-lookup GEMV for K <= 4 (`QMatrix2`, `gemv_2bit`).
//! - [`simd`]: the AVX2, AVX-512 and NEON kernels, one file per ISA (and
//!   `tl2.rs`, the table-lookup kernels of every ISA).

pub(crate) mod conv;
pub(crate) mod depthwise;
pub(crate) mod gemm;
pub(crate) mod gemv;
pub(crate) mod matrix;
pub(crate) mod scalar;
pub(crate) mod simd;
pub(crate) mod tl2;

use super::checks::{check_gemm, check_len};
use super::epilogue::Epilogue;
use super::isa::{CheckedIsa, Isa};
use crate::error::Result;
use gemm::Source;
use matrix::{DenseMatrix, QMatrix};

/// y = W x with the decoded weights of `w` (`x`: cols, `y`: rows).
pub fn gemv(isa: Isa, w: &QMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    let isa = isa.check()?;
    check_len("gemv", "x (cols)", x.len(), w.cols())?;
    check_len("gemv", "y (rows)", y.len(), w.rows())?;
    if isa.isa() == Isa::Scalar {
        scalar::gemv(w, x, y);
    } else {
        gemv::gemv_q(isa, w, x, y);
    }
    Ok(())
}

/// y = W x for a full-precision matrix, threaded like [`gemv`](fn@gemv): the f32
/// baseline, and the kernel for layers kept in f32.
pub fn gemv_f32(isa: Isa, w: &DenseMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    let isa = isa.check()?;
    check_len("gemv_f32", "x (cols)", x.len(), w.cols())?;
    check_len("gemv_f32", "y (rows)", y.len(), w.rows())?;
    if isa.isa() == Isa::Scalar {
        scalar::gemv(w, x, y);
    } else {
        gemv::gemv_dense(isa, w, x, y);
    }
    Ok(())
}

/// Y = epilogue(W X): `w` rows x cols, `x` cols x n and `y` rows x n, all
/// row-major (e.g. X an im2col matrix with n output pixels).
pub fn gemm(
    isa: Isa,
    w: &QMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    check_gemm("gemm", (w.rows(), w.cols()), x, n, y, epilogue)?;
    gemm_checked(isa, &Source::Quant(w), x, n, y, epilogue);
    Ok(())
}

/// [`gemm`](fn@gemm) for a full-precision matrix on the same micro-kernels: the f32
/// baseline, and the kernel for convolutions kept in f32.
pub fn gemm_f32(
    isa: Isa,
    w: &DenseMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    check_gemm("gemm_f32", (w.rows(), w.cols()), x, n, y, epilogue)?;
    gemm_checked(isa, &Source::Dense(*w), x, n, y, epilogue);
    Ok(())
}

/// Y = epilogue(W X) for checked shapes: the scalar oracle for
/// `Isa::Scalar`, the blocked driver otherwise.
pub(crate) fn gemm_checked(
    isa: CheckedIsa,
    w: &Source,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) {
    if isa.isa() != Isa::Scalar {
        return gemm::gemm(isa, w, x, n, y, epilogue);
    }
    match w {
        Source::Quant(q) => scalar::gemm(*q, x, n, y, epilogue),
        Source::Dense(d) => scalar::gemm(d, x, n, y, epilogue),
    }
}
