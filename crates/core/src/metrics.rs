//! What one run measured, in the shape `metrics.json` stores it. The trainer
//! fills it epoch by epoch; workers stream the epochs to the coordinator, which
//! rebuilds the same file in the run directory.

use serde::{Deserialize, Serialize};

/// One finished epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    /// Learning rate used during this epoch.
    pub lr: f64,
    /// Wall-clock seconds the epoch took (training and validation).
    pub seconds: f64,
}

/// Final evaluation of the best checkpoint on the held-out test set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    pub test_loss: f64,
    pub test_acc: f64,
}

/// Everything `metrics.json` holds for one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub epochs: Vec<EpochMetrics>,
    /// Epoch whose validation loss was the best so far (0 before any epoch).
    pub best_epoch: u32,
    pub best_val_loss: Option<f64>,
    pub best_val_acc: Option<f64>,
    /// True when early stopping ended the run before `training.epochs`.
    pub stopped_early: bool,
    /// Sum of the epochs' seconds.
    pub train_seconds: f64,
    /// Present once the run finished and its best checkpoint was tested.
    pub test: Option<TestMetrics>,
}

impl RunMetrics {
    /// Appends an epoch and updates the best-epoch bookkeeping. `improved` is the
    /// early-stopping verdict for this epoch (validation loss beat the best by
    /// more than `min_delta`).
    pub fn record_epoch(&mut self, epoch: EpochMetrics, improved: bool) {
        if improved || self.best_val_loss.is_none() {
            self.best_epoch = epoch.epoch;
            self.best_val_loss = Some(epoch.val_loss);
            self.best_val_acc = Some(epoch.val_acc);
        }
        self.train_seconds += epoch.seconds;
        self.epochs.push(epoch);
    }
}
