//! Sweep specs: a base config, variants of it and seeds, expanded into jobs.
//!
//! An ablation study is "the same experiment, changing one thing at a time,
//! over several seeds". A sweep spec writes that down once; expansion turns it
//! into one job per (variant, seed) with an id that depends only on what the
//! job runs, so that resubmitting the same spec finds the same jobs (and their
//! finished results) instead of starting over.
//!
//! Two forms, same keys:
//! - a directory holding `sweep.yaml` plus one `*.yaml` per variant (named by
//!   its file stem, a partial config merged over the base);
//! - a single YAML file whose `variants` mapping holds the partial configs.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, ExperimentConfig, ModelKind, SourceLocation};
use crate::names::{self, NameError};
use crate::yaml::{self, Node};

/// File name of the spec in the directory form.
pub const SWEEP_FILE: &str = "sweep.yaml";

/// A loaded sweep: every variant's config merged and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// Names the sweep and its directory under the state directory.
    pub name: String,
    /// Free text for humans (what the ablation asks).
    pub description: Option<String>,
    /// Every variant runs once per seed; several seeds make the comparison
    /// statistically meaningful.
    pub seeds: Vec<u64>,
    /// The metric results are reported and compared on (e.g. `test_acc`).
    pub metric: String,
    /// Name of the variant the others are compared against.
    pub baseline: String,
    /// Sorted by name, the baseline first.
    pub variants: Vec<Variant>,
}

/// One variant: the base config with a partial config merged over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    /// Merged and validated; its `name` is the variant's name.
    pub config: ExperimentConfig,
}

/// One run of a sweep: a variant with one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// `{variant}-seed-{seed}-{hash8}`: stable across expansions of the same
    /// spec, and different as soon as anything the job runs changes.
    pub id: String,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
    /// The config to run: `seed` is the job's seed, `name` the variant's name.
    pub config: ExperimentConfig,
}

impl JobSpec {
    /// Rough training cost, in multiply-adds: epochs × training samples ×
    /// the model's multiply-adds per sample (forward). Only the ratios matter:
    /// the coordinator hands out the costliest jobs first, so that a long job
    /// does not start last and leave the other workers idle (the classic
    /// longest-processing-time-first rule for makespan).
    pub fn estimated_cost(&self) -> f64 {
        let config = &self.config;
        let pool = config
            .data
            .subset
            .as_ref()
            .map_or(60_000, |s| s.train.min(60_000));
        let train_samples = pool as f64 * config.data.train_split;
        let per_sample = match config.model.kind {
            ModelKind::Cnn => {
                // conv1 (1→32, 3×3 on 28×28), conv2 (32→64, 3×3 on 14×14), fc1 (3136→128), fc2.
                (28 * 28 * 32 * 9
                    + 14 * 14 * 64 * 32 * 9
                    + 3136 * 128
                    + 128 * config.model.num_classes) as f64
            }
            ModelKind::Fc | ModelKind::FcScratch => {
                let mut dims = vec![config.model.input_size];
                dims.extend(&config.model.hidden_sizes);
                dims.push(config.model.num_classes);
                dims.windows(2).map(|w| (w[0] * w[1]) as f64).sum()
            }
        };
        f64::from(config.training.epochs) * train_samples * per_sample
    }
}

/// Why a sweep could not be loaded. Messages start with the file (and line
/// where known) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SweepError {
    /// A config (the sweep file itself, the base or a variant) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The directory form without its spec file.
    #[error("{}: not a sweep: no {SWEEP_FILE} in this directory", dir.display())]
    MissingSweepFile { dir: PathBuf },
    /// `base` names a file that does not exist.
    #[error("{location}: base: config file {} not found", base.display())]
    MissingBase {
        location: SourceLocation,
        base: PathBuf,
    },
    /// Two variants with one name (a variant file and a `variants` entry).
    #[error("{location}: variant {name:?} is defined twice (first at {first})")]
    DuplicateVariant {
        name: String,
        location: SourceLocation,
        first: Box<SourceLocation>,
    },
    /// A sweep, variant or baseline name that is not a safe path component.
    #[error("{location}: {source}")]
    BadName {
        location: SourceLocation,
        #[source]
        source: NameError,
    },
    #[error("{location}: seeds: must list at least one seed")]
    EmptySeeds { location: SourceLocation },
    #[error("{location}: seeds: seed {seed} is listed twice")]
    DuplicateSeed { location: SourceLocation, seed: u64 },
}

