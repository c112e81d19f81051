//! The worker daemon: registers with a coordinator, leases jobs, trains each
//! on a dedicated thread and streams its epochs and checkpoints back.
//!
//! # Layout
//! - [`run`]: the daemon (registration, heartbeats, one lease loop per slot);
//!   a library function so that the coordinator's `--local-workers` and tests
//!   run workers in-process.
//! - `job`: one leased job, from downloading its checkpoints to CompleteJob.
//! - `command`: a command job, the user's own program run as a child process
//!   (only on workers started with `--allow-commands`).
//! - [`provenance`]: what the worker says about each attempt it starts
//!   (device, versions, data hashes), for the run's provenance.
//! - `transfer`: chunked, SHA-256-verified file streams (checkpoints, datasets).
//!
//! Training is synchronous libtorch work; it never runs on the async runtime,
//! so heartbeats keep flowing however long an epoch takes. Every report is
//! retried with exponential backoff while the coordinator is away, and the
//! coordinator ingests idempotently, so re-sending is always safe.

mod command;
mod job;
pub mod provenance;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use sweep_core::config::DeviceSpec;
use sweep_core::lease::LeasedJob;
use sweep_core::token::Token;
use sweep_proto::PROTOCOL_VERSION;
use sweep_proto::pb;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

/// First retry delay after a failed call: quick enough to ride out a blip.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between retries: a restarted coordinator is found within this.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);
/// How long a job's final report may still be retried once the worker is told
/// to stop: a finished result is worth a few seconds of shutdown, and an
/// in-process worker stopping with its coordinator must not drop the last
/// answer in flight.
const FINAL_REPORT_GRACE: Duration = Duration::from_secs(10);
/// A TCP connect that takes longer than this is treated as a failure (and retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] sweep_proto::client::ClientError),
    /// The coordinator refused the handshake (protocol version, bad request).
    #[error("the coordinator at {address} refused this worker: {message}{hint}")]
    Refused {
        address: String,
        message: String,
        /// What to do about it, when the refusal says (a token).
        hint: &'static str,
    },
    /// `--device` names a device libtorch does not see: every job would fail.
    #[error(
        "{reason}; start the worker with --device auto or cpu, or on a machine whose libtorch \
         sees that GPU (on Colab: Runtime → Change runtime type → a GPU)"
    )]
    Device { reason: String },
}

pub use sweep_proto::client::Client;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `host:port` (or a full `http://` URL) of the coordinator.
    pub connect: String,
    /// Replaces the device of every job's config.
    pub device: DeviceSpec,
    /// Replaces the torch thread count of every job's config when set.
    pub threads: Option<usize>,
    /// The cores this worker's slots share (None: every core this process
    /// may use). A job whose config sets no `threads`, on a worker without
    /// `threads`, gets an equal share: see [`WorkerConfig::default_threads`].
    pub cores: Option<usize>,
    /// Jobs run at once.
    pub slots: usize,
    /// Local run directories and fetched datasets.
    pub cache_dir: PathBuf,
    /// Shown in `sweepctl workers`.
    pub name: String,
    /// Test-only job kind for scheduling benchmarks: each job sleeps this long
    /// instead of training and reports a synthetic result.
    pub simulate_jobs: Option<Duration>,
    /// Bearer token sent with every request (`--token-file` or $SWEEP_TOKEN).
    pub token: Option<Token>,
    /// Verify the coordinator's TLS certificate against this CA (PEM); the
    /// connection then uses TLS.
    pub tls_ca: Option<PathBuf>,
    /// Run command jobs (`command:` configs): programs named by whoever
    /// submits a sweep, run as this worker's user. Off unless asked for.
    pub allow_commands: bool,
}

impl WorkerConfig {
    pub fn new(connect: impl Into<String>) -> Self {
        WorkerConfig {
            connect: connect.into(),
            device: DeviceSpec::Auto,
            threads: None,
            cores: None,
            slots: 1,
            cache_dir: default_cache_dir(),
            name: sweep_core::run_dir::hostname(),
            simulate_jobs: None,
            token: None,
            tls_ca: None,
            allow_commands: false,
        }
    }
}

