//! Bit-packed inference kernels and their run-time dispatch.
//!
//! Weights are a [`QMatrix`] of codebook indices (4-bit layout for
//! K <= 16, 8-bit up to 256) decoded inside the kernels; activations are
//! f32, so results equal the hard-weight model's up to summation order.
//! Every entry point takes the [`Isa`] explicitly (pick one with
//! [`Isa::detect`] or [`Isa::from_env`]), checks that this CPU has it and
//! that all shapes agree, and returns a typed error otherwise.
//!
//! ```
//! use dgms_qsimd::kernels::{gemv, Isa, QMatrix};
//! let w = QMatrix::new(2, 3, &[0, 1, 2, 2, 1, 0], &[0.0, 0.5, -1.0])?;
//! let mut y = [0.0; 2];
//! gemv(Isa::detect(), &w, &[1.0, 2.0, 3.0], &mut y)?;
//! assert_eq!(y, [-2.0, 0.0]);
//! # Ok::<(), dgms_qsimd::QsimdError>(())
//! ```
//!
//! The int8 fast path ([`gemv_i8`], [`gemm_i8`], [`conv2d_i8`] over a
//! [`QMatrixI8`]) quantizes the activations on the fly (per vector, or per
//! output pixel) and sums exactly in i32; [`gemv_i8`] states its error
//! bound against the exact kernels.

mod conv;
mod depthwise;
mod epilogue;
mod gemm;
mod gemv;
mod int8;
mod int8_gemm;
mod int8_gemv;
mod int8_matrix;
mod int8_quant;
mod isa;
mod matrix;
pub mod reference {
    //! Scalar reference implementations (what `Isa::Scalar` runs, and the
    //! oracle the SIMD kernels are tested against).
    pub use super::scalar::{conv2d_direct, depthwise3x3_direct};
}
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod int8_avx2;
#[cfg(target_arch = "x86_64")]
mod int8_avx512;
#[cfg(target_arch = "aarch64")]
mod int8_neon;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use conv::{conv2d, im2col, ConvGeometry};
pub use depthwise::depthwise3x3;
pub use epilogue::Epilogue;
pub use int8::{conv2d_i8, gemm_i8, gemv_i8};
pub use int8_matrix::{QMatrixI8, MAX_COLS_I8};
pub use isa::{Isa, ISA_ENV_VAR};
pub use matrix::{DenseMatrix, Layout, QMatrix};
pub(crate) use scalar::depthwise3x3_loop;

use crate::error::Result;
use conv::check_len;

/// y = W x with the decoded weights of `w` (`x`: cols, `y`: rows).
pub fn gemv(isa: Isa, w: &QMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    isa.ensure_available()?;
    check_len("gemv", "x (cols)", x.len(), w.cols())?;
    check_len("gemv", "y (rows)", y.len(), w.rows())?;
    if isa == Isa::Scalar {
        scalar::gemv(w, x, y);
    } else {
        gemv::gemv_q(isa, w, x, y);
    }
    Ok(())
}

/// y = W x for a full-precision matrix, threaded like [`gemv`]: the f32
/// baseline, and the kernel for layers kept in f32.
pub fn gemv_f32(isa: Isa, w: &DenseMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    isa.ensure_available()?;
    check_len("gemv_f32", "x (cols)", x.len(), w.cols())?;
    check_len("gemv_f32", "y (rows)", y.len(), w.rows())?;
    if isa == Isa::Scalar {
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
    isa.ensure_available()?;
    check_gemm("gemm", w.rows(), w.cols(), x, n, y, epilogue)?;
    if isa == Isa::Scalar {
        scalar::gemm(w, x, n, y, epilogue);
    } else {
        gemm::gemm(isa, &gemm::Source::Quant(w), x, n, y, epilogue);
    }
    Ok(())
}

/// [`gemm`] for a full-precision matrix on the same micro-kernels: the f32
/// baseline, and the kernel for convolutions kept in f32.
pub fn gemm_f32(
    isa: Isa,
    w: &DenseMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    isa.ensure_available()?;
    check_gemm("gemm_f32", w.rows(), w.cols(), x, n, y, epilogue)?;
    if isa == Isa::Scalar {
        scalar::gemm(w, x, n, y, epilogue);
    } else {
        gemm::gemm(isa, &gemm::Source::Dense(*w), x, n, y, epilogue);
    }
    Ok(())
}

fn check_gemm(
    op: &'static str,
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &[f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let (xl, yl) = (cols.checked_mul(n), rows.checked_mul(n));
    check_len(op, "x (cols * n)", x.len(), xl.unwrap_or(usize::MAX))?;
    check_len(op, "y (rows * n)", y.len(), yl.unwrap_or(usize::MAX))?;
    epilogue.validate(op, rows, n)
}
