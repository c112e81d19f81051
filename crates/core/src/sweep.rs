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

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::{JobConfig, display_value};
use crate::config::{ConfigError, ModelKind, SourceLocation};
use crate::names::{self, NameError};
use crate::space::{Point, Space};
use crate::yaml::{self, Entry, Node};

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
    /// Name of the variant the others are compared against; empty for none
    /// (a grid or random sweep without `baseline`: no Δ and p columns).
    pub baseline: String,
    /// Sorted by name, the baseline first.
    pub variants: Vec<Variant>,
    /// Adaptive seeds (`seeds: {initial, max, target_ci_halfwidth}`); `seeds`
    /// above then holds the initial ones.
    pub seed_policy: Option<SeedPolicy>,
    /// The key paths a `grid:` or `random:` sweeps, in the spec's order.
    pub swept_keys: Vec<String>,
}

/// Seeds until the answer is clear: after its initial seeds, a variant gets
/// more (see [`extra_seed`]) while the 95% confidence interval of its mean
/// metric is wider than the target, up to `max` seeds in all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPolicy {
    /// Most seeds (jobs) one variant may run, the initial ones included.
    pub max: usize,
    /// Target half-width of the 95% CI of the variant's mean, in points
    /// (percentage points of an accuracy).
    pub target_ci_halfwidth: f64,
}

/// Most seeds per variant an adaptive policy may ask for: a bound on how many
/// jobs one spec can make the coordinator add on its own.
pub const MAX_ADAPTIVE_SEEDS: usize = 1000;

impl SeedPolicy {
    /// How many seeds to add to a variant whose `values` (fractions, one per
    /// finished seed) came from `jobs` jobs: 0 when its CI is narrow enough,
    /// `max` is reached, or there are fewer than two values to judge by.
    /// Otherwise as many as the current spread says are needed to reach the
    /// target (at least one), so that workers run them in parallel rather than
    /// one decision at a time.
    pub fn seeds_to_add(&self, values: &[f64], jobs: usize) -> usize {
        if jobs >= self.max || values.len() < 2 {
            return 0;
        }
        let Some(halfwidth) = crate::results::ci95_halfwidth(values) else {
            return 0;
        };
        let target = self.target_ci_halfwidth / 100.0;
        if halfwidth <= target {
            return 0;
        }
        // The half-width shrinks as 1/sqrt(n) (the t quantile a little faster).
        let n = values.len() as f64;
        let needed = (n * (halfwidth / target).powi(2)).ceil();
        let more = if needed.is_finite() {
            (needed - n).max(1.0).min(self.max as f64) as usize
        } else {
            self.max
        };
        more.min(self.max - jobs)
    }
}

/// The `k`-th (0-based) seed added beyond the initial ones. The same for
/// every variant of a sweep, so variants that ran equally many seeds ran the
/// same seeds; never one of `initial` nor an earlier extra seed.
pub fn extra_seed(sweep: &str, initial: &[u64], k: usize) -> u64 {
    let mut taken: Vec<u64> = initial.to_vec();
    let mut index = 0u64;
    loop {
        let mut hasher = Sha256::new();
        hasher.update(b"sweeprun extra seed\0");
        hasher.update(sweep.as_bytes());
        hasher.update([0u8]);
        hasher.update(index.to_le_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&digest[..4]);
        // 32 bits: a seed every framework accepts (NumPy's legacy seeding too).
        let seed = u64::from(u32::from_le_bytes(bytes));
        index += 1;
        if taken.contains(&seed) {
            continue;
        }
        if taken.len() == initial.len() + k {
            return seed;
        }
        taken.push(seed);
    }
}

/// One variant: the base config with a partial config merged over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    /// Merged and validated; its `name` is the variant's name.
    pub config: JobConfig,
    /// Its value of each of [`SweepSpec::swept_keys`] (a grid point or a
    /// random draw, as the config writes it); empty for a named variant.
    pub swept: Vec<String>,
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
    pub config: JobConfig,
    /// `config` rendered once, as the id's hash, the store and the run's
    /// config.yaml all take it (rendering was an eighth of a sweep's
    /// submission when each of them did it again; BENCHMARKS.md).
    pub config_yaml: String,
}

