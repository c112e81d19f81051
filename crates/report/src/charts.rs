//! The other figures of runs and reports: the confusion matrix as a heat map,
//! per-seed test accuracy as a dot plot with mean and 95% CI, and grids of
//! small images (failed digits, filters, activation maps, weight rows).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::figure::{self, DrawResult, FONT, Figure, palette};

const TEXT: f64 = figure::LABEL_SIZE;

/// Sequential blue scale from white (0) to dark blue (1).
fn blues(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

fn centered(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
}

/// A confusion matrix (`counts[true][predicted]`) drawn as a heat map: the
/// colour is the row-normalised fraction (so rare classes are as visible as
/// common ones); each cell shows its count, or its row percentage (blank
/// when empty, "<1" when some but under half a percent).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionChart {
    pub title: String,
    pub counts: Vec<Vec<u64>>,
    /// Class names along both axes ("0".."9").
    pub classes: Vec<String>,
    /// Write the row percentage in each cell instead of the count.
    pub show_percent: bool,
    pub size: (u32, u32),
}

impl ConfusionChart {
    pub fn new(title: impl Into<String>, counts: Vec<Vec<u64>>, show_percent: bool) -> Self {
        let classes = (0..counts.len()).map(|c| c.to_string()).collect();
        ConfusionChart {
            title: title.into(),
            counts,
            classes,
            show_percent,
            size: (560, 560),
        }
    }
}

impl Figure for ConfusionChart {
    const KIND: &'static str = "confusion matrix";

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn validate(&self) -> Result<(), String> {
        let k = self.counts.len();
        if k == 0 || self.counts.iter().any(|r| r.len() != k) {
            return Err("counts: not a square, non-empty matrix".into());
        }
        if self.classes.len() != k {
            return Err(format!(
                "{} class names for {k} classes",
                self.classes.len()
            ));
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let (w, h) = (self.size.0 as i32, self.size.1 as i32);
        let k = self.counts.len() as i32;
        let (left, top, right, bottom) = (74, 44, 14, 64);
        let cell = ((w - left - right).min(h - top - bottom) / k).max(4);
        let grid_w = cell * k;
        let x0 = left + (w - left - right - grid_w) / 2;
        let y0 = top;

        area.draw(&Text::new(
            self.title.as_str(),
            (w / 2, 20),
            centered(figure::TITLE_SIZE),
        ))?;
        let small = (cell as f64 * 0.34).clamp(8.0, 14.0);
        for (t, row) in self.counts.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (q, &count) in row.iter().enumerate() {
                let frac = if total == 0 {
                    0.0
                } else {
                    count as f64 / total as f64
                };
                let (cx, cy) = (x0 + q as i32 * cell, y0 + t as i32 * cell);
                area.draw(&Rectangle::new(
                    [(cx, cy), (cx + cell, cy + cell)],
                    blues(frac).filled(),
                ))?;
                area.draw(&Rectangle::new(
                    [(cx, cy), (cx + cell, cy + cell)],
                    RGBColor(255, 255, 255).stroke_width(1),
                ))?;
                // In percent an empty cell stays blank; a non-empty one that
                // rounds to 0 says "<1", so that "0" never means "some".
                let label = if self.show_percent {
                    match 100.0 * frac {
                        _ if count == 0 => String::new(),
                        p if p < 0.5 => "<1".to_string(),
                        p => format!("{p:.0}"),
                    }
                } else {
                    count.to_string()
                };
                if !label.is_empty() {
                    let color = if frac > 0.5 { WHITE } else { BLACK };
                    area.draw(&Text::new(
                        label,
                        (cx + cell / 2, cy + cell / 2),
                        centered(small).color(&color),
                    ))?;
                }
            }
        }
        for (i, name) in self.classes.iter().enumerate() {
            let c = x0 + i as i32 * cell + cell / 2;
            area.draw(&Text::new(
                name.as_str(),
                (c, y0 + grid_w + 12),
                centered(figure::TICK_SIZE),
            ))?;
            let r = y0 + i as i32 * cell + cell / 2;
            area.draw(&Text::new(
                name.as_str(),
                (x0 - 12, r),
                centered(figure::TICK_SIZE),
            ))?;
        }
        let x_title = if self.show_percent {
            "predicted class (cells: % of the true class)"
        } else {
            "predicted class (cells: test samples)"
        };
        area.draw(&Text::new(
            x_title,
            (x0 + grid_w / 2, y0 + grid_w + 38),
            centered(TEXT),
        ))?;
        area.draw(&Text::new(
            "true class",
            (x0 - 44, y0 + grid_w / 2),
            centered(TEXT).transform(FontTransform::Rotate270),
        ))?;
        Ok(())
    }
}

