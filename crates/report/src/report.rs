//! The per-sweep report: `report/index.html`, one self-contained page (inline
//! SVG and CSS, images as `data:` URIs, no script, nothing fetched) that opens
//! from disk offline, and `report/report.md` with the same tables.
//!
//! What it shows: the results table with 95% confidence intervals, learning
//! curves over seeds (all variants on one chart, and one small chart per
//! variant with its seeds), per-seed test accuracy, and per variant the
//! confusion matrix summed over seeds, per-class accuracy against the
//! baseline, the worst failures and the failure clusters. Runs that failed
//! (or were cancelled) are listed at the top with their error, and so is what
//! is missing or unreadable; neither stops the rest of the report. A command
//! job (the user's program) has no analysis, and none is missing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use statrs::distribution::{ContinuousCDF, StudentsT};
use sweep_core::results::{self, Format, MeanStd, ResultsTable, VariantSummary};

use crate::analysis::{self, ANALYSIS_DIR, AnalysisSummary};
use crate::charts::{ConfusionChart, DotPlot, DotRow};
use crate::curves::{CurveChart, Series};
use crate::figure::{self, ChartError};
use crate::sweep::{RunData, SweepData, Unsuccessful};
use crate::swept::{SweptKeyChart, SweptPoint};

/// Writing the report failed as a whole (a figure or a file could not be
/// written); problems with single runs are listed inside the report instead.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub markdown: PathBuf,
    /// Missing or unreadable files, as listed in the report.
    pub problems: Vec<String>,
}

/// The per-epoch metrics a learning curve can show.
#[derive(Debug, Clone, Copy)]
struct Metric {
    title: &'static str,
    y_label: &'static str,
    get: fn(&sweep_core::metrics::EpochMetrics) -> f64,
}

const CURVES: [Metric; 3] = [
    Metric {
        title: "Validation accuracy",
        y_label: "validation accuracy (%)",
        get: |e| 100.0 * e.val_acc,
    },
    Metric {
        title: "Validation loss",
        y_label: "validation loss (cross-entropy)",
        get: |e| e.val_loss,
    },
    Metric {
        title: "Training loss",
        y_label: "training loss (cross-entropy)",
        get: |e| e.train_loss,
    },
];

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom.
fn t95(df: f64) -> Option<f64> {
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(dist.inverse_cdf(0.975))
}

/// The 95% confidence interval of the mean of `values` (t-based); `None`
/// below two values.
pub fn mean_ci95(values: &[f64]) -> Option<(f64, f64)> {
    let m = MeanStd::of(values)?;
    let half = t95(values.len() as f64 - 1.0)? * m.std? / (values.len() as f64).sqrt();
    Some((m.mean - half, m.mean + half))
}

/// The 95% Welch confidence interval of mean(a) − mean(b), with the same
/// degrees of freedom as the table's Welch test.
pub fn delta_ci95(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    let w = results::welch_t_test(a, b)?;
    let (ma, mb) = (MeanStd::of(a)?, MeanStd::of(b)?);
    let se = ((ma.std?.powi(2) / a.len() as f64) + (mb.std?.powi(2) / b.len() as f64)).sqrt();
    let half = t95(w.df)? * se;
    let d = ma.mean - mb.mean;
    Some((d - half, d + half))
}

