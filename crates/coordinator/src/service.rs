//! The gRPC face of the coordinator: each handler converts its request at
//! the protocol boundary (`sweep_proto::convert`), applies it to the store
//! (the one owner of the job model and of every SQL statement) and hands
//! the run files that follow from it to [`RunFiles`], so that a handler reads
//! as a short sequence of those calls. Errors leave through the single
//! `From<CoordinatorError> for Status` mapping; results go to the binary
//! through [`Shared::finished`] (the library prints nothing).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sweep_core::command::JobConfig;
use sweep_core::lease::{JobFailure, StoredFile};
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_core::names;
use sweep_core::provenance::{AttemptProvenance, RunProvenance};
use sweep_core::results::{self, Format, ResultsTable};
use sweep_core::sweep::SweepSpec;
use sweep_proto::pb::{self, coordinator_server::Coordinator};
use sweep_proto::{CHUNK_SIZE, PROTOCOL_VERSION};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{CoordinatorError, Result};
use crate::events::{Event, EventBus, JobView};
use crate::layout::{self, ProgressFiles};
use crate::limits::{Limits, truncate_text};
use crate::run_files::{RunFile, RunFiles};
use crate::store::{self, JobState, Outcome, Store};

/// How long a LeaseJob call waits for a job before answering "none": short
/// enough that an idle worker notices a coordinator restart quickly, long
/// enough that idle polling costs nothing. Jobs are handed out the moment
/// they become pending, never at the end of this wait.
const LEASE_POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Minimum gap between two WatchStatus snapshots: a burst of epoch reports
/// becomes one update, and a terminal redraws at most a few times a second.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(250);

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send + 'static>>;

/// State shared by the handlers and the coordinator's background tasks.
pub struct Shared {
    pub store: Store,
    /// Writes the run files that follow a job's progress.
    files: RunFiles,
    /// Root of the run layout (`runs/`).
    pub state_dir: PathBuf,
    pub lease_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// What one client may make us store (checked by the handlers).
    pub limits: Limits,
    /// Bumped after every change of the job model: wakes WatchStatus
    /// streams and the exit-when-done check.
    pub changes: watch::Sender<u64>,
    /// Bumped when a job may have become pending: wakes long-polling
    /// LeaseJob calls. Not [`Shared::changes`]: every epoch report would
    /// wake every idle worker's poll to look for a job in vain.
    queued: watch::Sender<u64>,
    /// What changed, for the dashboard's live pages.
    pub events: EventBus,
    progress: ProgressFiles,
    /// Sweep reports being written: `--exit-when-done` waits for them.
    reports_in_flight: std::sync::atomic::AtomicUsize,
    /// Cancelled when the server stops: long polls and streams end with it.
    pub stopping: CancellationToken,
    /// The results table of each sweep as it ends, for the binary to print.
    finished: mpsc::UnboundedSender<ResultsTable>,
}

impl Shared {
    /// Starts the run files' thread too.
    pub fn new(
        store: Store,
        state_dir: PathBuf,
        lease_timeout: Duration,
        heartbeat_interval: Duration,
        limits: Limits,
        stopping: CancellationToken,
        finished: mpsc::UnboundedSender<ResultsTable>,
    ) -> Result<Self> {
        Ok(Shared {
            store,
            files: RunFiles::start()?,
            state_dir,
            lease_timeout,
            heartbeat_interval,
            limits,
            reports_in_flight: std::sync::atomic::AtomicUsize::new(0),
            changes: watch::Sender::new(0),
            queued: watch::Sender::new(0),
            events: EventBus::default(),
            progress: ProgressFiles::default(),
            stopping,
            finished,
        })
    }

