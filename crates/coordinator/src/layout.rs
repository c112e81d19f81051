//! The files the coordinator writes: every job's run directory in the layout
//! of the README ("Runs on disk") (`config.yaml`, `metrics.json`, TensorBoard events,
//! `checkpoints/`), each sweep's `results.{md,csv,json}`, and its report
//! (`report/index.html`, `report/report.md`) and `_aggregate/` TensorBoard files.
//!
//! Checkpoint uploads are staged: the weights of an epoch wait in
//! `checkpoints/.staging/` until that epoch's state file (the commit record)
//! arrives, and only then move into `checkpoints/`. So the directory a resumed
//! job downloads never mixes the weights of one epoch with the state of
//! another, whatever moment a worker or the coordinator died at.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use sweep_core::lease::StoredFile;
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_core::results::{Format, ResultsTable};

use crate::error::{CoordinatorError, Result};

/// The checkpoint file written last by the trainer: its arrival commits the
/// epoch's other files.
pub use sweep_core::run_dir::LAST_STATE as COMMIT_FILE;
const STAGING: &str = ".staging";

pub fn run_dir(state_dir: &Path, sweep: &str, variant: &str, seed: u64) -> PathBuf {
    sweep_core::sweep::job_dir(state_dir, sweep, variant, seed)
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes so that a reader (or a crash) sees the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sweep_core::run_dir::write_atomic(path, bytes).map_err(CoordinatorError::io(path))
}

/// A run file copied from the store (config.yaml, metrics.json,
/// provenance.json): replaced whole, as durable as the store itself
/// (`sweep_core::run_dir::replace_file`).
fn write_copy(path: &Path, bytes: &[u8]) -> Result<()> {
    sweep_core::run_dir::replace_file(path, bytes).map_err(CoordinatorError::io(path))
}

/// Appends a command job's output to `output.log` in its run directory, each
/// line prefixed with the attempt and stream (`[2 stderr] ...`).
pub fn append_output(run_dir: &Path, attempt: u32, stream: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(CoordinatorError::io(run_dir))?;
    let path = run_dir.join("output.log");
    let mut prefixed = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        prefixed.push_str(&format!("[{attempt} {stream}] {line}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(CoordinatorError::io(&path))?;
    file.write_all(prefixed.as_bytes())
        .map_err(CoordinatorError::io(&path))
}

pub fn write_config(run_dir: &Path, yaml: &str) -> Result<()> {
    write_copy(&run_dir.join("config.yaml"), yaml.as_bytes())
}

/// `provenance.json`: where and how each attempt of the run ran.
pub fn write_provenance(
    run_dir: &Path,
    provenance: &sweep_core::provenance::RunProvenance,
) -> Result<()> {
    let json = serde_json::to_vec_pretty(provenance)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    write_copy(&run_dir.join(sweep_core::provenance::FILE_NAME), &json)
}

/// A run's metrics: its epochs so far, or its final metrics once it ended.
pub const METRICS_FILE: &str = "metrics.json";

pub fn write_metrics(run_dir: &Path, metrics: &RunMetrics) -> Result<()> {
    let json = serde_json::to_vec_pretty(metrics)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    write_copy(&run_dir.join(METRICS_FILE), &json)
}

/// metrics.json of a run in progress, from the epochs streamed so far (the
/// final metrics replace it when the job completes).
pub fn metrics_from_epochs(epochs: &[EpochMetrics]) -> RunMetrics {
    let mut metrics = RunMetrics::default();
    for epoch in epochs {
        let improved = metrics
            .best_val_loss
            .is_none_or(|best| epoch.val_loss < best);
        metrics.record_epoch(*epoch, improved);
    }
    metrics
}

/// How often a running job's metrics.json is rewritten from its epochs.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// When each running job's metrics.json was last rewritten: at most once per
/// [`PROGRESS_INTERVAL`], because every rewrite creates a file and replaces
/// another, and that churn was the largest cost of a fleet's epoch reports
/// (BENCHMARKS.md, "A fleet of simulated workers"); an epoch of real
/// training takes longer anyway. The first rewrite waits an interval after
/// the lease, so a job shorter than that writes the file once, at its end.
/// The store has every epoch at once; the final metrics replace the file at
/// completion, and a sweep's end rewrites it for the runs that did not
/// complete.
#[derive(Default)]
pub struct ProgressFiles {
    written: Mutex<HashMap<String, std::time::Instant>>,
}

impl ProgressFiles {
    /// True when the job's metrics.json is due for a rewrite.
    pub fn due(&self, job_id: &str) -> bool {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written
            .get(job_id)
            .is_none_or(|last| last.elapsed() >= PROGRESS_INTERVAL)
    }

    /// The job's next rewrite is an interval from now: it was just leased,
    /// or its metrics.json rewritten.
    pub fn restart(&self, job_id: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job_id.to_string(), std::time::Instant::now());
    }

    /// The job has ended: its metrics.json is final.
    pub fn forget(&self, job_id: &str) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id);
    }
}

