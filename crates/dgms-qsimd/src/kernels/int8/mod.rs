//! The int8 fast path: int8 weights x dynamically quantized int8
//! activations, accumulated exactly in i32.
//!
//! - Weights: [`QMatrixI8`], one scale per layer, s_w = max|c_k| / 127.
//! - Activations: symmetric, s_x = max|x| / 127 over the whole vector
//!   ([`gemv_i8`]) or over each column of X, i.e. each output pixel
//!   ([`gemm_i8`], [`conv2d_i8`]); q_x = round-half-even(x / s_x) in
//!   [-127, 127]. A column whose max is not finite gives NaN outputs; one
//!   whose max is below `f32::MIN_POSITIVE` (including all-zero) quantizes
//!   to 0.
//! - y = epilogue(acc * s_w * s_x) with acc = sum of q_w q_x, exact in i32.
//!
//! Every ISA computes the same acc, bit for bit, from the same quantized
//! values (the quantization and the float stages are shared code), so the
//! SIMD results equal the scalar reference's exactly. Both operands use the
//! full 8 bits, nothing saturates:
//! - AVX2 / AVX-512BW `vpmaddubsw` multiplies u8 by i8 and saturates the
//!   i16 sum of two products. The kernels feed it |a| and b * sign(a):
//!   two products of at most 127 * 127 sum to 32258 < 32767. When no
//!   activation is negative (e.g. after a ReLU) q_x is a valid u8 as it is
//!   and the sign step is skipped.
//! - AVX-512 VNNI `vpdpbusd` sums into i32 without saturation: activations
//!   go in as q_x + 128 (u8) and 128 * rowsum(q_w) is subtracted after.
//! - NEON `smull` + `sadalp` widen to i16 / i32; `sdot` (when the CPU has
//!   the dot-product extension) sums into i32.
//!
//! Error against the f32 kernels on the same codebook, per output (before
//! the epilogue), from |w - s_w q_w| <= s_w / 2 and likewise for x:
//!
//! |y_i8 - y| <= sum over k of (|w_k| s_x + |x_k| s_w + s_w s_x / 2) / 2
//!
//! (s_x is the cost of 8-bit activations, s_w that of an 8-bit codebook).
//!
//! `DGMS_QSIMD_NO_DOT=1` (read once) makes the AVX-512 and NEON kernels skip
//! `vpdpbusd` / `sdot` (to test the other path on CPUs that have them).
//!
//! Layout: [`scalar`] is the reference (`Isa::Scalar` runs it), [`quant`]
//! the activation quantization every ISA shares, [`gemv`] and [`gemm`]
//! the drivers, [`simd`] the AVX2, AVX-512 and NEON kernels, and [`kern`]
//! the choice among them.

#[cfg(test)]
mod dw_bound;
pub(crate) mod gemm;
pub(crate) mod gemv;
pub(crate) mod kern;
pub(crate) mod matrix;
pub(crate) mod quant;
pub(crate) mod scalar;
pub(crate) mod simd;
#[cfg(test)]
mod tests;

use crate::error::Result;
use crate::kernels::checks::{check_conv, check_conv_batched, check_gemm, check_len};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::exact::conv::{im2col_unchecked, ConvGeometry};
use crate::kernels::isa::{CheckedIsa, Isa};
use kern::Kern;
use matrix::QMatrixI8;

/// y = W x with int8 weights and int8 activations (`x`: cols, `y`: rows):
/// x is quantized with one scale s_x = max|x| / 127, the products summed
/// exactly in i32, the sums scaled by s_w s_x. Against [`crate::kernels::gemv`](fn@crate::kernels::gemv) on
/// the same codebook, output r is off by at most
/// sum over c of (|w_rc| s_x + |x_c| s_w + s_w s_x / 2) / 2. Every ISA gives
/// the same result, bit for bit.
///
/// ```
/// use dgms_qsimd::kernels::{gemv_i8, Isa, QMatrixI8};
/// let w = QMatrixI8::new(2, 3, &[0, 1, 2, 2, 1, 0], &[0.0, 0.5, -1.0])?;
/// let mut y = [0.0; 2];
/// gemv_i8(Isa::detect(), &w, &[1.0, 2.0, 3.0], &mut y)?;
/// // Exact: [-2, 0].
/// assert!((y[0] + 2.0).abs() < 0.05 && y[1].abs() < 0.05);
/// # Ok::<(), dgms_qsimd::QsimdError>(())
/// ```
pub fn gemv_i8(isa: Isa, w: &QMatrixI8, x: &[f32], y: &mut [f32]) -> Result<()> {
    let isa = isa.check()?;
    check_len("gemv_i8", "x (cols)", x.len(), w.cols())?;
    check_len("gemv_i8", "y (rows)", y.len(), w.rows())?;
    if isa.isa() == Isa::Scalar {
        scalar::gemv(w, x, y);
    } else {
        gemv::gemv(Kern::select(isa), w, x, y);
    }
    Ok(())
}

