//! TLS end to end: `sweepctl certs` makes a CA and a server certificate, the
//! real coordinator serves them (with tokens), and sweepctl's client connects
//! through the CA; without the CA, or with another one, it cannot.

use std::time::Duration;

use sweep_coordinator::{CoordinatorConfig, TlsFiles};
use sweep_core::token::Token;
use sweep_proto::pb;
use sweepctl::client::{ConnectArgs, connect, status_error};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-for-the-tls-test-0123";
const WORKER: &str = "worker-token-for-the-tls-test-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_a_tls_coordinator_through_its_ca_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = sweepctl::certs::generate(&["coord.test".into()], &dir.path().join("certs"), false)
        .expect("certs");
    let other = sweepctl::certs::generate(&["coord.test".into()], &dir.path().join("other"), false)
        .expect("other CA");

    let mut config = CoordinatorConfig::new(dir.path().join("state"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_token = Some(Token::new(ADMIN, "test").expect("token"));
    config.worker_token = Some(Token::new(WORKER, "test").expect("token"));
    config.tls = Some(TlsFiles {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
        ca: Some(certs.ca_cert.clone()),
    });
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let port = coordinator.addr.port();
    let served = tokio::spawn(coordinator.wait());

    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).expect("token file");
    let args = |address: String, ca: Option<std::path::PathBuf>| ConnectArgs {
        coordinator: address,
        token_file: Some(token_file.clone()),
        tls_ca: ca,
    };

    // Through the CA, by name and by address (both are in the certificate).
    for address in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
    ] {
        let mut client = connect(&args(address.clone(), Some(certs.ca_cert.clone())))
            .await
            .expect("connect over TLS");
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_status(pb::GetStatusRequest::default()),
        )
        .await
        .expect("in time");
        assert!(status.is_ok(), "{address}: {status:?}");
    }

    // Plain HTTP/2 to a TLS port, and TLS with a CA that did not sign it,
    // fail, with errors that name the fix.
    let err = status_through(&args(format!("127.0.0.1:{port}"), None))
        .await
        .expect_err("plain HTTP/2 reached a TLS coordinator");
    assert!(err.contains("pass --tls-ca"), "{err}");
    let err = status_through(&args(
        format!("localhost:{port}"),
        Some(other.ca_cert.clone()),
    ))
    .await
    .expect_err("a certificate from another CA was trusted");
    assert!(err.contains("not signed by this CA"), "{err}");

    // TLS to a coordinator that serves none.
    let mut plain_config = CoordinatorConfig::new(dir.path().join("plain-state"));
    plain_config.listen = "127.0.0.1:0".parse().expect("addr");
    let plain_coordinator = sweep_coordinator::start(plain_config, shutdown.clone())
        .await
        .expect("start the plain one");
    let plain_port = plain_coordinator.addr.port();
    let plain_served = tokio::spawn(plain_coordinator.wait());
    let err = status_through(&args(
        format!("localhost:{plain_port}"),
        Some(certs.ca_cert.clone()),
    ))
    .await
    .expect_err("TLS reached a plain coordinator");
    assert!(err.contains("does not serve TLS"), "{err}");

    shutdown.cancel();
    served.await.expect("join").expect("served");
    plain_served.await.expect("join").expect("served");
}

/// Asks for the status through `args`: the error a user would see, if any.
async fn status_through(args: &ConnectArgs) -> Result<(), String> {
    let mut client = connect(args).await.map_err(|err| err.to_string())?;
    client
        .get_status(pb::GetStatusRequest::default())
        .await
        .map(|_| ())
        .map_err(|status| status_error(&args.coordinator, "status", status).to_string())
}
