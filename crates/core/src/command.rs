//! Command jobs: configs that run the user's own training program instead of
//! the built-in trainer, and [`JobConfig`], what one job runs (either kind).
//!
//! A config with a top-level `command:` key is a command job. Its schema is
//! the user's: apart from the keys this module reads (`name`, `seed`,
//! `command`, `workdir`, `env`) no key is checked against the built-in
//! schema, and every key reaches the program (through `{config_path}`, the
//! resolved config written as YAML, and through `{key.path}` placeholders).
//! What is checked, when the sweep is loaded and before any job runs, is that
//! every placeholder names a key that exists, so that a typo is an error with
//! its file and line rather than a literal `{training.learning_rte}` handed to
//! the program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, ExperimentConfig};
use crate::yaml::{self as config, Node};

/// The keys of a command job that the runner itself reads.
pub const COMMAND_KEYS: [&str; 3] = ["command", "workdir", "env"];

/// Placeholders the worker fills in (besides `{key.path}` of the config).
pub const RUNTIME_PLACEHOLDERS: [&str; 3] = ["seed", "run_dir", "config_path"];

/// Environment variables the worker sets; a config may not set them itself.
pub const RESERVED_ENV_PREFIX: &str = "SWEEP_";

/// Epochs a command job may report when its config names no
/// `training.epochs` (or `epochs`): generous for any real run, and a bound on
/// what a runaway program (or a hostile worker) can make the coordinator store.
pub const COMMAND_MAX_EPOCHS: u32 = 10_000;

/// A job that runs the user's program.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// The run's name; in a sweep, the variant name.
    pub name: String,
    /// The job's seed (`{seed}`, `$SWEEP_SEED`).
    pub seed: u64,
    /// Program and arguments, with `{...}` placeholders still in them.
    pub command: Vec<String>,
    /// Directory the program starts in; relative paths are relative to the
    /// worker's working directory. None: the job's run directory.
    pub workdir: Option<PathBuf>,
    /// Extra environment variables (values may hold placeholders).
    pub env: BTreeMap<String, String>,
    /// The whole resolved config, the user's own keys included.
    pub values: serde_json::Map<String, Value>,
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum JobConfig {
    /// The built-in trainer with the built-in schema.
    Builtin(ExperimentConfig),
    /// The user's program (`command:` in the config).
    Command(CommandConfig),
}

/// The typed keys of a command config; the rest of the mapping is the user's.
#[derive(Deserialize)]
struct CommandKeys {
    #[serde(default)]
    name: String,
    #[serde(default = "default_seed")]
    seed: u64,
    command: Vec<String>,
    #[serde(default)]
    workdir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

fn default_seed() -> u64 {
    42
}

impl JobConfig {
    /// Parses and validates `text`; `source` names it in error messages.
    pub fn from_yaml(text: &str, source: &Path) -> Result<Self, ConfigError> {
        Self::from_tree(&config::parse_yaml(text, source)?)
    }

    /// A command job when the tree has a `command` key, else the built-in schema.
    pub(crate) fn from_tree(tree: &Node) -> Result<Self, ConfigError> {
        if tree.entries().iter().any(|entry| entry.key == "command") {
            CommandConfig::from_tree(tree).map(JobConfig::Command)
        } else {
            ExperimentConfig::from_tree(tree).map(JobConfig::Builtin)
        }
    }