impl WorkerConfig {
    /// Torch threads of a job whose config does not set them: `threads`, or
    /// else the cores split between the slots, max(1, cores / slots), so that
    /// jobs side by side do not each start a pool of every core (libtorch's
    /// default), which oversubscribes the machine (see `sweep_core::cores`).
    pub fn default_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            let cores = self.cores.unwrap_or_else(sweep_core::cores::available);
            sweep_core::cores::share(cores, self.slots)
        })
    }

    /// Torch threads of a job whose config asks for `configured`: the
    /// worker's `threads` wins (it knows its machine), then the config's,
    /// then the default share.
    pub fn job_threads(&self, configured: Option<usize>) -> usize {
        self.threads
            .or(configured)
            .unwrap_or_else(|| self.default_threads())
    }
}

/// `~/.cache/sweeprun/worker`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/sweeprun/worker")
}

/// A job this worker holds, as heartbeats report it.
struct Held {
    attempt: u32,
    /// Set when the coordinator says stop (cancelled, lease lost) or on shutdown.
    stop: Arc<AtomicBool>,
}

/// What every task of one worker shares.
pub(crate) struct Ctx {
    client: Client,
    config: WorkerConfig,
    /// The device as registered ([`registered_device`]).
    device: String,
    worker_id: Mutex<String>,
    held: Mutex<HashMap<String, Held>>,
    /// Jobs the coordinator leased us with a completion (`lease_next`), not
    /// started yet: the next free slot takes one before it polls.
    handed: Mutex<Vec<pb::Job>>,
    shutdown: CancellationToken,
}

impl Ctx {
    pub(crate) fn worker_id(&self) -> String {
        self.worker_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// Calls `f` until it succeeds, fails permanently, or the worker stops
    /// (then `Cancelled`).
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let stopped = Status::cancelled("worker shutting down");
        retry_until(
            what,
            &self.config.connect,
            f,
            self.shutdown.cancelled(),
            stopped,
        )
        .await
    }

    /// Like [`Ctx::retry`], but a shutdown only interrupts it after
    /// [`FINAL_REPORT_GRACE`].
    pub(crate) async fn retry_final<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let give_up = async {
            self.shutdown.cancelled().await;
            tokio::time::sleep(FINAL_REPORT_GRACE).await;
        };
        let stopped = Status::cancelled("worker shut down before the coordinator took the report");
        retry_until(what, &self.config.connect, f, give_up, stopped).await
    }
}

/// Calls `f` with backoff while it fails transiently, until `give_up`
/// resolves (then `stopped`).
async fn retry_until<T, F, Fut>(
    what: &str,
    address: &str,
    f: F,
    give_up: impl std::future::Future<Output = ()>,
    stopped: Status,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let call = f.retry(backoff()).when(is_transient).notify(|err: &Status, delay| {
        let hint = sweep_proto::client::connection_hint(&sweep_proto::client::error_text(err), address, "--connect");
        tracing::warn!(what, error = %err.message(), code = ?err.code(), ?delay, hint = hint.as_deref(), "coordinator call failed; retrying")
    });
    tokio::select! {
        result = call => result,
        _ = give_up => Err(stopped),
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(RETRY_MIN_DELAY)
        .with_max_delay(RETRY_MAX_DELAY)
        .with_jitter()
        .without_max_times()
}

/// Errors that a later try may not meet: the coordinator is away or busy.
pub(crate) fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Internal
    )
}

/// Runs the worker until `shutdown`: a job running then stops (its last
/// epoch's checkpoint is already with the coordinator) and the lease's expiry
/// hands it to another worker.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let endpoint =
        sweep_proto::client::endpoint(&config.connect, config.tls_ca.as_deref(), CONNECT_TIMEOUT)?;
    let device = registered_device(&config).await?;
    // Lazy: the channel (re)connects on use, so a coordinator that is not up
    // yet, or restarts, is just a retried call.
    let channel = endpoint.connect_lazy();
    let ctx = Arc::new(Ctx {
        client: sweep_proto::client::client(channel, config.token.as_ref()),
        config,
        device,
        worker_id: Mutex::new(String::new()),
        held: Mutex::new(HashMap::new()),
        handed: Mutex::new(Vec::new()),
        shutdown,
    });
    let Some(heartbeat_interval) = register(&ctx).await? else {
        return Ok(());
    };

    let heartbeat_stop = CancellationToken::new();
    let heartbeats = tokio::spawn(heartbeat_loop(
        Arc::clone(&ctx),
        heartbeat_interval,
        heartbeat_stop.clone(),
    ));
    let slots: Vec<_> = (0..ctx.config.slots.max(1))
        .map(|slot| tokio::spawn(lease_loop(Arc::clone(&ctx), slot)))
        .collect();
    let mut outcome = Ok(());
    for slot in slots {
        match slot.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => outcome = Err(err),
            Err(err) => tracing::error!(error = %err, "worker slot task failed"),
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeats.await;
    tracing::info!(worker = %ctx.worker_id(), "worker stopped");
    outcome
}

