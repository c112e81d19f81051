//! Property tests ("fuzzing" with proptest) of what reads untrusted text: the
//! config parser, which the coordinator runs on sweeps submitted over the
//! network, and name validation, which stands between network input and the
//! file system.
//!
//! Properties: no input panics, every config error names the file it came
//! from, no config that loads needs more memory to train than the cap (and
//! the estimate of that memory never panics, however absurd the sizes), and
//! no name that could escape a directory is accepted.
//!
//! Each property runs `SWEEP_FUZZ_CASES` cases (default 2,000, small enough
//! for `make test`); SECURITY.md records the longer runs. Failures found are
//! kept by proptest in `fuzz_config.proptest-regressions` next to this file and replayed
//! first on every run; commit them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use sweep_core::config::{ConfigError, ExperimentConfig, MAX_MODEL_BYTES, ModelKind};
use sweep_core::names::{self, MAX_NAME_LEN};

/// Cases per property: `SWEEP_FUZZ_CASES` or 2,000.
fn cases() -> u32 {
    std::env::var("SWEEP_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// The shipped baseline: the starting point of the mutations.
fn baseline() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/baseline.yaml");
    std::fs::read_to_string(path).expect("configs/baseline.yaml")
}

/// Every error must let the user find the file: its message names it.
fn assert_names_file(err: &ConfigError, files: &[&Path]) {
    let message = err.to_string();
    assert!(
        files
            .iter()
            .any(|file| message.contains(&*file.display().to_string())),
        "error does not name any of {files:?}: {message}"
    );
}

// ---------------------------------------------------------------------------
// Strategies

/// Keys the schema knows, so that generated trees go deep into it instead of
/// stopping at the first unknown key.
const KEYS: &[&str] = &[
    "name",
    "seed",
    "model",
    "type",
    "input_size",
    "hidden_sizes",
    "num_classes",
    "dropout",
    "init",
    "batch_norm",
    "data",
    "dataset",
    "data_dir",
    "train_split",
    "batch_size",
    "num_workers",
    "augment",
    "subset",
    "training",
    "epochs",
    "learning_rate",
    "optimizer",
    "weight_decay",
    "early_stopping",
    "patience",
    "min_delta",
    "lr_schedule",
    "step_size",
    "gamma",
    "device",
    "threads",
    "logging",
    "log_interval",
    "save_checkpoints",
    "checkpoint_dir",
    "unknown_key",
    "<<",
    "",
];

/// A YAML value of any type, as text in flow style (`{a: 1, b: [x]}`).
fn yaml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        Just("null".to_string()),
        Just("~".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just(".nan".to_string()),
        Just("-.inf".to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
        Just("0x1F".to_string()),
        prop::sample::select(
            &[
                "fc", "cnn", "adam", "sgd", "mnist", "cpu", "cuda:99", "auto", "xavier", "step",
                "cosine"
            ][..]
        )
        .prop_map(str::to_string),
        "[a-zA-Z0-9_./-]{0,12}",
        // Quoted strings with anything in them, escapes included.
        "\\PC{0,16}".prop_map(|s| format!("{s:?}")),
        Just("&anchor 1".to_string()),
        Just("*anchor".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
    ];
    scalar.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|entries| {
                let entries: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", entries.join(", "))
            }),
        ]
    })
}

/// A whole document in block style: top-level keys of the schema (and some
/// others, and duplicates) with values of any type.
fn yaml_document() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), yaml_value()), 0..10).prop_map(|entries| {
        entries
            .iter()
            .map(|(key, value)| format!("{key}: {value}\n"))
            .collect()
    })
}

