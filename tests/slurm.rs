//! `deploy/slurm/sweep-worker.sbatch` on a real, if small, SLURM cluster: the
//! test starts munged, slurmctld and slurmd on this machine (one node, loopback
//! only, config and state in a temporary directory, ports picked free now),
//! a coordinator with worker and admin tokens on loopback, and submits the
//! script as `sbatch --array=0-1`: two array tasks, each one CPU worker that
//! reads its token from SWEEP_TOKEN_FILE. Once array task 0's worker trains a
//! job with a committed checkpoint, `scancel` stops that task (SIGTERM, as at
//! a time limit); its lease expires and task 1's worker resumes the job from
//! the checkpoint. The sweep must end with every job done exactly once, every
//! epoch once in each run, and a complete results table.
//!
//! Needs root (slurmd launches the jobs) and Debian's `slurm-wlm` and `munge`,
//! which scripts/test-deps.sh installs (`make test` runs it first). Without
//! them, or without root, it skips with a message; under `CI=true` it fails
//! instead (see crates/testkit). Also needs the release binaries (`make build`).
//!
//! On failure it prints the daemons', the coordinator's and the jobs' logs.
//! Every daemon it starts is stopped when the test ends, also on a panic.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sweep_core::token::Token;
use sweep_e2e::{KillOnDrop, free_port, release_bin_dir, repo_root, wait_for};
use sweep_proto::client::Client;
use sweep_proto::pb;
use sweep_testkit::skip_or_fail;
use tonic::transport::Channel;

/// How often the test looks again at what it waits for.
const POLL: Duration = Duration::from_millis(200);
/// How long the cluster may take to come up, and a job to start or stop.
const SLURM_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the whole sweep may take (it needs well under a minute on 2 cores).
const SWEEP_TIMEOUT: Duration = Duration::from_secs(900);
/// Epochs per job: long enough that `scancel` lands mid-job.
const EPOCHS: u32 = 30;
const SEEDS: [u64; 2] = [1, 2];
const VARIANTS: [&str; 2] = ["baseline", "no_dropout"];
const NODE: &str = "localhost";
const WORKER_TOKEN: &str = "slurm-test-worker-token-0123456789";
const ADMIN_TOKEN: &str = "slurm-test-admin-token-0123456789";

/// The SLURM and munge programs the test runs.
const TOOLS: [&str; 9] = [
    "munged",
    "munge",
    "slurmctld",
    "slurmd",
    "sbatch",
    "scancel",
    "squeue",
    "sinfo",
    "scontrol",
];

