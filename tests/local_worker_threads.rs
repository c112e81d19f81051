//! Local workers split the machine's cores by default: two
//! `--local-workers` without `--local-worker-threads` each report and use
//! max(1, cores / 2) threads, a config's own `threads` still wins, and the
//! count reaches `ListWorkers` (what `sweepctl workers` and the dashboard
//! show) and each attempt's provenance. Thread counts only: the time it
//! saves is measured by the `threads` example (BENCHMARKS.md), never asserted.

use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_proto::CoordinatorClient;
use sweep_proto::pb;
use tokio_util::sync::CancellationToken;

/// Generous: two workers train four one-epoch jobs on 300 images in seconds.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(600);

/// What the config of the `pinned` variant asks for.
const PINNED_THREADS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_workers_split_the_cores_unless_the_config_says() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = CoordinatorConfig::new(root.path().join("runs"));
    // The base leaves `threads` unset; the variant `pinned` sets it.
    let pinned = format!("training: {{threads: {PINNED_THREADS}}}\n");
    config.sweep = Some(
        sweep_e2e::TinySweep {
            name: "split",
            epochs: 1,
            hidden: 16,
            subset: (300, 100),
            threads: None,
            variants: &[("pinned", &pinned)],
            ..Default::default()
        }
        .write(&root.path().join("split")),
    );
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.local_workers = 2;
    config.worker_binary = Some(sweep_e2e::release_bin_dir().join("sweep-worker"));
    config.heartbeat_interval = Duration::from_millis(500);
    let expected = sweep_core::cores::share(sweep_core::cores::available(), 2) as u32;

    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("start");
    let addr = coordinator.addr;
    let served = tokio::spawn(coordinator.wait());
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let status = sweep_e2e::wait_for_status(
        &mut client,
        "the sweep",
        SWEEP_TIMEOUT,
        sweep_e2e::all_sweeps_done,
    )
    .await;
    assert_eq!(status.sweeps[0].succeeded, 4, "{status:?}");

    // What `sweepctl workers` and the dashboard's workers page show: the real
    // count, never 0 ("libtorch's default", as it was before).
    let workers = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("workers")
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 2, "{workers:?}");
    for worker in &workers {
        assert_eq!(worker.threads, expected, "{worker:?}");
    }

    // What each job ran with: the share, or its config's own count.
    for job in &status.jobs {
        let provenance = client
            .get_provenance(pb::GetProvenanceRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("provenance")
            .into_inner();
        let want = if job.variant == "pinned" {
            PINNED_THREADS
        } else {
            expected
        };
        assert_eq!(provenance.attempts.len(), 1, "{provenance:?}");
        assert_eq!(provenance.attempts[0].threads, want, "{provenance:?}");
    }

    shutdown.cancel();
    served.await.expect("join").expect("coordinator");
}
