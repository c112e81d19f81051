//! `sweep-worker`: leases jobs from a coordinator and trains them (see the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sweep_core::config::DeviceSpec;
use sweep_core::token::Token;
use sweep_worker::WorkerConfig;

/// Leases jobs from a sweep coordinator, trains them and streams results back.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Coordinator address, host:port.
    #[arg(long, env = "SWEEP_COORDINATOR", default_value = "127.0.0.1:50051")]
    connect: String,
    /// Device for every job: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Torch threads per job, over the job config's `threads` (default: the
    /// config's, or else max(1, cores / slots)).
    #[arg(long)]
    threads: Option<usize>,
    /// Cores this worker's jobs share (default: every core it may use); a
    /// job without `threads` gets max(1, cores / slots) threads.
    #[arg(long)]
    cores: Option<usize>,
    /// Jobs to run at once.
    #[arg(long, default_value_t = 1)]
    slots: usize,
    /// Test-only: jobs sleep this many seconds instead of training (scheduling benchmarks).
    #[arg(long, hide = true)]
    simulate_job_seconds: Option<f64>,
    /// Local run directories and fetched datasets (default ~/.cache/sweeprun/worker).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Name shown by `sweepctl workers` (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// File holding the bearer token (or $SWEEP_TOKEN); a coordinator that
    /// listens beyond loopback requires one.
    #[arg(long, env = "SWEEP_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Connect with TLS, trusting this CA certificate (PEM; `sweepctl certs` makes one).
    #[arg(long, env = "SWEEP_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Run command jobs: programs that a sweep's configs name (`command:`),
    /// run as this worker's user. Whoever holds the coordinator's admin token
    /// can then run code on this machine; without this flag the coordinator
    /// never leases such a job here.
    #[arg(long)]
    allow_commands: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    sweep_startup::init("info", sweep_startup::LogStyle::Full);
    sweep_startup::exit_code(work(Args::parse()).await)
}

async fn work(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.slots >= 1, "--slots must be at least 1");
    let mut config = WorkerConfig::new(args.connect);
    config.token = Token::load(args.token_file.as_deref(), "SWEEP_TOKEN")?;
    config.tls_ca = args.tls_ca;
    config.device = args.device;
    anyhow::ensure!(args.threads != Some(0), "--threads must be at least 1");
    anyhow::ensure!(args.cores != Some(0), "--cores must be at least 1");
    config.threads = args.threads;
    config.cores = args.cores;
    config.slots = args.slots;
    config.allow_commands = args.allow_commands;
    config.simulate_jobs = args
        .simulate_job_seconds
        .map(std::time::Duration::from_secs_f64);
    if let Some(dir) = args.cache_dir {
        config.cache_dir = dir;
    }
    if let Some(name) = args.name {
        config.name = name;
    }
    let shutdown = sweep_startup::cancel_on_signal();
    // Its errors say what failed and what to do: no context to add.
    sweep_worker::run(config, shutdown).await?;
    Ok(())
}
