//! The metric against one swept key of a `grid:` or `random:` sweep: each
//! variant a point at its value of the key, with its mean ± std over seeds.
//! In a grid the other keys' values group the points into lines, so a
//! 3 × 3 grid over learning rate and dropout reads as three curves of
//! accuracy against learning rate, one per dropout.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{self, DrawResult, FONT, Figure, palette};

/// One variant on a [`SweptKeyChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct SweptPoint {
    /// The variant's value of the key, as the config writes it (`0.001`, `[256, 128]`).
    pub value: String,
    /// The other swept keys' values (`0.2`, or `0.2, [256, 128]`): points
    /// that share it are joined by a line. Empty with one swept key.
    pub group: String,
    pub mean: f64,
    /// Sample std over seeds; `None` with a single seed.
    pub std: Option<f64>,
}

/// The metric against one swept key.
#[derive(Debug, Clone, PartialEq)]
pub struct SweptKeyChart {
    pub title: String,
    /// The key path, the x axis' title.
    pub key: String,
    /// What [`SweptPoint::group`] holds (the other keys' paths), the
    /// legend's title.
    pub group_title: String,
    pub y_label: String,
    pub points: Vec<SweptPoint>,
    pub size: (u32, u32),
}

/// Up to this many distinct values are spaced evenly in their order (a grid's
/// values); more are placed by value (a random sweep's draws).
const MAX_CATEGORIES: usize = 8;
const LEGEND_ROW: i32 = 24;
/// More lines than this are unreadable (and their legend would not fit).
const MAX_GROUPS: usize = 8;

/// How values map onto the x axis.
enum Axis {
    /// Evenly spaced, in this order.
    Categories(Vec<String>),
    /// By value; `log` when all are positive and span more than a factor 20.
    Numeric { log: bool },
}

impl SweptKeyChart {
    pub fn new(
        key: impl Into<String>,
        group_title: impl Into<String>,
        y_label: impl Into<String>,
        points: Vec<SweptPoint>,
    ) -> Self {
        let key = key.into();
        SweptKeyChart {
            title: format!("Test accuracy against {key}"),
            key,
            group_title: group_title.into(),
            y_label: y_label.into(),
            points,
            size: (760, 420),
        }
    }

