//! `sweepctl-torch`: parses the command line, sets up logging and hands over
//! to the library. Users normally reach it through `sweepctl train|eval|analyze|bench`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = sweepctl_torch::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sweepctl_torch=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    sweepctl_torch::run(cli)
}
