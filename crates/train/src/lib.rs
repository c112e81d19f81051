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

use sweep_core::config::{DeviceSpec, ExperimentConfig, format_bytes};
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
    /// libtorch could not build the model (out of memory on this device): a
    /// worker with more memory may, so not permanent.
    #[error("building the model: {0}")]
    Allocation(tch::TchError),
    /// The model needs more memory than this machine has ([`check_memory`]).
    /// Not permanent: a worker with more memory may train it.
    #[error(
        "{key}: the model needs {needed} to train, more than the {limit} of memory this machine has{note}"
    )]
    TooLarge {
        key: &'static str,
        needed: String,
        limit: String,
        /// Where the limit comes from, when not the machine's RAM.
        note: &'static str,
    },
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

/// Refuses, before anything is allocated, a model whose weights, gradients
/// and optimizer state (sweep_core's estimate, a lower bound) exceed this
/// machine's memory. The config's load-time cap (`MAX_MODEL_BYTES`) is fixed
/// because configs load on machines other than the one that trains them;
/// here the machine is known. On CPU the limit is the RAM, or the cgroup's
/// memory limit when that is lower (a container): the total, not what is
/// free now, so that a busy machine does not fail a job another moment would
/// run. Without the check a model larger than memory may still allocate
/// (the kernel overcommits) and the process be killed when it is touched.
/// GPU memory is not known without a CUDA call tch does not offer; there the
/// fallible construction (`Network::new`) reports libtorch's error.
pub fn check_memory(config: &ExperimentConfig, device: Device) -> Result<(), TrainError> {
    if device != Device::Cpu {
        return Ok(());
    }
    let Some((limit, note)) = machine_memory() else {
        return Ok(());
    };
    let memory = config.model_memory();
    if memory.bytes <= u128::from(limit) {
        return Ok(());
    }
    Err(TrainError::TooLarge {
        key: config.model_size_key(),
        needed: memory.describe(),
        limit: format_bytes(limit.into()),
        note,
    })
}

/// The memory this process may use: the RAM (`/proc/meminfo`), or the
/// cgroup's limit when lower, with a note saying so. None off Linux.
fn machine_memory() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())?
        .saturating_mul(1024);
    // cgroup v2, then v1; "max" (or v1's huge default) means no limit.
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    });
    Some(match cgroup {
        Some(limit) if limit < total => (limit, " (its cgroup's memory limit)"),
        _ => (total, ""),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_model_larger_than_the_machine_is_refused_by_key() {
        let mut config =
            ExperimentConfig::from_yaml("name: t\n", Path::new("t.yaml")).expect("config");
        check_memory(&config, Device::Cpu).expect("the baseline fits");
        // Past the load-time cap too (set directly, as validation would refuse
        // it): more than any machine has.
        config.model.hidden_sizes = vec![1 << 40];
        let err = check_memory(&config, Device::Cpu).expect_err("fits");
        assert!(!err.is_permanent(), "a larger worker may train it");
        let message = err.to_string();
        assert!(
            message.starts_with("model.hidden_sizes: the model needs "),
            "{message}"
        );
        assert!(message.contains("of memory this machine has"), "{message}");
    }
}
