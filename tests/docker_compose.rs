//! The docker-compose cluster of `deploy/docker-compose.yml`, for real: builds
//! the image (deploy/build-images.sh, a no-op when it is up to date), starts a
//! coordinator and two workers on the quickstart sweep, `docker kill`s one
//! worker while it trains a job that has a committed checkpoint, and checks
//! that the sweep still completes: the killed job's lease expires, the other
//! worker resumes it from the checkpoint (then the killed one is started
//! again, as a replaced machine would be), every job has exactly one result,
//! and `sweepctl results` shows them from the container and from the host.
//!
//! Skips with a message (and passes; under `CI=true` it fails instead, see
//! crates/testkit) when no Docker engine answers, when
//! `docker compose`/`docker-compose` is missing, or when no base image can be
//! had here (no registry and no debootstrap: build-images.sh exits 3;
//! scripts/test-deps.sh installs debootstrap). With an engine, any other
//! failure to build or run fails the test.
//! `SWEEPRUN_SKIP_DOCKER_E2E=1` skips it on purpose (outside CI).
//!
//! Needs the release binaries (`make build`; `make test` builds them first).
//! Takes about the quickstart's two minutes plus a short lease expiry, and a
//! few minutes more the first time, while Docker builds the image.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sweep_e2e::{log_field, release_bin_dir, repo_root, strip_ansi, wait_for};
use sweep_testkit::skip_or_fail;

const SWEEP: &str = "quickstart";
/// Where the coordinator keeps the run layout inside its container.
const STATE: &str = "/var/lib/sweeprun/runs";
/// Short leases so the killed worker's job comes back within seconds.
const LEASE_TIMEOUT_S: &str = "6";
const HEARTBEAT_S: &str = "1";

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The compose command that works here: `docker compose` (v2) or `docker-compose` (v1).
fn compose_program() -> Option<Vec<String>> {
    if ok(Command::new("docker").args(["compose", "version"])) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    if ok(Command::new("docker-compose").arg("version")) {
        return Some(vec!["docker-compose".into()]);
    }
    None
}

