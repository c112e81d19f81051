//! The sweep report from a constructed sweep directory: its numbers equal the
//! results table's, it is well-formed and self-contained with one SVG per
//! chart, and corrupt or missing files are named while the rest is written.

use std::path::Path;

use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::results::{self, RunOutcome};
use sweep_report::analysis::{self, AnalysisSummary, Prediction};
use sweep_report::{SweepData, write_report};

fn metrics(seed: u64, shift: f64, epochs: u32, finished: bool) -> RunMetrics {
    let mut m = RunMetrics::default();
    for e in 1..=epochs {
        let x = f64::from(e);
        m.record_epoch(
            EpochMetrics {
                epoch: e,
                train_loss: 1.0 / x + shift,
                train_acc: 0.9 + shift - 0.01 / x,
                val_loss: 1.1 / x + shift + seed as f64 * 1e-3,
                val_acc: 0.89 + shift - 0.01 / x + seed as f64 * 1e-4,
                lr: 1e-3,
                seconds: 1.5 + seed as f64 * 0.01,
            },
            true,
        );
    }
    if finished {
        m.test = Some(TestMetrics {
            test_loss: 0.1,
            // Not round numbers: equality must hold to the last bit.
            test_acc: 0.9 + shift + (seed as f64).sqrt() * 1e-3 / 3.0,
        });
    }
    m
}

fn summary(predicted_offset: u8) -> AnalysisSummary {
    let predictions: Vec<Prediction> = (0..200)
        .map(|i| {
            let label = (i % 10) as u8;
            let wrong = i % 7 == 0;
            Prediction {
                index: i,
                label,
                predicted: if wrong {
                    (label + predicted_offset) % 10
                } else {
                    label
                },
                loss: if wrong { 2.0 + i as f64 / 100.0 } else { 0.01 },
                confidence: if wrong { 0.6 } else { 0.99 },
            }
        })
        .collect();
    let confusion = analysis::confusion_matrix(&predictions, 10).unwrap();
    AnalysisSummary {
        version: analysis::SUMMARY_VERSION,
        checkpoint: "checkpoints/best.safetensors".into(),
        test_samples: 200,
        accuracy: 0.85,
        loss: 0.3,
        per_class: analysis::class_scores(&confusion),
        confusion,
        top_failures: analysis::top_failures(&predictions, 25),
        clusters: None,
        seconds: 0.5,
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// `tiny/`: baseline and wide × seeds 1, 2, 3; wide seed 3 still running;
/// baseline seed 2's summary corrupt.
fn build_sweep(root: &Path) -> std::path::PathBuf {
    let sweep = root.join("tiny");
    for (variant, shift, offset) in [("baseline", 0.0, 1), ("wide", 0.02, 3)] {
        for seed in [1u64, 2, 3] {
            let run = sweep.join(variant).join(format!("seed-{seed}"));
            let finished = !(variant == "wide" && seed == 3);
            write_json(
                &run.join("metrics.json"),
                &metrics(seed, shift, 4 + seed as u32, finished),
            );
            if finished {
                write_json(&run.join("analysis/summary.json"), &summary(offset));
            }
        }
    }
    std::fs::write(
        sweep.join("baseline/seed-2/analysis/summary.json"),
        "{ not json",
    )
    .unwrap();
    // The coordinator's own directories are not variants.
    std::fs::create_dir_all(sweep.join("report")).unwrap();
    std::fs::create_dir_all(sweep.join("_aggregate/baseline")).unwrap();
    sweep
}

#[test]
fn numbers_equal_the_results_table() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let data = SweepData::load(&sweep, None).unwrap();
    assert_eq!(data.baseline, "baseline");
    assert_eq!(data.variants(), ["baseline", "wide"]);
    // What the coordinator would compute from the same finished runs.
    let mut outcomes = Vec::new();
    for (variant, shift) in [("baseline", 0.0), ("wide", 0.02)] {
        for seed in [1u64, 2, 3] {
            let m = metrics(
                seed,
                shift,
                4 + seed as u32,
                !(variant == "wide" && seed == 3),
            );
            if let Some(test) = m.test {
                outcomes.push(RunOutcome {
                    variant: variant.into(),
                    seed,
                    test_acc: test.test_acc,
                    best_val_acc: m.best_val_acc.unwrap(),
                    best_epoch: m.best_epoch,
                    train_seconds: m.train_seconds,
                    device: None,
                });
            }
        }
    }
    let expected = results::summarize("tiny", "baseline", &outcomes, 1);
    assert_eq!(data.table(), expected, "bit-for-bit the same table");

    // The page shows the table's own formatting of those numbers.
    let out = root.path().join("out");
    write_report(&sweep, &out, None).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(&expected.render(results::Format::Markdown)),
        "{md}"
    );
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    for v in &expected.variants {
        assert!(
            html.contains(&results::mean_std(v.test_acc, 100.0, 2)),
            "{}",
            v.variant
        );
    }
}

