//! Reading a sweep back from disk: `runs/<sweep>/<variant>/seed-<seed>/`
//! with each run's `metrics.json`, `provenance.json` (the job's state and
//! each attempt's outcome, so that a failed run reads as failed rather than
//! as not started), `config.yaml` (a command job runs the user's program,
//! which has no analysis) and, where the analysis ran, `analysis/summary.json`.
//!
//! The results table is rebuilt with the very code `sweepctl results` and the
//! coordinator use ([`sweep_core::results::summarize`]) from the same numbers
//! (the coordinator writes a finished job's metrics to `metrics.json` exactly
//! as it stores them), so the report's figures equal `results.json` to the
//! last digit. A file that is missing or corrupt becomes a problem naming the
//! file; the rest of the sweep is still read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sweep_core::command::JobConfig;
use sweep_core::metrics::RunMetrics;
use sweep_core::provenance::{self, RunProvenance};
use sweep_core::results::{self, ResultsTable, RunOutcome};

use crate::analysis::{ANALYSIS_DIR, AnalysisSummary, SUMMARY_FILE};

/// One run directory of the sweep.
#[derive(Debug, Clone)]
pub struct RunData {
    pub variant: String,
    pub seed: u64,
    pub dir: PathBuf,
    /// `metrics.json`, when present and readable.
    pub metrics: Option<RunMetrics>,
    /// `analysis/summary.json`, when present and readable.
    pub analysis: Option<AnalysisSummary>,
    /// `provenance.json` (where and how each attempt ran, and the job's
    /// state), when present and readable: the table flags variants whose
    /// seeds ran on different devices, and the report lists failed runs.
    pub provenance: Option<RunProvenance>,
    /// The run's `config.yaml` is a command job's (the user's program): it
    /// never has an analysis, so none is missing.
    pub command: bool,
}

/// A run that ended without a result: failed, or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsuccessful {
    /// The job's state: `failed` or `cancelled`.
    pub state: String,
    /// Attempts it was given.
    pub attempts: usize,
    /// Why its last attempt ended (the error), when it was recorded.
    pub message: String,
}

impl std::fmt::Display for Unsuccessful {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.state)?;
        if self.attempts > 1 {
            write!(f, " after {} attempts", self.attempts)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl RunData {
    /// True when the run finished (its best checkpoint was tested).
    pub fn finished(&self) -> bool {
        self.metrics.as_ref().is_some_and(|m| m.test.is_some())
    }

    /// How the run ended when it ended without a result (its provenance says
    /// failed or cancelled); `None` for a finished run or one still to come.
    pub fn unsuccessful(&self) -> Option<Unsuccessful> {
        let provenance = self.provenance.as_ref()?;
        if self.finished() || !matches!(provenance.state.as_str(), "failed" | "cancelled") {
            return None;
        }
        Some(Unsuccessful {
            state: provenance.state.clone(),
            attempts: provenance.attempts.len(),
            // On one line: an error often ends with the program's stderr.
            message: provenance
                .attempts
                .iter()
                .rev()
                .map(|a| a.message.split_whitespace().collect::<Vec<_>>().join(" "))
                .find(|m| !m.is_empty())
                .unwrap_or_default(),
        })
    }

    /// The run's line of the results table, as the coordinator builds it.
    pub fn outcome(&self) -> Option<RunOutcome> {
        let metrics = self.metrics.as_ref()?;
        let test = metrics.test?;
        Some(RunOutcome {
            variant: self.variant.clone(),
            seed: self.seed,
            test_acc: test.test_acc,
            best_val_acc: metrics.best_val_acc.unwrap_or(f64::NAN),
            best_epoch: metrics.best_epoch,
            train_seconds: metrics.train_seconds,
            device: self
                .provenance
                .as_ref()
                .and_then(RunProvenance::device_type),
        })
    }
}

/// Everything on disk about one sweep.
#[derive(Debug, Clone)]
pub struct SweepData {
    pub name: String,
    pub baseline: String,
    pub dir: PathBuf,
    /// By variant name, then seed.
    pub runs: Vec<RunData>,
    /// The keys of a grid or random sweep, and each generated variant's
    /// values of them, from `results.json` (the coordinator writes them
    /// there); empty for a sweep of named variants.
    pub swept_keys: Vec<String>,
    pub swept: BTreeMap<String, Vec<String>>,
    /// Files that could not be read, and runs without results that did not
    /// fail (still running, or of unknown state), one line each; failed and
    /// cancelled runs are [`RunData::unsuccessful`] instead.
    pub problems: Vec<String>,
}

/// The sweep directory itself cannot be listed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SweepDirError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl SweepData {
    /// Reads `sweep_dir` (`runs/<sweep>`). `baseline` names the reference
    /// variant; `None` takes it from `results.json` when there is one, else
    /// "baseline".
    pub fn load(sweep_dir: &Path, baseline: Option<&str>) -> Result<Self, SweepDirError> {
        let name = sweep_dir.file_name().map_or_else(
            || sweep_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut problems = Vec::new();
        let written = written_results(sweep_dir, &mut problems);
        let baseline = match (baseline, &written) {
            (Some(b), _) => b.to_string(),
            (None, Some(table)) => table.baseline.clone(),
            (None, None) => "baseline".into(),
        };
        let (swept_keys, swept) = written.map_or_else(Default::default, |table| {
            let values = table
                .variants
                .into_iter()
                .filter(|v| v.swept.len() == table.swept_keys.len())
                .map(|v| (v.variant, v.swept))
                .collect();
            (table.swept_keys, values)
        });
        let mut runs = Vec::new();
        for variant_dir in sorted_dirs(sweep_dir)? {
            let Some(variant) = dir_name(&variant_dir) else {
                continue;
            };
            // A variant is a directory with seed-<n> directories; report/ and
            // _aggregate/ have none.
            let mut seeds: Vec<(u64, PathBuf)> = sorted_dirs(&variant_dir)?
                .into_iter()
                .filter_map(|d| {
                    let seed = dir_name(&d)?.strip_prefix("seed-")?.parse().ok()?;
                    Some((seed, d))
                })
                .collect();
            seeds.sort_by_key(|(seed, _)| *seed);
            for (seed, dir) in seeds {
                runs.push(load_run(&variant, seed, dir, &mut problems));
            }
        }
        Ok(SweepData {
            name,
            baseline,
            dir: sweep_dir.to_path_buf(),
            runs,
            swept_keys,
            swept,
            problems,
        })
    }

    /// The finished runs' outcomes.
    pub fn outcomes(&self) -> Vec<RunOutcome> {
        self.runs.iter().filter_map(RunData::outcome).collect()
    }

    /// The results table: the same function and inputs as `sweepctl results`,
    /// failed and cancelled runs counted apart from those still to finish.
    pub fn table(&self) -> ResultsTable {
        let ended: Vec<Unsuccessful> = self.runs.iter().filter_map(RunData::unsuccessful).collect();
        let unfinished = self.runs.iter().filter(|r| !r.finished()).count() - ended.len();
        let mut table =
            results::summarize(&self.name, &self.baseline, &self.outcomes(), unfinished);
        let failed = ended.iter().filter(|u| u.state == "failed").count();
        table.set_unsuccessful(failed, ended.len() - failed);
        if !self.swept_keys.is_empty() {
            table.set_swept(&self.swept_keys, &self.swept);
        }
        table
    }

    /// Variant names in the table's order (baseline first, then by name),
    /// variants without finished runs last.
    pub fn variants(&self) -> Vec<String> {
        let mut names: Vec<String> = self.runs.iter().map(|r| r.variant.clone()).collect();
        names.dedup();
        names.sort_by_key(|n| (n != &self.baseline, n.clone()));
        names
    }

    /// The runs of one variant, by seed.
    pub fn runs_of<'a>(&'a self, variant: &'a str) -> impl Iterator<Item = &'a RunData> + 'a {
        self.runs.iter().filter(move |r| r.variant == variant)
    }
}

