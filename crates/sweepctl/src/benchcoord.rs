//! `sweepctl bench-coordinator`: a load generator that plays N workers
//! against a real coordinator over real gRPC, to measure how the coordinator
//! scales (BENCHMARKS.md, "A fleet of simulated workers").
//!
//! It submits a synthetic sweep (J jobs of E epochs, built-in MNIST configs
//! that are never trained), then runs N simulated workers on this process's
//! runtime, spread over C HTTP/2 connections: each registers, heartbeats at
//! the interval the coordinator asks for, leases a job, reports its E epochs,
//! sleeps about `--job-seconds` if asked (0.5–1.5×, by seed), and completes
//! it asking for its next job (`lease_next`, as `sweep-worker` does; it polls
//! LeaseJob when none comes), until every job of the sweep has ended. It
//! measures dispatch throughput, the latency of each call, and, given the
//! coordinator's pid and state directory, its CPU time, peak RSS and
//! database size; and it checks that every job completed exactly once
//! (each completion acknowledged once, each job leased once, and the
//! coordinator's own status and results agreeing).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sweep_core::command::JobConfig;
use sweep_core::lease::LeasedJob;
use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::sweep::{SweepSpec, Variant};
use sweep_proto::{PROTOCOL_VERSION, pb};
use tokio::sync::watch;

use crate::client::{self, Client, ConnectArgs};

/// `sweepctl bench-coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCoordinatorArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// Jobs in the synthetic sweep (above 100, rounded up to whole variants
    /// of 100 seeds). The sweep stays in the coordinator's store: point this
    /// at a coordinator of its own (bench/fleet.sh starts one).
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Epochs each job reports.
    #[arg(long, default_value_t = 5)]
    pub epochs: u32,
    /// How long each simulated job "trains" after its last epoch, on average
    /// (each job 0.5–1.5× this, by its seed; 0: none).
    #[arg(long, default_value_t = 0.0)]
    pub job_seconds: f64,
    /// HTTP/2 connections the workers share (default: one per worker, up to 64).
    #[arg(long)]
    pub connections: Option<usize>,
    /// The coordinator's process id, to sample its CPU time and RSS
    /// (/proc/PID; same machine only).
    #[arg(long, value_name = "PID")]
    pub coordinator_pid: Option<u32>,
    /// The coordinator's --state-dir, to report the database's size.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Also print the figures as one JSON object (last line).
    #[arg(long)]
    pub json: bool,
}

/// Call latencies in microseconds, per kind of call.
#[derive(Default)]
struct Latencies {
    lease: Vec<u64>,
    report: Vec<u64>,
    complete: Vec<u64>,
    heartbeat: Vec<u64>,
}

/// What every simulated worker shares.
struct Shared {
    args: BenchCoordinatorArgs,
    sweep: String,
    total: u64,
    completed: AtomicU64,
    /// Per job: leases received and completions acknowledged.
    seen: Mutex<HashMap<String, (u32, u32)>>,
    latencies: Mutex<Latencies>,
    /// Time of the first lease, and when the last completion was sent.
    first_lease: Mutex<Option<Instant>>,
    last_complete: Mutex<Option<Instant>>,
    /// Becomes true when every job has been completed.
    done: watch::Sender<bool>,
    errors: AtomicU64,
    /// Jobs leased with a completion (`lease_next`) rather than by LeaseJob.
    handed: AtomicU64,
}

impl Shared {
    fn record(&self, kind: fn(&mut Latencies) -> &mut Vec<u64>, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        let mut l = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        kind(&mut l).push(micros);
    }
}

/// The synthetic sweep: `variants` × 100 seeds (fewer seeds for a small J),
/// submitted as `sweepctl submit` submits a loaded one.
fn sweep_request(
    name: &str,
    jobs: usize,
    epochs: u32,
) -> anyhow::Result<(pb::SubmitSweepRequest, u64)> {
    let seeds_per_variant = jobs.clamp(1, 100);
    let variants = jobs.div_ceil(seeds_per_variant).max(1);
    let config = JobConfig::from_yaml(
        &format!(
            "name: v0000\nseed: 1\n\
             model: {{type: fc, input_size: 784, hidden_sizes: [8], num_classes: 10}}\n\
             data: {{dataset: mnist, data_dir: /nonexistent/bench, subset: {{train: 100, test: 100}}}}\n\
             training: {{epochs: {epochs}, learning_rate: 0.001}}\n"
        ),
        std::path::Path::new("<bench-coordinator config>"),
    )
    .context("the bench sweep's config")?;
    let spec = SweepSpec {
        name: name.to_string(),
        description: Some(
            "sweepctl bench-coordinator: simulated workers, nothing is trained".into(),
        ),
        seeds: (1..=seeds_per_variant as u64).collect(),
        metric: "test_acc".into(),
        baseline: "v0000".into(),
        variants: (0..variants)
            .map(|i| {
                let name = format!("v{i:04}");
                let mut config = config.clone();
                config.set_name(&name);
                Variant {
                    name,
                    config,
                    swept: Vec::new(),
                }
            })
            .collect(),
        seed_policy: None,
        swept_keys: Vec::new(),
    };
    let total = (variants * seeds_per_variant) as u64;
    Ok((pb::SubmitSweepRequest::from(&spec), total))
}