/// The keys of a sweep file. `variants` is read from the YAML tree directly
/// (its values must keep their positions to be merged); it is declared here
/// so that a misspelt key's error lists it among the expected ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    base: PathBuf,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
    #[serde(default = "default_metric")]
    metric: String,
    #[serde(default = "default_baseline")]
    baseline: String,
    #[serde(default, rename = "variants")]
    _variants: Option<serde::de::IgnoredAny>,
}

fn default_seeds() -> Vec<u64> {
    vec![42, 123, 456]
}

fn default_metric() -> String {
    "test_acc".to_string()
}

fn default_baseline() -> String {
    "baseline".to_string()
}

/// A variant's partial config before merging.
struct Overlay {
    name: String,
    /// Where the variant is named: its file, or its key under `variants`.
    location: SourceLocation,
    tree: Node,
}

impl SweepSpec {
    /// Loads a sweep from a directory (holding `sweep.yaml`) or a single file,
    /// merging and validating every variant.
    pub fn load(path: &Path) -> Result<SweepSpec, SweepError> {
        let is_dir = path.is_dir();
        let sweep_path = if is_dir {
            path.join(SWEEP_FILE)
        } else {
            path.to_path_buf()
        };
        if is_dir && !sweep_path.is_file() {
            return Err(SweepError::MissingSweepFile {
                dir: path.to_path_buf(),
            });
        }
        let mut tree = yaml::parse_yaml(&yaml::read_file(&sweep_path)?, &sweep_path)?;
        let file: SweepFile = tree.deserialize()?;

        names::validate("sweep name", &file.name).map_err(|source| SweepError::BadName {
            location: tree.location_of("name"),
            source,
        })?;
        names::validate("baseline variant name", &file.baseline).map_err(|source| {
            SweepError::BadName {
                location: tree.location_of("baseline"),
                source,
            }
        })?;
        if file.metric.trim().is_empty() {
            return Err(tree
                .error_at("metric", "must not be empty".to_string())
                .into());
        }
        check_seeds(&tree, &file.seeds)?;

        // `base` is relative to the file that names it, not to the working
        // directory, so that a sweep can be run from anywhere.
        let sweep_dir = sweep_path.parent().unwrap_or(Path::new(""));
        let base_path = sweep_dir.join(&file.base);
        let base_text = match std::fs::read_to_string(&base_path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(SweepError::MissingBase {
                    location: tree.location_of("base"),
                    base: base_path,
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: base_path,
                    source,
                }
                .into());
            }
        };
        let base = yaml::parse_yaml(&base_text, &base_path)?;

        let mut overlays = inline_overlays(&mut tree)?;
        if is_dir {
            for overlay in directory_overlays(path, &base_path)? {
                if let Some(first) = overlays
                    .iter()
                    .find(|existing| existing.name == overlay.name)
                {
                    return Err(SweepError::DuplicateVariant {
                        name: overlay.name,
                        location: overlay.location,
                        first: Box::new(first.location.clone()),
                    });
                }
                overlays.push(overlay);
            }
        }