/// A compose project of this test; `down -v` when dropped, whatever happened.
struct Cluster {
    program: Vec<String>,
    file: PathBuf,
    project: String,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    fn must(&self, args: &[&str]) -> String {
        let out = run(&mut self.cmd(args));
        assert!(
            out.status.success(),
            "compose {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cat` a file in the coordinator container; None if it is not there (yet).
    fn coordinator_file(&self, path: &str) -> Option<String> {
        let out = run(&mut self.cmd(&["exec", "-T", "coordinator", "cat", path]));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn coordinator_has(&self, path: &str) -> bool {
        ok(&mut self.cmd(&["exec", "-T", "coordinator", "test", "-e", path]))
    }

    /// One service's log, colour codes removed.
    fn logs(&self, service: &str) -> String {
        let out = run(&mut self.cmd(&["logs", "--no-color", "--no-log-prefix", service]));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        strip_ansi(&text)
    }

    fn container_id(&self, service: &str) -> String {
        self.must(&["ps", "-q", service]).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in ["coordinator", "worker-1", "worker-2"] {
                let logs = self.logs(service);
                let tail: Vec<&str> = logs.lines().rev().take(40).collect();
                eprintln!("---- last lines of {service} ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        let out = run(&mut self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]));
        if !out.status.success() {
            eprintln!(
                "compose down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `baseline-seed-42-0a1b2c3d` -> run dir `<STATE>/quickstart/baseline/seed-42`.
fn run_dir_of(job: &str) -> String {
    let (rest, _hash) = job.rsplit_once('-').expect("job id ends with -<hash>");
    let (variant, seed) = rest.rsplit_once("-seed-").expect("job id holds -seed-");
    format!("{STATE}/{SWEEP}/{variant}/seed-{seed}")
}

/// Lines of a log that carry `message` (tracing prints the message before its fields).
fn lines_with<'a>(log: &'a str, message: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    log.lines().filter(move |l| l.contains(message))
}

/// The variants and seeds of configs/quickstart, read the way README.md ("Sweeps")
/// defines a sweep directory: every `*.yaml` but sweep.yaml and the base is a
/// variant, the base itself is the variant named by `baseline`.
fn quickstart_jobs() -> (Vec<String>, Vec<u64>) {
    let dir = repo_root().join("configs").join(SWEEP);
    let spec: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(dir.join("sweep.yaml")).expect("sweep.yaml"),
    )
    .expect("sweep.yaml parses");
    let base = spec["base"].as_str().unwrap_or("base.yaml");
    let seeds: Vec<u64> = match spec["seeds"].as_array() {
        Some(seeds) => seeds.iter().map(|s| s.as_u64().expect("seed")).collect(),
        None => vec![42, 123, 456],
    };
    let mut variants: Vec<String> = std::fs::read_dir(&dir)
        .expect("configs/quickstart")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "sweep.yaml" && n != base)
        .map(|n| n.trim_end_matches(".yaml").to_string())
        .collect();
    let baseline = spec["baseline"].as_str().unwrap_or("baseline").to_string();
    if !variants.contains(&baseline) {
        variants.push(baseline);
    }
    variants.sort();
    (variants, seeds)
}

#[test]
fn compose_quickstart_survives_a_killed_worker() {
    if std::env::var_os("SWEEPRUN_SKIP_DOCKER_E2E").is_some() {
        return skip_or_fail("SWEEPRUN_SKIP_DOCKER_E2E is set");
    }
    if !ok(Command::new("timeout").args(["30", "docker", "info"])) {
        return skip_or_fail(
            "no Docker engine answers `docker info` (install Docker or start its daemon to run it)",
        );
    }
    let Some(program) = compose_program() else {
        return skip_or_fail("Docker is here but neither `docker compose` nor `docker-compose` is");
    };
    let root = repo_root();
    let bins = release_bin_dir();
    for bin in [
        "sweep-coordinator",
        "sweep-worker",
        "sweepctl",
        "sweepctl-torch",
    ] {
        assert!(
            bins.join(bin).is_file(),
            "{} is missing: run `make build` first (`make test` does)",
            bins.join(bin).display()
        );
    }

    // The image: built once, then only when binaries, libraries or configs change.
    let image = std::env::var("SWEEPRUN_IMAGE").unwrap_or_else(|_| "sweeprun:latest".into());
    let started = Instant::now();
    let out = run(Command::new(root.join("deploy/build-images.sh"))
        .env("IMAGE", &image)
        .env("SWEEPRUN_BIN_DIR", &bins)
        .current_dir(&root));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            return skip_or_fail(format!(
                "no base image can be had here (no registry, no debootstrap):\n{log}"
            ));
        }
        _ => panic!("deploy/build-images.sh failed ({}):\n{log}", out.status),
    }
    eprintln!("image {image} ready in {:.0?}", started.elapsed());

    let cluster = Cluster {
        program,
        file: root.join("deploy/docker-compose.yml"),
        project: format!("sweeprun-e2e-{}", std::process::id()),
        env: vec![
            ("SWEEPRUN_IMAGE".into(), image.clone()),
            ("SWEEP_PORT".into(), sweep_e2e::free_port().to_string()),
            ("SWEEP_HTTP_PORT".into(), sweep_e2e::free_port().to_string()),
            ("SWEEP_LEASE_TIMEOUT".into(), LEASE_TIMEOUT_S.into()),
            ("SWEEP_HEARTBEAT_INTERVAL".into(), HEARTBEAT_S.into()),
            ("SWEEP_WORKER_RESTART".into(), "no".into()),
            ("NO_COLOR".into(), "1".into()),
        ],
    };
    let up = Instant::now();
    cluster.must(&["up", "-d"]);

    // Kill worker-1 while it trains a job whose first epoch's checkpoint the
    // coordinator has committed, so the next attempt has something to resume.
    let victim = wait_for(
        "worker-1 to train a job with a committed checkpoint",
        Duration::from_secs(300),
        Duration::from_millis(500),
        || {
            let worker_log = cluster.logs("worker-1");
            let job = lines_with(&worker_log, "job started")
                .filter_map(|l| log_field(l, "job"))
                .last()?
                .to_string();
            let coordinator_log = cluster.logs("coordinator");
            let finished = lines_with(&coordinator_log, "job succeeded")
                .any(|l| log_field(l, "job") == Some(&job));
            let committed = cluster
                .coordinator_has(&format!("{}/checkpoints/last.state.json", run_dir_of(&job)));
            (!finished && committed).then_some(job)
        },
    );
    let worker1 = cluster.container_id("worker-1");
    assert!(
        ok(Command::new("docker").args(["kill", &worker1])),
        "docker kill worker-1"
    );
    eprintln!(
        "killed worker-1 at {:.0?} while it trained {victim}",
        up.elapsed()
    );

    // Once another worker has the job again, worker-1 comes back as a fresh
    // process (a replaced machine), so the rest of the sweep runs on two workers.
    wait_for(
        "the killed worker's job to be leased again",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || {
            let log = cluster.logs("coordinator");
            lines_with(&log, "job leased")
                .any(|l| {
                    log_field(l, "job") == Some(victim.as_str())
                        && log_field(l, "attempt") != Some("1")
                })
                .then_some(())
        },
    );
    eprintln!(
        "{victim} leased again {:.0?} after compose up",
        up.elapsed()
    );
    let state = String::from_utf8_lossy(
        &run(Command::new("docker").args(["inspect", "-f", "{{.State.Status}}", &worker1])).stdout,
    )
    .trim()
    .to_string();
    assert_eq!(
        state, "exited",
        "worker-1 stayed down after the kill (SWEEP_WORKER_RESTART=no)"
    );
    cluster.must(&["start", "worker-1"]);

    let (variants, seeds) = quickstart_jobs();
    let results = wait_for(
        "the sweep to finish (results.json with nothing pending)",
        Duration::from_secs(900),
        Duration::from_secs(2),
        || {
            let text = cluster.coordinator_file(&format!("{STATE}/{SWEEP}/results.json"))?;
            let json: Value = serde_json::from_str(&text).ok()?;
            (json["pending"].as_u64() == Some(0)).then_some(json)
        },
    );
    eprintln!("sweep finished {:.0?} after compose up", up.elapsed());

    // Every variant has all its seeds.
    let variants: Vec<&str> = variants.iter().map(String::as_str).collect();
    sweep_e2e::assert_every_seed_has_a_result(&results, &variants, seeds.len());

    // Every run is on the volume, with its final metrics and its best checkpoint.
    for variant in &variants {
        for seed in &seeds {
            let dir = format!("{STATE}/{SWEEP}/{variant}/seed-{seed}");
            let metrics = cluster
                .coordinator_file(&format!("{dir}/metrics.json"))
                .unwrap_or_else(|| panic!("{dir}/metrics.json"));
            let metrics: Value = serde_json::from_str(&metrics).expect("metrics.json is JSON");
            assert!(
                !metrics["test"].is_null(),
                "{dir}/metrics.json has final test metrics: {metrics:#}"
            );
            assert!(
                cluster.coordinator_has(&format!("{dir}/checkpoints/best.safetensors")),
                "{dir}/checkpoints/best.safetensors"
            );
        }
    }

    // Its job went back to pending when the lease expired and was resumed
    // elsewhere from the committed checkpoint.
    let coordinator_log = cluster.logs("coordinator");
    assert!(
        lines_with(&coordinator_log, "lease expired")
            .any(|l| log_field(l, "job") == Some(victim.as_str())),
        "the coordinator expired the lease of {victim}"
    );
    let retried: Vec<&str> = lines_with(&coordinator_log, "job leased")
        .filter(|l| {
            log_field(l, "job") == Some(victim.as_str()) && log_field(l, "attempt") != Some("1")
        })
        .collect();
    assert!(
        !retried.is_empty(),
        "{victim} was leased again after the kill"
    );
    assert!(
        retried
            .iter()
            .any(|l| log_field(l, "resume") == Some("true")),
        "{victim} resumed from its committed checkpoint: {retried:#?}"
    );

    // Exactly one result per job, whatever was retried.
    let mut succeeded: Vec<&str> = lines_with(&coordinator_log, "job succeeded")
        .filter_map(|l| log_field(l, "job"))
        .collect();
    succeeded.sort();
    let total = succeeded.len();
    succeeded.dedup();
    assert_eq!(
        succeeded.len(),
        variants.len() * seeds.len(),
        "every job succeeded: {succeeded:?}"
    );
    assert_eq!(total, succeeded.len(), "no job succeeded twice");

    // The user's view: `sweepctl results`, inside the coordinator's container
    // and from the host through the published port.
    let table = cluster.must(&["exec", "-T", "coordinator", "sweepctl", "results", SWEEP]);
    for variant in &variants {
        assert!(
            table.contains(*variant),
            "`sweepctl results` shows {variant}:\n{table}"
        );
    }
    eprintln!("{table}");
    let port = &cluster
        .env
        .iter()
        .find(|(k, _)| k == "SWEEP_PORT")
        .expect("SWEEP_PORT")
        .1;
    let out = run(Command::new(bins.join("sweepctl"))
        .args([
            "--coordinator",
            &format!("127.0.0.1:{port}"),
            "results",
            SWEEP,
            "--format",
            "json",
        ])
        .env("SWEEP_TOKEN_FILE", root.join("deploy/secrets/admin_token")));
    assert!(
        out.status.success(),
        "sweepctl results from the host: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_host: Value =
        serde_json::from_slice(&out.stdout).expect("sweepctl results --format json");
    assert_eq!(
        from_host["variants"], results["variants"],
        "the host sees the results on the volume"
    );

    eprintln!(
        "docker_compose e2e: {:.0?} in all, {:.0?} from compose up",
        started.elapsed(),
        up.elapsed()
    );
}

// Keep the helper honest without Docker.
#[test]
fn run_dirs_follow_the_job_ids() {
    assert_eq!(
        run_dir_of("baseline-seed-42-0a1b2c3d"),
        format!("{STATE}/quickstart/baseline/seed-42")
    );
    assert_eq!(
        run_dir_of("no_dropout-seed-456-ffffffff"),
        format!("{STATE}/quickstart/no_dropout/seed-456")
    );
    let (variants, seeds) = quickstart_jobs();
    assert!(
        variants.iter().any(|v| v == "baseline") && variants.len() >= 2,
        "{variants:?}"
    );
    assert!(!seeds.is_empty());
}
