//! Convolution geometry, im2col, and conv2d on top of [`super::gemm`](mod@super::gemm).

use rayon::prelude::*;

use super::gemm::{gemm_rhs, Rhs, Source};
use super::gemm_checked;
use super::matrix::{DenseMatrix, QMatrix};
use crate::error::{QsimdError, Result};
use crate::kernels::checks::{check_conv, check_conv_batched, check_len};
use crate::kernels::epilogue::Epilogue;
use crate::kernels::isa::Isa;

/// A 2-D convolution over one CHW image: `c` input channels of `h` x `w`,
/// a `kh` x `kw` kernel, the same `stride` and zero `pad` on both axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes, both sides).
    pub pad: usize,
}

impl ConvGeometry {
    /// Output height (0 if the kernel does not fit).
    pub fn out_h(&self) -> usize {
        out_len(self.h, self.kh, self.stride, self.pad)
    }

    /// Output width (0 if the kernel does not fit).
    pub fn out_w(&self) -> usize {
        out_len(self.w, self.kw, self.stride, self.pad)
    }

    /// Values in the input image: c * h * w.
    pub fn input_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Length of one im2col column: c * kh * kw (the weight matrix's cols).
    pub fn patch_len(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per channel: out_h * out_w.
    pub fn out_pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Errors unless every size is positive and the kernel fits the
    /// padded input.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |reason: String| Err(QsimdError::InvalidGeometry { op, reason });
        if self.c == 0 || self.h == 0 || self.w == 0 || self.kh == 0 || self.kw == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if self.stride == 0 {
            return bad("stride is 0".to_string());
        }
        if self.h + 2 * self.pad < self.kh || self.w + 2 * self.pad < self.kw {
            return bad(format!(
                "kernel {}x{} does not fit the padded input {}x{}",
                self.kh,
                self.kw,
                self.h + 2 * self.pad,
                self.w + 2 * self.pad
            ));
        }
        Ok(())
    }
}

fn out_len(n: usize, k: usize, stride: usize, pad: usize) -> usize {
    if stride == 0 || n + 2 * pad < k {
        0
    } else {
        (n + 2 * pad - k) / stride + 1
    }
}

/// Unfolds a CHW image into a (c*kh*kw) x (out_h*out_w) row-major matrix:
/// row `(ci*kh + ky)*kw + kx`, column `oy*out_w + ox` holds
/// `input[ci, oy*stride + ky - pad, ox*stride + kx - pad]` (0 outside),
/// matching a PyTorch O x C x kh x kw weight flattened to O x (C*kh*kw).
pub fn im2col(input: &[f32], geom: &ConvGeometry, out: &mut [f32]) -> Result<()> {
    geom.validate("im2col")?;
    check_len("im2col", "input (C*H*W)", input.len(), geom.input_len())?;
    check_len(
        "im2col",
        "output (C*kh*kw * out_h*out_w)",
        out.len(),
        geom.patch_len() * geom.out_pixels(),
    )?;
    im2col_unchecked(input, geom, out);
    Ok(())
}

pub(crate) fn im2col_unchecked(input: &[f32], g: &ConvGeometry, out: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let ohw = oh * ow;
    if ohw == 0 {
        return;
    }
    let fill = |(row, dst): (usize, &mut [f32])| {
        let ci = row / (g.kh * g.kw);
        let plane = &input[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        im2col_row(plane, g, row % (g.kh * g.kw), 0..oh, dst);
    };
    if out.len() >= 1 << 16 {
        out.par_chunks_mut(ohw).enumerate().for_each(fill);
    } else {
        out.chunks_mut(ohw).enumerate().for_each(fill);
    }
}

/// Output rows `oys` of the im2col row of kernel tap `tap` (= ky kw + kx)
/// of one input `plane` (h x w): `dst` holds `oys.len()` x out_w values,
/// zero where the tap falls on the padding. Inlined into its callers so
/// that a caller compiled for an ISA (the int8 quantizer) vectorises it
/// at that width.
#[inline(always)]
pub(crate) fn im2col_row(
    plane: &[f32],
    g: &ConvGeometry,
    tap: usize,
    oys: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let ow = g.out_w();
    let (ky, kx) = (tap / g.kw, tap % g.kw);
    // Output columns whose input column lies inside the image.
    let ox_lo = g.pad.saturating_sub(kx).div_ceil(g.stride).min(ow);
    let ox_hi = if g.w + g.pad > kx {
        ((g.w + g.pad - kx - 1) / g.stride + 1).clamp(ox_lo, ow)
    } else {
        ox_lo
    };
    for (oy, d) in oys.zip(dst.chunks_exact_mut(ow)) {
        let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
        if iy >= g.h {
            d.fill(0.0);
            continue;
        }
        let src = &plane[iy * g.w..(iy + 1) * g.w];
        d[..ox_lo].fill(0.0);
        d[ox_hi..].fill(0.0);
        if ox_hi == ox_lo {
            continue;
        }
        let (ix0, len) = (ox_lo * g.stride + kx - g.pad, ox_hi - ox_lo);
        // The input values the run reads, exactly: no bounds checks left
        // in the loops, and stride 2 (ResNet's and MobileNet's downsampling
        // convs, the stems) with a constant stride LLVM vectorises.
        let src = &src[ix0..ix0 + (len - 1) * g.stride + 1];
        let d = &mut d[ox_lo..ox_hi];
        match g.stride {
            1 => d.copy_from_slice(src),
            2 => {
                for (i, o) in d.iter_mut().enumerate() {
                    *o = src[2 * i];
                }
            }
            s => {
                for (o, v) in d.iter_mut().zip(src.iter().step_by(s)) {
                    *o = *v;
                }
            }
        }
    }
}

/// Convolution of a CHW image with `w` (O x C*kh*kw, PyTorch order) into
/// `out` (O x out_h*out_w), with the epilogue per output channel. A 1x1,
/// stride 1, unpadded convolution is a GEMM on the input as it is; others
/// are a GEMM whose im2col right-hand side is packed straight from the
/// image (never materialised).
pub fn conv2d(
    isa: Isa,
    w: &QMatrix,
    input: &[f32],
    geom: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let isa = isa.check()?;
    let n = check_conv("conv2d", (w.rows(), w.cols()), input, geom, out, epilogue)?;
    let w = Source::Quant(w);
    if geom.kh == 1 && geom.kw == 1 && geom.stride == 1 && geom.pad == 0 {
        gemm_checked(isa, &w, input, n, out, epilogue);
    } else if isa.isa() == Isa::Scalar {
        let mut cols = vec![0.0f32; geom.patch_len() * n];
        im2col_unchecked(input, geom, &mut cols);
        gemm_checked(isa, &w, &cols, n, out, epilogue);
    } else {
        let rhs = Rhs::Im2col {
            input,
            geom: *geom,
            images: 1,
        };
        gemm_rhs(isa, &w, &rhs, out, epilogue);
    }
    Ok(())
}

impl ConvGeometry {
    /// The convolution of `images` images stored C x N x H x W (the
    /// engine's layout) into O x N x out_h x out_w: one GEMM whose columns
    /// are (image, pixel), with the im2col right-hand side packed straight
    /// from the images.
    pub(crate) fn conv_batched(
        &self,
        isa: Isa,
        w: &QMatrix,
        input: &[f32],
        images: usize,
        out: &mut [f32],
        epilogue: &Epilogue,
    ) -> Result<()> {
        self.batched(isa, &Source::Quant(w), input, images, out, epilogue)
    }

    /// [`ConvGeometry::conv_batched`] for full-precision weights.
    pub(crate) fn conv_batched_f32(
        &self,
        isa: Isa,
        w: &DenseMatrix,
        input: &[f32],
        images: usize,
        out: &mut [f32],
        epilogue: &Epilogue,
    ) -> Result<()> {
        self.batched(isa, &Source::Dense(*w), input, images, out, epilogue)
    }

    fn batched(
        &self,
        isa: Isa,
        w: &Source,
        input: &[f32],
        images: usize,
        out: &mut [f32],
        epilogue: &Epilogue,
    ) -> Result<()> {
        let isa = isa.check()?;
        let dims = (w.rows(), w.cols());
        let n = check_conv_batched("conv_batched", dims, input, (self, images), out, epilogue)?;
        let rhs = Rhs::Im2col {
            input,
            geom: *self,
            images,
        };
        if n == 0 {
            return Ok(());
        }
        if isa.isa() == Isa::Scalar {
            let mut m = vec![0.0f32; self.patch_len() * n];
            rhs.materialise(&mut m);
            gemm_checked(isa, w, &m, n, out, epilogue);
        } else {
            gemm_rhs(isa, w, &rhs, out, epilogue);
        }
        Ok(())
    }
}
