//! sweepctl's connection to a coordinator (set up by `sweep_proto::client`)
//! and the one translation of transport errors and gRPC status codes into
//! messages that say what to do.

use std::error::Error as _;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use sweep_core::token::Token;
use sweep_proto::client;
use tonic::{Code, Status};

/// Default coordinator address: the one `sweep-coordinator` listens on by default.
pub const DEFAULT_COORDINATOR: &str = client::DEFAULT_ADDRESS;

/// How long to wait for the TCP connection: a coordinator on the same
/// network answers in milliseconds, and a user waiting on a wrong address
/// should hear about it quickly rather than after the OS's minutes-long timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the coordinator is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Coordinator address: host:port or http://host:port.
    #[arg(long, global = true, env = "SWEEP_COORDINATOR", default_value = DEFAULT_COORDINATOR, value_name = "HOST:PORT")]
    pub coordinator: String,
    /// File holding the bearer token sent with every request (or
    /// $SWEEP_TOKEN); never the token itself, which `ps` would show.
    #[arg(long, global = true, env = "SWEEP_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect with TLS, trusting this CA certificate (PEM; `sweepctl certs` makes one).
    #[arg(long, global = true, env = "SWEEP_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

pub use sweep_proto::client::Client;

/// Connects now (not lazily), so that an unreachable coordinator is reported
/// once, up front, with the address and what to do about it.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
    let token = Token::load(args.token_file.as_deref(), "SWEEP_TOKEN")?;
    let endpoint = client::endpoint(&args.coordinator, args.tls_ca.as_deref(), CONNECT_TIMEOUT)?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|err| unreachable(&args.coordinator, &err))?;
    Ok(client::client(channel, token.as_ref()))
}

/// The one-line error for a coordinator that cannot be reached, with what
/// the cause suggests doing about it.
fn unreachable(address: &str, err: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let cause = root_cause(err);
    let hint = client::connection_hint(&cause, address, "--coordinator")
        .unwrap_or_else(|| "check --coordinator (or SWEEP_COORDINATOR)".to_string());
    anyhow!("cannot reach the coordinator at {address} ({cause}); {hint}")
}

/// The innermost error message (e.g. "Connection refused (os error 111)"):
/// tonic's outer layers only say "transport error".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() {
        err.to_string()
    } else {
        text
    }
}

/// Translates a failed call into a message for the user. `what` names the
/// operation ("submitting sweep quickstart").
pub fn status_error(address: &str, what: &str, status: Status) -> anyhow::Error {
    let message = status.message();
    match status.code() {
        Code::Unavailable => match status.source() {
            Some(source) => unreachable(address, source),
            None => anyhow!("{what}: the coordinator at {address} is unavailable: {message}"),
        },
        Code::Unauthenticated if message.contains("missing") => anyhow!(
            "{what}: the coordinator at {address} asks for a token: pass its admin token file with \
             --token-file (or SWEEP_TOKEN_FILE)"
        ),
        Code::Unauthenticated => anyhow!(
            "{what}: the coordinator at {address} refused the credentials: {message} (the token \
             given is not one it was started with: use its admin token file)"
        ),
        Code::PermissionDenied if message.contains("worker token") => anyhow!(
            "{what}: not allowed with a worker token ({message}): sweepctl needs the coordinator's \
             admin token"
        ),
        Code::PermissionDenied => anyhow!("{what}: not allowed with this token: {message}"),
        Code::NotFound => anyhow!("{what}: {message}"),
        Code::InvalidArgument => anyhow!("{what}: rejected by the coordinator: {message}"),
        Code::FailedPrecondition => anyhow!("{what}: {message}"),
        Code::Unimplemented => anyhow!(
            "{what}: the coordinator at {address} does not support this request ({message}); is it an older version?"
        ),
        Code::DeadlineExceeded => {
            anyhow!("{what}: the coordinator at {address} did not answer in time")
        }
        code => {
            match client::connection_hint(&client::error_text(&status), address, "--coordinator") {
                Some(hint) => {
                    anyhow!("{what}: the connection to {address} failed ({message}); {hint}")
                }
                None => {
                    anyhow!("{what}: the coordinator at {address} answered {code:?}: {message}")
                }
            }
        }
    }
}

/// Runs a client command on a small runtime: the local commands stay
/// synchronous, so only these pay for one.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    future: F,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_keep_the_servers_words() {
        let err = status_error(
            "a:1",
            "submitting",
            Status::invalid_argument("base.yaml:3: model.kind: unknown"),
        );
        assert_eq!(
            err.to_string(),
            "submitting: rejected by the coordinator: base.yaml:3: model.kind: unknown"
        );
        let err = status_error(
            "a:1",
            "cancelling",
            Status::permission_denied("worker tokens cannot cancel"),
        );
        assert!(err.to_string().contains("worker tokens cannot cancel"));
        let err = status_error("a:1", "status", Status::unauthenticated("missing token"));
        assert!(err.to_string().contains("SWEEP_TOKEN_FILE"), "{err}");
        let err = status_error("a:1", "status", Status::unauthenticated("invalid token"));
        assert!(
            err.to_string().contains("not one it was started with"),
            "{err}"
        );
        let err = status_error(
            "a:1",
            "status",
            Status::permission_denied("a worker token may not call GetStatus"),
        );
        assert!(err.to_string().contains("admin token"), "{err}");
    }
}
