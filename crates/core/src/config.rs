//! The experiment config: what one training run is, as a user writes it in YAML.
//!
//! The schema is the one of the original PyTorch project (kept compatible, so
//! old configs run unchanged) plus the extensions the ablations need. Every
//! process shares these types: `sweepctl train` reads them, the coordinator
//! expands sweeps into them, workers receive them resolved.
//!
//! Configs arrive in layers (a sweep's base config, then a variant's partial
//! config), so loading works on a small YAML tree that remembers, for every
//! node, the file and line it came from. Layers are deep-merged as trees and
//! only then deserialized and validated; that way an error in the merged
//! result still points at the file and line that supplied the offending value,
//! together with its dotted key path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, IntoDeserializer};
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
const IMAGE_PIXELS: i64 = 28 * 28;
/// Classes of both supported data sets.
const NUM_CLASSES: i64 = 10;
/// Sizes of the MNIST and Fashion-MNIST training pool and test set.
const TRAIN_POOL: usize = 60_000;
const TEST_SET: usize = 10_000;

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

// ---------------------------------------------------------------------------
// Errors

/// Where in which file something was found; line and column are 1-based and
/// absent when unknown (e.g. a default value that no file wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// Why a config could not be loaded. Every variant's message starts with the
/// file (and line and column where known) so that editors can jump to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML (or not a mapping at the top level).
    #[error("{location}: {message}")]
    Syntax {
        location: SourceLocation,
        message: String,
    },
    /// Valid YAML, but an unknown key, a wrong type or an impossible value.
    /// `key` is the dotted key path (`training.optimizer`, `model.hidden_sizes[0]`).
    #[error("{location}: {}{message}", key_prefix(key))]
    Invalid {
        location: SourceLocation,
        key: String,
        message: String,
    },
    /// `from_layers` was given nothing to load.
    #[error("no config layers given")]
    NoLayers,
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// An impossible value found by [`ExperimentConfig::validate`]. It carries the
/// key path but no file: the loaders add the location from the YAML source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ValidationError {
    /// Dotted key path of the offending value.
    pub key: String,
    pub message: String,
}

// ---------------------------------------------------------------------------
// Loading, validation, serialization

impl ExperimentConfig {
    /// Reads, validates and returns the config in `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path)?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates `text`; `source` names it in error messages.
    pub fn from_yaml(text: &str, source: &Path) -> Result<Self, ConfigError> {
        Self::from_tree(&parse_yaml(text, source)?)
    }

    /// Deep-merges the YAML `(file, text)` layers, later over earlier (mappings
    /// merge key by key; scalars and sequences replace), then deserializes and
    /// validates the result. Errors name the layer that supplied the bad key.
    pub fn from_layers(layers: &[(PathBuf, String)]) -> Result<Self, ConfigError> {
        let mut merged: Option<Node> = None;
        for (file, text) in layers {
            let layer = parse_yaml(text, file)?;
            match merged.as_mut() {
                Some(base) => base.merge(layer),
                None => merged = Some(layer),
            }
        }
        Self::from_tree(&merged.ok_or(ConfigError::NoLayers)?)
    }

    /// The fully resolved config, every default written out; it reads back
    /// through [`ExperimentConfig::from_yaml`] to an equal config.
    pub fn to_yaml(&self) -> String {
        // Cannot fail in practice: every field is a plain value, map or
        // sequence, and paths serialize lossily. Should it ever fail, the
        // output is a comment, which `from_yaml` then rejects loudly.
        serde_saphyr::to_string(self)
            .unwrap_or_else(|err| format!("# cannot serialize config: {err}\n"))
    }

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

        let model = &self.model;
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
        if let Some((index, size)) = model
            .hidden_sizes
            .iter()
            .enumerate()
            .find(|(_, size)| **size < 1)
        {
            return fail(
                &format!("model.hidden_sizes[{index}]"),
                format!("must be at least 1, got {size}"),
            );
        }
        if !(0.0..1.0).contains(&model.dropout) {
            return fail(
                "model.dropout",
                format!("must be in [0, 1), got {}", model.dropout),
            );
        }

