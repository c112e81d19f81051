//! Cancelling a sweep reaches its running job within a heartbeat: the worker
//! stops training, the job ends cancelled, and the sweep counts as ended.

use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_proto::CoordinatorClient;
use sweep_proto::pb;
use tokio_util::sync::CancellationToken;

const HEARTBEAT: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_a_running_job_within_a_heartbeat() {
    let root = tempfile::tempdir().expect("tempdir");
    let sweep = sweep_e2e::TinySweep {
        name: "long",
        seeds: &[3],
        epochs: 1000,
        ..Default::default()
    }
    .write(&root.path().join("long"));

    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    config.sweep = Some(sweep);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.local_workers = 1;
    config.worker_binary = Some(sweep_e2e::release_bin_dir().join("sweep-worker"));
    config.local_worker_threads = Some(1);
    config.lease_timeout = Duration::from_secs(5);
    config.heartbeat_interval = HEARTBEAT;
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let mut client = CoordinatorClient::connect(format!("http://{}", coordinator.addr))
        .await
        .expect("connect");
    let served = tokio::spawn(coordinator.wait());

    let status = sweep_e2e::wait_for_status(
        &mut client,
        "the job's first epoch",
        Duration::from_secs(120),
        |status| status.jobs.first().is_some_and(|j| j.epoch >= 1),
    )
    .await;
    let job_id = status.jobs[0].job_id.clone();
    let cancelled = client
        .cancel(pb::CancelRequest {
            target: Some(pb::cancel_request::Target::Sweep("long".into())),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.cancelled, 1);

    let epochs =
        |logs: &pb::GetJobLogsResponse| logs.events.iter().filter(|e| e.kind == "epoch").count();
    // A heartbeat carries the word; give it two, then the epoch in flight may
    // still end, but no further one may start.
    tokio::time::sleep(HEARTBEAT * 2).await;
    let before = client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("logs")
        .into_inner();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = client
        .get_job_logs(pb::GetJobLogsRequest {
            job_id: job_id.clone(),
        })
        .await
        .expect("logs")
        .into_inner();
    // Epoch reports after the cancellation are refused (the job is no longer
    // leased), so the log cannot grow at all.
    assert_eq!(epochs(&before), epochs(&after), "{:?}", after.events);

    let status = client
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.jobs[0].state, "cancelled");
    assert!(status.sweeps[0].done);
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("workers")
        .into_inner();
    assert!(
        workers.workers.iter().all(|w| w.jobs.is_empty()),
        "{workers:?}"
    );

    shutdown.cancel();
    served.await.expect("join").expect("coordinator");
}
