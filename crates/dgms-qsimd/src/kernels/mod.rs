//! Bit-packed inference kernels and their run-time dispatch.
//!
//! Weights are a [`QMatrix`] of codebook indices (4-bit layout for
//! K <= 16, 8-bit up to 256) decoded inside the kernels; activations are
//! f32, so results equal the hard-weight model's up to summation order.
//! Every entry point takes the [`Isa`] explicitly (pick one with
//! [`Isa::detect`] or [`Isa::from_env`]), checks that this CPU has it and
//! that all shapes agree, and returns a typed error otherwise.
//!
//! ```
//! use dgms_qsimd::kernels::{gemv, Isa, QMatrix};
//! let w = QMatrix::new(2, 3, &[0, 1, 2, 2, 1, 0], &[0.0, 0.5, -1.0])?;
//! let mut y = [0.0; 2];
//! gemv(Isa::detect(), &w, &[1.0, 2.0, 3.0], &mut y)?;
//! assert_eq!(y, [-2.0, 0.0]);
//! # Ok::<(), dgms_qsimd::QsimdError>(())
//! ```
//!
//! For K <= 4, [`QMatrix2`] stores 4-bit indices of column *pairs* and
//! [`gemv_2bit`] sums table entries `c[i] x[2p] + c[j] x[2p + 1]` built
//! once per call (table lookup in the manner of T-MAC / TL1: one permute
//! and one add per 16 rows and 2 columns); its module docs state the
//! summation order and the error bound against the exact sum.
//!
//! The int8 fast path ([`gemv_i8`], [`gemm_i8`], [`conv2d_i8`] over a
//! [`QMatrixI8`]) quantizes the activations on the fly (per vector, or per
//! output pixel) and sums exactly in i32; [`gemv_i8`] states its error
//! bound against the exact kernels.
//!
//! # Layout
//!
//! Each path keeps its scalar reference beside its drivers and its SIMD
//! twins:
//!
//! ```text
//! kernels/
//!   isa.rs          Isa, and CheckedIsa: the proof that the CPU has it
//!   epilogue.rs     the fused output stage (scale, shift, residual, ReLU/ReLU6)
//!   layout.rs       the 64-byte line layout both weight matrices use
//!   checks.rs       the argument checks of every entry point
//!   pool.rs         max-pooling of a plane (one loop compiled per ISA)
//!   exact/          f32 activations x decoded codebook (or f32 weights)
//!     matrix.rs     QMatrix, DenseMatrix
//!     scalar.rs     the oracle: gemv, gemm, conv2d_direct, depthwise_direct
//!     gemv.rs       row-split GEMV driver
//!     tl2.rs        QMatrix2, its pair tables, scalar oracle and driver (gemv_2bit)
//!     gemm/         cache-blocked GEMM driver (packing, decoding, im2col from images)
//!     conv.rs       ConvGeometry, im2col, conv2d (a GEMM)
//!     depthwise.rs  depthwise k x k driver (one loop compiled per ISA)
//!     simd/         avx2.rs, avx512.rs, neon.rs; dw3x3.rs (depthwise 3x3,
//!                   AVX2 and AVX-512, output stage fused); tl2.rs (the
//!                   2-bit table-lookup block kernels, every ISA)
//!   int8/           int8 weights x per-column int8 activations, i32 sums
//!     matrix.rs     QMatrixI8
//!     quant.rs      the quantization every ISA shares
//!     dw_bound.rs   (test) why depthwise has no int8 kernel: timings
//!     scalar.rs     the reference: gemv, gemm
//!     gemv.rs, gemm.rs  drivers
//!     kern.rs       which int8 kernels an ISA runs (dot-product features)
//!     simd/         avx2.rs, avx512.rs, neon.rs
//! ```
//!
//! # ISA contract
//!
//! Which ISA implements what (`-`: falls back to the scalar code of the
//! same path; every SIMD result is tested against the scalar reference on
//! odd shapes):
//!
//! | kernel | Scalar | AVX2 + FMA | AVX-512 F/BW/VL | NEON |
//! |---|---|---|---|---|
//! | `gemv` (4/8-bit) | `exact/scalar.rs` | `gemv_nibble` (`vpshufb` planes), `gemv_byte` (gather) | `gemv_nibble`, `gemv_byte` | `gemv_nibble`, `gemv_byte` (`tbl`) |
//! | `gemv_2bit` (K <= 4) | `exact/tl2.rs` (pair order) | `tl2.rs`: 2 x `vpermps` + `vblendvps` per 8 rows and pair | `tl2.rs`: `vpermps` per 16 rows and pair | `tl2.rs`: `tbl` on the table's 64 bytes per 4 rows |
//! | `gemv_f32` | `exact/scalar.rs` | `dot` | `dot` | `dot` |
//! | `gemm`, `gemm_f32`, `conv2d` | `exact/scalar.rs` (conv: im2col + gemm) | decode + 16x6 micro-kernel (tails 1-5) + transpose | decode + 16x12 micro-kernel (AVX2 transpose, row packing) | decode + 16x4 micro-kernel |
//! | `depthwise_conv` 3x3 | `depthwise_direct` | `dw3x3.rs`: stride 1 flat over the plane with column masks, stride 2 over even / odd columns; epilogue fused | same, 16 lanes (masked tails) | the loop below |
//! | `depthwise_conv` other odd k (5x5 unrolled, others per tap) | `depthwise_direct` | one loop under `avx2,fma` | under `avx512f,bw,vl` | under `neon` (also 3x3) |
//! | `gemv_i8` | `int8/scalar.rs` | `vpmaddubsw` | VNNI `vpdpbusd`, else BW `vpmaddubsw` | `sdot` if `dotprod`, else `smull` + `sadalp` |
//! | `gemm_i8`, `conv2d_i8` | `int8/scalar.rs` (conv: im2col + gemm) | 4x16 micro-kernel | 8x32 (VNNI or BW) | 4x8 (`sdot` or `smull`) |
//!
//! The int8 results are bit-identical on every ISA (same quantization,
//! exact i32 sums); the exact path's differ from the oracle by summation
//! order only.
//!
//! What each public entry point checks before any kernel runs (errors are
//! [`QsimdError`](crate::QsimdError) variants naming the op and argument):
//!
//! | entry point | checks |
//! |---|---|
//! | every kernel taking an `Isa` | the CPU has it ([`Isa::check`] -> `IsaUnavailable`) |
//! | `gemv`, `gemv_f32`, `gemv_i8`, `gemv_2bit` | `x` = cols, `y` = rows |
//! | `gemm`, `gemm_f32`, `gemm_i8` | `x` = cols x n, `y` = rows x n, epilogue lengths |
//! | `conv2d`, `conv2d_i8`, `reference::conv2d_direct` | geometry valid, weight cols = C kh kw, input, output, epilogue |
//! | `depthwise_conv`, `reference::depthwise_direct` | square odd kernel k, pad k / 2, stride 1 or 2, weight C x k*k, input, output, epilogue |
//! | `im2col` | geometry, input, output |
//! | `QMatrix::new`, `QMatrixI8::new`, `QMatrix2::new` | nonempty, one index per weight, 1..=256 finite entries, index < K (int8: cols <= `MAX_COLS_I8`; 2-bit: K <= 4) |
//!
//! The check of the ISA is a type fact inside the crate: [`Isa::check`]
//! returns a [`CheckedIsa`], the only value the drivers accept, and the
//! int8 drivers take a kernel choice that only a `CheckedIsa` yields. The
//! `// SAFETY:` comment at every `#[target_feature]` call rests on that.

#[macro_use]
mod per_isa;
mod checks;
mod epilogue;
mod exact;
mod int8;
mod isa;
mod layout;
pub(crate) mod pool;
pub mod reference {
    //! Scalar reference implementations (what `Isa::Scalar` runs, and the
    //! oracle the SIMD kernels are tested against).
    pub use super::exact::scalar::{conv2d_direct, depthwise_direct};
}

pub use epilogue::{Activation, Epilogue};
pub use exact::conv::{conv2d, im2col, ConvGeometry};
pub use exact::depthwise::depthwise_conv;
pub use exact::matrix::{DenseMatrix, QMatrix};
pub(crate) use exact::scalar::depthwise_loop;
pub use exact::tl2::{gemv_2bit, QMatrix2};
pub use exact::{gemm, gemm_f32, gemv, gemv_f32};
pub use int8::matrix::{QMatrixI8, MAX_COLS_I8};
pub use int8::{conv2d_i8, gemm_i8, gemv_i8};
pub use isa::{CheckedIsa, Isa, ISA_ENV_VAR};
pub use layout::Layout;
