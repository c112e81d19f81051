//! The real coordinator on an ephemeral port with two local `sweep-worker`
//! processes runs a tiny sweep (2 variants × 2 seeds, 2 epochs,
//! a 500-image subset), and the protocol's guards refuse what they must.

use std::path::Path;
use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_proto::pb;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// Generous: two workers train four tiny jobs in well under a minute on 2 cores.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_local_workers_run_a_sweep_exactly_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let state_dir = root.path().join("runs");
    let mut config = CoordinatorConfig::new(state_dir.clone());
    config.sweep = Some(
        sweep_e2e::TinySweep {
            variants: &[sweep_e2e::NO_DROPOUT],
            ..Default::default()
        }
        .write(&root.path().join("tiny")),
    );
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.local_workers = 2;
    config.worker_binary = Some(sweep_e2e::release_bin_dir().join("sweep-worker"));
    config.local_worker_threads = Some(1);
    config.lease_timeout = Duration::from_secs(10);
    config.heartbeat_interval = Duration::from_millis(500);

    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let addr = coordinator.addr;
    let served = tokio::spawn(coordinator.wait());
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let status = sweep_e2e::wait_for_status(
        &mut client,
        "the sweep",
        SWEEP_TIMEOUT,
        sweep_e2e::all_sweeps_done,
    )
    .await;

    // Every job succeeded, on its first attempt, with one committed result.
    assert_eq!(status.sweeps.len(), 1);
    assert_eq!(status.sweeps[0].succeeded, 4, "{status:?}");
    assert_eq!(status.jobs.len(), 4);
    for job in &status.jobs {
        assert_eq!(job.state, "succeeded", "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(job.epoch, 2);
        assert!(job.test.is_some());
        let logs = client
            .get_job_logs(pb::GetJobLogsRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("logs")
            .into_inner();
        let succeeded = logs.events.iter().filter(|e| e.kind == "succeeded").count();
        assert_eq!(succeeded, 1, "{:?}", logs.events);
        let epochs = logs.events.iter().filter(|e| e.kind == "epoch").count();
        assert_eq!(epochs, 2, "{:?}", logs.events);
    }

    // The run layout, for every run.
    for variant in ["baseline", "no_dropout"] {
        for seed in [1, 2] {
            let run = state_dir
                .join("tiny")
                .join(variant)
                .join(format!("seed-{seed}"));
            for file in [
                "config.yaml",
                "metrics.json",
                "checkpoints/best.safetensors",
                "checkpoints/last.safetensors",
                "checkpoints/last.optimizer.safetensors",
                "checkpoints/last.state.json",
            ] {
                assert!(
                    run.join(file).is_file(),
                    "{} missing",
                    run.join(file).display()
                );
            }
            let metrics: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(run.join("metrics.json")).expect("metrics"),
            )
            .expect("json");
            assert_eq!(metrics["epochs"].as_array().map(Vec::len), Some(2));
            assert!(
                metrics["test"]["test_acc"]
                    .as_f64()
                    .is_some_and(|acc| acc > 0.3),
                "{metrics}"
            );
            let events = std::fs::read_dir(&run)
                .expect("run dir")
                .filter_map(|e| e.ok())
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("events.out.tfevents.")
                });
            assert!(events, "no TensorBoard events in {}", run.display());
            assert!(
                !run.join("checkpoints/.staging")
                    .join("last.safetensors")
                    .exists()
            );
        }
    }
    let csv = std::fs::read_to_string(state_dir.join("tiny/results.csv")).expect("results.csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("baseline,true,2,"), "{csv}");
    assert!(rows[1].starts_with("no_dropout,false,2,"), "{csv}");
    for ext in ["md", "json"] {
        assert!(state_dir.join(format!("tiny/results.{ext}")).is_file());
    }
    let results = client
        .get_results(pb::GetResultsRequest {
            sweep: String::new(),
            format: "csv".into(),
        })
        .await
        .expect("results")
        .into_inner();
    assert_eq!(results.rendered, csv);

    check_report(&state_dir.join("tiny")).await;

    // A stale attempt cannot commit a second result, and the state stays.
    let job = &status.jobs[0];
    let intruder = client
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION,
            name: "intruder".into(),
            host: "test".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: false,
        })
        .await
        .expect("register")
        .into_inner();
    for attempt in [0, 1, 2] {
        let refused = client
            .complete_job(pb::CompleteJobRequest {
                worker_id: intruder.worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt,
                lease_next: false,
                outcome: Some(pb::complete_job_request::Outcome::Failure(pb::Failure {
                    message: "late".into(),
                    permanent: true,
                })),
            })
            .await
            .expect_err("stale completion accepted");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let after = client
        .get_status(pb::GetStatusRequest {
            sweep: "tiny".into(),
        })
        .await
        .expect("status")
        .into_inner();
    let same = after
        .jobs
        .iter()
        .find(|j| j.job_id == job.job_id)
        .expect("job");
    assert_eq!(same.state, "succeeded");
    assert_eq!(same.test, job.test);

    // Handshake and request validation.
    let mismatch = client
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION + 1,
            name: "old".into(),
            ..Default::default()
        })
        .await
        .expect_err("version mismatch accepted");
    assert_eq!(mismatch.code(), Code::FailedPrecondition);
    let missing = client
        .report_epoch(pb::ReportEpochRequest {
            worker_id: intruder.worker_id.clone(),
            job_id: job.job_id.clone(),
            attempt: 1,
            metrics: None,
        })
        .await
        .expect_err("missing metrics accepted");
    assert_eq!(missing.code(), Code::InvalidArgument);
    let bad_sweep = client
        .submit_sweep(pb::SubmitSweepRequest {
            name: "../escape".into(),
            baseline: "baseline".into(),
            metric: "test_acc".into(),
            seeds: vec![1],
            ..Default::default()
        })
        .await
        .expect_err("path-like sweep name accepted");
    assert_eq!(bad_sweep.code(), Code::InvalidArgument);

    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("workers")
        .into_inner();
    assert!(
        workers
            .workers
            .iter()
            .filter(|w| w.name.starts_with("local-"))
            .count()
            == 2,
        "{workers:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("clean shutdown")
        .expect("join")
        .expect("coordinator");
}

