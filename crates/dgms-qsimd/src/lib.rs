//! Q-SIMD: the deployment half of DGMS.
//!
//! A hardened DGMS layer is a b-bit index per weight and a table of
//! K = 2^b shared values (entry 0 is 0.0). This crate stores such models
//! in a packed safetensors file, runs bit-packed SIMD kernels over them
//! (scalar, AVX2, AVX-512 on x86-64; NEON on aarch64, chosen at run time)
//! and provides an inference engine with no candle at run time.

pub mod engine;
pub mod error;
pub mod format;
pub mod kernels;

pub use engine::Engine;
pub use error::{QsimdError, Result};