    pub fn bump(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A job may have become pending (after its change is committed).
    fn job_queued(&self) {
        self.queued.send_modify(|v| *v = v.wrapping_add(1));
        self.bump();
    }

    fn run_dir(&self, job: &store::JobRow) -> PathBuf {
        layout::run_dir(&self.state_dir, &job.sweep, &job.variant, job.seed)
    }

    /// The run's `provenance.json`, replaced by this content.
    fn provenance_file(&self, provenance: RunProvenance) -> RunFile {
        RunFile::Provenance {
            dir: layout::run_dir(
                &self.state_dir,
                &provenance.sweep,
                &provenance.variant,
                provenance.seed,
            ),
            provenance,
        }
    }

    /// Records a sweep and writes each job's config.yaml.
    pub async fn submit(&self, spec: SweepSpec) -> Result<(u32, u32)> {
        let jobs = spec.expand();
        let sweep = store::NewSweep {
            name: spec.name.clone(),
            description: spec.description.clone().unwrap_or_default(),
            seeds: spec.seeds.clone(),
            metric: spec.metric.clone(),
            baseline: spec.baseline.clone(),
            seed_policy: spec.seed_policy,
            space: store::Space {
                keys: spec.swept_keys.clone(),
                values: spec
                    .variants
                    .iter()
                    .filter(|v| !v.swept.is_empty())
                    .map(|v| (v.name.clone(), v.swept.clone()))
                    .collect(),
            },
        };
        let state_dir = self.state_dir.clone();
        let counts = self
            .store
            .call(move |db| {
                let counts = db.submit(&sweep, &jobs)?;
                for job in &jobs {
                    let dir = layout::run_dir(&state_dir, &job.sweep, &job.variant, job.seed);
                    layout::write_config(&dir, &job.config_yaml)?;
                }
                Ok(counts)
            })
            .await?;
        tracing::info!(sweep = %spec.name, jobs = counts.0, new = counts.1, "sweep submitted");
        self.job_queued();
        self.events.publish(Event::Sweep {
            sweep: spec.name.clone(),
        });
        // A resubmitted sweep may already be complete.
        self.finish_sweep_if_done(&spec.name).await?;
        Ok(counts)
    }

    /// Writes results.{md,csv,json}, hands the table to [`Shared::finished`]
    /// and writes the report once every job of the sweep has ended (once per
    /// sweep).
    pub async fn finish_sweep_if_done(&self, sweep: &str) -> Result<()> {
        use std::sync::atomic::Ordering;
        let sweep = sweep.to_string();
        let state_dir = self.state_dir.clone();
        // Counted before the results are marked written, so that the
        // exit-when-done check never sees "all done" while a report is drawn.
        self.reports_in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(&self.reports_in_flight);
        let table = self
            .store
            .call(move |db| {
                let Some(table) = db.results_due(&sweep)? else {
                    return Ok(None);
                };
                // The final provenance.json of the runs that did not end with
                // a completion (cancelled, failed by lease expiry), before the
                // report reads them; CompleteJob wrote the others'.
                let jobs = db.jobs(Some(sweep.as_str()))?;
                for job in jobs.iter().filter(|j| j.state != JobState::Succeeded) {
                    let dir = layout::run_dir(&state_dir, &job.sweep, &job.variant, job.seed);
                    layout::write_provenance(&dir, &db.provenance(&job.id)?)?;
                    // Its last epochs may be newer than its throttled metrics.json.
                    let epochs = db.epochs_of(&job.id)?;
                    if !epochs.is_empty() {
                        layout::write_metrics(&dir, &layout::metrics_from_epochs(&epochs))?;
                    }
                }
                layout::write_results(&state_dir, &table)?;
                db.mark_results_written(&sweep)?;
                Ok(Some(table))
            })
            .await?;
        let finished = table.is_some();
        if let Some(table) = table {
            self.events.publish(Event::Sweep {
                sweep: table.sweep.clone(),
            });
            tracing::info!(sweep = %table.sweep, "sweep finished; results written");
            // The table is the product: the binary prints it. Sent before
            // the report is counted done, so it is queued before
            // `all_done` can say so. Nobody listening is not an error.
            let _ = self.finished.send(table.clone());
            // The report reads every run directory and draws its figures:
            // off the async threads, and never fatal (the results are written).
            let state_dir = self.state_dir.clone();
            let written =
                tokio::task::spawn_blocking(move || layout::write_report(&state_dir, &table)).await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "the report task failed");
            }
        }
        drop(in_flight);
        if finished {
            self.bump();
        }
        Ok(())
    }

    /// True when at least one sweep exists and every sweep has ended and
    /// written its results and report.
    pub async fn all_done(&self) -> Result<bool> {
        self.store
            .call(|db| {
                let sweeps = db.sweeps()?;
                Ok(!sweeps.is_empty() && sweeps.iter().all(|s| s.results_written))
            })
            .await
            .map(|done| {
                done && self
                    .reports_in_flight
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 0
            })
    }

    /// One pass of lease expiry.
    pub async fn expire_leases(&self) -> Result<()> {
        let expired = self.store.call(|db| db.expire_leases()).await?;
        if expired.requeued.is_empty() && expired.failed.is_empty() {
            return Ok(());
        }
        for (id, _) in &expired.requeued {
            tracing::warn!(job = %id, "lease expired; job returns to pending");
        }
        if expired.queued() {
            self.job_queued();
        } else {
            self.bump();
        }
        let mut sweeps: Vec<&String> = expired
            .requeued
            .iter()
            .chain(&expired.failed)
            .map(|(_, sweep)| sweep)
            .collect();
        sweeps.sort();
        sweeps.dedup();
        for sweep in sweeps {
            self.events.publish(Event::Sweep {
                sweep: sweep.clone(),
            });
        }
        for (id, sweep) in &expired.failed {
            tracing::error!(job = %id, "lease expired too often; job failed");
            self.finish_sweep_if_done(sweep).await?;
        }
        Ok(())
    }

    /// Leases the worker a pending job, if there is one now, with the
    /// checkpoints to resume it from.
    async fn lease(&self, worker_id: &str) -> Result<Option<pb::Job>> {
        let worker = worker_id.to_string();
        let lease_timeout = self.lease_timeout;
        let state_dir = self.state_dir.clone();
        let leased = self
            .store
            .call(move |db| {
                let Some(job) = db.lease(&worker, lease_timeout)? else {
                    return Ok(None);
                };
                let dir = layout::run_dir(&state_dir, &job.sweep, &job.variant, job.seed);
                layout::clear_staging(&dir)?;
                // Seeds added by the coordinator (adaptive) get theirs here.
                if !dir.join("config.yaml").is_file() {
                    layout::write_config(&dir, &job.config_yaml)?;
                }
                let checkpoints = layout::committed_checkpoints(&dir)?;
                Ok(Some((job, checkpoints)))
            })
            .await?;
        let Some((job, checkpoints)) = leased else {
            return Ok(None);
        };
        // Not in the caller's span: a lease that comes with a completion
        // would print the completed job's `job=` beside this one's.
        tracing::info!(parent: None, job = %job.id, attempt = job.attempt, worker = %worker_id, resume = !checkpoints.is_empty(), "job leased");
        self.progress.restart(&job.id);
        self.bump();
        self.events.publish(Event::Job(JobView::from(&job)));
        Ok(Some(job.leased(checkpoints).into()))
    }

    /// Workers heard from since then are alive: within a lease timeout.
    pub fn alive_since_ms(&self) -> i64 {
        store::now_ms() - self.lease_timeout.as_millis() as i64
    }

    async fn snapshot(&self, sweep: Option<String>) -> Result<pb::StatusSnapshot> {
        let alive_since_ms = self.alive_since_ms();
        let snapshot = self
            .store
            .call(move |db| db.status(sweep.as_deref(), alive_since_ms))
            .await?;
        Ok(snapshot.into())
    }
}