/// The baseline with one or more edits: a span removed, text inserted, or a
/// value replaced by one of another type. Mostly valid YAML, mostly wrong.
fn mutated_baseline() -> impl Strategy<Value = String> {
    let text = baseline();
    let len = text.len();
    let edit = prop_oneof![
        (0..len, 0..40usize).prop_map(|(at, n)| Edit::Remove(at, n)),
        (0..len, "\\PC{0,8}").prop_map(|(at, s)| Edit::Insert(at, s)),
        (
            0..len,
            prop::sample::select(
                &[
                    ": ", "\n", "- ", "{", "}", "[", "]", "\t", "  ", "#", "&a ", "*a", "\"", "'",
                    "\0", "\u{feff}"
                ][..]
            )
        )
            .prop_map(|(at, s)| Edit::Insert(at, s.to_string())),
        (0..len, yaml_value()).prop_map(|(at, v)| Edit::ReplaceValue(at, v)),
        (0..len).prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..4).prop_map(move |edits| {
        let mut text = text.clone();
        for edit in edits {
            edit.apply(&mut text);
        }
        text
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Remove(usize, usize),
    Insert(usize, String),
    /// Replaces the rest of the line after the `: ` found at or after the offset.
    ReplaceValue(usize, String),
    Truncate(usize),
}

impl Edit {
    fn apply(self, text: &mut String) {
        let floor = |text: &str, mut at: usize| {
            at = at.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        };
        match self {
            Edit::Remove(at, n) => {
                let start = floor(text, at);
                let end = floor(text, start + n);
                text.replace_range(start..end, "");
            }
            Edit::Insert(at, s) => {
                let at = floor(text, at);
                text.insert_str(at, &s);
            }
            Edit::ReplaceValue(at, value) => {
                let at = floor(text, at);
                if let Some(colon) = text[at..].find(": ").map(|i| at + i + 2) {
                    let end = text[colon..].find('\n').map_or(text.len(), |i| colon + i);
                    text.replace_range(colon..end, &value);
                }
            }
            Edit::Truncate(at) => {
                let at = floor(text, at);
                text.truncate(at);
            }
        }
    }
}

/// A name that must be rejected: it contains a separator, NUL or `..`, or
/// starts with a dot, wherever the hostile part sits.
fn hostile_name() -> impl Strategy<Value = String> {
    let part = "[a-zA-Z0-9._-]{0,20}";
    let bad = prop::sample::select(&["/", "\\", "\0", "..", "/..", "../", "..\\"][..]);
    prop_oneof![
        (part, bad.clone(), part).prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        (part).prop_map(|rest| format!(".{rest}")),
        ("\\PC{0,20}", bad, "\\PC{0,20}").prop_map(|(a, b, c)| format!("{a}{b}{c}")),
    ]
}

// ---------------------------------------------------------------------------
// Properties

static ARBITRARY: AtomicUsize = AtomicUsize::new(0);
static STRUCTURED: AtomicUsize = AtomicUsize::new(0);
static MUTATED: AtomicUsize = AtomicUsize::new(0);
static LAYERED: AtomicUsize = AtomicUsize::new(0);
static NAMES: AtomicUsize = AtomicUsize::new(0);
static MEMORY: AtomicUsize = AtomicUsize::new(0);

/// Reports how many cases a property ran (shown with `--nocapture`) and checks
/// that proptest ran them all.
fn report(counter: &AtomicUsize, what: &str) {
    let ran = counter.load(Ordering::SeqCst);
    eprintln!("fuzz_config: {what}: {ran} cases");
    assert!(
        ran >= cases() as usize,
        "{what}: only {ran} of {} cases ran",
        cases()
    );
}

#[test]
fn arbitrary_text_never_panics_and_errors_name_the_file() {
    let file = PathBuf::from("fuzz/arbitrary.yaml");
    proptest!(config(), |(text in "\\PC{0,400}")| {
        ARBITRARY.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = ExperimentConfig::from_yaml(&text, &file) {
            assert_names_file(&err, &[&file]);
        }
    });
    // Raw bytes too, as a file on disk would hold them (lossily decoded, as a
    // reader of untrusted files would).
    proptest!(config(), |(bytes in prop::collection::vec(any::<u8>(), 0..400))| {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(err) = ExperimentConfig::from_yaml(&text, &file) {
            assert_names_file(&err, &[&file]);
        }
    });
    report(&ARBITRARY, "arbitrary text");
}

#[test]
fn structured_but_wrong_yaml_never_panics_and_errors_name_the_file() {
    let file = PathBuf::from("fuzz/structured.yaml");
    proptest!(config(), |(text in yaml_document())| {
        STRUCTURED.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = ExperimentConfig::from_yaml(&text, &file) {
            assert_names_file(&err, &[&file]);
        }
    });
    report(&STRUCTURED, "structured YAML");
}

#[test]
fn mutated_baseline_never_panics_and_errors_name_the_file() {
    let file = PathBuf::from("fuzz/mutated.yaml");
    proptest!(config(), |(text in mutated_baseline())| {
        MUTATED.fetch_add(1, Ordering::SeqCst);
        match ExperimentConfig::from_yaml(&text, &file) {
            Err(err) => assert_names_file(&err, &[&file]),
            // What loads must be valid, fit, and survive its own round trip.
            Ok(config) => {
                prop_assert!(config.validate().is_ok());
                prop_assert!(config.model_memory().bytes <= u128::from(MAX_MODEL_BYTES));
                let again = ExperimentConfig::from_yaml(&config.to_yaml(), &file);
                prop_assert!(again.is_ok(), "resolved config does not load back: {:?}", again.err());
            }
        }
    });
    report(&MUTATED, "mutated baseline");
}

#[test]
fn layered_configs_never_panic_and_errors_name_a_layer() {
    let base = PathBuf::from("fuzz/base.yaml");
    let variant = PathBuf::from("fuzz/variant.yaml");
    let over = PathBuf::from("fuzz/override.yaml");
    let baseline = baseline();
    let layer = prop_oneof![yaml_document(), mutated_baseline(), "\\PC{0,200}"];
    proptest!(config(), |(first in layer.clone(), second in layer, base_first in any::<bool>())| {
        LAYERED.fetch_add(1, Ordering::SeqCst);
        let layers = if base_first {
            vec![(base.clone(), baseline.clone()), (variant.clone(), first), (over.clone(), second)]
        } else {
            vec![(variant.clone(), first), (over.clone(), second)]
        };
        if let Err(err) = ExperimentConfig::from_layers(&layers) {
            assert_names_file(&err, &[&base, &variant, &over]);
        }
    });
    report(&LAYERED, "layered configs");
}

/// A layer width: small, large, huge (`[100000000, 100000000]` used to
/// panic inside tch) or any i64, negative ones included.
fn layer_width() -> impl Strategy<Value = i64> {
    prop_oneof![
        1..=4_096i64,
        10_000..=1_000_000i64,
        Just(100_000_000i64),
        Just(i64::MAX),
        any::<i64>(),
    ]
}

#[test]
fn model_memory_never_panics_and_oversized_models_are_refused_by_key() {
    let file = PathBuf::from("fuzz/memory.yaml");
    let kinds = prop::sample::select(&["fc", "cnn", "fc_scratch"][..]);
    let optimizers = prop::sample::select(&["adam", "adamw", "sgd"][..]);
    proptest!(config(), |(
        kind in kinds,
        widths in prop::collection::vec(layer_width(), 0..6),
        batch_norm in any::<bool>(),
        optimizer in optimizers,
        momentum in prop_oneof![Just(0.0), Just(0.9)],
    )| {
        MEMORY.fetch_add(1, Ordering::SeqCst);
        let sizes: Vec<String> = widths.iter().map(i64::to_string).collect();
        let text = format!(
            "name: m\nmodel: {{type: {kind}, hidden_sizes: [{}], batch_norm: {batch_norm}}}\n\
             training: {{optimizer: {optimizer}, momentum: {momentum}}}\n",
            sizes.join(", ")
        );
        match ExperimentConfig::from_yaml(&text, &file) {
            Ok(config) => {
                prop_assert!(config.model_memory().bytes <= u128::from(MAX_MODEL_BYTES));
                // The estimate is total on unvalidated values too.
                let mut raw = config.clone();
                raw.model.hidden_sizes = widths.clone();
                raw.model.input_size = widths.first().copied().unwrap_or(-1);
                let _ = raw.model_memory();
            }
            Err(err) => {
                assert_names_file(&err, &[&file]);
                let message = err.to_string();
                let sized = widths.iter().all(|&w| w >= 1);
                // Every width valid and a fully connected model: only its
                // memory can be wrong, and the error says so by key.
                if sized && !widths.is_empty() && kind != "cnn" {
                    prop_assert!(
                        message.contains("model.hidden_sizes: the model needs")
                            && message.contains("over the limit of"),
                        "{}", message
                    );
                }
            }
        }
    });
    report(&MEMORY, "model memory");
}

#[test]
fn a_huge_model_is_refused_naming_the_key_and_the_bytes() {
    let file = PathBuf::from("configs/huge.yaml");
    let text = "name: huge\nmodel:\n  type: fc\n  hidden_sizes: [100000000, 100000000]\n";
    let err = ExperimentConfig::from_yaml(text, &file).expect_err("a 160-petabyte model loads");
    let message = err.to_string();
    for part in [
        "configs/huge.yaml:4:",
        "model.hidden_sizes",
        "1.60e17 bytes",
        "128.0 GiB",
    ] {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    // In a sweep, as `sweepctl submit` and the coordinator load it: the
    // variant's file and the key.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        root.path().join("sweep.yaml"),
        "name: s\nbase: base.yaml\nseeds: [1]\n",
    )
    .expect("sweep");
    std::fs::write(root.path().join("base.yaml"), baseline()).expect("base");
    std::fs::write(
        root.path().join("wide.yaml"),
        "model:\n  hidden_sizes: [100000000, 100000000]\n",
    )
    .expect("variant");
    let err = sweep_core::sweep::SweepSpec::load(root.path()).expect_err("a huge variant loads");
    let message = err.to_string();
    assert!(
        message.contains("wide.yaml:2:") && message.contains("model.hidden_sizes"),
        "{message}"
    );
    // The estimate behind it, on the config as it would have been built.
    let mut config = ExperimentConfig::from_yaml("name: huge\n", &file).expect("defaults");
    config.model.hidden_sizes = vec![100_000_000, 100_000_000];
    assert_eq!(config.model.kind, ModelKind::Fc);
    assert!(config.model_memory().bytes > u128::from(MAX_MODEL_BYTES));
}

#[test]
fn no_layers_is_an_error_not_a_panic() {
    assert!(matches!(
        ExperimentConfig::from_layers(&[]),
        Err(ConfigError::NoLayers)
    ));
}

#[test]
fn names_that_could_escape_a_directory_are_never_accepted() {
    proptest!(config(), |(name in hostile_name())| {
        NAMES.fetch_add(1, Ordering::SeqCst);
        prop_assert!(names::validate("name", &name).is_err(), "accepted {:?}", name);
    });
    report(&NAMES, "hostile names");
}

#[test]
fn accepted_names_are_single_safe_path_components() {
    proptest!(config(), |(name in prop_oneof!["\\PC{0,200}", "[a-zA-Z0-9._-]{0,140}", prop::collection::vec(any::<u8>(), 0..140).prop_map(|b| String::from_utf8_lossy(&b).into_owned())])| {
        if names::validate("name", &name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
            prop_assert!(!name.contains('/') && !name.contains('\\') && !name.contains('\0'));
            prop_assert!(!name.starts_with('.') && name != ".." && name != ".");
            // Joined under a directory it stays one level below it.
            let joined = Path::new("state").join(&name);
            prop_assert_eq!(joined.parent(), Some(Path::new("state")));
            prop_assert_eq!(joined.components().count(), 2);
        }
    });
}

#[test]
fn overlong_names_are_rejected_and_the_error_is_bounded() {
    proptest!(config(), |(len in (MAX_NAME_LEN + 1)..100_000usize)| {
        let name = "a".repeat(len);
        let err = names::validate("name", &name).unwrap_err();
        prop_assert!(err.to_string().len() < 2 * MAX_NAME_LEN + 100);
    });
}
