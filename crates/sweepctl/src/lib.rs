//! The user's tool. It links no libtorch, so it installs anywhere (`cargo
//! install --path crates/sweepctl`); the local commands that train or evaluate
//! (`train`, `eval`, `analyze`, `bench`) are passed on to `sweepctl-torch`,
//! installed where libtorch is. The others talk to a coordinator, or read run
//! directories (`report`), or write files (`certs`).
//!
//! # Layout
//! - [`torch`]: `train`, `eval`, `analyze`, `bench`: finds `sweepctl-torch`
//!   and runs it with the arguments as typed.
//! - [`benchcoord`]: `bench-coordinator`, simulated workers against a real
//!   coordinator (throughput, latencies, exactly-once).
//! - [`certs`]: `certs`, a private CA and a server certificate for TLS.
//! - [`client`]: the connection to a coordinator (address forms, token) and the
//!   one translation of transport errors and gRPC status codes into messages.
//! - [`remote`]: `submit`, `status`, `results`, `cancel`, `workers`, `logs`:
//!   one request each.
//! - [`watch`]: `watch`, live progress over the status stream.
//! - [`report`]: `report`, the sweep's HTML/Markdown report from its run
//!   directories (no coordinator, no libtorch).
//! - [`tables`]: status, workers and logs rendered as text.

pub mod benchcoord;
pub mod certs;
pub mod client;
pub mod remote;
pub mod report;
pub mod tables;
pub mod torch;
pub mod watch;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sweepctl",
    version,
    about = "Train locally, or submit and follow sweeps on a coordinator"
)]
pub struct Cli {
    /// Where the coordinator is (used by the commands that talk to one).
    #[command(flatten)]
    pub connect: client::ConnectArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The arguments of a command run by `sweepctl-torch`, passed on as typed
/// (its own parser checks them and answers `--help`).
#[derive(Debug, Clone, clap::Args)]
pub struct TorchArgs {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 1..,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one config on this machine (no coordinator), printing one line
    /// per epoch [runs sweepctl-torch: needs libtorch].
    #[command(disable_help_flag = true)]
    Train(TorchArgs),
    /// Evaluate a run's best checkpoint on the test set; prints JSON
    /// [runs sweepctl-torch: needs libtorch].
    #[command(disable_help_flag = true)]
    Eval(TorchArgs),
    /// Analyse a run's best checkpoint on the test set, written to
    /// RUN_DIR/analysis/ [runs sweepctl-torch: needs libtorch].
    #[command(disable_help_flag = true)]
    Analyze(TorchArgs),
    /// Training throughput of this trainer against PyTorch, side by side
    /// [runs sweepctl-torch: needs libtorch].
    #[command(disable_help_flag = true)]
    Bench(TorchArgs),
    /// Create a private CA and a server certificate for the coordinator's TLS
    /// (ca.pem, ca.key, server.pem, server.key).
    Certs(certs::CertsArgs),
    /// Submit a sweep (a directory with sweep.yaml, or one file) to the coordinator.
    Submit {
        /// The sweep directory or file; validated here before it is sent.
        #[arg(value_name = "SWEEP_DIR_OR_FILE")]
        sweep: PathBuf,
    },
    /// Job counts per sweep and the state of every job (beyond 50 jobs in a
    /// sweep: counts per variant and the failed jobs; --all lists every job).
    Status {
        /// Only this sweep (default: all).
        sweep: Option<String>,
        /// List every job, however many.
        #[arg(long)]
        all: bool,
    },
    /// Follow a sweep live until every job has ended, then print its results.
    /// Exits non-zero when jobs failed; Ctrl-C stops watching, not the sweep.
    /// Beyond 50 jobs in a sweep it follows variants, not jobs (--all: jobs).
    Watch {
        /// Only this sweep (default: all).
        sweep: Option<String>,
        /// Follow every job, however many.
        #[arg(long)]
        all: bool,
    },
    /// A sweep's results: mean ± std per variant, difference to the baseline.
    Results(remote::ResultsArgs),
    /// Cancel a whole sweep or one job.
    Cancel(remote::CancelArgs),
    /// Run failed or cancelled jobs again, each with a full attempt budget,
    /// from their last checkpoint: a whole sweep's, or one job.
    Retry(remote::RetryArgs),
    /// The workers known to the coordinator.
    Workers,
    /// Write a sweep's report (index.html with figures, report.md) and its
    /// seed-averaged TensorBoard files, from its run directories on this machine.
    Report(report::ReportArgs),
    /// Where and how a run was computed: each attempt's worker, host,
    /// device, threads, libtorch and sweeprun versions, git commit, dataset
    /// hashes and times, and the config's hash.
    Show {
        /// The job id, as `sweepctl status` lists it.
        job: String,
        /// Print it as JSON (the run directory's provenance.json).
        #[arg(long)]
        json: bool,
    },
    /// Load-test a coordinator: N simulated workers over real gRPC run a
    /// synthetic sweep (nothing is trained); prints throughput, latencies and
    /// an exactly-once check.
    BenchCoordinator(benchcoord::BenchCoordinatorArgs),
    /// A job's event log, one line per event.
    Logs {
        /// The job id, as `sweepctl status` lists it.
        job: String,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = &cli.connect;
    match cli.command {
        Command::Train(a) => torch::delegate("train", &a.args),
        Command::Eval(a) => torch::delegate("eval", &a.args),
        Command::Analyze(a) => torch::delegate("analyze", &a.args),
        Command::Bench(a) => torch::delegate("bench", &a.args),
        Command::Certs(args) => certs::run(args),
        Command::Submit { sweep } => client::block_on(remote::submit(connect, sweep)),
        Command::Status { sweep, all } => client::block_on(remote::status(connect, sweep, all)),
        Command::Watch { sweep, all } => client::block_on(watch::watch(connect, sweep, all)),
        Command::Results(args) => client::block_on(remote::results(connect, args)),
        Command::Cancel(args) => client::block_on(remote::cancel(connect, args)),
        Command::Retry(args) => client::block_on(remote::retry(connect, args)),
        Command::Workers => client::block_on(remote::workers(connect)),
        Command::Report(args) => report::run(args),
        Command::Logs { job } => client::block_on(remote::logs(connect, job)),
        Command::BenchCoordinator(args) => benchcoord::run(connect, args),
        Command::Show { job, json } => client::block_on(remote::show(connect, job, json)),
    }
}
