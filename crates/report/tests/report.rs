//! The sweep report from a constructed sweep directory: its numbers equal the
//! results table's, it is well-formed and self-contained with one SVG per
//! chart, and corrupt or missing files are named while the rest is written;
//! failed runs read as failed, and command jobs miss no analysis.

use std::path::Path;

use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::provenance::{AttemptProvenance, RunProvenance};
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

/// The page parsed (as XML, which is stricter than HTML needs).
fn parse(html: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, options).unwrap_or_else(|e| panic!("{e}"))
}

/// The text of a node and its descendants (a `<wbr/>` adds none).
fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

/// A command job's resolved config, as the coordinator writes it.
fn command_config(variant: &str, seed: u64) -> String {
    format!(
        "{{\"command\": [\"./train.sh\"], \"name\": \"{variant}\", \"seed\": {seed}, \"training\": {{\"epochs\": 3}}}}\n"
    )
}

/// `cmd/`: a command job's sweep: `ok` seeds 1 and 2 finished (no analysis,
/// as always for the user's program); `crash` seeds 1 and 2 failed on every
/// attempt before an epoch, so they have no metrics.json.
fn build_command_sweep(root: &Path) -> std::path::PathBuf {
    let sweep = root.join("cmd");
    for seed in [1u64, 2] {
        let ok = sweep.join("ok").join(format!("seed-{seed}"));
        write_json(&ok.join("metrics.json"), &metrics(seed, 0.0, 3, true));
        std::fs::write(ok.join("config.yaml"), command_config("ok", seed)).unwrap();
        let crash = sweep.join("crash").join(format!("seed-{seed}"));
        std::fs::create_dir_all(&crash).unwrap();
        std::fs::write(crash.join("config.yaml"), command_config("crash", seed)).unwrap();
        let attempt = |n: u32, outcome: &str| AttemptProvenance {
            attempt: n,
            outcome: outcome.into(),
            message: "the program exited with status 3; last lines of stderr:\nRuntimeError: boom"
                .into(),
            ..Default::default()
        };
        write_json(
            &crash.join("provenance.json"),
            &RunProvenance {
                job_id: format!("crash-seed-{seed}-0000"),
                sweep: "cmd".into(),
                variant: "crash".into(),
                seed,
                state: "failed".into(),
                config_sha256: String::new(),
                attempts: vec![attempt(1, "retry"), attempt(2, "failed")],
            },
        );
    }
    sweep
}

#[test]
fn failed_runs_read_as_failed_and_command_jobs_miss_no_analysis() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_command_sweep(root.path());
    let data = SweepData::load(&sweep, Some("ok")).unwrap();
    let table = data.table();
    assert_eq!(
        (table.pending, table.failed),
        (0, 2),
        "failed, not unfinished"
    );
    let written = sweep_report::report::write_data(&data, &root.path().join("out")).unwrap();
    // Neither the failed runs' missing metrics nor the command jobs' missing
    // analysis is a problem: nothing is missing that should be there.
    assert!(written.problems.is_empty(), "{:?}", written.problems);
    let html = std::fs::read_to_string(&written.html).unwrap();
    assert!(!html.contains("Missing or unreadable"), "{html}");
    assert!(!html.contains("has not started"), "{html}");
    assert!(html.contains("2 of 4 runs finished (2 failed)"), "{html}");
    assert!(html.contains("Runs without a result (2)"), "{html}");
    assert!(
        html.contains(
            "crash seed 1 (job crash-seed-1-0000): failed after 2 attempts: the program exited \
             with status 3; last lines of stderr: RuntimeError: boom"
        ),
        "the error, on one line: {html}"
    );
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("2 jobs failed"), "{md}");
    assert!(!md.contains("not finished yet"), "{md}");
    assert!(
        md.contains("command jobs"),
        "why there is no analysis: {md}"
    );

    let doc = parse(&html);
    let svgs: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .collect();
    let texts = |svg: &roxmltree::Node<'_, '_>| -> Vec<String> {
        svg.descendants()
            .filter(|n| n.tag_name().name() == "text")
            .map(|n| text_of(n).trim().to_string())
            .collect()
    };
    // The all-variant curves have no legend row for crash, which has no line.
    let all: Vec<_> = svgs
        .iter()
        .filter(|s| texts(s).iter().any(|t| t == "Validation accuracy"))
        .collect();
    assert_eq!(all.len(), 1);
    assert!(
        !texts(all[0]).iter().any(|t| t.contains("crash")),
        "{:?}",
        texts(all[0])
    );
    assert!(html.contains("Not drawn, no epoch recorded: crash (failed)."));
    // Its panel says it failed, on the same epochs as ok's panel (1 to 3).
    let panel = svgs
        .iter()
        .find(|s| texts(s).iter().any(|t| t == "crash (2 seeds)"))
        .expect("crash's panel");
    let panel_texts = texts(panel);
    assert!(
        panel_texts.iter().any(|t| t == "failed: no epoch recorded"),
        "{panel_texts:?}"
    );
    assert!(
        panel_texts.iter().any(|t| t == "3"),
        "x axis to epoch 3: {panel_texts:?}"
    );
}

