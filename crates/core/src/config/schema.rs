//! The schema of the experiment config: its types, their defaults and their
//! YAML forms. Which values are possible is `validate.rs`'s business.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

/// One experiment: a model trained on a data set with one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Names the run (and its directory); in a sweep, the variant name.
    pub name: String,
    /// Seeds every random source (init, shuffling, split, augmentation) so that
    /// a run can be repeated and seeds can be compared.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The network to train.
    #[serde(default)]
    pub model: ModelConfig,
    /// Where the images come from and how they are batched.
    #[serde(default)]
    pub data: DataConfig,
    /// The optimisation loop.
    #[serde(default)]
    pub training: TrainingConfig,
    /// What the run writes besides its metrics.
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// The network architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture family; the ablations compare them.
    #[serde(rename = "type")]
    pub kind: ModelKind,
    /// Flattened image size. Kept from the original schema; only 784 (28x28)
    /// is valid for the supported data sets.
    pub input_size: i64,
    /// Widths of the hidden fully connected layers (for `cnn`, of its head).
    pub hidden_sizes: Vec<i64>,
    /// Output classes. Kept from the original schema; only 10 is valid.
    pub num_classes: i64,
    /// Dropout probability after each hidden layer; a regularisation ablation.
    pub dropout: f64,
    /// Weight initialisation scheme; an ablation axis.
    pub init: InitKind,
    /// Batch normalisation after each hidden layer; an ablation axis.
    pub batch_norm: bool,
}

/// Architecture families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Fully connected network built from library layers.
    Fc,
    /// Small convolutional network.
    Cnn,
    /// Fully connected network written from raw tensor operations, to check
    /// the library layers against a hand-written reference.
    FcScratch,
}

impl ModelKind {
    /// As a config spells it (`fc_scratch`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Fc => "fc",
            ModelKind::Cnn => "cnn",
            ModelKind::FcScratch => "fc_scratch",
        }
    }
}

/// Weight initialisation schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitKind {
    /// The library's default (PyTorch's Kaiming-uniform variant).
    Default,
    /// Glorot/Xavier uniform.
    Xavier,
    /// He/Kaiming normal.
    Kaiming,
}

/// The data set and how it is fed to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Which 28x28, 10-class data set to train on.
    pub dataset: DatasetKind,
    /// Directory holding the IDX files; `None` uses the copy shipped with the
    /// repository (or the worker's cache).
    #[serde(serialize_with = "serialize_opt_path")]
    pub data_dir: Option<PathBuf>,
    /// Fraction of the training pool used for training; the rest validates
    /// (early stopping, best checkpoint).
    pub train_split: f64,
    /// Samples per optimisation step.
    pub batch_size: i64,
    /// Accepted for compatibility with the original PyTorch config and
    /// ignored: the data set is held in memory, there are no loader workers.
    pub num_workers: u32,
    /// Random shifts and rotations of training images.
    pub augment: AugmentConfig,
    /// Train and test on fewer samples: quick smoke runs and CI.
    pub subset: Option<SubsetConfig>,
}

/// Supported data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Handwritten digits.
    Mnist,
    /// Zalando's clothing images, a drop-in replacement that is harder.
    FashionMnist,
}

/// Data augmentation of training images (never of validation or test images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Off by default so that the original configs train as before.
    pub enabled: bool,
    /// Largest random translation, in pixels, in each direction.
    pub max_shift: i64,
    /// Largest random rotation, in degrees, either way.
    pub max_rotation: f64,
}

/// Caps on the number of samples used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetConfig {
    /// Samples taken from the 60k training pool (before the train/val split).
    pub train: usize,
    /// Samples taken from the 10k test set.
    pub test: usize,
}

/// The optimisation loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Passes over the training split (an upper bound with early stopping).
    pub epochs: u32,
    /// Initial learning rate; schedules start from it.
    pub learning_rate: f64,
    /// Optimisation algorithm; an ablation axis.
    pub optimizer: OptimizerKind,
    /// Momentum of SGD; ignored by Adam and AdamW.
    pub momentum: f64,
    /// L2 penalty (Adam, SGD) or decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Stop when the validation loss stops improving; `None` trains all epochs.
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// How the learning rate changes from epoch to epoch.
    pub lr_schedule: LrSchedule,
    /// Where to train; a worker's `--device` overrides it.
    pub device: DeviceSpec,
    /// CPU threads for tensor operations; `None` leaves the library's default.
    pub threads: Option<usize>,
}

/// Optimisation algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

/// When to stop before `epochs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStoppingConfig {
    /// Epochs without improvement tolerated before stopping.
    pub patience: u32,
    /// Smallest decrease of the validation loss that counts as improvement.
    pub min_delta: f64,
}

/// Learning-rate schedules, stepped once per epoch.
///
/// In YAML a mapping tagged by `type`: `{type: none}`,
/// `{type: step, step_size: 5, gamma: 0.5}`, `{type: cosine, min_lr: 0.0}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "LrScheduleRepr", into = "LrScheduleRepr")]
pub enum LrSchedule {
    /// Constant learning rate.
    #[default]
    None,
    /// Multiply the learning rate by `gamma` every `step_size` epochs.
    Step { step_size: u32, gamma: f64 },
    /// Cosine annealing from `learning_rate` down to `min_lr` over `epochs`.
    Cosine { min_lr: f64 },
}

/// Where to train.
///
/// In YAML and on command lines a string: `auto` (CUDA when available, else
/// CPU), `cpu`, `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