        let data = &self.data;
        if !(data.train_split > 0.0 && data.train_split < 1.0) {
            return fail(
                "data.train_split",
                format!("must be in (0, 1), got {}", data.train_split),
            );
        }
        if data.batch_size < 1 {
            return fail(
                "data.batch_size",
                format!("must be at least 1, got {}", data.batch_size),
            );
        }
        if !(0..=8).contains(&data.augment.max_shift) {
            return fail(
                "data.augment.max_shift",
                format!("must be in [0, 8] pixels, got {}", data.augment.max_shift),
            );
        }
        if !(0.0..=45.0).contains(&data.augment.max_rotation) {
            return fail(
                "data.augment.max_rotation",
                format!(
                    "must be in [0, 45] degrees, got {}",
                    data.augment.max_rotation
                ),
            );
        }
        if let Some(subset) = &data.subset {
            if !(1..=TRAIN_POOL).contains(&subset.train) {
                return fail(
                    "data.subset.train",
                    format!("must be in [1, {TRAIN_POOL}], got {}", subset.train),
                );
            }
            if !(1..=TEST_SET).contains(&subset.test) {
                return fail(
                    "data.subset.test",
                    format!("must be in [1, {TEST_SET}], got {}", subset.test),
                );
            }
        }

        let training = &self.training;
        if training.epochs < 1 {
            return fail(
                "training.epochs",
                format!("must be at least 1, got {}", training.epochs),
            );
        }
        if !(training.learning_rate.is_finite() && training.learning_rate > 0.0) {
            return fail(
                "training.learning_rate",
                format!(
                    "must be a finite number > 0, got {}",
                    training.learning_rate
                ),
            );
        }
        if !(0.0..1.0).contains(&training.momentum) {
            return fail(
                "training.momentum",
                format!("must be in [0, 1), got {}", training.momentum),
            );
        }
        if !(training.weight_decay.is_finite() && training.weight_decay >= 0.0) {
            return fail(
                "training.weight_decay",
                format!(
                    "must be a finite number >= 0, got {}",
                    training.weight_decay
                ),
            );
        }
        if let Some(early) = &training.early_stopping {
            if early.patience < 1 {
                return fail(
                    "training.early_stopping.patience",
                    format!("must be at least 1, got {}", early.patience),
                );
            }
            if !(early.min_delta.is_finite() && early.min_delta >= 0.0) {
                return fail(
                    "training.early_stopping.min_delta",
                    format!("must be a finite number >= 0, got {}", early.min_delta),
                );
            }
        }
        match training.lr_schedule {
            LrSchedule::None => {}
            LrSchedule::Step { step_size, gamma } => {
                if step_size < 1 {
                    return fail(
                        "training.lr_schedule.step_size",
                        format!("must be at least 1, got {step_size}"),
                    );
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return fail(
                        "training.lr_schedule.gamma",
                        format!("must be in (0, 1], got {gamma}"),
                    );
                }
            }
            LrSchedule::Cosine { min_lr } => {
                if !(min_lr >= 0.0 && min_lr < training.learning_rate) {
                    return fail(
                        "training.lr_schedule.min_lr",
                        format!(
                            "must be >= 0 and below training.learning_rate ({}), got {min_lr}",
                            training.learning_rate
                        ),
                    );
                }
            }
        }
        if training.threads == Some(0) {
            return fail("training.threads", "must be at least 1, got 0".to_string());
        }

        if self.logging.log_interval < 1 {
            return fail(
                "logging.log_interval",
                format!("must be at least 1, got {}", self.logging.log_interval),
            );
        }
        Ok(())
    }

    /// Deserializes and validates a (possibly merged) YAML tree; errors point
    /// at the file and line each offending node came from.
    pub(crate) fn from_tree(root: &Node) -> Result<Self, ConfigError> {
        let config: Self = root.deserialize()?;
        config
            .validate()
            .map_err(|err| root.error_at(&err.key, err.message))?;
        Ok(config)
    }
}

/// Reads a UTF-8 text file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------
// The located YAML tree

/// Where a node starts: its file and 1-based line and column (`None` when the
/// parser did not know).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pos {
    file: Arc<Path>,
    line_column: Option<(u64, u64)>,
}

impl Pos {
    fn location(&self) -> SourceLocation {
        SourceLocation {
            file: self.file.to_path_buf(),
            line: self.line_column.map(|(line, _)| line),
            column: self.line_column.map(|(_, column)| column),
        }
    }
}

/// A YAML node with the position it was read from. Scalars keep the type
/// YAML's core schema gave them, so that `epochs: "20"` stays a string and is
/// rejected where a number is expected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    value: Value,
    pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a mapping, with the position of the key itself (unknown-key
/// errors point there; value errors point at the value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    key_pos: Pos,
    pub(crate) value: Node,
}