    fn axis(&self) -> Axis {
        let mut values: Vec<&str> = Vec::new();
        for p in &self.points {
            if !values.contains(&p.value.as_str()) {
                values.push(&p.value);
            }
        }
        let numbers: Option<Vec<f64>> = values
            .iter()
            .map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect();
        match numbers {
            Some(numbers) if values.len() > MAX_CATEGORIES => {
                let (lo, hi) = min_max(numbers.iter().copied());
                Axis::Numeric {
                    log: lo > 0.0 && hi / lo > 20.0,
                }
            }
            Some(numbers) => {
                let mut order: Vec<(f64, &str)> = numbers.into_iter().zip(values).collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0));
                Axis::Categories(order.into_iter().map(|(_, v)| v.to_string()).collect())
            }
            None => Axis::Categories(values.into_iter().map(str::to_string).collect()),
        }
    }

    /// The groups, by their values (numerically where they are numbers);
    /// empty when the points are not grouped (see [`Self::group_of`]).
    fn groups(&self) -> Vec<&str> {
        if !self.grouped() {
            return Vec::new();
        }
        let mut groups: Vec<&str> = Vec::new();
        for p in &self.points {
            if !groups.contains(&p.group.as_str()) {
                groups.push(&p.group);
            }
        }
        let numbers = |g: &str| -> Vec<f64> {
            g.split(", ")
                .map(|v| v.parse::<f64>().unwrap_or(f64::INFINITY))
                .collect()
        };
        groups.sort_by(|a, b| {
            numbers(a)
                .partial_cmp(&numbers(b))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| a.cmp(b))
        });
        groups
    }

    /// Lines per value of the other keys make sense in a grid; in a random
    /// sweep every point has values of its own, so they are not grouped.
    fn grouped(&self) -> bool {
        if matches!(self.axis(), Axis::Numeric { .. }) {
            return false;
        }
        let mut groups: Vec<&str> = self.points.iter().map(|p| p.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        groups.len() <= MAX_GROUPS
    }

    /// The group a point is drawn in: its own, or the one group of an
    /// ungrouped chart.
    fn group_of<'a>(&self, p: &'a SweptPoint) -> &'a str {
        if self.grouped() { &p.group } else { "" }
    }

    fn legend_width(&self) -> u32 {
        let groups = self.groups();
        if groups.len() < 2 {
            return 0;
        }
        groups
            .iter()
            .map(|g| figure::text_width(g, figure::LABEL_SIZE) + 56)
            .chain([figure::text_width(&self.group_title, figure::LABEL_SIZE) + 16])
            .max()
            .unwrap_or(0)
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

impl Figure for SweptKeyChart {
    const KIND: &'static str = "metric against a swept key";

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn validate(&self) -> Result<(), String> {
        if self.points.is_empty() {
            return Err("no variant has a result".into());
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let axis = self.axis();
        let groups = match self.groups() {
            groups if groups.is_empty() => vec![""],
            groups => groups,
        };
        // Where each point goes on the x axis; in categories, the groups sit
        // side by side around their value so that error bars do not overlap.
        let spread = 0.3 / groups.len().max(1) as f64;
        let x_of = |p: &SweptPoint| -> f64 {
            match &axis {
                Axis::Categories(values) => {
                    let i = values.iter().position(|v| *v == p.value).unwrap_or(0) as f64;
                    let g = groups
                        .iter()
                        .position(|g| *g == self.group_of(p))
                        .unwrap_or(0) as f64;
                    i + (g - (groups.len() as f64 - 1.0) / 2.0) * spread
                }
                Axis::Numeric { log } => {
                    let x = p.value.parse::<f64>().unwrap_or(f64::NAN);
                    if *log { x.log10() } else { x }
                }
            }
        };
        let (x0, x1) = match &axis {
            Axis::Categories(values) => (-0.5, values.len() as f64 - 0.5),
            Axis::Numeric { .. } => {
                let (lo, hi) = min_max(self.points.iter().map(x_of).filter(|x| x.is_finite()));
                let pad = ((hi - lo) * 0.06).max(1e-9);
                (lo - pad, hi + pad)
            }
        };
        let (lo, hi) = min_max(self.points.iter().flat_map(|p| {
            let s = p.std.unwrap_or(0.0);
            [p.mean - s, p.mean + s]
        }));
        let pad = ((hi - lo) * 0.1).max(0.05);
        let (y0, y1) = (lo - pad, hi + pad);

        let (w, _) = self.size;
        let (plot_area, legend_area) =
            area.split_horizontally(w.saturating_sub(self.legend_width()).max(w / 2));
        let y_decimals = figure::tick_decimals(y1 - y0);
        let x_decimals = figure::tick_decimals(x1 - x0);
        let x_label = |v: &f64| -> String {
            match &axis {
                Axis::Categories(values) => {
                    let i = v.round();
                    if (v - i).abs() < 1e-6 && i >= 0.0 {
                        values.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                Axis::Numeric { log: true } => format!("{:.2e}", 10f64.powf(*v)),
                Axis::Numeric { log: false } => format!("{v:.x_decimals$}"),
            }
        };
        let x_ticks = match &axis {
            Axis::Categories(values) => values.len(),
            Axis::Numeric { .. } => 7,
        };
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, (FONT, figure::TITLE_SIZE).into_font())
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let x_desc = match axis {
            Axis::Numeric { log: true } => format!("{} (log scale)", self.key),
            _ => self.key.clone(),
        };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, figure::LABEL_SIZE))
            .label_style((FONT, figure::TICK_SIZE))
            .x_labels(x_ticks)
            .x_label_formatter(&x_label)
            .y_labels(8)
            .y_label_formatter(&|v| format!("{v:.y_decimals$}"))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()?;

        let join = matches!(axis, Axis::Categories(_)) && self.grouped();
        for (g, group) in groups.iter().enumerate() {
            let color = palette(g);
            let mut points: Vec<(f64, &SweptPoint)> = self
                .points
                .iter()
                .filter(|p| self.group_of(p) == *group)
                .map(|p| (x_of(p), p))
                .filter(|(x, _)| x.is_finite())
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if join && points.len() >= 2 {
                chart.draw_series(LineSeries::new(
                    points.iter().map(|(x, p)| (*x, p.mean)),
                    color.mix(0.8).stroke_width(2),
                ))?;
            }
            // ± 1 std: a vertical line with short caps (in pixels, so they
            // look alike whatever the axis' scale).
            for (x, p) in &points {
                let Some(s) = p.std else { continue };
                let cap = |y: f64| {
                    EmptyElement::at((*x, y))
                        + PathElement::new(vec![(-6, 0), (6, 0)], color.stroke_width(2))
                };
                chart.draw_series([PathElement::new(
                    vec![(*x, p.mean - s), (*x, p.mean + s)],
                    color.stroke_width(2),
                )])?;
                chart.draw_series([cap(p.mean - s), cap(p.mean + s)])?;
            }
            chart.draw_series(
                points
                    .iter()
                    .map(|(x, p)| Circle::new((*x, p.mean), 5, color.filled())),
            )?;
        }

        if groups.len() >= 2 {
            let font = (FONT, figure::LABEL_SIZE).into_font();
            legend_area.draw(&Text::new(self.group_title.as_str(), (8, 40), font.clone()))?;
            let mut y = 76;
            for (g, group) in groups.iter().enumerate() {
                let color = palette(g);
                legend_area.draw(&PathElement::new(
                    vec![(8, y), (36, y)],
                    color.stroke_width(2),
                ))?;
                legend_area.draw(&Circle::new((22, y), 5, color.filled()))?;
                legend_area.draw(&Text::new(*group, (44, y - 9), font.clone()))?;
                y += LEGEND_ROW;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: &str, group: &str, mean: f64) -> SweptPoint {
        SweptPoint {
            value: value.into(),
            group: group.into(),
            mean,
            std: Some(0.1),
        }
    }

    #[test]
    fn a_grid_reads_as_one_line_per_other_value_with_values_in_numeric_order() {
        let chart = SweptKeyChart::new(
            "training.learning_rate",
            "model.dropout",
            "test accuracy (%)",
            vec![
                point("0.001", "0.5", 97.5),
                point("0.0001", "0.5", 96.0),
                point("0.001", "0.0", 97.9),
                point("0.0001", "0.0", 95.5),
            ],
        );
        let svg = figure::svg(&chart).unwrap();
        let texts = figure::svg_texts(&svg);
        let small = texts
            .iter()
            .position(|t| t == "0.0001")
            .expect("tick 0.0001");
        let large = texts.iter().position(|t| t == "0.001").expect("tick 0.001");
        assert!(small < large, "values in numeric order: {texts:?}");
        for label in ["model.dropout", "training.learning_rate"] {
            assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
        }
        let first = texts.iter().position(|t| t == "0.0").expect("legend 0.0");
        let second = texts.iter().position(|t| t == "0.5").expect("legend 0.5");
        assert!(first < second, "legend in numeric order: {texts:?}");
        figure::png(&chart).unwrap();
    }

    #[test]
    fn many_random_values_go_on_a_log_axis() {
        let points = (0..12)
            .map(|i| point(&format!("{}", 1e-4 * 1.5f64.powi(i)), "", 90.0 + i as f64))
            .collect();
        let chart = SweptKeyChart::new("training.learning_rate", "", "acc", points);
        let texts = figure::svg_texts(&figure::svg(&chart).unwrap());
        assert!(
            texts
                .iter()
                .any(|t| t == "training.learning_rate (log scale)"),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.ends_with("e-3")),
            "ticks in scientific notation: {texts:?}"
        );
    }

    #[test]
    fn a_random_sweep_of_several_keys_is_not_grouped_into_lines() {
        // Every trial has its own values of the other keys: no legend of
        // one row per trial, however many there are.
        let points = (0..40)
            .map(|i| {
                point(
                    &format!("{}", 1e-4 * 1.1f64.powi(i)),
                    &format!("{}, {}", i, i * 7),
                    90.0,
                )
            })
            .collect();
        let chart = SweptKeyChart::new(
            "training.learning_rate",
            "model.dropout, seed_like",
            "acc",
            points,
        );
        let texts = figure::svg_texts(&figure::svg(&chart).unwrap());
        assert!(
            !texts.iter().any(|t| t == "model.dropout, seed_like"),
            "no legend: {texts:?}"
        );
        figure::png(&chart).unwrap();
    }

    #[test]
    fn no_points_is_an_error_not_an_empty_figure() {
        let chart = SweptKeyChart::new("model.dropout", "", "acc", Vec::new());
        assert!(figure::svg(&chart).is_err());
    }
}
