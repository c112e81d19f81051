//! The dashboard in a real browser: headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, which scripts/test-deps.sh
//! installs), watches a sweep whose jobs this test plays by hand over gRPC.
//! The page must show a running job, then turn its cell to done and draw its
//! curve and the results table, all without a reload; and its table must
//! equal the one `sweepctl results` prints.
//!
//! Set SWEEP_SCREENSHOT=path.png to keep a screenshot of the final page
//! (the README's comes from here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use sweep_core::results::ResultsTable;
use sweep_proto::pb;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SWEEP: &str = "browser";
const EPOCHS: u32 = 4;

fn find(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver, killed when the test ends (also on a failed assertion).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_yaml(variant: &str) -> String {
    let hidden = if variant == "wide" { 16 } else { 8 };
    format!(
        "name: {variant}\nseed: 1\n\
         model: {{type: fc, input_size: 784, hidden_sizes: [{hidden}], num_classes: 10}}\n\
         data: {{dataset: mnist, data_dir: {}, batch_size: 64}}\n\
         training: {{epochs: {EPOCHS}, learning_rate: 0.001, optimizer: adam, threads: 1}}\n",
        sweep_e2e::mnist_dir().display()
    )
}

/// Plausible curves: a little better for "wide", a little different per seed.
fn epoch(variant: &str, seed: u64, n: u32) -> pb::EpochMetrics {
    let lift = if variant == "wide" { 0.006 } else { 0.0 };
    let jitter = (seed % 7) as f64 * 0.001;
    let n_f = f64::from(n);
    pb::EpochMetrics {
        epoch: n,
        train_loss: 0.05 + 0.4 / n_f,
        train_acc: 0.9 + 0.02 * n_f,
        val_loss: 0.07 + 0.25 / n_f - lift,
        val_acc: 0.955 - 0.04 / n_f + lift + jitter,
        lr: 0.001,
        seconds: 1.0,
    }
}

struct Play {
    client: CoordinatorClient<Channel>,
    worker_id: String,
}

impl Play {
    async fn lease(&mut self) -> pb::Job {
        self.client
            .lease_job(pb::LeaseJobRequest {
                worker_id: self.worker_id.clone(),
            })
            .await
            .expect("lease")
            .into_inner()
            .job
            .expect("a job")
    }

    async fn report(&mut self, job: &pb::Job, n: u32) {
        self.client
            .report_epoch(pb::ReportEpochRequest {
                worker_id: self.worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                metrics: Some(epoch(&job.variant, job.seed, n)),
            })
            .await
            .expect("report");
    }

    async fn complete(&mut self, job: &pb::Job) {
        let epochs: Vec<pb::EpochMetrics> = (1..=EPOCHS)
            .map(|n| epoch(&job.variant, job.seed, n))
            .collect();
        let last = epochs.last().cloned().expect("epochs");
        self.client
            .complete_job(pb::CompleteJobRequest {
                worker_id: self.worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                lease_next: false,
                outcome: Some(pb::complete_job_request::Outcome::Metrics(pb::RunMetrics {
                    epochs,
                    best_epoch: EPOCHS,
                    best_val_loss: Some(last.val_loss),
                    best_val_acc: Some(last.val_acc),
                    stopped_early: false,
                    train_seconds: 4.0,
                    test: Some(pb::TestMetrics {
                        test_loss: last.val_loss,
                        test_acc: last.val_acc - 0.001,
                    }),
                })),
            })
            .await
            .expect("complete");
    }
}

/// Polls a script in the page until it returns true (10 s at most).
async fn wait_until(browser: &Client, what: &str, script: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = browser.execute(script, vec![]).await.expect("execute");
        if value == Value::Bool(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page did not show {what} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_page_follows_a_sweep_live_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (
        find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
        find(&["/usr/bin/chromedriver"]),
    ) else {
        return sweep_testkit::skip_or_fail(
            "no chromium and chromedriver (Debian: apt-get install chromium chromium-driver; \
             make test installs them through scripts/test-deps.sh)",
        );
    };

    let root = tempfile::tempdir().expect("tempdir");
    let mut config = sweep_coordinator::CoordinatorConfig::new(root.path().join("runs"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.http = Some("127.0.0.1:0".parse().expect("addr"));
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let (grpc, http): (SocketAddr, SocketAddr) =
        (coordinator.addr, coordinator.http_addr.expect("dashboard"));
    let served = tokio::spawn(coordinator.wait());

    let mut client = CoordinatorClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    client
        .submit_sweep(pb::SubmitSweepRequest {
            name: SWEEP.into(),
            description: "Two variants, two seeds, played by the test".into(),
            seeds: vec![42, 123],
            metric: "test_acc".into(),
            baseline: "baseline".into(),
            variants: ["baseline", "wide"]
                .map(|v| pb::VariantSpec {
                    name: v.into(),
                    config_yaml: config_yaml(v),
                    swept: Vec::new(),
                })
                .to_vec(),
            seed_policy: None,
            swept_keys: Vec::new(),
        })
        .await
        .expect("submit");
    let worker_id = client
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION,
            name: "played".into(),
            host: "test".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: false,
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id;
    let mut play = Play {
        client: client.clone(),
        worker_id,
    };

    let port = sweep_e2e::free_port();
    let _driver = Driver(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1300"],
        }
    });
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(capabilities.as_object().expect("object").clone());
    let mut browser = None;
    for _ in 0..50 {
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(b) => {
                browser = Some(b);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let browser = browser.expect("chromedriver answers within 10 s");

    browser
        .goto(&format!("http://{http}/sweeps/{SWEEP}"))
        .await
        .expect("open the sweep page");
    // Gone if the page reloads: everything below must happen in this document.
    browser
        .execute("window.sameDocument = true; return true;", vec![])
        .await
        .expect("mark");
    wait_until(
        &browser,
        "the live stream connected",
        "return document.getElementById('live').className === 'on';",
    )
    .await;

    // A job starts and reports its first epoch: its cell says so.
    let first = play.lease().await;
    play.report(&first, 1).await;
    let cell = format!("document.getElementById('cell-{}')", first.job_id);
    wait_until(
        &browser,
        "a running job",
        &format!("const c = {cell}; return !!c && c.className.includes('st-running') && c.querySelector('.ep').textContent === '1/{EPOCHS}';"),
    )
    .await;
    wait_until(
        &browser,
        "a curve",
        "return document.querySelectorAll('#curves svg.curve path.mean').length > 0;",
    )
    .await;

    // It finishes: the cell turns done and the results table appears.
    for n in 2..=EPOCHS {
        play.report(&first, n).await;
    }
    play.complete(&first).await;
    wait_until(
        &browser,
        "the job done",
        &format!("return {cell}.className.includes('st-succeeded');"),
    )
    .await;
    wait_until(
        &browser,
        "the results table",
        "return document.querySelectorAll('#results table.results tbody tr').length === 1;",
    )
    .await;

    // The other three jobs, then the whole table.
    for _ in 0..3 {
        let job = play.lease().await;
        for n in 1..=EPOCHS {
            play.report(&job, n).await;
        }
        play.complete(&job).await;
    }
    wait_until(
        &browser,
        "both variants in the results",
        "return document.querySelectorAll('#results table.results tbody tr').length === 2 \
         && document.querySelectorAll('#grid td.st-succeeded').length === 4;",
    )
    .await;
    wait_until(
        &browser,
        "a curve per variant",
        "return document.querySelectorAll('#curves svg.curve')[0].querySelectorAll('path.mean').length === 2;",
    )
    .await;
    let same = browser
        .execute("return window.sameDocument === true;", vec![])
        .await
        .expect("execute");
    assert_eq!(same, Value::Bool(true), "the page reloaded");

    // The page's table is `sweepctl results`' table, cell for cell.
    let shown = browser
        .execute(
            "return [...document.querySelectorAll('#results table.results tr')]
                .map(r => [...r.children].map(c => c.textContent));",
            vec![],
        )
        .await
        .expect("table");
    let results = client
        .get_results(pb::GetResultsRequest {
            sweep: SWEEP.into(),
            format: "json".into(),
        })
        .await
        .expect("results")
        .into_inner();
    let table: ResultsTable = serde_json::from_str(&results.json).expect("results json");
    let (header, rows) = table.cells();
    let mut expected = vec![header];
    expected.extend(rows);
    assert_eq!(shown, json!(expected));

    if let Some(path) = std::env::var_os("SWEEP_SCREENSHOT") {
        let png = browser.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    browser.close().await.expect("close");
    shutdown.cancel();
    served.await.expect("join").expect("served");
}