/// Drops what a lost attempt staged but never committed.
pub fn clear_staging(run_dir: &Path) -> Result<()> {
    let dir = checkpoints_dir(run_dir).join(STAGING);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CoordinatorError::io(dir)(e)),
        _ => Ok(()),
    }
}

/// Prefix of the artifact names that belong in the run's `analysis/`
/// directory (the worker's analysis of the best checkpoint) rather than in
/// `checkpoints/`.
pub const ANALYSIS_PREFIX: &str = "analysis/";

/// Checks an uploaded artifact's name: a plain file name (a checkpoint file),
/// or `analysis/` and a plain file name. Nothing else may become a path.
pub fn validate_artifact_name(name: &str) -> std::result::Result<(), sweep_core::names::NameError> {
    match name.strip_prefix(ANALYSIS_PREFIX) {
        Some(file) => sweep_core::names::validate("analysis file name", file),
        None => sweep_core::names::validate("artifact name", name),
    }
}

/// Temporary file an upload streams into.
pub fn upload_part_path(run_dir: &Path, name: &str, attempt: u32) -> PathBuf {
    if let Some(file) = name.strip_prefix(ANALYSIS_PREFIX) {
        return run_dir
            .join("analysis")
            .join(STAGING)
            .join(format!("{file}.{attempt}.part"));
    }
    checkpoints_dir(run_dir)
        .join(STAGING)
        .join(format!("{name}.{attempt}.part"))
}

/// An upload being received: its bytes stream into a `.part` file (see
/// [`upload_part_path`]) and are hashed as they arrive; [`UploadPart::finish`]
/// checks them against the header, and [`place_upload`] then moves the file
/// into the layout. A part that is not finished is removed.
pub struct UploadPart {
    path: PathBuf,
    out: tokio::fs::File,
    hasher: Sha256,
    size: u64,
    declared: StoredFile,
}

impl UploadPart {
    /// Creates the part file of `declared` (an upload of `attempt`).
    pub async fn create(run_dir: &Path, declared: &StoredFile, attempt: u32) -> Result<UploadPart> {
        let path = upload_part_path(run_dir, &declared.name, attempt);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(CoordinatorError::io(parent))?;
        }
        let out = tokio::fs::File::create(&path)
            .await
            .map_err(CoordinatorError::io(&path))?;
        Ok(UploadPart {
            path,
            out,
            hasher: Sha256::new(),
            size: 0,
            declared: declared.clone(),
        })
    }

    /// Appends a chunk; more bytes than declared are refused.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.size += data.len() as u64;
        if self.size > self.declared.size {
            return Err(CoordinatorError::InvalidArgument(format!(
                "upload exceeds its declared size {}",
                self.declared.size
            )));
        }
        self.hasher.update(data);
        self.out
            .write_all(data)
            .await
            .map_err(CoordinatorError::io(&self.path))
    }

    /// Syncs the part and checks its size and digest against the header;
    /// returns its path, for [`place_upload`]. On an error the part is gone.
    pub async fn finish(self) -> Result<PathBuf> {
        let checked = async {
            self.out
                .sync_all()
                .await
                .map_err(CoordinatorError::io(&self.path))?;
            let sha = hex::encode(self.hasher.finalize());
            let declared = &self.declared;
            if self.size != declared.size || sha != declared.sha256 {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "upload of {} is corrupt: {} bytes with SHA-256 {sha}, declared {} bytes with {}",
                    declared.name, self.size, declared.size, declared.sha256
                )));
            }
            Ok(())
        }
        .await;
        match checked {
            Ok(()) => Ok(self.path),
            Err(err) => {
                let _ = tokio::fs::remove_file(&self.path).await;
                Err(err)
            }
        }
    }

    /// Removes the part (an upload that failed while streaming).
    pub async fn discard(self) {
        drop(self.out);
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}

