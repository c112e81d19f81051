//! What a checkpoint holds and how it reaches the disk.
//!
//! `checkpoints/` of a run directory holds:
//! - `best.safetensors`, `last.safetensors`: model weights, named like the
//!   PyTorch module's `state_dict()` (see [`crate::model`]);
//! - `last.optimizer.safetensors`: the optimizer's moments or momentum buffers;
//! - `last.state.json`: epoch, metrics so far and early-stopping counters, with
//!   the SHA-256 of the two `last.*.safetensors` files it belongs to.
//!
//! Every file is written to a temporary name and renamed, and the state file
//! goes last: it is the commit record, so a crash mid-save leaves either the
//! previous checkpoint or one whose hashes do not match (and which is refused).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sweep_core::metrics::RunMetrics;
use tch::{Tensor, nn};

use crate::TrainError;
use crate::optim::Optimizer;

pub use sweep_core::run_dir::{
    BEST_CHECKPOINT as BEST, LAST_CHECKPOINT as LAST, LAST_OPTIMIZER, LAST_STATE, write_atomic,
};

/// Progress of a run, saved with its last checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainerState {
    /// Last completed epoch (0 before the first).
    pub epoch: u32,
    pub optimizer_steps: i64,
    pub epochs_without_improvement: u32,
    pub metrics: RunMetrics,
    /// SHA-256 of `last.safetensors` and `last.optimizer.safetensors`.
    pub weights_sha256: String,
    pub optimizer_sha256: String,
}

/// The files one epoch's save wrote, relative to `checkpoints/`, in the order a
/// copy must be made (the state file last).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub epoch: u32,
    pub dir: PathBuf,
    pub files: Vec<&'static str>,
}

pub fn best_path(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints").join(BEST)
}

/// The trainable parameters with their state-dict names, sorted by name so the
/// optimizer's order is stable across processes.
pub fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves the last checkpoint (and the best when `improved`).
pub fn save(
    run_dir: &Path,
    vs: &nn::VarStore,
    optimizer: &Optimizer,
    state: &TrainerState,
    improved: bool,
) -> Result<Checkpoint, TrainError> {
    let dir = run_dir.join("checkpoints");
    let weights = state_dict(vs, optimizer.steps());
    let weights_sha = write_tensors(&dir.join(LAST), &weights)?;
    let optimizer_sha = write_tensors(&dir.join(LAST_OPTIMIZER), &optimizer.state_tensors())?;
    let mut files = vec![LAST, LAST_OPTIMIZER];
    if improved {
        let best = dir.join(BEST);
        std::fs::copy(dir.join(LAST), &best)
            .map_err(|source| TrainError::Io { path: best, source })?;
        files.push(BEST);
    }
    let state = TrainerState {
        weights_sha256: weights_sha,
        optimizer_sha256: optimizer_sha,
        ..state.clone()
    };
    let path = dir.join(LAST_STATE);
    let json = serde_json::to_vec_pretty(&state).map_err(|e| TrainError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    write_atomic(&path, &json).map_err(|source| TrainError::Io { path, source })?;
    files.push(LAST_STATE);
    Ok(Checkpoint {
        epoch: state.epoch,
        dir,
        files,
    })
}

/// Loads the last checkpoint into `vs` and `optimizer`; `Ok(None)` when the run
/// has none yet.
pub fn load_last(
    run_dir: &Path,
    vs: &nn::VarStore,
    optimizer: &mut Optimizer,
) -> Result<Option<TrainerState>, TrainError> {
    let dir = run_dir.join("checkpoints");
    let state_path = dir.join(LAST_STATE);
    let text = match std::fs::read(&state_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TrainError::Io {
                path: state_path,
                source,
            });
        }
    };
    let state: TrainerState =
        serde_json::from_slice(&text).map_err(|e| TrainError::Checkpoint {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
    verify_sha256(&dir.join(LAST), &state.weights_sha256)?;
    verify_sha256(&dir.join(LAST_OPTIMIZER), &state.optimizer_sha256)?;
    load_weights(vs, &dir.join(LAST))?;
    let opt_path = dir.join(LAST_OPTIMIZER);
    let saved: HashMap<String, Tensor> = Tensor::read_safetensors(&opt_path)?.into_iter().collect();
    optimizer
        .load_state(state.optimizer_steps, saved)
        .map_err(|reason| TrainError::Checkpoint {
            path: opt_path,
            reason,
        })?;
    Ok(Some(state))
}

/// Copies the weights in a safetensors file into `vs`, checking that every
/// variable is present with the right shape.
pub fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<(), TrainError> {
    let mut saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    let bad = |reason: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let src = saved
                .remove(&name)
                .ok_or_else(|| bad(format!("no tensor named {name}")))?;
            if src.size() != var.size() {
                return Err(bad(format!(
                    "{name} has shape {:?}, the model expects {:?}",
                    src.size(),
                    var.size()
                )));
            }
            var.f_copy_(&src)?;
        }
        Ok(())
    })
}

/// The model's tensors as PyTorch's `state_dict()` has them: libtorch's batch
/// norm keeps no `num_batches_tracked` buffer, so it is added here (as the
/// number of training steps) to let `load_state_dict(strict=True)` succeed.
fn state_dict(vs: &nn::VarStore, steps: i64) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let batch_norms: Vec<String> = tensors
        .iter()
        .filter_map(|(name, _)| name.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    for bn in batch_norms {
        tensors.push((format!("{bn}.num_batches_tracked"), Tensor::from(steps)));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<String, TrainError> {
    let tmp = sweep_core::run_dir::tmp_path(path);
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&cpu, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(|source| TrainError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn verify_sha256(path: &Path, expected: &str) -> Result<(), TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "SHA-256 is {actual}, {LAST_STATE} expects {expected} (interrupted save or corrupt copy)"
            ),
        });
    }
    Ok(())
}
