//! The sweep coordinator: it owns a sweep's jobs, hands them to workers on
//! lease, ingests what they stream back and writes every run into the run
//! layout, then the sweep's results.
//!
//! # Layout
//! - [`store`]: the durable job model in SQLite; every mutation and every rule
//!   (fencing by attempt, exactly-once completion, lease expiry) lives there.
//! - [`layout`]: the files the coordinator writes (run directories, staged
//!   checkpoint uploads, results).
//! - [`run_files`]: the thread that writes the run files following each
//!   job's progress (metrics.json, provenance.json, TensorBoard events).
//! - [`service`]: the gRPC handlers over the store and the layout.
//! - [`events`]: what changed, published by the handlers for live pages.
//! - [`dashboard`]: the web pages and JSON API (`--http`), beside the gRPC
//!   service over the same store.
//! - [`error`]: the error type and its one mapping to gRPC status codes.
//! - [`auth`]: bearer tokens with a worker and an admin role, checked before
//!   any handler runs; the health service stays open.
//! - [`limits`]: what one client may make the coordinator store or allocate.
//!
//! [`start`] binds, reloads the state, optionally submits a sweep and starts
//! local worker processes; [`Coordinator::wait`] runs until shutdown or, with
//! `exit_when_done`, until every sweep has ended.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod layout;
pub mod limits;
pub mod run_files;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sweep_core::results::ResultsTable;
use sweep_core::sweep::SweepSpec;
use sweep_core::token::Token;
use sweep_proto::CoordinatorServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::{CoordinatorError, Result};
use service::{Service, Shared};

/// Default lease: a worker silent for this long is presumed dead and its job
/// goes back to pending. Several heartbeats fit in it, so one slow or lost
/// heartbeat never costs a job.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default heartbeat interval: a sixth of the lease, so a lease survives five
/// lost heartbeats, and cancellation reaches a job within 5 seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// With `exit_when_done`, how often at most the coordinator looks whether
/// every sweep has ended.
const DONE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Upper bound on how often expired leases are looked for: often enough that
/// a dead worker's job is requeued at most a second after its lease ends.
const MAX_EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// A sweep (directory or file) to submit at start.
    pub sweep: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Where the dashboard is served (None: nowhere).
    pub http: Option<SocketAddr>,
    /// Root of the run layout; also holds `coordinator.sqlite`.
    pub state_dir: PathBuf,
    /// `sweep-worker` processes to start on this machine.
    pub local_workers: usize,
    /// Torch threads of each local worker's jobs, over the configs' `threads`
    /// (None: a config's `threads`, or else the machine's cores split between
    /// the local workers, max(1, cores / local_workers)).
    pub local_worker_threads: Option<usize>,
    /// The `sweep-worker` binary for local workers (None: next to this executable).
    pub worker_binary: Option<PathBuf>,
    /// Return from [`Coordinator::wait`] once every sweep has ended.
    pub exit_when_done: bool,
    /// Start the local workers with `--allow-commands` (they then run
    /// command jobs: programs named by whoever submits a sweep).
    pub local_workers_allow_commands: bool,
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Opens the worker methods. Without either token the coordinator is
    /// open, which [`start`] allows on a loopback address only.
    pub worker_token: Option<Token>,
    /// Opens every method.
    pub admin_token: Option<Token>,
    /// Serve TLS with this certificate and key (PEM).
    pub tls: Option<TlsFiles>,
    pub limits: limits::Limits,
}

/// The PEM files of the server's TLS identity (`sweepctl certs` makes them).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`, handed to local workers so they can verify
    /// the server they connect to.
    pub ca: Option<PathBuf>,
}

impl CoordinatorConfig {
    pub fn new(state_dir: PathBuf) -> Self {
        CoordinatorConfig {
            sweep: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http: None,
            state_dir,
            local_workers: 0,
            local_worker_threads: None,
            worker_binary: None,
            exit_when_done: false,
            local_workers_allow_commands: false,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            worker_token: None,
            admin_token: None,
            tls: None,
            limits: limits::Limits::default(),
        }
    }
}

