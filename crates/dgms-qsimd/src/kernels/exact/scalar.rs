//! Scalar reference implementations: plain loops over decoded weights in
//! index order, written to be obviously right. `Isa::Scalar` runs these,
//! and the tests hold every SIMD kernel to them.

use super::conv::ConvGeometry;
use super::matrix::{DenseMatrix, QMatrix};
use crate::error::Result;
use crate::kernels::checks::{check_conv, check_depthwise};
use crate::kernels::epilogue::Epilogue;

/// Row-major decoded weights of either matrix kind.
pub(crate) trait Weights: Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    fn at(&self, r: usize, c: usize) -> f32;
}

impl Weights for QMatrix {
    fn rows(&self) -> usize {
        QMatrix::rows(self)
    }
    fn cols(&self) -> usize {
        QMatrix::cols(self)
    }
    fn at(&self, r: usize, c: usize) -> f32 {
        self.weight(r, c).unwrap_or(0.0)
    }
}

impl Weights for DenseMatrix<'_> {
    fn rows(&self) -> usize {
        DenseMatrix::rows(self)
    }
    fn cols(&self) -> usize {
        DenseMatrix::cols(self)
    }
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data()[r * DenseMatrix::cols(self) + c]
    }
}

/// y = W x, each row summed in column order. Shapes already checked.
pub(crate) fn gemv<W: Weights>(w: &W, x: &[f32], y: &mut [f32]) {
    for (r, yr) in y.iter_mut().enumerate().take(w.rows()) {
        let mut s = 0.0f32;
        for (c, &xc) in x.iter().enumerate().take(w.cols()) {
            s += w.at(r, c) * xc;
        }
        *yr = s;
    }
}

/// Y = epilogue(W X), each output summed in k order. Shapes already checked.
pub(crate) fn gemm<W: Weights>(w: &W, x: &[f32], n: usize, y: &mut [f32], epi: &Epilogue) {
    if n == 0 {
        return;
    }
    for (r, yr) in y.chunks_exact_mut(n).enumerate().take(w.rows()) {
        yr.fill(0.0);
        for (k, xk) in x.chunks_exact(n).enumerate().take(w.cols()) {
            let wk = w.at(r, k);
            for (o, &v) in yr.iter_mut().zip(xk) {
                *o += wk * v;
            }
        }
    }
    epi.apply(y, n, 0..w.rows(), 0..n, n);
}

/// Direct convolution from the definition (no im2col), the oracle for
/// [`crate::kernels::conv2d`]: `out[o, oy, ox] = epilogue(sum over ci, ky, kx of
/// w[o, (ci*kh + ky)*kw + kx] * input[ci, oy*s + ky - pad, ox*s + kx - pad])`.
pub fn conv2d_direct(
    w: &QMatrix,
    input: &[f32],
    g: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let n = check_conv(
        "conv2d_direct",
        (w.rows(), w.cols()),
        input,
        g,
        out,
        epilogue,
    )?;
    let (oh, ow) = (g.out_h(), g.out_w());
    for o in 0..w.rows() {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0f32;
                for ci in 0..g.c {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let wv = w.at(o, (ci * g.kh + ky) * g.kw + kx);
                            s += wv * input[(ci * g.h + iy as usize) * g.w + ix as usize];
                        }
                    }
                }
                out[o * n + oy * ow + ox] = s;
            }
        }
    }
    epilogue.apply(out, n, 0..w.rows(), 0..n, n);
    Ok(())
}

/// Direct depthwise k x k convolution (odd k, pad k / 2, stride 1 or 2)
/// from the definition, the oracle for [`crate::kernels::depthwise_conv`].
pub fn depthwise_direct(
    w: &QMatrix,
    input: &[f32],
    g: &ConvGeometry,
    out: &mut [f32],
    epilogue: &Epilogue,
) -> Result<()> {
    let dims = (w.rows(), w.cols());
    let n = check_depthwise("depthwise_direct", dims, input, g, out, epilogue)?;
    depthwise_loop(|ch, tap| w.at(ch, tap), input, g, out);
    epilogue.apply(out, n, 0..g.c, 0..n, n);
    Ok(())
}

/// The direct depthwise sums (`g`'s kernel, pad and stride; no epilogue)
/// with tap `ky * kw + kx` of channel `ch` from `weight(ch, tap)`: the
/// oracle above, and the engine's path for f32 depthwise weights. Shapes
/// checked by the caller.
pub(crate) fn depthwise_loop(
    weight: impl Fn(usize, usize) -> f32,
    input: &[f32],
    g: &ConvGeometry,
    out: &mut [f32],
) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let n = oh * ow;
    for ch in 0..g.c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0f32;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let v = input[(ch * g.h + iy as usize) * g.w + ix as usize];
                        s += weight(ch, ky * g.kw + kx) * v;
                    }
                }
                out[ch * n + oy * ow + ox] = s;
            }
        }
    }
}
