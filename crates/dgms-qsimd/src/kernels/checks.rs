//! The argument checks of the public entry points, in one place (the
//! "checks" column of the ISA contract in [`super`]). Each returns the
//! typed error that names the operation and the argument at fault; after
//! them the drivers index without further checks. The ISA itself is
//! checked by [`super::Isa::check`], whose token the drivers take.

use super::epilogue::Epilogue;
use super::exact::conv::ConvGeometry;
use crate::error::{QsimdError, Result};

/// Errors unless `got == expected`.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    got: usize,
    expected: usize,
) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(QsimdError::ShapeMismatch {
            op,
            what,
            expected,
            got,
        })
    }
}

/// A GEMM of a `rows` x `cols` matrix: `x` is cols x n, `y` rows x n, and
/// the epilogue fits a rows x n output.
pub(crate) fn check_gemm(
    op: &'static str,
    (rows, cols): (usize, usize),
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

/// A convolution of one image with a `(rows, cols)` weight matrix: valid
/// geometry, weight columns, input and output lengths, epilogue. Returns
/// the output pixels per channel.
pub(crate) fn check_conv(
    op: &'static str,
    (rows, cols): (usize, usize),
    input: &[f32],
    geom: &ConvGeometry,
    out: &[f32],
    epilogue: &Epilogue,
) -> Result<usize> {
    geom.validate(op)?;
    check_len(op, "weight columns (C*kh*kw)", cols, geom.patch_len())?;
    check_len(op, "input (C*H*W)", input.len(), geom.input_len())?;
    let n = geom.out_pixels();
    check_len(op, "output (O*out_h*out_w)", out.len(), rows * n)?;
    epilogue.validate(op, rows, n)?;
    Ok(n)
}

/// [`check_conv`] for `images` images stored C x N x H x W (the engine's
/// layout). Returns the GEMM's columns, images * out pixels.
pub(crate) fn check_conv_batched(
    op: &'static str,
    (rows, cols): (usize, usize),
    input: &[f32],
    (geom, images): (&ConvGeometry, usize),
    out: &[f32],
    epilogue: &Epilogue,
) -> Result<usize> {
    geom.validate(op)?;
    check_len(op, "weight columns (C*kh*kw)", cols, geom.patch_len())?;
    let len = images * geom.input_len();
    check_len(op, "input (C*N*H*W)", input.len(), len)?;
    let n = images * geom.out_pixels();
    check_len(op, "output (O*N*out_h*out_w)", out.len(), rows * n)?;
    epilogue.validate(op, rows, n)?;
    Ok(n)
}

/// A depthwise convolution: a square odd kernel k x k, pad k / 2 (the
/// output keeps the input's size at stride 1), stride 1 or 2, a C x k*k
/// weight matrix, input and output lengths, epilogue. Returns the output
/// pixels per channel.
pub(crate) fn check_depthwise(
    op: &'static str,
    (rows, cols): (usize, usize),
    input: &[f32],
    g: &ConvGeometry,
    out: &[f32],
    epilogue: &Epilogue,
) -> Result<usize> {
    g.validate(op)?;
    let k = g.kh;
    if g.kw != k || k.is_multiple_of(2) || g.pad != k / 2 || !(g.stride == 1 || g.stride == 2) {
        return Err(QsimdError::InvalidGeometry {
            op,
            reason: format!(
                "expected a square odd kernel k x k, pad k / 2, stride 1 or 2; got {}x{}, pad {}, stride {}",
                g.kh, g.kw, g.pad, g.stride
            ),
        });
    }
    check_len(op, "weight rows (channels)", rows, g.c)?;
    check_len(op, "weight columns (kh*kw)", cols, k * k)?;
    check_len(op, "input (C*H*W)", input.len(), g.input_len())?;
    let n = g.out_pixels();
    check_len(op, "output (C*out_h*out_w)", out.len(), g.c * n)?;
    epilogue.validate(op, g.c, n)?;
    Ok(n)
}