/// The `results.json` the coordinator wrote, when there is one.
fn written_results(sweep_dir: &Path, problems: &mut Vec<String>) -> Option<ResultsTable> {
    let path = sweep_dir.join("results.json");
    let text = std::fs::read_to_string(&path).ok()?;
    match serde_json::from_str::<ResultsTable>(&text) {
        Ok(table) => Some(table),
        Err(e) => {
            problems.push(format!("{}: not a results table: {e}", path.display()));
            None
        }
    }
}

fn load_run(variant: &str, seed: u64, dir: PathBuf, problems: &mut Vec<String>) -> RunData {
    let provenance_path = dir.join(provenance::FILE_NAME);
    let provenance = match std::fs::read_to_string(&provenance_path) {
        Ok(text) => match serde_json::from_str::<RunProvenance>(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{}: unreadable: {e}", provenance_path.display()));
                None
            }
        },
        // Runs of an older coordinator have none: nothing to flag then.
        Err(_) => None,
    };
    // A run that failed or was cancelled is listed as such (the report's
    // own section); what it did not leave behind is not a problem.
    let ended = provenance
        .as_ref()
        .is_some_and(|p| matches!(p.state.as_str(), "failed" | "cancelled"));
    let metrics_path = dir.join("metrics.json");
    let metrics = match std::fs::read_to_string(&metrics_path) {
        Ok(text) => match serde_json::from_str::<RunMetrics>(&text) {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(format!("{}: unreadable: {e}", metrics_path.display()));
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !ended {
                problems.push(format!(
                    "{}: missing (the run has not started)",
                    metrics_path.display()
                ));
            }
            None
        }
        Err(e) => {
            problems.push(format!("{}: {e}", metrics_path.display()));
            None
        }
    };
    if !ended && metrics.as_ref().is_some_and(|m| m.test.is_none()) {
        problems.push(format!(
            "{variant} seed {seed}: no final result yet ({} epochs so far; still running, or failed)",
            metrics.as_ref().map_or(0, |m| m.epochs.len())
        ));
    }
    let command = is_command_job(&dir.join("config.yaml"));
    let summary_path = dir.join(ANALYSIS_DIR).join(SUMMARY_FILE);
    let analysis = if summary_path.exists() {
        match AnalysisSummary::load(&summary_path) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        }
    } else {
        if !command && metrics.as_ref().is_some_and(|m| m.test.is_some()) {
            problems.push(format!(
                "{}: missing (no analysis of this run)",
                summary_path.display()
            ));
        }
        None
    };
    RunData {
        variant: variant.to_string(),
        seed,
        dir,
        metrics,
        analysis,
        provenance,
        command,
    }
}

/// Whether the run's resolved config is a command job's (a top-level
/// `command:` key); false when it is missing or unreadable, so that a
/// built-in run's missing analysis is still named.
fn is_command_job(config_path: &Path) -> bool {
    std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| JobConfig::from_yaml(&text, config_path).ok())
        .is_some_and(|config| config.is_command())
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, SweepDirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SweepDirError {
        path: dir.display().to_string(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() && dir_name(p).is_some_and(|n| !n.starts_with('.')))
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn dir_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_string)
}
