//! Learning curves grouped over seeds: per series (a variant, usually) the mean
//! over seeds as a solid line, a ± 1 sample-std band around it, and optionally
//! every seed as a faint thin line, with axis labels and a legend beside the
//! plot (never on top of the data).
//!
//! # API
//!
//! ```no_run
//! use sweep_report::curves::{CurveChart, Series, curves_svg, curves_png};
//!
//! // Per variant, per seed, per-epoch values (epoch 1 first). Seeds may have
//! // different lengths (early stopping).
//! let chart = CurveChart::new(
//!     "Validation accuracy",
//!     "validation accuracy (%)",
//!     vec![
//!         Series::new("baseline", vec![vec![91.0, 94.5, 95.1], vec![90.2, 94.0, 95.3]]),
//!         Series::new("cnn", vec![vec![96.0, 97.8, 98.2], vec![95.5, 97.9]]),
//!     ],
//! );
//! let svg: String = curves_svg(&chart)?;          // an <svg> element, inline-able
//! let png: Vec<u8> = curves_png(&chart)?;         // the same chart as PNG bytes
//! # Ok::<(), sweep_report::ChartError>(())
//! ```
//!
//! `CurveChart` has public fields for the rest: `show_seeds` (faint lines per
//! seed, default on), `show_band` (default on), `size` (default 760 × 420),
//! `x_label` (default "epoch"), `y_range` (default: fit the data), `x_max`
//! (default: the last epoch of the data), `empty_text` (what an empty chart
//! says, default "no epochs yet"). Legend names too long for the legend's
//! strip wrap onto more lines (after `_`, `-`, `.` where they can), so that
//! grid variants that differ only at the end stay apart; a legend taller
//! than `size` makes the figure taller rather than run off its bottom.
//!
//! At an epoch that only some seeds reached, the mean and band are over those
//! seeds (the count is in [`epoch_stats`]); the band needs at least two.

use plotters::coord::Shift;
use plotters::prelude::*;
use sweep_core::results::MeanStd;

use crate::figure::{self, ChartError, DrawResult, FONT, Figure, palette};

/// One line of the chart: a name and, per seed, its per-epoch values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend (a variant name).
    pub name: String,
    /// Per seed, the values of epochs 1, 2, ...; non-finite values are skipped.
    pub seeds: Vec<Vec<f64>>,
}

impl Series {
    pub fn new(name: impl Into<String>, seeds: Vec<Vec<f64>>) -> Self {
        Series {
            name: name.into(),
            seeds,
        }
    }
}

/// A learning-curve chart: several series on shared axes.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveChart {
    /// Caption above the plot.
    pub title: String,
    /// The y axis' label, with its unit ("validation accuracy (%)").
    pub y_label: String,
    /// The x axis' label ("epoch").
    pub x_label: String,
    pub series: Vec<Series>,
    /// Draw each seed as a faint thin line under the mean.
    pub show_seeds: bool,
    /// Draw the mean ± 1 sample std band.
    pub show_band: bool,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Fixed y axis (low, high), e.g. shared by small multiples; `None`
    /// fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Last epoch of the x axis, e.g. shared by small multiples so that a
    /// short or empty run is drawn on the same axis; `None` fits the data.
    pub x_max: Option<u32>,
    /// Written across a chart without any value ("no epochs yet"; a failed
    /// run's panel says so instead).
    pub empty_text: String,
}

impl CurveChart {
    pub fn new(title: impl Into<String>, y_label: impl Into<String>, series: Vec<Series>) -> Self {
        CurveChart {
            title: title.into(),
            y_label: y_label.into(),
            x_label: "epoch".to_string(),
            series,
            show_seeds: true,
            show_band: true,
            size: (760, 420),
            y_range: None,
            x_max: None,
            empty_text: "no epochs yet".to_string(),
        }
    }
}

/// Mean and spread over seeds at one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStat {
    /// 1-based epoch.
    pub epoch: u32,
    /// Seeds with a finite value at this epoch.
    pub n: usize,
    pub mean: f64,
    /// Sample std (n−1), as the results table computes it; `None` below two seeds.
    pub std: Option<f64>,
}

/// Per epoch, the mean and sample std over the seeds that have a finite value
/// there (the same [`MeanStd`] as the results table). Epochs no seed has are
/// left out.
pub fn epoch_stats(seeds: &[Vec<f64>]) -> Vec<EpochStat> {
    let epochs = seeds.iter().map(Vec::len).max().unwrap_or(0);
    (0..epochs)
        .filter_map(|i| {
            let values: Vec<f64> = seeds
                .iter()
                .filter_map(|s| s.get(i).copied())
                .filter(|v| v.is_finite())
                .collect();
            let m = MeanStd::of(&values)?;
            Some(EpochStat {
                epoch: i as u32 + 1,
                n: values.len(),
                mean: m.mean,
                std: m.std,
            })
        })
        .collect()
}

