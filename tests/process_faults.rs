//! Crashes of real processes, as they happen in the field: `SIGKILL` of a
//! worker in the middle of a job, and of the coordinator in the middle of a
//! sweep. Nothing finished may be lost or counted twice.
//!
//! These run the release binaries (`make build` puts them in target/release).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sweep_e2e::KillOnDrop;
use sweep_proto::{CoordinatorClient, pb};

const TIMEOUT: Duration = Duration::from_secs(300);

fn binary(name: &str) -> PathBuf {
    let path = sweep_e2e::release_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make build` first",
        path.display()
    );
    path
}

fn write_sweep(root: &Path, seeds: &[u64], epochs: u32) -> PathBuf {
    sweep_e2e::TinySweep {
        name: "faults",
        seeds,
        epochs,
        hidden: 64,
        subset: (4000, 500),
        ..Default::default()
    }
    .write(&root.join("sweep"))
}

struct Coordinator {
    child: KillOnDrop,
}

impl Coordinator {
    fn start(root: &Path, sweep: &Path, port: u16) -> Coordinator {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("coordinator.log"))
            .expect("log");
        let child = Command::new(binary("sweep-coordinator"))
            .arg("--config")
            .arg(sweep)
            .arg("--state-dir")
            .arg(root.join("runs"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--lease-timeout",
                "2",
                "--heartbeat-interval",
                "0.3",
                // Tests run side by side: no dashboard on the default port.
                "--http",
                "off",
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sweep-coordinator");
        Coordinator {
            child: KillOnDrop(child),
        }
    }
}

struct Worker {
    child: KillOnDrop,
}

impl Worker {
    fn start(root: &Path, port: u16, name: &str) -> Worker {
        let child = Command::new(binary("sweep-worker"))
            .args([
                "--connect",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
                "--threads",
                "1",
            ])
            .arg("--cache-dir")
            .arg(root.join(name))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sweep-worker");
        Worker {
            child: KillOnDrop(child),
        }
    }

    fn sigkill(&mut self) {
        self.child.0.kill().expect("SIGKILL");
        let _ = self.child.0.wait();
    }
}

/// The coordinator's status, or None while it is unreachable.
async fn status(port: u16) -> Option<pb::StatusSnapshot> {
    let mut client = CoordinatorClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    Some(
        client
            .get_status(pb::GetStatusRequest::default())
            .await
            .ok()?
            .into_inner(),
    )
}

async fn logs(port: u16, job_id: &str) -> Vec<pb::JobEvent> {
    let mut client = CoordinatorClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("logs")
        .into_inner()
        .events
}

/// Polls until `done` says so, failing the test after [`TIMEOUT`].
async fn wait_for(
    what: &str,
    port: u16,
    mut done: impl FnMut(&pb::StatusSnapshot) -> bool,
) -> pb::StatusSnapshot {
    let started = Instant::now();
    loop {
        if let Some(snapshot) = status(port).await
            && done(&snapshot)
        {
            return snapshot;
        }
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sweep_done(s: &pb::StatusSnapshot) -> bool {
    s.sweeps.first().is_some_and(|sweep| sweep.done)
}

fn epochs_in_metrics_json(root: &Path, job: &pb::JobStatus) -> Vec<u32> {
    let path = root
        .join("runs")
        .join(&job.sweep)
        .join(&job.variant)
        .join(format!("seed-{}", job.seed))
        .join("metrics.json");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("metrics.json")).expect("json");
    metrics["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["epoch"].as_u64().expect("epoch") as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_job_is_resumed_elsewhere_from_its_checkpoint() {
    let root = tempfile::tempdir().expect("tempdir");
    // Not `:0`: the coordinator must come back on the same address.
    let port = sweep_e2e::free_port();
    let epochs = 40;
    let _coordinator =
        Coordinator::start(root.path(), &write_sweep(root.path(), &[7], epochs), port);
    let mut first = Worker::start(root.path(), port, "first");

    // Kill the worker once epoch 2 is reported: epoch 1's checkpoint files,
    // sent before it, are then committed at the coordinator.
    let snapshot = wait_for("two epochs", port, |s| {
        s.jobs.first().is_some_and(|j| j.epoch >= 2)
    })
    .await;
    first.sigkill();
    let job_id = snapshot.jobs[0].job_id.clone();
    let _second = Worker::start(root.path(), port, "second");

    let done = wait_for("the sweep to finish", port, sweep_done).await;
    let job = &done.jobs[0];
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert_eq!(job.attempt, 2, "one lost attempt, one that finished");
    let events = logs(port, &job_id).await;
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("succeeded"), 1, "{events:?}");
    assert_eq!(
        count("expired"),
        1,
        "the killed worker's lease expired: {events:?}"
    );
    // The second attempt started from a checkpoint, not from epoch 1.
    let resumed_at = events
        .iter()
        .filter(|e| e.kind == "epoch" && e.attempt == 2)
        .map(|e| e.message.clone())
        .next();
    let first_epoch_of_attempt_2: u32 = resumed_at
        .as_deref()
        .and_then(|m| {
            m.split(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())
        })
        .and_then(|n| n.parse().ok())
        .expect("an epoch of attempt 2");
    assert!(
        first_epoch_of_attempt_2 >= 2,
        "attempt 2 began at epoch {first_epoch_of_attempt_2}: {events:?}"
    );
    assert_eq!(
        epochs_in_metrics_json(root.path(), job),
        (1..=epochs).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_sweep_restarts_without_losing_results() {
    let root = tempfile::tempdir().expect("tempdir");
    let port = sweep_e2e::free_port();
    let sweep = write_sweep(root.path(), &[1, 2, 3, 4], 12);
    let mut coordinator = Coordinator::start(root.path(), &sweep, port);
    let _workers = [
        Worker::start(root.path(), port, "w1"),
        Worker::start(root.path(), port, "w2"),
    ];

    // Crash the coordinator with one job finished and others running.
    wait_for("a finished job and a running one", port, |s| {
        s.jobs.iter().any(|j| j.state == "succeeded")
            && s.jobs.iter().any(|j| j.state == "running" && j.epoch >= 1)
    })
    .await;
    coordinator.child.0.kill().expect("SIGKILL");
    let _ = coordinator.child.0.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _restarted = Coordinator::start(root.path(), &sweep, port);

    // The workers were not touched: they must find the new coordinator alone.
    let done = wait_for("the sweep to finish after the restart", port, sweep_done).await;
    assert_eq!(done.jobs.len(), 4);
    for job in &done.jobs {
        assert_eq!(job.state, "succeeded", "{job:?}");
        let events = logs(port, &job.job_id).await;
        assert_eq!(
            events.iter().filter(|e| e.kind == "succeeded").count(),
            1,
            "{events:?}"
        );
        assert_eq!(
            epochs_in_metrics_json(root.path(), job),
            (1..=12).collect::<Vec<_>>(),
            "{}",
            job.job_id
        );
        let run = root
            .path()
            .join("runs/faults")
            .join(&job.variant)
            .join(format!("seed-{}", job.seed));
        assert!(
            run.join("checkpoints/best.safetensors").is_file(),
            "{}",
            run.display()
        );
    }
    let csv =
        std::fs::read_to_string(root.path().join("runs/faults/results.csv")).expect("results.csv");
    assert_eq!(
        csv.lines().count(),
        2,
        "a header and the one variant: {csv}"
    );
}
