//! Dashboard figures for BENCHMARKS.md, against the real coordinator
//! (in-process, gRPC and HTTP on loopback) with this program playing one
//! worker and the browsers:
//! - latency from a ReportEpoch call to its event at a subscribed page
//!   (server-sent events), p50 and p99;
//! - ingestion (sequential ReportEpoch calls) with no page open, with 50
//!   pages following the stream, and with none again; and the process's
//!   resident memory before and with the 50 pages;
//! - the sweep page of 1,000 jobs × 20 epochs: time and size of the page
//!   and of the curves its script loads.
//!
//!     cargo run --release -p sweep-e2e --example dashboard

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sweep_coordinator::CoordinatorConfig;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION, pb};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const VARIANTS: usize = 100;
const SEEDS: u64 = 10;
const EPOCHS: u32 = 20;

type Http = HttpClient<HttpConnector, Empty<Bytes>>;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn get(http: &Http, addr: SocketAddr, path: &str) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let response = http.get(format!("http://{addr}{path}").parse()?).await?;
    anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
    let body = response.into_body().collect().await?.to_bytes();
    Ok((started.elapsed().as_secs_f64() * 1000.0, body.len()))
}

/// Follows the event stream; calls `seen` with each event's data line.
fn follow(
    http: Http,
    addr: SocketAddr,
    seen: impl Fn(&str) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(uri) = format!("http://{addr}/api/v1/events?sweep=big").parse() else {
            return;
        };
        let Ok(response) = http.get(uri).await else {
            return;
        };
        let mut body = response.into_body();
        let mut pending = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                if let Some(line) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    seen(line.trim());
                }
            }
        }
    })
}

struct Player {
    client: CoordinatorClient<Channel>,
    worker_id: String,
}

impl Player {
    async fn report(&mut self, job: &pb::Job, epoch: u32) -> anyhow::Result<()> {
        let n = f64::from(epoch);
        self.client
            .report_epoch(pb::ReportEpochRequest {
                worker_id: self.worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                metrics: Some(pb::EpochMetrics {
                    epoch,
                    train_loss: 0.5 / n,
                    train_acc: 0.9,
                    val_loss: 0.4 / n,
                    val_acc: 0.95 - 0.05 / n,
                    lr: 1e-3,
                    seconds: 1.0,
                }),
            })
            .await?;
        Ok(())
    }

    /// Reports every epoch of `jobs`; returns reports per second.
    async fn ingest(&mut self, jobs: &[pb::Job]) -> anyhow::Result<f64> {
        let started = Instant::now();
        for job in jobs {
            for epoch in 1..=EPOCHS {
                self.report(job, epoch).await?;
            }
        }
        Ok((jobs.len() * EPOCHS as usize) as f64 / started.elapsed().as_secs_f64())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    config.listen = "127.0.0.1:0".parse()?;
    config.http = Some("127.0.0.1:0".parse()?);
    // The played worker sends no heartbeats: its leases must outlast the run.
    config.lease_timeout = Duration::from_secs(3600);
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone()).await?;
    let (grpc, addr) = (
        coordinator.addr,
        coordinator.http_addr.expect("the dashboard is served"),
    );
    let served = tokio::spawn(coordinator.wait());

