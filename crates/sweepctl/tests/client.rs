//! `sweepctl`'s client commands end to end: the real coordinator served
//! in-process on an ephemeral port, the real `sweepctl` binary run against it
//! as a user would (piped, so `watch` prints lines instead of bars).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use tokio_util::sync::CancellationToken;

/// A coordinator running on its own runtime thread, stopped on drop.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(state_dir: PathBuf, local_workers: usize) -> Server {
        let mut config = CoordinatorConfig::new(state_dir);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.local_workers = local_workers;
        // Local workers are `sweep-worker` processes; `make build` puts it next
        // to this package's binaries (target/<profile>/).
        config.worker_binary =
            Some(Path::new(env!("CARGO_BIN_EXE_sweepctl")).with_file_name("sweep-worker"));
        config.local_worker_threads = Some(1);
        // Short, so that nothing here waits on a default-length timer.
        config.lease_timeout = Duration::from_secs(10);
        config.heartbeat_interval = Duration::from_millis(500);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let coordinator = sweep_coordinator::start(config, stop)
                    .await
                    .expect("coordinator starts");
                tx.send(coordinator.addr).expect("send addr");
                coordinator.wait().await.expect("coordinator runs");
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("coordinator listening");
        Server {
            addr,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist")
        .canonicalize()
        .expect("data/mnist")
}

/// A sweep directory `tiny` under `root`: baseline + no_dropout over `seeds`,
/// one epoch on a 300-image subset.
fn write_sweep(root: &Path, name: &str, seeds: &str) -> PathBuf {
    let sweep = root.join(name);
    std::fs::create_dir_all(&sweep).expect("mkdir");
    let base = format!(
        "name: base\n\
         model: {{type: fc, hidden_sizes: [16], dropout: 0.2}}\n\
         data: {{data_dir: {}, subset: {{train: 300, test: 100}}}}\n\
         training: {{epochs: 1, threads: 1}}\n",
        data_dir().display()
    );
    std::fs::write(sweep.join("base.yaml"), base).expect("base");
    std::fs::write(
        sweep.join("sweep.yaml"),
        format!("name: {name}\nbase: base.yaml\nseeds: {seeds}\n"),
    )
    .expect("sweep");
    std::fs::write(sweep.join("no_dropout.yaml"), "model: {dropout: 0.0}\n").expect("variant");
    sweep
}