    /// The resolved config as YAML; reads back through [`JobConfig::from_yaml`].
    pub fn to_yaml(&self) -> String {
        match self {
            JobConfig::Builtin(config) => config.to_yaml(),
            JobConfig::Command(config) => config.to_yaml(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            JobConfig::Builtin(config) => &config.name,
            JobConfig::Command(config) => &config.name,
        }
    }

    pub fn set_name(&mut self, name: &str) {
        match self {
            JobConfig::Builtin(config) => config.name = name.to_string(),
            JobConfig::Command(config) => config.name = name.to_string(),
        }
    }

    pub fn seed(&self) -> u64 {
        match self {
            JobConfig::Builtin(config) => config.seed,
            JobConfig::Command(config) => config.seed,
        }
    }

    pub fn set_seed(&mut self, seed: u64) {
        match self {
            JobConfig::Builtin(config) => config.seed = seed,
            JobConfig::Command(config) => config.seed = seed,
        }
    }

    pub fn is_command(&self) -> bool {
        matches!(self, JobConfig::Command(_))
    }

    /// Epochs the job is expected to run (progress bars, and the bound on
    /// epoch reports): `training.epochs`, or for a command job whose config
    /// does not say, 0 (unknown).
    pub fn epochs(&self) -> u32 {
        match self {
            JobConfig::Builtin(config) => config.training.epochs,
            JobConfig::Command(config) => config.epochs().unwrap_or(0),
        }
    }

    /// The built-in config, for code that only runs the built-in trainer.
    pub fn builtin(&self) -> Option<&ExperimentConfig> {
        match self {
            JobConfig::Builtin(config) => Some(config),
            JobConfig::Command(_) => None,
        }
    }
}

impl CommandConfig {
    pub(crate) fn from_tree(tree: &Node) -> Result<Self, ConfigError> {
        let keys: CommandKeys = tree.deserialize()?;
        let values = match tree.deserialize::<Value>()? {
            Value::Object(map) => map,
            _ => return Err(tree.error_at("", "expected a mapping of keys".to_string())),
        };
        let config = CommandConfig {
            name: keys.name,
            seed: keys.seed,
            command: keys.command,
            workdir: keys.workdir,
            env: keys.env,
            values,
        };
        if !config.name.is_empty() {
            crate::names::validate("config name", &config.name)
                .map_err(|err| tree.error_at("name", err.to_string()))?;
        }
        if config
            .command
            .first()
            .is_none_or(|program| program.is_empty())
        {
            return Err(tree.error_at(
                "command",
                "must name a program, e.g. [python3, train.py, --seed, \"{seed}\"]".to_string(),
            ));
        }
        for (index, arg) in config.command.iter().enumerate() {
            config
                .check_placeholders(arg)
                .map_err(|message| tree.error_at(&format!("command[{index}]"), message))?;
        }
        for (name, value) in &config.env {
            let key = format!("env.{name}");
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(tree.error_at(
                    &key,
                    "an environment variable name is letters, digits and '_', not starting with a digit"
                        .to_string(),
                ));
            }
            if name.starts_with(RESERVED_ENV_PREFIX) {
                return Err(tree.error_at(
                    &key,
                    format!("{RESERVED_ENV_PREFIX}* variables are set by the worker"),
                ));
            }
            config
                .check_placeholders(value)
                .map_err(|message| tree.error_at(&key, message))?;
        }
        if let Some(epochs) = config.lookup("training.epochs").or(config.lookup("epochs"))
            && epochs
                .as_u64()
                .is_none_or(|e| e == 0 || e > u64::from(COMMAND_MAX_EPOCHS))
        {
            let key = if config.lookup("training.epochs").is_some() {
                "training.epochs"
            } else {
                "epochs"
            };
            return Err(tree.error_at(
                key,
                format!("must be an integer in [1, {COMMAND_MAX_EPOCHS}], got {epochs}"),
            ));
        }
        Ok(config)
    }

    /// Every key, with `name` and `seed` as the job has them, as YAML in its
    /// JSON form (JSON is a subset of YAML), so that the program can read
    /// `{config_path}` with a YAML library or with Python's `json` alone.
    pub fn to_yaml(&self) -> String {
        let mut values = self.values.clone();
        values.insert("name".into(), Value::String(self.name.clone()));
        values.insert("seed".into(), Value::from(self.seed));
        let mut text = serde_json::to_string_pretty(&values)
            .unwrap_or_else(|err| format!("# cannot serialize config: {err}"));
        text.push('\n');
        text
    }

    /// The value at a dotted key path (`training.learning_rate`,
    /// `model.hidden_sizes[0]`).
    pub fn lookup(&self, key: &str) -> Option<&Value> {
        lookup(&self.values, key)
    }

    fn epochs(&self) -> Option<u32> {
        self.lookup("training.epochs")
            .or(self.lookup("epochs"))
            .and_then(Value::as_u64)
            .and_then(|e| u32::try_from(e).ok())
    }

    /// Checks that every placeholder of `text` can be filled.
    fn check_placeholders(&self, text: &str) -> Result<(), String> {
        for piece in parse_template(text)? {
            if let Piece::Key(key) = piece
                && !RUNTIME_PLACEHOLDERS.contains(&key)
                && self.lookup(key).is_none()
            {
                return Err(format!(
                    "placeholder {{{key}}} names no key of the config (known: {{seed}}, {{run_dir}}, {{config_path}} and any key path such as {{training.learning_rate}})"
                ));
            }
        }
        Ok(())
    }

    /// `text` with its placeholders filled: `{seed}`, `{run_dir}`,
    /// `{config_path}` from `runtime`, any other from the config. `{{` and
    /// `}}` are literal braces.
    pub fn fill(&self, text: &str, runtime: &Runtime<'_>) -> Result<String, String> {
        let mut out = String::new();
        for piece in parse_template(text)? {
            match piece {
                Piece::Text(text) => out.push_str(&text),
                Piece::Key("seed") => out.push_str(&self.seed.to_string()),
                Piece::Key("run_dir") => out.push_str(&runtime.run_dir.to_string_lossy()),
                Piece::Key("config_path") => out.push_str(&runtime.config_path.to_string_lossy()),
                Piece::Key(key) => match self.lookup(key) {
                    Some(value) => out.push_str(&display_value(value)),
                    None => {
                        return Err(format!("placeholder {{{key}}} names no key of the config"));
                    }
                },
            }
        }
        Ok(out)
    }
}

/// What only the worker knows when it starts a command job.
pub struct Runtime<'a> {
    pub run_dir: &'a Path,
    pub config_path: &'a Path,
}

