//! The analysis of a run's best checkpoint: its hand-written forward pass
//! gives the model's own logits, its numbers agree with `sweepctl eval`, its
//! clustering is deterministic for a seed, and every file it promises exists.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::Array2;
use sweep_core::config::{DatasetKind, ExperimentConfig};
use sweep_report::analysis::{AnalysisSummary, Prediction};
use sweep_train::analysis::{analyze, cluster_failures, forward};
use sweep_train::model::Network;
use sweep_train::{Dataset, NoHooks, train};
use tch::{Device, Kind, Tensor, nn};

/// libtorch's generator and thread count are process-wide: tests take turns.
static LIBTORCH: Mutex<()> = Mutex::new(());

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist")
}

fn config(yaml: &str) -> ExperimentConfig {
    let base =
        "name: analysis\ntraining: {threads: 1, device: cpu}\nlogging: {tensorboard: false}\n";
    ExperimentConfig::from_layers(&[
        ("base.yaml".into(), base.to_string()),
        ("test.yaml".into(), yaml.to_string()),
    ])
    .expect("test config is valid")
}

fn mnist() -> Dataset {
    Dataset::load(DatasetKind::Mnist, &mnist_dir()).expect("data/mnist ships with the repository")
}

#[test]
fn hand_written_forward_gives_the_models_logits() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(7);
    let data = mnist();
    let images = data.test.images.narrow(0, 0, 16);
    for model in [
        "{type: fc, hidden_sizes: [64, 32]}",
        "{type: fc, hidden_sizes: [64], batch_norm: true}",
        "{type: fc_scratch, hidden_sizes: [48]}",
        "{type: cnn}",
        "{type: cnn, batch_norm: true}",
    ] {
        let config = config(&format!("model: {model}"));
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs.root(), &config.model).expect("network");
        // Batch norm's running statistics away from their 0/1 start, so that
        // using them wrongly shows.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.ends_with("running_mean") {
                    t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
                } else if name.ends_with("running_var") {
                    t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
                }
            }
        });
        let expected = tch::no_grad(|| net.forward_t(&images, false));
        let ours = forward(&config, &vs.variables(), &images).unwrap();
        let diff = (&expected - &ours.logits).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{model}: logits differ by {diff}");
        assert_eq!(ours.embedding.size()[0], 16);
        assert_eq!(ours.conv_maps.is_some(), model.contains("cnn"), "{model}");
    }
}

fn blobs(seed: u64) -> (Array2<f64>, Vec<Prediction>) {
    // Three well-separated blobs in 12 dimensions, 20 points each, labelled
    // by blob (true b, predicted b + 1).
    let mut state = seed;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    let rows = 60;
    let mut data = Array2::zeros((rows, 12));
    let mut failures = Vec::new();
    for r in 0..rows {
        let blob = r % 3;
        for c in 0..12 {
            data[[r, c]] = if c == blob * 4 { 10.0 } else { 0.0 } + noise();
        }
        failures.push(Prediction {
            index: 100 + r,
            label: blob as u8,
            predicted: blob as u8 + 1,
            loss: 1.0,
            confidence: 0.5,
        });
    }
    (data, failures)
}

#[test]
fn clustering_is_deterministic_for_a_seed_and_keeps_blobs_apart() {
    let (data, failures) = blobs(3);
    let a = cluster_failures(&data, &failures, 42, "test")
        .unwrap()
        .unwrap();
    let b = cluster_failures(&data, &failures, 42, "test")
        .unwrap()
        .unwrap();
    assert_eq!(a, b, "same seed, same clusters");
    // m = 60 → k = round(√30) = 5, within [2, 6].
    assert_eq!(a.k, 5);
    assert_eq!(a.clusters.iter().map(|c| c.size).sum::<usize>(), 60);
    // Each cluster lies within one blob: a single (true, predicted) pair.
    for c in &a.clusters {
        assert_eq!(c.pairs.len(), 1, "{c:?}");
        assert_eq!(c.pairs[0].count as usize, c.size);
        assert!(!c.typical.is_empty() && c.typical.len() <= 8);
    }
    // Largest first, numbered from 1.
    assert!(a.clusters.windows(2).all(|w| w[0].size >= w[1].size));
    assert_eq!(a.clusters[0].id, 1);
    assert!(
        a.explained_variance > 0.5 && a.explained_variance <= 1.0,
        "{}",
        a.explained_variance
    );
    // Too few failures: no clustering.
    let few = cluster_failures(
        &data.slice(ndarray::s![..4, ..]).to_owned(),
        &failures[..4],
        1,
        "t",
    )
    .unwrap();
    assert!(few.is_none());
}

