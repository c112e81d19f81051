//! The HTML pages, rendered on the server with maud (which escapes every
//! value it inserts: a sweep description or an error message is text, never
//! markup), and the fragments the page script swaps in when events arrive.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::AppState;
use super::api::{self, ApiResult};
use crate::store;

/// Characters left as they are in a URL path segment: those of names.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// What the body tells the page script: which page, which sweep or job, and
/// the last event this render already holds.
#[derive(Default)]
struct PageContext<'a> {
    page: &'a str,
    sweep: Option<&'a str>,
    job: Option<&'a str>,
    last_event_id: u64,
}

fn layout(title: &str, context: PageContext<'_>, content: Markup) -> Html<String> {
    let nav = |href: &str, label: &str, page: &str| {
        html! { a href=(href) class=[(context.page == page).then_some("active")] { (label) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · sweeprun" }
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body data-page=(context.page) data-sweep=[context.sweep] data-job=[context.job]
                    data-last-event=(context.last_event_id) {
                    header {
                        span.brand { "sweeprun" }
                        nav {
                            (nav("/", "Sweeps", "sweeps"))
                            (nav("/workers", "Workers", "workers"))
                        }
                        span #live title="live updates" { "○ connecting" }
                    }
                    main { (content) }
                }
            }
        }
        .into_string(),
    )
}

#[derive(serde::Deserialize)]
pub struct FragmentQuery {
    /// Only the part that changes (for the page script), not the whole page.
    #[serde(default)]
    fragment: bool,
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * f64::from(part) / f64::from(whole)
    }
}

fn sweeps_table(sweeps: &[api::SweepSummary]) -> Markup {
    html! {
        @if sweeps.is_empty() {
            p.empty { "No sweep has been submitted yet. Submit one with "
                code { "sweepctl submit <SWEEP_DIR>" } " or start the coordinator with "
                code { "--config" } "." }
        } @else {
            table.list {
                thead { tr {
                    th { "sweep" } th { "description" } th { "progress" }
                    th.num { "pending" } th.num { "running" } th.num { "succeeded" }
                    th.num { "failed" } th.num { "cancelled" }
                } }
                tbody {
                    @for s in sweeps {
                        tr {
                            td { a href={ "/sweeps/" (seg(&s.name)) } { (s.name) } }
                            td.desc { (s.description) }
                            td { (progress(s)) }
                            td.num { (s.jobs.pending) } td.num { (s.jobs.running) } td.num { (s.jobs.succeeded) }
                            td.num.failed[s.jobs.failed > 0] { (s.jobs.failed) } td.num { (s.jobs.cancelled) }
                        }
                    }
                }
            }
        }
    }
}

fn progress(s: &api::SweepSummary) -> Markup {
    let jobs = &s.jobs;
    let done = percent(jobs.succeeded, jobs.total);
    let failed = percent(jobs.failed + jobs.cancelled, jobs.total);
    let running = percent(jobs.running, jobs.total);
    html! {
        div.progress title={ (jobs.ended()) " of " (jobs.total) " jobs ended" } {
            // Widths through the SVG, not inline styles, which the policy forbids.
            svg viewBox="0 0 100 10" preserveAspectRatio="none" {
                rect.done x="0" y="0" height="10" width=(format!("{done:.2}")) {}
                rect.failed x=(format!("{done:.2}")) y="0" height="10" width=(format!("{failed:.2}")) {}
                rect.running x=(format!("{:.2}", done + failed)) y="0" height="10" width=(format!("{running:.2}")) {}
            }
            span { (jobs.ended()) "/" (jobs.total) @if s.finished { " · finished" } }
        }
    }
}

pub async fn sweeps(
    State(state): State<AppState>,
    Query(query): Query<FragmentQuery>,
) -> ApiResult<Response> {
    let last_event_id = state.shared.events.last_id();
    let sweeps = api::sweep_summaries(&state).await?;
    let table = sweeps_table(&sweeps);
    if query.fragment {
        return Ok(Html(table.into_string()).into_response());
    }
    Ok(layout(
        "Sweeps",
        PageContext {
            page: "sweeps",
            last_event_id,
            ..Default::default()
        },
        html! {
            h1 { "Sweeps" }
            section #sweeps data-live="/?fragment=true" data-on="job sweep" { (table) }
        },
    )
    .into_response())
}

