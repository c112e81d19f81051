//! One leased job: prepare its run directory (downloading the coordinator's
//! checkpoints to resume, fetching the dataset if missing), train it on a
//! dedicated thread, and stream its epochs, checkpoints, the analysis of its
//! best checkpoint (`analysis/` files) and its outcome back.
//!
//! The training thread talks to the async side through a small bounded
//! channel: each epoch's metrics and checkpoint bytes (read right after the
//! trainer wrote them, so a later epoch cannot overwrite them mid-upload),
//! then the outcome. The async side reports in order and stops training when
//! the coordinator fences this attempt off.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sweep_core::command::JobConfig;
use sweep_core::config::{DatasetKind, ExperimentConfig};
use sweep_core::lease::{JobFailure, LeasedJob};
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_proto::pb;
use sweep_train::checkpoint::Checkpoint;
use sweep_train::{Dataset, TrainError, TrainHooks};
use tokio::sync::mpsc;
use tonic::{Code, Status};

use crate::transfer::{self, TransferError};
use crate::{Ctx, Held};

/// Epochs that may wait for upload before training pauses: a little slack for
/// a slow link, without piling up checkpoints in memory while the coordinator
/// is away.
const EPOCH_QUEUE: usize = 2;

/// Marker written once a fetched dataset is complete.
const DATASET_COMPLETE: &str = "COMPLETE";

enum Msg {
    Epoch {
        metrics: EpochMetrics,
        files: Vec<(String, Vec<u8>)>,
    },
    /// The outcome, and the analysis files (names inside `analysis/`) to
    /// upload before it.
    Done(Result<RunMetrics, TrainError>, Vec<(String, Vec<u8>)>),
}

/// Why a job could not even start.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("{0}")]
    Permanent(String),
    #[error(transparent)]
    Transfer(#[from] TransferError),
}

impl From<Status> for PrepareError {
    fn from(status: Status) -> Self {
        PrepareError::Transfer(status.into())
    }
}

struct Hooks {
    tx: mpsc::Sender<Msg>,
    stop: Arc<AtomicBool>,
}