impl JobSpec {
    /// Rough training cost, in multiply-adds: epochs × training samples ×
    /// the model's multiply-adds per sample (forward). Only the ratios matter:
    /// the coordinator hands out the costliest jobs first, so that a long job
    /// does not start last and leave the other workers idle (the classic
    /// longest-processing-time-first rule for makespan).
    /// A command job's cost is unknown: it counts as its epochs alone, below
    /// any built-in job, so that it neither jumps the queue nor starves.
    pub fn estimated_cost(&self) -> f64 {
        let config = match &self.config {
            JobConfig::Builtin(config) => config,
            JobConfig::Command(_) => return f64::from(self.config.epochs()),
        };
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
    /// A spec that breaks one of [`SweepSpec::validate`]'s rules (one that
    /// came over the network: a loaded spec's errors are located above).
    #[error(transparent)]
    Invalid(#[from] SpecError),
}

/// A rule every sweep spec keeps, however it was made: loaded from files
/// ([`SweepSpec::load`] reports these with file and line first) or received
/// over the network (the coordinator's SubmitSweep).
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum SpecError {
    /// A sweep, variant or baseline name that is not a safe path component.
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error("missing field metric")]
    EmptyMetric,
    #[error("seeds: list at least one seed")]
    EmptySeeds,
    #[error("seeds: seed {0} is listed twice")]
    DuplicateSeed(u64),
    #[error(
        "seed_policy: max must be in [max(2, seeds), {MAX_ADAPTIVE_SEEDS}] and the target a number > 0, got {max} and {target}"
    )]
    SeedPolicy { max: usize, target: f64 },
    /// Shown cut to its first 32 characters.
    #[error("swept key {0:?} is empty or too long")]
    SweptKey(String),
    #[error("variant {0:?} is listed twice")]
    DuplicateVariant(String),
    #[error("variant {name:?} has {values} swept values for {keys} swept keys")]
    SweptValues {
        name: String,
        values: usize,
        keys: usize,
    },
    #[error("baseline {0:?} is not among the variants")]
    MissingBaseline(String),
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
    /// A list, or `{initial, max, target_ci_halfwidth}`: read by [`read_seeds`].
    #[serde(default, rename = "seeds")]
    _seeds: Option<serde::de::IgnoredAny>,
    #[serde(default = "default_metric")]
    metric: String,
    /// A variant name, or (grid) a point's values: read by [`read_baseline`].
    #[serde(default, rename = "baseline")]
    _baseline: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "variants")]
    _variants: Option<serde::de::IgnoredAny>,
    /// Taken out of the tree by [`Space::take`] before this is read.
    #[serde(default, rename = "grid")]
    _grid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "random")]
    _random: Option<serde::de::IgnoredAny>,
}

/// What `baseline:` says.
enum BaselineSpec {
    /// A variant name ("" for none).
    Name(String),
    /// A grid point by its values (`{training.learning_rate: 0.001}`).
    Point(Entry),
}

/// `baseline:` as a name, or as a point's values; absent: "baseline", or no
/// baseline at all in a grid or random sweep.
fn read_baseline(tree: &Node, has_space: bool) -> Result<BaselineSpec, SweepError> {
    let Some(entry) = tree.entries().iter().find(|entry| entry.key == "baseline") else {
        return Ok(BaselineSpec::Name(if has_space {
            String::new()
        } else {
            default_baseline()
        }));
    };
    if entry.value.is_map_or_null() && !entry.value.entries().is_empty() {
        if !has_space {
            return Err(ConfigError::Invalid {
                location: entry.value.location(),
                key: "baseline".into(),
                message: "a baseline given by values needs a grid or random space; name a variant"
                    .into(),
            }
            .into());
        }
        return Ok(BaselineSpec::Point(entry.clone()));
    }
    let name: String = entry
        .value
        .deserialize()
        .map_err(|err| crate::space::under("baseline", err))?;
    names::validate("baseline variant name", &name).map_err(|source| SweepError::BadName {
        location: entry.value.location(),
        source,
    })?;
    Ok(BaselineSpec::Name(name))
}

