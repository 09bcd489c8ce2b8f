//! The crate's error type, written by hand so the crate has no
//! dependencies at all.

use std::fmt;

/// Errors of [`crate::architecture()`] and the per-family constructors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchError {
    /// A network name that has no description.
    UnknownModel {
        name: String,
        known: Vec<&'static str>,
    },
    /// Unusable settings (a zero size, an unsupported depth).
    Config { model: String, what: String },
    /// The description does not fit the input: a layer's input has the
    /// wrong channels, or the map became too small (e.g. VGG-Small's three
    /// max-pools on an input under 8x8).
    Shape {
        model: String,
        image_size: usize,
        layer: String,
        what: String,
    },
}

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchError::UnknownModel { name, known } => {
                write!(
                    f,
                    "unknown model `{name}`; known models: {}",
                    known.join(", ")
                )
            }
            ArchError::Config { model, what } => write!(f, "model `{model}`: {what}"),
            ArchError::Shape {
                model,
                image_size,
                layer,
                what,
            } => write!(
                f,
                "model `{model}`: image_size {image_size}: layer `{layer}`: {what}"
            ),
        }
    }
}

impl std::error::Error for ArchError {}

impl ArchError {
    /// The layer the error is about, if it concerns one.
    pub fn layer(&self) -> Option<&str> {
        match self {
            ArchError::Shape { layer, .. } => Some(layer),
            _ => None,
        }
    }
}