impl TrainHooks for Hooks {
    fn on_epoch(&mut self, metrics: &EpochMetrics, checkpoint: &Checkpoint) {
        let mut files = Vec::with_capacity(checkpoint.files.len());
        for name in &checkpoint.files {
            match std::fs::read(checkpoint.dir.join(name)) {
                Ok(bytes) => files.push((name.to_string(), bytes)),
                // The epoch's metrics still go; the next epoch's checkpoint
                // replaces this one.
                Err(err) => {
                    tracing::error!(file = name, error = %err, "cannot read a checkpoint file to upload");
                    files.clear();
                    break;
                }
            }
        }
        // Fails only when the async side is gone (worker stopping).
        let _ = self.tx.blocking_send(Msg::Epoch {
            metrics: *metrics,
            files,
        });
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Runs one leased job to its end (or until stopped).
pub(crate) async fn run(ctx: &Ctx, job: LeasedJob) {
    let stop = Arc::new(AtomicBool::new(false));
    let superseded = ctx.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
        job.id.clone(),
        Held {
            attempt: job.attempt,
            stop: Arc::clone(&stop),
        },
    );
    // An older attempt of the same job still here: the coordinator has moved
    // on from it (its reports are refused), so it must not train on.
    if let Some(older) = superseded {
        older.stop.store(true, Ordering::SeqCst);
    }
    let on_shutdown = {
        let (token, stop) = (ctx.shutdown.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            token.cancelled().await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    tracing::info!(job = %job.id, attempt = job.attempt, resume = job.resumes(), "job started");
    run_leased(ctx, &job, &stop).await;
    on_shutdown.abort();
    let mut held = ctx.held.lock().unwrap_or_else(|p| p.into_inner());
    // Only this attempt's entry: a newer one of the same job keeps its own.
    if held.get(&job.id).is_some_and(|h| h.attempt == job.attempt) {
        held.remove(&job.id);
    }
}

async fn run_leased(ctx: &Ctx, job: &LeasedJob, stop: &Arc<AtomicBool>) {
    // A command job (the user's program) runs in its own module.
    if let Ok(JobConfig::Command(config)) =
        JobConfig::from_yaml(&job.config_yaml, Path::new("leased config"))
    {
        crate::command::run(ctx, job, config, stop).await;
        return;
    }
    let (config, run_dir, resume) = match prepare(ctx, job).await {
        Ok(prepared) => prepared,
        Err(PrepareError::Permanent(message)) => {
            fail(ctx, job, message, true).await;
            return;
        }
        Err(PrepareError::Transfer(TransferError::Status(status)))
            if is_fenced(&status) || ctx.shutdown.is_cancelled() =>
        {
            tracing::warn!(job = %job.id, error = %status.message(), "job abandoned before it started");
            return;
        }
        // The coordinator says the job itself is wrong (its dataset is
        // nowhere): another attempt would meet the same answer.
        Err(PrepareError::Transfer(TransferError::Status(status)))
            if status.code() == Code::InvalidArgument =>
        {
            let message = format!("preparing the job: {}", status.message());
            fail(ctx, job, message, true).await;
            return;
        }
        Err(err) => {
            let message = format!("preparing the job: {err}");
            fail(ctx, job, message, false).await;
            return;
        }
    };

    let (name, described) = (ctx.config.name.clone(), config.clone());
    crate::provenance::record(ctx, job, move || {
        crate::provenance::builtin(&name, &described)
    })
    .await;

    let (tx, mut rx) = mpsc::channel(EPOCH_QUEUE);
    let hooks_stop = Arc::clone(stop);
    let simulate = ctx.config.simulate_jobs;
    let thread_name = format!("train-{}", job.id);
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut hooks = Hooks {
                tx: tx.clone(),
                stop: hooks_stop,
            };
            let mut analysis = Vec::new();
            let result = match simulate {
                Some(duration) => Ok(simulated_run(&config, duration)),
                // A libtorch error that tch turns into a panic must fail the
                // job, not leave it leased until its lease runs out.
                None => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    train_blocking(&config, &run_dir, resume, &mut hooks, &mut analysis)
                }))
                .unwrap_or_else(|panic| Err(TrainError::Panicked(panic_message(panic.as_ref())))),
            };
            let _ = tx.blocking_send(Msg::Done(result, analysis));
        });
    if let Err(err) = spawned {
        let message = format!("cannot start a training thread: {err}");
        fail(ctx, job, message, false).await;
        return;
    }

    // Set once this attempt is fenced off: nothing more is reported.
    let mut fenced = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Epoch { metrics, files } => {
                if fenced || ctx.shutdown.is_cancelled() {
                    continue;
                }
                if let Err(status) = report_epoch(ctx, job, metrics, files).await {
                    if !ctx.shutdown.is_cancelled() {
                        tracing::warn!(job = %job.id, error = %status.message(), "coordinator refused a report; stopping the job");
                    }
                    fenced = true;
                    stop.store(true, Ordering::SeqCst);
                }
            }
            Msg::Done(result, analysis) => {
                if fenced {
                    break;
                }
                if result.is_ok()
                    && !analysis.is_empty()
                    && let Err(status) = upload_analysis(ctx, job, &analysis).await
                {
                    // The job's result stands without its analysis.
                    tracing::warn!(job = %job.id, error = %status.message(), "uploading the analysis failed");
                }
                match result {
                    Ok(metrics) => {
                        tracing::info!(job = %job.id, test_acc = metrics.test.map(|t| t.test_acc), "job trained");
                        complete(
                            ctx,
                            job,
                            pb::complete_job_request::Outcome::Metrics(metrics.into()),
                        )
                        .await;
                    }
                    // Cancelled or lease lost: the coordinator knows already.
                    Err(TrainError::Stopped) => {
                        tracing::info!(job = %job.id, "job stopped");
                    }
                    Err(err) => {
                        tracing::error!(job = %job.id, error = %err, permanent = err.is_permanent(), "job failed");
                        fail(ctx, job, err.to_string(), err.is_permanent()).await;
                    }
                }
                break;
            }
        }
    }
}