/// One row of a [`DotPlot`]: a variant's per-seed values and its interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DotRow {
    pub name: String,
    pub values: Vec<f64>,
    pub mean: f64,
    /// The 95% confidence interval of the mean, when there are ≥ 2 values.
    pub ci: Option<(f64, f64)>,
}

/// Per-seed values per variant as dots, with the mean (a vertical bar) and its
/// 95% confidence interval (a horizontal line); the first row on top.
#[derive(Debug, Clone, PartialEq)]
pub struct DotPlot {
    pub title: String,
    pub x_label: String,
    pub rows: Vec<DotRow>,
    pub size: (u32, u32),
}

impl DotPlot {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, rows: Vec<DotRow>) -> Self {
        let height = 110 + 44 * rows.len().max(1) as u32;
        DotPlot {
            title: title.into(),
            x_label: x_label.into(),
            rows,
            size: (760, height),
        }
    }
}

impl Figure for DotPlot {
    const KIND: &'static str = "dot plot";

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for r in &self.rows {
            for v in r
                .values
                .iter()
                .chain([&r.mean])
                .chain(r.ci.iter().flat_map(|c| [&c.0, &c.1]))
            {
                if v.is_finite() {
                    lo = lo.min(*v);
                    hi = hi.max(*v);
                }
            }
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        let span = (hi - lo).max(1e-6);
        let (x0, x1) = (lo - 0.08 * span, hi + 0.08 * span);
        let n = self.rows.len().max(1) as i32;
        let label_w = self
            .rows
            .iter()
            .map(|r| figure::text_width(&r.name, figure::TICK_SIZE))
            .max()
            .unwrap_or(40)
            + 16;
        let decimals = figure::tick_decimals(x1 - x0);
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, figure::TITLE_SIZE).into_font())
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(label_w)
            // i32 ranges are inclusive in plotters: 0..n-1 is n rows, no empty one on top.
            .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())?;
        let names: Vec<&str> = self.rows.iter().map(|r| r.name.as_str()).collect();
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .axis_desc_style((FONT, TEXT))
            .label_style((FONT, figure::TICK_SIZE))
            .x_labels(8)
            .x_label_formatter(&|v| format!("{v:.decimals$}"))
            .y_labels(n as usize)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names
                    .get((n - 1 - i) as usize)
                    .map_or_else(String::new, |s| s.to_string()),
                _ => String::new(),
            })
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(230, 230, 230))
            .draw()?;
        for (i, row) in self.rows.iter().enumerate() {
            let y = n - 1 - i as i32;
            let color = palette(i);
            if let Some((a, b)) = row.ci {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![
                        (a, SegmentValue::CenterOf(y)),
                        (b, SegmentValue::CenterOf(y)),
                    ],
                    color.stroke_width(2),
                )))?;
            }
            chart.draw_series(row.values.iter().filter(|v| v.is_finite()).map(|v| {
                Circle::new((*v, SegmentValue::CenterOf(y)), 5, color.mix(0.55).filled())
            }))?;
            // The mean: a short vertical bar across the row.
            chart.draw_series(std::iter::once(
                EmptyElement::at((row.mean, SegmentValue::CenterOf(y)))
                    + PathElement::new(vec![(0, -11), (0, 11)], BLACK.stroke_width(3)),
            ))?;
        }
        Ok(())
    }
}

/// One small image of an [`ImageGrid`], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
    /// Text under the tile ("7 → 1 (0.98)"); may be empty.
    pub caption: String,
}