/// What a run writes besides `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Log training progress every this many batches.
    pub log_interval: u32,
    /// Write `checkpoints/best` and `checkpoints/last`; resuming needs them.
    pub save_checkpoints: bool,
    /// Parent directory of local runs (`sweepctl train`); in a sweep the
    /// coordinator's state directory decides instead.
    #[serde(serialize_with = "serialize_path")]
    pub checkpoint_dir: PathBuf,
    /// Write TensorBoard event files next to the metrics.
    pub tensorboard: bool,
}

fn default_seed() -> u64 {
    42
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Fc,
            input_size: IMAGE_PIXELS,
            hidden_sizes: vec![256, 128],
            num_classes: NUM_CLASSES,
            dropout: 0.2,
            init: InitKind::Default,
            batch_norm: false,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::Mnist,
            data_dir: None,
            train_split: 0.8,
            batch_size: 64,
            num_workers: 2,
            augment: AugmentConfig::default(),
            subset: None,
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_shift: 2,
            max_rotation: 10.0,
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            epochs: 20,
            learning_rate: 0.001,
            optimizer: OptimizerKind::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            early_stopping: None,
            lr_schedule: LrSchedule::None,
            device: DeviceSpec::Auto,
            threads: None,
        }
    }
}

impl Default for EarlyStoppingConfig {
    fn default() -> Self {
        Self {
            patience: 5,
            min_delta: 0.0,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            log_interval: 10,
            save_checkpoints: true,
            checkpoint_dir: PathBuf::from("./runs"),
            tensorboard: true,
        }
    }
}

/// Pixels of one flattened 28x28 image.
pub(crate) const IMAGE_PIXELS: i64 = 28 * 28;
/// Classes of both supported data sets.
pub(crate) const NUM_CLASSES: i64 = 10;
/// Sizes of the MNIST and Fashion-MNIST training pool and test set.
pub(crate) const TRAIN_POOL: usize = 60_000;
pub(crate) const TEST_SET: usize = 10_000;

// Paths are written lossily rather than failing: `to_yaml` has no error to
// return, and a config read from YAML only ever holds UTF-8 paths anyway.
fn serialize_path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

fn serialize_opt_path<S: Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

// ---------------------------------------------------------------------------
// LrSchedule's YAML form

/// The flat mapping users write; a separate type (rather than an internally
/// tagged enum) so that each field keeps its own key path in errors, and so
/// that a field that does not belong to the chosen type is an error instead
/// of being silently ignored.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LrScheduleRepr {
    #[serde(rename = "type")]
    kind: LrScheduleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_lr: Option<f64>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LrScheduleKind {
    None,
    Step,
    Cosine,
}

impl TryFrom<LrScheduleRepr> for LrSchedule {
    type Error = String;

    fn try_from(repr: LrScheduleRepr) -> Result<Self, String> {
        let misplaced = |key: &str, kind: &str| Err(format!("{key} does not apply to type {kind}"));
        match repr.kind {
            LrScheduleKind::None => {
                if let Some(key) = [
                    repr.step_size.map(|_| "step_size"),
                    repr.gamma.map(|_| "gamma"),
                    repr.min_lr.map(|_| "min_lr"),
                ]
                .into_iter()
                .flatten()
                .next()
                {
                    return misplaced(key, "none");
                }
                Ok(LrSchedule::None)
            }
            LrScheduleKind::Step => {
                if repr.min_lr.is_some() {
                    return misplaced("min_lr", "step");
                }
                let step_size = repr.step_size.ok_or("type step requires step_size")?;
                Ok(LrSchedule::Step {
                    step_size,
                    gamma: repr.gamma.unwrap_or(0.1),
                })
            }
            LrScheduleKind::Cosine => {
                if repr.step_size.is_some() {
                    return misplaced("step_size", "cosine");
                }
                if repr.gamma.is_some() {
                    return misplaced("gamma", "cosine");
                }
                Ok(LrSchedule::Cosine {
                    min_lr: repr.min_lr.unwrap_or(0.0),
                })
            }
        }
    }
}

impl From<LrSchedule> for LrScheduleRepr {
    fn from(schedule: LrSchedule) -> Self {
        let empty = |kind| LrScheduleRepr {
            kind,
            step_size: None,
            gamma: None,
            min_lr: None,
        };
        match schedule {
            LrSchedule::None => empty(LrScheduleKind::None),
            LrSchedule::Step { step_size, gamma } => LrScheduleRepr {
                step_size: Some(step_size),
                gamma: Some(gamma),
                ..empty(LrScheduleKind::Step)
            },
            LrSchedule::Cosine { min_lr } => LrScheduleRepr {
                min_lr: Some(min_lr),
                ..empty(LrScheduleKind::Cosine)
            },
        }
    }
}

// ---------------------------------------------------------------------------
// DeviceSpec's string form

/// A device string that is none of `auto`, `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device {0:?}: expected auto, cpu, cuda or cuda:N")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceSpec {
    type Err = ParseDeviceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                // Digits only: `usize::from_str` would also take a leading '+'.
                .filter(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|index| index.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| ParseDeviceError(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = ParseDeviceError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(device: DeviceSpec) -> Self {
        device.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::ModelKind;

    #[test]
    fn model_names_are_the_configs_spelling() {
        for kind in [ModelKind::Fc, ModelKind::Cnn, ModelKind::FcScratch] {
            assert_eq!(
                serde_json::to_value(kind).expect("serialises"),
                serde_json::Value::from(kind.name())
            );
        }
    }
}
