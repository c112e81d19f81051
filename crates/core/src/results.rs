//! The answer a sweep exists to give: per variant, how well it did across seeds
//! and whether its difference to the baseline is more than seed noise.
//!
//! One number per seed hides how much of a difference is luck, so every metric
//! is reported as mean ± sample standard deviation (n−1) across seeds, and each
//! variant's test accuracy is compared to the baseline's with Welch's t-test,
//! which does not assume the two variants are equally noisy. The same table
//! renders for the terminal, as Markdown for reports, as CSV for spreadsheets
//! and as JSON for programs.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Shown wherever a number does not apply (a std of one seed, the baseline's
/// own delta, ...).
const NOT_APPLICABLE: &str = "—";

/// Marks a variant whose seeds ran on different device types.
pub const MIXED_MARK: &str = "†";

/// The final numbers of one finished run (one seed of one variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub variant: String,
    pub seed: u64,
    /// Test accuracy of the best checkpoint, a fraction in [0, 1].
    pub test_acc: f64,
    /// Best validation accuracy, a fraction in [0, 1].
    pub best_val_acc: f64,
    pub best_epoch: u32,
    pub train_seconds: f64,
    /// The device type the result was computed on
    /// ([`crate::provenance::AttemptProvenance::device_type`]), where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// Mean and sample standard deviation of one metric across seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    /// Sample standard deviation (divisor n−1); `None` for fewer than two
    /// values, where it is undefined rather than zero.
    pub std: Option<f64>,
}

impl MeanStd {
    /// Summarizes `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let (mean, variance) = mean_and_variance(values)?;
        Some(MeanStd {
            mean,
            std: variance.map(f64::sqrt),
        })
    }
}

/// Mean and sample variance (n−1); the variance is `None` below two values.
fn mean_and_variance(values: &[f64]) -> Option<(f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    // Two passes rather than the sum-of-squares shortcut: accuracies agree to
    // many digits across seeds, and the shortcut would cancel them away.
    let variance = (values.len() >= 2)
        .then(|| values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0));
    Some((mean, variance))
}

/// Result of Welch's unequal-variances t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchTest {
    /// t statistic of mean(a) − mean(b).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Welch's t-test of the means of `a` and `b`.
///
/// `None` when either sample has fewer than two values (no variance estimate)
/// or when both have zero variance. In the latter case the statistic is 0/0 or
/// ±∞; rather than claim p = 0 from, say, a deterministic model that ignores the
/// seed, we report no test: the data cannot tell noise from effect.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    let (mean_a, var_a) = mean_and_variance(a)?;
    let (mean_b, var_b) = mean_and_variance(b)?;
    let (var_a, var_b) = (var_a?, var_b?);
    let (n_a, n_b) = (a.len() as f64, b.len() as f64);
    let (se2_a, se2_b) = (var_a / n_a, var_b / n_b);
    let se2 = se2_a + se2_b;
    if se2 <= 0.0 || !se2.is_finite() {
        return None;
    }
    let t = (mean_a - mean_b) / se2.sqrt();
    let df = se2.powi(2) / (se2_a.powi(2) / (n_a - 1.0) + se2_b.powi(2) / (n_b - 1.0));
    // `sf` rather than `1 - cdf` keeps tiny p-values from rounding to zero.
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p_value = (2.0 * dist.sf(t.abs())).min(1.0);
    p_value.is_finite().then_some(WelchTest { t, df, p_value })
}

/// One row of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    pub variant: String,
    /// Number of finished seeds.
    pub n: usize,
    pub test_acc: MeanStd,
    pub best_val_acc: MeanStd,
    pub best_epoch: MeanStd,
    pub train_seconds: MeanStd,
    /// Mean test accuracy minus the baseline's (a difference of fractions);
    /// `None` for the baseline itself or while the baseline has no results.
    pub delta_test_acc: Option<f64>,
    /// Two-sided Welch's t-test of test accuracy against the baseline; `None`
    /// where [`welch_t_test`] gives no test, and for the baseline itself.
    pub p_value: Option<f64>,
    /// The variant's value of each swept key (grid or random sweeps), in the
    /// order of [`ResultsTable::swept_keys`], as the config writes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swept: Vec<String>,
    /// Half-width of the 95% confidence interval of the mean test accuracy
    /// (a fraction), where there are two seeds or more.
    #[serde(default)]
    pub ci_halfwidth: Option<f64>,
    /// Adaptive seeds: the variant ran `seeds.max` seeds and its CI is still
    /// wider than the target.
    #[serde(default)]
    pub max_seeds_hit: bool,
    /// How many of its seeds ran on each device type (where known). More
    /// than one entry flags the variant: its spread over seeds then includes
    /// hardware differences, not only the seed's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_types: BTreeMap<String, usize>,
}

impl VariantSummary {
    /// Its seeds ran on more than one device type.
    pub fn mixed_devices(&self) -> bool {
        self.device_types.len() > 1
    }
}

