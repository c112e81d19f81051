//! The dashboard over real HTTP: who may look, that what users wrote stays
//! text, that files are served from the state directory only, and that the
//! event stream delivers epochs live and replays what a reconnecting page
//! missed. The browser itself is tested in tests/dashboard_browser.rs.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sweep_proto::pb;

mod common;
use common::*;

const XSS: &str = "<img src=x onerror=alert(1)>";

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

struct Http {
    addr: SocketAddr,
    client: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new(harness: &Harness) -> Http {
        Http {
            addr: harness.http_addr.expect("the dashboard is served"),
            client: HttpClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> hyper::Response<Incoming> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.client.request(request).await.expect("http request")
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let response = self.send(method, path, headers, body).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// GET as the admin (bearer token).
    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[("authorization", &bearer())], "")
            .await
    }
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn with_dashboard() -> Harness {
    Harness::start(|config| config.http = Some("127.0.0.1:0".parse().expect("addr"))).await
}

/// A sweep of one job whose description is hostile markup.
async fn hostile_sweep(harness: &Harness, name: &str) {
    let mut request = one_job_sweep(name, 3);
    request.description = XSS.into();
    harness
        .admin()
        .await
        .submit_sweep(request)
        .await
        .expect("submit");
}

/// Reads server-sent events until `until` matches the text so far.
async fn read_events(response: hyper::Response<Incoming>, until: impl Fn(&str) -> bool) -> String {
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !until(&text) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no such event within 10 s; got:\n{text}"))
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text
}

/// The (id, event name, data) of each complete event in `text`.
fn parse_events(text: &str) -> Vec<(u64, String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
            };
            Some((field("id")?.parse().ok()?, field("event")?, field("data")?))
        })
        .collect()
}