/// The chart as an SVG document (an `<svg>` element).
pub fn curves_svg(chart: &CurveChart) -> Result<String, ChartError> {
    figure::svg(chart)
}

/// The chart as PNG bytes.
pub fn curves_png(chart: &CurveChart) -> Result<Vec<u8>, ChartError> {
    figure::png(chart)
}

const LEGEND_LINE: i32 = 26;
/// The first legend row's centre, below the title.
const LEGEND_TOP: i32 = 44;
const LEGEND_ROW: i32 = 22;
/// A wrapped legend name's further lines, closer than rows.
const LEGEND_WRAP: i32 = 19;
const TEXT: f64 = figure::LABEL_SIZE;

impl CurveChart {
    fn stats(&self) -> Vec<Vec<EpochStat>> {
        self.series.iter().map(|s| epoch_stats(&s.seeds)).collect()
    }

    /// The y range that holds every drawn line and band, padded by 5%.
    fn fitted_y_range(&self, stats: &[Vec<EpochStat>]) -> (f64, f64) {
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        let mut take = |v: f64| {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        };
        for (series, stats) in self.series.iter().zip(stats) {
            if self.show_seeds {
                series.seeds.iter().flatten().for_each(|v| take(*v));
            }
            for s in stats {
                take(s.mean);
                if let (true, Some(std)) = (self.show_band, s.std) {
                    take(s.mean - std);
                    take(s.mean + std);
                }
            }
        }
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        let span = (hi - lo).max(hi.abs() * 1e-3).max(1e-9);
        (lo - 0.05 * span, hi + 0.05 * span)
    }

    fn legend_width(&self) -> u32 {
        let mut labels: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        labels.extend(self.extra_legend().iter().map(|(l, _)| *l));
        let widest = labels
            .iter()
            .map(|l| figure::text_width(l, TEXT))
            .max()
            .unwrap_or(0);
        (widest + LEGEND_LINE as u32 + 28).min(self.size.0 / 3)
    }

    /// Each series' legend name, in lines that fit the legend's strip.
    fn legend_lines(&self) -> Vec<Vec<String>> {
        let room = self.legend_width().saturating_sub(LEGEND_LINE as u32 + 18);
        self.series
            .iter()
            .map(|s| figure::wrap(&s.name, room, TEXT))
            .collect()
    }

    /// Where the legend's rows end: a figure too short for them grows.
    fn legend_bottom(&self, stats: &[Vec<EpochStat>]) -> i32 {
        let named: i32 = self
            .legend_lines()
            .iter()
            .zip(stats)
            .filter(|(_, stats)| !stats.is_empty())
            .map(|(lines, _)| LEGEND_ROW + (lines.len().max(1) as i32 - 1) * LEGEND_WRAP)
            .sum();
        LEGEND_TOP + named + self.extra_legend().len() as i32 * LEGEND_ROW
    }

    /// Legend rows that explain the styles rather than name a series.
    fn extra_legend(&self) -> Vec<(&'static str, bool)> {
        let mut rows = Vec::new();
        if self.show_band && self.series.iter().any(|s| s.seeds.len() >= 2) {
            rows.push(("± 1 std", true));
        }
        if self.show_seeds && self.series.iter().any(|s| s.seeds.len() >= 2) {
            rows.push(("one seed", false));
        }
        rows
    }
}

impl Figure for CurveChart {
    const KIND: &'static str = "learning curves";

    fn size(&self) -> (u32, u32) {
        let legend = self.legend_bottom(&self.stats()).max(0) as u32;
        (self.size.0, self.size.1.max(legend))
    }

    fn validate(&self) -> Result<(), String> {
        if self.size.0 < 200 || self.size.1 < 150 {
            return Err(format!(
                "size {}×{} is too small (at least 200×150)",
                self.size.0, self.size.1
            ));
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let stats = self.stats();
        let (y0, y1) = match self.y_range {
            Some((lo, hi)) if lo.is_finite() && hi.is_finite() && hi > lo => (lo, hi),
            _ => self.fitted_y_range(&stats),
        };
        let max_epoch = self
            .x_max
            .or_else(|| stats.iter().flat_map(|s| s.last().map(|e| e.epoch)).max())
            .unwrap_or(1)
            .max(2) as i32;

        let (w, h) = self.size();
        let (plot_area, legend_area) = area.split_horizontally(w - self.legend_width());
        let decimals = figure::tick_decimals(y1 - y0);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, (FONT, figure::TITLE_SIZE).into_font())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(1i32..max_epoch, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, TEXT))
            .label_style((FONT, figure::TICK_SIZE))
            .x_labels(max_epoch.min(12) as usize)
            .y_labels(8)
            .y_label_formatter(&|v| format!("{v:.decimals$}"))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;

