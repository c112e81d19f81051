//! Figures and reports of a sweep, without libtorch: the coordinator, a light
//! `sweepctl` and the dashboard render them from the files a sweep leaves on
//! disk; the trainer (which has libtorch) only computes the numbers.
//!
//! # Layout
//! - [`figure`]: the [`Figure`] trait, rendering to SVG and PNG from one
//!   drawing code, the bundled font and the palette.
//! - [`curves`]: learning curves grouped over seeds (mean ± std band, faint
//!   seed lines, legend); the chart the dashboard draws live.

pub mod curves;
pub mod figure;

pub use curves::{CurveChart, Series, curves_png, curves_svg};
pub use figure::{ChartError, Figure};
