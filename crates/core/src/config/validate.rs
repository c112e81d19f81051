//! The values a config's types allow but a run cannot take (a dropout of 1.5,
//! zero epochs, a learning rate of NaN), rejected with the key path.
//!
//! Most rules are numeric ranges, so they are a table: one row per key with
//! its value and its interval, checked in order; the first value outside its
//! interval is the error. What does not fit a range (names, a fully connected
//! model without hidden layers) is written
//! out after the table, and last comes the memory the model needs to train
//! (`memory.rs`), which only means something once the sizes are valid.

use std::fmt::Display;

use super::memory::{MAX_MODEL_BYTES, format_bytes};
use super::schema::{
    ExperimentConfig, IMAGE_PIXELS, LrSchedule, ModelKind, NUM_CLASSES, TEST_SET, TRAIN_POOL,
};

/// An impossible value found by [`ExperimentConfig::validate`]. It carries the
/// key path but no file: the loaders add the location from the YAML source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ValidationError {
    /// Dotted key path of the offending value.
    pub key: String,
    pub message: String,
}

/// One end of an interval.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// The end value is allowed.
    Incl(f64),
    /// Everything up to the end value, not the value itself.
    Excl(f64),
    /// No bound on this side (but the value must still be finite).
    Open,
}

/// One row of the table: the value at `key` must lie between `low` and `high`.
struct Range {
    key: String,
    /// The value as a number (integers convert exactly at the sizes allowed).
    value: f64,
    /// The value as the user wrote it, for the message.
    shown: String,
    /// Integers read "at least 1"; numbers "a finite number >= 0".
    integer: bool,
    low: Bound,
    high: Bound,
    /// Appended to the interval in the message: " pixels", " degrees".
    note: &'static str,
}

impl Range {
    fn int(key: impl Into<String>, value: impl Into<i128> + Display + Copy) -> Range {
        Range {
            key: key.into(),
            value: value.into() as f64,
            shown: value.to_string(),
            integer: true,
            low: Bound::Open,
            high: Bound::Open,
            note: "",
        }
    }

    fn float(key: impl Into<String>, value: f64) -> Range {
        Range {
            integer: false,
            shown: value.to_string(),
            value,
            ..Range::int(key, 0)
        }
    }

    fn within(mut self, low: Bound, high: Bound) -> Range {
        self.low = low;
        self.high = high;
        self
    }

    fn at_least(self, low: f64) -> Range {
        self.within(Bound::Incl(low), Bound::Open)
    }

    fn note(mut self, note: &'static str) -> Range {
        self.note = note;
        self
    }

    fn admits(&self) -> bool {
        let v = self.value;
        let low = match self.low {
            Bound::Incl(b) => v >= b,
            Bound::Excl(b) => v > b,
            Bound::Open => true,
        };
        let high = match self.high {
            Bound::Incl(b) => v <= b,
            Bound::Excl(b) => v < b,
            Bound::Open => true,
        };
        v.is_finite() && low && high
    }

    /// "must be in [0, 1), got 1.5", "must be at least 1, got 0",
    /// "must be a finite number > 0, got NaN".
    fn message(&self) -> String {
        let got = &self.shown;
        let note = self.note;
        match (self.low, self.high) {
            (Bound::Incl(low), Bound::Open) if self.integer => {
                format!("must be at least {low}{note}, got {got}")
            }
            (Bound::Incl(low), Bound::Open) => {
                format!("must be a finite number >= {low}{note}, got {got}")
            }
            (Bound::Excl(low), Bound::Open) => {
                format!("must be a finite number > {low}{note}, got {got}")
            }
            (low, high) => {
                let (open, low) = match low {
                    Bound::Incl(b) => ("[", b.to_string()),
                    Bound::Excl(b) => ("(", b.to_string()),
                    Bound::Open => ("(", "-inf".to_string()),
                };
                let (close, high) = match high {
                    Bound::Incl(b) => ("]", b.to_string()),
                    Bound::Excl(b) => (")", b.to_string()),
                    Bound::Open => (")", "inf".to_string()),
                };
                format!("must be in {open}{low}, {high}{close}{note}, got {got}")
            }
        }
    }

    fn check(self) -> Result<(), ValidationError> {
        if self.admits() {
            return Ok(());
        }
        Err(ValidationError {
            message: self.message(),
            key: self.key,
        })
    }
}

use Bound::{Excl, Incl};

