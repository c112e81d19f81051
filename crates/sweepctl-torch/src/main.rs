//! `sweepctl-torch`: parses the command line, sets up logging and hands over
//! to the library. Users normally reach it through `sweepctl train|eval|analyze|bench`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sweepctl_torch::Cli::parse();
    sweep_startup::init("warn,sweepctl_torch=info", sweep_startup::LogStyle::Full);
    sweep_startup::exit_code(sweepctl_torch::run(cli))
}
