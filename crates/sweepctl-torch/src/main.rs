//! `sweepctl-torch`: parses the command line, sets up logging and hands over
//! to the library. Users normally reach it through `sweepctl train|eval|analyze|bench`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = sweepctl_torch::Cli::parse();
    sweep_startup::init("warn,sweepctl_torch=info", sweep_startup::LogStyle::Full);
    sweepctl_torch::run(cli)
}
