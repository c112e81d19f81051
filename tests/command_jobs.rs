//! Command jobs end to end, with a tiny Python program that needs nothing
//! installed: the coordinator leases them only to workers started with
//! `--allow-commands`; the program's metrics lines, checkpoints and output
//! reach the coordinator; a bad exit, a malformed line, a cancellation and a
//! lost worker each end the way the README says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_proto::CoordinatorClient;
use sweep_proto::pb;
use sweep_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The program: MODE (an env var) picks its behaviour. It writes a
/// checkpoint before each epoch line, prints to both streams, resumes from
/// $SWEEP_RESUME_FROM, and reports a test accuracy derived from its --lr.
const PROGRAM: &str = r#"
import json, os, signal, subprocess, sys, time
lr = float(sys.argv[sys.argv.index("--lr") + 1])
seed = int(os.environ["SWEEP_SEED"])
mode = os.environ.get("MODE", "ok")
run_dir = os.environ["SWEEP_RUN_DIR"]
ckpt = os.path.join(run_dir, "checkpoints")
os.makedirs(ckpt, exist_ok=True)
config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
assert config["seed"] == seed, (config["seed"], seed)
print("hello from", config["name"], "seed", seed, flush=True)
print("a warning on stderr", file=sys.stderr, flush=True)
metrics = open(os.environ["SWEEP_METRICS"], "a")
def line(obj):
    metrics.write(json.dumps(obj) + "\n"); metrics.flush()
def epoch(e):
    with open(os.path.join(ckpt, "state.tmp"), "w") as f: f.write(str(e))
    os.replace(os.path.join(ckpt, "state.tmp"), os.path.join(ckpt, "state.txt"))
    line({"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5 / e, "val_acc": 0.8 + e / 100})
start = 1
if os.environ.get("SWEEP_RESUME_FROM"):
    start = int(open(os.environ["SWEEP_RESUME_FROM"]).read()) + 1
    print("resumed at", start, flush=True)
if mode == "crash":
    print("something broke: lr", lr, file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "malformed":
    epoch(1)
    metrics.write("{not json\n"); metrics.flush()
    time.sleep(60)
if mode == "slips":
    line({"epoch": 1, "val_loss": 1.0, "val_acc": 0.5, "train_los": 0.3})
    epoch(2)
if mode == "hang" or (mode == "hang_once" and start == 1):
    epoch(start)
    child = subprocess.Popen(["sleep", "600"])
    open(os.path.join(os.environ["OUT"], "child.pid"), "w").write(str(child.pid))
    def stop(signum, frame):
        open(os.path.join(os.environ["OUT"], "sigterm"), "w").write("1")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(600)
for e in range(start, 3):
    epoch(e)
line({"test_acc": min(1.0, lr * 100), "test_loss": 0.1})
"#;

struct Cluster {
    root: tempfile::TempDir,
    client: CoordinatorClient<Channel>,
    addr: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    workers: Vec<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Cluster {
    /// A coordinator serving `sweep_yaml` (with `program.py` and `base.yaml`
    /// next to it) and no workers yet.
    async fn start(base: &str, sweep_yaml: &str, lease: Duration) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("program.py"), PROGRAM).expect("program");
        std::fs::create_dir_all(root.path().join("out")).expect("out");
        let base = base
            .replace(
                "PROGRAM",
                &root.path().join("program.py").display().to_string(),
            )
            .replace("OUT_DIR", &root.path().join("out").display().to_string());
        std::fs::write(root.path().join("base.yaml"), base).expect("base");
        let sweep = root.path().join("sweep.yaml");
        std::fs::write(&sweep, sweep_yaml).expect("sweep");
        let mut config = CoordinatorConfig::new(root.path().join("runs"));
        config.sweep = Some(sweep);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.lease_timeout = lease;
        config.heartbeat_interval = Duration::from_millis(100);
        let shutdown = CancellationToken::new();
        let coordinator = sweep_coordinator::start(config, shutdown.clone())
            .await
            .expect("start");
        let addr = coordinator.addr.to_string();
        let client = CoordinatorClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let served = tokio::spawn(async move { coordinator.wait().await.expect("coordinator") });
        Cluster {
            root,
            client,
            addr,
            shutdown,
            served,
            workers: Vec::new(),
        }
    }

    fn worker(&mut self, name: &str, allow_commands: bool) -> usize {
        let mut config = WorkerConfig::new(self.addr.clone());
        config.name = name.to_string();
        config.cache_dir = self.root.path().join("cache").join(name);
        config.allow_commands = allow_commands;
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                sweep_worker::run(config, stop).await.expect("worker");
            }
        });
        self.workers.push((stop, task));
        self.workers.len() - 1
    }

    async fn stop_worker(&mut self, index: usize) {
        let (stop, task) = &mut self.workers[index];
        stop.cancel();
        task.await.expect("worker task");
    }

    fn out(&self) -> PathBuf {
        self.root.path().join("out")
    }

    fn runs(&self) -> PathBuf {
        self.root.path().join("runs")
    }

    async fn status(&mut self) -> pb::StatusSnapshot {
        self.client
            .get_status(pb::GetStatusRequest::default())
            .await
            .expect("status")
            .into_inner()
    }

    async fn wait_until(
        &mut self,
        what: &str,
        done: impl FnMut(&pb::StatusSnapshot) -> bool,
    ) -> pb::StatusSnapshot {
        sweep_e2e::wait_for_status(&mut self.client, what, Duration::from_secs(120), done).await
    }

    async fn logs(&mut self, job_id: &str) -> Vec<pb::JobEvent> {
        self.client
            .get_job_logs(pb::GetJobLogsRequest {
                job_id: job_id.to_string(),
            })
            .await
            .expect("logs")
            .into_inner()
            .events
    }

    async fn finish(mut self) {
        for index in 0..self.workers.len() {
            if !self.workers[index].0.is_cancelled() {
                self.stop_worker(index).await;
            }
        }
        self.shutdown.cancel();
        self.served.await.expect("join");
    }
}