/// How a config value is written into a command line: strings as they are,
/// numbers and booleans as YAML/JSON writes them, lists and mappings as JSON.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The value at a dotted key path in a mapping.
pub fn lookup<'a>(values: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut steps = key.split('.');
    let first = steps.next()?;
    let (name, indices) = split_indices(first)?;
    let mut value = values.get(name)?;
    for index in indices {
        value = value.get(index)?;
    }
    for step in steps {
        let (name, indices) = split_indices(step)?;
        value = value.get(name)?;
        for index in indices {
            value = value.get(index)?;
        }
    }
    Some(value)
}

/// `name[1][2]` → (`name`, [1, 2]).
fn split_indices(step: &str) -> Option<(&str, Vec<usize>)> {
    let mut parts = step.split('[');
    let name = parts.next().filter(|name| !name.is_empty())?;
    let indices = parts
        .map(|part| part.strip_suffix(']')?.parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some((name, indices))
}

enum Piece<'a> {
    Text(String),
    Key(&'a str),
}

/// Splits a template into literal text and `{key}` placeholders.
fn parse_template(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(['{', '}']) {
        literal.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            literal.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {text:?} (write '}}}}' for a literal brace)"
            ));
        } else {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "unclosed '{{' in {text:?} (write '{{{{' for a literal brace)"
                ));
            };
            let key = &tail[1..end];
            if key.is_empty() || key.contains(['{', ' ']) {
                return Err(format!("bad placeholder {{{key}}} in {text:?}"));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Key(key));
            rest = &tail[end + 1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "name: torch\nseed: 7\ncommand: [python3, train.py, --lr, \"{training.learning_rate}\", --seed, \"{seed}\", --config, \"{config_path}\", --sizes, \"{model.hidden_sizes}\", --first, \"{model.hidden_sizes[0]}\", \"{{literal}}\"]\nenv: {OMP_NUM_THREADS: \"1\", RUN: \"{run_dir}\"}\ntraining: {learning_rate: 0.001, epochs: 3, my_own_key: yes}\nmodel: {hidden_sizes: [256, 128]}\n";

    fn command(text: &str) -> CommandConfig {
        match JobConfig::from_yaml(text, Path::new("c.yaml")).expect("config") {
            JobConfig::Command(config) => config,
            JobConfig::Builtin(config) => panic!("not a command job: {config:?}"),
        }
    }

    fn error(text: &str) -> String {
        match JobConfig::from_yaml(text, Path::new("c.yaml")) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let config = command(CONFIG);
        assert_eq!(config.epochs(), Some(3));
        let runtime = Runtime {
            run_dir: Path::new("/runs/s/v/seed-7"),
            config_path: Path::new("/runs/s/v/seed-7/config.yaml"),
        };
        let argv: Vec<String> = config
            .command
            .iter()
            .map(|arg| config.fill(arg, &runtime).expect("fill"))
            .collect();
        assert_eq!(
            argv,
            [
                "python3",
                "train.py",
                "--lr",
                "0.001",
                "--seed",
                "7",
                "--config",
                "/runs/s/v/seed-7/config.yaml",
                "--sizes",
                "[256,128]",
                "--first",
                "256",
                "{literal}"
            ]
        );
        assert_eq!(
            config.fill(&config.env["RUN"], &runtime).expect("fill"),
            "/runs/s/v/seed-7"
        );
    }

    #[test]
    fn yaml_round_trip_keeps_the_users_keys() {
        let config = JobConfig::from_yaml(CONFIG, Path::new("c.yaml")).expect("config");
        let back = JobConfig::from_yaml(&config.to_yaml(), Path::new("back")).expect("back");
        assert_eq!(back, config);
        assert!(config.to_yaml().contains("\"my_own_key\": true"));
        assert_eq!(config.epochs(), 3);
        assert!(config.is_command());
    }

    #[test]
    fn unknown_placeholders_are_located_errors() {
        let message = error(
            "command: [python3, t.py, \"{training.learning_rte}\"]\ntraining: {learning_rate: 0.1}\n",
        );
        assert!(
            message.starts_with("c.yaml:1:")
                && message.contains("command[2]")
                && message.contains("{training.learning_rte}"),
            "{message}"
        );
        let message = error("command: [python3, \"{seed\"]\n");
        assert!(message.contains("unclosed"), "{message}");
        let message = error("command: []\n");
        assert!(
            message.contains("command: must name a program"),
            "{message}"
        );
        let message = error("command: [x]\nenv: {SWEEP_SEED: \"1\"}\n");
        assert!(message.contains("env.SWEEP_SEED"), "{message}");
        let message = error("command: [x]\ntraining: {epochs: 0}\n");
        assert!(message.contains("training.epochs"), "{message}");
    }

    #[test]
    fn lookup_follows_paths() {
        let config = command(CONFIG);
        assert_eq!(
            config.lookup("model.hidden_sizes[1]"),
            Some(&Value::from(128))
        );
        assert_eq!(config.lookup("model.hidden_sizes[2]"), None);
        assert_eq!(config.lookup("model.nothing"), None);
        assert_eq!(config.lookup("training"), config.values.get("training"));
    }
}
