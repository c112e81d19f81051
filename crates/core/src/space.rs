//! Search spaces in a sweep file: `grid:` (the cartesian product of value
//! lists) and `random:` (trials drawn reproducibly from distributions). Each
//! point becomes a variant: the base config with the point's values set, and
//! a generated name that is valid under the name rules and the same on every
//! load of the same spec (so resubmitting finds the same jobs).
//!
//! Points are built as YAML trees whose nodes carry the positions of the
//! sweep file's own keys and values, so that a bad key or value (a typo such
//! as `training.learning_rte`, a dropout of 1.5) is reported at the line of
//! `sweep.yaml` that wrote it, by the same validation every config goes
//! through, before any job runs.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::command::display_value;
use crate::config::{ConfigError, SourceLocation};
use crate::yaml::{Entry, Node};

/// Most points one spec may generate: far more than anyone runs, few enough
/// that a typo (a list of 1000 values in each of three keys) is caught.
pub const MAX_POINTS: usize = 10_000;

/// Keys the sweep itself sets on every variant.
const SWEEP_OWNED: [&str; 2] = ["name", "seed"];

/// A `grid:` or a `random:` section.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    /// Each swept key with where it is written.
    keys: Vec<Entry>,
    kind: Kind,
    /// The `grid` or `random` entry itself.
    section: Entry,
}

#[derive(Debug, Clone)]
enum Kind {
    /// One list of value nodes per key.
    Grid(Vec<Vec<Node>>),
    /// One distribution per key.
    Random {
        trials: usize,
        seed: u64,
        dists: Vec<Dist>,
    },
}

#[derive(Debug, Clone)]
enum Dist {
    Uniform { low: f64, high: f64, at: Node },
    LogUniform { low: f64, high: f64, at: Node },
    Choice(Vec<Node>),
}

/// One point of a space: its generated variant name, the overlay that sets
/// its values, and those values (in the order of the swept keys).
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub name: String,
    pub overlay: Node,
    pub values: Vec<Value>,
}

/// The `random:` section's shape; `space` is read node by node.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomSection {
    trials: usize,
    #[serde(default)]
    seed: u64,
    #[serde(rename = "space")]
    _space: serde::de::IgnoredAny,
}

fn invalid(location: SourceLocation, key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        location,
        key: key.to_string(),
        message,
    }
}

impl Space {
    /// Takes `grid` or `random` out of a sweep file's tree; None when neither.
    pub(crate) fn take(tree: &mut Node) -> Result<Option<Space>, ConfigError> {
        let grid = tree.remove("grid");
        let random = tree.remove("random");
        match (grid, random) {
            (None, None) => Ok(None),
            (Some(_), Some(random)) => Err(invalid(
                random.key_location(),
                "random",
                "a sweep has one space: grid or random, not both".to_string(),
            )),
            (Some(grid), None) => Space::grid(grid).map(Some),
            (None, Some(random)) => Space::random(random).map(Some),
        }
    }

    fn grid(section: Entry) -> Result<Space, ConfigError> {
        let entries = mapping(
            &section,
            "grid",
            "a mapping of key paths to lists of values",
        )?;
        let mut keys = Vec::new();
        let mut lists = Vec::new();
        let mut points = 1usize;
        for entry in entries {
            check_key(&entry, &keys, "grid")?;
            let key = format!("grid.{}", entry.key);
            let Some(values) = entry.value.items() else {
                return Err(invalid(
                    entry.value.location(),
                    &key,
                    "must be a list of values, e.g. [0.001, 0.0003]".to_string(),
                ));
            };
            if values.is_empty() {
                return Err(invalid(
                    entry.value.location(),
                    &key,
                    "must list at least one value".to_string(),
                ));
            }
            let mut seen: Vec<Value> = Vec::new();
            for (index, node) in values.iter().enumerate() {
                let value: Value = node.deserialize()?;
                if seen.contains(&value) {
                    return Err(invalid(
                        node.location(),
                        &format!("{key}[{index}]"),
                        format!("{} is listed twice", display_value(&value)),
                    ));
                }
                seen.push(value);
            }
            points = points.saturating_mul(values.len());
            lists.push(values.to_vec());
            keys.push(entry);
        }
        if points > MAX_POINTS {
            return Err(invalid(
                section.key_location(),
                "grid",
                format!("{points} points; at most {MAX_POINTS}"),
            ));
        }
        Ok(Space {
            keys,
            kind: Kind::Grid(lists),
            section,
        })
    }

