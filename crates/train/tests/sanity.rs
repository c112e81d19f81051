//! The original project's sanity checks (Phase 3) and the guarantees users
//! rely on: reproducible runs and resumes that match an uninterrupted run.
//! Small subsets and few epochs keep them within seconds on 2 cores.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sweep_core::config::{DatasetKind, ExperimentConfig};
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_train::checkpoint::Checkpoint;
use sweep_train::{Dataset, NoHooks, TrainError, TrainHooks, train};
use tch::Tensor;

/// libtorch's generator and thread count are process-wide, so runs in this
/// file take turns.
static LIBTORCH: Mutex<()> = Mutex::new(());

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

fn config(yaml: &str) -> ExperimentConfig {
    let base = "name: sanity\ntraining: {threads: 1, device: cpu}\nlogging: {tensorboard: true}\n"
        .to_string();
    ExperimentConfig::from_layers(&[
        ("base.yaml".into(), base),
        ("test.yaml".into(), yaml.to_string()),
    ])
    .expect("test config is valid")
}

fn mnist() -> Dataset {
    Dataset::load(DatasetKind::Mnist, &mnist_dir()).expect("data/mnist ships with the repository")
}

fn final_train_acc(metrics: &RunMetrics) -> f64 {
    metrics.epochs.last().expect("at least one epoch").train_acc
}

#[test]
fn overfits_128_samples() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let run = tempfile::tempdir().unwrap();
    let config = config(
        "model: {type: fc, dropout: 0.0}
data: {subset: {train: 160, test: 100}, batch_size: 32}
training: {epochs: 50}",
    );
    let metrics = train(&config, &mnist(), run.path(), false, &mut NoHooks).unwrap();
    let acc = final_train_acc(&metrics);
    assert!(
        acc >= 0.99,
        "training accuracy on 128 samples reached only {acc}"
    );
}

#[test]
fn random_labels_stay_near_chance_on_held_out_data() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let run = tempfile::tempdir().unwrap();
    let mut data = mnist();
    tch::manual_seed(0);
    data.train_pool.labels = Tensor::randint(
        10,
        [data.train_pool.len()],
        (tch::Kind::Int64, tch::Device::Cpu),
    );
    let config = config(
        "data: {subset: {train: 3000, test: 1000}, batch_size: 64}
training: {epochs: 5}",
    );
    let metrics = train(&config, &data, run.path(), false, &mut NoHooks).unwrap();
    let val = metrics.epochs.iter().map(|e| e.val_acc).fold(0.0, f64::max);
    assert!(
        val < 0.16,
        "validation accuracy {val} is far from chance (0.10) with random labels"
    );
}

#[test]
fn single_batch_loss_goes_to_zero() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let run = tempfile::tempdir().unwrap();
    let config = config(
        "model: {type: fc, dropout: 0.0}
data: {subset: {train: 80, test: 100}, batch_size: 64}
training: {epochs: 60, learning_rate: 0.003}",
    );
    let metrics = train(&config, &mnist(), run.path(), false, &mut NoHooks).unwrap();
    let loss = metrics.epochs.last().unwrap().train_loss;
    assert!(
        loss < 0.01,
        "loss on a single batch of 64 only fell to {loss}"
    );
}

#[test]
fn scratch_network_learns() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let run = tempfile::tempdir().unwrap();
    let config = config(
        "model: {type: fc_scratch, hidden_sizes: [64]}
data: {subset: {train: 2000, test: 500}}
training: {epochs: 3, optimizer: sgd, learning_rate: 0.05}",
    );
    let metrics = train(&config, &mnist(), run.path(), false, &mut NoHooks).unwrap();
    let test = metrics.test.unwrap().test_acc;
    assert!(
        test > 0.8,
        "hand-written network reached only {test} test accuracy"
    );
}

/// Per-epoch metrics without the wall-clock seconds, which differ between runs.
fn comparable(metrics: &RunMetrics) -> Vec<EpochMetrics> {
    metrics
        .epochs
        .iter()
        .map(|e| EpochMetrics { seconds: 0.0, ..*e })
        .collect()
}

const RESUME_CONFIG: &str =
    "model: {type: fc, hidden_sizes: [64, 32], dropout: 0.2, batch_norm: true}
data: {subset: {train: 2000, test: 500}, batch_size: 64, augment: {enabled: true}}
training: {epochs: 4, optimizer: adamw, weight_decay: 0.01, lr_schedule: {type: cosine}}";