/// Loads the data and trains; a resume from a checkpoint that does not verify
/// (an upload cut short) falls back to a fresh start instead of failing forever.
fn train_blocking(
    config: &ExperimentConfig,
    run_dir: &Path,
    resume: bool,
    hooks: &mut Hooks,
    analysis: &mut Vec<(String, Vec<u8>)>,
) -> Result<RunMetrics, TrainError> {
    let data_dir = config
        .data
        .data_dir
        .clone()
        .unwrap_or_else(|| sweep_train::data::default_data_dir(config.data.dataset));
    let dataset = Dataset::load(config.data.dataset, &data_dir)?;
    let metrics = match sweep_train::train(config, &dataset, run_dir, resume, hooks) {
        Err(TrainError::Checkpoint { path, reason }) if resume => {
            tracing::warn!(path = %path.display(), reason, "cannot resume from the downloaded checkpoint; starting over");
            let dir = run_dir.join("checkpoints");
            std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Io { path: dir, source })?;
            sweep_train::train(config, &dataset, run_dir, false, hooks)
        }
        other => other,
    }?;
    *analysis = analyze_blocking(config, &dataset, run_dir);
    Ok(metrics)
}

/// Analyses the finished run's best checkpoint (sweep_train::analysis) and
/// reads the files back for upload. A failure, even a panic, costs only the
/// analysis, never the trained result.
fn analyze_blocking(
    config: &ExperimentConfig,
    dataset: &Dataset,
    run_dir: &Path,
) -> Vec<(String, Vec<u8>)> {
    let analysed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sweep_train::analysis::analyze(config, dataset, run_dir)
    }));
    let output = match analysed {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            tracing::warn!(run = %run_dir.display(), error = %err, "the analysis of the run failed");
            return Vec::new();
        }
        Err(panic) => {
            tracing::warn!(run = %run_dir.display(), error = panic_message(panic.as_ref()), "the analysis of the run panicked");
            return Vec::new();
        }
    };
    tracing::info!(run = %run_dir.display(), seconds = output.summary.seconds, files = output.files.len(), "run analysed");
    let mut files = Vec::new();
    for name in &output.files {
        match std::fs::read(output.dir.join(name)) {
            Ok(bytes) => files.push((name.clone(), bytes)),
            Err(err) => {
                tracing::warn!(file = name, error = %err, "cannot read an analysis file to upload")
            }
        }
    }
    // The summary last: its arrival says the analysis is complete.
    files.sort_by_key(|(name, _)| name == "summary.json");
    files
}

