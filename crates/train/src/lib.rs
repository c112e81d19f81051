//! The MNIST training engine over libtorch (through `tch`): the Rust port of
//! the original Python project's trainer, as a library the worker daemon and
//! `sweepctl train` drive.
//!
//! # Layout
//! - [`data`]: IDX loading with SHA-256 verification, the seeded split.
//! - [`model`]: the FC, CNN and hand-written "from scratch" networks, named
//!   like their PyTorch equivalents.
//! - [`optim`]: Adam, AdamW and SGD whose state can be checkpointed.
//! - [`trainer`]: the epoch loop, early stopping, schedules, hooks.
//! - [`checkpoint`]: what a checkpoint holds and how it is written safely.
//! - [`eval`]: accuracy, per-class accuracy, confusion matrix.
//! - [`analysis`]: the best checkpoint on the test set: predictions, summary,
//!   failure clusters (PCA + k-means) and figures in `RUN_DIR/analysis/`.
//! - [`augment`]: random shifts and rotations.
//! - [`bench`]: training throughput, for the comparison with PyTorch.

pub mod analysis;
pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod model;
pub mod optim;
mod rng;
pub mod trainer;

use std::path::PathBuf;

use sweep_core::config::DeviceSpec;
use tch::Device;

pub use data::{DataError, Dataset};
pub use trainer::{NoHooks, TrainHooks, train};

/// Why a run could not finish. Each variant says whether retrying elsewhere can help.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("training diverged at epoch {epoch} (loss {loss}); lower the learning rate")]
    Diverged { epoch: u32, loss: f64 },
    #[error("device {0} is not available here (libtorch sees {1} CUDA device(s))")]
    DeviceUnavailable(DeviceSpec, i64),
    #[error("stopped on request")]
    Stopped,
    /// The analysis of a finished run failed (a figure, a missing tensor).
    #[error("analysis: {0}")]
    Analysis(String),
    /// libtorch raised an error that tch reported by panicking.
    #[error("training aborted: {0}")]
    Panicked(String),
}

impl TrainError {
    /// True when the failure lies in the job itself (its config or data), so
    /// running it again elsewhere would fail the same way.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TrainError::Data(_) | TrainError::Diverged { .. } | TrainError::Torch(_)
        )
    }
}

/// Maps a config's device to a libtorch device, checking that it exists.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, TrainError> {
    let cuda_count = tch::Cuda::device_count();
    match spec {
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(index) if (index as i64) < cuda_count => Ok(Device::Cuda(index)),
        DeviceSpec::Cuda(_) => Err(TrainError::DeviceUnavailable(spec, cuda_count)),
    }
}