fn pct_interval(ci: Option<(f64, f64)>, signed: bool) -> String {
    match ci {
        Some((a, b)) if signed => format!("[{:+.2}, {:+.2}]", 100.0 * a, 100.0 * b),
        Some((a, b)) => format!("[{:.2}, {:.2}]", 100.0 * a, 100.0 * b),
        None => "—".into(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `name` escaped, with a line-break opportunity after each of `after`: a
/// grid variant's long name (after `_`) or a key path (after `.`) wraps in
/// a narrow column instead of widening the table past the page.
fn breakable(name: &str, after: char) -> String {
    let mut out = String::new();
    for c in name.chars() {
        out.push_str(&escape(c.encode_utf8(&mut [0; 4])));
        if c == after {
            out.push_str("<wbr/>");
        }
    }
    out
}

/// One row of the report's results table, every cell already formatted.
struct Row {
    cells: Vec<String>,
}

/// The columns after the variant name and the swept keys.
const HEADER: [&str; 9] = [
    "n",
    "test acc %",
    "95% CI",
    "Δ test (pp)",
    "Δ 95% CI",
    "p",
    "best val acc %",
    "best epoch",
    "train time (s)",
];

/// The results table's header: the variant, each swept key of a grid or
/// random sweep (as `sweepctl results` shows them), then [`HEADER`].
fn header(table: &ResultsTable) -> Vec<String> {
    std::iter::once("variant")
        .chain(table.swept_keys.iter().map(String::as_str))
        .chain(HEADER)
        .map(str::to_string)
        .collect()
}

fn table_rows(data: &SweepData, table: &ResultsTable) -> Vec<Row> {
    let test_accs = |variant: &str| -> Vec<f64> {
        let mut o: Vec<_> = data
            .outcomes()
            .into_iter()
            .filter(|o| o.variant == variant)
            .collect();
        o.sort_by_key(|o| o.seed);
        o.into_iter().map(|o| o.test_acc).collect()
    };
    let base = test_accs(&table.baseline);
    table
        .variants
        .iter()
        .map(|v: &VariantSummary| {
            let values = test_accs(&v.variant);
            let is_base = v.variant == table.baseline;
            let name = if v.mixed_devices() {
                format!("{} {}", v.variant, results::MIXED_MARK)
            } else {
                v.variant.clone()
            };
            let swept = (0..table.swept_keys.len())
                .map(|k| v.swept.get(k).cloned().unwrap_or_else(|| "—".into()));
            Row {
                cells: std::iter::once(name)
                    .chain(swept)
                    .chain([
                        v.n.to_string(),
                        results::mean_std(v.test_acc, 100.0, 2),
                        pct_interval(mean_ci95(&values), false),
                        v.delta_test_acc
                            .map_or_else(|| "—".into(), |d| format!("{:+.2}", d * 100.0)),
                        if is_base || base.is_empty() {
                            "—".into()
                        } else {
                            pct_interval(delta_ci95(&values, &base), true)
                        },
                        v.p_value.map_or_else(|| "—".into(), results::format_p),
                        results::mean_std(v.best_val_acc, 100.0, 2),
                        results::mean_std(v.best_epoch, 1.0, 1),
                        results::mean_std(v.train_seconds, 1.0, 1),
                    ])
                    .collect(),
            }
        })
        .collect()
}

/// Per class: accuracy (recall) from a confusion matrix, in [0, 1].
fn class_accuracy(confusion: &[Vec<u64>]) -> Vec<f64> {
    analysis::class_scores(confusion)
        .iter()
        .map(|s| s.recall)
        .collect()
}

/// The analysed runs of a variant and their confusion matrix summed.
fn summed_confusion(data: &SweepData, variant: &str) -> Option<(Vec<Vec<u64>>, usize)> {
    let analyses: Vec<&AnalysisSummary> = data
        .runs_of(variant)
        .filter_map(|r| r.analysis.as_ref())
        .collect();
    let sum = analysis::sum_confusions(analyses.iter().map(|a| &a.confusion))?;
    Some((sum, analyses.len()))
}

/// `data:` URI of a PNG file, or `None` when it cannot be read.
fn png_data_uri(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    bytes.starts_with(b"\x89PNG").then(|| {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    })
}

/// The seeds of `variant` as one series named `name`; runs without
/// `metrics.json` (not started, or failed before an epoch) have no line.
fn curve_series(data: &SweepData, variant: &str, name: &str, metric: Metric) -> Series {
    Series::new(
        name,
        data.runs_of(variant)
            .filter_map(|r| r.metrics.as_ref())
            .map(|m| m.epochs.iter().map(metric.get).collect())
            .collect(),
    )
}

fn has_epochs(run: &RunData) -> bool {
    run.metrics.as_ref().is_some_and(|m| !m.epochs.is_empty())
}

/// `failed` (or `cancelled`) when every run of `variant` ended so, without
/// a result.
fn ended_without_result(data: &SweepData, variant: &str) -> Option<&'static str> {
    let runs: Vec<&RunData> = data.runs_of(variant).collect();
    let ended: Vec<Unsuccessful> = runs.iter().filter_map(|r| r.unsuccessful()).collect();
    if runs.is_empty() || ended.len() < runs.len() {
        None
    } else if ended.iter().all(|u| u.state == "cancelled") {
        Some("cancelled")
    } else {
        Some("failed")
    }
}

/// What a variant's empty chart says: that its runs failed before an epoch,
/// or that none has come yet.
fn no_epochs(data: &SweepData, variant: &str) -> String {
    match ended_without_result(data, variant) {
        Some(state) => format!("{state}: no epoch recorded"),
        None => "no epochs yet".to_string(),
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{margin-top:1.6em}\
table{border-collapse:collapse;margin:.8em 0;font-variant-numeric:tabular-nums}th,td{padding:.3em .7em;white-space:nowrap;border-bottom:1px solid #e4e4e4;text-align:right}\
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.base{font-weight:600}\
svg{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:12px}.grid>figure{margin:0;flex:1 1 360px}\
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px}.panels>figure{margin:0}\
.wide{overflow-x:auto}.results th{white-space:normal;vertical-align:bottom}.results td:first-child{white-space:normal;min-width:12em}\
.results .ci{color:#666;font-size:.85em;font-weight:400}.problems h2,.failed h2{margin-top:.2em}\
.clusters>figure{margin:.5em 0}.clusters img{image-rendering:auto}.failed{background:#fdecea;border:1px solid #ef9a9a;padding:.6em 1em}\
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}.meta{color:#555}.problems{background:#fff6e5;border:1px solid #f0c36d;padding:.6em 1em}\
.up{color:#0a7a3e}.down{color:#b3261e}img{max-width:100%;image-rendering:pixelated}.note{color:#555;font-size:.92em}";

/// Builds the HTML page and the Markdown text of the report.
pub fn render(data: &SweepData) -> Result<(String, String), ChartError> {
    let table = data.table();
    let rows = table_rows(data, &table);
    let finished = data.runs.iter().filter(|r| r.finished()).count();
    let unsuccessful: Vec<(&RunData, Unsuccessful)> = data
        .runs
        .iter()
        .filter_map(|r| Some((r, r.unsuccessful()?)))
        .collect();
    let mut html = String::new();
    let mut md = String::new();
    let title = format!("Sweep {}", data.name);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let ended = match (table.failed, table.cancelled) {
        (0, 0) => String::new(),
        (failed, 0) => format!(" ({failed} failed)"),
        (0, cancelled) => format!(" ({cancelled} cancelled)"),
        (failed, cancelled) => format!(" ({failed} failed, {cancelled} cancelled)"),
    };
    let status = format!(
        "{finished} of {} runs finished{ended}; baseline: {}; mean ± sample std (n−1) over seeds; 95% CI: Student's t; Δ: difference of means to the baseline with Welch's 95% CI; p: two-sided Welch's t-test.",
        data.runs.len(),
        data.baseline
    );
    let _ = writeln!(html, "<p class=\"meta\">{}</p>", escape(&status));
    let _ = writeln!(md, "# {title}\n\n{status}\n");

    if !unsuccessful.is_empty() {
        let _ = writeln!(
            html,
            "<section class=\"failed\"><h2>Runs without a result ({})</h2>\n<p>No row of the table counts them (the curves show the epochs they reported); <code>sweepctl logs JOB</code> has their output, and <code>sweepctl retry --sweep {}</code> runs them again.</p>\n<ul>",
            unsuccessful.len(),
            escape(&data.name)
        );
        let _ = writeln!(md, "## Runs without a result ({})\n", unsuccessful.len());
        for (run, how) in &unsuccessful {
            let job = run
                .provenance
                .as_ref()
                .map(|p| format!(" (job {})", p.job_id))
                .unwrap_or_default();
            let line = format!("{} seed {}{job}: {how}", run.variant, run.seed);
            let _ = writeln!(html, "<li>{}</li>", escape(&line));
            let _ = writeln!(md, "- {line}");
        }
        html.push_str("</ul></section>\n");
        md.push('\n');
    }

    if !data.problems.is_empty() {
        let _ = writeln!(
            html,
            "<section class=\"problems\"><h2>Missing or unreadable ({})</h2>\n<p>The report shows what exists; these are not in it.</p>\n<ul>",
            data.problems.len()
        );
        let _ = writeln!(md, "## Missing or unreadable ({})\n", data.problems.len());
        for p in &data.problems {
            let _ = writeln!(html, "<li>{}</li>", escape(p));
            let _ = writeln!(md, "- {p}");
        }
        html.push_str("</ul></section>\n");
        md.push('\n');
    }

    // Results.
    // In the page a confidence interval goes under its value, in the same
    // cell: twelve columns side by side are wider than the page.
    let header = header(&table);
    let is_ci = |h: &str| h.ends_with("95% CI");
    html.push_str("<h2>Results</h2>\n<div class=\"wide\"><table class=\"results\">\n<tr>");
    for (h, next) in header
        .iter()
        .zip(header.iter().skip(1).map(Some).chain([None]))
    {
        if is_ci(h) {
            continue;
        }
        let _ = write!(html, "<th>{}", breakable(h, '.'));
        if next.is_some_and(|n| is_ci(n)) {
            html.push_str("<br/><span class=\"ci\">95% CI</span>");
        }
        html.push_str("</th>");
    }
    html.push_str("</tr>\n");
    for (row, v) in rows.iter().zip(&table.variants) {
        let class = if v.variant == table.baseline {
            " class=\"base\""
        } else {
            ""
        };
        let _ = write!(html, "<tr{class}>");
        for (i, (c, h)) in row.cells.iter().zip(&header).enumerate() {
            if is_ci(h) {
                let _ = write!(html, "<br/><span class=\"ci\">{}</span></td>", escape(c));
                continue;
            }
            let text = if i == 0 { breakable(c, '_') } else { escape(c) };
            let _ = write!(html, "<td>{text}");
            if !header.get(i + 1).is_some_and(|n| is_ci(n)) {
                html.push_str("</td>");
            }
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table></div>\n");
    if table.variants.is_empty() {
        html.push_str("<p>No finished runs yet.</p>\n");
    }
    // Variants whose seeds ran on different device types (provenance.json).
    for v in table.variants.iter().filter(|v| v.mixed_devices()) {
        let devices: Vec<String> = v
            .device_types
            .iter()
            .map(|(device, n)| format!("{n} on {device}"))
            .collect();
        let _ = writeln!(
            html,
            "<p class=\"meta\">{}</p>",
            escape(&format!(
                "{} {}: its seeds ran on different device types ({}), so its spread includes hardware differences.",
                results::MIXED_MARK,
                v.variant,
                devices.join(", ")
            ))
        );
    }
    let _ = writeln!(
        md,
        "## Results\n\nAs `sweepctl results --format md` prints it:\n\n{}\nWith 95% confidence intervals:\n\n| {} |\n|{}|",
        table.render(Format::Markdown),
        header.join(" | "),
        header.iter().map(|_| " --- ").collect::<Vec<_>>().join("|")
    );
    for row in &rows {
        let _ = writeln!(md, "| {} |", row.cells.join(" | "));
    }
    md.push('\n');

    let variants = data.variants();
    // Per-seed test accuracy.
    let dot_rows: Vec<DotRow> = table
        .variants
        .iter()
        .map(|v| {
            let values: Vec<f64> = data
                .runs_of(&v.variant)
                .filter_map(RunData::outcome)
                .map(|o| 100.0 * o.test_acc)
                .collect();
            DotRow {
                name: v.variant.clone(),
                ci: mean_ci95(&values),
                mean: 100.0 * v.test_acc.mean,
                values,
            }
        })
        .collect();
    if !dot_rows.is_empty() {
        let dots = DotPlot::new(
            "Test accuracy per seed",
            "test accuracy of the best checkpoint (%)",
            dot_rows,
        );
        let _ = writeln!(
            html,
            "<h2>Test accuracy per seed</h2>\n<figure>{}<figcaption>Dots: one seed each; black bar: the mean; line: its 95% confidence interval (t, n−1).</figcaption></figure>",
            figure::svg(&dots)?
        );
    }

    // The metric against each swept key (grid and random sweeps).
    for (k, key) in table.swept_keys.iter().enumerate() {
        let points: Vec<SweptPoint> = table
            .variants
            .iter()
            .filter(|v| v.swept.len() == table.swept_keys.len() && v.n > 0)
            .map(|v| SweptPoint {
                value: v.swept[k].clone(),
                group: table
                    .swept_keys
                    .iter()
                    .zip(&v.swept)
                    .enumerate()
                    .filter(|(i, _)| *i != k)
                    .map(|(_, (_, value))| value.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                mean: 100.0 * v.test_acc.mean,
                std: v.test_acc.std.map(|s| 100.0 * s),
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        if k == 0 {
            html.push_str("<h2>Test accuracy against the swept keys</h2>\n");
        }
        let others: Vec<&str> = table
            .swept_keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, key)| key.as_str())
            .collect();
        let chart = SweptKeyChart::new(key, others.join(", "), "test accuracy (%)", points);
        let _ = writeln!(
            html,
            "<figure>{}<figcaption>One point per variant: the mean over its seeds, bar: ± 1 sample std.</figcaption></figure>",
            figure::svg(&chart)?
        );
    }

    // Learning curves. Variants without a single epoch (their runs failed
    // before one, or have not started) have no line: they are named under
    // the charts instead of taking a colour and a legend row.
    let drawn: Vec<&String> = variants
        .iter()
        .filter(|v| data.runs_of(v).any(has_epochs))
        .collect();
    let undrawn: Vec<String> = variants
        .iter()
        .filter(|v| !drawn.contains(v))
        .map(|v| {
            format!(
                "{v} ({})",
                ended_without_result(data, v).unwrap_or("none yet")
            )
        })
        .collect();
    html.push_str("<h2>Learning curves</h2>\n<p class=\"note\">Line: the mean over seeds; band: ± 1 sample std; at an epoch that only some seeds reached (early stopping), over those seeds.</p>\n");
    for metric in CURVES {
        let series = drawn
            .iter()
            .map(|v| curve_series(data, v, v, metric))
            .collect();
        let mut chart = CurveChart::new(metric.title, metric.y_label, series);
        chart.show_seeds = false;
        chart.size = (980, 460);
        let _ = writeln!(html, "<figure>{}</figure>", figure::svg(&chart)?);
    }
    if !undrawn.is_empty() {
        let _ = writeln!(
            html,
            "<p class=\"note\">Not drawn, no epoch recorded: {}.</p>",
            escape(&undrawn.join("; "))
        );
    }
    html.push_str("<h3>Each variant with its seeds</h3>\n<p class=\"note\">Faint lines: one seed each; the same axes for every variant.</p>\n");
    let last_epoch = data
        .runs
        .iter()
        .filter_map(|r| Some(r.metrics.as_ref()?.epochs.len()))
        .max()
        .unwrap_or(0) as u32;
    for metric in CURVES {
        let _ = writeln!(html, "<h4>{}</h4>\n<div class=\"panels\">", metric.title);
        // Named "mean" in the panel's legend: its title names the variant,
        // which a legend that narrow would cut.
        let all: Vec<(&String, Series)> = variants
            .iter()
            .map(|v| (v, curve_series(data, v, "mean", metric)))
            .collect();
        let (lo, hi) = all
            .iter()
            .flat_map(|(_, s)| s.seeds.iter().flatten())
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                (l.min(*v), h.max(*v))
            });
        let pad = 0.05 * (hi - lo).max(1e-9);
        for (variant, series) in all {
            let n = data.runs_of(variant).count();
            let title = format!("{variant} ({n} seed{})", if n == 1 { "" } else { "s" });
            let mut chart = CurveChart::new(title, metric.y_label, vec![series]);
            chart.size = (560, 330);
            chart.y_range = Some((lo - pad, hi + pad));
            chart.x_max = Some(last_epoch);
            chart.empty_text = no_epochs(data, variant);
            let _ = writeln!(html, "<figure>{}</figure>", figure::svg(&chart)?);
        }
        html.push_str("</div>\n");
    }

    // Per variant analysis.
    html.push_str("<h2>Per variant: where the errors are</h2>\n");
    let _ = writeln!(md, "## Per variant: where the errors are\n");
    let base_acc = summed_confusion(data, &data.baseline).map(|(c, _)| class_accuracy(&c));
    // The analysis (predictions, confusion, failures) is the built-in
    // trainer's; a sweep of the user's own program has none, by design.
    let commands_only = !data.runs.is_empty() && data.runs.iter().all(|r| r.command);
    if commands_only {
        let why = "The runs are command jobs (the user's program): the analysis of predictions is the built-in trainer's, so there is none here.";
        let _ = writeln!(html, "<p>{why}</p>");
        let _ = writeln!(md, "{why}\n");
    }
    for v in variants.iter().filter(|_| !commands_only) {
        let _ = writeln!(html, "<h3>{}</h3>", escape(v));
        let _ = writeln!(md, "### {v}\n");
        let Some((confusion, seeds)) = summed_confusion(data, v) else {
            let why = if let Some(state) = ended_without_result(data, v) {
                format!("Every seed of this variant {state}, so none was analysed (see above).")
            } else if data.runs_of(v).all(|r| r.command) {
                "Command jobs (the user's program): the analysis is the built-in trainer's, so there is none.".to_string()
            } else {
                "No analysis of any seed of this variant (see above).".to_string()
            };
            let _ = writeln!(html, "<p>{}</p>", escape(&why));
            let _ = writeln!(md, "{why}\n");
            continue;
        };
        let chart = ConfusionChart::new(
            format!(
                "{v}: confusion over {seeds} seed{}",
                if seeds == 1 { "" } else { "s" }
            ),
            confusion.clone(),
            true,
        );
        let acc = class_accuracy(&confusion);
        let _ = write!(
            html,
            "<div class=\"grid\"><figure>{}<figcaption>Test samples of all analysed seeds; cells: % of the true class, colour the same.</figcaption></figure>\n<figure><table><tr><th>digit</th><th>accuracy %</th><th>Δ vs {} (pp)</th></tr>\n",
            figure::svg(&chart)?,
            escape(&data.baseline)
        );
        let _ = writeln!(
            md,
            "Confusion summed over {seeds} seeds. Per-class accuracy:\n\n| digit | accuracy % | Δ vs {} (pp) |\n| --- | --- | --- |",
            data.baseline
        );
        for (c, a) in acc.iter().enumerate() {
            let delta = base_acc
                .as_ref()
                .filter(|_| v != &data.baseline)
                .and_then(|b| b.get(c))
                .map(|b| 100.0 * (a - b));
            let (text, class) = match delta {
                Some(d) => (
                    format!("{d:+.2}"),
                    if d > 0.0 {
                        "up"
                    } else if d < 0.0 {
                        "down"
                    } else {
                        ""
                    },
                ),
                None => ("—".to_string(), ""),
            };
            let _ = writeln!(
                html,
                "<tr><td>{c}</td><td>{:.2}</td><td class=\"{class}\">{text}</td></tr>",
                100.0 * a
            );
            let _ = writeln!(md, "| {c} | {:.2} | {text} |", 100.0 * a);
        }
        html.push_str("</table></figure></div>\n");
        md.push('\n');

        // Failures and clusters of one seed: the first analysed one.
        if let Some(run) = data.runs_of(v).find(|r| r.analysis.is_some()) {
            let a = run.analysis.as_ref().expect("found with analysis");
            let dir = run.dir.join(ANALYSIS_DIR);
            let _ = writeln!(
                html,
                "<h4>Seed {}: the {} test samples with the highest loss</h4>",
                run.seed,
                a.top_failures.len()
            );
            match png_data_uri(&dir.join("top_failures.png")) {
                Some(uri) => {
                    let _ = writeln!(
                        html,
                        "<figure><img alt=\"top failures of {} seed {}\" src=\"{uri}\"/></figure>",
                        escape(v),
                        run.seed
                    );
                }
                None => {
                    let _ = writeln!(
                        html,
                        "<p>{}: missing.</p>",
                        escape(&dir.join("top_failures.png").display().to_string())
                    );
                }
            }
            let _ = writeln!(
                md,
                "Seed {}: highest-loss test samples (index: true → predicted, confidence): {}\n",
                run.seed,
                a.top_failures
                    .iter()
                    .map(|p| format!(
                        "{}: {} → {} ({:.2})",
                        p.index, p.label, p.predicted, p.confidence
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if let Some(clusters) = &a.clusters {
                let _ = writeln!(
                    html,
                    "<h4>Seed {}: failure clusters</h4>\n<p class=\"note\">{} misclassified test samples; embedding: {}; PCA to {} dimensions ({:.0}% of the variance); k-means with k = {} ({}), seed {}.</p>\n<table><tr><th>cluster</th><th>size</th><th>dominant true → predicted</th><th>typical members (test index)</th></tr>",
                    run.seed,
                    clusters.failures,
                    escape(&clusters.embedding),
                    clusters.pca_dims,
                    100.0 * clusters.explained_variance,
                    clusters.k,
                    escape(&clusters.k_rule),
                    clusters.seed
                );
                let _ = writeln!(
                    md,
                    "Failure clusters of seed {} (k = {}, {}):\n\n| cluster | size | dominant true → predicted | typical members |\n| --- | --- | --- | --- |",
                    run.seed, clusters.k, clusters.k_rule
                );
                for c in &clusters.clusters {
                    let pairs = c
                        .pairs
                        .iter()
                        .map(|p| format!("{} → {} ({})", p.label, p.predicted, p.count))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let members = c
                        .typical
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = writeln!(
                        html,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        c.id,
                        c.size,
                        escape(&pairs),
                        escape(&members)
                    );
                    let _ = writeln!(md, "| {} | {} | {pairs} | {members} |", c.id, c.size);
                }
                // One per row, at their own size: scaled down side by side,
                // their titles and "true → predicted" captions are unreadable.
                html.push_str("</table>\n<div class=\"clusters\">\n");
                md.push('\n');
                for c in &clusters.clusters {
                    if let Some(uri) = png_data_uri(&dir.join(format!("cluster_{}.png", c.id))) {
                        let _ = writeln!(
                            html,
                            "<figure><img alt=\"cluster {} of {} seed {}\" src=\"{uri}\"/></figure>",
                            c.id,
                            escape(v),
                            run.seed
                        );
                    }
                }
                html.push_str("</div>\n");
            }
        }
    }
    html.push_str("<p class=\"meta\">Written by sweeprun's sweep report; every figure is inline, nothing is fetched.</p>\n</body>\n</html>\n");
    Ok((html, md))
}

/// Reads the sweep in `sweep_dir` and writes `index.html` and `report.md`
/// into `out_dir` (created if needed).
pub fn write_report(
    sweep_dir: &Path,
    out_dir: &Path,
    baseline: Option<&str>,
) -> Result<Written, ReportError> {
    let data = SweepData::load(sweep_dir, baseline).map_err(|e| ReportError::Io {
        path: e.path.clone(),
        source: e.source,
    })?;
    write_data(&data, out_dir)
}

/// Writes the report of already loaded sweep data.
pub fn write_data(data: &SweepData, out_dir: &Path) -> Result<Written, ReportError> {
    let (html, md) = render(data)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let html_path = out_dir.join("index.html");
    let md_path = out_dir.join("report.md");
    sweep_core::run_dir::write_atomic(&html_path, html.as_bytes()).map_err(io(&html_path))?;
    sweep_core::run_dir::write_atomic(&md_path, md.as_bytes()).map_err(io(&md_path))?;
    Ok(Written {
        html: html_path,
        markdown: md_path,
        problems: data.problems.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_intervals_by_hand() {
        // mean 2, std 1, n 3: half width t(0.975, 2) · 1/√3 = 4.302653 / 1.732051.
        let (a, b) = mean_ci95(&[1.0, 2.0, 3.0]).unwrap();
        let half = 4.302652729911275 / 3f64.sqrt();
        assert!(
            (a - (2.0 - half)).abs() < 1e-9 && (b - (2.0 + half)).abs() < 1e-9,
            "{a} {b}"
        );
        assert_eq!(mean_ci95(&[1.0]), None);
        // The Δ interval holds the difference and is symmetric around it.
        let (lo, hi) = delta_ci95(&[5.0, 6.0, 7.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!(((lo + hi) / 2.0 - 4.0).abs() < 1e-12 && lo < 4.0 && hi > 4.0);
        // Welch with equal variances and sizes: df = 4, se = √(2/3).
        let half = (hi - lo) / 2.0;
        assert!(
            (half - 2.776445105197793 * (2.0f64 / 3.0).sqrt()).abs() < 1e-9,
            "{half}"
        );
    }
}