#[test]
fn analysis_of_a_trained_run_writes_every_file_and_agrees_with_eval() {
    let _turn = LIBTORCH.lock().unwrap_or_else(|e| e.into_inner());
    let data = mnist();
    for (model, specific) in [
        ("{type: fc, hidden_sizes: [64]}", "fc1_weights.png"),
        ("{type: cnn}", "conv1_filters.png"),
    ] {
        let config = config(&format!(
            "model: {model}\ndata: {{subset: {{train: 600, test: 300}}, batch_size: 64}}\ntraining: {{epochs: 2}}"
        ));
        let run = tempfile::tempdir().unwrap();
        train(&config, &data, run.path(), false, &mut NoHooks).unwrap();
        let out = analyze(&config, &data, run.path()).unwrap();
        let s = &out.summary;

        // The same numbers as `sweepctl eval` of the same checkpoint.
        let eval = sweep_train::trainer::evaluate_checkpoint(
            &config,
            &data,
            &sweep_train::checkpoint::best_path(run.path()),
        )
        .unwrap();
        assert_eq!(s.test_samples, 300);
        assert!(
            (s.accuracy - eval.accuracy).abs() < 1e-12,
            "{} vs {}",
            s.accuracy,
            eval.accuracy
        );
        assert!(
            (s.loss - eval.loss).abs() < 1e-4,
            "{} vs {}",
            s.loss,
            eval.loss
        );
        let eval_confusion: Vec<Vec<u64>> = eval
            .confusion
            .iter()
            .map(|r| r.iter().map(|&c| c as u64).collect())
            .collect();
        assert_eq!(s.confusion, eval_confusion);
        // Top failures are failures, by decreasing loss.
        assert!(s.top_failures.iter().all(|p| p.label != p.predicted));
        assert!(s.top_failures.windows(2).all(|w| w[0].loss >= w[1].loss));

        for file in [
            "predictions.safetensors",
            "summary.json",
            "confusion_counts.png",
            "confusion_counts.svg",
            "confusion_normalized.png",
            "top_failures.png",
            "accuracy_curves.png",
            "loss_curves.svg",
            specific,
        ] {
            assert!(
                out.files.iter().any(|f| f == file),
                "{file} not in {:?}",
                out.files
            );
            assert!(out.dir.join(file).is_file(), "{file}");
        }
        if model.contains("cnn") {
            assert!(out.dir.join("activations_conv1.png").is_file());
            assert!(out.dir.join("activations_conv2.png").is_file());
        }
        if let Some(c) = &s.clusters {
            for cluster in &c.clusters {
                assert!(
                    out.dir
                        .join(format!("cluster_{}.png", cluster.id))
                        .is_file()
                );
            }
        }

        // The predictions file: four tensors of one entry per test sample.
        let tensors = Tensor::read_safetensors(out.dir.join("predictions.safetensors")).unwrap();
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .unwrap()
        };
        for name in ["label", "predicted", "loss", "confidence"] {
            assert_eq!(get(name).size(), [300], "{name}");
        }
        let predicted = Vec::<u8>::try_from(get("predicted")).unwrap();
        let label = Vec::<u8>::try_from(get("label")).unwrap();
        let right = predicted.iter().zip(&label).filter(|(p, l)| p == l).count();
        assert!((right as f64 / 300.0 - s.accuracy).abs() < 1e-12);

        // summary.json reads back through the report's loader.
        let back = AnalysisSummary::load(&out.dir.join("summary.json")).unwrap();
        assert_eq!(&back, s);
    }
}