/// The result of a simulated job (`--simulate-job-seconds`): it sleeps, then
/// reports a plausible, seed-dependent accuracy so results tables still fill.
fn simulated_run(config: &ExperimentConfig, duration: std::time::Duration) -> RunMetrics {
    std::thread::sleep(duration);
    let jitter = (config.seed % 100) as f64 / 10_000.0;
    RunMetrics {
        best_epoch: 1,
        best_val_acc: Some(0.9 + jitter),
        train_seconds: duration.as_secs_f64(),
        test: Some(sweep_core::metrics::TestMetrics {
            test_loss: 0.3,
            test_acc: 0.9 + jitter,
        }),
        ..RunMetrics::default()
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A refusal that means this attempt is over (not a transient failure).
pub(crate) fn is_fenced(status: &Status) -> bool {
    matches!(status.code(), Code::FailedPrecondition | Code::NotFound)
}

/// The resolved config, the local run dir and whether to resume.
async fn prepare(
    ctx: &Ctx,
    job: &LeasedJob,
) -> Result<(ExperimentConfig, PathBuf, bool), PrepareError> {
    let mut config = ExperimentConfig::from_yaml(&job.config_yaml, Path::new("leased config"))
        .map_err(|e| PrepareError::Permanent(e.to_string()))?;
    // The worker's own hardware decides these, not the sweep.
    config.training.device = ctx.config.device;
    // Always set, so that the trainer never falls back to libtorch's
    // default of every core, whatever else runs on the machine.
    config.training.threads = Some(ctx.config.job_threads(config.training.threads));
    // The coordinator writes the run's TensorBoard events; a second copy in
    // the worker's scratch dir would only confuse `tensorboard --logdir`.
    config.logging.tensorboard = false;

    let data_dir = config
        .data
        .data_dir
        .clone()
        .unwrap_or_else(|| sweep_train::data::default_data_dir(config.data.dataset));
    if !data_dir.is_dir() {
        config.data.data_dir = Some(fetch_dataset(ctx, job, config.data.dataset).await?);
    }

    let run_dir = crate::local_run_dir(&ctx.config.cache_dir, &job.sweep, &job.variant, job.seed);
    let resume = download_checkpoints(ctx, job, &run_dir.join("checkpoints")).await?;
    Ok((config, run_dir, resume))
}

/// Downloads the checkpoint files the coordinator holds for the job into
/// `checkpoints` (emptied first: whatever a previous attempt left there is
/// not what the coordinator holds). Returns whether there were any (resume).
pub(crate) async fn download_checkpoints(
    ctx: &Ctx,
    job: &LeasedJob,
    checkpoints: &Path,
) -> Result<bool, TransferError> {
    match tokio::fs::remove_dir_all(checkpoints).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(TransferError::Io {
                path: checkpoints.to_path_buf(),
                source: e,
            });
        }
        _ => {}
    }
    for file in &job.checkpoints {
        let request = pb::DownloadArtifactRequest {
            worker_id: ctx.worker_id(),
            job_id: job.id.clone(),
            attempt: job.attempt,
            name: file.name.clone(),
        };
        let stream = ctx
            .retry("download checkpoint", || {
                let mut client = ctx.client();
                let arg = request.clone();
                async move { client.download_artifact(arg).await }
            })
            .await?;
        transfer::receive_files(stream.into_inner(), checkpoints).await?;
    }
    Ok(job.resumes())
}

/// Fetches the job's dataset into the cache (once) and returns its directory.
async fn fetch_dataset(
    ctx: &Ctx,
    job: &LeasedJob,
    kind: DatasetKind,
) -> Result<PathBuf, TransferError> {
    let name = match kind {
        DatasetKind::Mnist => "mnist",
        DatasetKind::FashionMnist => "fashion-mnist",
    };
    let dir = ctx.config.cache_dir.join("datasets").join(name);
    if dir.join(DATASET_COMPLETE).is_file() {
        return Ok(dir);
    }
    tracing::info!(dataset = name, dir = %dir.display(), "dataset not found locally; fetching it from the coordinator");
    let request = pb::FetchDatasetRequest {
        worker_id: ctx.worker_id(),
        job_id: job.id.clone(),
    };
    let stream = ctx
        .retry("fetch dataset", || {
            let mut client = ctx.client();
            let arg = request.clone();
            async move { client.fetch_dataset(arg).await }
        })
        .await?;
    // The files' integrity is checked again by Dataset::load (canonical SHA-256).
    let files = transfer::receive_files(stream.into_inner(), &dir).await?;
    let marker = dir.join(DATASET_COMPLETE);
    tokio::fs::write(&marker, files.join("\n"))
        .await
        .map_err(|source| TransferError::Io {
            path: marker,
            source,
        })?;
    Ok(dir)
}

