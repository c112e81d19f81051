//! The half of `sweepctl` that links libtorch: `train`, `eval`, `analyze` and
//! `bench`, one run on this machine, no cluster. The light `sweepctl` (which
//! needs no libtorch) runs this binary for those four commands, so users type
//! the same `sweepctl train ...` either way; see `sweepctl::torch` for how it is
//! found.
//!
//! # Layout
//! - [`local`]: `train`, `eval`, `analyze`: the trainer and its checkpoints.
//! - [`bench`]: training throughput against PyTorch.

pub mod bench;
pub mod local;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sweepctl-torch",
    // Usage lines read as the user typed them: `sweepctl train ...`.
    bin_name = "sweepctl",
    version,
    about = "sweepctl's local commands over libtorch (train, eval, analyze, bench)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one config on this machine (no coordinator), printing one line per epoch.
    Train(local::TrainArgs),
    /// Evaluate a run's best checkpoint on the test set; prints JSON.
    Eval {
        /// The run directory (holds config.yaml and checkpoints/).
        #[arg(long)]
        run: PathBuf,
    },
    /// Analyse a run's best checkpoint on the test set: predictions, confusion,
    /// per-class scores, worst failures, failure clusters and figures, written
    /// to RUN_DIR/analysis/.
    Analyze {
        /// The run directory (holds config.yaml and checkpoints/).
        #[arg(long)]
        run: PathBuf,
    },
    /// Training throughput of this trainer against PyTorch, side by side.
    Bench(bench::BenchArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => local::train(args),
        Command::Eval { run } => local::eval(&run),
        Command::Analyze { run } => local::analyze(&run),
        Command::Bench(args) => bench::run(args),
    }
}
