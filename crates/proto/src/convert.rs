//! Conversions between the generated protobuf types and `sweep-core`'s domain
//! types. Those from the network are checked (missing fields, non-finite
//! numbers) because they come from another process that may be buggy.

use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};

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
    fn epoch_zero_is_refused() {
        assert!(EpochMetrics::try_from(pb::EpochMetrics::default()).is_err());
    }
}