/// The tonic service over [`Shared`].
#[derive(Clone)]
pub struct Service {
    pub shared: Arc<Shared>,
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T> {
    value.ok_or_else(|| CoordinatorError::InvalidArgument(format!("missing field {field}")))
}

fn non_empty(value: &str, field: &'static str) -> Result<()> {
    if value.is_empty() {
        return Err(CoordinatorError::InvalidArgument(format!(
            "missing field {field}"
        )));
    }
    Ok(())
}

/// Streams files (header, then chunks) through a channel; a failed send means
/// the client left, which ends the task.
fn stream_files(
    files: Vec<(String, PathBuf)>,
    stopping: CancellationToken,
) -> BoxStream<pb::FileChunk> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (name, path) in files {
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    let _ = tx.send(Err(CoordinatorError::io(&path)(e).into())).await;
                    return;
                }
            };
            let header = pb::FileHeader {
                name,
                size: bytes.len() as u64,
                sha256: layout::sha256_hex(&bytes),
            };
            let mut messages = vec![pb::FileChunk {
                kind: Some(pb::file_chunk::Kind::Header(header)),
            }];
            messages.extend(bytes.chunks(CHUNK_SIZE).map(|c| pb::FileChunk {
                kind: Some(pb::file_chunk::Kind::Data(c.to_vec())),
            }));
            for message in messages {
                tokio::select! {
                    sent = tx.send(Ok(message)) => if sent.is_err() { return },
                    _ = stopping.cancelled() => return,
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The header of an upload, checked: the request's ids and the file it
/// declares.
struct UploadHeader {
    request: pb::UploadArtifactHeader,
    file: StoredFile,
}

/// The first message of an upload: its header, with a safe artifact name, a
/// well-formed digest and a size within the per-job limit.
fn upload_header(
    first: Option<pb::UploadArtifactRequest>,
    limits: &Limits,
) -> Result<UploadHeader> {
    use pb::upload_artifact_request::Kind;
    let Some(Kind::Header(mut header)) = required(first, "header")?.kind else {
        return Err(CoordinatorError::InvalidArgument(
            "the first message of an upload must be its header".into(),
        ));
    };
    let file = StoredFile::try_from(required(header.file.take(), "header.file")?)?;
    layout::validate_artifact_name(&file.name)?;
    if file.size > limits.max_job_artifact_bytes {
        return Err(CoordinatorError::ResourceExhausted(format!(
            "artifact of {} bytes exceeds the {}-byte limit per job",
            file.size, limits.max_job_artifact_bytes
        )));
    }
    Ok(UploadHeader {
        request: header,
        file,
    })
}

/// Streams the data messages of an upload into its part file.
async fn receive_upload(
    stream: &mut Streaming<pb::UploadArtifactRequest>,
    part: &mut layout::UploadPart,
) -> Result<()> {
    use pb::upload_artifact_request::Kind;
    while let Some(message) = stream.message().await.map_err(|s| {
        CoordinatorError::InvalidArgument(format!("upload interrupted: {}", s.message()))
    })? {
        let Some(Kind::Data(data)) = message.kind else {
            return Err(CoordinatorError::InvalidArgument(
                "an upload has one header, then data only".into(),
            ));
        };
        part.write(&data).await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Coordinator for Service {
    #[tracing::instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> std::result::Result<Response<pb::RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "protocol version {} is not this coordinator's {PROTOCOL_VERSION}; upgrade the worker",
                req.protocol_version
            ))
            .into());
        }
        // The name becomes part of the worker's id, shown and logged: held to
        // the rule of every name that comes over the network.
        names::validate("worker name", &req.name).map_err(CoordinatorError::from)?;
        let limits = &self.shared.limits;
        let row = store::NewWorker {
            name: req.name.clone(),
            host: truncate_text(&req.host, names::MAX_NAME_LEN * 2),
            device: truncate_text(&req.device, names::MAX_NAME_LEN),
            threads: req.threads,
            slots: req.slots.max(1),
            allow_commands: req.allow_commands,
        };
        let (max_workers, alive_since_ms) = (limits.max_workers, self.shared.alive_since_ms());
        let worker_id = self
            .shared
            .store
            .call(move |db| db.register_worker(&row, max_workers, alive_since_ms))
            .await?;
        tracing::info!(worker = %worker_id, allow_commands = req.allow_commands, "worker registered");
        self.shared.bump();
        self.shared.events.publish(Event::Worker { name: req.name });
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id,
            heartbeat_interval_ms: self.shared.heartbeat_interval.as_millis() as u64,
            lease_timeout_ms: self.shared.lease_timeout.as_millis() as u64,
        }))
    }

    async fn lease_job(
        &self,
        request: Request<pb::LeaseJobRequest>,
    ) -> std::result::Result<Response<pb::LeaseJobResponse>, Status> {
        let worker_id = request.into_inner().worker_id;
        non_empty(&worker_id, "worker_id")?;
        let shared = &self.shared;
        let mut queued = shared.queued.subscribe();
        let deadline = tokio::time::Instant::now() + LEASE_POLL_TIMEOUT;
        loop {
            // Marked seen before looking, so a job queued after the look wakes us.
            queued.borrow_and_update();
            if let Some(job) = shared.lease(&worker_id).await? {
                return Ok(Response::new(pb::LeaseJobResponse { job: Some(job) }));
            }
            tokio::select! {
                changed = queued.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shared.stopping.cancelled() => break,
            }
        }
        Ok(Response::new(pb::LeaseJobResponse { job: None }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> std::result::Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        non_empty(&req.worker_id, "worker_id")?;
        let held: Vec<(String, u32)> = req
            .jobs
            .into_iter()
            .map(|j| (j.job_id, j.attempt))
            .collect();
        let lease_timeout = self.shared.lease_timeout;
        let (cancelled, lost) = self
            .shared
            .store
            .call(move |db| db.heartbeat(&req.worker_id, &held, lease_timeout))
            .await?;
        Ok(Response::new(pb::HeartbeatResponse { cancelled, lost }))
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, attempt = request.get_ref().attempt))]
    async fn report_epoch(
        &self,
        request: Request<pb::ReportEpochRequest>,
    ) -> std::result::Result<Response<pb::ReportEpochResponse>, Status> {
        let req = request.into_inner();
        non_empty(&req.job_id, "job_id")?;
        let metrics = EpochMetrics::try_from(required(req.metrics, "metrics")?)
            .map_err(CoordinatorError::from)?;
        let (worker, job_id) = (req.worker_id, req.job_id);
        let slack = self.shared.limits.epoch_slack;
        let progress_due = self.shared.progress.due(&job_id);
        let ingest = self
            .shared
            .store
            .call(move |db| {
                db.report_epoch(&worker, &job_id, req.attempt, &metrics, slack, progress_due)
            })
            .await?;
        if ingest.new {
            let dir = self.shared.run_dir(&ingest.job);
            let job_id = ingest.job.id.clone();
            let mut files = Vec::with_capacity(2);
            if let Some(epochs) = &ingest.epochs {
                self.shared.progress.restart(&job_id);
                files.push(RunFile::Metrics {
                    dir: dir.clone(),
                    metrics: layout::metrics_from_epochs(epochs),
                });
            }
            files.push(RunFile::Epoch {
                job_id,
                dir,
                metrics,
            });
            self.shared.files.write(files).await;
            self.shared.bump();
            let job = ingest.job;
            self.shared.events.publish(Event::Epoch {
                job_id: job.id,
                sweep: job.sweep,
                variant: job.variant,
                seed: job.seed,
                epochs: job.epochs,
                metrics,
            });
        }
        Ok(Response::new(pb::ReportEpochResponse {}))
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<pb::UploadArtifactRequest>>,
    ) -> std::result::Result<Response<pb::UploadArtifactResponse>, Status> {
        let mut stream = request.into_inner();
        let header = upload_header(stream.message().await?, &self.shared.limits)?;
        let pb::UploadArtifactHeader {
            worker_id: worker,
            job_id,
            attempt,
            ..
        } = header.request;
        let file = header.file;
        let limits = self.shared.limits.clone();
        let (fence, checked) = ((job_id.clone(), worker.clone()), file.clone());
        let budget = limits.clone();
        let job = self
            .shared
            .store
            .call(move |db| {
                let (job_id, worker) = fence;
                db.check_upload(
                    &job_id,
                    attempt,
                    &worker,
                    &checked.name,
                    checked.size,
                    &budget,
                )
            })
            .await?;
        let dir = self.shared.run_dir(&job);
        let mut part = layout::UploadPart::create(&dir, &file, attempt).await?;
        if let Err(err) = receive_upload(&mut stream, &mut part).await {
            part.discard().await;
            return Err(err.into());
        }
        let part = part.finish().await?;
        self.shared
            .store
            .call(move |db| {
                // Fenced and budgeted again under the database lock: the lease
                // may have moved on, and uploads of other files of the same
                // job or sweep may have landed, while the bytes streamed in.
                db.check_upload(&job_id, attempt, &worker, &file.name, file.size, &limits)?;
                layout::place_upload(&dir, &part, &file.name)?;
                db.record_artifact(&job_id, attempt, &file)
            })
            .await?;
        Ok(Response::new(pb::UploadArtifactResponse {}))
    }

    type DownloadArtifactStream = BoxStream<pb::FileChunk>;

    async fn download_artifact(
        &self,
        request: Request<pb::DownloadArtifactRequest>,
    ) -> std::result::Result<Response<Self::DownloadArtifactStream>, Status> {
        let req = request.into_inner();
        names::validate("artifact name", &req.name).map_err(CoordinatorError::from)?;
        let (worker, job_id) = (req.worker_id, req.job_id);
        let job = self
            .shared
            .store
            .call(move |db| db.check_fence(&job_id, req.attempt, &worker))
            .await?;
        let path = layout::checkpoints_dir(&self.shared.run_dir(&job)).join(&req.name);
        if !path.is_file() {
            return Err(CoordinatorError::NotFound(format!(
                "job {} has no checkpoint {}",
                job.id, req.name
            ))
            .into());
        }
        Ok(Response::new(stream_files(
            vec![(req.name, path)],
            self.shared.stopping.clone(),
        )))
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, attempt = request.get_ref().attempt))]
    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> std::result::Result<Response<pb::CompleteJobResponse>, Status> {
        use pb::complete_job_request::Outcome as PbOutcome;
        let req = request.into_inner();
        non_empty(&req.job_id, "job_id")?;
        let max_text = self.shared.limits.max_text_bytes;
        let outcome = match required(req.outcome, "outcome")? {
            PbOutcome::Metrics(m) => {
                Outcome::Succeeded(RunMetrics::try_from(m).map_err(CoordinatorError::from)?)
            }
            PbOutcome::Failure(f) => {
                let failure = JobFailure::from(f);
                Outcome::Failed {
                    message: truncate_text(&failure.message, max_text),
                    permanent: failure.permanent,
                }
            }
        };
        let final_metrics = match &outcome {
            Outcome::Succeeded(m) => Some(m.clone()),
            Outcome::Failed { .. } => None,
        };
        let (worker, job_id, attempt) = (req.worker_id, req.job_id, req.attempt);
        let lease_next = req.lease_next.then(|| worker.clone());
        let slack = self.shared.limits.epoch_slack;
        let (
            store::Completed {
                job,
                queued,
                sweep_ended,
            },
            provenance,
        ) = self
            .shared
            .store
            .call(move |db| {
                let completed = db.complete(&worker, &job_id, attempt, &outcome, slack)?;
                let provenance = db.provenance_of(&completed.job)?;
                Ok((completed, provenance))
            })
            .await?;
        let dir = self.shared.run_dir(&job);
        self.shared.progress.forget(&job.id);
        let test_acc = final_metrics.as_ref().map(|m| m.test.map(|t| t.test_acc));
        let mut files = vec![RunFile::Provenance {
            dir: dir.clone(),
            provenance,
        }];
        let (test, step) = match final_metrics {
            Some(metrics) => {
                let ended = (metrics.test, metrics.epochs.len() as u32);
                files.push(RunFile::Metrics {
                    dir: dir.clone(),
                    metrics,
                });
                ended
            }
            None => (None, 0),
        };
        files.push(RunFile::Ended {
            job_id: job.id.clone(),
            dir,
            test,
            step,
        });
        self.shared.files.write(files).await;
        match test_acc {
            Some(test_acc) => tracing::info!(job = %job.id, test_acc, "job succeeded"),
            None => {
                tracing::warn!(job = %job.id, state = job.state.as_str(), error = job.error.as_deref().unwrap_or(""), "attempt failed")
            }
        }
        if queued {
            self.shared.job_queued();
        } else {
            self.shared.bump();
        }
        self.shared.events.publish(Event::Job(JobView::from(&job)));
        if sweep_ended {
            self.shared.finish_sweep_if_done(&job.sweep).await?;
        }
        // The outcome is committed whatever happens here: a failed lease
        // answers without a job, and the worker polls for one.
        let next = match lease_next {
            Some(worker) if !self.shared.stopping.is_cancelled() => {
                self.shared.lease(&worker).await.unwrap_or_else(|err| {
                    tracing::warn!(worker = %worker, error = %err, "leasing the next job with a completion failed");
                    None
                })
            }
            _ => None,
        };
        Ok(Response::new(pb::CompleteJobResponse { next }))
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, attempt = request.get_ref().attempt))]
    async fn append_job_log(
        &self,
        request: Request<pb::AppendJobLogRequest>,
    ) -> std::result::Result<Response<pb::AppendJobLogResponse>, Status> {
        let req = request.into_inner();
        non_empty(&req.job_id, "job_id")?;
        if !matches!(req.stream.as_str(), "stdout" | "stderr") {
            return Err(CoordinatorError::InvalidArgument(format!(
                "stream must be stdout or stderr, not {:?}",
                truncate_text(&req.stream, 32)
            ))
            .into());
        }
        let text = truncate_text(&req.text, self.shared.limits.max_message_bytes);
        let state_dir = self.shared.state_dir.clone();
        self.shared
            .store
            .call(move |db| {
                let new = db.append_output(
                    &req.worker_id,
                    &req.job_id,
                    req.attempt,
                    req.seq,
                    &req.stream,
                    &text,
                )?;
                if new {
                    let job = db.get_job(&req.job_id)?;
                    let dir = layout::run_dir(&state_dir, &job.sweep, &job.variant, job.seed);
                    layout::append_output(&dir, req.attempt, &req.stream, &text)?;
                }
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::AppendJobLogResponse {}))
    }

    type FetchDatasetStream = BoxStream<pb::FileChunk>;

    async fn fetch_dataset(
        &self,
        request: Request<pb::FetchDatasetRequest>,
    ) -> std::result::Result<Response<Self::FetchDatasetStream>, Status> {
        let req = request.into_inner();
        let (worker, job_id) = (req.worker_id, req.job_id);
        let job = self
            .shared
            .store
            // Only for a job this worker holds: the data is the job's.
            .call(move |db| db.held_job(&worker, &job_id))
            .await?;
        let config = JobConfig::from_yaml(&job.config_yaml, Path::new("stored config"))
            .map_err(CoordinatorError::from)?;
        let JobConfig::Builtin(config) = config else {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {} is a command job: its program brings its own data",
                job.id
            ))
            .into());
        };
        let dir = config.data.data_dir.ok_or_else(|| {
            CoordinatorError::FailedPrecondition(format!(
                "job {} names no data.data_dir to serve",
                job.id
            ))
        })?;
        // Not an internal error the worker would retry forever: the job
        // fails, and says where the data was looked for.
        if !dir.is_dir() {
            let cwd = std::env::current_dir().unwrap_or_default();
            return Err(CoordinatorError::InvalidArgument(format!(
                "data.data_dir {} is a directory neither on the worker nor on the coordinator \
                 (a relative path is relative to each one's working directory; the \
                 coordinator's is {})",
                dir.display(),
                cwd.display()
            ))
            .into());
        }
        let files = layout::plain_files(&dir)?;
        tracing::info!(job = %job.id, dir = %dir.display(), files = files.len(), "serving dataset");
        Ok(Response::new(stream_files(
            files,
            self.shared.stopping.clone(),
        )))
    }

    async fn submit_sweep(
        &self,
        request: Request<pb::SubmitSweepRequest>,
    ) -> std::result::Result<Response<pb::SubmitSweepResponse>, Status> {
        let mut spec = SweepSpec::try_from(request.into_inner()).map_err(CoordinatorError::from)?;
        // Stored and shown: held to the length of a name.
        for variant in &mut spec.variants {
            for value in &mut variant.swept {
                *value = truncate_text(value, names::MAX_NAME_LEN);
            }
        }
        let (jobs, new_jobs) = self.shared.submit(spec).await?;
        Ok(Response::new(pb::SubmitSweepResponse { jobs, new_jobs }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> std::result::Result<Response<pb::StatusSnapshot>, Status> {
        let sweep = request.into_inner().sweep;
        Ok(Response::new(
            self.shared
                .snapshot((!sweep.is_empty()).then_some(sweep))
                .await?,
        ))
    }

    type WatchStatusStream = BoxStream<pb::StatusSnapshot>;

    async fn watch_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> std::result::Result<Response<Self::WatchStatusStream>, Status> {
        let sweep = request.into_inner().sweep;
        let sweep = (!sweep.is_empty()).then_some(sweep);
        let shared = Arc::clone(&self.shared);
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut changes = shared.changes.subscribe();
            loop {
                changes.borrow_and_update();
                let snapshot = shared.snapshot(sweep.clone()).await.map_err(Status::from);
                if tx.send(snapshot).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = shared.stopping.cancelled() => return,
                    _ = tx.closed() => return,
                }
                tokio::time::sleep(WATCH_MIN_INTERVAL).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_results(
        &self,
        request: Request<pb::GetResultsRequest>,
    ) -> std::result::Result<Response<pb::GetResultsResponse>, Status> {
        let req = request.into_inner();
        let format: Format = if req.format.is_empty() {
            Format::Table
        } else {
            req.format.parse().map_err(|e: results::UnknownFormat| {
                CoordinatorError::InvalidArgument(e.to_string())
            })?
        };
        let requested = (!req.sweep.is_empty()).then_some(req.sweep);
        let table = self
            .shared
            .store
            .call(move |db| db.results(requested.as_deref()))
            .await?;
        Ok(Response::new(pb::GetResultsResponse {
            sweep: table.sweep.clone(),
            rendered: table.render(format),
            json: table.render(Format::Json),
            pending: table.pending as u32,
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> std::result::Result<Response<pb::CancelResponse>, Status> {
        use pb::cancel_request::Target;
        let (sweep, job) = match required(request.into_inner().target, "target")? {
            Target::Sweep(s) => (Some(s), None),
            Target::JobId(j) => (None, Some(j)),
        };
        // Each cancelled run's provenance.json says so at once, not only
        // once its whole sweep has ended.
        let (sweeps, provenances) = self
            .shared
            .store
            .call(move |db| {
                let (sweeps, jobs) = db.cancel(sweep.as_deref(), job.as_deref())?;
                let provenances = jobs
                    .iter()
                    .map(|id| db.provenance(id))
                    .collect::<Result<Vec<_>>>()?;
                Ok((sweeps, provenances))
            })
            .await?;
        let cancelled = provenances.len() as u32;
        tracing::info!(cancelled, "cancelled on request");
        let files = provenances
            .into_iter()
            .map(|provenance| self.shared.provenance_file(provenance))
            .collect();
        self.shared.files.write(files).await;
        self.shared.bump();
        for sweep in &sweeps {
            self.shared.events.publish(Event::Sweep {
                sweep: sweep.clone(),
            });
        }
        for sweep in sweeps {
            self.shared.finish_sweep_if_done(&sweep).await?;
        }
        Ok(Response::new(pb::CancelResponse { cancelled }))
    }

    async fn retry(
        &self,
        request: Request<pb::RetryRequest>,
    ) -> std::result::Result<Response<pb::RetryResponse>, Status> {
        use pb::retry_request::Target;
        let (sweep, job) = match required(request.into_inner().target, "target")? {
            Target::Sweep(s) => (Some(s), None),
            Target::JobId(j) => (None, Some(j)),
        };
        // Each retried run's provenance.json says it is pending again, so a
        // report drawn before its next attempt does not list it as failed.
        let (done, provenances) = self
            .shared
            .store
            .call(move |db| {
                let done = db.retry(sweep.as_deref(), job.as_deref())?;
                let provenances = done
                    .jobs
                    .iter()
                    .map(|id| db.provenance(id))
                    .collect::<Result<Vec<_>>>()?;
                Ok((done, provenances))
            })
            .await?;
        let retried = done.jobs.len() as u32;
        tracing::info!(
            retried,
            still_stopping = done.still_stopping,
            "retried on request"
        );
        let files = provenances
            .into_iter()
            .map(|provenance| self.shared.provenance_file(provenance))
            .collect();
        self.shared.files.write(files).await;
        if retried > 0 {
            self.shared.job_queued();
        }
        for sweep in done.sweeps {
            self.shared.events.publish(Event::Sweep { sweep });
        }
        Ok(Response::new(pb::RetryResponse {
            retried,
            still_stopping: done.still_stopping,
        }))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> std::result::Result<Response<pb::ListWorkersResponse>, Status> {
        let alive_since_ms = self.shared.alive_since_ms();
        let workers = self
            .shared
            .store
            .call(move |db| db.workers(alive_since_ms))
            .await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_job_logs(
        &self,
        request: Request<pb::GetJobLogsRequest>,
    ) -> std::result::Result<Response<pb::GetJobLogsResponse>, Status> {
        let job_id = request.into_inner().job_id;
        non_empty(&job_id, "job_id")?;
        let events = self.shared.store.call(move |db| db.events(&job_id)).await?;
        Ok(Response::new(pb::GetJobLogsResponse {
            events: events.into_iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(job = %request.get_ref().job_id, attempt = request.get_ref().attempt))]
    async fn record_attempt(
        &self,
        request: Request<pb::RecordAttemptRequest>,
    ) -> std::result::Result<Response<pb::RecordAttemptResponse>, Status> {
        let req = request.into_inner();
        non_empty(&req.job_id, "job_id")?;
        let mut provenance = AttemptProvenance::try_from(required(req.provenance, "provenance")?)
            .map_err(CoordinatorError::from)?;
        // What the coordinator knows itself is not the worker's to say.
        provenance.attempt = req.attempt;
        provenance.worker_id = req.worker_id.clone();
        let (worker, job_id, attempt) = (req.worker_id, req.job_id, req.attempt);
        let provenance = self
            .shared
            .store
            .call(move |db| {
                db.record_attempt(&worker, &job_id, attempt, &provenance)?;
                db.provenance(&job_id)
            })
            .await?;
        let file = self.shared.provenance_file(provenance);
        self.shared.files.write(vec![file]).await;
        Ok(Response::new(pb::RecordAttemptResponse {}))
    }

    async fn get_provenance(
        &self,
        request: Request<pb::GetProvenanceRequest>,
    ) -> std::result::Result<Response<pb::RunProvenance>, Status> {
        let job_id = request.into_inner().job_id;
        non_empty(&job_id, "job_id")?;
        let provenance = self
            .shared
            .store
            .call(move |db| db.provenance(&job_id))
            .await?;
        Ok(Response::new(provenance.into()))
    }
}

/// Decrements a counter when dropped (also on an early `?` return).
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
