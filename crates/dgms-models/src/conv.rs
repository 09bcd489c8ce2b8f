//! The one place where the models run a 2-D convolution.
//!
//! Every [`crate::QConv2d`] calls [`conv2d`], which runs the project's
//! im2col + GEMM custom op ([`crate::conv_op`], with its own backward) by
//! default, or candle's own convolution when the backend is set to
//! [`ConvBackend::Candle`] (for comparisons: `cargo xtask bench-train`).
//! candle's CPU conv backward is a direct loop, about 10x slower for the
//! CIFAR ResNets' shapes.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{Result, Tensor};

/// Which implementation [`conv2d`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvBackend {
    /// The im2col + GEMM custom op of [`crate::conv_op`] (default).
    Im2col,
    /// candle's `Tensor::conv2d`.
    Candle,
}

static BACKEND: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide convolution backend.
pub fn set_backend(backend: ConvBackend) {
    BACKEND.store(backend as u8, Ordering::Relaxed);
}

/// The current convolution backend.
pub fn backend() -> ConvBackend {
    match BACKEND.load(Ordering::Relaxed) {
        0 => ConvBackend::Im2col,
        _ => ConvBackend::Candle,
    }
}

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
    match backend() {
        ConvBackend::Im2col => crate::conv_op::conv2d(x, w, stride, padding, groups),
        ConvBackend::Candle => x.conv2d(w, padding, stride, 1, groups),
    }
}