/// Everything a sweep's results report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsTable {
    pub sweep: String,
    pub baseline: String,
    /// The baseline first (when it has results), then the others by name.
    pub variants: Vec<VariantSummary>,
    /// Jobs not finished yet, so a partial table says so.
    pub pending: usize,
    /// Jobs that ended without a result (failed, or cancelled), which no
    /// row counts: the notes say so, rather than "no finished runs".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: usize,
    /// Variants cut by [`ResultsTable::truncate`] (`--top`), so that the
    /// notes neither miss them nor call the baseline unfinished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
    /// Keys of a grid or random sweep: one column each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swept_keys: Vec<String>,
    /// Adaptive seeds: the target half-width of the 95% CI, in points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ci_halfwidth: Option<f64>,
}

/// Output format of [`ResultsTable::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Box-drawn table for the terminal.
    Table,
    Markdown,
    Csv,
    Json,
}

impl Format {
    /// Names accepted by [`FromStr`], for help texts.
    pub const NAMES: [&str; 5] = ["table", "md", "markdown", "csv", "json"];

    /// File extension for a results file in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Markdown => "md",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// An output format name that is none of [`Format::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected one of table, md, markdown, csv, json")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "md" | "markdown" => Ok(Format::Markdown),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Table => "table",
            Format::Markdown => "markdown",
            Format::Csv => "csv",
            Format::Json => "json",
        })
    }
}

/// Builds the results table from the finished runs of a sweep.
///
/// `outcomes` holds one entry per finished job; `pending` counts the jobs that
/// have none yet. Within a variant, outcomes are taken in seed order so that the
/// numbers do not change in their last bits with the order jobs finished in.
pub fn summarize(
    sweep: &str,
    baseline: &str,
    outcomes: &[RunOutcome],
    pending: usize,
) -> ResultsTable {
    let mut by_variant: BTreeMap<&str, Vec<&RunOutcome>> = BTreeMap::new();
    for outcome in outcomes {
        by_variant
            .entry(outcome.variant.as_str())
            .or_default()
            .push(outcome);
    }
    for runs in by_variant.values_mut() {
        runs.sort_by_key(|r| r.seed);
    }
    let baseline_acc: Option<Vec<f64>> = by_variant
        .get(baseline)
        .map(|runs| runs.iter().map(|r| r.test_acc).collect());

    // The BTreeMap already orders by name; only the baseline moves to the top.
    let (base, others): (Vec<_>, Vec<_>) =
        by_variant.iter().partition(|(name, _)| **name == baseline);
    let variants = base
        .into_iter()
        .chain(others)
        .filter_map(|(name, runs)| {
            let compare_to = baseline_acc.as_deref().filter(|_| *name != baseline);
            summarize_variant(name, runs, compare_to)
        })
        .collect();
    ResultsTable {
        sweep: sweep.to_string(),
        baseline: baseline.to_string(),
        variants,
        pending,
        failed: 0,
        cancelled: 0,
        omitted: Vec::new(),
        swept_keys: Vec::new(),
        target_ci_halfwidth: None,
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn jobs(n: usize) -> &'static str {
    if n == 1 { "job" } else { "jobs" }
}

/// Half-width of the two-sided 95% confidence interval of the mean of
/// `values` (Student's t with n−1 degrees of freedom); `None` below two values.
pub fn ci95_halfwidth(values: &[f64]) -> Option<f64> {
    let (_, variance) = mean_and_variance(values)?;
    let n = values.len() as f64;
    let t = StudentsT::new(0.0, 1.0, n - 1.0).ok()?.inverse_cdf(0.975);
    let halfwidth = t * (variance? / n).sqrt();
    halfwidth.is_finite().then_some(halfwidth)
}

fn summarize_variant(
    name: &str,
    runs: &[&RunOutcome],
    baseline_acc: Option<&[f64]>,
) -> Option<VariantSummary> {
    let column =
        |f: fn(&RunOutcome) -> f64| MeanStd::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let test_acc_values: Vec<f64> = runs.iter().map(|r| r.test_acc).collect();
    let test_acc = MeanStd::of(&test_acc_values)?;
    let baseline_mean = baseline_acc.and_then(MeanStd::of).map(|m| m.mean);
    let mut device_types = BTreeMap::new();
    for device in runs.iter().filter_map(|r| r.device.clone()) {
        *device_types.entry(device).or_insert(0) += 1;
    }
    Some(VariantSummary {
        device_types,
        swept: Vec::new(),
        ci_halfwidth: ci95_halfwidth(&test_acc_values),
        max_seeds_hit: false,
        variant: name.to_string(),
        n: runs.len(),
        test_acc,
        best_val_acc: column(|r| r.best_val_acc)?,
        best_epoch: column(|r| f64::from(r.best_epoch))?,
        train_seconds: column(|r| r.train_seconds)?,
        delta_test_acc: baseline_mean.map(|b| test_acc.mean - b),
        p_value: baseline_acc
            .and_then(|b| welch_t_test(&test_acc_values, b))
            .map(|w| w.p_value),
    })
}

/// A column [`ResultsTable::sort_by`] can sort on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Variant,
    N,
    TestAcc,
    Delta,
    P,
    BestValAcc,
    BestEpoch,
    TrainTime,
    /// A swept key, by its path (or the last part of it).
    Swept(String),
}

