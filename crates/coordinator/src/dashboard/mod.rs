//! The dashboard: a page per sweep, worker and job that changes as the
//! coordinator learns, and the JSON API the pages are built on. It runs
//! beside the gRPC service, on the same runtime and over the same store, and
//! only reads: cancelling stays in `sweepctl`, behind the admin token.
//!
//! Pages are rendered on the server (maud escapes every value it inserts);
//! one small script (`assets/app.js`, no build step, nothing fetched from
//! elsewhere) follows the event stream (`/api/v1/events`, server-sent events
//! from [`crate::events`]) and updates the page in place.
//!
//! # Layout
//! - [`access`]: who may look: the admin token as a bearer header, or the
//!   session cookie that the login form sets; security headers on every answer.
//! - [`api`]: `/api/v1/...`: JSON, and the event stream.
//! - [`pages`]: the HTML pages and the fragments the script swaps in.
//! - [`files`]: run files (figures, the sweep report), confined to the state
//!   directory.

mod access;
mod api;
mod files;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use sweep_core::token::Token;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::error::{CoordinatorError, Result};
use crate::service::Shared;

/// What every handler reads.
#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    /// None: no admin token, every local client may look (loopback only).
    access: Option<Arc<access::Access>>,
    /// Served over TLS: the session cookie is marked Secure.
    tls: bool,
}

/// A TLS handshake that has not finished by then is dropped, so that a
/// client that connects and says nothing holds nothing.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running dashboard.
pub struct Dashboard {
    /// The address bound (the port of `:0` resolved).
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves until `stop`. Beyond loopback the admin token is
/// required (the same rule as gRPC's); with `tls` the pages are HTTPS only.
pub async fn start(
    addr: SocketAddr,
    shared: Arc<Shared>,
    admin_token: Option<&Token>,
    tls: Option<rustls::ServerConfig>,
    stop: CancellationToken,
) -> Result<Dashboard> {
    if admin_token.is_none() && !addr.ip().is_loopback() {
        return Err(CoordinatorError::InvalidArgument(format!(
            "--http {addr} is reachable from other machines: the dashboard needs the admin token \
             there (--admin-token-file), or a loopback address"
        )));
    }
    let access = admin_token
        .map(access::Access::new)
        .transpose()?
        .map(Arc::new);
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        CoordinatorError::InvalidArgument(format!(
            "cannot serve the dashboard on {addr}: {e} (choose another address with --http ADDR, or --http off)"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(CoordinatorError::io("<http listen>"))?;
    let state = AppState {
        shared,
        access,
        tls: tls.is_some(),
    };
    let app = router(state);
    let task = match tls {
        None => serve(listener, app, stop),
        Some(config) => {
            let acceptor = TlsAcceptor::from(Arc::new(config));
            serve(
                TlsListener::start(listener, acceptor, stop.clone()),
                app,
                stop,
            )
        }
    };
    Ok(Dashboard { addr, task })
}

/// Serves `app` on `listener` (plain TCP or TLS) until `stop`.
fn serve<L>(listener: L, app: Router, stop: CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "dashboard server failed");
        }
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::sweeps))
        .route("/sweeps/{name}", get(pages::sweep))
        .route("/sweeps/{name}/grid", get(pages::sweep_grid))
        .route("/sweeps/{name}/results", get(pages::sweep_results))
        .route("/sweeps/{name}/waiting", get(pages::sweep_waiting))
        .route("/workers", get(pages::workers))
        .route("/jobs/{id}", get(pages::job))
        .route("/files/{*path}", get(files::serve))
        .route("/assets/{name}", get(pages::asset))
        .route("/login", get(access::login_form).post(access::login))
        .route("/api/v1/sweeps", get(api::sweeps))
        .route("/api/v1/sweeps/{name}", get(api::sweep))
        .route("/api/v1/sweeps/{name}/results", get(api::results))
        .route("/api/v1/sweeps/{name}/curves", get(api::curves))
        .route("/api/v1/workers", get(api::workers))
        .route("/api/v1/jobs/{id}", get(api::job))
        .route("/api/v1/events", get(api::events))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::guard,
        ))
        .with_state(state)
}

/// The rustls configuration of the dashboard, from the same PEM files as
/// the gRPC server's.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, e: rustls::pki_types::pem::Error| {
        CoordinatorError::InvalidArgument(format!("{}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CoordinatorError::Internal(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| CoordinatorError::InvalidArgument(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TCP connections and hands finished TLS handshakes to axum; the
/// handshakes run concurrently, so one silent client delays no other.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, acceptor: TlsAcceptor, stop: CancellationToken) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut handshakes = JoinSet::new();
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            tracing::warn!(error = %e, "dashboard accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                    _ = stop.cancelled() => break,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                handshakes.spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "dashboard TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "dashboard TLS handshake timed out"),
                    }
                });
            }
            handshakes.shutdown().await;
        });
        TlsListener { ready, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor stopped: so does the server, by its shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