fn base(mode: &str) -> String {
    format!(
        "command: [python3, PROGRAM, --lr, \"{{training.learning_rate}}\", --config, \"{{config_path}}\"]\n\
         env: {{MODE: {mode}, OUT: \"OUT_DIR\"}}\n\
         training: {{learning_rate: 0.005, epochs: 2, anything: [1, 2]}}\n"
    )
}

fn done(status: &pb::StatusSnapshot) -> bool {
    status.sweeps.first().is_some_and(|s| s.done)
}

fn skip_without_python() -> bool {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is needed by the command-job tests and CI=true forbids skipping"
        );
        eprintln!("SKIP: no python3 on PATH");
    }
    !found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_jobs_run_only_on_workers_that_opted_in() {
    if skip_without_python() {
        return;
    }
    let mut cluster = Cluster::start(
        &base("ok"),
        "name: cmd\nbase: base.yaml\nseeds: [1, 2]\nvariants:\n  fast: {training: {learning_rate: 0.009}}\n",
        Duration::from_secs(10),
    )
    .await;
    // The plain worker comes first: it must be passed over.
    cluster.worker("plain", false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = cluster.status().await;
    assert!(
        waiting.jobs.iter().all(|j| j.state == "pending"),
        "a worker without --allow-commands got a command job"
    );
    // Status says why they wait.
    assert_eq!(
        waiting.sweeps[0].waiting_for_command_worker, 4,
        "{waiting:#?}"
    );
    cluster.worker("cmd", true);
    let status = cluster.wait_until("the sweep to end", done).await;
    assert!(
        status.jobs.iter().all(|j| j.state == "succeeded"),
        "{status:#?}"
    );
    assert_eq!(status.sweeps[0].waiting_for_command_worker, 0);

    let results = cluster
        .client
        .get_results(pb::GetResultsRequest {
            sweep: "cmd".into(),
            format: "json".into(),
        })
        .await
        .expect("results")
        .into_inner();
    let table: serde_json::Value = serde_json::from_str(&results.json).expect("json");
    let means: Vec<(String, f64, u64)> = table["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| {
            (
                v["variant"].as_str().expect("name").to_string(),
                v["test_acc"]["mean"].as_f64().expect("mean"),
                v["n"].as_u64().expect("n"),
            )
        })
        .collect();
    // test_acc = 100 × lr, the placeholder's value as the program got it.
    let expected = [("baseline", 0.5, 2), ("fast", 0.9, 2)];
    assert_eq!(means.len(), expected.len(), "{means:?}");
    for ((name, mean, n), (want_name, want_mean, want_n)) in means.iter().zip(expected) {
        assert_eq!((name.as_str(), *n), (want_name, want_n), "{means:?}");
        assert!((mean - want_mean).abs() < 1e-9, "{means:?}");
    }

    for job in &status.jobs {
        let events = cluster.logs(&job.job_id).await;
        let leased: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == "leased")
            .map(|e| e.message.as_str())
            .collect();
        assert!(leased.iter().all(|m| m.contains("-cmd")), "{leased:?}");
        assert_eq!(events.iter().filter(|e| e.kind == "epoch").count(), 2);
        assert!(
            events
                .iter()
                .any(|e| e.kind == "stdout" && e.message.contains("hello from")),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.kind == "stderr" && e.message.contains("a warning on stderr")),
            "{events:#?}"
        );
        let run_dir = cluster
            .runs()
            .join("cmd")
            .join(&job.variant)
            .join(format!("seed-{}", job.seed));
        let state = std::fs::read_to_string(run_dir.join("checkpoints/state.txt"))
            .expect("the program's checkpoint reached the coordinator");
        assert_eq!(state, "2");
        assert!(!run_dir.join("checkpoints/state.tmp").exists());
        let output = std::fs::read_to_string(run_dir.join("output.log")).expect("output.log");
        assert!(output.contains("[1 stdout] hello from"), "{output}");
        let metrics: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join("metrics.json")).expect("metrics.json"),
        )
        .expect("metrics json");
        assert_eq!(metrics["epochs"].as_array().map(Vec::len), Some(2));
        assert_eq!(metrics["best_epoch"], 2);
    }
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_and_a_malformed_line_fail_the_job_with_the_reason_and_slips_are_warned_of() {
    if skip_without_python() {
        return;
    }
    let mut cluster = Cluster::start(
        &base("crash"),
        "name: bad\nbase: base.yaml\nseeds: [1]\nvariants:\n  garbled: {env: {MODE: malformed}}\n  slips: {env: {MODE: slips}}\n",
        Duration::from_secs(10),
    )
    .await;
    cluster.worker("cmd", true);
    let status = cluster.wait_until("both jobs to fail", done).await;
    let by_variant = |name: &str| {
        status
            .jobs
            .iter()
            .find(|j| j.variant == name)
            .cloned()
            .expect("job")
    };
    let crashed = by_variant("baseline");
    assert_eq!(crashed.state, "failed");
    assert!(
        crashed.error.contains("exited with status 3")
            && crashed.error.contains("something broke: lr 0.005"),
        "{}",
        crashed.error
    );
    // A crash may be the machine's fault: retried up to the attempt limit.
    assert!(crashed.attempt > 1, "{crashed:?}");
    let garbled = by_variant("garbled");
    assert_eq!(garbled.state, "failed");
    assert!(
        garbled.error.contains("line 2") && garbled.error.contains("not JSON"),
        "{}",
        garbled.error
    );
    // A malformed line is the program's bug: not retried.
    assert_eq!(garbled.attempt, 1, "{garbled:?}");
    // A misspelt metric and an epoch going back are kept, and said so.
    let slips = by_variant("slips");
    assert_eq!(slips.state, "succeeded", "{slips:?}");
    let warnings: Vec<String> = cluster
        .logs(&slips.job_id)
        .await
        .into_iter()
        .filter(|e| e.kind == "stderr")
        .flat_map(|e| e.message.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|line| line.starts_with("sweep-worker: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].contains(
            "metrics.jsonl line 1: \"train_los\" is not read (did you mean \"train_loss\"?)"
        ),
        "{warnings:#?}"
    );
    assert!(
        warnings[1].contains("line 3: epoch 1 after epoch 2; it replaces epochs 1 to 2"),
        "{warnings:#?}"
    );
    cluster.finish().await;
}

