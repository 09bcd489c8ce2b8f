//! One layer's weights with its mixture components and hard levels.

use std::path::Path;

use dgms_core::MixtureParams;
use plotters::prelude::*;

use crate::canvas::{render_png, FONT, PALETTE};
use crate::{PlotError, Result};

/// Histogram bins.
const BINS: usize = 80;
/// Points per drawn component curve.
const CURVE_POINTS: usize = 400;

/// A mixture drawn over the histogram.
#[derive(Clone, Debug)]
pub struct MixtureCurve {
    /// Legend text, e.g. `initialisation` or `after DGMS`.
    pub label: String,
    pub params: MixtureParams,
}

/// What [`layer_png`] draws.
#[derive(Clone, Debug)]
pub struct LayerPlot<'a> {
    /// The layer's name (title and errors).
    pub layer: &'a str,
    /// The weights of the histogram.
    pub weights: &'a [f32],
    /// Mixtures drawn over it, in legend order.
    pub curves: Vec<MixtureCurve>,
    /// The hard levels (0 and the means the weights harden to), if known.
    pub levels: Option<Vec<f32>>,
}

/// One component as drawn: `p_k N(w; mu_k, |sigma_k|)`.
struct Component {
    /// Normalised mixing weight p_k.
    weight: f64,
    mean: f64,
    width: f64,
}

impl Component {
    /// The K components of `p`, zero component first.
    fn all(p: &MixtureParams) -> Vec<Self> {
        let pis = p.pis_with_zero();
        let total: f64 = pis.iter().map(|v| f64::from(v.abs())).sum();
        pis.iter()
            .zip(p.sigmas_with_zero())
            .zip(p.means_with_zero())
            .map(|((pi, sigma), mu)| Self {
                weight: f64::from(pi.abs()) / total,
                mean: f64::from(mu),
                width: f64::from(sigma.abs()),
            })
            .collect()
    }

    fn density(&self, w: f64) -> f64 {
        let z = (w - self.mean) / self.width;
        self.weight * (-0.5 * z * z).exp() / (self.width * (2.0 * std::f64::consts::PI).sqrt())
    }
}

/// Counts of `weights` in `BINS` equal bins over `[lo, hi]`.
fn histogram(weights: &[f32], lo: f64, hi: f64) -> Vec<usize> {
    let mut counts = vec![0usize; BINS];
    let width = (hi - lo) / BINS as f64;
    for &w in weights {
        let bin = ((f64::from(w) - lo) / width).floor() as isize;
        counts[bin.clamp(0, BINS as isize - 1) as usize] += 1;
    }
    counts
}

/// Writes the picture of `plot` to `path` (PNG, atomically).
pub fn layer_png(path: &Path, plot: &LayerPlot<'_>) -> Result<()> {
    let bad = |reason: &str| PlotError::BadData {
        what: plot.layer.to_string(),
        reason: reason.to_string(),
    };
    if plot.weights.is_empty() {
        return Err(bad("no weights"));
    }
    if plot.weights.iter().any(|w| !w.is_finite()) {
        return Err(bad("a weight is NaN or infinite"));
    }
    for c in &plot.curves {
        c.params
            .validate(plot.layer)
            .map_err(|e| bad(&format!("{}: {e}", c.label)))?;
    }
    // The x range covers the weights and every mean and level.
    let extra = plot
        .curves
        .iter()
        .flat_map(|c| c.params.means_with_zero())
        .chain(plot.levels.iter().flatten().copied());
    let (mut lo, mut hi) = plot
        .weights
        .iter()
        .copied()
        .chain(extra)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), w| {
            (a.min(f64::from(w)), b.max(f64::from(w)))
        });
    if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let pad = 0.02 * (hi - lo);
    let (lo, hi) = (lo - pad, hi + pad);
    let counts = histogram(plot.weights, lo, hi);
    let bin = (hi - lo) / BINS as f64;
    let peak = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let y_max = peak * 1.15;
    let n = plot.weights.len() as f64;
    let k = plot.curves.first().map(|c| c.params.k());
    let title = match k {
        Some(k) => format!("{}: {} weights, K = {k}", plot.layer, plot.weights.len()),
        None => format!("{}: {} weights", plot.layer, plot.weights.len()),
    };

    render_png(path, plot.layer, |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(lo..hi, 0.0..y_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("weight")
            .y_desc("weights per bin")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|x| e(&x))?;
        let grey = RGBColor(200, 200, 200);
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + i as f64 * bin;
                Rectangle::new([(x0, 0.0), (x0 + bin, c as f64)], grey.filled())
            }))
            .map_err(|x| e(&x))?;
        for (ci, curve) in plot.curves.iter().enumerate() {
            let colour = PALETTE[ci % PALETTE.len()];
            for (k, comp) in Component::all(&curve.params).iter().enumerate() {
                let points = (0..=CURVE_POINTS).map(|i| {
                    let w = lo + (hi - lo) * i as f64 / CURVE_POINTS as f64;
                    let y = n * bin * comp.density(w);
                    (w, y.min(y_max))
                });
                let series = chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                    .map_err(|x| e(&x))?;
                if k == 0 {
                    series.label(curve.label.clone()).legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                }
            }
        }
        if let Some(levels) = &plot.levels {
            let black = BLACK.mix(0.7);
            chart
                .draw_series(levels.iter().map(|&v| {
                    PathElement::new([(f64::from(v), 0.0), (f64::from(v), y_max)], black)
                }))
                .map_err(|x| e(&x))?
                .label("hard levels")
                .legend(move |(x, y)| PathElement::new([(x, y - 6), (x, y + 6)], BLACK));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_densities_integrate_to_the_mixing_weights() {
        let p = MixtureParams {
            mu: vec![-0.1, 0.2],
            sigma: vec![0.02, -0.05],
            pi: vec![0.3, 0.5],
            pi_zero: 0.2,
            sigma_zero: 0.01,
            tau: 0.01,
        };
        let (lo, hi, steps) = (-1.0f64, 1.0f64, 200_000);
        let dx = (hi - lo) / steps as f64;
        let comps = Component::all(&p);
        for (k, want) in [(0, 0.2), (1, 0.3), (2, 0.5)] {
            let area: f64 = (0..steps)
                .map(|i| comps[k].density(lo + (i as f64 + 0.5) * dx) * dx)
                .sum();
            assert!((area - want).abs() < 1e-6, "component {k}: {area}");
        }
    }

    #[test]
    fn histogram_counts_every_weight() {
        let w: Vec<f32> = (0..1000).map(|i| (i as f32 / 999.0) - 0.5).collect();
        let counts = histogram(&w, -0.5, 0.5);
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        assert!(counts.iter().all(|c| (12..=13).contains(c)), "{counts:?}");
    }
}