/// Y = epilogue(W X) with int8 weights and activations quantized per
/// column of X: `w` rows x cols, `x` cols x n and `y` rows x n, row-major.
pub fn gemm_i8(
    isa: Isa,
    w: &QMatrixI8,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    check_gemm("gemm_i8", (w.rows(), w.cols()), x, n, y, epilogue)?;
    gemm_checked(isa, w, x, n, y, epilogue);
    Ok(())
}

/// Y = epilogue(W X) for checked shapes: the scalar reference for
/// `Isa::Scalar`, the blocked driver otherwise.
fn gemm_checked(
    isa: CheckedIsa,
    w: &QMatrixI8,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    epilogue: &Epilogue,
) {
    if isa.isa() == Isa::Scalar {
        scalar::gemm(w, x, n, y, epilogue);
    } else {
        gemm::gemm(Kern::select(isa), w, x, n, y, epilogue);
    }
}

/// [`crate::kernels::conv2d`] on the int8 path: activations quantized per output
/// pixel (per im2col column), as [`gemm_i8`] on the im2col matrix gives
/// them. 1x1, stride 1, unpadded convolutions use the input as it is;
/// the SIMD ISAs quantize the others straight from the image.
pub fn conv2d_i8(
    isa: Isa,
    w: &QMatrixI8,
    input: &[f32],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    let n = check_conv(
        "conv2d_i8",
        (w.rows(), w.cols()),
        input,
        geom,
        out,
        epilogue,
    )?;
    if geom.kh == 1 && geom.kw == 1 && geom.stride == 1 && geom.pad == 0 {
        gemm_checked(isa, w, input, n, out, epilogue);
    } else if isa.isa() == Isa::Scalar {
        let mut cols = vec![0.0f32; geom.patch_len() * n];
        im2col_unchecked(input, geom, &mut cols);
        scalar::gemm(w, &cols, n, out, epilogue);
    } else if n > 0 {
        // Quantized straight from the image: no f32 im2col matrix.
        let kern = Kern::select(isa);
        let qx = quant::conv_quads(kern, w, input, geom, 1);
        gemm::gemm_quads(kern, w, &qx, n, out, epilogue);
    }
    Ok(())
}

impl ConvGeometry {
    /// [`conv2d_i8`] of `images` images stored C x N x H x W (the engine's
    /// layout) into O x N x out_h x out_w: one GEMM whose columns are
    /// (image, pixel), each column quantized on its own as in
    /// [`conv2d_i8`].
    pub(crate) fn conv_batched_i8(
        &self,
        isa: Isa,
        w: &QMatrixI8,
        input: &[f32],
        images: usize,
        out: &mut [f32],
        epilogue: &Epilogue,
    ) -> Result<()> {
        let isa = isa.check()?;
        let dims = (w.rows(), w.cols());
        let n = check_conv_batched(
            "conv_batched_i8",
            dims,
            input,
            (self, images),
            out,
            epilogue,
        )?;
        if self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0 {
            gemm_checked(isa, w, input, n, out, epilogue);
            return Ok(());
        }
        if n == 0 {
            return Ok(());
        }
        // Scalar gets the portable kernels (bit-identical by design).
        let kern = Kern::select(isa);
        let qx = quant::conv_quads(kern, w, input, self, images);
        gemm::gemm_quads(kern, w, &qx, n, out, epilogue);
        Ok(())
    }
}