fn pid_alive(pid: i32) -> bool {
    // /proc/<pid> goes when the process has been reaped; a zombie is dead too.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"))
}

async fn wait_for_file(path: &Path) -> String {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_terminates_the_process_group() {
    if skip_without_python() {
        return;
    }
    let mut cluster = Cluster::start(
        &base("hang"),
        "name: hang\nbase: base.yaml\nseeds: [1]\n",
        Duration::from_secs(10),
    )
    .await;
    cluster.worker("cmd", true);
    let child: i32 = wait_for_file(&cluster.out().join("child.pid"))
        .await
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(child));
    let cancelled = cluster
        .client
        .cancel(pb::CancelRequest {
            target: Some(pb::cancel_request::Target::Sweep("hang".into())),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.cancelled, 1);
    wait_for_file(&cluster.out().join("sigterm")).await;
    // The program's own child (same process group) goes too.
    for _ in 0..200 {
        if !pid_alive(child) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!pid_alive(child), "the program's child {child} survived");
    let status = cluster.status().await;
    assert_eq!(status.jobs[0].state, "cancelled");
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_worker_resumes_on_another_from_the_checkpoint() {
    if skip_without_python() {
        return;
    }
    let mut cluster = Cluster::start(
        &base("hang_once"),
        "name: resume\nbase: base.yaml\nseeds: [1]\n",
        Duration::from_millis(1500),
    )
    .await;
    let first = cluster.worker("cmd-a", true);
    cluster
        .wait_until("epoch 1 and its checkpoint", |s| {
            s.jobs.first().is_some_and(|j| j.epoch >= 1)
        })
        .await;
    // Let the checkpoint upload land (it follows the epoch report).
    let committed = cluster
        .runs()
        .join("resume/baseline/seed-1/checkpoints/last.state.json");
    wait_for_file(&committed).await;
    cluster.stop_worker(first).await;
    cluster.worker("cmd-b", true);
    let status = cluster.wait_until("the sweep to end", done).await;
    let job = &status.jobs[0];
    assert_eq!(job.state, "succeeded", "{job:?}");
    assert_eq!(job.attempt, 2, "{job:?}");
    let events = cluster.logs(&job.job_id).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "stdout" && e.attempt == 2 && e.message.contains("resumed at 2")),
        "{events:#?}"
    );
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cluster.runs().join("resume/baseline/seed-1/metrics.json"))
            .expect("metrics.json"),
    )
    .expect("json");
    // Epoch 1 from the first attempt (through the manifest), epoch 2 from the second.
    let epochs: Vec<u64> = metrics["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["epoch"].as_u64().expect("epoch"))
        .collect();
    assert_eq!(epochs, [1, 2]);
    cluster.finish().await;
}

