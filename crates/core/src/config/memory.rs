//! How much memory a config's model takes to train, computed from the schema
//! alone, so that a model that cannot fit is refused when its config is
//! loaded or its sweep submitted, with the key to change, instead of failing
//! inside libtorch on a worker (where tch's `VarStore` used to panic on the
//! allocation).
//!
//! Pure arithmetic, no libtorch: the coordinator and `sweepctl` check configs
//! without linking it. The layer shapes are the ones `sweep_train::model`
//! builds (its tests compare the counts with a real `VarStore`).

use super::schema::{ExperimentConfig, ModelKind, OptimizerKind};

/// Bytes of one value: parameters, gradients and optimizer state are f32.
pub const BYTES_PER_VALUE: u64 = 4;

/// The most a config's model may need ([`ModelMemory::bytes`]) to be
/// accepted: 128 GiB.
///
/// A fixed cap rather than the memory of the machine that loads the config,
/// because that machine is usually not the one that trains it: the
/// coordinator validates sweeps for workers elsewhere, and a config must load
/// (or not) the same everywhere. Each job trains on one device, and the
/// largest single devices hold 80–141 GB (A100/H100 80 GB, H200 141 GB), so a
/// model that needs more than 128 GiB for its weights, gradients and
/// optimizer state alone (activations come on top) trains nowhere a worker
/// can run it. A smaller model that still exceeds the memory of the worker
/// that leases it is refused there, before anything is allocated
/// (`sweep_train::check_memory`).
pub const MAX_MODEL_BYTES: u64 = 128 << 30;

/// What training a model keeps allocated for its whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelMemory {
    /// Trainable values (weights and biases).
    pub parameters: u128,
    /// Values that are not trained (batch norm's running mean and variance).
    pub buffers: u128,
    /// Copies of the parameters the optimizer keeps: Adam's and AdamW's two
    /// moments, SGD's momentum buffer (none without momentum).
    pub optimizer_copies: u32,
    /// Bytes of parameters, their gradients, the optimizer's copies and the
    /// buffers: a lower bound on what the run needs (activations, the data
    /// set and libtorch itself come on top).
    pub bytes: u128,
}

impl ModelMemory {
    /// "1.60e17 bytes (1.00e16 parameters × 4 bytes × 4: weights, gradients
    /// and the optimizer's 2 moments)". Numbers this large read better in
    /// powers of ten.
    pub fn describe(&self) -> String {
        let copies = match self.optimizer_copies {
            0 => "weights and gradients".to_string(),
            1 => "weights, gradients and the momentum buffer".to_string(),
            n => format!("weights, gradients and the optimizer's {n} moments"),
        };
        format!(
            "{} ({} parameters × {BYTES_PER_VALUE} bytes × {}: {copies})",
            format_bytes(self.bytes),
            format_count(self.parameters),
            2 + self.optimizer_copies,
        )
    }
}

