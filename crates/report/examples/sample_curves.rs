//! Writes a sample learning-curve chart as SVG and PNG (to look at the style):
//! `cargo run --release -p sweep-report --example sample_curves -- OUT_DIR`.

use sweep_report::{CurveChart, Series, curves_png, curves_svg};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let curve = |start: f64, gain: f64, noise: f64, epochs: usize| -> Vec<f64> {
        (1..=epochs)
            .map(|e| {
                start + gain * (1.0 - (-(e as f64) / 3.0).exp()) + noise * ((e * 7) % 5) as f64
            })
            .collect()
    };
    let chart = CurveChart::new(
        "Validation accuracy",
        "validation accuracy (%)",
        vec![
            Series::new(
                "baseline",
                vec![
                    curve(90.0, 6.0, 0.2, 10),
                    curve(89.5, 6.3, 0.15, 9),
                    curve(90.5, 5.5, 0.25, 10),
                ],
            ),
            Series::new(
                "batch_norm",
                vec![
                    curve(92.0, 5.0, 0.2, 10),
                    curve(92.5, 4.6, 0.1, 10),
                    curve(91.5, 5.2, 0.2, 8),
                ],
            ),
            Series::new(
                "cnn",
                vec![
                    curve(95.0, 3.6, 0.1, 10),
                    curve(95.5, 3.2, 0.12, 10),
                    curve(94.8, 3.8, 0.08, 10),
                ],
            ),
        ],
    );
    std::fs::write(out.join("sample_curves.svg"), curves_svg(&chart)?)?;
    std::fs::write(out.join("sample_curves.png"), curves_png(&chart)?)?;
    Ok(())
}
