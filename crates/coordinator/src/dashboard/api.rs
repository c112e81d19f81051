//! `/api/v1/...`: what the pages show, as JSON, for the page script and for
//! scripts of the user's; and `/api/v1/events`, the live stream.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sweep_core::metrics::EpochMetrics;
use sweep_core::results::Format;
use sweep_core::status::{JobCounts, JobEvent};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use crate::error::CoordinatorError;
use crate::events::{JobView, Numbered, Replay};
use crate::store;

/// A failed API call: the status that fits and a message.
pub struct ApiError(CoordinatorError);

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self.0 {
            CoordinatorError::NotFound(_) => StatusCode::NOT_FOUND,
            CoordinatorError::InvalidArgument(_) | CoordinatorError::BadName(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0, "dashboard request failed");
        }
        (
            status,
            Json(serde_json::json!({ "error": self.0.to_string() })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// One sweep's progress.
#[derive(Debug, Serialize)]
pub struct SweepSummary {
    pub name: String,
    pub description: String,
    #[serde(flatten)]
    pub jobs: JobCounts,
    /// Every job ended and the results are written.
    pub finished: bool,
    /// Pending command jobs that no live worker runs (`--allow-commands`).
    pub waiting_for_command_worker: u32,
}

impl SweepSummary {
    /// The sweep with no job counted yet.
    fn new(row: &store::SweepRow) -> Self {
        SweepSummary {
            name: row.name.clone(),
            description: row.description.clone(),
            jobs: JobCounts::default(),
            finished: row.results_written,
            waiting_for_command_worker: 0,
        }
    }
}

pub async fn sweep_summaries(state: &AppState) -> ApiResult<Vec<SweepSummary>> {
    let alive_since_ms = state.shared.alive_since_ms();
    Ok(state
        .shared
        .store
        .call(move |db| {
            let counts = db.state_counts()?;
            let sweeps = db.sweeps()?;
            let waiting = db.waiting_for_command_worker(None, alive_since_ms)?;
            Ok(sweeps
                .iter()
                .map(|row| {
                    let mut summary = SweepSummary::new(row);
                    for (state, n) in counts.get(&row.name).into_iter().flatten() {
                        summary.jobs.add(state.as_str(), *n);
                    }
                    summary.waiting_for_command_worker = waiting
                        .iter()
                        .find(|(name, _)| *name == row.name)
                        .map_or(0, |(_, n)| *n);
                    summary
                })
                .collect())
        })
        .await?)
}

pub async fn sweeps(State(state): State<AppState>) -> ApiResult<Json<Vec<SweepSummary>>> {
    Ok(Json(sweep_summaries(&state).await?))
}

/// A job with its learning curve, for the grid and the charts.
#[derive(Debug, Serialize)]
pub struct JobWithCurve {
    #[serde(flatten)]
    pub job: JobView,
    pub curve: Vec<EpochMetrics>,
}

/// Everything the sweep page draws, and the id of the last event it holds:
/// the page follows the stream from there, so it misses nothing.
#[derive(Debug, Serialize)]
pub struct SweepSnapshot {
    pub name: String,
    pub description: String,
    pub baseline: String,
    pub last_event_id: u64,
    /// Its jobs counted by state.
    pub summary: SweepSummary,
    pub jobs: Vec<JobWithCurve>,
}

/// The sweep's pending command jobs that no live worker runs.
pub async fn waiting_for_command_worker(state: &AppState, name: String) -> ApiResult<u32> {
    let alive_since_ms = state.shared.alive_since_ms();
    Ok(state
        .shared
        .store
        .call(move |db| {
            db.sweep(&name)?;
            waiting_in(db, &name, alive_since_ms)
        })
        .await?)
}

fn waiting_in(db: &store::Db, sweep: &str, alive_since_ms: i64) -> crate::error::Result<u32> {
    Ok(db
        .waiting_for_command_worker(Some(sweep), alive_since_ms)?
        .first()
        .map_or(0, |(_, n)| *n))
}

pub async fn sweep_snapshot(state: &AppState, name: String) -> ApiResult<SweepSnapshot> {
    // Read before the store: an event published meanwhile is both in the
    // snapshot and replayed, which the page tolerates; none is lost.
    let last_event_id = state.shared.events.last_id();
    let alive_since_ms = state.shared.alive_since_ms();
    Ok(state
        .shared
        .store
        .call(move |db| {
            let row = db.sweep(&name)?;
            let mut curves = db.epochs_of_sweep(&name)?;
            let mut summary = SweepSummary::new(&row);
            summary.waiting_for_command_worker = waiting_in(db, &name, alive_since_ms)?;
            let jobs = db
                .jobs(Some(&name))?
                .iter()
                .map(|job| {
                    summary.jobs.add(job.state.as_str(), 1);
                    JobWithCurve {
                        job: JobView::from(job),
                        curve: curves.remove(&job.id).unwrap_or_default(),
                    }
                })
                .collect();
            Ok(SweepSnapshot {
                name: row.name,
                description: row.description,
                baseline: row.baseline,
                last_event_id,
                summary,
                jobs,
            })
        })
        .await?)
}

/// A job's validation curves, rounded to what a chart can show.
#[derive(Debug, Serialize)]
pub struct CurveView {
    pub job_id: String,
    pub variant: String,
    pub seed: u64,
    pub val_acc: Vec<f64>,
    pub val_loss: Vec<f64>,
}

/// What the sweep page's charts load: the validation curves only, so that
/// the page of a large sweep stays small (the full epochs are in
/// `/api/v1/sweeps/<name>`).
#[derive(Debug, Serialize)]
pub struct Curves {
    pub last_event_id: u64,
    pub jobs: Vec<CurveView>,
}

fn rounded(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    // Five significant digits: finer than a pixel of any chart.
    let scale = 10f64.powi(4 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

pub async fn curves(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Curves>> {
    let snapshot = sweep_snapshot(&state, name).await?;
    Ok(Json(Curves {
        last_event_id: snapshot.last_event_id,
        jobs: snapshot
            .jobs
            .into_iter()
            .map(|j| CurveView {
                val_acc: j.curve.iter().map(|e| rounded(e.val_acc)).collect(),
                val_loss: j.curve.iter().map(|e| rounded(e.val_loss)).collect(),
                job_id: j.job.job_id,
                variant: j.job.variant,
                seed: j.job.seed,
            })
            .collect(),
    }))
}

pub async fn sweep(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<SweepSnapshot>> {
    Ok(Json(sweep_snapshot(&state, name).await?))
}

/// The results table of a sweep, as `sweepctl results` computes it.
pub async fn results_table(
    state: &AppState,
    name: String,
) -> ApiResult<sweep_core::results::ResultsTable> {
    Ok(state
        .shared
        .store
        .call(move |db| db.results(Some(&name)))
        .await?)
}

pub async fn results(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let table = results_table(&state, name).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        table.render(Format::Json),
    )
        .into_response())
}

#[derive(Debug, Serialize)]
pub struct WorkerView {
    pub id: String,
    pub name: String,
    pub host: String,
    pub device: String,
    pub threads: u32,
    pub jobs: Vec<String>,
    pub jobs_done: u64,
    pub last_seen_ms: i64,
    pub alive: bool,
}

pub async fn worker_views(state: &AppState) -> ApiResult<Vec<WorkerView>> {
    let alive_since_ms = state.shared.alive_since_ms();
    let workers = state
        .shared
        .store
        .call(move |db| db.workers(alive_since_ms))
        .await?;
    Ok(workers
        .into_iter()
        .map(|w| WorkerView {
            id: w.id,
            name: w.name,
            host: w.host,
            device: w.device,
            threads: w.threads,
            jobs: w.jobs,
            jobs_done: w.jobs_done,
            last_seen_ms: w.last_seen_ms,
            alive: w.alive,
        })
        .collect())
}

pub async fn workers(State(state): State<AppState>) -> ApiResult<Json<Vec<WorkerView>>> {
    Ok(Json(worker_views(&state).await?))
}

/// One job: its state, epochs, log (events and program output) and the
/// files of its run directory, relative to the state directory.
#[derive(Debug, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobView,
    pub epochs_list: Vec<EpochMetrics>,
    /// In the order of each attempt (see `store::events`).
    pub log: Vec<JobEvent>,
    pub run_dir: String,
    /// The run directory's own files (`config.yaml`, `metrics.json`,
    /// `provenance.json`, a command job's `output.log`, ...).
    pub files: Vec<String>,
    pub figures: Vec<String>,
    /// The sweep's report (`<sweep>/report/index.html`), once written.
    pub report: Option<String>,
    /// Where and how each attempt ran (worker, device, versions, times).
    pub attempts: Vec<sweep_core::provenance::AttemptProvenance>,
}

pub async fn job_detail(state: &AppState, id: String) -> ApiResult<JobDetail> {
    let state_dir = state.shared.state_dir.clone();
    Ok(state
        .shared
        .store
        .call(move |db| {
            let job = db.get_job(&id)?;
            let epochs_list = db.epochs_of(&id)?;
            let attempts = db.attempts_of(&id)?;
            let log = db.events(&id)?;
            let run_dir = crate::layout::run_dir(&state_dir, &job.sweep, &job.variant, job.seed);
            let relative = run_dir
                .strip_prefix(&state_dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let figures = crate::layout::figures(&run_dir)
                .into_iter()
                .map(|name| format!("{relative}/{name}"))
                .collect();
            // None yet (a job not leased) or unreadable: nothing to link.
            let files = crate::layout::plain_files(&run_dir)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, _)| format!("{relative}/{name}"))
                .collect();
            let report = format!("{}/report/index.html", job.sweep);
            let report = state_dir.join(&report).is_file().then_some(report);
            Ok(JobDetail {
                job: JobView::from(&job),
                epochs_list,
                log,
                run_dir: relative,
                files,
                figures,
                report,
                attempts,
            })
        })
        .await?)
}

pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobDetail>> {
    Ok(Json(job_detail(&state, id).await?))
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// Only this sweep's events (and the workers').
    sweep: Option<String>,
    /// Replay from after this id (a page's snapshot's `last_event_id`); the
    /// `Last-Event-ID` header of a reconnecting EventSource wins over it.
    after: Option<u64>,
}

/// Events that arrive within this window after the first go out in one
/// write: with many pages open, a burst of epochs costs one write per page,
/// not one per event and page; the page sees it at most this much later.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
const BATCH_MAX: usize = 256;

/// A comment line every so often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event stream (server-sent events): replay from where the reader was,
/// then live. A reader that fell too far behind gets a `reset` event and
/// reloads.
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query.after);
    let (replay, live) = state.shared.events.subscribe(after);
    let sweep = query.sweep;
    let wanted = move |(_, published): &Numbered| match (&sweep, published.event.sweep()) {
        (Some(wanted), Some(of)) => wanted == of,
        _ => true,
    };
    let head: Vec<Option<Numbered>> = match replay {
        Replay::Reset => vec![None],
        Replay::From(events) => events.into_iter().map(Some).collect(),
    };
    let wanted_live = wanted.clone();
    let live = BroadcastStream::new(live).filter_map(move |item| match item {
        Ok(numbered) => wanted_live(&numbered).then_some(Some(numbered)),
        // Fell behind the channel: the page reloads its snapshot.
        Err(BroadcastStreamRecvError::Lagged(_)) => Some(None),
    });
    let events = tokio_stream::iter(head)
        .filter(move |item| item.as_ref().is_none_or(&wanted))
        .chain(live)
        .chunks_timeout(BATCH_MAX, BATCH_WINDOW)
        .map(|batch| {
            Ok::<_, Infallible>(Bytes::from(batch.iter().map(sse_text).collect::<String>()))
        });
    let keep_alive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| Ok(Bytes::from_static(b":\n\n")));
    // Ends with the server, so that a graceful shutdown does not wait for
    // the browsers to leave.
    let body = futures_util::StreamExt::take_until(
        events.merge(keep_alive),
        state.shared.stopping.clone().cancelled_owned(),
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// One event in the text/event-stream format (its JSON is one line).
fn sse_text(item: &Option<Numbered>) -> String {
    match item {
        None => "event: reset\ndata: {}\n\n".to_string(),
        Some((id, published)) => format!(
            "id: {id}\nevent: {}\ndata: {}\n\n",
            published.event.name(),
            published.json
        ),
    }
}

/// Per variant, its jobs in seed order (the grid's rows).
pub fn by_variant(jobs: &[JobWithCurve]) -> BTreeMap<&str, Vec<&JobWithCurve>> {
    let mut out: BTreeMap<&str, Vec<&JobWithCurve>> = BTreeMap::new();
    for job in jobs {
        out.entry(job.job.variant.as_str()).or_default().push(job);
    }
    for row in out.values_mut() {
        row.sort_by_key(|j| j.job.seed);
    }
    out
}
