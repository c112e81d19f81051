//! What every binary of the workspace does before its library's `run`: one
//! place for it, so that the coordinator, the worker and both sweepctl
//! binaries log alike and stop alike.

use std::io::IsTerminal;

use tokio_util::sync::CancellationToken;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// Level, target and fields: for daemons whose logs are read later.
    Full,
    /// One short line per event, without the module path: the progress a user
    /// watches (`make demo` shows the coordinator's).
    Progress,
}

/// Installs ring as rustls's crypto provider (rustls needs exactly one, and
/// panics at the first TLS handshake without it) and logs to stderr, filtered
/// by `RUST_LOG` or else `default_filter`. Colour codes only when stderr is a
/// terminal: a log piped to a file or a CI page stays plain text.
pub fn init(default_filter: &str, style: LogStyle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match style {
        LogStyle::Full => builder.init(),
        LogStyle::Progress => builder.with_target(false).compact().init(),
    }
}

/// A token that is cancelled on the first SIGINT (Ctrl-C) or SIGTERM
/// (`kill`, `docker stop`, SLURM's time limit); the task that waits for them
/// ends with it. Needs a running tokio runtime.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = signal() => cancel.cancel(),
            _ = cancel.cancelled() => {}
        }
    });
    token
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
