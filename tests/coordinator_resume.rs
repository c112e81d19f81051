//! A worker that stops mid-job (as on SIGTERM) leaves its lease to expire; a
//! second worker then resumes the job from the checkpoint the coordinator
//! holds, and the job still ends with exactly one result. Its provenance
//! records both attempts: who ran each, where, on what, and how it ended.

use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_proto::CoordinatorClient;
use sweep_proto::pb;
use sweep_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_worker_job_resumes_from_its_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    let sweep = sweep_e2e::TinySweep {
        name: "one",
        seeds: &[7],
        epochs: 30,
        ..Default::default()
    }
    .write(&root.path().join("one"));

    let state_dir = root.path().join("runs");
    let mut config = CoordinatorConfig::new(state_dir.clone());
    config.sweep = Some(sweep);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.lease_timeout = Duration::from_millis(1500);
    config.heartbeat_interval = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let addr = coordinator.addr.to_string();
    let served = tokio::spawn(coordinator.wait());
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let worker = |name: &str| {
        let mut config = WorkerConfig::new(addr.clone());
        config.name = name.into();
        config.threads = Some(1);
        config.cache_dir = root.path().join(name);
        config
    };
    let first_stop = CancellationToken::new();
    let first = tokio::spawn(sweep_worker::run(worker("first"), first_stop.clone()));

    // Wait for a committed checkpoint (the state file is uploaded last).
    let job_id = tokio::time::timeout(TIMEOUT, async {
        loop {
            let status = client
                .get_status(pb::GetStatusRequest::default())
                .await
                .expect("status")
                .into_inner();
            if let Some(job) = status.jobs.first() {
                let logs = client
                    .get_job_logs(pb::GetJobLogsRequest {
                        job_id: job.job_id.clone(),
                    })
                    .await
                    .expect("logs")
                    .into_inner();
                if logs
                    .events
                    .iter()
                    .any(|e| e.kind == "artifact" && e.message.starts_with("last.state.json"))
                {
                    return job.job_id.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a checkpoint in time");
    first_stop.cancel();
    first.await.expect("join").expect("first worker");

    let second_stop = CancellationToken::new();
    let second = tokio::spawn(sweep_worker::run(worker("second"), second_stop.clone()));
    let status = sweep_e2e::wait_for_status(
        &mut client,
        "the sweep",
        TIMEOUT,
        sweep_e2e::all_sweeps_done,
    )
    .await;
    let job = status.jobs[0].clone();
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert_eq!(job.attempt, 2, "{job:?}");

    let logs = client
        .get_job_logs(pb::GetJobLogsRequest { job_id })
        .await
        .expect("logs")
        .into_inner();
    let kinds: Vec<&str> = logs.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "expired").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "succeeded").count(),
        1,
        "{kinds:?}"
    );
    // The second attempt resumed: it never redid epoch 1.
    let redone = logs
        .events
        .iter()
        .any(|e| e.kind == "epoch" && e.attempt == 2 && e.message.starts_with("epoch 1/"));
    assert!(!redone, "{:?}", logs.events);
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state_dir.join("one/baseline/seed-7/metrics.json"))
            .expect("metrics"),
    )
    .expect("json");
    let epochs = metrics["epochs"].as_array().map(Vec::len).unwrap_or(0);
    assert!(epochs >= 1 && metrics["test"].is_object(), "{metrics}");
    assert!(state_dir.join("one/results.csv").is_file());

    // Provenance: both attempts, from the store and in the run directory.
    let provenance = sweep_core::provenance::RunProvenance::try_from(
        client
            .get_provenance(pb::GetProvenanceRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("provenance")
            .into_inner(),
    )
    .expect("valid provenance");
    let run_dir = state_dir.join("one/baseline/seed-7");
    let on_disk: sweep_core::provenance::RunProvenance = serde_json::from_str(
        &std::fs::read_to_string(run_dir.join("provenance.json")).expect("provenance.json"),
    )
    .expect("provenance.json parses");
    assert_eq!(on_disk, provenance, "provenance.json is the store's");
    assert_eq!(provenance.state, "succeeded");
    assert_eq!(
        provenance.config_sha256,
        sweep_core::provenance::config_sha256(
            &std::fs::read_to_string(run_dir.join("config.yaml")).expect("config.yaml")
        )
    );
    let outcomes: Vec<(u32, &str, &str)> = provenance
        .attempts
        .iter()
        .map(|a| (a.attempt, a.worker_name.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [(1, "first", "expired"), (2, "second", "succeeded")],
        "{provenance:#?}"
    );
    for a in &provenance.attempts {
        assert!(a.worker_id.ends_with(&a.worker_name), "{a:?}");
        assert_eq!(a.host, sweep_core::run_dir::hostname(), "{a:?}");
        assert!(a.device == "cpu" || a.device.starts_with("cuda:"), "{a:?}");
        assert!(!a.device_name.is_empty(), "CPU model or GPU name: {a:?}");
        assert_eq!(a.threads, 1, "{a:?}");
        assert!(a.libtorch_version.starts_with("2."), "{a:?}");
        assert_eq!(a.sweeprun_version, env!("CARGO_PKG_VERSION"));
        assert!(!a.git_commit.is_empty(), "{a:?}");
        let names: Vec<&str> = a.dataset.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte"
            ],
            "{a:?}"
        );
        assert!(
            0 < a.leased_ms && a.leased_ms <= a.started_ms && a.started_ms <= a.ended_ms,
            "times in order: {a:?}"
        );
    }
    assert!(provenance.attempts[0].ended_ms <= provenance.attempts[1].leased_ms);
    assert!(provenance.device_type().is_some());

    second_stop.cancel();
    second.await.expect("join").expect("second worker");
    shutdown.cancel();
    served.await.expect("join").expect("coordinator");
}
