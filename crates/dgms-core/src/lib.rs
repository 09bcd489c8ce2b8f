//! # dgms-core
//!
//! The mixture core of DGMS (Differentiable Gaussian Mixture Weight Sharing):
//! everything about one layer's Gaussian mixture.
//!
//! - [`GaussianMixture`]: mu, sigma, pi (K-1 each), pi_zero, sigma_zero as
//!   candle `Var`s and a temperature tau (fixed by default, optionally
//!   trained);
//! - soft weights through a fused candle custom op with its own backward
//!   ([`GaussianMixture::soft_weights`]), and the composed autograd version
//!   kept as the test oracle ([`GaussianMixture::soft_weights_composed`]);
//! - hard weights, responsibilities, and hardening to b-bit indices plus a
//!   table of K values ([`harden`]);
//! - initialisation from pretrained weights with the exact optimum of 1-D
//!   k-means with one centre fixed at 0 ([`init`], [`kmeans`],
//!   [`kmeans_exact`]);
//! - the report of sparsity, bits and compression ([`report`]).
//!
//! The method, its formulas and the choices made where it leaves room are
//! described in the repository's `docs/METHOD.md`.
//!
//! All mixture math runs in log space, so a weight far from every mean goes
//! to its most likely component instead of collapsing to the average of the
//! means (the reference implementation's f32 underflow).

pub mod composed;
pub mod error;
pub mod harden;
pub mod init;
pub mod kernel;
pub mod kmeans;
pub mod kmeans_exact;
pub mod mixture;
pub mod op;
#[cfg(feature = "cuda")]
mod op_cuda;
pub mod params;
pub mod reference_rule;
pub mod report;
pub mod uniform;
pub mod workloads;

pub use error::{CoreError, Result};
pub use harden::HardenedLayer;
pub use init::{init_params, InitConfig, InitOutcome, SigmaInit};
pub use kmeans::{kmeans_1d, KMeans1d, KMeansConfig, KMeansMethod};
pub use mixture::{GaussianMixture, MixtureOptions};
pub use params::{MixtureParams, DEFAULT_TAU, MAX_COMPONENTS};
pub use reference_rule::{HardeningRule, ReferenceRule};
pub use report::{LayerReport, ModelReport};
pub use uniform::UniformQuantizer;

/// The repository README's Rust examples, run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// This crate's README example, run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct CrateReadmeDoctests;
