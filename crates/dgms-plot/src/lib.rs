//! # dgms-plot
//!
//! Pictures of dgms results, as PNG files written atomically:
//!
//! - [`layer_png`]: one layer's weight histogram with the mixture's
//!   components drawn over it (each `p_k N(w; mu_k, |sigma_k|)` scaled to
//!   the histogram's counts) and the hard levels (the table of values the
//!   weights harden to) as vertical lines; several mixtures (e.g. at
//!   initialisation and after DGMS) in different colours;
//! - [`top1_bars_png`]: top-1 by bit width, PTQ against DGMS, with FP32 as
//!   a line.
//!
//! Text is drawn with the DejaVu Sans font embedded in the crate
//! (`fonts/`, Bitstream Vera licence), so no system font is needed.

mod bars;
mod canvas;
mod layer;

pub use bars::{top1_bars_png, WidthTop1};
pub use layer::{layer_png, LayerPlot, MixtureCurve};

/// What can go wrong while drawing or writing a picture.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The data cannot be drawn (e.g. no weights, a non-finite value).
    #[error("plot `{what}`: {reason}")]
    BadData { what: String, reason: String },
    /// plotters failed to draw.
    #[error("plot `{what}`: drawing failed: {reason}")]
    Render { what: String, reason: String },
    /// Writing the file failed.
    #[error(transparent)]
    Io(#[from] dgms_io::IoError),
}

pub type Result<T> = std::result::Result<T, PlotError>;
