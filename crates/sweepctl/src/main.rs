//! `sweepctl`: parses the command line, sets up logging and hands over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = sweepctl::Cli::parse();
    sweep_startup::init("warn,sweepctl=info", sweep_startup::LogStyle::Full);
    sweepctl::run(cli)
}
