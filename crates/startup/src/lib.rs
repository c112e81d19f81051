//! What every binary of the workspace does before its library's `run`: one
//! place for it, so that the coordinator, the worker and both sweepctl
//! binaries log alike and stop alike.

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;

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

/// What a binary's `main` ends with: on an error, the error and its causes on
/// stderr and exit status 1. Returning the error from `main` would print the
/// same through anyhow's `Debug`, followed by a stack backtrace whenever the
/// user's shell sets `RUST_BACKTRACE=1`, which is noise to a user whose
/// config names a missing file.
pub fn exit_code<E: Into<Box<dyn Error + Send + Sync>>>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report(error.into().as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `Error: what failed`, then each cause on its own line, numbered when there
/// are several (the way anyhow prints them). A cause that the message above
/// it already ends with (`{path}: cannot read: {source}`) is not repeated.
fn error_report(error: &(dyn Error + 'static)) -> String {
    let mut report = format!("Error: {error}");
    let mut above = error.to_string();
    let mut causes = Vec::new();
    for cause in std::iter::successors(error.source(), |e| (*e).source()) {
        let text = cause.to_string();
        if above != text && !above.ends_with(&format!(": {text}")) {
            causes.push(text.clone());
        }
        above = text;
    }
    match causes.as_slice() {
        [] => {}
        [cause] => report.push_str(&format!("\n\nCaused by:\n    {cause}")),
        causes => {
            report.push_str("\n\nCaused by:");
            for (i, cause) in causes.iter().enumerate() {
                report.push_str(&format!("\n    {i}: {cause}"));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::{error_report, parse_filter};

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chain {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|c| c as _)
        }
    }

    #[test]
    fn errors_print_with_their_causes() {
        assert_eq!(error_report(&Chain("no sweep", None)), "Error: no sweep");
        let one = Chain(
            "reading configs/a.yaml",
            Some(Box::new(Chain("not found", None))),
        );
        assert_eq!(
            error_report(&one),
            "Error: reading configs/a.yaml\n\nCaused by:\n    not found"
        );
        let repeated = Chain(
            "a.yaml: cannot read: not found",
            Some(Box::new(Chain("not found", None))),
        );
        assert_eq!(
            error_report(&repeated),
            "Error: a.yaml: cannot read: not found"
        );
        let two = Chain("starting", Some(Box::new(one)));
        assert_eq!(
            error_report(&two),
            "Error: starting\n\nCaused by:\n    0: reading configs/a.yaml\n    1: not found"
        );
    }

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