impl Entry {
    /// Where the key is written.
    pub(crate) fn key_location(&self) -> SourceLocation {
        self.key_pos.location()
    }
}

/// Parses one YAML document whose top level must be a mapping; an empty
/// document (or one of comments only) is an empty mapping, so that an empty
/// variant file means "the base config unchanged".
pub(crate) fn parse_yaml(text: &str, file: &Path) -> Result<Node, ConfigError> {
    let file: Arc<Path> = Arc::from(file);
    // Non-finite floats (`.nan`, `.inf`) pass through so that validation
    // rejects them with the key path, which a parse error could not name.
    let options = serde_saphyr::options! {
        non_finite_float_policy: serde_saphyr::options::NonFiniteFloatPolicy::PassThrough,
    };
    let raw: Option<serde_saphyr::Spanned<Raw>> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| {
            let err = err.without_snippet();
            let message = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::DefaultMessageFormatter,
                err,
            );
            ConfigError::Syntax {
                location: Pos {
                    file: file.clone(),
                    line_column: line_column(err.location()),
                }
                .location(),
                message: message.into_owned(),
            }
        })?;
    let node = match raw {
        Some(raw) => Node::from_raw(raw, &file),
        None => Node {
            value: Value::Map(Vec::new()),
            pos: Pos {
                file: file.clone(),
                line_column: None,
            },
        },
    };
    match node.value {
        Value::Map(_) => Ok(node),
        Value::Null => Ok(Node {
            value: Value::Map(Vec::new()),
            pos: node.pos,
        }),
        _ => Err(ConfigError::Syntax {
            location: node.pos.location(),
            message: format!(
                "expected a mapping of keys at the top level, found {}",
                node.value.describe()
            ),
        }),
    }
}

fn line_column(location: Option<serde_saphyr::Location>) -> Option<(u64, u64)> {
    location
        .filter(|loc| loc.line() > 0)
        .map(|loc| (loc.line(), loc.column()))
}