/// PYTHONPATH that makes `torch` importable: the parent of the libtorch
/// directory that the Makefile exports as LIBTORCH (from scripts/libtorch.sh;
/// `make bench-throughput` uses it the same way). None when python3 cannot
/// import torch from there.
fn torch_pythonpath() -> Option<PathBuf> {
    let libtorch = PathBuf::from(std::env::var_os("LIBTORCH")?);
    let site = libtorch.parent()?.to_path_buf();
    let ok = std::process::Command::new("python3")
        .args(["-c", "import torch"])
        .env("PYTHONPATH", &site)
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(site)
}

/// examples/pytorch/smoke.yaml for real: the original PyTorch trainer as a
/// command job beside the built-in trainer, one epoch on 2,000 samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pytorch_example_runs_as_a_command_job() {
    let Some(pythonpath) = torch_pythonpath() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "torch is not importable by python3 from $LIBTORCH/..; CI=true forbids skipping"
        );
        eprintln!("SKIP: python3 cannot import torch from $LIBTORCH/.. (run through `make test`)");
        return;
    };
    let repo = sweep_e2e::repo_root();
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    config.sweep = Some(repo.join("examples/pytorch/smoke.yaml"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let addr = coordinator.addr.to_string();
    let served = tokio::spawn(async move { coordinator.wait().await.expect("coordinator") });
    // A real worker process, started where the example's relative paths
    // (the program, ./data/mnist) hold: the repository root.
    let mut worker =
        tokio::process::Command::new(sweep_e2e::release_bin_dir().join("sweep-worker"))
            .args([
                "--connect",
                &addr,
                "--allow-commands",
                "--threads",
                "1",
                "--name",
                "torch",
            ])
            .arg("--cache-dir")
            .arg(root.path().join("cache"))
            .current_dir(&repo)
            .env("PYTHONPATH", &pythonpath)
            .kill_on_drop(true)
            .spawn()
            .expect("sweep-worker (built by `make build`)");
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let status =
        sweep_e2e::wait_for_status(&mut client, "the sweep", Duration::from_secs(600), done).await;
    for job in &status.jobs {
        assert_eq!(job.state, "succeeded", "{job:#?}");
        let test = job.test.expect("test metrics");
        // One epoch on 1,600 images: far above chance (10%), below perfect.
        assert!((0.5..1.0).contains(&test.test_acc), "{job:#?}");
    }
    let torch = status
        .jobs
        .iter()
        .find(|j| j.variant == "pytorch")
        .expect("pytorch job");
    let run_dir = root.path().join("runs/pytorch_smoke/pytorch/seed-1");
    for file in [
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "metrics.json",
        "output.log",
    ] {
        assert!(
            run_dir.join(file).is_file(),
            "{file} missing in {}",
            run_dir.display()
        );
    }
    let events = client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: torch.job_id.clone(),
        })
        .await
        .expect("logs")
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "stdout" && e.message.contains("test acc")),
        "{events:#?}"
    );
    worker.start_kill().expect("kill worker");
    let _ = worker.wait().await;
    shutdown.cancel();
    served.await.expect("join");
}
