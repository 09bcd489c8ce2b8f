//! Top-1 by bit width: PTQ, the LSQ baseline (when run) and DGMS side by
//! side, FP32 as a line.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::canvas::{render_png, FONT, PALETTE};
use crate::{PlotError, Result};

/// Top of the y axis (percent): room above 100 for the labels and, above
/// them, the legend (four entries with the LSQ baseline).
const Y_TOP: f64 = 140.0;
/// Where the group names sit (their baseline).
const LABEL_Y: f64 = 101.0;

/// One width's accuracies, in percent.
#[derive(Clone, Debug)]
pub struct WidthTop1 {
    /// Axis label, e.g. `4-bit (K = 16)`.
    pub label: String,
    pub ptq: f64,
    /// The LSQ baseline's, when it was run (`cargo xtask train
    /// --baselines`): a third bar between PTQ and DGMS.
    pub lsq: Option<f64>,
    pub dgms: f64,
}

impl WidthTop1 {
    /// The bars of this width, in drawing order: PTQ, LSQ (if any), DGMS.
    fn bars(&self, with_lsq: bool) -> Vec<f64> {
        match (with_lsq, self.lsq) {
            (true, Some(lsq)) => vec![self.ptq, lsq, self.dgms],
            // A width without the baseline when others have it: no bar.
            (true, None) => vec![self.ptq, f64::NAN, self.dgms],
            (false, _) => vec![self.ptq, self.dgms],
        }
    }
}

/// Writes the bar chart of `widths` against `fp32` (percent) to `path`.
pub fn top1_bars_png(path: &Path, fp32: f64, widths: &[WidthTop1]) -> Result<()> {
    let values = widths
        .iter()
        .flat_map(|w| [w.ptq, w.dgms].into_iter().chain(w.lsq))
        .chain([fp32]);
    if widths.is_empty() || values.clone().any(|v| !v.is_finite()) {
        return Err(PlotError::BadData {
            what: "top-1 by width".into(),
            reason: "no width, or a non-finite accuracy".into(),
        });
    }
    let n = widths.len();
    let with_lsq = widths.iter().any(|w| w.lsq.is_some());
    let mut series = vec![("PTQ", PALETTE[0])];
    if with_lsq {
        series.push(("LSQ", PALETTE[2]));
    }
    series.push(("DGMS", PALETTE[1]));
    // Bars share 0.7 of each group's width.
    let (step, bar) = (0.7 / series.len() as f64, 0.7 / series.len() as f64 - 0.02);
    let x_of = move |group: usize, s: usize| group as f64 + 0.15 + step * s as f64;
    let labels: Vec<String> = widths.iter().map(|w| w.label.clone()).collect();
    render_png(path, "top-1 by width", |root| {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption("top-1 by bit width", (FONT, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n as f64, 0.0..Y_TOP)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("top-1 (%)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|x| e(&x))?;
        for (s, &(name, colour)) in series.iter().enumerate() {
            chart
                .draw_series(widths.iter().enumerate().filter_map(|(i, w)| {
                    let v = w.bars(with_lsq)[s];
                    let x0 = x_of(i, s);
                    v.is_finite()
                        .then(|| Rectangle::new([(x0, 0.0), (x0 + bar, v)], colour.filled()))
                }))
                .map_err(|x| e(&x))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled())
                });
        }
        // Group names above the bars, values on top of each bar.
        let centred = |size| {
            (FONT, size)
                .into_text_style(root)
                .pos(Pos::new(HPos::Center, VPos::Bottom))
        };
        chart
            .draw_series(
                labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Text::new(l.clone(), (i as f64 + 0.5, LABEL_Y), centred(16))),
            )
            .map_err(|x| e(&x))?;
        chart
            .draw_series(widths.iter().enumerate().flat_map(|(i, w)| {
                let bars = w.bars(with_lsq);
                bars.into_iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(s, v)| {
                        let x = x_of(i, s) + bar / 2.0;
                        Text::new(format!("{v:.2}"), (x, v + 1.0), centred(13))
                    })
                    .collect::<Vec<_>>()
            }))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(0.0, fp32), (n as f64, fp32)],
                BLACK.stroke_width(2),
            )))
            .map_err(|x| e(&x))?
            .label(format!("FP32 {fp32:.2} %"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        Ok(())
    })
}