    let mut client = CoordinatorClient::connect(format!("http://{grpc}")).await?;
    let data = sweep_e2e::mnist_dir();
    client
        .submit_sweep(pb::SubmitSweepRequest {
            name: "big".into(),
            description: String::new(),
            seeds: (1..=SEEDS).collect(),
            metric: "test_acc".into(),
            baseline: "v000".into(),
            variants: (0..VARIANTS)
                .map(|i| pb::VariantSpec {
                    name: format!("v{i:03}"),
                    config_yaml: format!(
                        "name: v{i:03}\ndata: {{data_dir: {}}}\ntraining: {{epochs: {EPOCHS}}}\n",
                        data.display()
                    ),
                    swept: Vec::new(),
                })
                .collect(),
            seed_policy: None,
            swept_keys: Vec::new(),
        })
        .await?;
    let worker_id = client
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION,
            name: "bench".into(),
            host: "localhost".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: false,
        })
        .await?
        .into_inner()
        .worker_id;
    let mut jobs = Vec::new();
    while let Some(job) = client
        .lease_job(pb::LeaseJobRequest {
            worker_id: worker_id.clone(),
        })
        .await?
        .into_inner()
        .job
    {
        jobs.push(job);
        if jobs.len() == VARIANTS * SEEDS as usize {
            break;
        }
    }
    let mut player = Player {
        client: client.clone(),
        worker_id,
    };
    let http: Http = HttpClient::builder(TokioExecutor::new()).build_http();

    // 1. Latency: one page subscribed; each report timed until its event arrives.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let log = Arc::clone(&arrived);
    let page = follow(http.clone(), addr, move |data| {
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(data)
            && event["kind"] == "epoch"
        {
            let key = format!(
                "{}/{}",
                event["job_id"].as_str().unwrap_or(""),
                event["metrics"]["epoch"]
            );
            log.lock().expect("lock").insert(key, Instant::now());
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for job in &jobs[..50] {
        for epoch in 1..=EPOCHS {
            let key = format!("{}/{epoch}", job.job_id);
            let sent = Instant::now();
            player.report(job, epoch).await?;
            let deadline = sent + Duration::from_secs(5);
            loop {
                if let Some(at) = arrived.lock().expect("lock").get(&key) {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "no event for {key} within 5 s");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    }
    page.abort();
    latencies.sort_by(f64::total_cmp);
    println!(
        "ReportEpoch → event at a subscribed page: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} reports)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );

    // 2. Ingestion without pages and with 50 following the stream, in
    // alternating rounds so that drift of the machine falls on both alike.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut rss_before, mut rss_with) = (0.0f64, 0.0f64);
    for (round, chunk) in jobs[50..].chunks(150).enumerate() {
        if round % 2 == 0 {
            without.push(player.ingest(chunk).await?);
            rss_before = rss_before.max(rss_mib());
            continue;
        }
        let mut pages = Vec::new();
        for _ in 0..50 {
            get(&http, addr, "/sweeps/big").await?;
            pages.push(follow(http.clone(), addr, |_| {}));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        with.push(player.ingest(chunk).await?);
        rss_with = rss_with.max(rss_mib());
        for page in pages {
            page.abort();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "ingestion (sequential ReportEpoch): {:.0} reports/s without pages {without:.0?}, {:.0} with 50 pages \
         following {with:.0?} ({:+.1}%)",
        mean(&without),
        mean(&with),
        100.0 * (mean(&with) / mean(&without) - 1.0)
    );
    println!(
        "peak resident memory of this process (coordinator and its clients): {rss_before:.0} MiB \
         without pages, {rss_with:.0} MiB with 50 ({:+.0} MiB)",
        rss_with - rss_before
    );

    // 3. The sweep page of 1,000 jobs × 20 epochs.
    let mut page_ms = Vec::new();
    let mut snapshot_ms = Vec::new();
    let (mut page_bytes, mut snapshot_bytes) = (0, 0);
    for _ in 0..5 {
        let (ms, bytes) = get(&http, addr, "/sweeps/big").await?;
        page_ms.push(ms);
        page_bytes = bytes;
        let (ms, bytes) = get(&http, addr, "/api/v1/sweeps/big/curves").await?;
        snapshot_ms.push(ms);
        snapshot_bytes = bytes;
    }
    page_ms.sort_by(f64::total_cmp);
    snapshot_ms.sort_by(f64::total_cmp);
    println!(
        "sweep page, {} jobs × {EPOCHS} epochs: HTML {:.0} ms / {:.0} KiB, curves \
         {:.0} ms / {:.0} KiB (medians of 5; loopback, so server time plus a copy); first load {:.0} KiB in all",
        jobs.len(),
        percentile(&page_ms, 0.5),
        page_bytes as f64 / 1024.0,
        percentile(&snapshot_ms, 0.5),
        snapshot_bytes as f64 / 1024.0,
        (page_bytes + snapshot_bytes) as f64 / 1024.0
    );

    shutdown.cancel();
    served.await??;
    Ok(())
}