/// The grid: a row per variant, a cell per seed.
fn grid(jobs: &[api::JobWithCurve]) -> Markup {
    let rows = api::by_variant(jobs);
    let width = rows.values().map(Vec::len).max().unwrap_or(0);
    // Columns named by seed when every variant has the same seeds (the
    // usual case); adaptive seeds make rows of their own lengths.
    let seeds_of =
        |row: &Vec<&api::JobWithCurve>| row.iter().map(|j| j.job.seed).collect::<Vec<_>>();
    let first = rows.values().next().map(seeds_of).unwrap_or_default();
    let shared = rows.values().all(|row| seeds_of(row) == first);
    html! {
        table.grid {
            thead { tr { th { "variant" } @for i in 0..width {
                th { "seed " @if shared { (first[i]) } @else { "#" (i + 1) } }
            } } }
            tbody {
                @for (variant, row) in &rows {
                    tr {
                        th scope="row" { (variant) }
                        @for job in row { (cell(job)) }
                        @for _ in row.len()..width { td.cell.none {} }
                    }
                }
            }
        }
    }
}

fn cell(job: &api::JobWithCurve) -> Markup {
    let latest_val = job.curve.last().filter(|_| job.job.state != "pending");
    let accuracy = match (job.job.test_acc, latest_val) {
        (Some(test), _) => format!("test {:.2}%", 100.0 * test),
        (None, Some(epoch)) => format!("val {:.2}%", 100.0 * epoch.val_acc),
        (None, None) => String::new(),
    };
    let job = &job.job;
    html! {
        td.cell.{ "st-" (job.state) } id={ "cell-" (job.job_id) } title=(job.error) {
            a href={ "/jobs/" (seg(&job.job_id)) } {
                span.seed { "seed " (job.seed) }
                span.state { (job.state) }
                span.ep { (job.epoch) "/" (job.epochs) }
                span.acc { (accuracy) }
                span.wk { (job.worker) }
            }
        }
    }
}

/// The results table as `sweepctl results` shows it, its notes, and a link
/// to the sweep's report once it is written.
fn results_fragment(table: &sweep_core::results::ResultsTable, report: bool) -> Markup {
    let (header, rows) = table.cells();
    let names = 1 + table.swept_keys.len();
    html! {
        @if !rows.is_empty() {
            table.results {
                thead { tr { @for (i, h) in header.iter().enumerate() { th.num[i >= names] { (h) } } } }
                tbody {
                    @for row in &rows {
                        tr.baseline[row[0] == table.baseline] {
                            @for (i, c) in row.iter().enumerate() { td.num[i >= names] { (c) } }
                        }
                    }
                }
            }
        }
        @for note in table.notes() { p.note { (note) } }
        @if report {
            p.links { a href={ "/files/" (seg(&table.sweep)) "/report/index.html" } { "The sweep's report" }
                " (figures per variant and per run, confusion matrices, failures)" }
        }
    }
}

pub async fn sweep(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Response> {
    let snapshot = api::sweep_snapshot(&state, name.clone()).await?;
    let table = api::results_table(&state, name.clone()).await?;
    let jobs = snapshot.jobs;
    let report = state.shared.state_dir.join(&name).join("report/index.html");
    let sweep_url = format!("/sweeps/{}", seg(&name));
    Ok(layout(
        &name,
        PageContext {
            page: "sweep",
            sweep: Some(&name),
            last_event_id: snapshot.last_event_id,
            ..Default::default()
        },
        html! {
            h1 { "Sweep " (name) }
            @if !snapshot.description.is_empty() { p.desc { (snapshot.description) } }
            div #progress { (progress(&snapshot.summary)) }
            // Live: a worker that registers or takes a job can end the wait.
            div #waiting data-live={ (sweep_url) "/waiting" } data-on="worker job sweep reset" {
                (waiting_note(snapshot.summary.waiting_for_command_worker))
            }
            p.links {
                a href={ "/api/v1/sweeps/" (seg(&name)) } { "JSON" } " · "
                a href={ "/api/v1/sweeps/" (seg(&name)) "/results" } { "results JSON" }
            }
            h2 { "Jobs" }
            section #grid data-live={ (sweep_url) "/grid" } data-on="sweep reset" { (grid(&jobs)) }
            h2 { "Learning curves" }
            p.note { "Mean over seeds, band ± one standard deviation; updated as epochs arrive." }
            section #curves {
                noscript { "The curves are drawn by the page script; the report has them as static figures." }
            }
            h2 { "Results" }
            section #results data-live={ (sweep_url) "/results" } data-on="done sweep reset" {
                (results_fragment(&table, report.is_file()))
            }
        },
    )
    .into_response())
}

