//! The coordinator under hostile and broken input: the real server on an
//! ephemeral port, driven by hand-written clients that behave like a stolen
//! worker token, a buggy worker or an attacker sending garbage. No training
//! runs here; a "worker" is just this test speaking the protocol.
//!
//! What SECURITY.md promises is checked here: roles, name validation before
//! the file system, limits, fencing by attempt, hash-checked uploads, and that
//! no request panics the server or earns `internal`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use sha2::{Digest, Sha256};
use sweep_coordinator::CoordinatorConfig;
use sweep_coordinator::auth::{ADMIN_METHODS, COORDINATOR_PREFIX, WORKER_METHODS};
use sweep_proto::auth::BearerInterceptor;
use sweep_proto::pb;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod common;
use common::*;

/// An upload: header then `data` in chunks; the hash and size declared may lie.
fn upload(
    worker_id: &str,
    job: &pb::Job,
    attempt: u32,
    name: &str,
    data: &[u8],
    declared: Option<(u64, String)>,
) -> Vec<pb::UploadArtifactRequest> {
    use pb::upload_artifact_request::Kind;
    let (size, sha256) = declared.unwrap_or((data.len() as u64, hex::encode(Sha256::digest(data))));
    let mut messages = vec![pb::UploadArtifactRequest {
        kind: Some(Kind::Header(pb::UploadArtifactHeader {
            worker_id: worker_id.into(),
            job_id: job.job_id.clone(),
            attempt,
            file: Some(pb::FileHeader {
                name: name.into(),
                size,
                sha256,
            }),
        })),
    }];
    messages.extend(data.chunks(64 << 10).map(|c| pb::UploadArtifactRequest {
        kind: Some(Kind::Data(c.to_vec())),
    }));
    messages
}

async fn send_upload(
    client: &mut Client,
    messages: Vec<pb::UploadArtifactRequest>,
) -> Result<(), Status> {
    client
        .upload_artifact(tokio_stream::iter(messages))
        .await
        .map(|_| ())
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(path.strip_prefix(base).expect("under base").to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Calls `method` with an empty request through a raw gRPC client, so that
/// every method can be tried alike. Returns the status code (Ok when the call
/// got past authentication and the handler answered).
async fn call_raw(
    channel: Channel,
    token_value: Option<&str>,
    method: &str,
    body: Vec<u8>,
) -> Code {
    let token = token_value.map(token);
    let service = InterceptedService::new(channel, BearerInterceptor::new(token.as_ref()));
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready().await.expect("ready");
    let path = format!("{COORDINATOR_PREFIX}{method}")
        .parse()
        .expect("path");
    let request = tonic::Request::new(tokio_stream::once(body));
    // Streaming in both directions fits every method's shape on the wire.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        grpc.streaming(request, path, RawCodec),
    )
    .await;
    match result.expect("answered in time") {
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.message().await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
        Err(status) => status.code(),
    }
}

/// Sends bytes as they are and reads back bytes: garbage goes out unchanged.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn all_methods() -> impl Iterator<Item = &'static str> {
    WORKER_METHODS.iter().chain(ADMIN_METHODS.iter()).copied()
}

// ---------------------------------------------------------------------------