/// The one point whose values match `spec`'s (a mapping of swept keys).
fn find_point(spec: &Entry, space: &Space, points: &[Point]) -> Result<String, SweepError> {
    let keys = space.key_names();
    let mut wanted = Vec::new();
    for entry in spec.value.entries() {
        let Some(index) = keys.iter().position(|k| *k == entry.key) else {
            return Err(ConfigError::Invalid {
                location: entry.key_location(),
                key: format!("baseline.{}", entry.key),
                message: format!("is not a swept key (they are: {})", keys.join(", ")),
            }
            .into());
        };
        let value: serde_json::Value = entry.value.deserialize()?;
        wanted.push((index, value));
    }
    let same = |a: &serde_json::Value, b: &serde_json::Value| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    };
    let matches: Vec<&Point> = points
        .iter()
        .filter(|p| wanted.iter().all(|(i, v)| same(&p.values[*i], v)))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(ConfigError::Invalid {
            location: spec.value.location(),
            key: "baseline".into(),
            message: "no point of the space has these values".into(),
        }
        .into()),
        many => Err(ConfigError::Invalid {
            location: spec.value.location(),
            key: "baseline".into(),
            message: format!(
                "ambiguous: {} points have these values ({} ...); give a value for every swept key",
                many.len(),
                many.iter()
                    .take(3)
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        .into()),
    }
}

