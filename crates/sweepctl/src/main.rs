//! `sweepctl`: parses the command line, sets up logging and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sweepctl::Cli::parse();
    sweep_startup::init("warn,sweepctl=info", sweep_startup::LogStyle::Full);
    sweep_startup::exit_code(sweepctl::run(cli))
}