impl Node {
    fn from_raw(raw: serde_saphyr::Spanned<Raw>, file: &Arc<Path>) -> Node {
        let pos = Pos {
            file: file.clone(),
            line_column: line_column(Some(raw.referenced)),
        };
        let value = match raw.value {
            Raw::Null => Value::Null,
            Raw::Bool(value) => Value::Bool(value),
            Raw::Int(value) => Value::Int(value),
            Raw::UInt(value) => Value::UInt(value),
            Raw::Float(value) => Value::Float(value),
            Raw::Str(value) => Value::Str(value),
            Raw::Seq(items) => Value::Seq(
                items
                    .into_iter()
                    .map(|item| Node::from_raw(item, file))
                    .collect(),
            ),
            Raw::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| Entry {
                        key: key.value,
                        key_pos: Pos {
                            file: file.clone(),
                            line_column: line_column(Some(key.referenced)),
                        },
                        value: Node::from_raw(value, file),
                    })
                    .collect(),
            ),
        };
        Node { value, pos }
    }

    /// Where this node starts.
    pub(crate) fn location(&self) -> SourceLocation {
        self.pos.location()
    }

    /// Deep merge: mappings merge key by key, anything else is replaced by
    /// `over` (with its position, so errors blame the layer that wrote it).
    pub(crate) fn merge(&mut self, over: Node) {
        match (&mut self.value, over.value) {
            (Value::Map(base), Value::Map(over_entries)) => {
                for entry in over_entries {
                    match base.iter_mut().find(|existing| existing.key == entry.key) {
                        Some(existing) => {
                            existing.key_pos = entry.key_pos;
                            existing.value.merge(entry.value);
                        }
                        None => base.push(entry),
                    }
                }
            }
            (_, value) => {
                *self = Node {
                    value,
                    pos: over.pos,
                }
            }
        }
    }

    /// The items of a sequence node (None for other nodes).
    pub(crate) fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// `value` under the dotted `key` (`a.b` gives `{a: {b: value}}`), each
    /// key placed where `key_at` names the path, so that an error about a key
    /// (unknown to the schema) points at the line that wrote it.
    pub(crate) fn nested(key: &str, key_at: &Entry, value: Node) -> Node {
        let mut node = value;
        for part in key.rsplit('.').filter(|part| !part.is_empty()) {
            node = Node {
                pos: key_at.key_pos.clone(),
                value: Value::Map(vec![Entry {
                    key: part.to_string(),
                    key_pos: key_at.key_pos.clone(),
                    value: node,
                }]),
            };
        }
        node
    }

    /// A number placed where `at` is written (a value drawn from the
    /// distribution there): errors about it point at that line.
    pub(crate) fn number_at(value: f64, at: &Node) -> Node {
        Node {
            value: Value::Float(value),
            pos: at.pos.clone(),
        }
    }

    /// The entries of a mapping node (none for other nodes).
    pub(crate) fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Removes and returns the entry `key` of a mapping node.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        match &mut self.value {
            Value::Map(entries) => {
                let index = entries.iter().position(|entry| entry.key == key)?;
                Some(entries.remove(index))
            }
            _ => None,
        }
    }

    /// Whether this node is a mapping, or null (which a layer may use for
    /// "nothing to change").
    pub(crate) fn is_map_or_null(&self) -> bool {
        matches!(self.value, Value::Map(_) | Value::Null)
    }

    /// Turns a null node into an empty mapping at the same position.
    pub(crate) fn null_to_empty_map(mut self) -> Node {
        if matches!(self.value, Value::Null) {
            self.value = Value::Map(Vec::new());
        }
        self
    }

    /// Deserializes this node, turning serde's errors into located ones.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(NodeDe {
            node: self,
            path: String::new(),
        })
        .map_err(|err| {
            let (location, key) = match err.located {
                Some((pos, key)) => (pos.location(), key),
                None => (self.pos.location(), String::new()),
            };
            ConfigError::Invalid {
                location,
                key,
                message: err.message,
            }
        })
    }

    /// An error about the value at the dotted `key` path (`a.b[2].c`),
    /// located at that value, or at its deepest ancestor present in the tree
    /// when the value is a default that no file wrote.
    pub(crate) fn error_at(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            location: self.location_of(key),
            key: key.to_string(),
            message,
        }
    }

    /// Where the value at the dotted `key` path starts, or its deepest
    /// ancestor present in the tree.
    pub(crate) fn location_of(&self, key: &str) -> SourceLocation {
        self.find_nearest(key).pos.location()
    }

    fn find_nearest(&self, key: &str) -> &Node {
        let mut node = self;
        for step in key_steps(key) {
            let child = match (&node.value, step) {
                (Value::Map(entries), KeyStep::Key(name)) => entries
                    .iter()
                    .find(|entry| entry.key == name)
                    .map(|entry| &entry.value),
                (Value::Seq(items), KeyStep::Index(index)) => items.get(index),
                _ => None,
            };
            match child {
                Some(child) => node = child,
                None => break,
            }
        }
        node
    }
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }

    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(value) => de::Unexpected::Bool(*value),
            Value::Int(value) => de::Unexpected::Signed(*value),
            Value::UInt(value) => de::Unexpected::Unsigned(*value),
            Value::Float(value) => de::Unexpected::Float(*value),
            Value::Str(value) => de::Unexpected::Str(value),
            Value::Seq(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
        }
    }
}