/// The variant name that `baseline` is most likely a typo of: one or two
/// letters off (one for names under ten letters). Short names (`cnn`, `rnn`)
/// and names that differ only in their digits (`v0`, `lr-0.001`) are
/// different names, not slips.
fn slip_for<'a>(baseline: &str, variants: &'a [Variant]) -> Option<&'a str> {
    let length = baseline.chars().count();
    if length < 5 {
        return None;
    }
    let letters = |name: &str| -> String { name.chars().filter(|c| !c.is_ascii_digit()).collect() };
    let slip = (length / 5).clamp(1, 2);
    variants
        .iter()
        .filter(|variant| letters(&variant.name) != letters(baseline))
        .map(|variant| {
            (
                strsim::osa_distance(&variant.name, baseline),
                variant.name.as_str(),
            )
        })
        .filter(|(distance, _)| *distance <= slip)
        .min()
        .map(|(_, name)| name)
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
        let space = Space::take(&mut tree)?;
        let file: SweepFile = tree.deserialize()?;

        names::validate("sweep name", &file.name).map_err(|source| SweepError::BadName {
            location: tree.location_of("name"),
            source,
        })?;
        let baseline_spec = read_baseline(&tree, space.is_some())?;
        if file.metric.trim().is_empty() {
            return Err(tree
                .error_at("metric", "must not be empty".to_string())
                .into());
        }
        let (seeds, seed_policy) = read_seeds(&tree)?;

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
        let mut swept_keys = Vec::new();
        let mut baseline = match &baseline_spec {
            BaselineSpec::Name(name) => name.clone(),
            BaselineSpec::Point(_) => String::new(),
        };
        if let Some(space) = &space {
            swept_keys = space.key_names();
            // A command job's schema is the program's: what can be swept is
            // what its base config has (the guard against a typo there).
            if let JobConfig::Command(command) = JobConfig::from_tree(&base)? {
                for key in &swept_keys {
                    if command.lookup(key).is_none() {
                        let location = space
                            .key_entry(key)
                            .map_or_else(|| space.location(), |entry| entry.key_location());
                        return Err(ConfigError::Invalid {
                            location,
                            key: key.clone(),
                            message: "names no key of the base config; a command job's keys are the program's own, so only keys its base config has can be swept".into(),
                        }
                        .into());
                    }
                }
            }
            let points = space.points()?;
            if let BaselineSpec::Point(spec) = &baseline_spec {
                baseline = find_point(spec, space, &points)?;
            }
            for point in points {
                if let Some(named) = overlays.iter().find(|o| o.name == point.name) {
                    return Err(SweepError::DuplicateVariant {
                        name: point.name,
                        location: space.location(),
                        first: Box::new(named.location.clone()),
                    });
                }
                let mut merged = base.clone();
                merged.merge(point.overlay);
                let mut config = JobConfig::from_tree(&merged)
                    .map_err(|err| space.explain_point_error(&point.name, err))?;
                config.set_name(&point.name);
                variants.push(Variant {
                    name: point.name,
                    config,
                    swept: point.values.iter().map(display_value).collect(),
                });
            }
        }
        for overlay in overlays {
            reject_sweep_owned_keys(&overlay)?;
            let mut merged = base.clone();
            merged.merge(overlay.tree);
            let mut config = JobConfig::from_tree(&merged)?;
            config.set_name(&overlay.name);
            variants.push(Variant {
                name: overlay.name,
                config,
                swept: Vec::new(),
            });
        }
        // A baseline that names no variant is the base config itself, unless
        // the name is a slip for a variant's: then the Δ and p columns would
        // compare every variant with the wrong run.
        if !baseline.is_empty() && !variants.iter().any(|variant| variant.name == baseline) {
            if tree.entries().iter().any(|entry| entry.key == "baseline")
                && let Some(near) = slip_for(&baseline, &variants)
            {
                return Err(tree
                    .error_at(
                        "baseline",
                        format!(
                            "{baseline:?} names no variant; did you mean {near:?}? (to run the base config under a name of its own, pick one further from the variants' names)"
                        ),
                    )
                    .into());
            }
            let mut config = JobConfig::from_tree(&base)?;
            config.set_name(&baseline);
            variants.push(Variant {
                name: baseline.clone(),
                config,
                swept: Vec::new(),
            });
        }
        let mut spec = SweepSpec {
            name: file.name,
            description: file.description,
            seeds,
            metric: file.metric,
            baseline,
            variants,
            seed_policy,
            swept_keys,
        };
        spec.sort_variants();
        // Every rule was checked above with its location; this is the one
        // list of them, which a spec from the network goes through too.
        spec.validate()?;
        Ok(spec)
    }

    /// Orders the variants as every spec holds them: the baseline first
    /// (tables and comparisons read from the reference down), then by name.
    pub fn sort_variants(&mut self) {
        let baseline = &self.baseline;
        self.variants
            .sort_by(|a, b| (&a.name != baseline, &a.name).cmp(&(&b.name != baseline, &b.name)));
    }

    /// The rules of a spec that do not need its files: safe names, at least
    /// one seed and none twice, a metric, a sane seed policy, swept values
    /// that match the swept keys and a baseline among the variants.
    pub fn validate(&self) -> Result<(), SpecError> {
        names::validate("sweep name", &self.name)?;
        if !self.baseline.is_empty() {
            names::validate("baseline variant name", &self.baseline)?;
        }
        if let Some(policy) = &self.seed_policy {
            let (max, target) = (policy.max, policy.target_ci_halfwidth);
            let valid = (self.seeds.len().max(2)..=MAX_ADAPTIVE_SEEDS).contains(&max)
                && target.is_finite()
                && target > 0.0;
            if !valid {
                return Err(SpecError::SeedPolicy { max, target });
            }
        }
        for key in &self.swept_keys {
            if key.is_empty() || key.len() > names::MAX_NAME_LEN {
                return Err(SpecError::SweptKey(key.chars().take(32).collect()));
            }
        }
        if self.metric.is_empty() {
            return Err(SpecError::EmptyMetric);
        }
        if self.seeds.is_empty() {
            return Err(SpecError::EmptySeeds);
        }
        for (index, seed) in self.seeds.iter().enumerate() {
            if self.seeds[..index].contains(seed) {
                return Err(SpecError::DuplicateSeed(*seed));
            }
        }
        for (index, variant) in self.variants.iter().enumerate() {
            names::validate("variant name", &variant.name)?;
            if self.variants[..index]
                .iter()
                .any(|v| v.name == variant.name)
            {
                return Err(SpecError::DuplicateVariant(variant.name.clone()));
            }
            if !variant.swept.is_empty() && variant.swept.len() != self.swept_keys.len() {
                return Err(SpecError::SweptValues {
                    name: variant.name.clone(),
                    values: variant.swept.len(),
                    keys: self.swept_keys.len(),
                });
            }
        }
        if !self.baseline.is_empty() && !self.variants.iter().any(|v| v.name == self.baseline) {
            return Err(SpecError::MissingBaseline(self.baseline.clone()));
        }
        Ok(())
    }

    /// One job per (variant, seed): variants in their order (baseline first),
    /// seeds in the order the spec lists them.
    pub fn expand(&self) -> Vec<JobSpec> {
        self.variants
            .iter()
            .flat_map(|variant| {
                self.seeds.iter().map(move |&seed| {
                    JobSpec::new(&self.name, &variant.name, &variant.config, seed)
                })
            })
            .collect()
    }
}

