//! What every binary of the workspace does before its library's `run`: one
//! place for it, so that the coordinator, the worker and both sweepctl
//! binaries log alike and stop alike.

use std::io::IsTerminal;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

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
///
/// A filter is a comma-separated list of `LEVEL` and `TARGET=LEVEL`
/// directives (`warn,sweep_worker=debug`), as tracing's `Targets` reads them;
/// a `RUST_LOG` that does not parse is ignored for `default_filter`.
pub fn init(default_filter: &str, style: LogStyle) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| parse_filter(&s))
        .or_else(|| parse_filter(default_filter))
        .unwrap_or_default();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match style {
        LogStyle::Full => registry.with(fmt).init(),
        LogStyle::Progress => registry.with(fmt.with_target(false).compact()).init(),
    }
}

/// `RUST_LOG`'s directives, empty ones skipped (`info,`); `None` when there
/// are none or one does not parse.
fn parse_filter(directives: &str) -> Option<Targets> {
    let directives: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return None;
    }
    directives.join(",").parse().ok()
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

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::parse_filter;

    #[test]
    fn filters_parse_like_rust_log() {
        let f = parse_filter("warn,sweepctl=info").unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::WARN));
        assert!(f.would_enable("sweepctl::watch", &tracing::Level::INFO));
        assert!(!f.would_enable("sweepctl::watch", &tracing::Level::DEBUG));
        assert!(!f.would_enable("h2::codec", &tracing::Level::INFO));
        let f = parse_filter(" info , ").unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::INFO));
        assert!(parse_filter("").is_none());
        assert!(parse_filter("sweepctl=loud").is_none());
    }
}