/// SECURITY.md's table: each admin method with a worker token, and every
/// method with no token and with a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_token_gets_permission_denied_on_every_admin_call() {
    let harness = Harness::start(|_| {}).await;
    let channel = harness.channel().await;
    let mut lines = Vec::new();
    for method in ADMIN_METHODS {
        let code = call_raw(channel.clone(), Some(WORKER_TOKEN), method, Vec::new()).await;
        lines.push(format!("{method}: {code:?}"));
        assert_eq!(code, Code::PermissionDenied, "worker token on {method}");
    }
    eprintln!("worker token on admin methods:\n  {}", lines.join("\n  "));
    for method in all_methods() {
        assert_eq!(
            call_raw(channel.clone(), None, method, Vec::new()).await,
            Code::Unauthenticated,
            "no token on {method}"
        );
        assert_eq!(
            call_raw(
                channel.clone(),
                Some("worker-token-for-tests-012345678X"),
                method,
                Vec::new()
            )
            .await,
            Code::Unauthenticated,
            "wrong token on {method}"
        );
    }
    // The admin token gets past the check on every method (the handlers then
    // judge the empty request on its merits).
    for method in all_methods() {
        let code = call_raw(channel.clone(), Some(ADMIN_TOKEN), method, Vec::new()).await;
        assert!(
            !matches!(
                code,
                Code::PermissionDenied | Code::Unauthenticated | Code::Internal | Code::Unknown
            ),
            "admin on {method}: {code:?}"
        );
    }
    // And nothing was submitted or cancelled by the refused calls.
    let status = harness
        .admin()
        .await
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert!(status.sweeps.is_empty(), "{status:?}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_without_a_token() {
    let harness = Harness::start(|_| {}).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(harness.channel().await);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_without_tokens_refuses_to_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = CoordinatorConfig::new(root.path().join("state"));
    config.listen = "0.0.0.0:0".parse().expect("addr");
    let err = sweep_coordinator::start(config, CancellationToken::new())
        .await
        .err()
        .expect("refused");
    let message = err.to_string();
    assert!(message.contains("head -c 32 /dev/urandom"), "{message}");
    // Loopback without tokens stays open.
    let mut config = CoordinatorConfig::new(root.path().join("state"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    let shutdown = CancellationToken::new();
    let coordinator = sweep_coordinator::start(config, shutdown.clone())
        .await
        .expect("loopback starts");
    let mut client = CoordinatorClient::connect(format!("http://{}", coordinator.addr))
        .await
        .expect("connect");
    client
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("open on loopback");
    shutdown.cancel();
    coordinator.wait().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_rejected_and_nothing_is_written_outside_the_state_dir() {
    let harness = Harness::start(|_| {}).await;
    let mut admin = harness.admin().await;
    admin
        .submit_sweep(one_job_sweep("names", 2))
        .await
        .expect("submit");
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w").await;
    let job = lease(&mut worker, &worker_id).await;
    let before_root: BTreeSet<PathBuf> = files_under(harness.root.path())
        .into_iter()
        .filter(|p| !p.starts_with("state"))
        .collect();

    let overlong = "a".repeat(4096);
    let hostile = [
        "..",
        ".",
        "../escape.safetensors",
        "../../outside",
        "/etc/passwd",
        "/tmp/x",
        "a/b",
        "a\\b",
        "a\0b",
        "\0",
        ".hidden",
        "x..",
        "",
        overlong.as_str(),
        "é.safetensors",
        "checkpoints/../../x",
    ];
    for name in hostile {
        let err = send_upload(
            &mut worker,
            upload(&worker_id, &job, job.attempt, name, b"payload", None),
        )
        .await
        .expect_err("hostile upload name accepted");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "upload {name:?}: {err:?}"
        );
        let err = worker
            .download_artifact(pb::DownloadArtifactRequest {
                worker_id: worker_id.clone(),
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                name: name.into(),
            })
            .await
            .expect_err("hostile download name accepted");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "download {name:?}: {err:?}"
        );
        // Sweep and variant names become directories too.
        let mut sweep = one_job_sweep(name, 2);
        let err = admin
            .submit_sweep(sweep.clone())
            .await
            .expect_err("hostile sweep name accepted");
        assert_eq!(err.code(), Code::InvalidArgument, "sweep {name:?}: {err:?}");
        sweep.name = "fine".into();
        sweep.variants[0].name = name.into();
        sweep.baseline = name.into();
        let err = admin
            .submit_sweep(sweep)
            .await
            .expect_err("hostile variant name accepted");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "variant {name:?}: {err:?}"
        );
        // A worker name ends up in ids and logs; it is held to the same rule.
        let err = worker
            .register_worker(pb::RegisterWorkerRequest {
                protocol_version: PROTOCOL_VERSION,
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect_err("hostile worker name accepted");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "worker {name:?}: {err:?}"
        );
    }

    // Nothing appeared outside the state dir, nor under a hostile name inside it.
    let after_root: BTreeSet<PathBuf> = files_under(harness.root.path())
        .into_iter()
        .filter(|p| !p.starts_with("state"))
        .collect();
    assert_eq!(before_root, after_root);
    for path in files_under(&harness.state_dir) {
        let text = path.to_string_lossy();
        assert!(
            !text.contains("escape")
                && !text.contains("passwd")
                && !text.contains("outside")
                && !text.contains("fine"),
            "{text}"
        );
    }
    assert!(
        !harness
            .state_dir
            .join("names/baseline/seed-1/checkpoints/x..")
            .exists()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_uploads_are_rejected_by_hash() {
    let harness = Harness::start(|_| {}).await;
    harness
        .admin()
        .await
        .submit_sweep(one_job_sweep("uploads", 2))
        .await
        .expect("submit");
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w").await;
    let job = lease(&mut worker, &worker_id).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let good_sha = hex::encode(Sha256::digest(&data));

    // One flipped byte: the declared hash no longer matches.
    let mut flipped = data.clone();
    flipped[1234] ^= 0x40;
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &flipped,
            Some((data.len() as u64, good_sha.clone())),
        ),
    )
    .await
    .expect_err("corrupt upload accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Truncated: the stream ends early.
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &data[..100_000],
            Some((data.len() as u64, good_sha.clone())),
        ),
    )
    .await
    .expect_err("truncated upload accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Longer than declared.
    let mut longer = data.clone();
    longer.extend_from_slice(b"tail");
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &longer,
            Some((data.len() as u64, good_sha.clone())),
        ),
    )
    .await
    .expect_err("overlong upload accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A hash that is not even hex.
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &data,
            Some((data.len() as u64, "zz".repeat(32))),
        ),
    )
    .await
    .expect_err("non-hex hash accepted");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let checkpoints = harness
        .state_dir
        .join("uploads/baseline/seed-1/checkpoints");
    let placed: Vec<_> = files_under(&checkpoints).into_iter().collect();
    assert!(placed.is_empty(), "a rejected upload left {placed:?}");

    // The honest upload still goes through (staged until the attempt's
    // commit file arrives), and reads back intact.
    send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &data,
            None,
        ),
    )
    .await
    .expect("good upload");
    assert_eq!(
        std::fs::read(checkpoints.join(".staging/last.safetensors")).expect("placed"),
        data
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_attempts_and_expired_leases_cannot_touch_the_result() {
    let harness = Harness::start(|config| {
        config.lease_timeout = Duration::from_millis(600);
        config.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    harness
        .admin()
        .await
        .submit_sweep(one_job_sweep("fence", 2))
        .await
        .expect("submit");
    let mut first = harness.worker().await;
    let first_id = register(&mut first, "first").await;
    let job = lease(&mut first, &first_id).await;
    assert_eq!(job.attempt, 1);
    first
        .report_epoch(report(&first_id, &job, 1, 1))
        .await
        .expect("first epoch");

    // The first worker goes silent; its lease expires and a second takes over.
    let mut second = harness.worker().await;
    let second_id = register(&mut second, "second").await;
    let retried = lease(&mut second, &second_id).await;
    assert_eq!(
        (retried.job_id.as_str(), retried.attempt),
        (job.job_id.as_str(), 2)
    );

    // Everything the first worker sends now is refused: old attempt, the new
    // attempt number under its own id, and attempts from the future.
    for attempt in [0, 1, 2, 3, u32::MAX] {
        let refused = [
            first
                .report_epoch(report(&first_id, &job, attempt, 2))
                .await
                .err(),
            first
                .complete_job(success(&first_id, &job, attempt, 2, 0.01))
                .await
                .err(),
            send_upload(
                &mut first,
                upload(&first_id, &job, attempt, "best.safetensors", b"evil", None),
            )
            .await
            .err(),
        ];
        for status in refused {
            let status = status.expect("stale report accepted");
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "attempt {attempt}: {status:?}"
            );
        }
    }
    let hb = first
        .heartbeat(pb::HeartbeatRequest {
            worker_id: first_id.clone(),
            jobs: vec![pb::JobRef {
                job_id: job.job_id.clone(),
                attempt: 1,
            }],
        })
        .await
        .expect("heartbeat")
        .into_inner();
    assert_eq!(hb.lost, std::slice::from_ref(&job.job_id));

    // The second worker finishes; the first's late completion changes nothing.
    second
        .report_epoch(report(&second_id, &retried, 2, 1))
        .await
        .expect("epoch 1");
    second
        .report_epoch(report(&second_id, &retried, 2, 2))
        .await
        .expect("epoch 2");
    second
        .complete_job(success(&second_id, &retried, 2, 2, 0.97))
        .await
        .expect("complete");
    let late = first
        .complete_job(success(&first_id, &job, 1, 2, 0.01))
        .await
        .expect_err("late completion accepted");
    assert_eq!(late.code(), Code::FailedPrecondition);
    let late = second
        .complete_job(success(&second_id, &retried, 2, 2, 0.01))
        .await
        .expect_err("second completion accepted");
    assert_eq!(late.code(), Code::FailedPrecondition);

    let status = harness
        .admin()
        .await
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    let only = &status.jobs[0];
    assert_eq!(only.state, "succeeded");
    assert_eq!(only.test.as_ref().map(|t| t.test_acc), Some(0.97));
    assert!(
        !harness
            .state_dir
            .join("fence/baseline/seed-1/checkpoints/best.safetensors")
            .exists()
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_errors_to_the_client_not_crashes() {
    let harness = Harness::start(|config| {
        config.limits.max_workers = 3;
        config.limits.max_job_artifact_bytes = 300_000;
        config.limits.max_sweep_artifact_bytes = 10 << 20;
        config.limits.max_message_bytes = 1 << 20;
    })
    .await;
    let mut admin = harness.admin().await;
    admin
        .submit_sweep(one_job_sweep("limits", 3))
        .await
        .expect("submit");
    let mut worker = harness.worker().await;
    let worker_id = register(&mut worker, "w").await;
    let job = lease(&mut worker, &worker_id).await;

    // Metric points: epochs beyond the config's (plus slack) are refused.
    for n in 1..=3 {
        worker
            .report_epoch(report(&worker_id, &job, job.attempt, n))
            .await
            .expect("epoch");
    }
    for n in [100, 1_000_000, u32::MAX] {
        let err = worker
            .report_epoch(report(&worker_id, &job, job.attempt, n))
            .await
            .expect_err("epoch flood accepted");
        assert!(
            matches!(err.code(), Code::ResourceExhausted | Code::InvalidArgument),
            "epoch {n}: {err:?}"
        );
    }
    let err = worker
        .complete_job(success(&worker_id, &job, job.attempt, 10_000, 0.9))
        .await
        .expect_err("10,000 epochs accepted");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::InvalidArgument),
        "{err:?}"
    );

    // Checkpoint bytes per job: a declared size over the limit is refused
    // before any byte is stored, and so is the sum of the job's files.
    let big = vec![7u8; 200_000];
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "best.safetensors",
            &[],
            Some((1 << 40, "00".repeat(32))),
        ),
    )
    .await
    .expect_err("a terabyte accepted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "best.safetensors",
            &big,
            None,
        ),
    )
    .await
    .expect("first file fits");
    let err = send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "last.safetensors",
            &big,
            None,
        ),
    )
    .await
    .expect_err("job over its checkpoint budget");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Replacing a file counts its new size, not both.
    send_upload(
        &mut worker,
        upload(
            &worker_id,
            &job,
            job.attempt,
            "best.safetensors",
            &big,
            None,
        ),
    )
    .await
    .expect("replace");

    // Message size: one message over the limit is refused.
    let huge = pb::ReportEpochRequest {
        worker_id: "x".repeat(2 << 20),
        ..report(&worker_id, &job, job.attempt, 1)
    };
    let err = worker
        .report_epoch(huge)
        .await
        .expect_err("huge message accepted");
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );

    // Registered workers: the fourth live one is turned away.
    register(&mut worker, "w2").await;
    register(&mut worker, "w3").await;
    let err = worker
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION,
            name: "w4".into(),
            ..Default::default()
        })
        .await
        .expect_err("too many workers");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // Still serving.
    admin
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("alive");
    harness.stop().await;
}