impl JobSpec {
    /// The job that runs `config` (a variant's) with `seed`.
    pub fn new(sweep: &str, variant: &str, config: &JobConfig, seed: u64) -> JobSpec {
        let mut config = config.clone();
        config.set_seed(seed);
        config.set_name(variant);
        let config_yaml = config.to_yaml();
        JobSpec {
            id: job_id(sweep, variant, seed, &config_yaml),
            sweep: sweep.to_string(),
            variant: variant.to_string(),
            seed,
            config,
            config_yaml,
        }
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
fn job_id(sweep: &str, variant: &str, seed: u64, config_yaml: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config_yaml.as_bytes());
    // A separator keeps (yaml, sweep) pairs from colliding by concatenation.
    hasher.update([0u8]);
    hasher.update(sweep.as_bytes());
    let hash = hex::encode(hasher.finalize());
    format!("{variant}-seed-{seed}-{}", &hash[..8])
}

/// The adaptive form of `seeds`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveSeeds {
    #[serde(default = "default_seeds")]
    initial: Vec<u64>,
    max: usize,
    target_ci_halfwidth: f64,
}

/// `seeds:` as a list (fixed seeds) or as `{initial, max, target_ci_halfwidth}`.
fn read_seeds(tree: &Node) -> Result<(Vec<u64>, Option<SeedPolicy>), SweepError> {
    let Some(entry) = tree.entries().iter().find(|entry| entry.key == "seeds") else {
        return Ok((default_seeds(), None));
    };
    if !entry.value.is_map_or_null() {
        let seeds: Vec<u64> = entry
            .value
            .deserialize()
            .map_err(|err| crate::space::under("seeds", err))?;
        check_seeds(tree, &seeds, "seeds")?;
        return Ok((seeds, None));
    }
    let adaptive: AdaptiveSeeds = entry
        .value
        .deserialize()
        .map_err(|err| crate::space::under("seeds", err))?;
    check_seeds(tree, &adaptive.initial, "seeds.initial")?;
    if adaptive.initial.len() < 2 {
        return Err(tree
            .error_at(
                "seeds.initial",
                "adaptive seeds need at least two initial seeds (a spread to judge by)".to_string(),
            )
            .into());
    }
    if !(adaptive.initial.len()..=MAX_ADAPTIVE_SEEDS).contains(&adaptive.max) {
        return Err(tree
            .error_at(
                "seeds.max",
                format!(
                    "must be in [{}, {MAX_ADAPTIVE_SEEDS}] (at least the initial seeds), got {}",
                    adaptive.initial.len(),
                    adaptive.max
                ),
            )
            .into());
    }
    let target = adaptive.target_ci_halfwidth;
    if !(target.is_finite() && target > 0.0) {
        return Err(tree
            .error_at(
                "seeds.target_ci_halfwidth",
                format!("must be a number of points > 0, got {target}"),
            )
            .into());
    }
    Ok((
        adaptive.initial,
        Some(SeedPolicy {
            max: adaptive.max,
            target_ci_halfwidth: target,
        }),
    ))
}