impl SortKey {
    /// Accepts the column names of the CSV output (`test_acc`, `p_value`,
    /// ...), short forms (`acc`, `p`, `time`) and swept keys.
    pub fn parse(name: &str) -> SortKey {
        match name.trim_start_matches('-') {
            "variant" | "name" => SortKey::Variant,
            "n" => SortKey::N,
            "test_acc" | "test" | "acc" => SortKey::TestAcc,
            "delta" | "delta_test_acc" => SortKey::Delta,
            "p" | "p_value" => SortKey::P,
            "best_val_acc" | "val_acc" => SortKey::BestValAcc,
            "best_epoch" | "epoch" => SortKey::BestEpoch,
            "train_seconds" | "time" | "train_time" => SortKey::TrainTime,
            other => SortKey::Swept(other.to_string()),
        }
    }
}

/// `--sort`/`--top` asked for something the table does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot sort by {0:?}: not a column of this table (variant, n, test_acc, delta, p, best_val_acc, best_epoch, train_seconds{1})"
)]
pub struct UnknownColumn(pub String, pub String);

impl ResultsTable {
    /// Adds the swept-key columns: `values[variant]` holds the variant's value
    /// of each of `keys`. Variants not in `values` (named variants) show `—`.
    pub fn set_swept(&mut self, keys: &[String], values: &BTreeMap<String, Vec<String>>) {
        self.swept_keys = keys.to_vec();
        for v in &mut self.variants {
            v.swept = values
                .get(&v.variant)
                .cloned()
                .unwrap_or_else(|| vec![NOT_APPLICABLE.to_string(); keys.len()]);
        }
    }

    /// Marks the variants that ran `max` seeds (`jobs[variant]` counts them,
    /// failed ones included) with their CI still wider than `target` points.
    pub fn set_seed_policy(&mut self, max: usize, target: f64, jobs: &BTreeMap<String, usize>) {
        self.target_ci_halfwidth = Some(target);
        for v in &mut self.variants {
            let ran = jobs.get(&v.variant).copied().unwrap_or(v.n);
            let wide = v.ci_halfwidth.is_none_or(|hw| hw * 100.0 > target);
            v.max_seeds_hit = ran >= max && wide;
        }
    }

    /// Orders the rows by `column` (descending for accuracies, ascending
    /// otherwise; a leading `-` reverses). The baseline loses its first place.
    pub fn sort_by(&mut self, column: &str) -> Result<(), UnknownColumn> {
        let key = SortKey::parse(column);
        let reverse = column.starts_with('-');
        let index = match &key {
            SortKey::Swept(name) => Some(self.swept_index(name).ok_or_else(|| {
                let swept: String = self.swept_keys.iter().map(|k| format!(", {k}")).collect();
                UnknownColumn(column.to_string(), swept)
            })?),
            _ => None,
        };
        let number = |v: &VariantSummary| -> Option<f64> {
            match &key {
                SortKey::Variant => None,
                SortKey::N => Some(v.n as f64),
                SortKey::TestAcc => Some(-v.test_acc.mean),
                SortKey::Delta => v.delta_test_acc.map(|d| -d),
                SortKey::P => v.p_value,
                SortKey::BestValAcc => Some(-v.best_val_acc.mean),
                SortKey::BestEpoch => Some(v.best_epoch.mean),
                SortKey::TrainTime => Some(v.train_seconds.mean),
                SortKey::Swept(_) => index.and_then(|i| v.swept.get(i)?.parse::<f64>().ok()),
            }
        };
        let text = |v: &VariantSummary| -> String {
            match index {
                Some(i) => v.swept.get(i).cloned().unwrap_or_default(),
                None => v.variant.clone(),
            }
        };
        // Rows without a value (n/a) go last whichever the direction.
        self.variants.sort_by(|a, b| {
            let order = match (number(a), number(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => return std::cmp::Ordering::Less,
                (None, Some(_)) => return std::cmp::Ordering::Greater,
                (None, None) => text(a).cmp(&text(b)),
            };
            if reverse { order.reverse() } else { order }
        });
        Ok(())
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        let cut = self.variants.split_off(n.min(self.variants.len()));
        self.omitted.extend(cut.into_iter().map(|v| v.variant));
    }

    /// Records the jobs that ended without a result.
    pub fn set_unsuccessful(&mut self, failed: usize, cancelled: usize) {
        self.failed = failed;
        self.cancelled = cancelled;
    }

    fn swept_index(&self, name: &str) -> Option<usize> {
        self.swept_keys.iter().position(|k| k == name).or_else(|| {
            let mut leaf = self
                .swept_keys
                .iter()
                .enumerate()
                .filter(|(_, k)| k.rsplit('.').next() == Some(name));
            match (leaf.next(), leaf.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        })
    }

    /// Renders the table; every format ends with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.render_text(false),
            Format::Markdown => self.render_text(true),
            Format::Csv => self.render_csv(),
            Format::Json => {
                // Plain structs of strings and numbers: serde_json cannot fail
                // on them (NaN becomes null).
                let mut json =
                    serde_json::to_string_pretty(self).expect("ResultsTable serializes to JSON");
                json.push('\n');
                json
            }
        }
    }