        if self
            .series
            .iter()
            .all(|s| s.seeds.iter().all(Vec::is_empty))
        {
            plot_area.draw(&Text::new(
                self.empty_text.as_str(),
                ((w / 3) as i32, (h / 2) as i32),
                (FONT, TEXT).into_font().color(&RGBColor(120, 120, 120)),
            ))?;
        }

        for (i, (series, stats)) in self.series.iter().zip(&stats).enumerate() {
            let color = palette(i);
            if self.show_band {
                // One polygon per run of consecutive epochs with a std.
                let mut run: Vec<&EpochStat> = Vec::new();
                let flush = |run: &mut Vec<&EpochStat>| -> Vec<Vec<(i32, f64)>> {
                    let mut polys = Vec::new();
                    if run.len() >= 2 {
                        let upper = run
                            .iter()
                            .map(|s| (s.epoch as i32, s.mean + s.std.unwrap_or(0.0)));
                        let lower = run
                            .iter()
                            .rev()
                            .map(|s| (s.epoch as i32, s.mean - s.std.unwrap_or(0.0)));
                        polys.push(upper.chain(lower).collect());
                    }
                    run.clear();
                    polys
                };
                let mut polygons = Vec::new();
                for s in stats {
                    if s.std.is_some() {
                        run.push(s);
                    } else {
                        polygons.extend(flush(&mut run));
                    }
                }
                polygons.extend(flush(&mut run));
                chart.draw_series(
                    polygons
                        .into_iter()
                        .map(|p| Polygon::new(p, color.mix(0.18).filled())),
                )?;
            }
            if self.show_seeds && series.seeds.len() >= 2 {
                for seed in &series.seeds {
                    let points = seed
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(e, v)| (e as i32 + 1, *v));
                    chart.draw_series(LineSeries::new(points, color.mix(0.45).stroke_width(1)))?;
                }
            }
            let mean: Vec<(i32, f64)> = stats.iter().map(|s| (s.epoch as i32, s.mean)).collect();
            if mean.len() == 1 {
                chart.draw_series(mean.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
            }
            chart.draw_series(LineSeries::new(mean, color.stroke_width(2)))?;
        }

