//! Figures and reports of a sweep, without libtorch: the coordinator, a light
//! `sweepctl` and the dashboard render them from the files a sweep leaves on
//! disk; the trainer (which has libtorch) only computes the numbers.
//!
//! # Layout
//! - [`figure`]: the [`Figure`] trait, rendering to SVG and PNG from one
//!   drawing code, the bundled font and the palette.
//! - [`curves`]: learning curves grouped over seeds (mean ± std band, faint
//!   seed lines, legend); the chart the dashboard draws live.
//! - [`charts`]: confusion matrix heat map, dot plot of per-seed values with
//!   mean and 95% CI, grids of small images.
//! - [`swept`]: the metric against each swept key of a grid or random sweep.
//! - [`analysis`]: `analysis/summary.json` of a run and the arithmetic on
//!   predictions (confusion, precision/recall/F1, top failures).
//! - [`sweep`]: a sweep read back from its run directories, and its results
//!   table rebuilt with the same code as `sweepctl results`.
//! - [`report`]: `report/index.html` (self-contained) and `report/report.md`.
//! - [`aggregate`]: `_aggregate/<variant>/` TensorBoard files, seed mean ± std.

pub mod aggregate;
pub mod analysis;
pub mod charts;
pub mod curves;
pub mod figure;
pub mod report;
pub mod sweep;
pub mod swept;

pub use curves::{CurveChart, Series, curves_png, curves_svg};
pub use figure::{ChartError, Figure};
pub use report::{Written, write_report};
pub use sweep::SweepData;