/// Garbage as the body of every method: a status, never a panic or `internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_get_invalid_argument() {
    let harness = Harness::start(|_| {}).await;
    let channel = harness.channel().await;
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xff; 16],                           // invalid tags
        vec![0x08, 0xff, 0xff],                   // truncated varint
        vec![0x0a, 0x05, b'a'],                   // length past the end
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // 4 GiB length prefix
        vec![0x12, 0x02, 0xff, 0xfe],             // invalid UTF-8 in a string field
        vec![0x0d, 0x00, 0x00],                   // truncated fixed32
        vec![0x0b, 0x0c],                         // group wire types
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    let mut answered = 0;
    for method in all_methods() {
        for body in &garbage {
            let code = call_raw(channel.clone(), Some(ADMIN_TOKEN), method, body.clone()).await;
            // Some garbage happens to be a valid encoding of a message (a
            // field the message lacks is skipped); then the handler judges it.
            assert!(
                !matches!(
                    code,
                    Code::Internal | Code::Unknown | Code::Unavailable | Code::Unimplemented
                ),
                "{method} with {body:?}: {code:?}"
            );
            answered += 1;
        }
        // A length running past the end is malformed for every message type.
        let code = call_raw(
            channel.clone(),
            Some(ADMIN_TOKEN),
            method,
            vec![0x0a, 0x05, b'a'],
        )
        .await;
        assert_eq!(
            code,
            Code::InvalidArgument,
            "{method}: a truncated body is not a {method} request"
        );
    }
    eprintln!("garbage bodies answered: {answered}");
    harness
        .admin()
        .await
        .get_status(pb::GetStatusRequest::default())
        .await
        .expect("still serving");
    harness.stop().await;
}

