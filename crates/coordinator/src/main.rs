//! `sweep-coordinator`: serves a sweep to workers (see the library).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sweep_coordinator::limits::Limits;
use sweep_coordinator::{
    CoordinatorConfig, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TIMEOUT, TlsFiles,
};
use sweep_core::results::{Format, ResultsTable};
use sweep_core::token::Token;

/// Many small allocations a second per worker (HTTP/2 frames, protobuf
/// messages, SQL rows) across threads: glibc's malloc and free were a quarter
/// of the request threads' time under a fleet's load (BENCHMARKS.md, "A
/// fleet of simulated workers").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves sweeps to workers, keeps their state and writes their runs and results.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A sweep (directory with sweep.yaml, or one file) to submit at start.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Address of the dashboard (web pages and /api/v1), or `off`. Beyond
    /// loopback it needs the admin token; with --tls-cert it is HTTPS.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:8080", value_parser = parse_http)]
    http: HttpAddr,
    /// Run layout root; also holds coordinator.sqlite.
    #[arg(long, default_value = "runs")]
    state_dir: PathBuf,
    /// `sweep-worker` processes to start on this machine.
    #[arg(long, default_value_t = 0)]
    local_workers: usize,
    /// Torch threads of each local worker's jobs, over the configs' `threads`
    /// (default: a config's `threads`, or else max(1, cores / local workers)).
    #[arg(long)]
    local_worker_threads: Option<usize>,
    /// The sweep-worker binary for --local-workers (default: next to this one).
    #[arg(long)]
    worker_binary: Option<PathBuf>,
    /// Exit 0 once every sweep has ended (after printing its results).
    #[arg(long)]
    exit_when_done: bool,
    /// Start the --local-workers with --allow-commands, so that they run
    /// command jobs (programs named in the sweep's configs).
    #[arg(long)]
    allow_commands: bool,
    /// Seconds without a heartbeat after which a job returns to pending.
    #[arg(long, value_parser = parse_seconds, default_value_t = DEFAULT_LEASE_TIMEOUT.as_secs_f64())]
    lease_timeout: f64,
    /// Seconds between worker heartbeats (told to workers at registration).
    #[arg(long, value_parser = parse_seconds, default_value_t = DEFAULT_HEARTBEAT_INTERVAL.as_secs_f64())]
    heartbeat_interval: f64,
    /// File holding the worker token (or $SWEEP_WORKER_TOKEN): what workers
    /// present, which cannot submit or cancel. Without one, workers need the
    /// admin token; listening beyond loopback needs at least that one.
    #[arg(long, env = "SWEEP_WORKER_TOKEN_FILE", value_name = "FILE")]
    worker_token_file: Option<PathBuf>,
    /// File holding the admin token (or $SWEEP_ADMIN_TOKEN).
    #[arg(long, env = "SWEEP_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve TLS with this certificate (PEM; `sweepctl certs` makes one).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA that signed --tls-cert, for --local-workers to verify the server.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

/// `--http`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct HttpAddr(Option<SocketAddr>);

fn parse_http(s: &str) -> Result<HttpAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(HttpAddr(None));
    }
    s.parse()
        .map(|a| HttpAddr(Some(a)))
        .map_err(|e| format!("{e}: expected an address such as 127.0.0.1:8080, or off"))
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err("must be a positive number of seconds".into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    sweep_startup::init("info", sweep_startup::LogStyle::Progress);
    sweep_startup::exit_code(serve(Args::parse()).await)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let lease_timeout = Duration::from_secs_f64(args.lease_timeout);
    let heartbeat_interval = Duration::from_secs_f64(args.heartbeat_interval);
    anyhow::ensure!(
        heartbeat_interval < lease_timeout,
        "--heartbeat-interval must be shorter than --lease-timeout"
    );
    anyhow::ensure!(
        args.local_worker_threads != Some(0),
        "--local-worker-threads must be at least 1"
    );
    let config = CoordinatorConfig {
        sweep: args.config,
        listen: args.listen,
        http: args.http.0,
        state_dir: args.state_dir,
        local_workers: args.local_workers,
        local_worker_threads: args.local_worker_threads,
        worker_binary: args.worker_binary,
        exit_when_done: args.exit_when_done,
        local_workers_allow_commands: args.allow_commands,
        lease_timeout,
        heartbeat_interval,
        worker_token: Token::load(args.worker_token_file.as_deref(), "SWEEP_WORKER_TOKEN")?,
        admin_token: Token::load(args.admin_token_file.as_deref(), "SWEEP_ADMIN_TOKEN")?,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                ca: args.tls_ca,
            }),
            _ => None,
        },
        limits: Limits::default(),
    };
    let shutdown = sweep_startup::cancel_on_signal();
    let mut coordinator = sweep_coordinator::start(config, shutdown)
        .await
        .context("starting the coordinator")?;
    let mut finished = coordinator
        .finished_sweeps()
        .context("the results of finished sweeps")?;
    let wait = coordinator.wait();
    tokio::pin!(wait);
    let outcome = loop {
        tokio::select! {
            Some(table) = finished.recv() => print_results(&table),
            outcome = &mut wait => break outcome,
        }
    };
    // Sweeps that ended just before the coordinator stopped.
    while let Ok(table) = finished.try_recv() {
        print_results(&table);
    }
    outcome.context("coordinator")?;
    Ok(())
}

/// The results table of a sweep that ended, on stdout: the table is the
/// product (the log lines go to stderr).
fn print_results(table: &ResultsTable) {
    println!("{}", table.render(Format::Table));
}
