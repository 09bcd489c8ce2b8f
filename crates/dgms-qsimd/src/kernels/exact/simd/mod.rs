//! The exact path's ISA kernels, one file per instruction set. Every
//! function is `#[target_feature]` and reached only through a driver that
//! holds a [`crate::kernels::CheckedIsa`] for its ISA. What each file
//! provides: GEMV over 4-bit and 8-bit lines, decoding of a 16-row group
//! into a `[k][16]` f32 panel, the GEMM micro-kernel (16 x `NR`) and an
//! f32 dot product; AVX2 also transposes and packs rows for AVX-512.
//! `tl2.rs` holds the 2-bit table-lookup GEMV kernels of every ISA.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dw3x3;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod tl2;