impl ExperimentConfig {
    /// Rejects impossible values that the types alone allow.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let fail = |key: &str, message: String| {
            Err(ValidationError {
                key: key.to_string(),
                message,
            })
        };

        if let Err(err) = crate::names::validate("config name", &self.name) {
            return fail("name", err.to_string());
        }

        let (model, data, training) = (&self.model, &self.data, &self.training);
        if model.input_size != IMAGE_PIXELS {
            return fail(
                "model.input_size",
                format!(
                    "must be {IMAGE_PIXELS} (28x28 images), got {}",
                    model.input_size
                ),
            );
        }
        if model.num_classes != NUM_CLASSES {
            return fail(
                "model.num_classes",
                format!("must be {NUM_CLASSES}, got {}", model.num_classes),
            );
        }
        if matches!(model.kind, ModelKind::Fc | ModelKind::FcScratch)
            && model.hidden_sizes.is_empty()
        {
            return fail(
                "model.hidden_sizes",
                "must not be empty for a fully connected model".to_string(),
            );
        }

        let mut table: Vec<Range> = model
            .hidden_sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Range::int(format!("model.hidden_sizes[{i}]"), size).at_least(1.0))
            .collect();
        table.extend([
            Range::float("model.dropout", model.dropout).within(Incl(0.0), Excl(1.0)),
            Range::float("data.train_split", data.train_split).within(Excl(0.0), Excl(1.0)),
            Range::int("data.batch_size", data.batch_size).at_least(1.0),
            Range::int("data.augment.max_shift", data.augment.max_shift)
                .within(Incl(0.0), Incl(8.0))
                .note(" pixels"),
            Range::float("data.augment.max_rotation", data.augment.max_rotation)
                .within(Incl(0.0), Incl(45.0))
                .note(" degrees"),
        ]);
        if let Some(subset) = &data.subset {
            table.extend([
                Range::int("data.subset.train", subset.train as u64)
                    .within(Incl(1.0), Incl(TRAIN_POOL as f64)),
                Range::int("data.subset.test", subset.test as u64)
                    .within(Incl(1.0), Incl(TEST_SET as f64)),
            ]);
        }
        table.extend([
            Range::int("training.epochs", training.epochs).at_least(1.0),
            Range::float("training.learning_rate", training.learning_rate)
                .within(Excl(0.0), Bound::Open),
            Range::float("training.momentum", training.momentum).within(Incl(0.0), Excl(1.0)),
            Range::float("training.weight_decay", training.weight_decay).at_least(0.0),
        ]);
        if let Some(early) = &training.early_stopping {
            table.extend([
                Range::int("training.early_stopping.patience", early.patience).at_least(1.0),
                Range::float("training.early_stopping.min_delta", early.min_delta).at_least(0.0),
            ]);
        }
        match training.lr_schedule {
            LrSchedule::None => {}
            LrSchedule::Step { step_size, gamma } => table.extend([
                Range::int("training.lr_schedule.step_size", step_size).at_least(1.0),
                Range::float("training.lr_schedule.gamma", gamma).within(Excl(0.0), Incl(1.0)),
            ]),
            LrSchedule::Cosine { min_lr } => table.push(
                Range::float("training.lr_schedule.min_lr", min_lr)
                    .within(Incl(0.0), Excl(training.learning_rate))
                    .note(" (below training.learning_rate)"),
            ),
        }
        if let Some(threads) = training.threads {
            table.push(Range::int("training.threads", threads as u64).at_least(1.0));
        }
        table.push(Range::int("logging.log_interval", self.logging.log_interval).at_least(1.0));

        // In the order of the schema, so the first error is the first one a
        // reader of the file meets.
        table.into_iter().try_for_each(Range::check)?;

        // Last: it needs the sizes above to be valid to mean anything.
        let memory = self.model_memory();
        if memory.bytes > u128::from(MAX_MODEL_BYTES) {
            return fail(
                self.model_size_key(),
                format!(
                    "the model needs {} to train, over the limit of {}; use smaller layers",
                    memory.describe(),
                    format_bytes(MAX_MODEL_BYTES.into()),
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_interval() {
        let cases = [
            (
                Range::float("a", 1.5).within(Incl(0.0), Excl(1.0)),
                "must be in [0, 1), got 1.5",
            ),
            (
                Range::int("a", 0u32).at_least(1.0),
                "must be at least 1, got 0",
            ),
            (
                Range::float("a", f64::NAN).within(Excl(0.0), Bound::Open),
                "must be a finite number > 0, got NaN",
            ),
            (
                Range::float("a", -1.0).at_least(0.0),
                "must be a finite number >= 0, got -1",
            ),
            (
                Range::int("a", 9i64)
                    .within(Incl(0.0), Incl(8.0))
                    .note(" pixels"),
                "must be in [0, 8] pixels, got 9",
            ),
            (
                Range::float("a", 0.0).within(Excl(0.0), Incl(1.0)),
                "must be in (0, 1], got 0",
            ),
        ];
        for (range, message) in cases {
            assert!(!range.admits(), "{message}");
            assert_eq!(range.message(), message);
        }
    }

    #[test]
    fn bounds_admit_what_they_say() {
        let r = |v: f64| Range::float("a", v).within(Incl(0.0), Excl(1.0)).admits();
        assert!(r(0.0) && r(0.5) && !r(1.0) && !r(-0.1) && !r(f64::NAN));
        let open = |v: f64| Range::float("a", v).within(Excl(0.0), Bound::Open).admits();
        assert!(open(1e300) && !open(f64::INFINITY) && !open(0.0));
        assert!(
            Range::int("a", u64::MAX)
                .within(Incl(1.0), Incl(60_000.0))
                .check()
                .is_err()
        );
    }
}
