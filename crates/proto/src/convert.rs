//! Conversions between the generated protobuf types and `sweep-core`'s domain
//! types. Those from the network are checked (missing fields, non-finite
//! numbers) because they come from another process that may be buggy.

use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::provenance::{AttemptProvenance, DatasetFile, RunProvenance};

use crate::pb;

/// A message from the network that cannot become a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("field {0}: {1}")]
    Invalid(&'static str, String),
}

/// Metrics must be finite: metrics.json (JSON has no NaN) and the statistics
/// of the results table could not take them.
fn finite(field: &'static str, value: f64) -> Result<f64, ConvertError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ConvertError::Invalid(
            field,
            format!("{value} is not a finite number"),
        ))
    }
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
    if value.len() > MAX_PROVENANCE_TEXT {
        return Err(ConvertError::Invalid(
            field,
            format!("{} bytes, more than {MAX_PROVENANCE_TEXT}", value.len()),
        ));
    }
    Ok(value)
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
        let hex_digest = f.sha256.len() == 64
            && f.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_digest {
            return Err(ConvertError::Invalid(
                "dataset.sha256",
                "expected 64 lower-case hex digits".into(),
            ));
        }
        Ok(DatasetFile {
            name: text("dataset.name", f.name)?,
            sha256: f.sha256,
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
    fn epoch_zero_is_refused() {
        assert!(EpochMetrics::try_from(pb::EpochMetrics::default()).is_err());
    }
}