impl ExperimentConfig {
    /// The memory that training this config's model takes, from the layer
    /// shapes of `model` and the optimizer of `training`.
    ///
    /// Total on any config, validated or not: sizes below zero count as zero
    /// and the arithmetic saturates (u128 holds the product of two i64
    /// widths), so an absurd config yields a huge estimate, never a panic.
    pub fn model_memory(&self) -> ModelMemory {
        let model = &self.model;
        let width = |n: i64| u128::try_from(n).unwrap_or(0);
        // (in, out) of each linear layer; conv layers as (in × 9, out).
        let (layers, batch_norm_widths): (Vec<(u128, u128)>, Vec<u128>) = match model.kind {
            ModelKind::Fc | ModelKind::FcScratch => {
                let mut dims = vec![width(model.input_size)];
                dims.extend(model.hidden_sizes.iter().map(|&w| width(w)));
                dims.push(width(model.num_classes));
                let layers = dims.windows(2).map(|w| (w[0], w[1])).collect();
                // Batch norm only in the autograd network, after each hidden layer.
                let norms = if model.batch_norm && model.kind == ModelKind::Fc {
                    model.hidden_sizes.iter().map(|&w| width(w)).collect()
                } else {
                    Vec::new()
                };
                (layers, norms)
            }
            // The CNN's shape is fixed (see sweep_train::model): conv 1→32 and
            // 32→64 (3×3), fc 3136→128, fc 128→classes.
            ModelKind::Cnn => {
                let layers = vec![
                    (9, 32),
                    (32 * 9, 64),
                    (64 * 7 * 7, 128),
                    (128, width(model.num_classes)),
                ];
                let norms = if model.batch_norm {
                    vec![32, 64]
                } else {
                    Vec::new()
                };
                (layers, norms)
            }
        };
        let mut parameters: u128 = 0;
        for (fan_in, out) in layers {
            // weight [out, in] and bias [out]
            parameters = parameters.saturating_add(fan_in.saturating_add(1).saturating_mul(out));
        }
        let mut buffers: u128 = 0;
        for w in batch_norm_widths {
            // weight and bias are trained; running mean and variance are not.
            parameters = parameters.saturating_add(w.saturating_mul(2));
            buffers = buffers.saturating_add(w.saturating_mul(2));
        }
        let training = &self.training;
        let optimizer_copies = match training.optimizer {
            OptimizerKind::Adam | OptimizerKind::AdamW => 2,
            OptimizerKind::Sgd if training.momentum != 0.0 => 1,
            OptimizerKind::Sgd => 0,
        };
        let values = parameters
            .saturating_mul(2 + u128::from(optimizer_copies))
            .saturating_add(buffers);
        ModelMemory {
            parameters,
            buffers,
            optimizer_copies,
            bytes: values.saturating_mul(u128::from(BYTES_PER_VALUE)),
        }
    }

    /// The key a user changes to make the model smaller: the hidden layers
    /// for the fully connected networks (the only sizes a config sets).
    pub fn model_size_key(&self) -> &'static str {
        match self.model.kind {
            ModelKind::Fc | ModelKind::FcScratch => "model.hidden_sizes",
            ModelKind::Cnn => "model.type",
        }
    }
}

/// Bytes in binary units up to TiB, then in powers of ten.
pub fn format_bytes(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes >= 1 << 50 {
        return format!("{:.2e} bytes", bytes as f64);
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Counts in full up to a billion, then in powers of ten.
fn format_count(count: u128) -> String {
    if count >= 1_000_000_000 {
        format!("{:.2e}", count as f64)
    } else {
        count.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::ORIGINAL;
    use std::path::Path;

    fn config(text: &str) -> ExperimentConfig {
        ExperimentConfig::from_yaml(text, Path::new("x.yaml")).expect("config")
    }

    #[test]
    fn the_baseline_counts_pytorchs_parameters() {
        // 784·256+256 + 256·128+128 + 128·10+10, as torch's numel() sums them.
        let memory = config(ORIGINAL).model_memory();
        assert_eq!(memory.parameters, 235_146);
        assert_eq!(memory.buffers, 0);
        assert_eq!(memory.optimizer_copies, 2);
        assert_eq!(memory.bytes, 235_146 * 4 * 4);
    }

    #[test]
    fn the_optimizer_decides_the_copies() {
        let mut c = config(ORIGINAL);
        c.training.optimizer = OptimizerKind::Sgd;
        assert_eq!(c.model_memory().optimizer_copies, 1);
        c.training.momentum = 0.0;
        assert_eq!(c.model_memory().bytes, 235_146 * 4 * 2);
        c.training.optimizer = OptimizerKind::AdamW;
        assert_eq!(c.model_memory().optimizer_copies, 2);
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_overflowing() {
        let mut c = config(ORIGINAL);
        c.model.hidden_sizes = vec![i64::MAX; 8];
        c.model.batch_norm = true;
        assert_eq!(c.model_memory().bytes, u128::MAX);
        c.model.hidden_sizes = vec![-5, i64::MIN];
        c.model.input_size = -1;
        // Negative widths count as 0: only the output layer's 10 biases remain.
        assert_eq!(c.model_memory().parameters, 10);
    }

    #[test]
    fn sizes_read_in_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(MAX_MODEL_BYTES.into()), "128.0 GiB");
        assert_eq!(format_bytes(16 * 10u128.pow(16)), "1.60e17 bytes");
    }
}
