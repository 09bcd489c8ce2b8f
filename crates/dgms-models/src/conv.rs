//! The one place where the models run a 2-D convolution.
//!
//! Every [`crate::QConv2d`] calls [`conv2d`], so a faster kernel (a custom op
//! with its own backward) can replace candle's convolution here without
//! touching the layers.

use candle_core::{Result, Tensor};

/// 2-D convolution of `x` (N, C_in, H, W) with `w` (C_out, C_in / groups,
/// KH, KW), square `stride` and zero `padding`, no dilation. Differentiable
/// with respect to `x` and `w`.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, groups)
}