/// A running coordinator.
pub struct Coordinator {
    /// The address actually bound (the port of `:0` resolved).
    pub addr: SocketAddr,
    /// The dashboard's address, when it is served.
    pub http_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    exit_when_done: bool,
    shutdown: CancellationToken,
    workers: Vec<LocalWorker>,
    server: JoinHandle<Result<()>>,
    dashboard: Option<JoinHandle<()>>,
    expiry: JoinHandle<()>,
    finished_sweeps: Option<UnboundedReceiver<ResultsTable>>,
}

/// Binds, reloads the state directory, submits `config.sweep` and starts the
/// local workers. `shutdown` stops everything (SIGINT/SIGTERM in the binary).
pub async fn start(config: CoordinatorConfig, shutdown: CancellationToken) -> Result<Coordinator> {
    std::fs::create_dir_all(&config.state_dir).map_err(CoordinatorError::io(&config.state_dir))?;
    let store = store::Store::open(&config.state_dir.join("coordinator.sqlite"))?;
    let spec = config.sweep.as_deref().map(SweepSpec::load).transpose()?;
    // Before binding: an exposed coordinator without tokens never serves.
    let authenticator =
        auth::Authenticator::new(config.worker_token.as_ref(), config.admin_token.as_ref())?;
    auth::check_exposure(config.listen, authenticator.as_ref())?;
    let tls = config.tls.as_ref().map(server_tls).transpose()?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(CoordinatorError::io(config.state_dir.join("<listen>")))?;
    let addr = listener
        .local_addr()
        .map_err(CoordinatorError::io("<listen>"))?;
    // The server stops last, after the local workers, so that they can
    // still report while shutting down.
    let stopping = CancellationToken::new();
    let (finished, finished_sweeps) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(
        store,
        config.state_dir.clone(),
        config.lease_timeout,
        config.heartbeat_interval,
        config.limits.clone(),
        stopping.clone(),
        finished,
    )?);
    // Leases that were live when a previous coordinator died are honoured
    // until their deadline, so reconnecting workers keep their jobs.
    shared.expire_leases().await?;
    // A previous coordinator may have died between a sweep's last job and
    // its results files (finish_sweep_if_done skips sweeps that have them).
    for sweep in shared.store.call(|db| db.sweeps()).await? {
        if let Err(e) = shared.finish_sweep_if_done(&sweep.name).await {
            tracing::warn!(sweep = %sweep.name, error = %e, "writing the results of a finished sweep failed");
        }
    }
    if let Some(spec) = spec {
        shared.submit(spec).await?;
    }

    let service = Service {
        shared: Arc::clone(&shared),
    };
    let server_stop = stopping.clone();
    let coordinator = CoordinatorServer::new(service)
        .max_decoding_message_size(config.limits.max_message_bytes)
        .max_encoding_message_size(config.limits.max_message_bytes);
    // Health for load balancers and orchestrators: open, no token needed.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CoordinatorServer<Service>>().await;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder.add_service(health_service);
    let router = match authenticator {
        Some(authenticator) => {
            router.add_service(auth::RequireAuth::new(coordinator, Arc::new(authenticator)))
        }
        None => {
            tracing::warn!(%config.listen, "no tokens configured: every client on this machine may call every method");
            router.add_service(coordinator)
        }
    };
    let dashboard = match config.http {
        Some(http) => {
            let tls = config
                .tls
                .as_ref()
                .map(|files| dashboard::tls_config(&files.cert, &files.key))
                .transpose()?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let served = dashboard::start(
                http,
                Arc::clone(&shared),
                config.admin_token.as_ref(),
                tls,
                stopping.clone(),
            )
            .await?;
            tracing::info!(
                "dashboard at {scheme}://{}/ (open it in a browser)",
                served.addr
            );
            Some(served)
        }
        None => None,
    };

    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY a response's last frames wait for the
                // peer's delayed ACK (40 ms), which would dominate job hand-off.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                server_stop.cancelled_owned(),
            )
            .await?;
        Ok(())
    });
    tracing::info!(%addr, state_dir = %config.state_dir.display(), "coordinator listening");

    let expiry = {
        let shared = Arc::clone(&shared);
        let stop = stopping.clone();
        let period =
            (config.lease_timeout / 4).clamp(Duration::from_millis(10), MAX_EXPIRY_SCAN_INTERVAL);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                if let Err(err) = shared.expire_leases().await {
                    tracing::error!(error = %err, "lease expiry pass failed");
                }
            }
        })
    };

    let workers = spawn_local_workers(&config, addr)?;

    Ok(Coordinator {
        addr,
        http_addr: dashboard.as_ref().map(|d| d.addr),
        shared,
        exit_when_done: config.exit_when_done,
        shutdown,
        workers,
        server,
        dashboard: dashboard.map(|d| d.task),
        expiry,
        finished_sweeps: Some(finished_sweeps),
    })
}