/// How tile values become colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileScale {
    /// Each tile from its own min (white) to max (black): digits, activations.
    Gray,
    /// Signed values around 0: blue negative, white 0, red positive, each tile
    /// scaled by its own largest magnitude: weights and filters.
    Diverging,
}

/// Small images in a grid with captions and a title.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    pub title: String,
    pub tiles: Vec<Tile>,
    pub columns: usize,
    /// Screen pixels per image pixel.
    pub zoom: u32,
    pub scale: TileScale,
    /// A line under the title saying what the colours mean; may be empty.
    pub note: String,
}

impl ImageGrid {
    const GAP: u32 = 8;
    const TITLE: u32 = 58;

    fn tile_box(&self) -> (u32, u32) {
        let tw = self.tiles.iter().map(|t| t.width).max().unwrap_or(1) as u32 * self.zoom;
        let th = self.tiles.iter().map(|t| t.height).max().unwrap_or(1) as u32 * self.zoom;
        let caption = if self.tiles.iter().any(|t| !t.caption.is_empty()) {
            20
        } else {
            0
        };
        let widest = self
            .tiles
            .iter()
            .map(|t| figure::text_width(&t.caption, figure::TICK_SIZE))
            .max()
            .unwrap_or(0);
        (tw.max(widest + 4), th + caption)
    }
}

impl Figure for ImageGrid {
    const KIND: &'static str = "image grid";

    fn size(&self) -> (u32, u32) {
        let (bw, bh) = self.tile_box();
        let cols = self.columns.clamp(1, self.tiles.len().max(1)) as u32;
        let rows = self.tiles.len().div_ceil(cols as usize).max(1) as u32;
        let w = (cols * (bw + Self::GAP) + Self::GAP)
            .max(figure::text_width(&self.title, figure::TITLE_SIZE) + 24)
            .max(figure::text_width(&self.note, figure::TICK_SIZE) + 24);
        (w, Self::TITLE + rows * (bh + Self::GAP) + Self::GAP)
    }

