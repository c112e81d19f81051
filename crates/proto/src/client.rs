//! The client end of a connection to a coordinator, the same for workers and
//! sweepctl: the address forms a user may type, TLS against a given CA, and
//! the bearer token on every request ([`crate::auth`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sweep_core::token::Token;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::CoordinatorClient;
use crate::auth::BearerInterceptor;

/// The address `sweep-coordinator` listens on by default.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

/// The generated client with the bearer token added to every request.
pub type Client = CoordinatorClient<InterceptedService<Channel, BearerInterceptor>>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("coordinator address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("{}: cannot read the TLS CA certificate: {source}", path.display())]
    TlsCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting up TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// Turns what the user typed into a URI tonic accepts: `host:port` becomes
/// `http://host:port` (`https://` with `tls`); a matching scheme is kept;
/// anything else is refused with the accepted forms.
pub fn endpoint_uri(address: &str, tls: bool) -> Result<String, ClientError> {
    let refuse = |reason: String| ClientError::Address {
        address: address.to_string(),
        reason,
    };
    let trimmed = address.trim().trim_end_matches('/');
    let scheme = if tls { "https" } else { "http" };
    if trimmed.is_empty() {
        return Err(refuse(format!(
            "empty; expected host:port or {scheme}://host:port"
        )));
    }
    if let Some(rest) = trimmed.strip_prefix("https://").filter(|_| !tls) {
        return Err(refuse(format!(
            "TLS needs --tls-ca with the CA certificate that signed the coordinator's (see `sweepctl certs`), or http://{rest}"
        )));
    }
    if let Some(rest) = trimmed.strip_prefix("http://").filter(|_| tls) {
        return Err(refuse(format!(
            "--tls-ca asks for TLS; use https://{rest} or host:port"
        )));
    }
    let prefix = format!("{scheme}://");
    let uri = match trimmed.strip_prefix(&prefix) {
        Some(_) => trimmed.to_string(),
        None if trimmed.contains("://") => {
            return Err(refuse(format!(
                "unsupported scheme; expected host:port or {scheme}://host:port"
            )));
        }
        None => format!("{prefix}{trimmed}"),
    };
    let host_port = &uri[prefix.len()..];
    // A port is required: guessing 80 would hide a typo.
    let expected = || {
        refuse(format!(
            "expected host:port (for example {DEFAULT_ADDRESS})"
        ))
    };
    let (host, port) = host_port.rsplit_once(':').ok_or_else(expected)?;
    if host.is_empty() {
        return Err(expected());
    }
    if host.contains('/') {
        return Err(refuse(format!(
            "a host name has no '/'; expected host:port or {scheme}://host:port"
        )));
    }
    match port.parse::<u64>() {
        Ok(1..=65535) => Ok(uri),
        Ok(_) => Err(refuse(format!("port {port} is out of range (1-65535)"))),
        Err(_) => Err(expected()),
    }
}

/// What a failed connection's error text (the status message and its
/// causes) says about the likely mistake, for the ones people make setting
/// up a connection: TLS on one end only, a CA that did not sign the
/// coordinator's certificate, nothing listening, a host name that does not
/// resolve. `flag` is the option that names the coordinator in the
/// program that asks (`--coordinator` in sweepctl, `--connect` in a worker).
/// None when the text says nothing recognisable.
pub fn connection_hint(error_text: &str, address: &str, flag: &str) -> Option<String> {
    let has = |needle: &str| error_text.contains(needle);
    let hint = if has("InvalidContentType") || has("corrupt message") {
        "the coordinator does not serve TLS there: leave out --tls-ca (and SWEEP_TLS_CA)"
            .to_string()
    } else if has("h2 protocol error")
        || has("http2 error")
        || has("frame with invalid size")
        || has("connection closed")
        || has("broken pipe")
        || has("onnection reset")
    {
        // What a TLS server does to a plain HTTP/2 client varies with timing:
        // a protocol error, or the connection closed or reset under it.
        "the coordinator closed the connection; if it serves TLS, pass --tls-ca (or SWEEP_TLS_CA) \
         with the CA certificate that signed its certificate"
            .to_string()
    } else if has("certificate") {
        "the coordinator's certificate was not signed by this CA, or does not name this host: use \
         the ca.pem made with it (`sweepctl certs --host <name>`)"
            .to_string()
    } else if has("onnection refused") {
        format!(
            "nothing listens at {address}: start a coordinator with `sweep-coordinator --config \
             <sweep> --listen {address}`, or point {flag} (or SWEEP_COORDINATOR) at a running one"
        )
    } else if has("lookup address") || has("dns error") || has("not known") {
        format!("the host name in {address} does not resolve: check the address")
    } else if has("timed out") {
        format!("{address} did not answer: check the address, and any firewall on the way")
    } else {
        return None;
    };
    Some(hint)
}

/// A status's message followed by its causes' (tonic's outer layers say
/// only "transport error"): the text [`connection_hint`] reads.
pub fn error_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_string();
    let mut cause = status.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

/// The endpoint for `address`, with TLS verified against `tls_ca` when given.
/// Nothing is dialled yet: call `connect` or `connect_lazy` on it.
pub fn endpoint(
    address: &str,
    tls_ca: Option<&Path>,
    connect_timeout: Duration,
) -> Result<Endpoint, ClientError> {
    let uri = endpoint_uri(address, tls_ca.is_some())?;
    let mut endpoint = Endpoint::from_shared(uri).map_err(|err| ClientError::Address {
        address: address.to_string(),
        reason: err.to_string(),
    })?;
    if let Some(path) = tls_ca {
        let pem = std::fs::read(path).map_err(|source| ClientError::TlsCa {
            path: path.to_path_buf(),
            source,
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .map_err(ClientError::Tls)?;
    }
    Ok(endpoint.connect_timeout(connect_timeout))
}

/// A client over `channel` that sends `token` with every request.
pub fn client(channel: Channel, token: Option<&Token>) -> Client {
    CoordinatorClient::with_interceptor(channel, BearerInterceptor::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            endpoint_uri("127.0.0.1:50051", false).unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            endpoint_uri("http://coord.lan:7000/", false).unwrap(),
            "http://coord.lan:7000"
        );
        assert_eq!(endpoint_uri(" [::1]:9 ", false).unwrap(), "http://[::1]:9");
        for bad in [
            "",
            "localhost",
            "localhost:http",
            ":50051",
            "grpc://a:1",
            "http://a",
        ] {
            let err = endpoint_uri(bad, false).expect_err(bad).to_string();
            assert!(
                err.contains(&format!("{bad:?}")),
                "names the address: {err}"
            );
        }
        let range = endpoint_uri("127.0.0.1:99999", false)
            .unwrap_err()
            .to_string();
        assert!(range.contains("port 99999 is out of range"), "{range}");
        let typo = endpoint_uri("http//127.0.0.1:50051", false)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("no '/'"), "{typo}");
        let tls = endpoint_uri("https://a:1", false).unwrap_err().to_string();
        assert!(tls.contains("--tls-ca"), "{tls}");
        assert_eq!(
            endpoint_uri("coord.lan:7000", true).unwrap(),
            "https://coord.lan:7000"
        );
        assert_eq!(
            endpoint_uri("https://coord.lan:7000", true).unwrap(),
            "https://coord.lan:7000"
        );
        assert!(endpoint_uri("http://coord.lan:7000", true).is_err());
    }
}
