//! The int8 path's ISA kernels, one file per instruction set. Every
//! function is `#[target_feature]` and reached only through a driver that
//! holds an [`super::kern::Kern`] choice, itself made from a
//! [`crate::kernels::CheckedIsa`] (and, for the dot-product variants, a
//! run-time feature test). What each file provides: GEMV over 4-bit and
//! int8 lines, decoding of 4-bit lines into int8 panels and the GEMM
//! micro-kernel (`MR` x `NR` i32 tiles).

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;