    /// The table's header and rows, as every text rendering shows them (the
    /// terminal, Markdown, the dashboard): one definition of each cell.
    /// The first `1 + swept_keys.len()` columns are names, the rest numbers.
    pub fn cells(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header: Vec<String> = vec!["variant".into()];
        header.extend(self.swept_keys.iter().cloned());
        header.extend(
            [
                "n",
                "test acc %",
                "Δ test (pp)",
                "p",
                "best val acc %",
                "best epoch",
                "train time (s)",
            ]
            .map(String::from),
        );
        let n_column = 1 + self.swept_keys.len();
        let rows = self
            .variants
            .iter()
            .map(|v| {
                // Flagged, and explained under the table.
                let mut row = vec![if v.mixed_devices() {
                    format!("{} {MIXED_MARK}", v.variant)
                } else {
                    v.variant.clone()
                }];
                row.extend(v.swept.iter().cloned());
                row.resize(n_column, NOT_APPLICABLE.to_string());
                row.extend([
                    if v.max_seeds_hit {
                        format!("{}*", v.n)
                    } else {
                        v.n.to_string()
                    },
                    mean_std(v.test_acc, 100.0, 2),
                    v.delta_test_acc.map_or_else(
                        || NOT_APPLICABLE.to_string(),
                        |d| format!("{:+.2}", d * 100.0),
                    ),
                    v.p_value
                        .map_or_else(|| NOT_APPLICABLE.to_string(), format_p),
                    mean_std(v.best_val_acc, 100.0, 2),
                    mean_std(v.best_epoch, 1.0, 1),
                    mean_std(v.train_seconds, 1.0, 1),
                ]);
                row
            })
            .collect();
        (header, rows)
    }