/// The end of a sweep as a user finds it: every run analysed on its worker
/// and uploaded, and `report/` written: an HTML page with one SVG per chart
/// that references nothing outside itself, the Markdown with the results
/// table as `sweepctl results` prints it, and the TensorBoard seed averages.
async fn check_report(sweep_dir: &Path) {
    let html_path = sweep_dir.join("report/index.html");
    // Written right after the results; give it a moment.
    for _ in 0..300 {
        if html_path.is_file() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let html = std::fs::read_to_string(&html_path).expect("report/index.html");
    for variant in ["baseline", "no_dropout"] {
        for seed in [1, 2] {
            let analysis = sweep_dir
                .join(variant)
                .join(format!("seed-{seed}/analysis"));
            for file in [
                "summary.json",
                "predictions.safetensors",
                "confusion_counts.png",
                "confusion_normalized.svg",
                "top_failures.png",
                "accuracy_curves.png",
                "fc1_weights.png",
            ] {
                assert!(
                    analysis.join(file).is_file(),
                    "{} missing",
                    analysis.join(file).display()
                );
            }
        }
        let aggregate = sweep_dir.join("_aggregate").join(variant);
        let events = std::fs::read_dir(&aggregate)
            .expect("_aggregate/<variant>")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
            .count();
        assert_eq!(events, 1, "{}", aggregate.display());
    }
    // One SVG per chart: per-seed dots, 3 curve charts of all variants, 3
    // small ones per variant, one confusion matrix per variant.
    assert_eq!(html.matches("<svg").count(), 1 + 3 + 3 * 2 + 2, "charts");
    assert!(!html.contains("<script") && !html.contains("<link"));
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    for src in html.split("src=\"").skip(1) {
        assert!(
            src.starts_with("data:image/png;base64,"),
            "{}",
            &src[..40.min(src.len())]
        );
    }
    assert!(html.trim_end().ends_with("</html>"));
    assert!(
        !html.contains("Missing or unreadable"),
        "a complete sweep lists no problems"
    );
    let md = std::fs::read_to_string(sweep_dir.join("report/report.md")).expect("report.md");
    let table: sweep_core::results::ResultsTable = serde_json::from_str(
        &std::fs::read_to_string(sweep_dir.join("results.json")).expect("results.json"),
    )
    .expect("results table");
    assert!(
        md.contains(&table.render(sweep_core::results::Format::Markdown)),
        "{md}"
    );
}

/// A dataset that neither the worker nor the coordinator has fails the job
/// once, saying where it was looked for, instead of a worker retrying the
/// fetch for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_data_dir_fails_the_job_with_the_path() {
    let root = tempfile::tempdir().expect("tempdir");
    let sweep = sweep_e2e::TinySweep {
        name: "nodata",
        seeds: &[1],
        ..Default::default()
    }
    .write(&root.path().join("nodata"));
    let base = sweep.join("base.yaml");
    let yaml = std::fs::read_to_string(&base).expect("base.yaml");
    let missing = root.path().join("no-such-data");
    let yaml = yaml.replace(
        &sweep_e2e::mnist_dir().display().to_string(),
        &missing.display().to_string(),
    );
    std::fs::write(&base, yaml).expect("base.yaml");

    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    config.sweep = Some(sweep);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.local_workers = 1;
    config.worker_binary = Some(sweep_e2e::release_bin_dir().join("sweep-worker"));
    config.local_worker_threads = Some(1);
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let mut client = CoordinatorClient::connect(format!("http://{}", coordinator.addr))
        .await
        .expect("connect");
    let served = tokio::spawn(coordinator.wait());

    let status = sweep_e2e::wait_for_status(
        &mut client,
        "the job to fail",
        SWEEP_TIMEOUT,
        sweep_e2e::all_sweeps_done,
    )
    .await;
    let job = &status.jobs[0];
    assert_eq!(job.state, "failed", "{job:?}");
    assert_eq!(job.attempt, 1, "not worth another attempt: {job:?}");
    assert!(
        job.error.contains("data.data_dir") && job.error.contains(&missing.display().to_string()),
        "{}",
        job.error
    );
    shutdown.cancel();
    served.await.expect("join").expect("served");
}
