//! What the coordinator's integration tests share: a real coordinator on an
//! ephemeral port with both tokens, and a "worker" that is just the test
//! speaking the protocol (no training runs).

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sweep_coordinator::CoordinatorConfig;
use sweep_core::token::Token;
use sweep_proto::auth::BearerInterceptor;
use sweep_proto::pb;
use sweep_proto::{CoordinatorClient, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const WORKER_TOKEN: &str = "worker-token-for-tests-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

pub type Client = CoordinatorClient<InterceptedService<Channel, BearerInterceptor>>;

/// A coordinator with both tokens, serving from a state dir inside `root`.
pub struct Harness {
    pub root: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub addr: std::net::SocketAddr,
    /// The dashboard, when the test asked for it (`config.http`).
    pub http_addr: Option<std::net::SocketAddr>,
    pub shutdown: CancellationToken,
    pub served: tokio::task::JoinHandle<sweep_coordinator::Result<()>>,
}

impl Harness {
    pub async fn start(tweak: impl FnOnce(&mut CoordinatorConfig)) -> Harness {
        let root = tempfile::tempdir().expect("tempdir");
        let state_dir = root.path().join("state");
        let mut config = CoordinatorConfig::new(state_dir.clone());
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.worker_token = Some(token(WORKER_TOKEN));
        config.admin_token = Some(token(ADMIN_TOKEN));
        config.lease_timeout = Duration::from_secs(30);
        config.heartbeat_interval = Duration::from_secs(5);
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let coordinator = sweep_coordinator::start(config, shutdown.clone())
            .await
            .expect("start");
        let addr = coordinator.addr;
        let http_addr = coordinator.http_addr;
        let served = tokio::spawn(coordinator.wait());
        Harness {
            root,
            state_dir,
            addr,
            http_addr,
            shutdown,
            served,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self, token_value: Option<&str>) -> Client {
        let token = token_value.map(token);
        CoordinatorClient::with_interceptor(
            self.channel().await,
            BearerInterceptor::new(token.as_ref()),
        )
        .max_decoding_message_size(64 << 20)
    }

    pub async fn worker(&self) -> Client {
        self.client(Some(WORKER_TOKEN)).await
    }

    pub async fn admin(&self) -> Client {
        self.client(Some(ADMIN_TOKEN)).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.served.await.expect("join").expect("served cleanly");
    }
}

pub fn token(value: &str) -> Token {
    Token::new(value, "test").expect("token")
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/mnist")
        .canonicalize()
        .expect("data/mnist")
}

pub fn config_yaml(epochs: u32) -> String {
    format!(
        "name: base\nseed: 1\n\
         model: {{type: fc, input_size: 784, hidden_sizes: [8], num_classes: 10, dropout: 0.2}}\n\
         data: {{dataset: mnist, data_dir: {}, train_split: 0.8, batch_size: 64, subset: {{train: 100, test: 100}}}}\n\
         training: {{epochs: {epochs}, learning_rate: 0.001, optimizer: adam, threads: 1}}\n",
        data_dir().display()
    )
}

/// A sweep of one job (one variant, one seed) with `epochs` epochs.
pub fn one_job_sweep(name: &str, epochs: u32) -> pb::SubmitSweepRequest {
    pb::SubmitSweepRequest {
        name: name.into(),
        description: String::new(),
        seeds: vec![1],
        metric: "test_acc".into(),
        baseline: "baseline".into(),
        variants: vec![pb::VariantSpec {
            name: "baseline".into(),
            config_yaml: config_yaml(epochs),
            swept: Vec::new(),
        }],
        seed_policy: None,
        swept_keys: Vec::new(),
    }
}

pub async fn register(client: &mut Client, name: &str) -> String {
    client
        .register_worker(pb::RegisterWorkerRequest {
            protocol_version: PROTOCOL_VERSION,
            name: name.into(),
            host: "test".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: false,
        })
        .await
        .expect("register")
        .into_inner()
        .worker_id
}

pub async fn lease(client: &mut Client, worker_id: &str) -> pb::Job {
    client
        .lease_job(pb::LeaseJobRequest {
            worker_id: worker_id.into(),
        })
        .await
        .expect("lease")
        .into_inner()
        .job
        .expect("a job")
}

pub fn epoch(n: u32) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch: n,
        train_loss: 1.0 / n as f64,
        train_acc: 0.5,
        val_loss: 1.0,
        val_acc: 0.5,
        lr: 0.001,
        seconds: 1.0,
    }
}

pub fn report(worker_id: &str, job: &pb::Job, attempt: u32, n: u32) -> pb::ReportEpochRequest {
    pb::ReportEpochRequest {
        worker_id: worker_id.into(),
        job_id: job.job_id.clone(),
        attempt,
        metrics: Some(epoch(n)),
    }
}

pub fn success(
    worker_id: &str,
    job: &pb::Job,
    attempt: u32,
    epochs: u32,
    test_acc: f64,
) -> pb::CompleteJobRequest {
    pb::CompleteJobRequest {
        worker_id: worker_id.into(),
        job_id: job.job_id.clone(),
        attempt,
        lease_next: false,
        outcome: Some(pb::complete_job_request::Outcome::Metrics(pb::RunMetrics {
            epochs: (1..=epochs).map(epoch).collect(),
            best_epoch: epochs,
            best_val_loss: Some(1.0),
            best_val_acc: Some(0.5),
            stopped_early: false,
            train_seconds: 1.0,
            test: Some(pb::TestMetrics {
                test_loss: 1.0,
                test_acc,
            }),
        })),
    }
}

/// A failed attempt of `job`: retried unless `permanent`.
pub fn failure(
    worker_id: &str,
    job: &pb::Job,
    message: &str,
    permanent: bool,
) -> pb::CompleteJobRequest {
    pb::CompleteJobRequest {
        worker_id: worker_id.into(),
        job_id: job.job_id.clone(),
        attempt: job.attempt,
        lease_next: false,
        outcome: Some(pb::complete_job_request::Outcome::Failure(pb::Failure {
            message: message.into(),
            permanent,
        })),
    }
}