    /// The sentences under the table: what the columns mean, the seed
    /// policy, a baseline without runs, the jobs still pending.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.variants.is_empty() && self.omitted.is_empty() {
            let none = if self.pending == 0 && self.failed + self.cancelled > 0 {
                "no run succeeded"
            } else {
                "no finished runs yet"
            };
            notes.push(format!("Sweep {}: {none}.", self.sweep));
        } else {
            if self.baseline.is_empty() {
                notes.push(format!(
                    "Sweep {}: mean ± sample std (n−1) over seeds; no baseline, so no Δ or p; \
                     {NOT_APPLICABLE}: n/a.",
                    self.sweep
                ));
            } else {
                notes.push(format!(
                    "Sweep {}: mean ± sample std (n−1) over seeds; Δ: test acc minus that of \"{}\", in \
                     points; p: two-sided Welch's t-test vs the baseline; {NOT_APPLICABLE}: n/a.",
                    self.sweep, self.baseline
                ));
            }
            if let Some(target) = self.target_ci_halfwidth {
                notes.push(format!(
                    "Seeds were added to each variant until the 95% CI half-width of its mean test acc \
                     was at most {target} points; *: seeds.max reached first."
                ));
            }
            for v in self.variants.iter().filter(|v| v.mixed_devices()) {
                let devices: Vec<String> = v
                    .device_types
                    .iter()
                    .map(|(device, n)| format!("{n} on {device}"))
                    .collect();
                notes.push(format!(
                    "{MIXED_MARK} {}: its seeds ran on different device types ({}), so its spread \
                     includes hardware differences (`sweepctl show JOB` says where each ran).",
                    v.variant,
                    devices.join(", ")
                ));
            }
            match self.omitted.len() {
                0 => {}
                1 => notes.push(format!("1 more variant not shown ({}).", self.omitted[0])),
                n => notes.push(format!("{n} more variants not shown.")),
            }
            if !self.baseline.is_empty()
                && !self.variants.iter().any(|v| v.variant == self.baseline)
                && !self.omitted.contains(&self.baseline)
            {
                // Whether the baseline's own jobs failed is not known here,
                // only whether any job did.
                notes.push(match (self.pending, self.failed + self.cancelled) {
                    (_, 0) => format!("The baseline {:?} has no finished runs yet.", self.baseline),
                    (0, _) => format!(
                        "The baseline {:?} has no run that succeeded, so nothing is compared with it.",
                        self.baseline
                    ),
                    _ => format!(
                        "The baseline {:?} has no run that succeeded yet, so nothing is compared with it.",
                        self.baseline
                    ),
                });
            }
        }
        match self.pending {
            0 => {}
            1 => notes.push("1 job has not finished yet.".into()),
            n => notes.push(format!("{n} jobs have not finished yet.")),
        }
        let unsuccessful = match (self.failed, self.cancelled) {
            (0, 0) => None,
            (failed, 0) => Some(format!("{failed} {} failed", jobs(failed))),
            (0, cancelled) => Some(format!("{cancelled} {} cancelled", jobs(cancelled))),
            (failed, cancelled) => Some(format!(
                "{failed} {} failed and {cancelled} cancelled",
                jobs(failed)
            )),
        };
        if let Some(unsuccessful) = unsuccessful {
            notes.push(format!(
                "{unsuccessful}, and no row counts {}: `sweepctl status {}` lists them, \
                 `sweepctl logs JOB` says why, and `sweepctl retry --sweep {}` runs them again on a \
                 coordinator serving this sweep.",
                if self.failed + self.cancelled == 1 {
                    "it"
                } else {
                    "them"
                },
                self.sweep,
                self.sweep
            ));
        }
        notes
    }

    fn render_text(&self, markdown: bool) -> String {
        let mut out = String::new();
        if !self.variants.is_empty() {
            let mut table = Table::new();
            table
                .load_style(if markdown {
                    presets::ASCII_MARKDOWN
                } else {
                    presets::UTF8_FULL_CONDENSED
                })
                // Never measure the terminal: the same table everywhere, and in tests.
                .set_content_arrangement(ContentArrangement::Disabled)
                .force_no_tty();
            let (header, rows) = self.cells();
            table.set_header(header);
            for mut row in rows {
                if markdown {
                    row[0] = row[0].replace('|', "\\|");
                }
                table.add_row(row);
            }
            for column in table.column_iter_mut().skip(1 + self.swept_keys.len()) {
                column.set_cell_alignment(CellAlignment::Right);
            }
            let _ = writeln!(out, "{table}");
            // A blank line keeps Markdown from reading the notes as table rows.
            if markdown {
                out.push('\n');
            }
        }
        for note in self.notes() {
            out.push_str(&note);
            out.push('\n');
        }
        out
    }

    fn render_csv(&self) -> String {
        let mut out = String::from("variant,");
        for key in &self.swept_keys {
            out.push_str(&csv_field(key));
            out.push(',');
        }
        out.push_str(
            "is_baseline,n,test_acc_mean,test_acc_std,best_val_acc_mean,best_val_acc_std,\
             best_epoch_mean,best_epoch_std,train_seconds_mean,train_seconds_std,delta_test_acc,p_value",
        );
        let adaptive = self.target_ci_halfwidth.is_some();
        if adaptive {
            out.push_str(",ci95_halfwidth,max_seeds_hit");
        }
        // Only when it says something, so the usual header stays as it was.
        let mixed = self.variants.iter().any(VariantSummary::mixed_devices);
        if mixed {
            out.push_str(",mixed_devices");
        }
        out.push('\n');
        let opt = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
        for v in &self.variants {
            let mut cells = vec![csv_field(&v.variant)];
            for i in 0..self.swept_keys.len() {
                cells.push(csv_field(v.swept.get(i).map_or("", String::as_str)));
            }
            cells.extend([(v.variant == self.baseline).to_string(), v.n.to_string()]);
            for m in [v.test_acc, v.best_val_acc, v.best_epoch, v.train_seconds] {
                cells.push(m.mean.to_string());
                cells.push(opt(m.std));
            }
            cells.push(opt(v.delta_test_acc));
            cells.push(opt(v.p_value));
            if adaptive {
                cells.push(opt(v.ci_halfwidth));
                cells.push(v.max_seeds_hit.to_string());
            }
            if mixed {
                cells.push(v.mixed_devices().to_string());
            }
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }
}

/// `97.82 ± 0.11` after scaling by `scale`, with `—` for an undefined std
/// (public so that the sweep report formats exactly as the table does).
pub fn mean_std(m: MeanStd, scale: f64, decimals: usize) -> String {
    let std = m.std.map_or_else(
        || NOT_APPLICABLE.to_string(),
        |s| format!("{:.decimals$}", s * scale),
    );
    format!("{:.decimals$} ± {std}", m.mean * scale)
}

