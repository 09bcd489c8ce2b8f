//! CUDA bodies of dgms's custom candle ops, compiled from `kernels/` by
//! nvcc at build time (as candle's own kernels are) and launched on a
//! candle `CudaDevice`'s stream.
//!
//! Only the fused mixture op has one ([`mixture`], feature `cuda`): its
//! composed fallback costs ~60x the memory. The im2col convolution and
//! the fused batch norm run as candle's own CUDA convolution and batch
//! norm off the CPU (README, "Scaling out").
//!
//! Feature `emulation` builds [`emulated`]: the same kernel source run on
//! CPU threads, which `cargo test` checks against the CPU op without a
//! GPU. Without features the crate holds only [`launch`] (plain Rust), so
//! the CPU workspace builds without a CUDA toolkit; `scripts/check-cuda.sh`
//! builds the CUDA side, and `scripts/gpu-smoke.sh` runs it on a GPU.

pub mod launch;

#[cfg(feature = "cuda")]
pub mod mixture;

#[cfg(feature = "emulation")]
pub mod emulated;

#[cfg(feature = "cuda")]
mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}