        let mut variants = Vec::with_capacity(overlays.len() + 1);
        for overlay in overlays {
            reject_sweep_owned_keys(&overlay)?;
            let mut merged = base.clone();
            merged.merge(overlay.tree);
            let mut config = ExperimentConfig::from_tree(&merged)?;
            config.name = overlay.name.clone();
            variants.push(Variant {
                name: overlay.name,
                config,
            });
        }
        if !variants.iter().any(|variant| variant.name == file.baseline) {
            let mut config = ExperimentConfig::from_tree(&base)?;
            config.name = file.baseline.clone();
            variants.push(Variant {
                name: file.baseline.clone(),
                config,
            });
        }
        // Baseline first: tables and comparisons read from the reference down.
        variants.sort_by(|a, b| {
            (a.name != file.baseline, &a.name).cmp(&(b.name != file.baseline, &b.name))
        });

        Ok(SweepSpec {
            name: file.name,
            description: file.description,
            seeds: file.seeds,
            metric: file.metric,
            baseline: file.baseline,
            variants,
        })
    }

    /// One job per (variant, seed): variants in their order (baseline first),
    /// seeds in the order the spec lists them.
    pub fn expand(&self) -> Vec<JobSpec> {
        self.variants
            .iter()
            .flat_map(|variant| {
                self.seeds.iter().map(move |&seed| {
                    let mut config = variant.config.clone();
                    config.seed = seed;
                    config.name = variant.name.clone();
                    JobSpec {
                        id: job_id(&self.name, &variant.name, seed, &config),
                        sweep: self.name.clone(),
                        variant: variant.name.clone(),
                        seed,
                        config,
                    }
                })
            })
            .collect()
    }
}

/// Directory of one run: `state_dir/<sweep>/<variant>/seed-<seed>`. The names
/// must have passed [`crate::names::validate`] (every loaded spec's have).
pub fn job_dir(state_dir: &Path, sweep: &str, variant: &str, seed: u64) -> PathBuf {
    state_dir
        .join(sweep)
        .join(variant)
        .join(format!("seed-{seed}"))
}

/// The readable part says which run it is; the hash changes whenever the
/// resolved config (or the sweep) does, so that an edited variant gets new
/// jobs rather than reusing results computed for the old config.
fn job_id(sweep: &str, variant: &str, seed: u64, config: &ExperimentConfig) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config.to_yaml().as_bytes());
    // A separator keeps (yaml, sweep) pairs from colliding by concatenation.
    hasher.update([0u8]);
    hasher.update(sweep.as_bytes());
    let hash = hex::encode(hasher.finalize());
    format!("{variant}-seed-{seed}-{}", &hash[..8])
}

fn check_seeds(tree: &Node, seeds: &[u64]) -> Result<(), SweepError> {
    if seeds.is_empty() {
        return Err(SweepError::EmptySeeds {
            location: tree.location_of("seeds"),
        });
    }
    for (index, seed) in seeds.iter().enumerate() {
        if seeds[..index].contains(seed) {
            return Err(SweepError::DuplicateSeed {
                location: tree.location_of(&format!("seeds[{index}]")),
                seed: *seed,
            });
        }
    }
    Ok(())
}

/// The `variants` mapping of a sweep file (either form may have one).
fn inline_overlays(tree: &mut Node) -> Result<Vec<Overlay>, SweepError> {
    let Some(entry) = tree.remove("variants") else {
        return Ok(Vec::new());
    };
    if !entry.value.is_map_or_null() {
        let message = "must be a mapping of variant names to partial configs".to_string();
        return Err(ConfigError::Invalid {
            location: entry.value.location(),
            key: "variants".into(),
            message,
        }
        .into());
    }
    let mut overlays = Vec::new();
    for variant in entry.value.entries() {
        let location = variant.key_location();
        names::validate("variant name", &variant.key).map_err(|source| SweepError::BadName {
            location: location.clone(),
            source,
        })?;
        if !variant.value.is_map_or_null() {
            let message = "must be a mapping (a partial config)".to_string();
            let key = format!("variants.{}", variant.key);
            return Err(ConfigError::Invalid {
                location: variant.value.location(),
                key,
                message,
            }
            .into());
        }
        overlays.push(Overlay {
            name: variant.key.clone(),
            location,
            tree: variant.value.clone().null_to_empty_map(),
        });
    }
    Ok(overlays)
}

