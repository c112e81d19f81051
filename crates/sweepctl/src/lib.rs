//! The user's tool. Local commands (`train`, `eval`, `bench`) drive the trainer
//! directly; the others talk to a coordinator.
//!
//! # Layout
//! - [`local`]: `train`, `eval`: one run on this machine, no cluster.
//! - [`bench`]: training throughput against PyTorch.

pub mod bench;
pub mod local;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "sweepctl", version, about = "Train locally, or submit and follow sweeps on a coordinator")]
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
    /// Training throughput of this trainer against PyTorch, side by side.
    Bench(bench::BenchArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => local::train(args),
        Command::Eval { run } => local::eval(&run),
        Command::Bench(args) => bench::run(args),
    }
}