/// Runs `sweepctl --coordinator <addr> ARGS`, with SWEEP_COORDINATOR unset so
/// the environment of whoever runs the tests cannot interfere.
fn sweepctl(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sweepctl"))
        .env_remove("SWEEP_COORDINATOR")
        .env_remove("SWEEP_TOKEN")
        .arg("--coordinator")
        .arg(addr)
        .args(args)
        .output()
        .expect("sweepctl runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and expects success, returning stdout.
fn ok(addr: &str, args: &[&str]) -> String {
    let out = sweepctl(addr, args);
    assert!(
        out.status.success(),
        "sweepctl {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs and expects failure, returning stderr.
fn fails(addr: &str, args: &[&str]) -> String {
    let out = sweepctl(addr, args);
    assert!(
        !out.status.success(),
        "sweepctl {args:?} should have failed:\nstdout:\n{}",
        stdout(&out)
    );
    stderr(&out)
}

/// An address with nothing listening: a port just bound and released.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

#[test]
fn submit_status_results_cancel_logs_without_workers() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path().join("runs"), 0);
    let addr = server.addr.to_string();
    let sweep = write_sweep(root.path(), "tiny", "[1, 2]");
    let sweep = sweep.to_str().expect("utf-8 path");

    // A fresh coordinator: status answers, and does not fail a polling script.
    let status = ok(&addr, &["status"]);
    assert!(status.contains("has no sweeps yet; submit one"), "{status}");

    let out = ok(&addr, &["submit", sweep]);
    assert_eq!(out.trim(), "submitted sweep tiny: 4 jobs (4 new)");
    // The same spec again adds nothing; the http:// form is accepted too.
    let out = ok(&format!("http://{addr}"), &["submit", sweep]);
    assert_eq!(out.trim(), "submitted sweep tiny: 4 jobs (0 new)");

    let status = ok(&addr, &["status"]);
    for expected in ["tiny", "baseline", "no_dropout", "pending", "0/1"] {
        assert!(
            status.contains(expected),
            "{expected:?} missing from status:\n{status}"
        );
    }
    let job_id = status
        .split(|c: char| c.is_whitespace() || c == '│')
        .find(|w| w.starts_with("baseline-seed-1-"))
        .unwrap_or_else(|| panic!("a baseline job id in:\n{status}"))
        .to_string();
    let err = fails(&addr, &["status", "nope"]);
    assert!(err.contains("no sweep named \"nope\""), "{err}");

    let csv = ok(&addr, &["results", "tiny", "--format", "csv"]);
    assert!(
        csv.starts_with("variant,is_baseline,n,test_acc_mean"),
        "{csv}"
    );
    let out_file = root.path().join("results.json");
    let out = sweepctl(
        &addr,
        &[
            "results",
            "--format",
            "json",
            "--output",
            out_file.to_str().expect("utf-8"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json = std::fs::read_to_string(&out_file).expect("results file");
    assert!(json.contains("\"sweep\": \"tiny\""), "{json}");
    assert!(
        stderr(&out).contains("4 jobs of sweep tiny have not finished"),
        "{}",
        stderr(&out)
    );

    let err = fails(&addr, &["results", "--format", "xls"]);
    assert!(err.contains("table, md, markdown, csv, json"), "{err}");
    let err = fails(&addr, &["results", "missing"]);
    assert!(err.contains("missing"), "{err}");

    let out = ok(&addr, &["workers"]);
    assert!(out.contains("no workers"), "{out}");

    let logs = ok(&addr, &["logs", &job_id]);
    assert!(
        logs.lines().next().is_some_and(|l| l.contains("submitted")),
        "{logs}"
    );
    let err = fails(&addr, &["logs", "no-such-job"]);
    assert!(err.contains("no-such-job"), "{err}");

    // The run directory says so at once (not only once the sweep ends), and
    // again once retried: a report drawn meanwhile must read the job's state.
    let provenance_state = || {
        let path = root
            .path()
            .join("runs/tiny/baseline/seed-1/provenance.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).expect("provenance JSON");
        json["state"].as_str().expect("a state").to_string()
    };
    let out = ok(&addr, &["cancel", "--job", &job_id]);
    assert_eq!(out.trim(), format!("job {job_id}: cancelled 1 job"));
    assert_eq!(provenance_state(), "cancelled");
    let out = ok(&addr, &["cancel", "--sweep", "tiny"]);
    assert_eq!(out.trim(), "sweep tiny: cancelled 3 jobs");
    let out = ok(&addr, &["cancel", "--sweep", "tiny"]);
    assert_eq!(out.trim(), "sweep tiny: nothing to cancel (it has ended)");
    let err = fails(&addr, &["cancel"]);
    assert!(err.contains("--sweep") && err.contains("--job"), "{err}");

    let status = ok(&addr, &["status", "tiny"]);
    assert_eq!(
        status.matches("cancelled").count(),
        1 + 4,
        "the header and four jobs:\n{status}"
    );
    // Every job has ended: watch prints the final state and returns at once.
    let watched = ok(&addr, &["watch", "tiny"]);
    assert!(watched.contains("sweep tiny: 4/4 finished"), "{watched}");
    let results = ok(&addr, &["results", "tiny"]);
    assert!(
        results.contains("no run succeeded") && results.contains("4 jobs cancelled"),
        "{results}"
    );

    // Retried, the cancelled jobs are back in the queue.
    let out = ok(&addr, &["retry", "--job", &job_id]);
    assert!(
        out.starts_with(&format!("job {job_id}: 1 job back in the queue")),
        "{out}"
    );
    assert_eq!(provenance_state(), "pending");
    let out = ok(&addr, &["retry", "--sweep", "tiny"]);
    assert!(
        out.starts_with("sweep tiny: 3 jobs back in the queue"),
        "{out}"
    );
    let out = ok(&addr, &["retry", "--sweep", "tiny"]);
    assert_eq!(
        out.trim(),
        "sweep tiny: no failed or cancelled job to retry"
    );
    let err = fails(&addr, &["retry", "--sweep", "nope"]);
    assert!(err.contains("no sweep \"nope\""), "{err}");
    let status = ok(&addr, &["status", "tiny"]);
    assert_eq!(
        status.matches("cancelled").count(),
        1,
        "the header only:\n{status}"
    );
    assert!(status.contains("pending"), "{status}");
}

#[test]
fn watch_follows_a_sweep_to_its_results() {
    let root = tempfile::tempdir().expect("tempdir");
    let server = Server::start(root.path().join("runs"), 1);
    let addr = server.addr.to_string();
    let sweep = write_sweep(root.path(), "live", "[7]");
    ok(&addr, &["submit", sweep.to_str().expect("utf-8")]);

    let watched = ok(&addr, &["watch"]);
    assert!(watched.contains("sweep live: 2/2 finished"), "{watched}");
    assert!(watched.contains("succeeded: test acc"), "{watched}");
    // The results table follows the progress lines.
    assert!(watched.contains("test acc %"), "{watched}");

    let csv = ok(&addr, &["results", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 3, "header + two variants:\n{csv}");
    let workers = ok(&addr, &["workers"]);
    assert!(
        workers.contains("local-0") && workers.contains("yes"),
        "{workers}"
    );

    // Where and how a run was computed.
    let status = ok(&addr, &["status"]);
    let job_id = status
        .split(|c: char| c.is_whitespace() || c == '│')
        .find(|w| w.starts_with("baseline-seed-7-"))
        .unwrap_or_else(|| panic!("a baseline job id in:\n{status}"))
        .to_string();
    let shown = ok(&addr, &["show", &job_id]);
    for expected in [
        "attempt 1: succeeded",
        "local-0",
        "threads        1",
        "libtorch       2.",
        "train-images-idx3-ubyte",
        "config sha256",
    ] {
        assert!(
            shown.contains(expected),
            "{expected:?} missing from\n{shown}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&addr, &["show", "--json", &job_id])).expect("show --json");
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.path()
                .join("runs/live/baseline/seed-7/provenance.json"),
        )
        .expect("provenance.json"),
    )
    .expect("json");
    assert_eq!(json, on_disk);
    let err = fails(&addr, &["show", "no-such-job"]);
    assert!(err.contains("no-such-job"), "{err}");
}

#[test]
fn errors_are_clear_before_and_without_a_coordinator() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = closed_address();

    let err = fails(&addr, &["status"]);
    assert!(
        err.contains(&format!("cannot reach the coordinator at {addr}")),
        "{err}"
    );
    assert!(err.contains("sweep-coordinator"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line:\n{err}");
    // Still one line where the user's shell asks Rust programs for backtraces.
    let out = Command::new(env!("CARGO_BIN_EXE_sweepctl"))
        .env("RUST_BACKTRACE", "1")
        .env_remove("SWEEP_TOKEN")
        .args(["--coordinator", &addr, "status"])
        .output()
        .expect("sweepctl runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), err.trim());

    // Config errors are found locally, before any connection is tried.
    let sweep = write_sweep(root.path(), "broken", "[1]");
    std::fs::write(sweep.join("no_dropout.yaml"), "model: {dropuot: 0.0}\n").expect("variant");
    let err = fails(&addr, &["submit", sweep.to_str().expect("utf-8")]);
    assert!(
        err.contains("no_dropout.yaml") && err.contains("dropuot"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");

    let err = fails(&addr, &["results", "--format", "xls"]);
    assert!(err.contains("table, md, markdown, csv, json"), "{err}");
    let err = fails("https://example.invalid:1", &["status"]);
    assert!(err.contains("TLS"), "{err}");
}