enum KeyStep<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[2].c` into `a`, `b`, `2`, `c`. Keys never contain `.` or `[`
/// here: the paths come from this module's own field names.
fn key_steps(key: &str) -> impl Iterator<Item = KeyStep<'_>> {
    key.split('.')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let mut pieces = part.split('[');
            let name = pieces
                .next()
                .filter(|name| !name.is_empty())
                .map(KeyStep::Key);
            let indices = pieces.map(|piece| {
                KeyStep::Index(piece.trim_end_matches(']').parse().unwrap_or(usize::MAX))
            });
            name.into_iter().chain(indices)
        })
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------
// Reading the tree out of serde-saphyr

/// The YAML value as serde-saphyr resolves it, each node wrapped in
/// `Spanned` to keep its position.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<serde_saphyr::Spanned<Raw>>),
    Map(Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> de::Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Raw, E> {
        Ok(Raw::Int(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Raw, E> {
        Ok(Raw::Float(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Raw, E> {
        Ok(Raw::Str(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Raw, E> {
        Ok(Raw::Str(value))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries: Vec<(serde_saphyr::Spanned<String>, serde_saphyr::Spanned<Raw>)> =
            Vec::new();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<String>>()? {
            // serde-saphyr rejects duplicate keys itself; this guards the
            // merge, which would otherwise see only the first of them.
            if entries
                .iter()
                .any(|(existing, _)| existing.value == key.value)
            {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {:?}",
                    key.value
                )));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

// ---------------------------------------------------------------------------
// Deserializing the config out of the tree

/// A serde error that learns, on its way up, the position and key path of the
/// innermost node it came from.
#[derive(Debug)]
struct DeError {
    message: String,
    /// Set by `missing_field`: the key path then names the absent key, whose
    /// parent mapping is where the error is reported.
    missing: Option<&'static str>,
    located: Option<(Pos, String)>,
}

impl DeError {
    fn new(message: String) -> Self {
        DeError {
            message,
            missing: None,
            located: None,
        }
    }

    fn locate(mut self, pos: &Pos, path: &str) -> Self {
        if self.located.is_none() {
            let key = match self.missing {
                Some(field) => join_key(path, field),
                None => path.to_string(),
            };
            self.located = Some((pos.clone(), key));
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

fn one_of(names: &'static [&'static str]) -> String {
    match names {
        [] => "no keys are allowed here".to_string(),
        _ => format!("expected one of {}", names.join(", ")),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        DeError::new(message.to_string())
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown variant {variant:?}, {}", one_of(expected)))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown key {field:?}, {}", one_of(expected)))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError {
            missing: Some(field),
            ..DeError::new("missing required key".to_string())
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(format!("duplicate key {field:?}"))
    }
}

/// Deserializes one node; `path` is its dotted key path.
struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl NodeDe<'_> {
    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|err| err.locate(&self.node.pos, &self.path))
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(value) => visitor.visit_bool(*value),
            Value::Int(value) => visitor.visit_i64(*value),
            Value::UInt(value) => visitor.visit_u64(*value),
            Value::Float(value) => visitor.visit_f64(*value),
            Value::Str(value) => visitor.visit_borrowed_str(value),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                pending: None,
                path: &self.path,
            }),
        };
        self.locate(result)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => self.locate(visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Only unit variants are written in configs (`optimizer: adam`);
        // variants with data have their own mapping forms.
        let result = match &self.node.value {
            Value::Str(name) => visitor.visit_enum(name.as_str().into_deserializer()),
            other => Err(de::Error::invalid_type(other.unexpected(), &visitor)),
        };
        self.locate(result)
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct SeqDe<'a, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    path: &'p str,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{index}]", self.path);
        // Locating here too catches errors raised after the element's own
        // deserializer returned (`try_from` conversions).
        let result = seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        });
        result.map(Some).map_err(|err| err.locate(&node.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a, 'p> {
    entries: std::slice::Iter<'a, Entry>,
    pending: Option<&'a Entry>,
    path: &'p str,
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.pending = Some(entry);
        let key: de::value::BorrowedStrDeserializer<'de, DeError> =
            de::value::BorrowedStrDeserializer::new(&entry.key);
        seed.deserialize(key)
            .map(Some)
            .map_err(|err| err.locate(&entry.key_pos, &join_key(self.path, &entry.key)))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| DeError::new("value requested before its key".to_string()))?;
        let path = join_key(self.path, &entry.key);
        // Locating here too catches errors raised after the value's own
        // deserializer returned (`try_from` conversions).
        let result = seed.deserialize(NodeDe {
            node: &entry.value,
            path: path.clone(),
        });
        result.map_err(|err| err.locate(&entry.value.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The original PyTorch project's config, verbatim.
    pub(crate) const ORIGINAL: &str = "\
name: baseline_fc
seed: 42
model: {type: fc, input_size: 784, hidden_sizes: [256, 128], num_classes: 10, dropout: 0.2}
data: {dataset: mnist, data_dir: ./data/mnist, train_split: 0.8, batch_size: 64, num_workers: 2}
training:
  epochs: 20
  learning_rate: 0.001
  optimizer: adam
  weight_decay: 0.0001
  early_stopping: {patience: 5, min_delta: 0.001}
logging: {log_interval: 10, save_checkpoints: true, checkpoint_dir: ./runs}
";

    fn parse(text: &str) -> Result<ExperimentConfig, ConfigError> {
        ExperimentConfig::from_yaml(text, Path::new("configs/x.yaml"))
    }

    /// Asserts that parsing `text` fails with a message holding all of `parts`.
    fn assert_error(text: &str, parts: &[&str]) -> String {
        let message = match parse(text) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(err) => err.to_string(),
        };
        for part in parts {
            assert!(message.contains(part), "{message:?} lacks {part:?}");
        }
        message
    }

    #[test]
    fn the_original_config_parses_to_its_values() {
        let config = parse(ORIGINAL).expect("original config");
        let expected = ExperimentConfig {
            name: "baseline_fc".into(),
            seed: 42,
            model: ModelConfig {
                kind: ModelKind::Fc,
                input_size: 784,
                hidden_sizes: vec![256, 128],
                num_classes: 10,
                dropout: 0.2,
                init: InitKind::Default,
                batch_norm: false,
            },
            data: DataConfig {
                dataset: DatasetKind::Mnist,
                data_dir: Some(PathBuf::from("./data/mnist")),
                train_split: 0.8,
                batch_size: 64,
                num_workers: 2,
                augment: AugmentConfig {
                    enabled: false,
                    max_shift: 2,
                    max_rotation: 10.0,
                },
                subset: None,
            },
            training: TrainingConfig {
                epochs: 20,
                learning_rate: 0.001,
                optimizer: OptimizerKind::Adam,
                momentum: 0.9,
                weight_decay: 0.0001,
                early_stopping: Some(EarlyStoppingConfig {
                    patience: 5,
                    min_delta: 0.001,
                }),
                lr_schedule: LrSchedule::None,
                device: DeviceSpec::Auto,
                threads: None,
            },
            logging: LoggingConfig {
                log_interval: 10,
                save_checkpoints: true,
                checkpoint_dir: PathBuf::from("./runs"),
                tensorboard: true,
            },
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let config = parse("name: tiny\n").expect("minimal config");
        assert_eq!(config.seed, 42);
        assert_eq!(config.model, ModelConfig::default());
        assert_eq!(config.data, DataConfig::default());
        assert_eq!(config.training, TrainingConfig::default());
        assert_eq!(config.logging, LoggingConfig::default());

        let config =
            parse("name: tiny\ntraining: {epochs: 3}\nmodel:\n  dropout: 0.5\n").expect("partial");
        assert_eq!(config.training.epochs, 3);
        assert_eq!(config.training.learning_rate, 0.001);
        assert_eq!(config.model.dropout, 0.5);
        assert_eq!(config.model.hidden_sizes, vec![256, 128]);
    }

    #[test]
    fn extensions_parse() {
        let config = parse(
            "name: ext\n\
             model: {type: cnn, init: kaiming, batch_norm: true, hidden_sizes: [64]}\n\
             data: {dataset: fashion-mnist, augment: {enabled: true, max_shift: 3, max_rotation: 15}, subset: {train: 1000, test: 500}}\n\
             training:\n  optimizer: adamw\n  lr_schedule: {type: step, step_size: 5, gamma: 0.5}\n  device: cuda:1\n  threads: 4\n",
        )
        .expect("extended config");
        assert_eq!(config.model.kind, ModelKind::Cnn);
        assert_eq!(config.model.init, InitKind::Kaiming);
        assert!(config.model.batch_norm);
        assert_eq!(config.data.dataset, DatasetKind::FashionMnist);
        assert_eq!(
            config.data.augment,
            AugmentConfig {
                enabled: true,
                max_shift: 3,
                max_rotation: 15.0
            }
        );
        assert_eq!(
            config.data.subset,
            Some(SubsetConfig {
                train: 1000,
                test: 500
            })
        );
        assert_eq!(config.training.optimizer, OptimizerKind::AdamW);
        assert_eq!(
            config.training.lr_schedule,
            LrSchedule::Step {
                step_size: 5,
                gamma: 0.5
            }
        );
        assert_eq!(config.training.device, DeviceSpec::Cuda(1));
        assert_eq!(config.training.threads, Some(4));

        let cosine = parse("name: c\ntraining: {lr_schedule: {type: cosine}}\n").expect("cosine");
        assert_eq!(
            cosine.training.lr_schedule,
            LrSchedule::Cosine { min_lr: 0.0 }
        );
        let step =
            parse("name: s\ntraining: {lr_schedule: {type: step, step_size: 2}}\n").expect("step");
        assert_eq!(
            step.training.lr_schedule,
            LrSchedule::Step {
                step_size: 2,
                gamma: 0.1
            }
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_path() {
        assert_error(
            "name: a\ntraining:\n  epochs: 2\n  epoch: 3\n",
            &[
                "configs/x.yaml:4:3",
                "training.epoch",
                "unknown key \"epoch\"",
            ],
        );
        assert_error(
            "name: a\nmodel: {type: fc, dropuot: 0.1}\n",
            &["configs/x.yaml:2:", "model.dropuot"],
        );
        assert_error(
            "name: a\nbogus: 1\n",
            &["configs/x.yaml:2:1", "bogus: unknown key"],
        );
    }

    #[test]
    fn wrong_type_names_file_line_and_path() {
        assert_error(
            "name: a\ntraining:\n  epochs: many\n",
            &["configs/x.yaml:3:", "training.epochs", "invalid type"],
        );
        assert_error(
            "name: a\nmodel: {hidden_sizes: [256, x]}\n",
            &["configs/x.yaml:2:", "model.hidden_sizes[1]"],
        );
        assert_error(
            "name: a\ntraining:\n  epochs: 2.5\n",
            &["configs/x.yaml:3:", "training.epochs"],
        );
    }

    #[test]
    fn bad_enum_names_file_line_and_path() {
        let message = assert_error(
            "name: a\nseed: 1\ntraining:\n  epochs: 2\n\n\n  optimizer: adamm\n",
            &["configs/x.yaml:7:", "training.optimizer"],
        );
        assert!(
            message.contains("unknown variant \"adamm\", expected one of adam, adamw, sgd"),
            "{message}"
        );
        assert_error(
            "name: a\ntraining: {device: gpu}\n",
            &["configs/x.yaml:2:", "training.device", "gpu"],
        );
        assert_error(
            "name: a\ntraining:\n  lr_schedule: {type: cosine, gamma: 0.5}\n",
            &[
                "configs/x.yaml:3:",
                "training.lr_schedule",
                "gamma does not apply",
            ],
        );
    }

    #[test]
    fn impossible_values_name_file_line_and_path() {
        assert_error(
            "name: a\nseed: 1\n\nmodel:\n  dropout: 1.5\n",
            &[
                "configs/x.yaml:5:",
                "model.dropout: must be in [0, 1), got 1.5",
            ],
        );
        assert_error(
            "name: a\ntraining: {epochs: 0}\n",
            &["configs/x.yaml:2:", "training.epochs: must be at least 1"],
        );
        assert_error(
            "name: a\nmodel: {hidden_sizes: [8, 0]}\n",
            &["configs/x.yaml:2:", "model.hidden_sizes[1]"],
        );
        assert_error(
            "name: a\nmodel: {hidden_sizes: []}\n",
            &["configs/x.yaml:2:", "model.hidden_sizes"],
        );
        assert_error("name: ../up\n", &["configs/x.yaml:1:", "name: config name"]);
        assert_error(
            "name: a\ndata:\n  train_split: 1\n",
            &["configs/x.yaml:3:", "data.train_split"],
        );
        assert_error(
            "name: a\nmodel: {input_size: 100}\n",
            &["configs/x.yaml:2:", "model.input_size"],
        );
        assert_error(
            "name: a\ntraining:\n  learning_rate: 0.01\n  lr_schedule: {type: cosine, min_lr: 0.5}\n",
            &["configs/x.yaml:4:", "training.lr_schedule.min_lr"],
        );
        assert_error(
            "name: a\ndata: {augment: {max_shift: 9}}\n",
            &["data.augment.max_shift"],
        );
        assert_error("name: a\ntraining: {threads: 0}\n", &["training.threads"]);
        assert_error(
            "name: a\ntraining: {learning_rate: .nan}\n",
            &["training.learning_rate"],
        );
    }

    #[test]
    fn missing_name_and_bad_yaml_are_located() {
        assert_error(
            "seed: 1\n",
            &["configs/x.yaml", "name: missing required key"],
        );
        assert_error("name: a\nmodel: {type: fc\n", &["configs/x.yaml:"]);
        assert_error("- 1\n- 2\n", &["configs/x.yaml:1:", "mapping"]);
        assert_error("name: a\nname: b\n", &["configs/x.yaml:2:", "duplicate"]);
    }

    #[test]
    fn layers_merge_nested_keys() {
        let layers = [
            (PathBuf::from("base.yaml"), ORIGINAL.to_string()),
            (
                PathBuf::from("variant.yaml"),
                "model: {dropout: 0.0}\ntraining:\n  optimizer: sgd\n  early_stopping: ~\n"
                    .to_string(),
            ),
        ];
        let config = ExperimentConfig::from_layers(&layers).expect("merged");
        assert_eq!(config.model.dropout, 0.0);
        // Untouched siblings survive the merge.
        assert_eq!(config.model.hidden_sizes, vec![256, 128]);
        assert_eq!(config.training.optimizer, OptimizerKind::Sgd);
        assert_eq!(config.training.early_stopping, None);
        assert_eq!(config.training.weight_decay, 0.0001);
        assert_eq!(config.data.data_dir, Some(PathBuf::from("./data/mnist")));
        // Sequences replace rather than merge.
        let layers = [
            (PathBuf::from("base.yaml"), ORIGINAL.to_string()),
            (
                PathBuf::from("wide.yaml"),
                "model: {hidden_sizes: [512]}\n".to_string(),
            ),
        ];
        assert_eq!(
            ExperimentConfig::from_layers(&layers)
                .expect("merged")
                .model
                .hidden_sizes,
            vec![512]
        );
    }

    #[test]
    fn layer_errors_name_the_layer_that_wrote_the_key() {
        let overlay = "# lower the dropout\n\nmodel:\n  dropout: 2.0\n";
        let layers = [
            (PathBuf::from("base.yaml"), ORIGINAL.to_string()),
            (PathBuf::from("ablations/bad.yaml"), overlay.to_string()),
        ];
        let message = ExperimentConfig::from_layers(&layers)
            .expect_err("bad overlay")
            .to_string();
        assert!(message.starts_with("ablations/bad.yaml:4:"), "{message}");
        assert!(message.contains("model.dropout"), "{message}");

        let layers = [
            (PathBuf::from("base.yaml"), ORIGINAL.to_string()),
            (
                PathBuf::from("ablations/typo.yaml"),
                "training:\n  optimiser: sgd\n".to_string(),
            ),
        ];
        let message = ExperimentConfig::from_layers(&layers)
            .expect_err("unknown key")
            .to_string();
        assert!(
            message.starts_with("ablations/typo.yaml:2:3: training.optimiser"),
            "{message}"
        );

        // A bad value in the base stays blamed on the base.
        let layers = [
            (
                PathBuf::from("base.yaml"),
                ORIGINAL.replace("epochs: 20", "epochs: 0"),
            ),
            (
                PathBuf::from("ok.yaml"),
                "model: {dropout: 0.1}\n".to_string(),
            ),
        ];
        let message = ExperimentConfig::from_layers(&layers)
            .expect_err("bad base")
            .to_string();
        assert!(message.starts_with("base.yaml:6:"), "{message}");
        assert!(matches!(
            ExperimentConfig::from_layers(&[]),
            Err(ConfigError::NoLayers)
        ));
    }

    #[test]
    fn to_yaml_round_trips() {
        let mut config = parse(ORIGINAL).expect("original");
        let text = config.to_yaml();
        assert_eq!(parse(&text).expect("round trip"), config, "{text}");

        config.model.kind = ModelKind::FcScratch;
        config.data.dataset = DatasetKind::FashionMnist;
        config.data.subset = Some(SubsetConfig {
            train: 100,
            test: 10,
        });
        config.training.optimizer = OptimizerKind::AdamW;
        config.training.lr_schedule = LrSchedule::Cosine { min_lr: 1e-6 };
        config.training.device = DeviceSpec::Cuda(1);
        config.training.threads = Some(2);
        config.data.data_dir = None;
        let text = config.to_yaml();
        assert!(
            text.contains("fc_scratch")
                && text.contains("fashion-mnist")
                && text.contains("cuda:1"),
            "{text}"
        );
        assert_eq!(parse(&text).expect("round trip"), config, "{text}");

        config.training.lr_schedule = LrSchedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        let text = config.to_yaml();
        assert_eq!(parse(&text).expect("round trip"), config, "{text}");
    }

    #[test]
    fn device_spec_parses_and_prints() {
        assert_eq!("auto".parse(), Ok(DeviceSpec::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:+1", "CPU", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} accepted");
        }
        for device in [DeviceSpec::Auto, DeviceSpec::Cpu, DeviceSpec::Cuda(3)] {
            assert_eq!(device.to_string().parse(), Ok(device));
        }
    }
}