/// Every `*.yaml` of a sweep directory except `sweep.yaml` and the base
/// config itself (which may live next to them), in file-name order.
fn directory_overlays(dir: &Path, base_path: &Path) -> Result<Vec<Overlay>, SweepError> {
    let read_error = |source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_yaml = path.extension().is_some_and(|ext| ext == "yaml");
        if is_yaml && path.is_file() && path.file_name().is_some_and(|name| name != SWEEP_FILE) {
            paths.push(path);
        }
    }
    paths.sort();

    let base_canonical = base_path.canonicalize().ok();
    let mut overlays = Vec::with_capacity(paths.len());
    for path in paths {
        if base_canonical.is_some() && path.canonicalize().ok() == base_canonical {
            continue;
        }
        let location = SourceLocation {
            file: path.clone(),
            line: None,
            column: None,
        };
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        names::validate("variant name", &name).map_err(|source| SweepError::BadName {
            location: location.clone(),
            source,
        })?;
        let tree = yaml::parse_yaml(&yaml::read_file(&path)?, &path)?;
        overlays.push(Overlay {
            name,
            location,
            tree,
        });
    }
    Ok(overlays)
}

/// `seed` and `name` come from the sweep (its seeds, the variant's name); a
/// variant setting them would be silently overridden, so it is an error. A
/// `name` equal to the variant's own name is harmless and allowed.
fn reject_sweep_owned_keys(overlay: &Overlay) -> Result<(), ConfigError> {
    for entry in overlay.tree.entries() {
        let message = match entry.key.as_str() {
            "seed" => "is set by the sweep's seeds; remove it from the variant".to_string(),
            "name"
                if entry.value.deserialize::<String>().ok().as_deref()
                    != Some(overlay.name.as_str()) =>
            {
                format!(
                    "a variant is named by its file or key ({:?}); remove it from the variant",
                    overlay.name
                )
            }
            _ => continue,
        };
        return Err(ConfigError::Invalid {
            location: entry.key_location(),
            key: entry.key.clone(),
            message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::config::tests::ORIGINAL as BASE;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create dir");
        }
        fs::write(&path, text).expect("write file");
        path
    }

    /// A directory sweep: base one level up, two variant files.
    fn dir_sweep() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "baseline.yaml", BASE);
        let sweep = root.path().join("ablations");
        write(
            &sweep,
            "sweep.yaml",
            "name: ablations\nbase: ../baseline.yaml\nseeds: [1, 2]\n",
        );
        write(&sweep, "no_dropout.yaml", "model:\n  dropout: 0.0\n");
        write(
            &sweep,
            "sgd.yaml",
            "training: {optimizer: sgd, learning_rate: 0.01}\n",
        );
        write(&sweep, "README.md", "not a variant\n");
        (root, sweep)
    }

    fn load_err(path: &Path) -> String {
        match SweepSpec::load(path) {
            Ok(spec) => panic!("accepted: {spec:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn directory_sweep_expands_to_variants_times_seeds() {
        let (_root, dir) = dir_sweep();
        let spec = SweepSpec::load(&dir).expect("sweep");
        assert_eq!(spec.name, "ablations");
        assert_eq!(spec.metric, "test_acc");
        assert_eq!(spec.baseline, "baseline");
        let names: Vec<_> = spec
            .variants
            .iter()
            .map(|variant| variant.name.as_str())
            .collect();
        assert_eq!(names, ["baseline", "no_dropout", "sgd"]);
        assert_eq!(spec.variants[1].config.model.dropout, 0.0);
        assert_eq!(spec.variants[1].config.model.hidden_sizes, vec![256, 128]);
        assert_eq!(spec.variants[2].config.training.learning_rate, 0.01);
        assert_eq!(spec.variants[2].config.training.weight_decay, 0.0001);

        let jobs = spec.expand();
        let order: Vec<_> = jobs
            .iter()
            .map(|job| (job.variant.as_str(), job.seed))
            .collect();
        assert_eq!(
            order,
            [
                ("baseline", 1),
                ("baseline", 2),
                ("no_dropout", 1),
                ("no_dropout", 2),
                ("sgd", 1),
                ("sgd", 2)
            ]
        );
        for job in &jobs {
            assert_eq!(job.sweep, "ablations");
            assert_eq!(job.config.seed, job.seed);
            assert_eq!(job.config.name, job.variant);
            let prefix = format!("{}-seed-{}-", job.variant, job.seed);
            let hash = job.id.strip_prefix(&prefix).expect("id prefix");
            assert!(
                hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                job.id
            );
        }
        let mut ids: Vec<_> = jobs.iter().map(|job| job.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), jobs.len(), "ids are not unique");
    }

    #[test]
    fn job_ids_are_stable_and_change_only_with_the_job() {
        let (_root, dir) = dir_sweep();
        let first = SweepSpec::load(&dir).expect("sweep").expand();
        let again = SweepSpec::load(&dir).expect("sweep").expand();
        assert_eq!(first, again);

        write(
            &dir,
            "sgd.yaml",
            "training: {optimizer: sgd, learning_rate: 0.02}\n",
        );
        let changed = SweepSpec::load(&dir).expect("sweep").expand();
        for (before, after) in first.iter().zip(&changed) {
            assert_eq!(before.variant, after.variant);
            if before.variant == "sgd" {
                assert_ne!(before.id, after.id);
            } else {
                assert_eq!(before.id, after.id);
            }
        }
    }

    #[test]
    fn single_file_sweep() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "configs/baseline.yaml", BASE);
        let path = write(
            root.path(),
            "configs/lr.yaml",
            "name: lr\ndescription: learning-rate ablation\nbase: baseline.yaml\nmetric: best_val_acc\n\
             variants:\n  lr_high: {training: {learning_rate: 0.01}}\n  lr_low:\n    training:\n      learning_rate: 0.0001\n",
        );
        let spec = SweepSpec::load(&path).expect("sweep");
        assert_eq!(spec.description.as_deref(), Some("learning-rate ablation"));
        assert_eq!(spec.seeds, vec![42, 123, 456]);
        assert_eq!(spec.metric, "best_val_acc");
        let names: Vec<_> = spec
            .variants
            .iter()
            .map(|variant| variant.name.as_str())
            .collect();
        assert_eq!(names, ["baseline", "lr_high", "lr_low"]);
        assert_eq!(spec.variants[1].config.training.learning_rate, 0.01);
        assert_eq!(spec.variants[2].config.training.learning_rate, 0.0001);
        assert_eq!(spec.expand().len(), 9);
    }

    #[test]
    fn baseline_is_added_unless_a_variant_has_its_name() {
        let (_root, dir) = dir_sweep();
        let spec = SweepSpec::load(&dir).expect("sweep");
        let baseline = &spec.variants[0];
        assert_eq!(baseline.name, "baseline");
        let mut expected = ExperimentConfig::from_yaml(BASE, Path::new("base")).expect("base");
        expected.name = "baseline".into();
        assert_eq!(baseline.config, expected);

        // A variant named like the baseline replaces the base as reference.
        write(&dir, "reference.yaml", "model: {dropout: 0.3}\n");
        write(
            &dir,
            "sweep.yaml",
            "name: ablations\nbase: ../baseline.yaml\nbaseline: reference\n",
        );
        let spec = SweepSpec::load(&dir).expect("sweep");
        let names: Vec<_> = spec
            .variants
            .iter()
            .map(|variant| variant.name.as_str())
            .collect();
        assert_eq!(names, ["reference", "no_dropout", "sgd"]);
        assert_eq!(spec.variants[0].config.model.dropout, 0.3);
    }

    #[test]
    fn bad_overlay_names_the_variant_file_and_line() {
        let (_root, dir) = dir_sweep();
        write(
            &dir,
            "sgd.yaml",
            "# plain SGD\ntraining:\n  optimizer: sgd\n  momentum: 1.5\n",
        );
        let message = load_err(&dir);
        assert!(message.contains("sgd.yaml:4:"), "{message}");
        assert!(message.contains("training.momentum"), "{message}");

        write(&dir, "sgd.yaml", "training:\n  optimiser: sgd\n");
        let message = load_err(&dir);
        assert!(
            message.contains("sgd.yaml:2:3: training.optimiser: unknown key"),
            "{message}"
        );

        write(&dir, "sgd.yaml", "seed: 7\n");
        let message = load_err(&dir);
        assert!(message.contains("sgd.yaml:1:1: seed:"), "{message}");
    }

    #[test]
    fn sweep_file_errors_are_located() {
        let (_root, dir) = dir_sweep();
        let sweep = |text: &str| {
            write(&dir, "sweep.yaml", text);
            load_err(&dir)
        };
        let message = sweep("name: a\nbase: ../baseline.yaml\nseeds: []\n");
        assert!(
            message.contains("sweep.yaml:3:") && message.contains("seeds"),
            "{message}"
        );
        let message = sweep("name: a\nbase: ../baseline.yaml\nseeds: [1, 2, 1]\n");
        assert!(
            message.contains("sweep.yaml:3:") && message.contains("seed 1 is listed twice"),
            "{message}"
        );
        let message = sweep("name: a\nbase: ../missing.yaml\n");
        assert!(
            message.contains("sweep.yaml:2:") && message.contains("missing.yaml"),
            "{message}"
        );
        let message = sweep("name: a/b\nbase: ../baseline.yaml\n");
        assert!(
            message.contains("sweep.yaml:1:") && message.contains("sweep name"),
            "{message}"
        );
        let message = sweep("name: a\nbase: ../baseline.yaml\nseed: [1]\n");
        assert!(
            message.contains("sweep.yaml:3:1: seed: unknown key"),
            "{message}"
        );
        let message =
            sweep("name: a\nbase: ../baseline.yaml\nvariants:\n  sgd: {model: {dropout: 0.1}}\n");
        assert!(
            message.contains("sgd.yaml")
                && message.contains("sweep.yaml:4:")
                && message.contains("twice"),
            "{message}"
        );
        let message = sweep("name: a\nbase: ../baseline.yaml\nvariants:\n  bad/name: {}\n");
        assert!(
            message.contains("sweep.yaml:4:") && message.contains("variant name"),
            "{message}"
        );

        write(&dir, "sweep.yaml", "name: a\nbase: ../baseline.yaml\n");
        write(&dir, "bad name.yaml", "{}\n");
        let message = load_err(&dir);
        assert!(
            message.contains("bad name.yaml") && message.contains("variant name"),
            "{message}"
        );

        let empty = tempfile::tempdir().expect("tempdir");
        assert!(load_err(empty.path()).contains("no sweep.yaml"));
    }

    #[test]
    fn base_next_to_the_variants_is_not_a_variant() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "base.yaml", BASE);
        write(
            root.path(),
            "sweep.yaml",
            "name: s\nbase: base.yaml\nseeds: [3]\n",
        );
        write(root.path(), "wide.yaml", "model: {hidden_sizes: [512]}\n");
        let spec = SweepSpec::load(root.path()).expect("sweep");
        let names: Vec<_> = spec
            .variants
            .iter()
            .map(|variant| variant.name.as_str())
            .collect();
        assert_eq!(names, ["baseline", "wide"]);
        assert_eq!(spec.variants[1].config.model.hidden_sizes, vec![512]);
    }

    #[test]
    fn job_dir_follows_the_run_layout() {
        assert_eq!(
            job_dir(Path::new("runs"), "ablations", "no_dropout", 42),
            Path::new("runs/ablations/no_dropout/seed-42")
        );
    }
}