/// Places a verified upload: an analysis file at once (it belongs to no
/// epoch); a checkpoint file staged, or (for the commit file) committed with
/// everything staged before it.
pub fn place_upload(run_dir: &Path, part: &Path, name: &str) -> Result<()> {
    if let Some(file) = name.strip_prefix(ANALYSIS_PREFIX) {
        let target = run_dir.join("analysis").join(file);
        return std::fs::rename(part, &target).map_err(CoordinatorError::io(target));
    }
    let checkpoints = checkpoints_dir(run_dir);
    let staging = checkpoints.join(STAGING);
    if name != COMMIT_FILE {
        let target = staging.join(name);
        return std::fs::rename(part, &target).map_err(CoordinatorError::io(target));
    }
    let entries = std::fs::read_dir(&staging).map_err(CoordinatorError::io(&staging))?;
    for entry in entries {
        let path = entry.map_err(CoordinatorError::io(&staging))?.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file.ends_with(".part") {
            continue;
        }
        let target = checkpoints.join(file);
        std::fs::rename(&path, &target).map_err(CoordinatorError::io(target))?;
    }
    let target = checkpoints.join(name);
    std::fs::rename(part, &target).map_err(CoordinatorError::io(target))
}

/// SHA-256 (hex) of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The committed checkpoint files of a run, for a resuming worker. Empty
/// unless the commit file is there (nothing to resume from without it).
pub fn committed_checkpoints(run_dir: &Path) -> Result<Vec<StoredFile>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.join(COMMIT_FILE).is_file() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for (name, path) in plain_files(&dir)? {
        if name.ends_with(".tmp") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(CoordinatorError::io(&path))?;
        files.push(StoredFile {
            name,
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
    }
    // The commit file last, like the trainer writes it.
    files.sort_by(|a, b| (a.name == COMMIT_FILE, &a.name).cmp(&(b.name == COMMIT_FILE, &b.name)));
    Ok(files)
}

/// The plain files of `dir` whose names pass [`sweep_core::names::validate`],
/// sorted by name: only such files are ever served, since the receiving worker
/// turns the names into paths.
pub fn plain_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(CoordinatorError::io(dir))? {
        let path = entry.map_err(CoordinatorError::io(dir))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if path.is_file() && sweep_core::names::validate("file", &name).is_ok() {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// `state_dir/<sweep>/results.{md,csv,json}`.
pub fn write_results(state_dir: &Path, table: &ResultsTable) -> Result<()> {
    let dir = state_dir.join(&table.sweep);
    for format in [Format::Markdown, Format::Csv, Format::Json] {
        write_atomic(
            &dir.join(format!("results.{}", format.extension())),
            table.render(format).as_bytes(),
        )?;
    }
    Ok(())
}

/// `state_dir/<sweep>/report/{index.html,report.md}` and the seed-averaged
/// TensorBoard files `state_dir/<sweep>/_aggregate/<variant>/`. Problems are
/// logged rather than returned: the results are already written, and a run
/// with a corrupt file is named in the report itself.
pub fn write_report(state_dir: &Path, table: &ResultsTable) {
    let sweep_dir = state_dir.join(&table.sweep);
    let data = match sweep_report::SweepData::load(&sweep_dir, Some(&table.baseline)) {
        Ok(data) => data,
        Err(e) => {
            tracing::warn!(sweep = %table.sweep, error = %e, "no report: the sweep directory is unreadable");
            return;
        }
    };
    // The report rebuilds the table from metrics.json with the same code; it
    // must come out equal to the one just written to results.json.
    if data.table().variants != table.variants {
        tracing::warn!(sweep = %table.sweep, "the report's table differs from results.json (a run directory changed on disk?)");
    }
    match sweep_report::report::write_data(&data, &sweep_dir.join("report")) {
        Ok(written) => tracing::info!(
            sweep = %table.sweep,
            report = %written.html.display(),
            problems = written.problems.len(),
            "report written"
        ),
        Err(e) => tracing::warn!(sweep = %table.sweep, error = %e, "writing the report failed"),
    }
    if let Err(e) = sweep_report::aggregate::write_aggregate(&data) {
        tracing::warn!(sweep = %table.sweep, error = %e, "writing the TensorBoard seed averages failed");
    }
}

/// The figures of a run (`analysis/*.png`), relative to the run directory,
/// sorted: what the dashboard's job page shows. None yet: an empty list.
pub fn figures(run_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run_dir.join("analysis")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".png") && !name.starts_with('.'))
        .map(|name| format!("analysis/{name}"))
        .collect();
    names.sort();
    names
}