/// The device the worker registers with, resolved and named ("cpu (AMD EPYC
/// 7B13)"), so that `sweepctl workers` shows what jobs will run on; refused
/// up front when libtorch does not see it, rather than failing every job it
/// leases. Simulated jobs use no device: the flag as given.
async fn registered_device(config: &WorkerConfig) -> Result<String, WorkerError> {
    if config.simulate_jobs.is_some() {
        return Ok(config.device.to_string());
    }
    let spec = config.device;
    let resolved = tokio::task::spawn_blocking(move || {
        provenance::worker_device(spec).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|err| Err(err.to_string()));
    match resolved {
        Ok(device) => Ok(device),
        // A command job's program brings its own libraries, which may see a
        // GPU that this binary's libtorch does not: say so, and let it try.
        Err(reason) if config.allow_commands => {
            tracing::warn!(%reason, "built-in training jobs will fail here; command jobs get --device as given");
            Ok(spec.to_string())
        }
        Err(reason) => Err(WorkerError::Device { reason }),
    }
}

/// Registers (retrying while the coordinator is away). Returns the heartbeat
/// interval, or None when shut down first.
async fn register(ctx: &Ctx) -> Result<Option<Duration>, WorkerError> {
    let request = pb::RegisterWorkerRequest {
        protocol_version: PROTOCOL_VERSION,
        name: ctx.config.name.clone(),
        host: sweep_core::run_dir::hostname(),
        device: ctx.device.clone(),
        // What a job gets unless its config says otherwise; never 0 (which
        // older workers sent for "libtorch's default").
        threads: ctx.config.default_threads() as u32,
        slots: ctx.config.slots.max(1) as u32,
        allow_commands: ctx.config.allow_commands,
    };
    match ctx
        .retry("register", || {
            let mut client = ctx.client();
            let arg = request.clone();
            async move { client.register_worker(arg).await }
        })
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            tracing::info!(worker = %response.worker_id, coordinator = %ctx.config.connect, "registered");
            *ctx.worker_id.lock().unwrap_or_else(|p| p.into_inner()) = response.worker_id;
            // Never hammer the coordinator, whatever it asks for.
            Ok(Some(Duration::from_millis(
                response.heartbeat_interval_ms.max(10),
            )))
        }
        Err(status) if status.code() == Code::Cancelled && ctx.shutdown.is_cancelled() => Ok(None),
        Err(status) => Err(WorkerError::Refused {
            address: ctx.config.connect.clone(),
            message: status.message().to_string(),
            hint: match status.code() {
                Code::Unauthenticated => {
                    "; pass the coordinator's worker token with --token-file (or SWEEP_TOKEN_FILE)"
                }
                _ => "",
            },
        }),
    }
}

async fn heartbeat_loop(ctx: Arc<Ctx>, interval: Duration, stop: CancellationToken) {
    // The first one an interval after registering, which told the
    // coordinator all a heartbeat would: a fleet starting at once sends
    // one call per worker fewer in its busiest moment.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let jobs: Vec<pb::JobRef> = {
            let held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
            held.iter()
                .map(|(id, h)| pb::JobRef {
                    job_id: id.clone(),
                    attempt: h.attempt,
                })
                .collect()
        };
        let request = pb::HeartbeatRequest {
            worker_id: ctx.worker_id(),
            jobs,
        };
        // Not retried: the next tick is the retry, and a missed beat is what
        // the lease's slack is for.
        let mut client = ctx.client();
        let response = tokio::select! {
            r = client.heartbeat(request) => r,
            _ = stop.cancelled() => return,
        };
        match response {
            Ok(response) => {
                let response = response.into_inner();
                let held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
                for (id, why) in response
                    .cancelled
                    .iter()
                    .map(|id| (id, "cancelled"))
                    .chain(response.lost.iter().map(|id| (id, "lease lost")))
                {
                    if let Some(job) = held.get(id)
                        && !job.stop.swap(true, Ordering::SeqCst)
                    {
                        tracing::warn!(job = %id, why, "stopping job on the coordinator's word");
                    }
                }
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), code = ?status.code(), "heartbeat failed")
            }
        }
    }
}