    fn validate(&self) -> Result<(), String> {
        for (i, t) in self.tiles.iter().enumerate() {
            if t.pixels.len() != t.width * t.height {
                return Err(format!(
                    "tile {i}: {} pixels for {}×{}",
                    t.pixels.len(),
                    t.width,
                    t.height
                ));
            }
        }
        if self.zoom == 0 {
            return Err("zoom 0".into());
        }
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let (w, _) = self.size();
        area.draw(&Text::new(
            self.title.as_str(),
            (w as i32 / 2, 18),
            centered(figure::TITLE_SIZE),
        ))?;
        if !self.note.is_empty() {
            area.draw(&Text::new(
                self.note.as_str(),
                (w as i32 / 2, 42),
                centered(figure::TICK_SIZE).color(&RGBColor(90, 90, 90)),
            ))?;
        }
        let (bw, bh) = self.tile_box();
        let cols = self.columns.clamp(1, self.tiles.len().max(1));
        let grid_w = cols as u32 * (bw + Self::GAP) + Self::GAP;
        let left = (w.saturating_sub(grid_w) / 2) as i32;
        let z = self.zoom as i32;
        for (i, tile) in self.tiles.iter().enumerate() {
            let bx = left + (Self::GAP + (i % cols) as u32 * (bw + Self::GAP)) as i32;
            let by = (Self::TITLE + Self::GAP + (i / cols) as u32 * (bh + Self::GAP)) as i32;
            let ix = bx + (bw as i32 - tile.width as i32 * z) / 2;
            let (lo, hi) = tile
                .pixels
                .iter()
                .filter(|v| v.is_finite())
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
                    (l.min(*v), h.max(*v))
                });
            let max_abs = lo.abs().max(hi.abs()).max(1e-12);
            for (p, v) in tile.pixels.iter().enumerate() {
                let color = match self.scale {
                    TileScale::Gray => {
                        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
                        let g = (255.0 * (1.0 - t)).round().clamp(0.0, 255.0) as u8;
                        RGBColor(g, g, g)
                    }
                    TileScale::Diverging => {
                        let t = (v / max_abs).clamp(-1.0, 1.0);
                        let fade = |c: f32| (255.0 - (255.0 - c) * t.abs()).round() as u8;
                        if t >= 0.0 {
                            RGBColor(fade(178.0), fade(24.0), fade(43.0))
                        } else {
                            RGBColor(fade(33.0), fade(102.0), fade(172.0))
                        }
                    }
                };
                let (px, py) = ((p % tile.width) as i32, (p / tile.width) as i32);
                let x = ix + px * z;
                let y = by + py * z;
                area.draw(&Rectangle::new([(x, y), (x + z, y + z)], color.filled()))?;
            }
            area.draw(&Rectangle::new(
                [
                    (ix - 1, by - 1),
                    (ix + tile.width as i32 * z, by + tile.height as i32 * z),
                ],
                RGBColor(180, 180, 180).stroke_width(1),
            ))?;
            if !tile.caption.is_empty() {
                area.draw(&Text::new(
                    tile.caption.as_str(),
                    (bx + bw as i32 / 2, by + tile.height as i32 * z + 11),
                    centered(figure::TICK_SIZE),
                ))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_chart_shows_every_count() {
        let counts = vec![vec![5, 1, 0], vec![0, 7, 2], vec![3, 0, 9]];
        let svg = figure::svg(&ConfusionChart::new("cm", counts.clone(), false)).unwrap();
        let texts = crate::figure::svg_texts(&svg);
        for c in ["5", "1", "7", "2", "3", "9", "true class"] {
            assert!(texts.iter().any(|t| t == c), "{c} in {texts:?}");
        }
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 2 * 9,
            "background + fill and border per cell"
        );
        let pct = figure::svg(&ConfusionChart::new("cm", counts, true)).unwrap();
        assert!(
            crate::figure::svg_texts(&pct).contains(&"83".to_string()),
            "5 of 6 is 83%"
        );
        // 1 of 1001 rounds to 0%: shown as "<1", not as "0"; 0 stays blank.
        let rare = vec![vec![1000, 1], vec![0, 5]];
        let texts =
            crate::figure::svg_texts(&figure::svg(&ConfusionChart::new("cm", rare, true)).unwrap());
        assert!(
            texts.contains(&"<1".to_string()) || texts.contains(&"&lt;1".to_string()),
            "{texts:?}"
        );
        let zeros = texts.iter().filter(|t| *t == "0").count();
        assert_eq!(zeros, 2, "class 0's two ticks, and no cell: {texts:?}");
        let bad = ConfusionChart::new("cm", vec![vec![1, 2]], false);
        assert!(figure::svg(&bad).is_err());
    }

    #[test]
    fn dot_plot_draws_dots_means_and_intervals() {
        let rows = vec![
            DotRow {
                name: "baseline".into(),
                values: vec![97.0, 97.2, 97.4],
                mean: 97.2,
                ci: Some((96.7, 97.7)),
            },
            DotRow {
                name: "cnn".into(),
                values: vec![99.0],
                mean: 99.0,
                ci: None,
            },
        ];
        let svg = figure::svg(&DotPlot::new("Test accuracy", "test accuracy (%)", rows)).unwrap();
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(
            svg.contains("baseline") && svg.contains("cnn") && svg.contains("test accuracy (%)")
        );
    }

    #[test]
    fn image_grid_png_has_its_size() {
        let tile = |c: &str| Tile {
            width: 2,
            height: 2,
            pixels: vec![0.0, 0.5, 1.0, -1.0],
            caption: c.into(),
        };
        let grid = ImageGrid {
            title: "grid".into(),
            tiles: vec![tile("a"), tile("b"), tile("c")],
            columns: 2,
            zoom: 10,
            scale: TileScale::Diverging,
            note: String::new(),
        };
        let png = figure::png(&grid).unwrap();
        let (w, h) = crate::figure::png_size(&png);
        assert_eq!((w, h), grid.size());
        let mut bad = grid.clone();
        bad.tiles[0].pixels.pop();
        assert!(
            figure::png(&bad)
                .unwrap_err()
                .to_string()
                .contains("tile 0")
        );
    }
}
