//! `sweepctl`: parses the command line, sets up logging and hands over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // First thing: rustls needs one crypto provider, and ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = sweepctl::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sweepctl=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    sweepctl::run(cli)
}
