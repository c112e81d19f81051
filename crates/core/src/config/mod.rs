//! The experiment config: what one training run is, as a user writes it in YAML.
//!
//! The schema is the one of the original PyTorch project (kept compatible, so
//! old configs run unchanged) plus the extensions the ablations need. Every
//! process shares these types: `sweepctl train` reads them, the coordinator
//! expands sweeps into them, workers receive them resolved.
//!
//! - `schema.rs`: the types, their defaults and YAML forms;
//! - `validate.rs`: the values the types allow but a run cannot take;
//! - `memory.rs`: the memory a model needs to train, estimated from the
//!   schema so that one that cannot fit is refused at load time;
//! - `crate::yaml`: the located YAML tree every loader goes through, so that
//!   errors name the file, line and key path, even across merged layers.

mod memory;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use memory::{MAX_MODEL_BYTES, ModelMemory, format_bytes};
pub use schema::*;
pub use validate::ValidationError;

pub use crate::yaml::{ConfigError, SourceLocation};
use crate::yaml::{Node, parse_yaml, read_file};

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
        // Issue 8: this config used to panic inside tch's VarStore.
        assert_error(
            "name: a\nmodel:\n  hidden_sizes: [100000000, 100000000]\n",
            &[
                "configs/x.yaml:3:",
                "model.hidden_sizes: the model needs 1.60e17 bytes",
                "1.00e16 parameters × 4 bytes × 4",
                "over the limit of 128.0 GiB",
            ],
        );
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