    fn random(section: Entry) -> Result<Space, ConfigError> {
        let header: RandomSection = section
            .value
            .deserialize()
            .map_err(|err| under("random", err))?;
        if !(1..=MAX_POINTS).contains(&header.trials) {
            return Err(invalid(
                section.value.location_of("trials"),
                "random.trials",
                format!("must be in [1, {MAX_POINTS}], got {}", header.trials),
            ));
        }
        let space_entry = section
            .value
            .entries()
            .iter()
            .find(|e| e.key == "space")
            .cloned()
            .ok_or_else(|| {
                invalid(
                    section.key_location(),
                    "random.space",
                    "missing".to_string(),
                )
            })?;
        let entries = mapping(
            &space_entry,
            "random.space",
            "a mapping of key paths to distributions",
        )?;
        let mut keys = Vec::new();
        let mut dists = Vec::new();
        for entry in entries {
            check_key(&entry, &keys, "random.space")?;
            dists.push(dist(&entry)?);
            keys.push(entry);
        }
        Ok(Space {
            keys,
            kind: Kind::Random {
                trials: header.trials,
                seed: header.seed,
                dists,
            },
            section,
        })
    }

    /// The swept key paths, in the spec's order.
    pub(crate) fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.key.clone()).collect()
    }

    /// The entry of a swept key (to locate errors about it).
    pub(crate) fn key_entry(&self, key: &str) -> Option<&Entry> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// Where the section starts.
    pub(crate) fn location(&self) -> SourceLocation {
        self.section.key_location()
    }

    /// `err`, from validating point `point`, told as the user wrote it: a
    /// random space's value was drawn, not written, so the message says from
    /// where (the error's location is the range's).
    pub(crate) fn explain_point_error(&self, point: &str, err: ConfigError) -> ConfigError {
        match (&self.kind, err) {
            (
                Kind::Random { .. },
                ConfigError::Invalid {
                    location,
                    key,
                    message,
                },
            ) if self.key_entry(&key).is_some() => ConfigError::Invalid {
                message: format!(
                    "{message}, a value drawn for {point} from the range here: keep the range within what {key} accepts"
                ),
                location,
                key,
            },
            (_, err) => err,
        }
    }

    /// Every point: a grid's in row-major order (the first key varies
    /// slowest), a random space's trials in draw order.
    pub(crate) fn points(&self) -> Result<Vec<Point>, ConfigError> {
        let rows: Vec<Vec<Node>> = match &self.kind {
            Kind::Grid(lists) => {
                let mut rows: Vec<Vec<Node>> = vec![Vec::new()];
                for list in lists {
                    rows = rows
                        .into_iter()
                        .flat_map(|row| {
                            list.iter().map(move |value| {
                                let mut row = row.clone();
                                row.push(value.clone());
                                row
                            })
                        })
                        .collect();
                }
                rows
            }
            Kind::Random {
                trials,
                seed,
                dists,
            } => {
                let mut rng = SplitMix64(*seed);
                (0..*trials)
                    .map(|_| dists.iter().map(|d| d.draw(&mut rng)).collect())
                    .collect()
            }
        };
        let leaves = short_names(&self.key_names());
        let digits = rows.len().saturating_sub(1).to_string().len().max(2);
        let mut points: Vec<Point> = Vec::with_capacity(rows.len());
        for (index, row) in rows.into_iter().enumerate() {
            let mut overlay: Option<Node> = None;
            let mut values = Vec::with_capacity(row.len());
            for (key, node) in self.keys.iter().zip(&row) {
                values.push(node.deserialize::<Value>()?);
                let nested = Node::nested(&key.key, key, node.clone());
                match overlay.as_mut() {
                    Some(tree) => tree.merge(nested),
                    None => overlay = Some(nested),
                }
            }
            let name = match &self.kind {
                Kind::Grid(_) => grid_name(&leaves, &values),
                Kind::Random { .. } => format!("trial-{index:0digits$}"),
            };
            if let Some(first) = points.iter().find(|p| p.name == name) {
                let shown =
                    |v: &[Value]| v.iter().map(display_value).collect::<Vec<_>>().join(", ");
                return Err(invalid(
                    self.location(),
                    "grid",
                    format!(
                        "the points ({}) and ({}) would both be named {name:?}; make the values differ in more than punctuation",
                        shown(&first.values),
                        shown(&values)
                    ),
                ));
            }
            // Never None: a space has at least one key.
            let Some(overlay) = overlay else { continue };
            points.push(Point {
                name,
                overlay,
                values,
            });
        }
        Ok(points)
    }
}

/// `err` with its key path moved under `parent`.
pub(crate) fn under(parent: &str, err: ConfigError) -> ConfigError {
    match err {
        ConfigError::Invalid {
            location,
            key,
            message,
        } => {
            let key = if key.is_empty() || key.starts_with('[') {
                format!("{parent}{key}")
            } else {
                format!("{parent}.{key}")
            };
            ConfigError::Invalid {
                location,
                key,
                message,
            }
        }
        other => other,
    }
}

fn mapping(section: &Entry, key: &str, what: &str) -> Result<Vec<Entry>, ConfigError> {
    if !section.value.is_map_or_null() || section.value.entries().is_empty() {
        return Err(invalid(
            section.value.location(),
            key,
            format!("must be {what}"),
        ));
    }
    Ok(section.value.entries().to_vec())
}

