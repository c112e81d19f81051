//! Writes two of a sweep's report figures as PNG (for a README or a paper):
//! validation accuracy over seeds and test accuracy per seed.
//! `cargo run --release -p sweep-report --example sweep_figures -- runs/quickstart OUT_DIR`

use sweep_report::charts::{DotPlot, DotRow};
use sweep_report::{CurveChart, Series, SweepData, curves_png, figure};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sweep = std::path::PathBuf::from(args.next().ok_or("usage: SWEEP_DIR OUT_DIR")?);
    let out = std::path::PathBuf::from(args.next().ok_or("usage: SWEEP_DIR OUT_DIR")?);
    let data = SweepData::load(&sweep, None)?;
    let series = data
        .variants()
        .iter()
        .map(|v| {
            let seeds = data
                .runs_of(v)
                .filter_map(|r| r.metrics.as_ref())
                .map(|m| m.epochs.iter().map(|e| 100.0 * e.val_acc).collect())
                .collect();
            Series::new(v.as_str(), seeds)
        })
        .collect();
    let mut chart = CurveChart::new(
        format!(
            "Sweep {}: validation accuracy, mean ± std over seeds",
            data.name
        ),
        "validation accuracy (%)",
        series,
    );
    chart.size = (820, 440);
    std::fs::write(out.join("validation_accuracy.png"), curves_png(&chart)?)?;
    let table = data.table();
    let rows = table
        .variants
        .iter()
        .map(|v| {
            let values: Vec<f64> = data
                .runs_of(&v.variant)
                .filter_map(|r| r.outcome())
                .map(|o| 100.0 * o.test_acc)
                .collect();
            DotRow {
                name: v.variant.clone(),
                ci: sweep_report::report::mean_ci95(&values),
                mean: 100.0 * v.test_acc.mean,
                values,
            }
        })
        .collect();
    let dots = DotPlot::new(
        format!(
            "Sweep {}: test accuracy per seed, mean and 95% CI",
            data.name
        ),
        "test accuracy of the best checkpoint (%)",
        rows,
    );
    std::fs::write(out.join("test_accuracy_per_seed.png"), figure::png(&dots)?)?;
    Ok(())
}