/// The p-th percentile (0..=100) of sorted values, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1] as f64 / 1000.0)
}

/// CPU seconds (user + system) and current/peak RSS in MiB of a process.
fn process_usage(pid: u32) -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    let cpu = ticks / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    };
    Some((cpu, kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

pub fn run(connect: &ConnectArgs, args: BenchCoordinatorArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.jobs == 0 || args.epochs == 0 {
        bail!("--workers, --jobs and --epochs must be at least 1");
    }
    // Many workers: use every core for the simulated side.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(bench(connect, args))
}

async fn bench(connect: &ConnectArgs, args: BenchCoordinatorArgs) -> anyhow::Result<()> {
    let connections = args.connections.unwrap_or(args.workers.min(64)).max(1);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(client::connect(connect).await?);
    }
    let mut admin = clients[0].clone();
    let name = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let (request, total) = sweep_request(&name, args.jobs, args.epochs)?;
    let submitted = Instant::now();
    let answer = admin
        .submit_sweep(request)
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "submitting the bench sweep", s))?
        .into_inner();
    let submit_seconds = submitted.elapsed().as_secs_f64();
    eprintln!(
        "submitted sweep {name}: {} jobs × {} epoch{} in {submit_seconds:.2}s; {} workers over {connections} connections",
        answer.jobs,
        args.epochs,
        if args.epochs == 1 { "" } else { "s" },
        args.workers
    );
    if u64::from(answer.jobs) != total {
        bail!(
            "the coordinator made {} jobs, expected {total}",
            answer.jobs
        );
    }
    let usage_before = args.coordinator_pid.and_then(process_usage);
    let sampled = Instant::now();

    let (done, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        args: args.clone(),
        sweep: name.clone(),
        total,
        completed: AtomicU64::new(0),
        seen: Mutex::new(HashMap::new()),
        latencies: Mutex::new(Latencies::default()),
        first_lease: Mutex::new(None),
        last_complete: Mutex::new(None),
        done,
        errors: AtomicU64::new(0),
        handed: AtomicU64::new(0),
    });
    // Peak RSS is the kernel's high-water mark; sampling only shows progress.
    let mut tasks = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        let client = clients[i % connections].clone();
        tasks.push(tokio::spawn(worker(Arc::clone(&shared), client, i)));
    }
    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let mut done_rx = shared.done.subscribe();
    loop {
        if *done_rx.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = progress.tick() => {
                let n = shared.completed.load(Ordering::Relaxed);
                let rss = args.coordinator_pid.and_then(process_usage).map(|u| format!(", coordinator RSS {:.0} MiB", u.1)).unwrap_or_default();
                eprintln!("{:>6.1}s: {n}/{total} jobs completed{rss}", started.elapsed().as_secs_f64());
            }
            changed = done_rx.changed() => {
                if changed.is_err() || *done_rx.borrow() {
                    break;
                }
            }
        }
    }
    for task in tasks {
        task.await.context("a simulated worker panicked")?;
    }
    let usage_after = args.coordinator_pid.and_then(process_usage);
    let sampled_seconds = sampled.elapsed().as_secs_f64().max(1e-9);

    // Exactly once: as the workers saw it, then as the coordinator says.
    let seen = shared
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let completed_once = seen.values().filter(|(_, c)| *c == 1).count() as u64;
    let leased_more = seen.values().filter(|(l, _)| *l > 1).count();
    let completed_more = seen.values().filter(|(_, c)| *c > 1).count();
    let status = admin
        .get_status(pb::GetStatusRequest {
            sweep: name.clone(),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "getting the status", s))?
        .into_inner();
    let sweep_status = status
        .sweeps
        .first()
        .context("the bench sweep is missing from the status")?;
    let first_attempts = status.jobs.iter().filter(|j| j.attempt == 1).count();
    let results = admin
        .get_results(pb::GetResultsRequest {
            sweep: name.clone(),
            format: "json".into(),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "getting the results", s))?
        .into_inner();
    let table: sweep_core::results::ResultsTable =
        serde_json::from_str(&results.json).context("reading the results")?;
    let results_n: usize = table.variants.iter().map(|v| v.n).sum();
    let exactly_once = completed_once == total
        && seen.len() as u64 == total
        && completed_more == 0
        && u64::from(sweep_status.succeeded) == total
        && first_attempts as u64 == total
        && results_n as u64 == total;

    let first = shared
        .first_lease
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(started);
    let last = shared
        .last_complete
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(first);
    let seconds = last.duration_since(first).as_secs_f64().max(1e-9);
    let mut l = std::mem::take(&mut *shared.latencies.lock().unwrap_or_else(|p| p.into_inner()));
    for v in [
        &mut l.lease,
        &mut l.report,
        &mut l.complete,
        &mut l.heartbeat,
    ] {
        v.sort_unstable();
    }
    let ms = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |x| format!("{x:.2} ms"));
    let db_mib = args.state_dir.as_ref().map(|dir| {
        ["coordinator.sqlite", "coordinator.sqlite-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len() as f64)
            .sum::<f64>()
            / (1 << 20) as f64
    });
    let cpu = match (usage_before, usage_after) {
        (Some(b), Some(a)) => Some(a.0 - b.0),
        _ => None,
    };
    let peak_rss = usage_after.map(|u| u.2);

    println!(
        "workers {}  connections {connections}  jobs {total}  epochs {}  job length {}s",
        args.workers, args.epochs, args.job_seconds
    );
    println!(
        "  dispatch        {:.0} jobs/s ({total} jobs in {seconds:.2}s, first lease to last completion)",
        total as f64 / seconds
    );
    for (what, values) in [
        ("LeaseJob", &l.lease),
        ("ReportEpoch", &l.report),
        ("CompleteJob", &l.complete),
        ("Heartbeat", &l.heartbeat),
    ] {
        println!(
            "  {what:<15} p50 {}  p99 {}  ({} calls)",
            ms(percentile(values, 50.0)),
            ms(percentile(values, 99.0)),
            values.len()
        );
    }
    let handed = shared.handed.load(Ordering::Relaxed);
    println!(
        "  handed over     {handed} of {total} jobs came with the completion before them (lease_next), not from LeaseJob"
    );
    if let Some(max) = l.complete.last() {
        println!(
            "  slowest CompleteJob {:.2}s (the last one writes the results and the report before it answers)",
            *max as f64 / 1e6
        );
    }
    if let Some(cpu) = cpu {
        println!(
            "  coordinator CPU {cpu:.1}s ({:.2} cores from the submission's end to the last job's)",
            cpu / sampled_seconds
        );
    }
    if let Some(peak) = peak_rss {
        println!("  coordinator RSS {peak:.0} MiB peak");
    }
    if let Some(db) = db_mib {
        println!("  SQLite          {db:.1} MiB (database + WAL)");
    }
    println!(
        "  exactly once    {} (completions acknowledged once: {completed_once}/{total}; jobs leased twice: {leased_more}; \
         coordinator: {} succeeded, {first_attempts} on attempt 1, {results_n} results; call errors retried: {})",
        if exactly_once { "yes" } else { "NO" },
        sweep_status.succeeded,
        shared.errors.load(Ordering::Relaxed)
    );
    if args.json {
        let figures = serde_json::json!({
            "workers": args.workers,
            "connections": connections,
            "jobs": total,
            "epochs": args.epochs,
            "job_seconds": args.job_seconds,
            "jobs_per_second": total as f64 / seconds,
            "seconds": seconds,
            "lease_ms": {"p50": percentile(&l.lease, 50.0), "p99": percentile(&l.lease, 99.0)},
            "report_epoch_ms": {"p50": percentile(&l.report, 50.0), "p99": percentile(&l.report, 99.0)},
            "complete_ms": {"p50": percentile(&l.complete, 50.0), "p99": percentile(&l.complete, 99.0)},
            "heartbeat_ms": {"p50": percentile(&l.heartbeat, 50.0), "p99": percentile(&l.heartbeat, 99.0), "calls": l.heartbeat.len()},
            "coordinator_cpu_seconds": cpu,
            "coordinator_peak_rss_mib": peak_rss,
            "sqlite_mib": db_mib,
            "exactly_once": exactly_once,
            "handed_with_completion": handed,
        });
        println!("{figures}");
    }
    if !exactly_once {
        bail!("the exactly-once check failed (see above)");
    }
    Ok(())
}

