//! How workers get jobs besides their first LeaseJob call: a completion that
//! asks for the next job gets it in its answer, and an idle worker's long
//! poll is answered as soon as a job becomes pending again (a transient
//! failure, an expired lease), within that one call, not at the worker's next
//! poll. The coordinator wakes idle polls only for such changes (not at every
//! epoch report), so each path that queues a job must say so.

mod common;

use std::time::Duration;

use common::{Harness, failure, lease, one_job_sweep, register, report, success};
use sweep_proto::pb;

/// Starts worker `name`'s LeaseJob call in the background once nothing is
/// pending, and gives it time to start waiting.
async fn idle_poll(
    harness: &Harness,
    name: &str,
) -> tokio::task::JoinHandle<(String, Option<pb::Job>)> {
    let mut client = harness.worker().await;
    let worker = register(&mut client, name).await;
    let poll = tokio::spawn(async move {
        let job = client
            .lease_job(pb::LeaseJobRequest {
                worker_id: worker.clone(),
            })
            .await
            .expect("lease")
            .into_inner()
            .job;
        (worker, job)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "nothing is pending: the poll must wait"
    );
    poll
}

#[tokio::test]
async fn a_waiting_poll_gets_the_job_a_transient_failure_returns() {
    let harness = Harness::start(|_| {}).await;
    let mut admin = harness.admin().await;
    admin
        .submit_sweep(one_job_sweep("retry", 2))
        .await
        .expect("submit");
    let mut first = harness.worker().await;
    let a = register(&mut first, "a").await;
    let job = lease(&mut first, &a).await;
    let poll = idle_poll(&harness, "b").await;

    // Progress of the job held elsewhere queues nothing.
    first
        .report_epoch(report(&a, &job, job.attempt, 1))
        .await
        .expect("epoch");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "an epoch report leased nothing");

    first
        .complete_job(failure(&a, &job, "out of memory", false))
        .await
        .expect("complete");
    let (_, retried) = poll.await.expect("poll");
    let retried = retried.expect("the waiting poll is answered with the retried job");
    assert_eq!(retried.job_id, job.job_id);
    assert_eq!(retried.attempt, job.attempt + 1);
    harness.stop().await;
}

#[tokio::test]
async fn a_waiting_poll_gets_the_job_of_an_expired_lease() {
    let harness = Harness::start(|config| {
        config.lease_timeout = Duration::from_secs(1);
        config.heartbeat_interval = Duration::from_millis(250);
    })
    .await;
    let mut admin = harness.admin().await;
    admin
        .submit_sweep(one_job_sweep("expiry", 2))
        .await
        .expect("submit");
    // Worker a leases the job and goes silent: no heartbeat extends it.
    let mut silent = harness.worker().await;
    let a = register(&mut silent, "a").await;
    let job = lease(&mut silent, &a).await;
    let poll = idle_poll(&harness, "b").await;
    // The lease expires after 1 s, well within the poll's own wait.
    let (b, requeued) = poll.await.expect("poll");
    let requeued = requeued.expect("the waiting poll is answered with the expired job");
    assert_eq!(requeued.job_id, job.job_id);
    assert_eq!(requeued.attempt, job.attempt + 1);
    let status = admin
        .get_status(pb::GetStatusRequest {
            sweep: "expiry".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.jobs[0].worker, b);
    harness.stop().await;
}

#[tokio::test]
async fn a_completion_that_asks_gets_the_next_job_in_its_answer() {
    let harness = Harness::start(|_| {}).await;
    let mut admin = harness.admin().await;
    let mut sweep = one_job_sweep("next", 1);
    sweep.seeds = vec![1, 2];
    admin.submit_sweep(sweep).await.expect("submit");
    let mut client = harness.worker().await;
    let a = register(&mut client, "a").await;
    let first = lease(&mut client, &a).await;

    let mut done = success(&a, &first, first.attempt, 1, 0.9);
    done.lease_next = true;
    let second = client
        .complete_job(done)
        .await
        .expect("complete")
        .into_inner()
        .next
        .expect("the other seed, leased with the completion");
    assert_ne!(second.job_id, first.job_id);
    assert_eq!(second.attempt, 1);
    let status = admin
        .get_status(pb::GetStatusRequest {
            sweep: "next".into(),
        })
        .await
        .expect("status")
        .into_inner();
    let held = status
        .jobs
        .iter()
        .find(|j| j.job_id == second.job_id)
        .expect("the second job");
    assert_eq!(
        (held.state.as_str(), held.worker.as_str()),
        ("leased", a.as_str())
    );

    // The lease is a real one: its completion is taken, and with nothing
    // pending the answer carries no job.
    let mut done = success(&a, &second, second.attempt, 1, 0.8);
    done.lease_next = true;
    let answer = client
        .complete_job(done)
        .await
        .expect("complete")
        .into_inner();
    assert!(answer.next.is_none(), "nothing was pending: {answer:?}");
    let results = admin
        .get_results(pb::GetResultsRequest {
            sweep: "next".into(),
            format: "json".into(),
        })
        .await
        .expect("results")
        .into_inner();
    assert_eq!(results.pending, 0);
    harness.stop().await;
}