/// One slot: lease a job, run it, repeat.
async fn lease_loop(ctx: Arc<Ctx>, slot: usize) -> Result<(), WorkerError> {
    let mut delays = backoff().build();
    while !ctx.shutdown.is_cancelled() {
        let handed = ctx.handed.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(leased) = handed {
            start(&ctx, leased).await;
            continue;
        }
        let request = pb::LeaseJobRequest {
            worker_id: ctx.worker_id(),
        };
        let mut client = ctx.client();
        let response = tokio::select! {
            r = client.lease_job(request) => r,
            _ = ctx.shutdown.cancelled() => break,
        };
        match response {
            Ok(response) => {
                delays = backoff().build();
                if let Some(leased) = response.into_inner().job {
                    start(&ctx, leased).await;
                }
            }
            Err(status) if status.code() == Code::NotFound => {
                // The coordinator does not know us (its state was reset): register again.
                tracing::warn!(slot, "coordinator forgot this worker; registering again");
                if register(&ctx).await?.is_none() {
                    break;
                }
            }
            Err(status) => {
                let delay = delays.next().unwrap_or(RETRY_MAX_DELAY);
                tracing::warn!(slot, error = %status.message(), code = ?status.code(), ?delay, "lease failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
        }
    }
    Ok(())
}

/// Runs a leased job, or refuses it when it does not pass the protocol
/// boundary's checks.
async fn start(ctx: &Ctx, leased: pb::Job) {
    let (id, attempt) = (leased.job_id.clone(), leased.attempt);
    match LeasedJob::try_from(leased) {
        Ok(job) => job::run(ctx, job).await,
        Err(err) => job::refuse(ctx, id, attempt, err.to_string()).await,
    }
}

/// Local run directory of a job (names validated by the caller).
pub(crate) fn local_run_dir(cache_dir: &Path, sweep: &str, variant: &str, seed: u64) -> PathBuf {
    sweep_core::sweep::job_dir(&cache_dir.join("runs"), sweep, variant, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_device_libtorch_does_not_see_is_refused_before_any_lease() {
        // Nothing listens at this address: the refusal must come first.
        let mut config = WorkerConfig::new("127.0.0.1:1");
        config.device = DeviceSpec::Cuda(99);
        // Registration would retry for ever: a check moved after it hangs.
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            run(config, CancellationToken::new()),
        )
        .await
        .expect("refused before connecting")
        .expect_err("no machine has 100 GPUs");
        let message = err.to_string();
        assert!(
            message.contains("cuda:99 is not available")
                && message.contains("--device auto or cpu"),
            "{message}"
        );
    }

    #[test]
    fn jobs_get_the_flag_then_their_config_then_a_share_of_the_cores() {
        let mut config = WorkerConfig::new("127.0.0.1:1");
        config.cores = Some(16);
        config.slots = 4;
        assert_eq!(config.default_threads(), 4);
        assert_eq!(config.job_threads(None), 4);
        assert_eq!(config.job_threads(Some(2)), 2, "the config's count wins");
        config.threads = Some(3);
        assert_eq!(config.default_threads(), 3);
        assert_eq!(
            config.job_threads(Some(2)),
            3,
            "the flag wins over the config"
        );
        // More slots than cores: one thread each, never zero.
        config.threads = None;
        config.cores = Some(2);
        config.slots = 8;
        assert_eq!(config.default_threads(), 1);
        // Without --cores: every core this process may use.
        config.cores = None;
        config.slots = 1;
        assert_eq!(config.default_threads(), sweep_core::cores::available());
    }
}