#[test]
fn report_is_self_contained_and_names_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let written = write_report(&sweep, &sweep.join("report"), None).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();

    // Well-formed (as XML, which is stricter than HTML needs).
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&html, options).unwrap_or_else(|e| panic!("{e}"));
    // One SVG per chart: the dot plot, three all-variant curve charts, three
    // small charts per variant, and a confusion matrix per analysed variant.
    let svgs = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .count();
    assert_eq!(svgs, 1 + 3 + 3 * 2 + 2, "charts");
    // Nothing outside itself: no script, no stylesheet link, no URL but data:.
    for node in doc.descendants() {
        assert_ne!(node.tag_name().name(), "script");
        assert_ne!(node.tag_name().name(), "link");
        for attr in node.attributes() {
            if matches!(attr.name(), "src" | "href") {
                assert!(
                    attr.value().starts_with("data:"),
                    "{}={}",
                    attr.name(),
                    attr.value()
                );
            }
        }
    }
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    assert!(!html.contains("url("), "no CSS fetches");

    // The corrupt summary and the unfinished run are named; the rest is there.
    let corrupt = sweep.join("baseline/seed-2/analysis/summary.json");
    assert!(
        written
            .problems
            .iter()
            .any(|p| p.contains(&corrupt.display().to_string())),
        "{:?}",
        written.problems
    );
    assert!(
        written.problems.iter().any(|p| p.contains("wide seed 3")),
        "{:?}",
        written.problems
    );
    assert!(
        html.contains("Missing or unreadable (2)"),
        "two problems listed"
    );
    assert!(html.contains("5 of 6 runs finished"));
    // Baseline's confusion sums its two readable seeds.
    assert!(html.contains("baseline: confusion over 2 seeds"));
    assert!(html.contains("wide: confusion over 2 seeds"));
    // Per-class accuracy against the baseline: class 0 errs on 1 of 20·… equally in both.
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(
        md.contains("| digit | accuracy % | Δ vs baseline (pp) |"),
        "{md}"
    );
}

#[test]
fn unreadable_metrics_are_named_and_do_not_stop_the_report() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let bad = sweep.join("wide/seed-1/metrics.json");
    std::fs::write(&bad, [0xff, 0x00, 0x13]).unwrap();
    let written = write_report(&sweep, &root.path().join("out"), None).unwrap();
    assert!(
        written
            .problems
            .iter()
            .any(|p| p.starts_with(&bad.display().to_string())),
        "{:?}",
        written.problems
    );
    let data = SweepData::load(&sweep, None).unwrap();
    let wide = data
        .table()
        .variants
        .into_iter()
        .find(|v| v.variant == "wide")
        .unwrap();
    assert_eq!(wide.n, 1, "only seed 2 of wide is left");
}

#[test]
fn aggregate_event_files_hold_mean_and_band() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let data = SweepData::load(&sweep, None).unwrap();
    // Twice: a rewrite replaces, never adds, event files.
    sweep_report::aggregate::write_aggregate(&data).unwrap();
    let files = sweep_report::aggregate::write_aggregate(&data).unwrap();
    assert_eq!(files.len(), 2);
    let dir = sweep.join("_aggregate/baseline");
    let events: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(events.len(), 1);
    let scalars = sweep_core::tensorboard::read_scalars(&events[0].path()).unwrap();
    // Epoch 1 of val accuracy: the mean of the three seeds' values.
    let at = |tag: &str, step: i64| {
        scalars
            .iter()
            .find(|s| s.tag == tag && s.step == step)
            .map(|s| f64::from(s.value))
            .unwrap_or_else(|| panic!("{tag}@{step}"))
    };
    let vals: Vec<f64> = (1..=3)
        .map(|seed: u64| 0.89 - 0.01 + seed as f64 * 1e-4)
        .collect();
    let mean = vals.iter().sum::<f64>() / 3.0;
    assert!((at("accuracy/val", 1) - mean).abs() < 1e-6);
    assert!(at("accuracy/val_mean+std", 1) > at("accuracy/val", 1));
    assert!(at("accuracy/val_mean-std", 1) < at("accuracy/val", 1));
    // Epoch 7 only seed 3 reached: a mean, and no band.
    assert!(scalars.iter().any(|s| s.tag == "loss/val" && s.step == 7));
    assert!(
        !scalars
            .iter()
            .any(|s| s.tag == "loss/val_mean+std" && s.step == 7)
    );
}

#[test]
fn a_grid_sweep_plots_the_metric_against_each_swept_key() {
    let root = tempfile::tempdir().unwrap();
    let sweep = root.path().join("grid");
    let mut values = std::collections::BTreeMap::new();
    for (i, lr) in ["0.001", "0.0003"].into_iter().enumerate() {
        for (j, dropout) in ["0.0", "0.5"].into_iter().enumerate() {
            let variant = format!("learning_rate-{lr}_dropout-{dropout}");
            for seed in [1u64, 2] {
                let shift = 0.01 * (i + 2 * j) as f64;
                write_json(
                    &sweep
                        .join(&variant)
                        .join(format!("seed-{seed}/metrics.json")),
                    &metrics(seed, shift, 3, true),
                );
            }
            values.insert(variant, vec![lr.to_string(), dropout.to_string()]);
        }
    }
    // The coordinator writes the swept keys and values into results.json.
    let keys = [
        "training.learning_rate".to_string(),
        "model.dropout".to_string(),
    ];
    let mut written = SweepData::load(&sweep, Some("learning_rate-0.001_dropout-0.0"))
        .unwrap()
        .table();
    written.set_swept(&keys, &values);
    write_json(&sweep.join("results.json"), &written);

    let data = SweepData::load(&sweep, None).unwrap();
    assert_eq!(
        data.table(),
        written,
        "swept columns read back from results.json"
    );
    let out = root.path().join("out");
    write_report(&sweep, &out, None).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        html.contains("Test accuracy against the swept keys"),
        "{html}"
    );
    for key in &keys {
        assert!(
            html.contains(&format!("Test accuracy against {key}")),
            "a chart for {key}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("training.learning_rate"),
        "swept column in {md}"
    );
}