        // The legend, in its own strip to the right of the plot.
        let mut y = LEGEND_TOP;
        let x = 8;
        let font = (FONT, TEXT).into_font();
        // A series without a value has no line, and so no legend row.
        for (i, lines) in self.legend_lines().iter().enumerate() {
            if stats[i].is_empty() {
                continue;
            }
            let color = palette(i);
            legend_area.draw(&PathElement::new(
                vec![(x, y), (x + LEGEND_LINE, y)],
                color.stroke_width(2),
            ))?;
            for (k, line) in lines.iter().enumerate() {
                let top = y - 8 + k as i32 * LEGEND_WRAP;
                legend_area.draw(&Text::new(
                    line.as_str(),
                    (x + LEGEND_LINE + 6, top),
                    font.clone(),
                ))?;
            }
            y += LEGEND_ROW + (lines.len().max(1) as i32 - 1) * LEGEND_WRAP;
        }
        let grey = RGBColor(110, 110, 110);
        for (label, band) in self.extra_legend() {
            if band {
                legend_area.draw(&Rectangle::new(
                    [(x, y - 6), (x + LEGEND_LINE, y + 6)],
                    grey.mix(0.25).filled(),
                ))?;
            } else {
                legend_area.draw(&PathElement::new(
                    vec![(x, y), (x + LEGEND_LINE, y)],
                    grey.mix(0.6).stroke_width(1),
                ))?;
            }
            legend_area.draw(&Text::new(
                label,
                (x + LEGEND_LINE + 6, y - 8),
                font.clone(),
            ))?;
            y += LEGEND_ROW;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_by_hand() {
        // Epoch 1: 1, 3 → mean 2, std √2; epoch 2: 2, 6 → 4, √8; epoch 3: only 5.
        let stats = epoch_stats(&[vec![1.0, 2.0, 5.0], vec![3.0, 6.0]]);
        assert_eq!(stats.len(), 3);
        assert_eq!((stats[0].n, stats[0].mean), (2, 2.0));
        assert!((stats[0].std.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert!((stats[1].std.unwrap() - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!((stats[2].n, stats[2].mean, stats[2].std), (1, 5.0, None));
        assert!(epoch_stats(&[]).is_empty());
        // Non-finite values do not count.
        let stats = epoch_stats(&[vec![f64::NAN], vec![4.0]]);
        assert_eq!((stats[0].n, stats[0].mean), (1, 4.0));
    }

    fn sample() -> CurveChart {
        CurveChart::new(
            "Validation accuracy",
            "validation accuracy (%)",
            vec![
                Series::new("baseline", vec![vec![90.0, 94.0, 95.0], vec![91.0, 93.5]]),
                Series::new("cnn", vec![vec![96.0, 97.5, 98.0], vec![95.0, 97.0, 98.5]]),
            ],
        )
    }

    #[test]
    fn svg_has_labels_legend_and_bands() {
        let svg = curves_svg(&sample()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in [
            "Validation accuracy",
            "validation accuracy (%)",
            "epoch",
            "baseline",
            "cnn",
            "± 1 std",
            "one seed",
        ] {
            assert!(svg.contains(text), "missing {text:?}");
        }
        // One band per series (both have two seeds over at least two epochs).
        assert_eq!(svg.matches("<polygon").count(), 2, "{svg}");
        // Legend entries: two series + two style rows; four seed lines, two means.
        assert!(svg.matches("<polyline").count() >= 6);
    }

    #[test]
    fn png_is_a_png_of_the_size() {
        let png = curves_png(&sample()).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) = crate::figure::png_size(&png);
        assert_eq!((w, h), (760, 420));
    }

    #[test]
    fn long_legend_names_wrap_within_the_figure_and_stay_apart() {
        // Grid variants differ only at the end of their names.
        let names = [
            "learning_rate-0.001_width-32",
            "learning_rate-0.001_width-64",
        ];
        let mut chart = CurveChart::new(
            "Validation accuracy",
            "validation accuracy (%)",
            names
                .iter()
                .map(|n| Series::new(*n, vec![vec![90.0, 94.0]]))
                .collect(),
        );
        chart.size = (560, 330);
        let texts = figure::svg_texts(&curves_svg(&chart).unwrap());
        let legend_room = chart.size.0 / 3;
        for end in ["width-32", "width-64"] {
            let line = texts
                .iter()
                .find(|t| t.ends_with(end))
                .unwrap_or_else(|| panic!("{end} in {texts:?}"));
            assert!(
                figure::text_width(line, TEXT) <= legend_room,
                "{line:?} is cut at the figure's edge"
            );
        }
    }

    #[test]
    fn a_figure_grows_to_hold_a_legend_longer_than_the_plot() {
        let series = (0..14)
            .map(|i| {
                Series::new(
                    format!("optimizer-adamw_learning_rate-0.00{i}_width-{}", 32 * i),
                    vec![vec![90.0, 94.0]],
                )
            })
            .collect();
        let mut chart = CurveChart::new("Validation accuracy", "accuracy (%)", series);
        chart.size = (560, 330);
        let (w, h) = chart.size();
        assert_eq!(w, 560);
        assert!(h > 330, "{h}: the legend of 14 wrapped names is taller");
        assert!(chart.legend_bottom(&chart.stats()) <= h as i32);
        let png = curves_png(&chart).unwrap();
        assert_eq!(crate::figure::png_size(&png), (w, h));
        // A short legend leaves the size as asked.
        assert_eq!(sample().size(), sample().size);
    }

    #[test]
    fn a_series_without_values_has_no_legend_row_and_the_x_axis_can_be_fixed() {
        let mut chart = CurveChart::new(
            "t",
            "y",
            vec![
                Series::new("ran", vec![vec![1.0, 2.0]]),
                Series::new("crashed", vec![]),
            ],
        );
        chart.x_max = Some(5);
        let texts = figure::svg_texts(&curves_svg(&chart).unwrap());
        assert!(!texts.iter().any(|t| t == "crashed"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t == "5"),
            "x axis to epoch 5: {texts:?}"
        );
    }

    #[test]
    fn degenerate_inputs_still_draw() {
        let mut empty = CurveChart::new("t", "y", vec![]);
        assert!(curves_svg(&empty).unwrap().contains("no epochs yet"));
        empty.empty_text = "failed: no epoch recorded".into();
        assert!(
            curves_svg(&empty)
                .unwrap()
                .contains("failed: no epoch recorded")
        );
        let one = CurveChart::new("t", "y", vec![Series::new("a", vec![vec![0.5]])]);
        let svg = curves_svg(&one).unwrap();
        assert!(svg.contains("<circle"), "a single point is drawn as a dot");
        let flat = CurveChart::new("t", "y", vec![Series::new("a", vec![vec![1.0, 1.0]; 3])]);
        curves_svg(&flat).unwrap();
        let mut tiny = sample();
        tiny.size = (10, 10);
        assert!(
            curves_svg(&tiny)
                .unwrap_err()
                .to_string()
                .contains("too small")
        );
    }
}