/// The server's TLS identity, read from its PEM files.
fn server_tls(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig> {
    let cert = std::fs::read(&files.cert).map_err(CoordinatorError::io(&files.cert))?;
    let key = std::fs::read(&files.key).map_err(CoordinatorError::io(&files.key))?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key)))
}

/// Starts `--local-workers` as child processes of the `sweep-worker` binary.
/// Processes rather than tasks, because libtorch's random generator and thread
/// pool are process-wide: two trainings in one process would draw from the
/// same generator, and a run would no longer repeat exactly.
fn spawn_local_workers(config: &CoordinatorConfig, addr: SocketAddr) -> Result<Vec<LocalWorker>> {
    if config.local_workers == 0 {
        return Ok(Vec::new());
    }
    let binary = match &config.worker_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(CoordinatorError::io("<current executable>"))?
            .with_file_name("sweep-worker"),
    };
    if !binary.is_file() {
        return Err(CoordinatorError::InvalidArgument(format!(
            "--local-workers needs the sweep-worker binary, not found at {} (build it with `make build`)",
            binary.display()
        )));
    }
    // Each local worker gets its share of the machine's cores to split
    // between its jobs: left to libtorch, every worker would start a pool of
    // every core and the pools would fight over them (3–10× slower epochs
    // with 2 workers on 2 cores; see sweep_core::cores).
    let cores = sweep_core::cores::share(sweep_core::cores::available(), config.local_workers);
    (0..config.local_workers)
        .map(|index| {
            let name = format!("local-{index}");
            // Inside the state dir (whose sweep names never start with '.') so
            // that a sweep's local scratch stays with it.
            let cache_dir = config.state_dir.join(".local-workers").join(&name);
            let mut command = tokio::process::Command::new(&binary);
            command
                .arg("--connect")
                .arg(addr.to_string())
                .arg("--name")
                .arg(&name)
                .arg("--cache-dir")
                .arg(&cache_dir)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            match config.local_worker_threads {
                Some(threads) => command.arg("--threads").arg(threads.to_string()),
                None => command.arg("--cores").arg(cores.to_string()),
            };
            if config.local_workers_allow_commands {
                command.arg("--allow-commands");
            }
            // The token goes through the environment, never the command line
            // (which `ps` shows to every user); workers use the admin token
            // when no worker token is set.
            // An inherited SWEEP_TOKEN_FILE (often the admin token, for
            // sweepctl) would take precedence; local workers get the worker token.
            command.env_remove("SWEEP_TOKEN").env_remove("SWEEP_TOKEN_FILE").env_remove("SWEEP_TLS_CA");
            if let Some(token) = config.worker_token.as_ref().or(config.admin_token.as_ref()) {
                command.env("SWEEP_TOKEN", token.expose());
            }
            if let Some(tls) = &config.tls {
                let ca = tls.ca.as_ref().ok_or_else(|| {
                    CoordinatorError::InvalidArgument(
                        "--local-workers with TLS needs --tls-ca (the CA that signed --tls-cert) so that they can verify the server".into(),
                    )
                })?;
                command.arg("--tls-ca").arg(ca);
            }
            if std::env::var_os("RUST_LOG").is_none() {
                // The coordinator reports progress; its workers only speak up when something is wrong.
                command.env("RUST_LOG", "warn");
            }
            let child = command.spawn().map_err(CoordinatorError::io(&binary))?;
            let stop = CancellationToken::new();
            let supervised = tokio::spawn(supervise(name, child, stop.clone(), config.lease_timeout));
            Ok(LocalWorker {
                supervised,
                stop: stop.drop_guard(),
            })
        })
        .collect()
}