#[test]
fn same_config_and_seed_give_identical_metrics() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let data = mnist();
    let config = config(RESUME_CONFIG);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = train(&config, &data, a.path(), false, &mut NoHooks).unwrap();
    let second = train(&config, &data, b.path(), false, &mut NoHooks).unwrap();
    assert_eq!(comparable(&first), comparable(&second));
    assert_eq!(first.test, second.test);
    let mut other_seed = config.clone();
    other_seed.seed += 1;
    let c = tempfile::tempdir().unwrap();
    let third = train(&other_seed, &data, c.path(), false, &mut NoHooks).unwrap();
    assert_ne!(
        comparable(&first),
        comparable(&third),
        "the seed must matter"
    );
}

/// Stops the run in the middle of the epoch after `after_epoch`.
struct StopAfter {
    after_epoch: u32,
    seen: u32,
    steps_in_next: std::cell::Cell<u32>,
}

impl TrainHooks for StopAfter {
    fn on_epoch(&mut self, epoch: &EpochMetrics, _: &Checkpoint) {
        self.seen = epoch.epoch;
    }
    fn should_stop(&self) -> bool {
        if self.seen < self.after_epoch {
            return false;
        }
        self.steps_in_next.set(self.steps_in_next.get() + 1);
        self.steps_in_next.get() > 5
    }
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let data = mnist();
    let config = config(RESUME_CONFIG);
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = train(&config, &data, whole.path(), false, &mut NoHooks).unwrap();

    let split = tempfile::tempdir().unwrap();
    let mut stopper = StopAfter {
        after_epoch: 2,
        seen: 0,
        steps_in_next: Default::default(),
    };
    let err = train(&config, &data, split.path(), false, &mut stopper).unwrap_err();
    assert!(matches!(err, TrainError::Stopped), "{err}");
    let resumed = train(&config, &data, split.path(), true, &mut NoHooks).unwrap();

    assert_eq!(comparable(&uninterrupted), comparable(&resumed));
    assert_eq!(uninterrupted.test, resumed.test);
    let on_disk: RunMetrics =
        serde_json::from_slice(&std::fs::read(split.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(comparable(&on_disk), comparable(&uninterrupted));
}

#[test]
fn run_directory_has_the_documented_layout() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let run = tempfile::tempdir().unwrap();
    let config = config(
        "model: {type: cnn, batch_norm: true, dropout: 0.5}
data: {subset: {train: 300, test: 100}}
training: {epochs: 2, early_stopping: {patience: 1, min_delta: 0.0}}",
    );
    let metrics = train(&config, &mnist(), run.path(), false, &mut NoHooks).unwrap();
    for file in [
        "config.yaml",
        "metrics.json",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
    ] {
        assert!(run.path().join(file).is_file(), "{file} is missing");
    }
    let saved = ExperimentConfig::load(&run.path().join("config.yaml")).unwrap();
    assert_eq!(saved, config, "config.yaml is the resolved config that ran");
    let events = std::fs::read_dir(run.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .expect("a TensorBoard event file");
    let scalars = sweep_core::tensorboard::read_scalars(&events).unwrap();
    let val_steps: Vec<i64> = scalars
        .iter()
        .filter(|s| s.tag == "loss/val")
        .map(|s| s.step)
        .collect();
    assert_eq!(val_steps.len(), metrics.epochs.len());
    let weights =
        Tensor::read_safetensors(run.path().join("checkpoints/best.safetensors")).unwrap();
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "conv1.weight",
        "bn2.running_mean",
        "bn2.num_batches_tracked",
        "fc2.bias",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn fashion_mnist_loads_when_installed() {
    let dir = sweep_train::data::default_data_dir(DatasetKind::FashionMnist);
    if !dir.exists() {
        return sweep_testkit::skip_or_fail(format!(
            "{} is absent (apt install dataset-fashion-mnist; scripts/test-deps.sh does)",
            dir.display()
        ));
    }
    let data = Dataset::load(DatasetKind::FashionMnist, &dir).unwrap();
    assert_eq!((data.train_pool.len(), data.test.len()), (60_000, 10_000));
}

#[test]
fn truncated_data_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(mnist_dir().join(name), dir.path().join(name)).unwrap();
    }
    let victim = dir.path().join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = Dataset::load(DatasetKind::Mnist, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("train-labels-idx1-ubyte.gz"), "{err}");
}