fn check_seeds(tree: &Node, seeds: &[u64], key: &str) -> Result<(), SweepError> {
    if seeds.is_empty() {
        return Err(SweepError::EmptySeeds {
            location: tree.location_of(key),
        });
    }
    for (index, seed) in seeds.iter().enumerate() {
        if seeds[..index].contains(seed) {
            return Err(SweepError::DuplicateSeed {
                location: tree.location_of(&format!("{key}[{index}]")),
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
    use crate::config::ExperimentConfig;
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
        assert_eq!(
            spec.variants[1]
                .config
                .builtin()
                .expect("built-in")
                .model
                .dropout,
            0.0
        );
        assert_eq!(
            spec.variants[1]
                .config
                .builtin()
                .expect("built-in")
                .model
                .hidden_sizes,
            vec![256, 128]
        );
        assert_eq!(
            spec.variants[2]
                .config
                .builtin()
                .expect("built-in")
                .training
                .learning_rate,
            0.01
        );
        assert_eq!(
            spec.variants[2]
                .config
                .builtin()
                .expect("built-in")
                .training
                .weight_decay,
            0.0001
        );

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
            assert_eq!(job.config.seed(), job.seed);
            assert_eq!(job.config.name(), job.variant);
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
        assert_eq!(
            spec.variants[1]
                .config
                .builtin()
                .expect("built-in")
                .training
                .learning_rate,
            0.01
        );
        assert_eq!(
            spec.variants[2]
                .config
                .builtin()
                .expect("built-in")
                .training
                .learning_rate,
            0.0001
        );
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
        assert_eq!(baseline.config, JobConfig::Builtin(expected));

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
        assert_eq!(
            spec.variants[0]
                .config
                .builtin()
                .expect("built-in")
                .model
                .dropout,
            0.3
        );
    }

    #[test]
    fn a_baseline_that_nearly_names_a_variant_is_refused() {
        let (_root, dir) = dir_sweep();
        write(
            &dir,
            "sweep.yaml",
            "name: ablations\nbase: ../baseline.yaml\nbaseline: no_dropuot\n",
        );
        let message = load_err(&dir);
        assert!(message.contains("sweep.yaml:3:"), "{message}");
        assert!(message.contains("did you mean \"no_dropout\""), "{message}");
        // A name of its own is the base config under that name.
        write(
            &dir,
            "sweep.yaml",
            "name: ablations\nbase: ../baseline.yaml\nbaseline: reference\n",
        );
        let spec = SweepSpec::load(&dir).expect("sweep");
        assert_eq!(spec.variants[0].name, "reference");
    }

    #[test]
    fn names_that_differ_on_purpose_are_not_slips() {
        let variant = |name: &str| Variant {
            name: name.into(),
            config: JobConfig::from_yaml("command: [x]\n", Path::new("c")).expect("config"),
            swept: Vec::new(),
        };
        let variants = ["cnn", "v1", "mlp2", "learning_rate-0.01", "no_dropout"].map(variant);
        for name in ["rnn", "v0", "mlp", "learning_rate-0.001", "baseline"] {
            assert_eq!(slip_for(name, &variants), None, "{name}");
        }
        assert_eq!(slip_for("no_dropuot", &variants), Some("no_dropout"));
        assert_eq!(slip_for("nodropout", &variants), Some("no_dropout"));
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
        assert_eq!(
            spec.variants[1]
                .config
                .builtin()
                .expect("built-in")
                .model
                .hidden_sizes,
            vec![512]
        );
    }

    #[test]
    fn job_dir_follows_the_run_layout() {
        assert_eq!(
            job_dir(Path::new("runs"), "ablations", "no_dropout", 42),
            Path::new("runs/ablations/no_dropout/seed-42")
        );
    }

    fn grid_sweep(spec: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "baseline.yaml", BASE);
        let path = write(root.path(), "grid/sweep.yaml", spec);
        (root, path)
    }

    #[test]
    fn a_grid_is_the_cartesian_product_with_readable_stable_names() {
        let spec = "name: g\nbase: ../baseline.yaml\nseeds: [1]\ngrid:\n  training.learning_rate: [0.001, 0.0003]\n  model.dropout: [0.0, 0.2, 0.5]\n";
        let (_root, path) = grid_sweep(spec);
        let sweep = SweepSpec::load(&path).expect("grid sweep");
        assert_eq!(sweep.baseline, "", "no baseline unless asked for");
        assert_eq!(
            sweep.swept_keys,
            ["training.learning_rate", "model.dropout"]
        );
        let names: Vec<&str> = sweep.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "learning_rate-0.0003_dropout-0.0",
                "learning_rate-0.0003_dropout-0.2",
                "learning_rate-0.0003_dropout-0.5",
                "learning_rate-0.001_dropout-0.0",
                "learning_rate-0.001_dropout-0.2",
                "learning_rate-0.001_dropout-0.5"
            ]
        );
        let v = &sweep.variants[4];
        assert_eq!(v.swept, ["0.001", "0.2"]);
        let config = v.config.builtin().expect("built-in");
        assert_eq!(config.training.learning_rate, 0.001);
        assert_eq!(config.model.dropout, 0.2);
        assert_eq!(config.model.hidden_sizes, vec![256, 128]);
        assert_eq!(
            SweepSpec::load(&path).expect("again").expand(),
            sweep.expand()
        );
    }

    #[test]
    fn grid_keys_and_values_are_checked_against_the_schema_with_their_line() {
        let typo = "name: g\nbase: ../baseline.yaml\ngrid:\n  training.learning_rte: [0.1]\n";
        let (_root, path) = grid_sweep(typo);
        let message = load_err(&path);
        assert!(
            message.contains("sweep.yaml:4:3")
                && message.contains("learning_rte")
                && message.contains("unknown"),
            "{message}"
        );
        let bad_value =
            "name: g\nbase: ../baseline.yaml\ngrid:\n  model.dropout: [0.1,\n    1.5]\n";
        let (_root, path) = grid_sweep(bad_value);
        let message = load_err(&path);
        assert!(
            message.contains("sweep.yaml:5:5") && message.contains("model.dropout"),
            "{message}"
        );
        for (spec, expect) in [
            ("grid:\n  model.dropout: [0.1, 0.1]\n", "listed twice"),
            (
                "grid:\n  model: [{dropout: 0.1}]\n  model.dropout: [0.2]\n",
                "overlaps",
            ),
            ("grid:\n  seed: [1, 2]\n", "set by the sweep"),
            ("grid:\n  model.dropout: []\n", "at least one value"),
            (
                "grid:\n  model.dropout: [0.1]\nrandom: {trials: 2, space: {model.dropout: {uniform: [0, 0.5]}}}\n",
                "not both",
            ),
            (
                "grid:\n  model.dropout: [0.1, 0.2]\nbaseline: {model.dropout: 0.3}\n",
                "no point",
            ),
            (
                "grid:\n  model.dropout: [0.1, 0.2]\n  training.epochs: [1, 2]\nbaseline: {model.dropout: 0.1}\n",
                "ambiguous",
            ),
            (
                "grid:\n  model.dropout: [0.1]\nbaseline: {model.init: xavier}\n",
                "not a swept key",
            ),
        ] {
            let (_root, path) = grid_sweep(&format!("name: g\nbase: ../baseline.yaml\n{spec}"));
            let message = load_err(&path);
            assert!(
                message.contains(expect) && message.contains("sweep.yaml:"),
                "{spec}: {message}"
            );
        }
    }

    #[test]
    fn a_grid_baseline_by_values_and_named_variants_beside_the_grid() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "baseline.yaml", BASE);
        let dir = root.path().join("g");
        write(
            &dir,
            "sweep.yaml",
            "name: g\nbase: ../baseline.yaml\nseeds: [1]\ngrid: {model.dropout: [0.0, 0.2], training.learning_rate: [0.001]}\nbaseline: {model.dropout: 0.2}\n",
        );
        write(&dir, "cnn.yaml", "model: {type: cnn}\n");
        let sweep = SweepSpec::load(&dir).expect("sweep");
        assert_eq!(sweep.baseline, "dropout-0.2_learning_rate-0.001");
        let names: Vec<&str> = sweep.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dropout-0.2_learning_rate-0.001",
                "cnn",
                "dropout-0.0_learning_rate-0.001"
            ]
        );
        // The named variant stays as it is: the grid does not apply to it.
        let cnn = sweep.variants[1].config.builtin().expect("built-in");
        assert_eq!(cnn.model.dropout, 0.2);
        assert!(sweep.variants[1].swept.is_empty());
    }

    #[test]
    fn random_trials_are_reproducible_and_in_range() {
        let spec = "name: r\nbase: ../baseline.yaml\nseeds: [1]\nrandom:\n  trials: 6\n  seed: 7\n  space:\n    training.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}\n    model.dropout: {uniform: [0, 0.5]}\n    model.hidden_sizes: {choice: [[256, 128], [512, 256]]}\n";
        let (_root, path) = grid_sweep(spec);
        let sweep = SweepSpec::load(&path).expect("random sweep");
        let again = SweepSpec::load(&path).expect("again");
        assert_eq!(sweep.variants, again.variants);
        assert_eq!(sweep.variants.len(), 6);
        assert_eq!(sweep.variants[0].name, "trial-00");
        for v in &sweep.variants {
            let c = v.config.builtin().expect("built-in");
            assert!((1e-4..=1e-2).contains(&c.training.learning_rate), "{v:?}");
            assert!((0.0..0.5).contains(&c.model.dropout), "{v:?}");
            assert!(c.model.hidden_sizes == [256, 128] || c.model.hidden_sizes == [512, 256]);
            assert_eq!(v.swept.len(), 3);
        }
        let lrs: Vec<f64> = sweep
            .variants
            .iter()
            .map(|v| v.config.builtin().expect("b").training.learning_rate)
            .collect();
        assert!(lrs.windows(2).any(|w| w[0] != w[1]), "{lrs:?}");
        // The draws are a property of the spec, pinned here (and reproduced
        // independently with a few lines of Python's SplitMix64).
        let swept: Vec<Vec<&str>> = sweep
            .variants
            .iter()
            .map(|v| v.swept.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(swept[0], ["0.000602087", "0.00839415", "[512,256]"]);
        assert_eq!(swept[1], ["0.00146508", "0.226221", "[256,128]"]);
        assert_eq!(swept[4], ["0.0068555", "0.435666", "[512,256]"]);
        assert_eq!(sweep.variants[5].name, "trial-05");

        let bad = "name: r\nbase: ../baseline.yaml\nrandom:\n  trials: 2\n  space:\n    training.learning_rate: {log_uniform: [0, 1]}\n";
        let (_root, path) = grid_sweep(bad);
        let message = load_err(&path);
        assert!(
            message.contains("sweep.yaml:6:") && message.contains("low > 0"),
            "{message}"
        );

        // A range beyond what the key accepts: the drawn value is named as drawn.
        let wide = "name: r\nbase: ../baseline.yaml\nrandom:\n  trials: 8\n  space:\n    model.dropout: {uniform: [0.5, 1.5]}\n";
        let (_root, path) = grid_sweep(wide);
        let message = load_err(&path);
        assert!(
            message.contains("sweep.yaml:6:")
                && message.contains("model.dropout")
                && message.contains("a value drawn for trial-")
                && message.contains("keep the range within what model.dropout accepts"),
            "{message}"
        );
    }

    #[test]
    fn adaptive_seeds_parse_and_extra_seeds_never_collide() {
        let spec = "name: a\nbase: ../baseline.yaml\nseeds: {initial: [42, 123, 456], max: 10, target_ci_halfwidth: 0.1}\n";
        let (_root, path) = grid_sweep(spec);
        let sweep = SweepSpec::load(&path).expect("adaptive");
        assert_eq!(sweep.seeds, [42, 123, 456]);
        assert_eq!(
            sweep.seed_policy,
            Some(SeedPolicy {
                max: 10,
                target_ci_halfwidth: 0.1
            })
        );
        let extra: Vec<u64> = (0..20).map(|k| extra_seed("a", &sweep.seeds, k)).collect();
        let mut unique = extra.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 20);
        assert!(extra.iter().all(|s| !sweep.seeds.contains(s)));
        assert_eq!(extra_seed("a", &sweep.seeds, 3), extra[3]);
        for (text, expect) in [
            (
                "{initial: [1], max: 5, target_ci_halfwidth: 0.1}",
                "two initial seeds",
            ),
            (
                "{initial: [1, 2], max: 1, target_ci_halfwidth: 0.1}",
                "seeds.max",
            ),
            (
                "{initial: [1, 2], max: 5, target_ci_halfwidth: 0}",
                "seeds.target_ci_halfwidth",
            ),
            ("{initial: [1, 2], max: 5, target: 0.1}", "unknown"),
        ] {
            let (_root, path) =
                grid_sweep(&format!("name: a\nbase: ../baseline.yaml\nseeds: {text}\n"));
            let message = load_err(&path);
            assert!(
                message.contains("sweep.yaml:3:") && message.contains(expect),
                "{text}: {message}"
            );
        }
    }

    #[test]
    fn seeds_to_add_follows_the_ci() {
        let policy = SeedPolicy {
            max: 10,
            target_ci_halfwidth: 1.0,
        };
        // Identical results: the CI has no width; nothing to add.
        assert_eq!(policy.seeds_to_add(&[0.9, 0.9, 0.9], 3), 0);
        // A spread of a point or so over three seeds: wider than 1 point.
        let more = policy.seeds_to_add(&[0.90, 0.91, 0.92], 3);
        assert!((1..=7).contains(&more), "{more}");
        assert_eq!(
            policy.seeds_to_add(&[0.90, 0.91, 0.92], 10),
            0,
            "max reached"
        );
        assert_eq!(
            policy.seeds_to_add(&[0.90], 1),
            0,
            "one value cannot be judged"
        );
    }

    #[test]
    fn command_job_grids_sweep_only_keys_the_base_has() {
        let root = tempfile::tempdir().expect("tempdir");
        write(
            root.path(),
            "base.yaml",
            "command: [python3, train.py, --lr, \"{training.lr}\"]\ntraining: {lr: 0.1, my_key: 3}\n",
        );
        let path = write(
            root.path(),
            "sweep.yaml",
            "name: c\nbase: base.yaml\ngrid:\n  training.lr: [0.1, 0.01]\n  training.my_key: [1]\n",
        );
        let sweep = SweepSpec::load(&path).expect("command grid");
        assert!(sweep.variants.iter().all(|v| v.config.is_command()));
        write(
            root.path(),
            "sweep.yaml",
            "name: c\nbase: base.yaml\ngrid:\n  training.learning_rate: [0.1]\n",
        );
        let message = load_err(&path);
        assert!(
            message.contains("sweep.yaml:4:3") && message.contains("no key of the base"),
            "{message}"
        );
    }
}
