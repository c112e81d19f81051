//! The configs and sweeps shipped in `configs/` load, validate and expand as the
//! README promises.

use std::path::{Path, PathBuf};

use sweep_core::config::{ExperimentConfig, InitKind, LrSchedule, ModelKind};
use sweep_core::sweep::SweepSpec;

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn baseline_is_the_original_config() {
    let config = ExperimentConfig::load(&configs().join("baseline.yaml")).unwrap();
    assert_eq!(config.model.kind, ModelKind::Fc);
    assert_eq!(config.model.hidden_sizes, [256, 128]);
    assert_eq!(config.training.epochs, 20);
    assert_eq!(
        config.training.early_stopping.as_ref().map(|e| e.patience),
        Some(5)
    );
}

#[test]
fn cnn_config_loads() {
    let config = ExperimentConfig::load(&configs().join("cnn.yaml")).unwrap();
    assert_eq!(config.model.kind, ModelKind::Cnn);
    assert!(config.model.batch_norm);
}

#[test]
fn ablation_sweep_expands_to_seven_variants_over_three_seeds() {
    let spec = SweepSpec::load(&configs().join("ablations")).unwrap();
    let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "batch_norm",
            "cosine_lr",
            "kaiming_init",
            "no_dropout",
            "step_lr",
            "xavier_init"
        ]
    );
    assert_eq!(spec.seeds, [42, 123, 456]);
    let jobs = spec.expand();
    assert_eq!(jobs.len(), 21);
    let variant = |name: &str| {
        spec.variants
            .iter()
            .find(|v| v.name == name)
            .unwrap()
            .config
            .builtin()
            .expect("a built-in config")
    };
    assert_eq!(variant("xavier_init").model.init, InitKind::Xavier);
    assert_eq!(variant("no_dropout").model.dropout, 0.0);
    assert!(matches!(
        variant("step_lr").training.lr_schedule,
        LrSchedule::Step { step_size: 5, .. }
    ));
    // Everything else comes from the base.
    assert_eq!(variant("batch_norm").training.epochs, 20);
}

#[test]
fn quickstart_sweep_is_small() {
    let spec = SweepSpec::load(&configs().join("quickstart")).unwrap();
    let jobs = spec.expand();
    assert_eq!(jobs.len(), spec.variants.len() * 3);
    assert!(
        jobs.iter()
            .filter_map(|j| j.config.builtin())
            .all(|c| c.data.subset.is_some() && c.training.epochs <= 5)
    );
}

#[test]
fn cnn_jobs_are_estimated_costlier_than_fc_jobs() {
    let spec = SweepSpec::load(&configs().join("quickstart")).unwrap();
    let jobs = spec.expand();
    let cost = |variant: &str| {
        jobs.iter()
            .find(|j| j.variant == variant)
            .unwrap()
            .estimated_cost()
    };
    // Measured on 1 thread: a quickstart CNN job trains ~18× longer than an FC one.
    let ratio = cost("cnn") / cost("baseline");
    assert!((10.0..30.0).contains(&ratio), "CNN/FC cost ratio {ratio}");
}

/// examples/pytorch: the PyTorch trainer as a command job beside the built-in
/// one, on the same config (the command keys apart) and seeds.
#[test]
fn pytorch_examples_compare_like_with_like() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pytorch");
    for sweep in [examples.join("compare"), examples.join("smoke.yaml")] {
        let spec = SweepSpec::load(&sweep).unwrap();
        let names: Vec<&str> = spec.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["rust", "pytorch"], "{}", sweep.display());
        let rust = spec.variants[0].config.builtin().expect("built-in");
        let sweep_core::command::JobConfig::Command(torch) = &spec.variants[1].config else {
            panic!("the pytorch variant is not a command job");
        };
        assert_eq!(torch.command[..2], ["python3", "examples/pytorch/train.py"]);
        // Every key of the built-in config reaches the program with its value.
        let rust_values: serde_json::Value = serde_saphyr::from_str(&rust.to_yaml()).expect("yaml");
        for key in [
            "model.hidden_sizes",
            "model.dropout",
            "training.learning_rate",
            "training.epochs",
            "data.batch_size",
        ] {
            let mut expected = &rust_values;
            for part in key.split('.') {
                expected = &expected[part];
            }
            assert_eq!(torch.lookup(key), Some(expected), "{key}");
        }
    }
}

#[test]
fn lr_dropout_grid_expands_to_nine_points_with_a_baseline_by_values() {
    let spec = SweepSpec::load(&configs().join("lr_dropout")).unwrap();
    assert_eq!(
        spec.swept_keys,
        ["training.learning_rate", "model.dropout"],
        "keys in the file's order"
    );
    assert_eq!(spec.variants.len(), 9);
    assert_eq!(spec.expand().len(), 18);
    let baseline = spec
        .variants
        .iter()
        .find(|v| v.name == spec.baseline)
        .expect("the baseline is a point of the grid");
    let config = baseline.config.builtin().expect("a built-in config");
    assert_eq!(config.training.learning_rate, 1.0e-3);
    assert_eq!(config.model.dropout, 0.2);
    // The rest is the quickstart's base: 4 epochs on a subset.
    assert_eq!(config.training.epochs, 4);
}