/// A swept key path: dotted names (no list indices), not owned by the sweep,
/// neither a prefix nor an extension of another swept key (which would set
/// one value twice).
fn check_key(entry: &Entry, earlier: &[Entry], section: &str) -> Result<(), ConfigError> {
    let key = &entry.key;
    let at = |message: String| invalid(entry.key_location(), &format!("{section}.{key}"), message);
    let well_formed = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !well_formed {
        return Err(at(
            "a key path is dotted names, e.g. training.learning_rate".to_string(),
        ));
    }
    if SWEEP_OWNED.contains(&key.as_str()) {
        return Err(at(format!(
            "{key} is set by the sweep for every variant; it cannot be swept"
        )));
    }
    for other in earlier {
        let nested =
            |a: &str, b: &str| a.starts_with(b) && a.as_bytes().get(b.len()) == Some(&b'.');
        if nested(key, &other.key) || nested(&other.key, key) {
            return Err(at(format!(
                "overlaps {:?} (at {}): one would overwrite the other",
                other.key,
                other.key_location()
            )));
        }
    }
    Ok(())
}

fn dist(entry: &Entry) -> Result<Dist, ConfigError> {
    let key = format!("random.space.{}", entry.key);
    let shape =
        "must be {uniform: [low, high]}, {log_uniform: [low, high]} or {choice: [values...]}";
    let [kind] = entry.value.entries() else {
        return Err(invalid(entry.value.location(), &key, shape.to_string()));
    };
    let key = format!("{key}.{}", kind.key);
    let bounds = || -> Result<(f64, f64), ConfigError> {
        let bounds: Vec<f64> = kind.value.deserialize().map_err(|err| under(&key, err))?;
        match bounds[..] {
            [low, high] if low.is_finite() && high.is_finite() && low < high => Ok((low, high)),
            _ => Err(invalid(
                kind.value.location(),
                &key,
                format!("must be [low, high] with low < high, got {bounds:?}"),
            )),
        }
    };
    match kind.key.as_str() {
        "uniform" => {
            let (low, high) = bounds()?;
            Ok(Dist::Uniform {
                low,
                high,
                at: kind.value.clone(),
            })
        }
        "log_uniform" => {
            let (low, high) = bounds()?;
            if low <= 0.0 {
                return Err(invalid(
                    kind.value.location(),
                    &key,
                    format!("needs low > 0, got {low}"),
                ));
            }
            Ok(Dist::LogUniform {
                low,
                high,
                at: kind.value.clone(),
            })
        }
        "choice" => match kind.value.items() {
            Some(items) if !items.is_empty() => Ok(Dist::Choice(items.to_vec())),
            _ => Err(invalid(
                kind.value.location(),
                &key,
                "must be a non-empty list".to_string(),
            )),
        },
        _ => Err(invalid(kind.key_location(), &key, shape.to_string())),
    }
}

impl Dist {
    fn draw(&self, rng: &mut SplitMix64) -> Node {
        match self {
            Dist::Uniform { low, high, at } => {
                Node::number_at(round6(low + rng.unit() * (high - low)), at)
            }
            Dist::LogUniform { low, high, at } => {
                let (ln_low, ln_high) = (low.ln(), high.ln());
                Node::number_at(round6((ln_low + rng.unit() * (ln_high - ln_low)).exp()), at)
            }
            Dist::Choice(items) => {
                let index = ((rng.unit() * items.len() as f64) as usize).min(items.len() - 1);
                items[index].clone()
            }
        }
    }
}

/// Six significant digits: readable, and the same on every machine even
/// where `ln`/`exp` differ in their last bit.
fn round6(x: f64) -> f64 {
    format!("{x:.5e}").parse().unwrap_or(x)
}

/// SplitMix64 (Steele, Lea & Flood): a fixed, tiny generator, so that a
/// random space draws the same points on every machine and every version of
/// this program, whatever a dependency does to its own algorithms.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The last part of each key path, or the whole path where two keys share it.
fn short_names(keys: &[String]) -> Vec<String> {
    let leaf = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    keys.iter()
        .map(|k| {
            let mine = leaf(k);
            if keys.iter().filter(|other| leaf(other) == mine).count() > 1 {
                k.clone()
            } else {
                mine
            }
        })
        .collect()
}

/// `learning_rate-0.001_dropout-0.2`: readable, and a valid variant name.
fn grid_name(leaves: &[String], values: &[Value]) -> String {
    let parts: Vec<String> = leaves
        .iter()
        .zip(values)
        .map(|(leaf, value)| format!("{leaf}-{}", name_part(value)))
        .collect();
    let mut name = parts.join("_");
    while name.contains("..") {
        name = name.replace("..", "._");
    }
    if name.len() > crate::names::MAX_NAME_LEN {
        let hash = hex::encode(Sha256::digest(name.as_bytes()));
        name.truncate(crate::names::MAX_NAME_LEN - 9);
        name = format!("{name}-{}", &hash[..8]);
    }
    name
}

fn name_part(value: &Value) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match value {
        Value::Array(items) => items.iter().map(name_part).collect::<Vec<_>>().join("x"),
        Value::Object(_) => {
            let hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
            format!("map{}", &hash[..6])
        }
        other => clean(&display_value(other)),
    }
}