#[tokio::test]
async fn pages_keep_what_users_wrote_as_text_under_a_strict_policy() {
    let harness = with_dashboard().await;
    hostile_sweep(&harness, "xss").await;
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w1").await;
    let job = lease(&mut worker, &worker_id).await;
    worker
        .record_attempt(pb::RecordAttemptRequest {
            worker_id: worker_id.clone(),
            job_id: job.job_id.clone(),
            attempt: job.attempt,
            provenance: Some(pb::AttemptProvenance {
                attempt: job.attempt,
                worker_id: worker_id.clone(),
                device: "cpu".into(),
                device_name: "<b>Xeon</b>".into(),
                threads: 2,
                libtorch_version: "2.13.0".into(),
                outcome: "running".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("record the attempt");
    worker
        .complete_job(failure(&worker_id, &job, "<script>alert(2)</script>", true))
        .await
        .expect("fail the job");

    let http = Http::new(&harness);
    for path in [
        "/".to_string(),
        "/sweeps/xss".to_string(),
        "/sweeps/xss/grid".to_string(),
        format!("/jobs/{}", job.job_id),
        "/workers".to_string(),
    ] {
        let reply = http.get(&path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            !reply.body.contains("<img src=x"),
            "{path} holds raw markup"
        );
        assert!(
            !reply.body.contains("<script>alert"),
            "{path} holds raw markup"
        );
        let csp = reply.headers["content-security-policy"]
            .to_str()
            .expect("csp");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline"),
            "no inline script or style: {csp}"
        );
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    }
    let sweep_page = http.get("/sweeps/xss").await.body;
    assert!(
        sweep_page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the description is shown, escaped"
    );
    let job_page = http.get(&format!("/jobs/{}", job.job_id)).await.body;
    assert!(job_page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
    // Its attempts, with where they ran.
    assert!(
        job_page.contains("Attempts") && job_page.contains("2.13.0"),
        "{job_page}"
    );
    assert!(
        job_page.contains("cpu (&lt;b&gt;Xeon&lt;/b&gt;)"),
        "{job_page}"
    );
    // The JSON API carries the text as it was written: JSON, not HTML.
    let api = http.get("/api/v1/sweeps").await;
    assert_eq!(api.headers["content-type"], "application/json");
    let sweeps: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(sweeps[0]["description"], XSS);
    harness.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_every_page_and_the_api() {
    let harness = with_dashboard().await;
    hostile_sweep(&harness, "guarded").await;
    let http = Http::new(&harness);

    let api = http.call("GET", "/api/v1/sweeps", &[], "").await;
    assert_eq!(api.status, 401);
    assert!(api.body.contains("admin token"), "{}", api.body);
    let events = http.call("GET", "/api/v1/events", &[], "").await;
    assert_eq!(events.status, 401, "the event stream is guarded too");
    let page = http.call("GET", "/sweeps/guarded", &[], "").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.headers["location"], "/login");
    let file = http
        .call("GET", "/files/guarded/baseline/seed-1/config.yaml", &[], "")
        .await;
    assert_eq!(file.status, 303, "files are guarded too");
    let worker_token = format!("Bearer {WORKER_TOKEN}");
    let as_worker = http
        .call(
            "GET",
            "/api/v1/sweeps",
            &[("authorization", &worker_token)],
            "",
        )
        .await;
    assert_eq!(as_worker.status, 401, "the worker token is not the admin's");
    // The login form and the page's own assets are open.
    assert_eq!(http.call("GET", "/login", &[], "").await.status, 200);
    assert_eq!(
        http.call("GET", "/assets/app.js", &[], "").await.status,
        200
    );

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = http.call("POST", "/login", &form, "token=guess").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    let right = http
        .call("POST", "/login", &form, &format!("token={ADMIN_TOKEN}"))
        .await;
    assert_eq!(right.status, 303);
    let cookie = right.headers["set-cookie"].to_str().expect("cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie never holds the token"
    );
    let session = cookie.split(';').next().expect("name=value");
    let signed_in = http
        .call("GET", "/sweeps/guarded", &[("cookie", session)], "")
        .await;
    assert_eq!(signed_in.status, 200);
    let forged = http
        .call(
            "GET",
            "/sweeps/guarded",
            &[("cookie", "sweep_session=00")],
            "",
        )
        .await;
    assert_eq!(forged.status, 303);
    harness.stop().await;
}

#[tokio::test]
async fn files_are_served_from_the_state_directory_only() {
    let harness = with_dashboard().await;
    hostile_sweep(&harness, "files").await;
    let secret = harness.root.path().join("secret.txt");
    std::fs::write(&secret, "the secret").expect("write");
    let run_dir = harness.state_dir.join("files/baseline/seed-1");
    std::os::unix::fs::symlink(&secret, run_dir.join("link.txt")).expect("symlink");
    let http = Http::new(&harness);

    let config = http.get("/files/files/baseline/seed-1/config.yaml").await;
    assert_eq!(config.status, 200);
    assert!(config.body.contains("name: baseline"), "{}", config.body);
    assert!(
        config.headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .starts_with("default-src 'none'"),
        "a served file runs nothing"
    );
    for path in [
        "/files/../secret.txt",
        "/files/files/../../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/files/%2e%2e/%2e%2e/secret.txt",
        "/files/files/..%2f..%2fsecret.txt",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/files/files/baseline/seed-1/link.txt",
        "/files/coordinator.sqlite",
        "/files/files/baseline/seed-1",
    ] {
        let reply = http.get(path).await;
        assert_eq!(reply.status, 404, "{path} was served");
        assert!(!reply.body.contains("the secret"), "{path}");
        assert!(!reply.body.contains("root:"), "{path}");
    }
    harness.stop().await;
}

#[tokio::test]
async fn epochs_stream_live_and_a_reconnecting_page_misses_nothing() {
    let harness = with_dashboard().await;
    hostile_sweep(&harness, "live").await;
    let http = Http::new(&harness);
    let snapshot: serde_json::Value =
        serde_json::from_str(&http.get("/api/v1/sweeps/live").await.body).expect("json");
    let after = snapshot["last_event_id"].as_u64().expect("last_event_id");
    assert_eq!(snapshot["jobs"].as_array().map(Vec::len), Some(1));

    let stream = http
        .send(
            "GET",
            &format!("/api/v1/events?sweep=live&after={after}"),
            &[("authorization", &bearer())],
            "",
        )
        .await;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w1").await;
    let job = lease(&mut worker, &worker_id).await;
    worker
        .report_epoch(report(&worker_id, &job, job.attempt, 1))
        .await
        .expect("epoch 1");
    let text = read_events(stream, |t| t.contains("event: epoch")).await;
    let events = parse_events(&text);
    // Worker events go to every page; the sweep's own come in order.
    let kinds: Vec<&str> = events
        .iter()
        .map(|(_, kind, _)| kind.as_str())
        .filter(|kind| *kind != "worker")
        .collect();
    assert_eq!(
        kinds,
        ["job", "epoch"],
        "the lease, then the epoch:\n{text}"
    );
    let (seen, _, data) = events.last().expect("epoch event").clone();
    let epoch: serde_json::Value = serde_json::from_str(&data).expect("json");
    assert_eq!(epoch["job_id"], job.job_id.as_str());
    assert_eq!(epoch["metrics"]["epoch"], 1);

    // The page was away for two epochs and the job's end: it gets them all, in order.
    for n in [2, 3] {
        worker
            .report_epoch(report(&worker_id, &job, job.attempt, n))
            .await
            .expect("epoch");
    }
    worker
        .complete_job(success(&worker_id, &job, job.attempt, 3, 0.9))
        .await
        .expect("complete");
    let again = http
        .send(
            "GET",
            &format!("/api/v1/events?sweep=live&after={after}"),
            &[
                ("authorization", &bearer()),
                ("last-event-id", &seen.to_string()),
            ],
            "",
        )
        .await;
    let text = read_events(again, |t| {
        parse_events(t).iter().any(|(_, k, _)| k == "sweep")
    })
    .await;
    let replayed = parse_events(&text);
    let kinds: Vec<&str> = replayed.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["epoch", "epoch", "job", "sweep"], "{text}");
    let ids: Vec<u64> = replayed.iter().map(|(id, _, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > seen,
        "{ids:?}"
    );
    let done: serde_json::Value = serde_json::from_str(&replayed[2].2).expect("json");
    assert_eq!(done["state"], "succeeded");

    // A page that kept an id this coordinator never gave is told to reload.
    let stale = http
        .send(
            "GET",
            "/api/v1/events?after=1",
            &[("authorization", &bearer())],
            "",
        )
        .await;
    let text = read_events(stale, |t| t.contains("event: reset")).await;
    assert!(
        !text.contains("id:"),
        "only the reset, no event of this coordinator's: {text}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn the_results_api_equals_the_grpc_results() {
    let harness = with_dashboard().await;
    hostile_sweep(&harness, "table").await;
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w1").await;
    let job = lease(&mut worker, &worker_id).await;
    worker
        .complete_job(success(&worker_id, &job, job.attempt, 3, 0.9123))
        .await
        .expect("complete");
    let grpc = harness
        .admin()
        .await
        .get_results(pb::GetResultsRequest {
            sweep: "table".into(),
            format: "json".into(),
        })
        .await
        .expect("results")
        .into_inner();
    let http = Http::new(&harness);
    let api = http.get("/api/v1/sweeps/table/results").await;
    assert_eq!(api.status, 200);
    assert_eq!(api.body, grpc.json);
    let fragment = http.get("/sweeps/table/results").await.body;
    assert!(fragment.contains("91.23"), "{fragment}");
    let workers: serde_json::Value =
        serde_json::from_str(&http.get("/api/v1/workers").await.body).expect("json");
    assert_eq!(workers[0]["name"], "w1");
    assert_eq!(workers[0]["jobs_done"], 1);
    assert_eq!(http.get("/api/v1/sweeps/nope").await.status, 404);
    harness.stop().await;
}

#[tokio::test]
async fn a_dashboard_beyond_loopback_needs_the_admin_token() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = sweep_coordinator::CoordinatorConfig::new(root.path().join("state"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.http = Some("0.0.0.0:0".parse().expect("addr"));
    let err = sweep_coordinator::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("admin token"), "{err}");
}

/// A CA and a server certificate for `localhost`, as PEM files in `dir`;
/// returns (CA certificate DER, server cert path, server key path).
fn certificates(
    dir: &std::path::Path,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_path, server.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (ca_cert.der().clone(), cert_path, key_path)
}

#[tokio::test]
async fn with_a_certificate_the_dashboard_is_https_and_the_cookie_secure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let harness = Harness::start(|config| {
        config.http = Some("127.0.0.1:0".parse().expect("addr"));
        config.tls = Some(sweep_coordinator::TlsFiles {
            cert,
            key,
            ca: None,
        });
    })
    .await;
    let addr = harness.http_addr.expect("dashboard");

    // Plain HTTP gets no page.
    let plain = HttpClient::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .get(format!("http://{addr}/login").parse().expect("uri"))
        .await;
    assert!(plain.is_err(), "answered plain HTTP");

    // HTTPS, verified against the CA: the login sets a Secure cookie.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("CA");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP over TLS");
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method("POST")
        .uri("/login")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("token={ADMIN_TOKEN}"))))
        .expect("request");
    let response = sender.send_request(request).await.expect("login");
    assert_eq!(response.status(), 303);
    let cookie = response.headers()["set-cookie"].to_str().expect("cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    harness.stop().await;
}

#[tokio::test]
async fn a_job_page_links_its_files_and_the_report_and_says_why_it_has_no_figures() {
    let harness = with_dashboard().await;
    harness
        .admin()
        .await
        .submit_sweep(one_job_sweep("links", 3))
        .await
        .expect("submit");
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w1").await;
    let job = lease(&mut worker, &worker_id).await;
    worker
        .complete_job(failure(&worker_id, &job, "out of memory", true))
        .await
        .expect("fail the job");
    // The sweep's report, as the coordinator writes it when the sweep ends.
    let report = harness.state_dir.join("links/report/index.html");
    std::fs::create_dir_all(report.parent().expect("parent")).expect("mkdir");
    std::fs::write(&report, "<html></html>").expect("write");

    let http = Http::new(&harness);
    let page = http.get(&format!("/jobs/{}", job.job_id)).await.body;
    for link in [
        "href=\"/files/links/baseline/seed-1/config.yaml\"",
        "href=\"/files/links/report/index.html\"",
    ] {
        assert!(page.contains(link), "{link} in {page}");
    }
    assert!(
        http.get("/files/links/baseline/seed-1/config.yaml")
            .await
            .status
            == 200,
        "the link is served"
    );
    assert!(
        page.contains("the job failed") && !page.contains("drawn when the job ends"),
        "a failed job is not waiting for figures: {page}"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_command_sweep_without_a_worker_for_it_says_why_it_waits() {
    let harness = with_dashboard().await;
    let mut sweep = one_job_sweep("own", 1);
    sweep.variants[0].config_yaml = "name: base\nseed: 1\ncommand: [python3, train.py]\n".into();
    harness
        .admin()
        .await
        .submit_sweep(sweep)
        .await
        .expect("submit");
    let http = Http::new(&harness);
    let page = http.get("/sweeps/own").await.body;
    assert!(
        page.contains("1 command job waits: no connected worker runs a sweep's own program")
            && page.contains("data-live=\"/sweeps/own/waiting\""),
        "{page}"
    );
    let live = http.get("/sweeps/own/waiting").await.body;
    assert!(live.contains("1 command job waits"), "{live}");
    assert_eq!(http.get("/sweeps/nope/waiting").await.status, 404);
    // A worker that runs them takes the note away, and the page's live
    // region (fetched again on the worker's event) with it.
    let mut worker = harness.worker().await;
    worker
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: sweep_proto::PROTOCOL_VERSION,
            name: "cmd".into(),
            host: "test".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: true,
        })
        .await
        .expect("register");
    let page = http.get("/sweeps/own").await.body;
    assert!(!page.contains("command job waits"), "{page}");
    let live = http.get("/sweeps/own/waiting").await.body;
    assert_eq!(live, "", "nothing waits");
    harness.stop().await;
}
