//! Every conversion between the generated protobuf types and `sweep-core`'s
//! domain types, in one place, so that handlers and clients never build or
//! pick apart wire messages themselves. Those from the network are checked
//! here, once (missing fields, non-finite numbers, unsafe names, malformed
//! digests), because they come from another process that may be buggy; the
//! code behind the boundary then works on checked domain values.

use std::path::PathBuf;

use sweep_core::command::JobConfig;
use sweep_core::lease::{JobFailure, LeasedJob, StoredFile};
use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::names::{self, NameError};
use sweep_core::provenance::{AttemptProvenance, DatasetFile, RunProvenance};
use sweep_core::status::{
    JobCounts, JobEvent, JobStatus, StatusSnapshot, SweepStatus, WorkerStatus,
};
use sweep_core::sweep::{SeedPolicy, SweepError, SweepSpec, Variant};

use crate::pb;

/// A message from the network that cannot become a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0}: {1}")]
    Invalid(&'static str, String),
    /// A name that would become a path component and is not safe as one.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// `value` if `valid` says it may pass, else why not.
fn checked<T>(
    field: &'static str,
    value: T,
    valid: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ConvertError> {
    valid(&value).map_err(|why| ConvertError::Invalid(field, why))?;
    Ok(value)
}

/// Metrics must be finite: metrics.json (JSON has no NaN) and the statistics
/// of the results table could not take them.
fn finite(field: &'static str, value: f64) -> Result<f64, ConvertError> {
    checked(field, value, |v| {
        if v.is_finite() {
            Ok(())
        } else {
            Err(format!("{v} is not a finite number"))
        }
    })
}

/// A SHA-256 digest as every message carries it: 64 lower-case hex digits.
pub fn sha256_hex(field: &'static str, value: String) -> Result<String, ConvertError> {
    checked(field, value, |v| {
        let hex_digest = v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex_digest {
            Ok(())
        } else {
            Err("expected 64 lower-case hex digits".into())
        }
    })
}

fn finite_opt(field: &'static str, value: Option<f64>) -> Result<Option<f64>, ConvertError> {
    value.map(|v| finite(field, v)).transpose()
}

impl From<EpochMetrics> for pb::EpochMetrics {
    fn from(m: EpochMetrics) -> Self {
        pb::EpochMetrics {
            epoch: m.epoch,
            train_loss: m.train_loss,
            train_acc: m.train_acc,
            val_loss: m.val_loss,
            val_acc: m.val_acc,
            lr: m.lr,
            seconds: m.seconds,
        }
    }
}

impl TryFrom<pb::EpochMetrics> for EpochMetrics {
    type Error = ConvertError;

    fn try_from(m: pb::EpochMetrics) -> Result<Self, Self::Error> {
        if m.epoch == 0 {
            return Err(ConvertError::Invalid("epoch", "epochs count from 1".into()));
        }
        Ok(EpochMetrics {
            epoch: m.epoch,
            train_loss: finite("train_loss", m.train_loss)?,
            train_acc: finite("train_acc", m.train_acc)?,
            val_loss: finite("val_loss", m.val_loss)?,
            val_acc: finite("val_acc", m.val_acc)?,
            lr: finite("lr", m.lr)?,
            seconds: finite("seconds", m.seconds)?,
        })
    }
}

impl From<TestMetrics> for pb::TestMetrics {
    fn from(m: TestMetrics) -> Self {
        pb::TestMetrics {
            test_loss: m.test_loss,
            test_acc: m.test_acc,
        }
    }
}

impl TryFrom<pb::TestMetrics> for TestMetrics {
    type Error = ConvertError;

    fn try_from(m: pb::TestMetrics) -> Result<Self, Self::Error> {
        Ok(TestMetrics {
            test_loss: finite("test_loss", m.test_loss)?,
            test_acc: finite("test_acc", m.test_acc)?,
        })
    }
}

impl From<RunMetrics> for pb::RunMetrics {
    fn from(m: RunMetrics) -> Self {
        pb::RunMetrics {
            epochs: m.epochs.into_iter().map(Into::into).collect(),
            best_epoch: m.best_epoch,
            best_val_loss: m.best_val_loss,
            best_val_acc: m.best_val_acc,
            stopped_early: m.stopped_early,
            train_seconds: m.train_seconds,
            test: m.test.map(Into::into),
        }
    }
}

impl TryFrom<pb::RunMetrics> for RunMetrics {
    type Error = ConvertError;

    fn try_from(m: pb::RunMetrics) -> Result<Self, Self::Error> {
        let epochs = m
            .epochs
            .into_iter()
            .map(EpochMetrics::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if m.best_epoch as usize > epochs.len() && !epochs.is_empty() {
            return Err(ConvertError::Invalid(
                "best_epoch",
                format!("{} is past the last epoch", m.best_epoch),
            ));
        }
        Ok(RunMetrics {
            epochs,
            best_epoch: m.best_epoch,
            best_val_loss: finite_opt("best_val_loss", m.best_val_loss)?,
            best_val_acc: finite_opt("best_val_acc", m.best_val_acc)?,
            stopped_early: m.stopped_early,
            train_seconds: finite("train_seconds", m.train_seconds)?,
            test: m.test.map(TestMetrics::try_from).transpose()?,
        })
    }
}

/// Longest text field of a provenance record: a CPU model or a version is
/// far shorter; a worker must not make the store hold more.
pub const MAX_PROVENANCE_TEXT: usize = 512;

/// Most dataset files one attempt may list (MNIST has four).
pub const MAX_DATASET_FILES: usize = 64;

fn text(field: &'static str, value: String) -> Result<String, ConvertError> {
    checked(field, value, |v| {
        if v.len() > MAX_PROVENANCE_TEXT {
            Err(format!(
                "{} bytes, more than {MAX_PROVENANCE_TEXT}",
                v.len()
            ))
        } else {
            Ok(())
        }
    })
}

impl From<DatasetFile> for pb::DatasetFile {
    fn from(f: DatasetFile) -> Self {
        pb::DatasetFile {
            name: f.name,
            sha256: f.sha256,
        }
    }
}

impl TryFrom<pb::DatasetFile> for DatasetFile {
    type Error = ConvertError;

    fn try_from(f: pb::DatasetFile) -> Result<Self, Self::Error> {
        Ok(DatasetFile {
            sha256: sha256_hex("dataset.sha256", f.sha256)?,
            name: text("dataset.name", f.name)?,
        })
    }
}

impl From<AttemptProvenance> for pb::AttemptProvenance {
    fn from(a: AttemptProvenance) -> Self {
        pb::AttemptProvenance {
            attempt: a.attempt,
            worker_id: a.worker_id,
            worker_name: a.worker_name,
            host: a.host,
            device: a.device,
            device_name: a.device_name,
            threads: a.threads,
            libtorch_version: a.libtorch_version,
            sweeprun_version: a.sweeprun_version,
            git_commit: a.git_commit,
            dataset: a.dataset.into_iter().map(Into::into).collect(),
            leased_ms: a.leased_ms,
            started_ms: a.started_ms,
            ended_ms: a.ended_ms,
            outcome: a.outcome,
            message: a.message,
        }
    }
}

impl TryFrom<pb::AttemptProvenance> for AttemptProvenance {
    type Error = ConvertError;

    fn try_from(a: pb::AttemptProvenance) -> Result<Self, Self::Error> {
        if a.dataset.len() > MAX_DATASET_FILES {
            return Err(ConvertError::Invalid(
                "dataset",
                format!("{} files, more than {MAX_DATASET_FILES}", a.dataset.len()),
            ));
        }
        Ok(AttemptProvenance {
            attempt: a.attempt,
            worker_id: text("worker_id", a.worker_id)?,
            worker_name: text("worker_name", a.worker_name)?,
            host: text("host", a.host)?,
            device: text("device", a.device)?,
            device_name: text("device_name", a.device_name)?,
            threads: a.threads,
            libtorch_version: text("libtorch_version", a.libtorch_version)?,
            sweeprun_version: text("sweeprun_version", a.sweeprun_version)?,
            git_commit: text("git_commit", a.git_commit)?,
            dataset: a
                .dataset
                .into_iter()
                .map(DatasetFile::try_from)
                .collect::<Result<_, _>>()?,
            leased_ms: a.leased_ms,
            started_ms: a.started_ms,
            ended_ms: a.ended_ms,
            outcome: text("outcome", a.outcome)?,
            // Failure messages come from the coordinator's own store, which
            // bounds them already; a long one is cut, not refused.
            message: a.message,
        })
    }
}

impl From<RunProvenance> for pb::RunProvenance {
    fn from(r: RunProvenance) -> Self {
        pb::RunProvenance {
            job_id: r.job_id,
            sweep: r.sweep,
            variant: r.variant,
            seed: r.seed,
            state: r.state,
            config_sha256: r.config_sha256,
            attempts: r.attempts.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::RunProvenance> for RunProvenance {
    type Error = ConvertError;

    fn try_from(r: pb::RunProvenance) -> Result<Self, Self::Error> {
        Ok(RunProvenance {
            job_id: r.job_id,
            sweep: r.sweep,
            variant: r.variant,
            seed: r.seed,
            state: r.state,
            config_sha256: r.config_sha256,
            attempts: r
                .attempts
                .into_iter()
                .map(AttemptProvenance::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<StoredFile> for pb::FileHeader {
    fn from(f: StoredFile) -> Self {
        pb::FileHeader {
            name: f.name,
            size: f.size,
            sha256: f.sha256,
        }
    }
}

/// The name is left to the receiver: which names a file may have depends on
/// where it goes (a checkpoint, `analysis/…`, a dataset file).
impl TryFrom<pb::FileHeader> for StoredFile {
    type Error = ConvertError;

    fn try_from(f: pb::FileHeader) -> Result<Self, Self::Error> {
        Ok(StoredFile {
            sha256: sha256_hex("file.sha256", f.sha256)?,
            name: f.name,
            size: f.size,
        })
    }
}

impl From<LeasedJob> for pb::Job {
    fn from(job: LeasedJob) -> Self {
        pb::Job {
            job_id: job.id,
            attempt: job.attempt,
            sweep: job.sweep,
            variant: job.variant,
            seed: job.seed,
            config_yaml: job.config_yaml,
            lease_deadline_ms: job.lease_deadline_ms,
            checkpoints: job.checkpoints.into_iter().map(Into::into).collect(),
        }
    }
}

/// The sweep and variant names become the worker's local directories.
impl TryFrom<pb::Job> for LeasedJob {
    type Error = ConvertError;

    fn try_from(job: pb::Job) -> Result<Self, Self::Error> {
        if job.job_id.is_empty() {
            return Err(ConvertError::Missing("job_id"));
        }
        names::validate("sweep name", &job.sweep)?;
        names::validate("variant name", &job.variant)?;
        Ok(LeasedJob {
            id: job.job_id,
            attempt: job.attempt,
            sweep: job.sweep,
            variant: job.variant,
            seed: job.seed,
            config_yaml: job.config_yaml,
            lease_deadline_ms: job.lease_deadline_ms,
            checkpoints: job
                .checkpoints
                .into_iter()
                .map(StoredFile::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A loaded sweep as `sweepctl submit` sends it: each variant's resolved
/// config as YAML, re-validated by the coordinator.
impl From<&SweepSpec> for pb::SubmitSweepRequest {
    fn from(spec: &SweepSpec) -> Self {
        pb::SubmitSweepRequest {
            name: spec.name.clone(),
            description: spec.description.clone().unwrap_or_default(),
            seeds: spec.seeds.clone(),
            metric: spec.metric.clone(),
            baseline: spec.baseline.clone(),
            variants: spec
                .variants
                .iter()
                .map(|v| pb::VariantSpec {
                    name: v.name.clone(),
                    config_yaml: v.config.to_yaml(),
                    swept: v.swept.clone(),
                })
                .collect(),
            seed_policy: spec.seed_policy.map(|p| pb::SeedPolicy {
                max: p.max as u32,
                target_ci_halfwidth: p.target_ci_halfwidth,
            }),
            swept_keys: spec.swept_keys.clone(),
        }
    }
}

/// Each variant's config is parsed and validated like a loaded one's, and
/// the spec as a whole goes through [`SweepSpec::validate`], the rules a
/// loaded spec keeps too.
impl TryFrom<pb::SubmitSweepRequest> for SweepSpec {
    type Error = SweepError;

    fn try_from(req: pb::SubmitSweepRequest) -> Result<Self, Self::Error> {
        let mut variants = Vec::with_capacity(req.variants.len());
        for variant in req.variants {
            // Before it names the source of the config's errors.
            names::validate("variant name", &variant.name)
                .map_err(sweep_core::sweep::SpecError::from)?;
            let source = PathBuf::from(format!("<submitted variant {}>", variant.name));
            let mut config = JobConfig::from_yaml(&variant.config_yaml, &source)?;
            config.set_name(&variant.name);
            variants.push(Variant {
                name: variant.name,
                config,
                swept: variant.swept,
            });
        }
        let mut spec = SweepSpec {
            name: req.name,
            description: (!req.description.is_empty()).then_some(req.description),
            seeds: req.seeds,
            metric: req.metric,
            baseline: req.baseline,
            variants,
            seed_policy: req.seed_policy.map(|p| SeedPolicy {
                max: p.max as usize,
                target_ci_halfwidth: p.target_ci_halfwidth,
            }),
            swept_keys: req.swept_keys,
        };
        spec.validate()?;
        spec.sort_variants();
        Ok(spec)
    }
}

impl From<SweepStatus> for pb::SweepStatus {
    fn from(s: SweepStatus) -> Self {
        let jobs = s.jobs;
        pb::SweepStatus {
            name: s.name,
            total: jobs.total,
            pending: jobs.pending,
            running: jobs.running,
            succeeded: jobs.succeeded,
            failed: jobs.failed,
            cancelled: jobs.cancelled,
            done: s.done,
            waiting_for_command_worker: s.waiting_for_command_worker,
        }
    }
}

impl From<&pb::SweepStatus> for JobCounts {
    fn from(s: &pb::SweepStatus) -> Self {
        JobCounts {
            total: s.total,
            pending: s.pending,
            running: s.running,
            succeeded: s.succeeded,
            failed: s.failed,
            cancelled: s.cancelled,
        }
    }
}

impl From<JobStatus> for pb::JobStatus {
    fn from(j: JobStatus) -> Self {
        pb::JobStatus {
            job_id: j.job_id,
            sweep: j.sweep,
            variant: j.variant,
            seed: j.seed,
            state: j.state,
            attempt: j.attempt,
            worker: j.worker.unwrap_or_default(),
            epoch: j.epoch,
            epochs: j.epochs,
            latest: j.latest.map(Into::into),
            test: j.test.map(Into::into),
            error: j.error.unwrap_or_default(),
        }
    }
}

impl From<StatusSnapshot> for pb::StatusSnapshot {
    fn from(s: StatusSnapshot) -> Self {
        pb::StatusSnapshot {
            sweeps: s.sweeps.into_iter().map(Into::into).collect(),
            jobs: s.jobs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<WorkerStatus> for pb::WorkerInfo {
    fn from(w: WorkerStatus) -> Self {
        pb::WorkerInfo {
            worker_id: w.id,
            name: w.name,
            host: w.host,
            device: w.device,
            threads: w.threads,
            slots: w.slots,
            last_seen_ms: w.last_seen_ms,
            jobs: w.jobs,
            alive: w.alive,
            allow_commands: w.allow_commands,
        }
    }
}

/// Only shown (`sweepctl workers`), so nothing to refuse; the wire does not
/// carry `jobs_done` (0 here).
impl From<pb::WorkerInfo> for WorkerStatus {
    fn from(w: pb::WorkerInfo) -> Self {
        WorkerStatus {
            id: w.worker_id,
            name: w.name,
            host: w.host,
            device: w.device,
            threads: w.threads,
            slots: w.slots,
            last_seen_ms: w.last_seen_ms,
            alive: w.alive,
            allow_commands: w.allow_commands,
            jobs_done: 0,
            jobs: w.jobs,
        }
    }
}

impl From<JobEvent> for pb::JobEvent {
    fn from(e: JobEvent) -> Self {
        pb::JobEvent {
            time_ms: e.time_ms,
            kind: e.kind,
            attempt: e.attempt,
            message: e.message,
        }
    }
}

/// Only shown (`sweepctl logs`), so nothing to refuse.
impl From<pb::JobEvent> for JobEvent {
    fn from(e: pb::JobEvent) -> Self {
        JobEvent {
            time_ms: e.time_ms,
            kind: e.kind,
            attempt: e.attempt,
            message: e.message,
        }
    }
}

impl From<JobFailure> for pb::Failure {
    fn from(f: JobFailure) -> Self {
        pb::Failure {
            message: f.message,
            permanent: f.permanent,
        }
    }
}

/// The message's length is left to the receiver: the coordinator cuts it to
/// its own limit.
impl From<pb::Failure> for JobFailure {
    fn from(f: pb::Failure) -> Self {
        JobFailure {
            message: f.message,
            permanent: f.permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_metrics_are_refused() {
        let m = pb::RunMetrics {
            test: Some(pb::TestMetrics {
                test_loss: f64::NAN,
                test_acc: 0.0,
            }),
            ..Default::default()
        };
        let err = RunMetrics::try_from(m).unwrap_err();
        assert_eq!(
            err,
            ConvertError::Invalid("test_loss", "NaN is not a finite number".into())
        );
    }

    #[test]
    fn run_metrics_round_trip() {
        let mut metrics = RunMetrics::default();
        let epoch = EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_acc: 0.8,
            val_loss: 0.4,
            val_acc: 0.85,
            lr: 1e-3,
            seconds: 2.0,
        };
        metrics.record_epoch(epoch, true);
        metrics.test = Some(TestMetrics {
            test_loss: 0.3,
            test_acc: 0.9,
        });
        let back = RunMetrics::try_from(pb::RunMetrics::from(metrics.clone())).expect("valid");
        assert_eq!(back, metrics);
    }

    #[test]
    fn provenance_round_trips_and_bad_fields_are_refused() {
        let attempt = AttemptProvenance {
            attempt: 2,
            worker_id: "w2-box".into(),
            device: "cuda:0".into(),
            device_name: "NVIDIA H200".into(),
            threads: 4,
            dataset: vec![DatasetFile {
                name: "train-images-idx3-ubyte".into(),
                sha256: "ab".repeat(32),
            }],
            outcome: "succeeded".into(),
            ..Default::default()
        };
        let run = RunProvenance {
            job_id: "j".into(),
            attempts: vec![attempt.clone()],
            ..Default::default()
        };
        let back = RunProvenance::try_from(pb::RunProvenance::from(run.clone())).unwrap();
        assert_eq!(back, run);
        let mut bad = pb::AttemptProvenance::from(attempt.clone());
        bad.dataset[0].sha256 = "XYZ".into();
        assert!(AttemptProvenance::try_from(bad).is_err());
        let mut long = pb::AttemptProvenance::from(attempt);
        long.device_name = "x".repeat(MAX_PROVENANCE_TEXT + 1);
        assert!(matches!(
            AttemptProvenance::try_from(long),
            Err(ConvertError::Invalid("device_name", _))
        ));
    }

    #[test]
    fn leased_job_round_trips_and_unsafe_names_are_refused() {
        let job = LeasedJob {
            id: "v-seed-1-00000000".into(),
            attempt: 2,
            sweep: "s".into(),
            variant: "v".into(),
            seed: 1,
            config_yaml: "name: v\n".into(),
            lease_deadline_ms: 5,
            checkpoints: vec![StoredFile {
                name: "last.state.json".into(),
                size: 3,
                sha256: "ab".repeat(32),
            }],
        };
        assert_eq!(
            LeasedJob::try_from(pb::Job::from(job.clone())),
            Ok(job.clone())
        );
        let mut escaping = pb::Job::from(job.clone());
        escaping.variant = "../../etc".into();
        assert!(matches!(
            LeasedJob::try_from(escaping),
            Err(ConvertError::Name(_))
        ));
        let mut bad_digest = pb::Job::from(job);
        bad_digest.checkpoints[0].sha256 = "AB".repeat(32);
        assert!(LeasedJob::try_from(bad_digest).is_err());
    }

    #[test]
    fn submitted_sweeps_keep_the_spec_rules() {
        let config = "name: v\nseed: 1\nmodel: {type: fc, input_size: 784, hidden_sizes: [8], num_classes: 10}\n";
        let request = pb::SubmitSweepRequest {
            name: "s".into(),
            seeds: vec![1, 2],
            metric: "test_acc".into(),
            baseline: "base".into(),
            variants: ["wide", "base"]
                .map(|name| pb::VariantSpec {
                    name: name.into(),
                    config_yaml: config.into(),
                    swept: Vec::new(),
                })
                .into(),
            ..Default::default()
        };
        let spec = SweepSpec::try_from(request.clone()).expect("valid");
        let names: Vec<_> = spec.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["base", "wide"], "the baseline first");
        assert_eq!(
            SweepSpec::try_from(pb::SubmitSweepRequest::from(&spec)).expect("again"),
            spec
        );
        let mut twice = request.clone();
        twice.seeds = vec![1, 1];
        assert!(matches!(
            SweepSpec::try_from(twice),
            Err(SweepError::Invalid(_))
        ));
        let mut no_baseline = request;
        no_baseline.baseline = "narrow".into();
        assert!(matches!(
            SweepSpec::try_from(no_baseline),
            Err(SweepError::Invalid(_))
        ));
    }

    #[test]
    fn workers_round_trip_but_for_jobs_done() {
        let worker = WorkerStatus {
            id: "w1-box".into(),
            name: "box".into(),
            host: "box.lan".into(),
            device: "cuda:0".into(),
            threads: 4,
            slots: 2,
            last_seen_ms: 1_700_000_000_000,
            alive: true,
            allow_commands: true,
            jobs_done: 0,
            jobs: vec!["v-seed-1-00000000".into(), "v-seed-2-00000000".into()],
        };
        assert_eq!(
            WorkerStatus::from(pb::WorkerInfo::from(worker.clone())),
            worker
        );
        let counted = WorkerStatus {
            jobs_done: 7,
            ..worker.clone()
        };
        assert_eq!(WorkerStatus::from(pb::WorkerInfo::from(counted)), worker);
    }

    #[test]
    fn job_events_and_failures_round_trip() {
        let event = JobEvent {
            time_ms: 1_700_000_000_000,
            kind: "failed".into(),
            attempt: 3,
            message: "out of memory".into(),
        };
        assert_eq!(JobEvent::from(pb::JobEvent::from(event.clone())), event);
        let failure = JobFailure {
            message: "config: no such dataset".into(),
            permanent: true,
        };
        let wire = pb::Failure::from(failure.clone());
        assert!(wire.permanent);
        assert_eq!(JobFailure::from(wire), failure);
    }

    #[test]
    fn epoch_zero_is_refused() {
        assert!(EpochMetrics::try_from(pb::EpochMetrics::default()).is_err());
    }
}