/// ReportEpoch, then each checkpoint file in the trainer's order (the state
/// file, the commit record, last).
pub(crate) async fn report_epoch(
    ctx: &Ctx,
    job: &LeasedJob,
    metrics: EpochMetrics,
    files: Vec<(String, Vec<u8>)>,
) -> Result<(), Status> {
    let request = pb::ReportEpochRequest {
        worker_id: ctx.worker_id(),
        job_id: job.id.clone(),
        attempt: job.attempt,
        metrics: Some(metrics.into()),
    };
    ctx.retry("report epoch", || {
        let mut client = ctx.client();
        let arg = request.clone();
        async move { client.report_epoch(arg).await }
    })
    .await?;
    for (name, bytes) in &files {
        let messages =
            transfer::upload_messages(&ctx.worker_id(), &job.id, job.attempt, name, bytes);
        ctx.retry("upload checkpoint", || {
            let mut client = ctx.client();
            let arg = tokio_stream::iter(messages.clone());
            async move { client.upload_artifact(arg).await }
        })
        .await?;
    }
    Ok(())
}

/// Uploads the analysis files as `analysis/<name>`, like checkpoints.
async fn upload_analysis(
    ctx: &Ctx,
    job: &LeasedJob,
    files: &[(String, Vec<u8>)],
) -> Result<(), Status> {
    for (name, bytes) in files {
        let name = format!("analysis/{name}");
        let messages =
            transfer::upload_messages(&ctx.worker_id(), &job.id, job.attempt, &name, bytes);
        ctx.retry("upload analysis", || {
            let mut client = ctx.client();
            let arg = tokio_stream::iter(messages.clone());
            async move { client.upload_artifact(arg).await }
        })
        .await?;
    }
    Ok(())
}

/// Reports that this attempt failed; `permanent` failures are not retried.
pub(crate) async fn fail(ctx: &Ctx, job: &LeasedJob, message: String, permanent: bool) {
    let failure = JobFailure { message, permanent };
    send_failure(ctx, &job.id, job.attempt, failure).await;
}

pub(crate) async fn complete(
    ctx: &Ctx,
    job: &LeasedJob,
    outcome: pb::complete_job_request::Outcome,
) {
    send_outcome(ctx, &job.id, job.attempt, outcome).await;
}

/// Refuses a leased job that did not pass the protocol boundary's checks (a
/// coordinator bug): a permanent failure, never tried.
pub(crate) async fn refuse(ctx: &Ctx, job_id: String, attempt: u32, message: String) {
    tracing::error!(job = %job_id, error = %message, "refusing a malformed job");
    let failure = JobFailure {
        message,
        permanent: true,
    };
    send_failure(ctx, &job_id, attempt, failure).await;
}

/// The one way a failed attempt is reported, by [`fail`] and [`refuse`].
async fn send_failure(ctx: &Ctx, job_id: &str, attempt: u32, failure: JobFailure) {
    let outcome = pb::complete_job_request::Outcome::Failure(failure.into());
    send_outcome(ctx, job_id, attempt, outcome).await;
}

async fn send_outcome(
    ctx: &Ctx,
    job_id: &str,
    attempt: u32,
    outcome: pb::complete_job_request::Outcome,
) {
    let request = pb::CompleteJobRequest {
        worker_id: ctx.worker_id(),
        job_id: job_id.to_string(),
        attempt,
        outcome: Some(outcome),
        // The next job with this answer saves a LeaseJob call; a worker that
        // is shutting down takes none (one handed over as it stops runs out
        // its lease, like a job leased by a poll it left).
        lease_next: !ctx.shutdown.is_cancelled(),
    };
    match ctx
        .retry_final("complete job", || {
            let mut client = ctx.client();
            let arg = request.clone();
            async move { client.complete_job(arg).await }
        })
        .await
    {
        Ok(response) => {
            if let Some(next) = response.into_inner().next {
                ctx.handed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(next);
            }
        }
        Err(status) => {
            tracing::warn!(job = %job_id, error = %status.message(), "coordinator did not take the outcome");
        }
    }
}