pub async fn sweep_grid(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Html<String>> {
    let snapshot = api::sweep_snapshot(&state, name).await?;
    Ok(Html(grid(&snapshot.jobs).into_string()))
}

/// Why a sweep's command jobs wait, if they do (nothing when none waits).
fn waiting_note(waiting: u32) -> Markup {
    html! {
        @match waiting {
            0 => {}
            n => p.waiting {
                (n) @if n == 1 { " command job waits" } @else { " command jobs wait" }
                ": no connected worker runs a sweep's own program. Start one with "
                code { "sweep-worker --allow-commands" } " (or local workers with "
                code { "sweep-coordinator --allow-commands" } ")."
            }
        }
    }
}

pub async fn sweep_waiting(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Html<String>> {
    let waiting = api::waiting_for_command_worker(&state, name).await?;
    Ok(Html(waiting_note(waiting).into_string()))
}

pub async fn sweep_results(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Html<String>> {
    let report = state.shared.state_dir.join(&name).join("report/index.html");
    let table = api::results_table(&state, name).await?;
    Ok(Html(
        results_fragment(&table, report.is_file()).into_string(),
    ))
}

fn ago(ms: i64) -> String {
    let seconds = (store::now_ms() - ms).max(0) / 1000;
    match seconds {
        0..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

pub async fn workers(
    State(state): State<AppState>,
    Query(query): Query<FragmentQuery>,
) -> ApiResult<Response> {
    let last_event_id = state.shared.events.last_id();
    let workers = api::worker_views(&state).await?;
    let table = html! {
        @if workers.is_empty() {
            p.empty { "No worker has connected yet. Start one with "
                code { "sweep-worker --connect HOST:PORT" } "." }
        } @else {
            table.list {
                thead { tr {
                    th { "worker" } th { "host" } th { "device" } th.num { "threads" }
                    th { "current job" } th { "last heartbeat" } th.num { "jobs done" }
                } }
                tbody {
                    @for w in &workers {
                        tr.gone[!w.alive] {
                            td { (w.name) } td { (w.host) } td { (w.device) }
                            td.num { @if w.threads == 0 { "per job" } @else { (w.threads) } }
                            td { @for job in &w.jobs { a href={ "/jobs/" (seg(job)) } { (job) } " " } }
                            td { (ago(w.last_seen_ms)) @if !w.alive { " (gone)" } }
                            td.num { (w.jobs_done) }
                        }
                    }
                }
            }
        }
    };
    if query.fragment {
        return Ok(Html(table.into_string()).into_response());
    }
    Ok(layout(
        "Workers",
        PageContext {
            page: "workers",
            last_event_id,
            ..Default::default()
        },
        html! {
            h1 { "Workers" }
            section #workers data-live="/workers?fragment=true" data-on="job worker sweep" { (table) }
        },
    )
    .into_response())
}

/// `/files/...` of a path relative to the state directory.
fn file_url(relative: &str) -> String {
    format!(
        "/files/{}",
        relative.split('/').map(seg).collect::<Vec<_>>().join("/")
    )
}

/// Why a job's page shows no figure: they are drawn by the analysis after a
/// built-in job succeeds, so a job that ended otherwise never gets them.
fn no_figures(job: &crate::events::JobView) -> &'static str {
    match job.state {
        "failed" => "None: the job failed, and figures are drawn only after a run succeeds.",
        "cancelled" => {
            "None: the job was cancelled, and figures are drawn only after a run succeeds."
        }
        "succeeded" => {
            "None: figures come from the built-in trainer's analysis, and this run has none (a command job, or its analysis failed)."
        }
        _ => "No figures yet: they are drawn when the job succeeds.",
    }
}

pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<FragmentQuery>,
) -> ApiResult<Response> {
    let last_event_id = state.shared.events.last_id();
    let detail = api::job_detail(&state, id.clone()).await?;
    let job = &detail.job;
    let body = html! {
        dl.facts {
            dt { "state" } dd.{ "st-" (job.state) } { (job.state) }
            dt { "sweep" } dd { a href={ "/sweeps/" (seg(&job.sweep)) } { (job.sweep) } }
            dt { "variant · seed" } dd { (job.variant) " · " (job.seed) }
            dt { "attempt" } dd { (job.attempt) }
            dt { "epochs" } dd { (job.epoch) "/" (job.epochs) }
            @if !job.worker.is_empty() { dt { "worker" } dd { (job.worker) } }
            @if let Some(acc) = job.test_acc { dt { "test accuracy" } dd { (format!("{:.2}%", 100.0 * acc)) } }
            @if !job.error.is_empty() { dt { "error" } dd.error { (job.error) } }
            dt { "run directory" } dd { code { (detail.run_dir) } }
        }
        h2 { "Epochs" }
        @if detail.epochs_list.is_empty() { p.empty { "No epoch reported yet." } } @else {
            table.list {
                thead { tr { th.num { "epoch" } th.num { "train loss" } th.num { "train acc %" }
                    th.num { "val loss" } th.num { "val acc %" } th.num { "lr" } th.num { "seconds" } } }
                tbody {
                    @for e in &detail.epochs_list {
                        tr {
                            td.num { (e.epoch) }
                            td.num { (format!("{:.4}", e.train_loss)) }
                            td.num { (format!("{:.2}", 100.0 * e.train_acc)) }
                            td.num { (format!("{:.4}", e.val_loss)) }
                            td.num { (format!("{:.2}", 100.0 * e.val_acc)) }
                            td.num { (format!("{:.2e}", e.lr)) }
                            td.num { (format!("{:.1}", e.seconds)) }
                        }
                    }
                }
            }
        }
        h2 { "Attempts" }
        @if detail.attempts.is_empty() { p.empty { "Not run yet." } } @else {
            table.list {
                thead { tr { th.num { "attempt" } th { "worker" } th { "host" } th { "device" }
                    th.num { "threads" } th { "libtorch · sweeprun" } th { "started" } th { "ended" } th { "outcome" } } }
                tbody {
                    @for a in &detail.attempts {
                        tr {
                            td.num { (a.attempt) }
                            td { (a.worker_name) }
                            td { (a.host) }
                            td { (a.device_type().unwrap_or_default()) }
                            td.num { (a.threads) }
                            // A command job's program brings its own libraries.
                            td { @if a.libtorch_version.is_empty() { "—" } @else { (a.libtorch_version) }
                                " · " (a.sweeprun_version)
                                @if !a.git_commit.is_empty() { " (" (a.git_commit) ")" } }
                            td { @if a.started_ms > 0 { (ago(a.started_ms)) } }
                            td { @if a.ended_ms > 0 { (ago(a.ended_ms)) } }
                            td.msg { (a.outcome) @if !a.message.is_empty() { ": " (a.message) } }
                        }
                    }
                }
            }
        }
        h2 { "Files" }
        @if detail.files.is_empty() { p.empty { "None yet: the run directory is written when the job is leased." } } @else {
            p.links {
                @for (i, f) in detail.files.iter().enumerate() {
                    @if i > 0 { " · " }
                    a href=(file_url(f)) { (f.rsplit('/').next().unwrap_or(f)) }
                }
            }
        }
        @if let Some(report) = &detail.report {
            p.links { a href=(file_url(report)) { "The sweep's report" }
                " (every variant's curves and results, over seeds)" }
        }
        h2 { "Figures" }
        @if detail.figures.is_empty() { p.empty { (no_figures(job)) } } @else {
            div.figures {
                @for f in &detail.figures {
                    @let url = file_url(f);
                    figure { a href=(url) { img src=(url) alt=(f) loading="lazy"; }
                        figcaption { (f.rsplit('/').next().unwrap_or(f)) } }
                }
            }
        }
        h2 { "Log" }
        @if detail.log.is_empty() { p.empty { "Nothing logged yet." } } @else {
            table.list.log {
                thead { tr { th { "time" } th.num { "attempt" } th { "event" } th { "message" } } }
                tbody {
                    @for line in &detail.log {
                        tr { td { (ago(line.time_ms)) } td.num { (line.attempt) } td { (line.kind) } td.msg { (line.message) } }
                    }
                }
            }
        }
    };
    if query.fragment {
        return Ok(Html(body.into_string()).into_response());
    }
    let live = format!("/jobs/{}?fragment=true", seg(&id));
    Ok(layout(
        &id,
        PageContext {
            page: "job",
            sweep: Some(&job.sweep),
            job: Some(&id),
            last_event_id,
        },
        html! {
            h1 { "Job " (id) }
            section #job data-live=(live) data-on="job epoch sweep reset" data-job=(id) { (body) }
        },
    )
    .into_response())
}

pub fn login(message: Option<&str>) -> Html<String> {
    layout(
        "Sign in",
        PageContext {
            page: "login",
            ..Default::default()
        },
        html! {
            h1 { "Sign in" }
            p { "This dashboard needs the coordinator's admin token (the file given to "
                code { "--admin-token-file" } ")." }
            @if let Some(message) = message { p.error { (message) } }
            form method="post" action="/login" {
                label { "Admin token " input type="password" name="token" autocomplete="current-password" autofocus; }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The page script and stylesheet, compiled into the binary.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (
            include_str!("assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (include_str!("assets/app.css"), "text/css; charset=utf-8"),
        _ => return not_found().await,
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    response
}