/// Arbitrary field values through the worker and admin handlers: every
/// answer is a status a client can act on, and the server keeps serving.
#[test]
fn handlers_answer_arbitrary_requests_with_a_sane_status() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

    let cases: u32 = std::env::var("SWEEP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (harness, worker_id, job) = runtime.block_on(async {
        let harness = Harness::start(|config| {
            config.limits.max_workers = 64;
        })
        .await;
        harness
            .admin()
            .await
            .submit_sweep(one_job_sweep("fuzz", 3))
            .await
            .expect("submit");
        let mut worker = harness.worker().await;
        let worker_id = register(&mut worker, "w").await;
        let job = lease(&mut worker, &worker_id).await;
        (harness, worker_id, job)
    });
    let (worker, admin) =
        runtime.block_on(async { (harness.worker().await, harness.admin().await) });
    let ran = Arc::new(AtomicUsize::new(0));

    // Strings: the real ids, empty, hostile and random.
    let id = prop_oneof![
        Just(worker_id.clone()),
        Just(job.job_id.clone()),
        Just(String::new()),
        Just("../../etc/passwd".to_string()),
        "\\PC{0,40}",
    ];
    let float = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0)
    ];
    let epoch = (
        any::<u32>(),
        float.clone(),
        float.clone(),
        float.clone(),
        float.clone(),
        float.clone(),
        float,
    )
        .prop_map(
            |(epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds)| pb::EpochMetrics {
                epoch: epoch % 8,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                lr,
                seconds,
            },
        );
    let attempt = prop_oneof![Just(job.attempt), any::<u32>()];
    let request = prop_oneof![
        (
            id.clone(),
            id.clone(),
            attempt.clone(),
            prop::option::of(epoch.clone())
        )
            .prop_map(
                |(w, j, attempt, metrics)| Call::Report(pb::ReportEpochRequest {
                    worker_id: w,
                    job_id: j,
                    attempt,
                    metrics
                })
            ),
        (
            id.clone(),
            id.clone(),
            attempt.clone(),
            prop::collection::vec(epoch, 0..6),
            any::<u32>(),
            any::<bool>(),
            "\\PC{0,100}"
        )
            .prop_map(|(w, j, attempt, epochs, best, fail, message)| {
                use pb::complete_job_request::Outcome;
                let outcome = if fail {
                    Outcome::Failure(pb::Failure {
                        message,
                        permanent: best % 2 == 0,
                    })
                } else {
                    Outcome::Metrics(pb::RunMetrics {
                        epochs,
                        best_epoch: best % 8,
                        test: Some(pb::TestMetrics {
                            test_loss: f64::NAN,
                            test_acc: best as f64,
                        }),
                        ..Default::default()
                    })
                };
                Call::Complete(pb::CompleteJobRequest {
                    worker_id: w,
                    job_id: j,
                    attempt,
                    lease_next: false,
                    outcome: Some(outcome),
                })
            }),
        (
            id.clone(),
            prop::collection::vec((id.clone(), attempt.clone()), 0..4)
        )
            .prop_map(|(w, jobs)| Call::Heartbeat(pb::HeartbeatRequest {
                worker_id: w,
                jobs: jobs
                    .into_iter()
                    .map(|(job_id, attempt)| pb::JobRef { job_id, attempt })
                    .collect()
            })),
        (id.clone(), id.clone(), attempt, id.clone()).prop_map(|(w, j, attempt, name)| {
            Call::Download(pb::DownloadArtifactRequest {
                worker_id: w,
                job_id: j,
                attempt,
                name,
            })
        }),
        (
            any::<u32>(),
            id.clone(),
            "\\PC{0,20}",
            "\\PC{0,10}",
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(v, name, host, device, threads, slots)| Call::Register(
                pb::RegisterWorkerRequest {
                    protocol_version: v % 3,
                    name,
                    host,
                    device,
                    threads,
                    slots,
                    allow_commands: false,
                }
            )),
        (id.clone(), "\\PC{0,8}")
            .prop_map(|(sweep, format)| Call::Results(pb::GetResultsRequest { sweep, format })),
        id.clone()
            .prop_map(|job_id| Call::Logs(pb::GetJobLogsRequest { job_id })),
        (
            id.clone(),
            prop::collection::vec(any::<u64>(), 0..3),
            "\\PC{0,200}",
            id
        )
            .prop_map(|(name, seeds, yaml, variant)| Call::Submit(
                pb::SubmitSweepRequest {
                    name,
                    seeds,
                    metric: "test_acc".into(),
                    baseline: variant.clone(),
                    description: String::new(),
                    variants: vec![pb::VariantSpec {
                        name: variant,
                        config_yaml: yaml,
                        swept: Vec::new(),
                    }],
                    seed_policy: None,
                    swept_keys: Vec::new(),
                }
            )),
    ];

    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let counter = Arc::clone(&ran);
    runner
        .run(&request, |call| {
            counter.fetch_add(1, Ordering::SeqCst);
            let (mut worker, mut admin) = (worker.clone(), admin.clone());
            let code = runtime.block_on(async move {
                let result = match call {
                    Call::Report(r) => worker.report_epoch(r).await.map(|_| ()),
                    Call::Complete(r) => worker.complete_job(r).await.map(|_| ()),
                    Call::Heartbeat(r) => worker.heartbeat(r).await.map(|_| ()),
                    Call::Download(r) => match worker.download_artifact(r).await {
                        Ok(response) => response.into_inner().message().await.map(|_| ()),
                        Err(status) => Err(status),
                    },
                    Call::Register(r) => worker.register_worker(r).await.map(|_| ()),
                    Call::Results(r) => admin.get_results(r).await.map(|_| ()),
                    Call::Logs(r) => admin.get_job_logs(r).await.map(|_| ()),
                    Call::Submit(r) => admin.submit_sweep(r).await.map(|_| ()),
                };
                result.err().map_or(Code::Ok, |status| status.code())
            });
            prop_assert!(
                matches!(
                    code,
                    Code::Ok
                        | Code::InvalidArgument
                        | Code::NotFound
                        | Code::FailedPrecondition
                        | Code::ResourceExhausted
                        | Code::AlreadyExists
                ),
                "answered {:?}",
                code
            );
            Ok(())
        })
        .expect("every request got a sane status");
    let ran = ran.load(Ordering::SeqCst);
    eprintln!("request handler fuzzing: {ran} cases");
    assert!(ran >= cases as usize);
    runtime.block_on(async move {
        let mut admin = harness.admin().await;
        admin
            .get_status(pb::GetStatusRequest::default())
            .await
            .expect("still serving");
        admin
            .get_results(pb::GetResultsRequest {
                sweep: "fuzz".into(),
                format: "json".into(),
            })
            .await
            .expect("results still render");
        harness.stop().await;
    });
}

#[derive(Debug, Clone)]
enum Call {
    Report(pb::ReportEpochRequest),
    Complete(pb::CompleteJobRequest),
    Heartbeat(pb::HeartbeatRequest),
    Download(pb::DownloadArtifactRequest),
    Register(pb::RegisterWorkerRequest),
    Results(pb::GetResultsRequest),
    Logs(pb::GetJobLogsRequest),
    Submit(pb::SubmitSweepRequest),
}
