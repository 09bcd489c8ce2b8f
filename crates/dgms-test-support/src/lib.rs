//! # dgms-test-support
//!
//! What the dgms test suites share instead of copying (a dev-dependency
//! only; never published):
//!
//! - [`rng`]: seeded generators. [`rng::SplitMix64`] and [`rng::Lcg64`]
//!   for crates that keep `rand` out of their dependencies, and
//!   [`rng::chacha`] for tests of crates that use `rand` anyway. Each
//!   reproduces, number for number, the generator it replaces.
//! - [`datasets`]: small data sets written to disk (random CIFAR-10
//!   binaries).
//! - [`compare`]: relative errors (max |got - expected| / max |expected|).
//! - [`fixtures`]: locating fixtures in the repository and in the shared
//!   folder beside it (`../shared`); a missing shared fixture skips its test
//!   with a note, or fails it when `DGMS_REQUIRE_FIXTURES=1`.
//! - [`tensors`]: candle tensors to host vectors, and their relative error
//!   (feature `candle`).
//! - [`varmap`]: names and shapes of a `candle_nn::VarMap` (feature
//!   `candle`).

pub mod compare;
pub mod datasets;
pub mod fixtures;
pub mod rng;
#[cfg(feature = "candle")]
pub mod tensors;
#[cfg(feature = "candle")]
pub mod varmap;
