//! The reference engine: the same graph with every quantized layer decoded
//! to f32 by the format reader ([`PackedLayer::decode`]) instead of the
//! kernels' index layout, run on the scalar kernels. Tests hold
//! [`Engine::new`] on every ISA to it.
//!
//! [`PackedLayer::decode`]: crate::format::PackedLayer::decode

use super::build::WeightMode;
use super::Engine;
use crate::error::Result;
use crate::format::PackedModel;
use crate::kernels::Isa;

/// An engine over decoded f32 weights on [`Isa::Scalar`].
pub fn engine(model: &PackedModel) -> Result<Engine> {
    Engine::build(model, Isa::Scalar, WeightMode::Decoded)
}
