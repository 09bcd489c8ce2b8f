//! The one place where the models run a 2-D convolution.
//!
//! Every [`crate::QConv2d`] calls [`ConvBackend::conv2d`] with the backend
//! it was built with: the project's im2col + GEMM custom op
//! ([`crate::conv_op`], with its own backward) by default, or candle's own
//! convolution ([`ConvBackend::Candle`], for comparisons: `cargo xtask
//! bench-train`). candle's CPU conv backward is a direct loop, about 10x
//! slower for the CIFAR ResNets' shapes. The backend is a setting of each
//! model ([`crate::build_model_with_backend`]), not of the process, so two
//! models with different backends can run side by side.

use candle_core::{Device, Result, Tensor};

/// Which implementation a model's convolutions and batch norms use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvBackend {
    /// The im2col + GEMM custom op of [`crate::conv_op`], and the fused
    /// batch norm of [`crate::batch_norm_op`] (default).
    #[default]
    Im2col,
    /// candle's `Tensor::conv2d` and candle-nn's composed batch norm.
    Candle,
}

impl ConvBackend {
    /// The backend a model on `device` runs: this one on the CPU; on any
    /// other device (CUDA) always [`ConvBackend::Candle`], because the
    /// im2col conv and the fused batch-norm ops have CPU bodies only.
    /// candle's conv2d and candle-nn's composed batch norm run on every
    /// device candle supports (the composed batch norm keeps a few
    /// activation-sized temporaries the fused op does not).
    pub fn for_device(self, device: &Device) -> Self {
        if device.is_cpu() {
            self
        } else {
            ConvBackend::Candle
        }
    }

    /// 2-D convolution of `x` (N, C_in, H, W) with `w` (C_out, C_in /
    /// groups, KH, KW), square `stride` and zero `padding`, no dilation.
    /// Differentiable with respect to `x` and `w`.
    pub fn conv2d(
        self,
        x: &Tensor,
        w: &Tensor,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Tensor> {
        match self {
            ConvBackend::Im2col => crate::conv_op::conv2d(x, w, stride, padding, groups),
            ConvBackend::Candle => x.conv2d(w, padding, stride, 1, groups),
        }
    }
}

/// [`ConvBackend::conv2d`] with the default backend (the im2col op).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
) -> Result<Tensor> {
    ConvBackend::default().conv2d(x, w, stride, padding, groups)
}