/// `name` on PATH or in the sbin directories (root's PATH may lack them).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn binary(name: &str) -> PathBuf {
    let path = release_bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make build` first (`make test` does)",
        path.display()
    );
    path
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last `n` lines of a file, or why there are none.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

/// slurm.conf for one node on loopback: munge through our own munged's
/// socket, no cgroups (processes tracked through /proc, no task binding),
/// CPUs as consumables and memory only as a limit, no accounting.
fn slurm_conf(dir: &Path, ctld_port: u16, slurmd_port: u16, cpus: usize) -> String {
    let d = dir.display();
    format!(
        "ClusterName=sweeptest\n\
         SlurmctldHost={NODE}(127.0.0.1)\n\
         SlurmctldPort={ctld_port}\n\
         SlurmdPort={slurmd_port}\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         AuthInfo=socket={d}/munge/munge.socket\n\
         CredType=cred/munge\n\
         StateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool\n\
         SlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd.pid\n\
         SlurmctldLogFile={d}/log/slurmctld.log\n\
         SlurmdLogFile={d}/log/slurmd.log\n\
         SlurmctldDebug=info\n\
         SlurmdDebug=info\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         JobCompType=jobcomp/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_CPU\n\
         SchedulerType=sched/builtin\n\
         MpiDefault=none\n\
         SwitchType=switch/none\n\
         MailProg=/bin/true\n\
         ReturnToService=2\n\
         KillWait=5\n\
         InactiveLimit=0\n\
         SlurmdParameters=config_overrides\n\
         NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1024 State=UNKNOWN\n\
         PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP\n"
    )
}

/// A daemon in the foreground, its output in `log/<name>.out`.
struct Daemon {
    name: &'static str,
    child: Child,
}

/// The one-node cluster. Dropping it cancels every job, stops the daemons
/// (slurmd, slurmctld, munged), and first prints every log when the test
/// is failing.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    tools: Vec<(&'static str, PathBuf)>,
    daemons: Vec<Daemon>,
}

impl Cluster {
    fn tool(&self, name: &str) -> &Path {
        &self
            .tools
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} is one of TOOLS"))
            .1
    }

    /// A SLURM client command pointed at this cluster.
    fn cmd(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        cmd.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    fn output(&self, tool: &str, args: &[&str]) -> Output {
        self.cmd(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
    }

    fn spawn(&mut self, name: &'static str, args: &[&str]) {
        let out = std::fs::File::create(self.dir.join(format!("log/{name}.out")))
            .expect("daemon output file");
        let child = self
            .cmd(name)
            .args(args)
            .stdout(out.try_clone().expect("daemon output file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.push(Daemon { name, child });
    }

    /// Fails the test if a daemon has exited.
    fn assert_daemons_up(&mut self) {
        for daemon in &mut self.daemons {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{} exited ({status}) during the test", daemon.name);
            }
        }
    }

    /// Starts munged, slurmctld and slurmd, and waits for the node to be idle.
    fn start(root: &Path, tools: Vec<(&'static str, PathBuf)>) -> Cluster {
        let dir = root.join("slurm");
        for sub in ["munge", "state", "spool", "log", "jobs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("cluster directories");
        }
        // munged wants its key readable by its owner only, and a socket
        // directory that others may enter (the jobs run as root here anyway).
        let mut key = vec![0u8; 128];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
            &mut key,
        )
        .expect("read /dev/urandom");
        let key_file = dir.join("munge/munge.key");
        std::fs::write(&key_file, &key).expect("munge key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod munge key");
        for d in [&dir, root] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .expect("chmod cluster directory");
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let conf = dir.join("slurm.conf");
        std::fs::write(&conf, slurm_conf(&dir, free_port(), free_port(), cpus))
            .expect("slurm.conf");

        let mut cluster = Cluster {
            dir: dir.clone(),
            conf,
            tools,
            daemons: Vec::new(),
        };
        let socket = dir.join("munge/munge.socket");
        let d = |rel: &str| dir.join(rel).display().to_string();
        cluster.spawn(
            "munged",
            &[
                "--foreground",
                "--force",
                &format!("--key-file={}", key_file.display()),
                &format!("--socket={}", socket.display()),
                &format!("--pid-file={}", d("munge/munged.pid")),
                &format!("--seed-file={}", d("munge/munged.seed")),
                &format!("--log-file={}", d("log/munged.log")),
            ],
        );
        let munge = cluster.tool("munge").to_path_buf();
        wait_for(
            "munged to answer on its socket",
            SLURM_TIMEOUT,
            POLL,
            || {
                cluster.assert_daemons_up();
                Command::new(&munge)
                    .args(["-n", "-S"])
                    .arg(&socket)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
                    .then_some(())
            },
        );
        cluster.spawn("slurmctld", &["-D"]);
        cluster.spawn("slurmd", &["-D", "-N", NODE]);
        wait_for(
            "the node to come up idle in `sinfo`",
            SLURM_TIMEOUT,
            POLL,
            || {
                cluster.assert_daemons_up();
                let out = cluster.output("sinfo", &["-h", "-N", "-o", "%t", "-n", NODE]);
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "idle")
                    .then_some(())
            },
        );
        cluster
    }

    /// The array tasks still in the queue, as `<array>_<task>` with their state.
    fn queue(&self, array: &str) -> Vec<(String, String)> {
        let out = self.output("squeue", &["-h", "-r", "-j", array, "-o", "%i %T"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, state)| (id.to_string(), state.to_string()))
            .collect()
    }

    fn dump_logs(&self) {
        let mut files: Vec<PathBuf> = ["log", "jobs"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.dir.join(sub)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.push(self.dir.join("../coordinator.log"));
        files.sort();
        for file in files {
            eprintln!("---- last lines of {} ----", file.display());
            eprintln!("{}", tail(&file, 80));
        }
        for (tool, args) in [
            ("squeue", &["-a", "-r"][..]),
            ("sinfo", &["-N", "-l"][..]),
            ("scontrol", &["show", "job"][..]),
        ] {
            if let Ok(out) = self.cmd(tool).args(args).output() {
                eprintln!("---- {tool} {} ----\n{}", args.join(" "), text(&out));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        // Cancel every job, and give slurmd the time to end them (KillWait).
        if self
            .daemons
            .iter()
            .any(|d| d.name == "slurmctld" || d.name == "slurmd")
        {
            let _ = self.cmd("scancel").args(["--user=root"]).output();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                match self.cmd("squeue").args(["-h"]).output() {
                    Ok(out) if out.status.success() && !out.stdout.is_empty() => {}
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Then the daemons, last started first: SIGTERM, SIGKILL if need be.
        for daemon in self.daemons.iter_mut().rev() {
            let pid = daemon.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if daemon.child.try_wait().is_ok_and(|s| s.is_some()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        // Anything a job left behind (a worker whose step was not ended):
        // processes whose command line names this cluster's directory.
        for pid in processes_naming(&self.dir) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// The processes (not this one) whose command line contains `dir`.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// The coordinator on loopback with both tokens; killed when dropped.
struct Coordinator {
    _process: KillOnDrop,
}

impl Coordinator {
    fn start(root: &Path, port: u16) -> Coordinator {
        let log = std::fs::File::create(root.join("coordinator.log")).expect("coordinator log");
        let child = Command::new(binary("sweep-coordinator"))
            .arg("--config")
            .arg(root.join("sweep"))
            .arg("--state-dir")
            .arg(root.join("runs"))
            .arg("--worker-token-file")
            .arg(root.join("worker_token"))
            .arg("--admin-token-file")
            .arg(root.join("admin_token"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                // Short leases, so the cancelled task's job comes back soon.
                "--lease-timeout",
                "3",
                "--heartbeat-interval",
                "0.5",
                "--http",
                "off",
            ])
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("coordinator log"))
            .stderr(log)
            .spawn()
            .expect("start sweep-coordinator");
        Coordinator {
            _process: KillOnDrop(child),
        }
    }
}

fn write_token(path: &Path, value: &str) {
    std::fs::write(path, value).expect("token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod token");
}

async fn admin_client(port: u16) -> Client {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_lazy();
    let token = Token::new(ADMIN_TOKEN, "test").expect("admin token");
    sweep_proto::client::client(channel, Some(&token)).max_decoding_message_size(64 << 20)
}

async fn events(client: &mut Client, job_id: &str) -> Vec<pb::JobEvent> {
    client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: job_id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("job logs of {job_id}: {e}"))
        .into_inner()
        .events
}

/// The first epoch number in an "epoch" event's message.
fn epoch_of(event: &pb::JobEvent) -> Option<u32> {
    event
        .message
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|n| n.parse().ok())
}

fn epochs_in_metrics_json(root: &Path, job: &pb::JobStatus) -> Vec<u32> {
    let path = root
        .join("runs")
        .join(&job.sweep)
        .join(&job.variant)
        .join(format!("seed-{}", job.seed))
        .join("metrics.json");
    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    metrics["epochs"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no epochs", path.display()))
        .iter()
        .filter_map(|e| e["epoch"].as_u64())
        .map(|e| e as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sbatch_array_survives_a_scancelled_task() {
    let mut tools = Vec::new();
    let mut missing = Vec::new();
    for name in TOOLS {
        match find_tool(name) {
            Some(path) => tools.push((name, path)),
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return skip_or_fail(format!(
            "{} not found: install Debian's slurm-wlm and munge (scripts/test-deps.sh does, as root)",
            missing.join(", ")
        ));
    }
    if !is_root() {
        return skip_or_fail("not root: slurmd must run as root to launch jobs");
    }
    let worker_bin = binary("sweep-worker");
    let started = Instant::now();

    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    sweep_e2e::TinySweep {
        name: "slurm",
        seeds: &SEEDS,
        epochs: EPOCHS,
        hidden: 64,
        subset: (4000, 500),
        variants: &[sweep_e2e::NO_DROPOUT],
        ..Default::default()
    }
    .write(&root.join("sweep"));
    write_token(&root.join("worker_token"), WORKER_TOKEN);
    write_token(&root.join("admin_token"), ADMIN_TOKEN);
    let port = free_port();
    let _coordinator = Coordinator::start(root, port);
    let mut client = admin_client(port).await;

    let mut cluster = Cluster::start(root, tools);
    eprintln!("slurm cluster up in {:.0?}", started.elapsed());

    // Two array tasks of one CPU each; the script's own 4 CPUs and 16 GB per
    // task are more than this node has.
    let jobs = cluster.dir.join("jobs");
    let out = cluster
        .cmd("sbatch")
        .args([
            "--parsable",
            "--array=0-1",
            "--cpus-per-task=1",
            "--mem=256M",
        ])
        .arg(format!(
            "--output={}/sweep-worker-%A_%a.log",
            jobs.display()
        ))
        .arg(format!("--chdir={}", jobs.display()))
        .arg(repo_root().join("deploy/slurm/sweep-worker.sbatch"))
        .env("SWEEP_COORDINATOR", format!("127.0.0.1:{port}"))
        .env("SWEEP_TOKEN_FILE", root.join("worker_token"))
        .env("SWEEP_WORKER_BIN", &worker_bin)
        .env("SWEEP_CACHE_DIR", cluster.dir.join("cache"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .expect("run sbatch");
    assert!(out.status.success(), "sbatch failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let array = stdout
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or_else(|| panic!("sbatch --parsable printed no job id: {stdout}"))
        .to_string();
    let task = |i: u32| format!("{array}_{i}");
    // The script names each worker slurm-<array>_<task>-<host>-cpu<n>.
    let worker_of = |i: u32| format!("slurm-{}-", task(i));

    let running = wait_for("both array tasks to run", SLURM_TIMEOUT, POLL, || {
        cluster.assert_daemons_up();
        let queue = cluster.queue(&array);
        (queue.len() == 2 && queue.iter().all(|(_, s)| s == "RUNNING")).then_some(queue)
    });
    eprintln!("array job {array} running: {running:?}");

    // Array task 0's worker trains a job whose epoch-1 checkpoint the
    // coordinator has committed (epoch 2 was reported after it), far from its end.
    let snapshot = sweep_e2e::wait_for_status(
        &mut client,
        "array task 0's worker to train a job past epoch 2",
        SWEEP_TIMEOUT,
        |s| {
            s.jobs.iter().any(|j| {
                j.worker.contains(&worker_of(0))
                    && j.state == "running"
                    && (2..=EPOCHS / 2).contains(&j.epoch)
            })
        },
    )
    .await;
    let victim = snapshot
        .jobs
        .iter()
        .find(|j| j.worker.contains(&worker_of(0)) && j.state == "running")
        .expect("the job found above")
        .clone();
    let out = cluster.output("scancel", &[&task(0)]);
    assert!(out.status.success(), "scancel {}: {}", task(0), text(&out));
    eprintln!(
        "scancelled {} at {:.0?} while it trained {} (epoch {})",
        task(0),
        started.elapsed(),
        victim.job_id,
        victim.epoch
    );
    wait_for(
        &format!("{} to leave the queue after scancel", task(0)),
        SLURM_TIMEOUT,
        POLL,
        || (!cluster.queue(&array).iter().any(|(id, _)| *id == task(0))).then_some(()),
    );

    let done = sweep_e2e::wait_for_status(&mut client, "the sweep to finish", SWEEP_TIMEOUT, |s| {
        s.sweeps.first().is_some_and(|sweep| sweep.done)
    })
    .await;
    eprintln!("sweep done at {:.0?}", started.elapsed());
    cluster.assert_daemons_up();
    assert_eq!(
        cluster.queue(&array),
        [(task(1), "RUNNING".to_string())],
        "task 1's worker is still up (workers wait for more work)"
    );

    // Every job done exactly once, each epoch once in its run.
    let sweep = &done.sweeps[0];
    let total = (SEEDS.len() * VARIANTS.len()) as u32;
    assert_eq!(
        (sweep.total, sweep.succeeded, sweep.failed),
        (total, total, 0),
        "{sweep:?}"
    );
    for job in &done.jobs {
        assert_eq!(job.state, "succeeded", "{job:?}");
        let events = events(&mut client, &job.job_id).await;
        assert_eq!(
            events.iter().filter(|e| e.kind == "succeeded").count(),
            1,
            "{} succeeded exactly once: {events:#?}",
            job.job_id
        );
        assert_eq!(
            epochs_in_metrics_json(root, job),
            (1..=EPOCHS).collect::<Vec<_>>(),
            "{}: every epoch once",
            job.job_id
        );
    }

    // The cancelled task's job: its lease expired, and task 1's worker
    // resumed it from the checkpoint (not from epoch 1).
    let events = events(&mut client, &victim.job_id).await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "expired" && e.attempt == victim.attempt),
        "the lease of {} (attempt {}) expired after the scancel: {events:#?}",
        victim.job_id,
        victim.attempt
    );
    let finished = events
        .iter()
        .find(|e| e.kind == "succeeded")
        .map(|e| e.attempt)
        .expect("a succeeded event");
    assert!(finished > victim.attempt, "{events:#?}");
    assert!(
        events.iter().any(|e| e.kind == "leased"
            && e.attempt == finished
            && e.message.contains(&worker_of(1))),
        "task 1's worker ran the attempt that finished {}: {events:#?}",
        victim.job_id
    );
    let resumed_at = events
        .iter()
        .filter(|e| e.kind == "epoch" && e.attempt == finished)
        .find_map(epoch_of)
        .expect("an epoch of the finishing attempt");
    assert!(
        resumed_at >= 2,
        "the finishing attempt started from the checkpoint, not epoch 1: {events:#?}"
    );

    // The results table: every variant with every seed.
    let path = root.join("runs/slurm/results.json");
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("results.json is JSON");
    sweep_e2e::assert_every_seed_has_a_result(&results, &VARIANTS, SEEDS.len());

    // Task 0's script started one CPU worker with the token, and stayed
    // (its trap) to wait for it after scancel's SIGTERM.
    let log_of = |i: u32| {
        let path = jobs.join(format!("sweep-worker-{}.log", task(i)));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let log0 = log_of(0);
    assert!(
        log0.contains("sweep-worker: 1 cpu worker(s) -> 127.0.0.1:"),
        "task 0 started one CPU worker:\n{log0}"
    );
    assert!(
        !log0.contains("warning: no SWEEP_TOKEN_FILE"),
        "the token file reached the job:\n{log0}"
    );
    assert!(
        log0.contains("SIGTERM, waiting for the workers to stop"),
        "task 0's script trapped scancel's SIGTERM:\n{log0}"
    );

    // The time limit's way: `--signal=TERM@120` signals the job's steps, not
    // the batch shell, as `scancel --signal=TERM` does. Task 1's worker stops
    // cleanly, and the script ends on its own, removing its scratch directory.
    let out = cluster.output("scancel", &["--signal=TERM", &task(1)]);
    assert!(
        out.status.success(),
        "scancel --signal=TERM {}: {}",
        task(1),
        text(&out)
    );
    wait_for(
        &format!("{} to end after its worker's SIGTERM", task(1)),
        SLURM_TIMEOUT,
        POLL,
        || cluster.queue(&array).is_empty().then_some(()),
    );
    let out = cluster.output("scontrol", &["show", "job", &task(1)]);
    let info = text(&out);
    assert!(
        info.contains("JobState=COMPLETED") && info.contains("ExitCode=0:0"),
        "{} completed with exit code 0 after SIGTERM reached its worker:\n{info}\n{}",
        task(1),
        log_of(1)
    );
    let log1 = log_of(1);
    assert!(
        log1.contains("worker stopped"),
        "task 1's worker stopped cleanly on SIGTERM:\n{log1}"
    );
    let left: Vec<_> = std::fs::read_dir(cluster.dir.join("cache"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "both tasks removed their scratch directories: {left:?} left"
    );

    drop(cluster);
    eprintln!("slurm e2e: {:.0?} in all", started.elapsed());
}

#[test]
fn conf_names_loopback_and_the_ports() {
    let conf = slurm_conf(Path::new("/t"), 7001, 7002, 2);
    for line in [
        "SlurmctldHost=localhost(127.0.0.1)",
        "SlurmctldPort=7001",
        "SlurmdPort=7002",
        "AuthInfo=socket=/t/munge/munge.socket",
        "NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=1024 State=UNKNOWN",
    ] {
        assert!(conf.lines().any(|l| l == line), "{line} in:\n{conf}");
    }
}