/// Calls `f` until it succeeds, counting failures; gives up when the bench is
/// over. Latency is measured on the successful try.
async fn call<T, F, Fut>(
    shared: &Shared,
    kind: fn(&mut Latencies) -> &mut Vec<u64>,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    loop {
        if *shared.done.borrow() {
            return None;
        }
        let started = Instant::now();
        match f().await {
            Ok(response) => {
                shared.record(kind, started);
                return Some(response.into_inner());
            }
            Err(status) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(code = ?status.code(), error = %status.message(), "call failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One simulated worker: register, heartbeat, lease, report, complete.
async fn worker(shared: Arc<Shared>, client: Client, index: usize) {
    let request = pb::RegisterWorkerRequest {
        protocol_version: PROTOCOL_VERSION,
        name: format!("bench-{index:04}"),
        host: "bench".into(),
        device: "cpu".into(),
        threads: 1,
        slots: 1,
        allow_commands: false,
    };
    let Some(registered) = call(
        &shared,
        |l| &mut l.heartbeat,
        || {
            let (mut c, request) = (client.clone(), request.clone());
            async move { c.register_worker(request).await }
        },
    )
    .await
    else {
        return;
    };
    // The registration is not a heartbeat: drop its latency from those.
    shared
        .latencies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .heartbeat
        .pop();
    let worker_id = registered.worker_id;
    let held: Arc<Mutex<Option<(String, u32)>>> = Arc::new(Mutex::new(None));

    // Heartbeats at the coordinator's interval, as a real worker sends them.
    let beats = {
        let (shared, held, worker_id) = (Arc::clone(&shared), Arc::clone(&held), worker_id.clone());
        let mut c = client.clone();
        let interval = Duration::from_millis(registered.heartbeat_interval_ms.max(10));
        tokio::spawn(async move {
            let mut done = shared.done.subscribe();
            // The first an interval after registering, as a worker's.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *done.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = done.changed() => return,
                }
                let jobs: Vec<pb::JobRef> = held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(job_id, attempt)| pb::JobRef {
                        job_id: job_id.clone(),
                        attempt: *attempt,
                    })
                    .collect();
                let started = Instant::now();
                if c.heartbeat(pb::HeartbeatRequest {
                    worker_id: worker_id.clone(),
                    jobs,
                })
                .await
                .is_ok()
                {
                    shared.record(|l| &mut l.heartbeat, started);
                }
            }
        })
    };

    let mut c = client.clone();
    let mut done = shared.done.subscribe();
    // The next job, when the coordinator leased it with the last completion.
    let mut handed: Option<pb::Job> = None;
    loop {
        if *done.borrow() {
            break;
        }
        let started = Instant::now();
        let handed_over = handed.take();
        let leased = match handed_over.clone() {
            Some(job) => {
                shared.handed.fetch_add(1, Ordering::Relaxed);
                Ok(tonic::Response::new(pb::LeaseJobResponse {
                    job: Some(job),
                }))
            }
            None => tokio::select! {
                r = c.lease_job(pb::LeaseJobRequest { worker_id: worker_id.clone() }) => r,
                _ = done.changed() => break,
            },
        };
        let job = match leased {
            Ok(response) => match response.into_inner().job.map(LeasedJob::try_from) {
                Some(Ok(job)) => {
                    // The latency of a LeaseJob call that brought a job (a
                    // job handed over with a completion is in CompleteJob's).
                    if handed_over.is_none() {
                        shared.record(|l| &mut l.lease, started);
                    }
                    job
                }
                Some(Err(err)) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "leased a malformed job; leaving it to expire");
                    continue;
                }
                // The poll timed out with nothing pending: ask again.
                None => continue,
            },
            Err(status) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(code = ?status.code(), error = %status.message(), "lease failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if job.sweep != shared.sweep {
            tracing::warn!(job = %job.id, sweep = %job.sweep, "leased a job of another sweep; leaving it to expire");
            continue;
        }
        shared
            .first_lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(started);
        shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(job.id.clone())
            .or_default()
            .0 += 1;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = Some((job.id.clone(), job.attempt));
        handed = run_job(&shared, &client, &worker_id, &job).await;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    let _ = beats.await;
}

/// How long a job "trains": spread evenly over 0.5–1.5 × the mean by its
/// seed, as real jobs differ, so that a fleet started at once does not stay
/// in lockstep (a thousand completions in the same millisecond, forever).
fn job_length(mean_seconds: f64, seed: u64) -> f64 {
    mean_seconds * (0.5 + (seed % 100) as f64 / 99.0)
}

/// Reports the job's epochs, waits its simulated length, completes it.
/// Returns the next job when the coordinator leased one with the completion.
async fn run_job(
    shared: &Shared,
    client: &Client,
    worker_id: &str,
    job: &LeasedJob,
) -> Option<pb::Job> {
    let epochs = shared.args.epochs;
    let mut reported_epochs = Vec::with_capacity(epochs as usize);
    for epoch in 1..=epochs {
        let metrics = EpochMetrics {
            epoch,
            train_loss: 1.0 / f64::from(epoch),
            train_acc: 0.9,
            val_loss: 1.0 / f64::from(epoch),
            val_acc: 0.9,
            lr: 1e-3,
            seconds: 0.0,
        };
        let request = pb::ReportEpochRequest {
            worker_id: worker_id.to_string(),
            job_id: job.id.clone(),
            attempt: job.attempt,
            metrics: Some(metrics.into()),
        };
        let reported = call(
            shared,
            |l| &mut l.report,
            || {
                let (mut c, request) = (client.clone(), request.clone());
                async move { c.report_epoch(request).await }
            },
        );
        reported.await?;
        reported_epochs.push(metrics);
    }
    let length = job_length(shared.args.job_seconds, job.seed);
    if length > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(length)).await;
    }
    let jitter = (job.seed % 100) as f64 / 10_000.0;
    // As a worker completes: with every epoch it reported.
    let metrics = RunMetrics {
        epochs: reported_epochs,
        best_epoch: epochs,
        best_val_loss: Some(0.1),
        best_val_acc: Some(0.9 + jitter),
        stopped_early: false,
        train_seconds: length,
        test: Some(TestMetrics {
            test_loss: 0.1,
            test_acc: 0.9 + jitter,
        }),
    };
    let request = pb::CompleteJobRequest {
        worker_id: worker_id.to_string(),
        job_id: job.id.clone(),
        attempt: job.attempt,
        outcome: Some(pb::complete_job_request::Outcome::Metrics(metrics.into())),
        lease_next: true,
    };
    // The last completion also writes the sweep's results and report before
    // it is answered: the dispatch window ends when it is sent.
    let sent = Instant::now();
    let completed = call(
        shared,
        |l| &mut l.complete,
        || {
            let (mut c, request) = (client.clone(), request.clone());
            async move { c.complete_job(request).await }
        },
    );
    let completed = completed.await?;
    shared
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(job.id.clone())
        .or_default()
        .1 += 1;
    {
        let mut last = shared
            .last_complete
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at < sent) {
            *last = Some(sent);
        }
    }
    let n = shared.completed.fetch_add(1, Ordering::SeqCst) + 1;
    if n >= shared.total {
        shared.done.send_replace(true);
    }
    completed.next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<u64> = (1..=100).map(|v| v * 1000).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7000], 99.0), Some(7.0));
    }

    #[test]
    fn job_lengths_spread_around_the_mean() {
        let lengths: Vec<f64> = (1..=100).map(|seed| job_length(2.0, seed)).collect();
        let mean = lengths.iter().sum::<f64>() / 100.0;
        assert!((mean - 2.0).abs() < 1e-9, "mean {mean}");
        let (min, max) = lengths
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        assert!(
            (min - 1.0).abs() < 1e-9 && (max - 3.0).abs() < 1e-9,
            "{min}..{max}"
        );
        assert_eq!(job_length(0.0, 7), 0.0);
    }

    #[test]
    fn the_sweep_has_the_jobs_asked_for() {
        let (request, total) = sweep_request("b", 10_000, 5).expect("a valid sweep");
        assert_eq!(total, 10_000);
        assert_eq!(request.variants.len(), 100);
        assert_eq!(request.seeds.len(), 100);
        let (request, total) = sweep_request("b", 30, 5).expect("a valid sweep");
        assert_eq!((total, request.variants.len()), (30, 1));
        for v in &request.variants {
            sweep_core::command::JobConfig::from_yaml(&v.config_yaml, std::path::Path::new("t"))
                .expect("a valid config");
        }
    }
}
