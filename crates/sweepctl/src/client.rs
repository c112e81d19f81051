//! The connection to a coordinator: the address forms a user may type, the
//! bearer token, and the one translation of transport errors and gRPC status
//! codes into messages that say what to do.

use std::error::Error as _;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use sweep_proto::CoordinatorClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// Default coordinator address: the one `sweep-coordinator` listens on by default.
pub const DEFAULT_COORDINATOR: &str = "127.0.0.1:50051";

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
    /// Bearer token sent with every request (when the coordinator requires one).
    #[arg(long, global = true, env = "SWEEP_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// The generated client with the token interceptor in front.
pub type Client = CoordinatorClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` to each request when a token is set.
#[derive(Clone)]
pub struct Auth {
    /// Parsed once, so a token that cannot be a header fails before any request.
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// Turns what the user typed into a URI tonic accepts: `host:port` becomes
/// `http://host:port`; `http://` is kept; anything else is refused with the
/// accepted forms.
pub fn endpoint_uri(address: &str) -> anyhow::Result<String> {
    let address = address.trim().trim_end_matches('/');
    if address.is_empty() {
        bail!("--coordinator: empty address; expected host:port or http://host:port");
    }
    if let Some(rest) = address.strip_prefix("https://") {
        // The coordinator serves plain HTTP/2 for now; tonic's TLS features
        // are not compiled in, so say so instead of failing obscurely.
        bail!(
            "--coordinator https://{rest}: TLS is not supported by this build of sweepctl yet; \
             use http://{rest} (loopback or a trusted network)"
        );
    }
    let uri = match address.strip_prefix("http://") {
        Some(_) => address.to_string(),
        None if address.contains("://") => {
            bail!("--coordinator {address}: unsupported scheme; expected host:port or http://host:port")
        }
        None => format!("http://{address}"),
    };
    let host_port = &uri["http://".len()..];
    // A port is required: guessing 80 would hide a typo.
    let port_ok = host_port.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        bail!("--coordinator {address}: expected host:port (for example {DEFAULT_COORDINATOR})");
    }
    Ok(uri)
}

/// Connects now (not lazily), so that an unreachable coordinator is reported
/// once, up front, with the address and what to do about it.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
    let uri = endpoint_uri(&args.coordinator)?;
    let header = match &args.token {
        Some(token) if !token.is_empty() => Some(
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| anyhow!("--token: must be printable ASCII"))?,
        ),
        _ => None,
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("--coordinator {}: not a valid address", args.coordinator))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|err| unreachable(&args.coordinator, &err))?;
    Ok(CoordinatorClient::with_interceptor(channel, Auth { header }))
}

/// The one-line error for a coordinator that cannot be reached.
fn unreachable(address: &str, err: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    anyhow!(
        "cannot reach the coordinator at {address} ({}); start one with `sweep-coordinator --config <sweep> --listen {address}`, \
         or point --coordinator (or SWEEP_COORDINATOR) at a running one",
        root_cause(err)
    )
}

/// The innermost error message (e.g. "Connection refused (os error 111)"):
/// tonic's outer layers only say "transport error".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    if text.is_empty() { err.to_string() } else { text }
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
        Code::Unauthenticated => anyhow!(
            "{what}: the coordinator at {address} refused the credentials: {message} (set --token or SWEEP_TOKEN)"
        ),
        Code::PermissionDenied => anyhow!("{what}: not allowed with this token: {message}"),
        Code::NotFound => anyhow!("{what}: {message}"),
        Code::InvalidArgument => anyhow!("{what}: rejected by the coordinator: {message}"),
        Code::FailedPrecondition => anyhow!("{what}: {message}"),
        Code::Unimplemented => anyhow!(
            "{what}: the coordinator at {address} does not support this request ({message}); is it an older version?"
        ),
        Code::DeadlineExceeded => anyhow!("{what}: the coordinator at {address} did not answer in time"),
        code => anyhow!("{what}: the coordinator at {address} answered {code:?}: {message}"),
    }
}

/// Runs a client command on a small runtime: the local commands stay
/// synchronous, so only these pay for one.
pub fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
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
    fn address_forms() {
        assert_eq!(endpoint_uri("127.0.0.1:50051").unwrap(), "http://127.0.0.1:50051");
        assert_eq!(endpoint_uri("http://coord.lan:7000/").unwrap(), "http://coord.lan:7000");
        assert_eq!(endpoint_uri(" [::1]:9 ").unwrap(), "http://[::1]:9");
        for bad in ["", "localhost", "localhost:http", ":50051", "grpc://a:1", "http://a"] {
            assert!(endpoint_uri(bad).is_err(), "{bad:?} should be refused");
        }
        let tls = endpoint_uri("https://a:1").unwrap_err().to_string();
        assert!(tls.contains("TLS"), "{tls}");
    }

    #[test]
    fn status_messages_keep_the_servers_words() {
        let err = status_error("a:1", "submitting", Status::invalid_argument("base.yaml:3: model.kind: unknown"));
        assert_eq!(err.to_string(), "submitting: rejected by the coordinator: base.yaml:3: model.kind: unknown");
        let err = status_error("a:1", "cancelling", Status::permission_denied("worker tokens cannot cancel"));
        assert!(err.to_string().contains("worker tokens cannot cancel"));
        let err = status_error("a:1", "status", Status::unauthenticated("missing token"));
        assert!(err.to_string().contains("SWEEP_TOKEN"));
    }
}
