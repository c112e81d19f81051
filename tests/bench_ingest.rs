//! Coordinator ingestion figures for BENCHMARKS.md: metric reports per second
//! and checkpoint upload throughput over loopback, against the real
//! coordinator (in-process, on 127.0.0.1:0) from one client playing a worker.
//!
//!     cargo run --release -p sweep-e2e --example ingest [EPOCHS] [UPLOAD_MIB]

use std::time::Instant;

use sha2::{Digest, Sha256};
use sweep_coordinator::CoordinatorConfig;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION, pb};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let epochs: u32 = args.next().map_or(Ok(2000), |a| a.parse())?;
    let upload_mib: usize = args.next().map_or(Ok(256), |a| a.parse())?;

    let root = tempfile::tempdir()?;
    let sweep = root.path().join("bench.yaml");
    let data = sweep_e2e::mnist_dir();
    std::fs::write(
        root.path().join("base.yaml"),
        format!(
            "name: base\ndata: {{data_dir: {}}}\ntraining: {{epochs: {epochs}}}\n",
            data.display()
        ),
    )?;
    std::fs::write(&sweep, "name: bench\nbase: base.yaml\nseeds: [1]\n")?;
    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    config.sweep = Some(sweep);
    config.listen = "127.0.0.1:0".parse()?;
    let coordinator = sweep_coordinator::start(config, CancellationToken::new()).await?;
    let mut client = CoordinatorClient::connect(format!("http://{}", coordinator.addr)).await?;

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
    let job = client
        .lease_job(pb::LeaseJobRequest {
            worker_id: worker_id.clone(),
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("no job leased"))?;

    // Metric ingestion: one ReportEpoch per epoch, each committed to SQLite,
    // appended to metrics.json's source and to TensorBoard before it is acknowledged.
    let started = Instant::now();
    for epoch in 1..=epochs {
        let metrics = pb::EpochMetrics {
            epoch,
            train_loss: 0.5,
            train_acc: 0.9,
            val_loss: 0.4,
            val_acc: 0.91,
            lr: 1e-3,
            seconds: 1.0,
        };
        client
            .report_epoch(pb::ReportEpochRequest {
                worker_id: worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                metrics: Some(metrics),
            })
            .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "metric ingestion: {epochs} epoch reports in {seconds:.2} s = {:.0} reports/s (sequential, one client)",
        f64::from(epochs) / seconds
    );

    // Checkpoint upload: one file in 1 MiB chunks, SHA-256 checked on arrival.
    let bytes: Vec<u8> = (0..upload_mib << 20)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let header = pb::UploadArtifactHeader {
        worker_id: worker_id.clone(),
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        file: Some(pb::FileHeader {
            name: "last.safetensors".into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
        }),
    };
    use pb::upload_artifact_request::Kind;
    let mut messages = vec![pb::UploadArtifactRequest {
        kind: Some(Kind::Header(header)),
    }];
    messages.extend(
        bytes
            .chunks(sweep_proto::CHUNK_SIZE)
            .map(|c| pb::UploadArtifactRequest {
                kind: Some(Kind::Data(c.to_vec())),
            }),
    );
    let started = Instant::now();
    client.upload_artifact(tokio_stream::iter(messages)).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "checkpoint upload: {upload_mib} MiB in {seconds:.2} s = {:.0} MiB/s over loopback (hashed and written to disk)",
        upload_mib as f64 / seconds
    );
    Ok(())
}
