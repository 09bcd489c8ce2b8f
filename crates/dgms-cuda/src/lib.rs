//! CUDA bodies of dgms's custom candle ops, compiled from `kernels/` by
//! nvcc at build time (as candle's own kernels are) and launched on a
//! candle [`candle_core::CudaDevice`]'s stream.
//!
//! Only the fused mixture op has one ([`mixture`]): its composed
//! fallback costs ~60x the memory. The im2col convolution and the fused
//! batch norm run as candle's own CUDA convolution and batch norm off the
//! CPU (`docs/METHOD.md`, README "Scaling out").
//!
//! Without the `cuda` feature this crate is empty, so the CPU workspace
//! builds without a CUDA toolkit; `scripts/check-cuda.sh` builds it, and
//! `scripts/gpu-smoke.sh` runs its parity test on a GPU.

#[cfg(feature = "cuda")]
pub mod mixture;

#[cfg(feature = "cuda")]
mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}