#[test]
fn a_missing_analysis_of_a_built_in_run_is_still_named() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let summary = sweep.join("wide/seed-1/analysis/summary.json");
    std::fs::remove_file(&summary).unwrap();
    let data = SweepData::load(&sweep, None).unwrap();
    assert!(
        data.problems
            .iter()
            .any(|p| p.contains(&summary.display().to_string()) && p.contains("no analysis")),
        "{:?}",
        data.problems
    );
}

#[test]
fn the_results_table_has_the_swept_columns_and_clusters_show_one_per_row() {
    let root = tempfile::tempdir().unwrap();
    let sweep = build_sweep(root.path());
    let keys = ["model.hidden".to_string()];
    let values = [("baseline", "64"), ("wide", "512")]
        .map(|(v, x)| (v.to_string(), vec![x.to_string()]))
        .into();
    let mut table = SweepData::load(&sweep, None).unwrap().table();
    table.set_swept(&keys, &values);
    write_json(&sweep.join("results.json"), &table);
    // Baseline seed 1 has one failure cluster and its figure.
    let run = sweep.join("baseline/seed-1/analysis");
    let mut with_clusters = summary(1);
    with_clusters.clusters = Some(analysis::FailureClusters {
        failures: 29,
        embedding: "penultimate layer".into(),
        pca_dims: 8,
        explained_variance: 0.9,
        k: 1,
        k_rule: "one".into(),
        seed: 0,
        clusters: vec![analysis::FailureCluster {
            id: 1,
            size: 29,
            pairs: Vec::new(),
            typical: vec![7],
        }],
    });
    write_json(&run.join("summary.json"), &with_clusters);
    let png = sweep_report::curves_png(&sweep_report::CurveChart::new("c", "y", vec![])).unwrap();
    std::fs::write(run.join("cluster_1.png"), png).unwrap();

    let written = write_report(&sweep, &root.path().join("out"), None).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    let doc = parse(&html);
    let results = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("results"))
        .expect("the results table");
    let rows: Vec<Vec<String>> = results
        .children()
        .filter(|n| n.tag_name().name() == "tr")
        .map(|tr| {
            tr.children()
                .filter(|c| c.is_element())
                .map(text_of)
                .collect()
        })
        .collect();
    assert_eq!(rows[0][..3], ["variant", "model.hidden", "n"], "{rows:?}");
    assert_eq!(rows[1][..3], ["baseline", "64", "3"], "{rows:?}");
    assert_eq!(rows[2][..3], ["wide", "512", "2"], "{rows:?}");
    // The interval under its value, not a column of its own.
    assert!(rows[0][3].starts_with("test acc %") && rows[0][3].ends_with("95% CI"));

    // A cluster's figure is shown alone on its row, at its own size, not
    // shrunk into a row of several.
    let img = doc
        .descendants()
        .find(|n| n.attribute("alt") == Some("cluster 1 of baseline seed 1"))
        .expect("the cluster's image");
    let container = img.parent().and_then(|f| f.parent()).unwrap();
    assert_eq!(container.attribute("class"), Some("clusters"));
}