/// A p-value as the table prints it: three decimals, or `<0.001`.
pub fn format_p(p: f64) -> String {
    if p < 0.001 {
        "<0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

/// Quotes a CSV field when it holds a separator, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn outcome(variant: &str, seed: u64, test_acc: f64) -> RunOutcome {
        RunOutcome {
            variant: variant.to_string(),
            seed,
            test_acc,
            best_val_acc: test_acc + 0.001,
            best_epoch: 10 + seed as u32,
            train_seconds: 60.0 + seed as f64,
            device: None,
        }
    }

    fn sample_outcomes() -> Vec<RunOutcome> {
        vec![
            outcome("wide", 1, 0.985),
            outcome("baseline", 2, 0.979),
            outcome("deep", 1, 0.981),
            outcome("baseline", 1, 0.977),
            outcome("wide", 2, 0.987),
            outcome("baseline", 3, 0.978),
            outcome("wide", 3, 0.986),
            outcome("alone", 1, 0.970),
        ]
    }

    #[test]
    fn mean_and_sample_std_by_hand() {
        // mean 5, squared deviations 9+1+1+9 = 20, / (4−1) → std √(20/3).
        let m = MeanStd::of(&[2.0, 4.0, 6.0, 8.0]).unwrap();
        assert_eq!(m.mean, 5.0);
        assert!(close(m.std.unwrap(), (20.0f64 / 3.0).sqrt(), 1e-12));

        let one = MeanStd::of(&[0.97]).unwrap();
        assert_eq!(
            one,
            MeanStd {
                mean: 0.97,
                std: None
            }
        );
        assert_eq!(MeanStd::of(&[]), None);
    }

    #[test]
    fn welch_matches_reference() {
        // The example of Wikipedia's "Welch's t-test" article; reference values
        // from scipy.stats.ttest_ind(a, b, equal_var=False) and the
        // Welch–Satterthwaite formula.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch_t_test(&a, &b).unwrap();
        assert!(close(w.t, T_REF, 1e-9), "{w:?}");
        assert!(close(w.df, DF_REF, 1e-9), "{w:?}");
        assert!(close(w.p_value, P_REF, 1e-9), "{w:?}");
        // Symmetric in the order of the samples, apart from the sign of t.
        let back = welch_t_test(&b, &a).unwrap();
        assert!(close(back.t, -w.t, 1e-12) && close(back.p_value, w.p_value, 1e-12));
    }

    // scipy 1.x: ttest_ind(a, b, equal_var=False) → statistic, df, pvalue.
    const T_REF: f64 = -2.455356398286006;
    const DF_REF: f64 = 24.988529290231416;
    const P_REF: f64 = 0.021378001462866992;

    #[test]
    fn welch_degenerate_cases() {
        assert_eq!(welch_t_test(&[0.9], &[0.8, 0.85]), None, "n < 2");
        assert_eq!(
            welch_t_test(&[0.9, 0.9], &[0.8, 0.8]),
            None,
            "both variances zero, means differ"
        );
        assert_eq!(
            welch_t_test(&[0.9, 0.9], &[0.9, 0.9]),
            None,
            "both variances zero, means equal"
        );
        // One side without variance still gives a test, with df = n_other − 1
        // (scipy: t = 6.928203230275528, p = 0.020204102886728657).
        let w = welch_t_test(&[0.9, 0.9, 0.9], &[0.8, 0.82, 0.84]).unwrap();
        assert!(close(w.df, 2.0, 1e-9), "{w:?}");
        assert!(close(w.t, 6.928203230275528, 1e-6), "{w:?}");
        assert!(close(w.p_value, 0.020204102886728657, 1e-6), "{w:?}");
    }

    #[test]
    fn baseline_first_then_by_name() {
        let table = summarize("s", "baseline", &sample_outcomes(), 2);
        let names: Vec<&str> = table.variants.iter().map(|v| v.variant.as_str()).collect();
        assert_eq!(names, ["baseline", "alone", "deep", "wide"]);

        let base = &table.variants[0];
        assert_eq!(base.n, 3);
        assert!(close(base.test_acc.mean, 0.978, 1e-12));
        assert!(close(base.test_acc.std.unwrap(), 0.001, 1e-12));
        assert!(close(base.best_epoch.mean, 12.0, 1e-12));
        assert_eq!((base.delta_test_acc, base.p_value), (None, None));

        let wide = &table.variants[3];
        assert!(close(wide.delta_test_acc.unwrap(), 0.008, 1e-12));
        assert!(wide.p_value.unwrap() < 0.01);
        let deep = &table.variants[2];
        assert!(
            deep.delta_test_acc.is_some() && deep.p_value.is_none(),
            "n = 1 has no test"
        );
    }

    #[test]
    fn without_baseline_results_nothing_is_compared() {
        let outcomes: Vec<_> = sample_outcomes()
            .into_iter()
            .filter(|o| o.variant != "baseline")
            .collect();
        let table = summarize("s", "baseline", &outcomes, 3);
        assert_eq!(table.variants.len(), 3);
        assert!(
            table
                .variants
                .iter()
                .all(|v| v.delta_test_acc.is_none() && v.p_value.is_none())
        );
        let text = table.render(Format::Table);
        assert!(text.contains("has no finished runs yet"), "{text}");
        assert!(text.contains("3 jobs have not finished yet"), "{text}");
    }

    #[test]
    fn table_shows_percentages_and_placeholders() {
        let text = summarize("s", "baseline", &sample_outcomes(), 0).render(Format::Table);
        assert!(text.contains("97.80 ± 0.10"), "{text}");
        assert!(text.contains("+0.80"), "{text}");
        assert!(text.contains("98.10 ± —"), "n = 1 shows no std:\n{text}");
        assert!(!text.contains("pending"), "{text}");
        assert!(text.contains("n−1") && text.contains("Welch"), "{text}");
        // Widths come from the content only, never from a terminal.
        assert_eq!(
            text,
            summarize("s", "baseline", &sample_outcomes(), 0).render(Format::Table)
        );
    }

    #[test]
    fn markdown_is_a_pipe_table() {
        let text = summarize("s", "baseline", &sample_outcomes(), 1).render(Format::Markdown);
        let rows: Vec<&str> = text.lines().take_while(|l| l.starts_with('|')).collect();
        assert_eq!(
            rows.len(),
            2 + 4,
            "header, separator, four variants:\n{text}"
        );
        assert!(rows[1].contains("---"), "{text}");
        assert!(text.contains("1 job has not finished yet."), "{text}");
    }

    #[test]
    fn csv_has_header_and_one_row_per_variant() {
        let text = summarize("s", "baseline", &sample_outcomes(), 0).render(Format::Csv);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 4);
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header[0], "variant");
        assert!(
            lines.iter().all(|l| l.split(',').count() == header.len()),
            "{text}"
        );
        assert!(lines[1].starts_with("baseline,true,3,"), "{text}");
        // n = 1: empty std cell; the deep row has a delta but no p-value.
        let deep: Vec<&str> = lines[3].split(',').collect();
        assert_eq!(deep[0], "deep");
        assert_eq!(deep[4], "");
        assert!(!deep[header.len() - 2].is_empty());
        assert_eq!(deep[header.len() - 1], "");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn variants_whose_seeds_ran_on_different_devices_are_flagged() {
        let mut outcomes = sample_outcomes();
        for o in &mut outcomes {
            o.device = Some("cpu (AMD EPYC 7B13)".into());
        }
        outcomes[4].device = Some("cuda (NVIDIA H200)".into());
        // An outcome whose device is unknown neither flags nor counts.
        outcomes[0].device = None;
        let table = summarize("s", "baseline", &outcomes, 0);
        let wide = table.variants.iter().find(|v| v.variant == "wide").unwrap();
        assert!(wide.mixed_devices());
        assert_eq!(wide.device_types.values().sum::<usize>(), 2);
        assert!(table.variants.iter().filter(|v| v.mixed_devices()).count() == 1);
        let text = table.render(Format::Table);
        assert!(text.contains(&format!("wide {MIXED_MARK}")), "{text}");
        assert!(
            text.contains("wide: its seeds ran on different device types (1 on cpu (AMD EPYC 7B13), 1 on cuda (NVIDIA H200))"),
            "{text}"
        );
        let csv = table.render(Format::Csv);
        assert!(
            csv.lines().next().unwrap().ends_with(",mixed_devices"),
            "{csv}"
        );
        assert!(
            csv.lines()
                .any(|l| l.starts_with("wide,") && l.ends_with(",true")),
            "{csv}"
        );
        let back: ResultsTable = serde_json::from_str(&table.render(Format::Json)).unwrap();
        assert_eq!(back, table);
        // One device type everywhere: no mark, no note, the usual CSV.
        let same = summarize("s", "baseline", &sample_outcomes(), 0);
        assert!(!same.render(Format::Table).contains(MIXED_MARK));
        assert!(!same.render(Format::Csv).contains("mixed_devices"));
    }

    #[test]
    fn json_round_trips() {
        let table = summarize("s", "baseline", &sample_outcomes(), 5);
        let json = table.render(Format::Json);
        let back: ResultsTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, table);
    }

    #[test]
    fn format_names() {
        for (name, format) in [
            ("table", Format::Table),
            ("md", Format::Markdown),
            ("markdown", Format::Markdown),
            ("CSV", Format::Csv),
            ("json", Format::Json),
        ] {
            assert_eq!(name.parse::<Format>(), Ok(format));
        }
        let err = "xlsx".parse::<Format>().unwrap_err().to_string();
        assert!(
            Format::NAMES.iter().all(|n| err.contains(n)) && err.contains("xlsx"),
            "{err}"
        );
    }

    #[test]
    fn p_value_formatting() {
        assert_eq!(format_p(0.0123), "0.012");
        assert_eq!(format_p(0.0004), "<0.001");
        assert_eq!(format_p(1.0), "1.000");
    }

    #[test]
    fn empty_sweep_renders() {
        let table = summarize("s", "baseline", &[], 4);
        assert!(table.variants.is_empty());
        let text = table.render(Format::Table);
        assert!(
            text.contains("no finished runs") && text.contains("4 jobs have not finished yet"),
            "{text}"
        );
        assert_eq!(table.render(Format::Csv).lines().count(), 1);
    }

    #[test]
    fn a_baseline_cut_by_top_is_not_called_unfinished_and_failures_are_counted() {
        let mut table = summarize("s", "baseline", &sample_outcomes(), 0);
        let rows = table.variants.len();
        table.sort_by("-test_acc").expect("sort");
        table.truncate(1);
        let text = table.render(Format::Table);
        assert!(!text.contains("no finished runs"), "{text}");
        assert!(
            text.contains(&format!("{} more variants not shown", rows - 1)),
            "{text}"
        );

        // Its baseline's runs all failed: not "not finished yet".
        let others: Vec<_> = sample_outcomes()
            .into_iter()
            .filter(|o| o.variant != "baseline")
            .collect();
        let mut failed_baseline = summarize("s", "baseline", &others, 0);
        failed_baseline.set_unsuccessful(3, 0);
        let text = failed_baseline.render(Format::Table);
        assert!(
            text.contains("The baseline \"baseline\" has no run that succeeded"),
            "{text}"
        );

        let mut none = summarize("s", "baseline", &[], 0);
        none.set_unsuccessful(4, 0);
        let text = none.render(Format::Table);
        assert!(text.contains("Sweep s: no run succeeded."), "{text}");
        assert!(
            text.contains("4 jobs failed") && text.contains("sweepctl retry --sweep s"),
            "{text}"
        );
        let json: ResultsTable = serde_json::from_str(&none.render(Format::Json)).expect("json");
        assert_eq!((json.failed, json.cancelled), (4, 0));
    }

    #[test]
    fn swept_columns_sort_top_and_max_seed_marks() {
        let runs = [
            outcome("lr-0.01", 1, 0.90),
            outcome("lr-0.01", 2, 0.96),
            outcome("lr-0.001", 1, 0.970),
            outcome("lr-0.001", 2, 0.971),
            outcome("lr-0.1", 1, 0.50),
            outcome("lr-0.1", 2, 0.52),
        ];
        let mut table = summarize("g", "", &runs, 0);
        let values: BTreeMap<String, Vec<String>> = [
            ("lr-0.01", "0.01"),
            ("lr-0.001", "0.001"),
            ("lr-0.1", "0.1"),
        ]
        .into_iter()
        .map(|(name, v)| (name.to_string(), vec![v.to_string()]))
        .collect();
        table.set_swept(&["training.learning_rate".to_string()], &values);
        let jobs: BTreeMap<String, usize> = [("lr-0.01", 2), ("lr-0.001", 2), ("lr-0.1", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        table.set_seed_policy(2, 1.0, &jobs);
        let marks: Vec<(&str, bool)> = table
            .variants
            .iter()
            .map(|v| (v.variant.as_str(), v.max_seeds_hit))
            .collect();
        // 0.01: ±38 points after its 2 (max) seeds; 0.001: ±0.6; 0.1: one seed ended.
        assert_eq!(
            marks,
            [("lr-0.001", false), ("lr-0.01", true), ("lr-0.1", false)]
        );

        table.sort_by("test_acc").expect("sort");
        let order: Vec<&str> = table.variants.iter().map(|v| v.variant.as_str()).collect();
        assert_eq!(order, ["lr-0.001", "lr-0.01", "lr-0.1"]);
        table
            .sort_by("learning_rate")
            .expect("by the key's last part");
        let order: Vec<&str> = table.variants.iter().map(|v| v.swept[0].as_str()).collect();
        assert_eq!(order, ["0.001", "0.01", "0.1"]);
        table.sort_by("-training.learning_rate").expect("reversed");
        assert_eq!(table.variants[0].swept[0], "0.1");
        assert!(
            table
                .sort_by("nope")
                .unwrap_err()
                .to_string()
                .contains("training.learning_rate")
        );
        table.truncate(2);

        let text = table.render(Format::Table);
        let header = text.lines().nth(1).expect("header line");
        let cells: Vec<&str> = header
            .split(['│', '┆'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells[..4],
            ["variant", "training.learning_rate", "n", "test acc %"],
            "{text}"
        );
        assert!(text.contains(" 2* "), "{text}");
        assert!(text.contains("no baseline"), "{text}");
        assert!(text.contains("*: seeds.max reached first"), "{text}");
        let csv = table.render(Format::Csv);
        assert!(
            csv.starts_with("variant,training.learning_rate,is_baseline,n,")
                && csv
                    .lines()
                    .next()
                    .is_some_and(|h| h.ends_with(",ci95_halfwidth,max_seeds_hit")),
            "{csv}"
        );
        assert_eq!(csv.lines().count(), 3);
        let back: ResultsTable = serde_json::from_str(&table.render(Format::Json)).expect("json");
        assert_eq!(back, table);
    }

    #[test]
    fn ci95_halfwidth_by_hand() {
        // n = 3, s = 0.01: t(0.975, 2) = 4.302653 → 4.302653 × 0.01 / √3.
        let hw = ci95_halfwidth(&[0.90, 0.91, 0.92]).expect("hw");
        assert!((hw - 0.024841).abs() < 1e-6, "{hw}");
        assert_eq!(ci95_halfwidth(&[0.9]), None);
    }
}