/// A `sweep-worker` child process started by `--local-workers`, owned by
/// the task that [`supervise`]s it. Dropped (a coordinator dropped without
/// [`Coordinator::wait`], a later worker failing to start), it stops too.
struct LocalWorker {
    supervised: JoinHandle<()>,
    stop: tokio_util::sync::DropGuard,
}

/// How long a local worker may take to stop its job and exit after SIGTERM.
const LOCAL_WORKER_GRACE: Duration = Duration::from_secs(15);

/// Waits on a local worker: one that exits on its own (killed, crashed) is
/// reaped and reported at once, since the sweep goes on with one worker
/// fewer; on `stop`, SIGTERM (the worker stops its job; the lease returns
/// it), then SIGKILL if it has not exited within [`LOCAL_WORKER_GRACE`].
async fn supervise(
    name: String,
    mut child: tokio::process::Child,
    stop: CancellationToken,
    lease_timeout: Duration,
) {
    tokio::select! {
        status = child.wait() => {
            match status {
                Ok(status) => tracing::warn!(
                    worker = %name, %status,
                    "local worker exited; its job, if any, returns to the queue when its lease expires (within {:.0} s)",
                    lease_timeout.as_secs_f64()
                ),
                Err(err) => tracing::warn!(worker = %name, error = %err, "waiting for a local worker"),
            }
            return;
        }
        _ = stop.cancelled() => {}
    }
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(LOCAL_WORKER_GRACE, child.wait()).await {
        Ok(Ok(status)) => tracing::debug!(worker = %name, %status, "local worker exited"),
        Ok(Err(err)) => {
            tracing::warn!(worker = %name, error = %err, "waiting for a local worker")
        }
        Err(_) => {
            tracing::warn!(worker = %name, "local worker did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

async fn stop_local_workers(workers: Vec<LocalWorker>) {
    let (tasks, stops): (Vec<_>, Vec<_>) =
        workers.into_iter().map(|w| (w.supervised, w.stop)).unzip();
    // All at once: each may take its grace period.
    drop(stops);
    for task in tasks {
        let _ = task.await;
    }
}

impl Coordinator {
    /// The results table of each sweep as it ends (a sweep already complete
    /// at start included), in order; the library prints nothing, the
    /// binary prints these. Every table sent before [`Coordinator::wait`]
    /// returns is in the channel by then. Only the first call gets it.
    pub fn finished_sweeps(&mut self) -> Option<UnboundedReceiver<ResultsTable>> {
        self.finished_sweeps.take()
    }

    /// Serves until `shutdown`, or (with `exit_when_done`) until every sweep
    /// has ended; then stops the local workers, then the server.
    pub async fn wait(self) -> Result<()> {
        let outcome = if self.exit_when_done {
            self.wait_until_done().await
        } else {
            self.shutdown.cancelled().await;
            tracing::info!("shutting down");
            Ok(())
        };
        stop_local_workers(self.workers).await;
        self.shared.stopping.cancel();
        let _ = self.expiry.await;
        if let Some(dashboard) = self.dashboard {
            let _ = dashboard.await;
        }
        let served = self
            .server
            .await
            .map_err(|e| CoordinatorError::Internal(format!("server task: {e}")))?;
        outcome.and(served)
    }

    /// Until every sweep has ended, or `shutdown`. Looks again after a
    /// change, at most every [`DONE_CHECK_INTERVAL`]: a fleet changes the
    /// job model thousands of times a second.
    async fn wait_until_done(&self) -> Result<()> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            changes.borrow_and_update();
            if self.shared.all_done().await? {
                tracing::info!("every sweep has ended; exiting");
                return Ok(());
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
            }
            tokio::time::sleep(DONE_CHECK_INTERVAL).await;
        }
    }
}
