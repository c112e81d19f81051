//! The coordinator's durable state: one SQLite database (WAL mode) under the
//! state directory, holding sweeps, jobs with their attempts and leases, the
//! streamed epoch metrics, uploaded artifacts, workers and an event log.
//!
//! Every mutation of the job model happens here, inside a transaction, so that
//! the rules (fencing by attempt, exactly-once completion, lease expiry) live
//! in one place and survive a crash at any point: on restart the database is
//! simply reopened. The connection has one owner, [`Store`], used from
//! `spawn_blocking` so that disk waits never block the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_core::results::RunOutcome;
use sweep_core::sweep::JobSpec;

use crate::error::{CoordinatorError, Result};

/// How many times a job is leased before the coordinator gives up on it when
/// its workers keep disappearing or failing transiently: enough to ride out a
/// few lost machines, few enough that a job that crashes its workers stops.
pub const MAX_ATTEMPTS: u32 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    seeds TEXT NOT NULL,
    metric TEXT NOT NULL,
    baseline TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    results_written INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    variant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config_yaml TEXT NOT NULL,
    epochs INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lease_deadline_ms INTEGER,
    epochs_done INTEGER NOT NULL DEFAULT 0,
    final_metrics TEXT,
    error TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE TABLE IF NOT EXISTS epochs (
    job_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_id);
";

/// Unix time in milliseconds, the unit of every timestamp in the database.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Leased,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Leased => "leased",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => JobState::Pending,
            "leased" => JobState::Leased,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            other => {
                return Err(CoordinatorError::Internal(format!(
                    "unknown job state {other:?} in the database"
                )));
            }
        })
    }

    /// Held by a worker: the states a lease covers.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Leased | JobState::Running)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One row of `jobs`.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
    pub config_yaml: String,
    pub epochs: u32,
    pub state: JobState,
    pub attempt: u32,
    pub worker: Option<String>,
    pub lease_deadline_ms: Option<i64>,
    pub epochs_done: u32,
    pub final_metrics: Option<RunMetrics>,
    pub error: Option<String>,
}

const JOB_COLUMNS: &str = "id, sweep, variant, seed, config_yaml, epochs, state, attempt, worker, \
                           lease_deadline_ms, epochs_done, final_metrics, error";

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(JobRow, String, Option<String>)> {
    let state: String = row.get(6)?;
    let metrics: Option<String> = row.get(11)?;
    Ok((
        JobRow {
            id: row.get(0)?,
            sweep: row.get(1)?,
            variant: row.get(2)?,
            seed: row.get::<_, i64>(3)? as u64,
            config_yaml: row.get(4)?,
            epochs: row.get(5)?,
            state: JobState::Pending,
            attempt: row.get(7)?,
            worker: row.get(8)?,
            lease_deadline_ms: row.get(9)?,
            epochs_done: row.get(10)?,
            final_metrics: None,
            error: row.get(12)?,
        },
        state,
        metrics,
    ))
}

fn finish_job(parts: (JobRow, String, Option<String>)) -> Result<JobRow> {
    let (mut job, state, metrics) = parts;
    job.state = JobState::parse(&state)?;
    job.final_metrics = match metrics {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            CoordinatorError::Internal(format!("job {}: stored metrics: {e}", job.id))
        })?),
        None => None,
    };
    Ok(job)
}

/// Sweep-level fields kept for results.
#[derive(Debug, Clone)]
pub struct SweepRow {
    pub name: String,
    pub baseline: String,
    pub results_written: bool,
}

/// A worker's registration.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub host: String,
    pub device: String,
    pub threads: u32,
    pub slots: u32,
    pub last_seen_ms: i64,
}

/// One line of a job's event log.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub time_ms: i64,
    pub kind: String,
    pub attempt: u32,
    pub message: String,
}

/// What a lease expiry pass did.
#[derive(Debug, Default)]
pub struct Expired {
    /// Jobs returned to pending.
    pub requeued: Vec<String>,
    /// Jobs failed for good (too many attempts), with their sweep.
    pub failed: Vec<(String, String)>,
}

/// Owner of the database connection. Cloning shares it.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) `state_dir/coordinator.sqlite`.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the writer, and a killed process loses no
        // committed transaction. NORMAL sync is crash-safe for the process in
        // WAL mode (only an OS crash can drop the last commits).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a transaction half
            // applied (SQLite rolls it back), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| CoordinatorError::Internal(format!("database task: {e}")))?
    }
}

pub fn event(tx: &Connection, job_id: &str, attempt: u32, kind: &str, message: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO events (job_id, time_ms, kind, attempt, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job_id, now_ms(), kind, attempt, message],
    )?;
    Ok(())
}

pub fn get_job(conn: &Connection, job_id: &str) -> Result<JobRow> {
    let row = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            [job_id],
            job_from_row,
        )
        .optional()?
        .ok_or_else(|| CoordinatorError::NotFound(format!("no job {job_id:?}")))?;
    finish_job(row)
}

pub fn jobs(conn: &Connection, sweep: Option<&str>) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE ?1 IS NULL OR sweep = ?1 ORDER BY rowid"
    ))?;
    let rows = stmt
        .query_map([sweep], job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(finish_job).collect()
}

pub fn sweeps(conn: &Connection) -> Result<Vec<SweepRow>> {
    let mut stmt = conn
        .prepare("SELECT name, baseline, results_written FROM sweeps ORDER BY created_ms, name")?;
    let rows = stmt
        .query_map([], |row| {
            Ok(SweepRow {
                name: row.get(0)?,
                baseline: row.get(1)?,
                results_written: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Sweep metadata from a submission.
pub struct NewSweep {
    pub name: String,
    pub description: String,
    pub seeds: Vec<u64>,
    pub metric: String,
    pub baseline: String,
}

/// Records a sweep and its jobs. Resubmitting the same spec is a no-op (the
/// job ids are stable); a different spec under a known name is refused, since
/// its runs would land in the directories of the old one.
pub fn submit(conn: &mut Connection, sweep: &NewSweep, specs: &[JobSpec]) -> Result<(u32, u32)> {
    let tx = conn.transaction()?;
    let known: Option<String> = tx
        .query_row(
            "SELECT name FROM sweeps WHERE name = ?1",
            [&sweep.name],
            |r| r.get(0),
        )
        .optional()?;
    if known.is_some() {
        let mut stmt = tx.prepare("SELECT id FROM jobs WHERE sweep = ?1 ORDER BY id")?;
        let mut existing = stmt
            .query_map([&sweep.name], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        existing.sort();
        let mut submitted: Vec<String> = specs.iter().map(|j| j.id.clone()).collect();
        submitted.sort();
        if existing != submitted {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "sweep {:?} was already submitted with different jobs; submit the changed spec under a new name",
                sweep.name
            )));
        }
        return Ok((specs.len() as u32, 0));
    }
    let seeds = serde_json::to_string(&sweep.seeds)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    tx.execute(
        "INSERT INTO sweeps (name, description, seeds, metric, baseline, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![sweep.name, sweep.description, seeds, sweep.metric, sweep.baseline, now_ms()],
    )?;
    // Jobs are leased in insertion order: costliest first (see
    // JobSpec::estimated_cost); ties keep the sweep's own order.
    let mut by_cost: Vec<&JobSpec> = specs.iter().collect();
    by_cost.sort_by(|a, b| b.estimated_cost().total_cmp(&a.estimated_cost()));
    for spec in by_cost {
        tx.execute(
            "INSERT INTO jobs (id, sweep, variant, seed, config_yaml, epochs, state, updated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
            params![
                spec.id,
                spec.sweep,
                spec.variant,
                spec.seed as i64,
                spec.config.to_yaml(),
                spec.config.training.epochs,
                now_ms()
            ],
        )?;
        event(
            &tx,
            &spec.id,
            0,
            "submitted",
            &format!("sweep {}", spec.sweep),
        )?;
    }
    tx.commit()?;
    Ok((specs.len() as u32, specs.len() as u32))
}

pub fn register_worker(conn: &mut Connection, worker: &WorkerRow) -> Result<String> {
    let tx = conn.transaction()?;
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))?;
    // Numbered so that ids are unique across restarts of the same worker
    // (each registration is a new incarnation whose leases are its own).
    let id = format!("w{}-{}", count + 1, worker.name);
    let now = now_ms();
    tx.execute(
        "INSERT INTO workers (id, name, host, device, threads, slots, registered_ms, last_seen_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        params![
            id,
            worker.name,
            worker.host,
            worker.device,
            worker.threads,
            worker.slots,
            now
        ],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Workers heard from since `since_ms` (registered or seen): what the
/// worker limit counts, so that dead incarnations do not hold places.
pub fn workers_seen_since(conn: &Connection, since_ms: i64) -> Result<usize> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM workers WHERE last_seen_ms >= ?1",
        params![since_ms],
        |r| r.get(0),
    )?;
    Ok(count as usize)
}

/// Checkpoint bytes held by job `job_id` and by sweep `sweep`, leaving out
/// the job's file `except` (about to be replaced).
pub fn artifact_bytes(
    conn: &Connection,
    sweep: &str,
    job_id: &str,
    except: &str,
) -> Result<(u64, u64)> {
    let job: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE job_id = ?1 AND name != ?2",
        params![job_id, except],
        |r| r.get(0),
    )?;
    let sweep: i64 = conn.query_row(
        "SELECT COALESCE(SUM(a.size), 0) FROM artifacts a JOIN jobs j ON a.job_id = j.id \
         WHERE j.sweep = ?1 AND NOT (a.job_id = ?2 AND a.name = ?3)",
        params![sweep, job_id, except],
        |r| r.get(0),
    )?;
    Ok((job.max(0) as u64, sweep.max(0) as u64))
}

/// Marks the worker as heard from; NotFound when it is unknown (it must register).
pub fn touch_worker(conn: &Connection, worker_id: &str) -> Result<()> {
    let n = conn.execute(
        "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
        params![worker_id, now_ms()],
    )?;
    if n == 0 {
        return Err(CoordinatorError::NotFound(format!(
            "unknown worker {worker_id:?}: register first"
        )));
    }
    Ok(())
}

pub fn workers(conn: &Connection) -> Result<Vec<(WorkerRow, Vec<String>)>> {
    let mut stmt = conn.prepare("SELECT id, name, host, device, threads, slots, last_seen_ms FROM workers ORDER BY registered_ms")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(WorkerRow {
                id: r.get(0)?,
                name: r.get(1)?,
                host: r.get(2)?,
                device: r.get(3)?,
                threads: r.get(4)?,
                slots: r.get(5)?,
                last_seen_ms: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs_of = conn.prepare(
        "SELECT id FROM jobs WHERE worker = ?1 AND state IN ('leased', 'running') ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let jobs = jobs_of
            .query_map([&row.id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        out.push((row, jobs));
    }
    Ok(out)
}

/// Leases the first pending job (the costliest of its sweep, see [`submit`])
/// to `worker_id`, starting a new attempt.
pub fn lease(
    conn: &mut Connection,
    worker_id: &str,
    lease_timeout: Duration,
) -> Result<Option<JobRow>> {
    let tx = conn.transaction()?;
    let id: Option<String> = tx
        .query_row(
            "SELECT id FROM jobs WHERE state = 'pending' ORDER BY rowid LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    let now = now_ms();
    let deadline = now + lease_timeout.as_millis() as i64;
    tx.execute(
        "UPDATE jobs SET state = 'leased', attempt = attempt + 1, worker = ?2, lease_deadline_ms = ?3, \
         error = NULL, updated_ms = ?4 WHERE id = ?1",
        params![id, worker_id, deadline, now],
    )?;
    let job = get_job(&tx, &id)?;
    event(
        &tx,
        &id,
        job.attempt,
        "leased",
        &format!("attempt {} on worker {worker_id}", job.attempt),
    )?;
    tx.commit()?;
    Ok(Some(job))
}

/// Checks that `attempt` is the live attempt of the job, held by `worker_id`:
/// the fence that keeps a worker that lost its lease from writing results.
pub fn check_fence(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    worker_id: &str,
) -> Result<JobRow> {
    let job = get_job(conn, job_id)?;
    if job.attempt != attempt || !job.state.is_active() || job.worker.as_deref() != Some(worker_id)
    {
        return Err(CoordinatorError::FailedPrecondition(format!(
            "job {job_id} attempt {attempt} is stale: the job is {} at attempt {}{}",
            job.state.as_str(),
            job.attempt,
            job.worker
                .as_deref()
                .map(|w| format!(" on {w}"))
                .unwrap_or_default()
        )));
    }
    Ok(job)
}

/// Extends the leases of the listed jobs that the worker still holds. Returns
/// (cancelled, lost): the jobs it must stop.
pub fn heartbeat(
    conn: &mut Connection,
    worker_id: &str,
    held: &[(String, u32)],
    lease_timeout: Duration,
) -> Result<(Vec<String>, Vec<String>)> {
    let tx = conn.transaction()?;
    touch_worker(&tx, worker_id)?;
    let deadline = now_ms() + lease_timeout.as_millis() as i64;
    let (mut cancelled, mut lost) = (Vec::new(), Vec::new());
    for (job_id, attempt) in held {
        match get_job(&tx, job_id) {
            Ok(job) if job.state == JobState::Cancelled => cancelled.push(job_id.clone()),
            Ok(job)
                if job.state.is_active()
                    && job.attempt == *attempt
                    && job.worker.as_deref() == Some(worker_id) =>
            {
                tx.execute(
                    "UPDATE jobs SET lease_deadline_ms = ?2 WHERE id = ?1",
                    params![job_id, deadline],
                )?;
            }
            Ok(_) | Err(CoordinatorError::NotFound(_)) => lost.push(job_id.clone()),
            Err(other) => return Err(other),
        }
    }
    tx.commit()?;
    Ok((cancelled, lost))
}

/// What ingesting an epoch changed.
pub struct EpochIngest {
    pub job: JobRow,
    /// False when this (job, epoch, attempt) was already recorded: a re-sent report.
    pub new: bool,
    /// Every epoch recorded so far, in order (to rebuild metrics.json).
    pub epochs: Vec<EpochMetrics>,
}

pub fn report_epoch(
    conn: &mut Connection,
    worker_id: &str,
    job_id: &str,
    attempt: u32,
    metrics: &EpochMetrics,
) -> Result<EpochIngest> {
    let tx = conn.transaction()?;
    let job = check_fence(&tx, job_id, attempt, worker_id)?;
    let text =
        serde_json::to_string(metrics).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    let previous: Option<u32> = tx
        .query_row(
            "SELECT attempt FROM epochs WHERE job_id = ?1 AND epoch = ?2",
            params![job_id, metrics.epoch],
            |r| r.get(0),
        )
        .optional()?;
    let new = previous != Some(attempt);
    if new {
        // A later attempt that redoes an epoch (resumed from an older
        // checkpoint) replaces what the lost attempt reported.
        tx.execute(
            "INSERT OR REPLACE INTO epochs (job_id, epoch, attempt, metrics) VALUES (?1, ?2, ?3, ?4)",
            params![job_id, metrics.epoch, attempt, text],
        )?;
        tx.execute(
            "DELETE FROM epochs WHERE job_id = ?1 AND epoch > ?2",
            params![job_id, metrics.epoch],
        )?;
        tx.execute(
            "UPDATE jobs SET state = 'running', epochs_done = ?2, updated_ms = ?3 WHERE id = ?1",
            params![job_id, metrics.epoch, now_ms()],
        )?;
        event(
            &tx,
            job_id,
            attempt,
            "epoch",
            &format!(
                "epoch {}/{}: train loss {:.4}, val loss {:.4}, val acc {:.4}",
                metrics.epoch, job.epochs, metrics.train_loss, metrics.val_loss, metrics.val_acc
            ),
        )?;
    }
    let epochs = epochs_of(&tx, job_id)?;
    tx.commit()?;
    Ok(EpochIngest { job, new, epochs })
}

pub fn epochs_of(conn: &Connection, job_id: &str) -> Result<Vec<EpochMetrics>> {
    let mut stmt = conn.prepare("SELECT metrics FROM epochs WHERE job_id = ?1 ORDER BY epoch")?;
    let texts = stmt
        .query_map([job_id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    texts
        .iter()
        .map(|t| {
            serde_json::from_str(t)
                .map_err(|e| CoordinatorError::Internal(format!("stored epoch: {e}")))
        })
        .collect()
}

pub fn record_artifact(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    name: &str,
    sha256: &str,
    size: u64,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO artifacts (job_id, name, sha256, size, attempt) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job_id, name, sha256, size as i64, attempt],
    )?;
    event(
        conn,
        job_id,
        attempt,
        "artifact",
        &format!(
            "{name} ({size} bytes, sha256 {})",
            &sha256[..12.min(sha256.len())]
        ),
    )?;
    Ok(())
}

/// The final word of an attempt.
pub enum Outcome {
    Succeeded(RunMetrics),
    Failed { message: String, permanent: bool },
}

/// Commits an attempt's outcome, once: the fence refuses a stale attempt and
/// any report after the job ended. Returns the job as it now stands.
pub fn complete(
    conn: &mut Connection,
    worker_id: &str,
    job_id: &str,
    attempt: u32,
    outcome: &Outcome,
) -> Result<JobRow> {
    let tx = conn.transaction()?;
    let job = check_fence(&tx, job_id, attempt, worker_id)?;
    let now = now_ms();
    match outcome {
        Outcome::Succeeded(metrics) => {
            let text = serde_json::to_string(metrics)
                .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            tx.execute(
                "UPDATE jobs SET state = 'succeeded', final_metrics = ?2, epochs_done = ?3, worker = NULL, \
                 lease_deadline_ms = NULL, updated_ms = ?4 WHERE id = ?1",
                params![job_id, text, metrics.epochs.len() as u32, now],
            )?;
            let test = metrics
                .test
                .map(|t| format!("test acc {:.4}", t.test_acc))
                .unwrap_or_default();
            event(&tx, job_id, attempt, "succeeded", &test)?;
        }
        Outcome::Failed { message, permanent } => {
            let retry = !permanent && job.attempt < MAX_ATTEMPTS;
            let state = if retry { "pending" } else { "failed" };
            tx.execute(
                "UPDATE jobs SET state = ?2, error = ?3, worker = NULL, lease_deadline_ms = NULL, updated_ms = ?4 WHERE id = ?1",
                params![job_id, state, message, now],
            )?;
            let kind = if retry { "retry" } else { "failed" };
            event(&tx, job_id, attempt, kind, message)?;
        }
    }
    let job = get_job(&tx, job_id)?;
    tx.commit()?;
    Ok(job)
}

/// Returns jobs whose lease deadline has passed to pending (or fails them
/// after [`MAX_ATTEMPTS`]).
pub fn expire_leases(conn: &mut Connection) -> Result<Expired> {
    let tx = conn.transaction()?;
    let now = now_ms();
    let mut stmt = tx.prepare(
        "SELECT id, sweep, attempt, worker FROM jobs WHERE state IN ('leased', 'running') AND lease_deadline_ms < ?1",
    )?;
    let stale = stmt
        .query_map([now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    let mut expired = Expired::default();
    for (id, sweep, attempt, worker) in stale {
        let worker = worker.unwrap_or_default();
        if attempt >= MAX_ATTEMPTS {
            let message = format!(
                "lease of attempt {attempt} on {worker} expired; giving up after {MAX_ATTEMPTS} attempts"
            );
            tx.execute(
                "UPDATE jobs SET state = 'failed', error = ?2, worker = NULL, lease_deadline_ms = NULL, updated_ms = ?3 WHERE id = ?1",
                params![id, message, now],
            )?;
            event(&tx, &id, attempt, "failed", &message)?;
            expired.failed.push((id, sweep));
        } else {
            tx.execute(
                "UPDATE jobs SET state = 'pending', worker = NULL, lease_deadline_ms = NULL, updated_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            event(
                &tx,
                &id,
                attempt,
                "expired",
                &format!("lease on {worker} expired; the job returns to pending"),
            )?;
            expired.requeued.push(id);
        }
    }
    tx.commit()?;
    Ok(expired)
}

/// Cancels every job of a sweep, or one job, that has not ended. Returns the
/// affected sweeps and the number of jobs cancelled.
pub fn cancel(
    conn: &mut Connection,
    sweep: Option<&str>,
    job_id: Option<&str>,
) -> Result<(Vec<String>, u32)> {
    let tx = conn.transaction()?;
    let targets: Vec<(String, String, u32)> = {
        let mut stmt = tx.prepare(
            "SELECT id, sweep, attempt FROM jobs WHERE state IN ('pending', 'leased', 'running') \
             AND (?1 IS NULL OR sweep = ?1) AND (?2 IS NULL OR id = ?2)",
        )?;
        stmt.query_map(params![sweep, job_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    if targets.is_empty() {
        // Distinguish "nothing to cancel" from "no such thing".
        if let Some(id) = job_id {
            get_job(&tx, id)?;
        }
        if let Some(name) = sweep {
            let known: Option<String> = tx
                .query_row("SELECT name FROM sweeps WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if known.is_none() {
                return Err(CoordinatorError::NotFound(format!("no sweep {name:?}")));
            }
        }
    }
    let now = now_ms();
    let mut sweeps = Vec::new();
    for (id, sweep, attempt) in &targets {
        // The worker keeps its lease fields until it hears of the
        // cancellation through its heartbeat.
        tx.execute(
            "UPDATE jobs SET state = 'cancelled', updated_ms = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        event(&tx, id, *attempt, "cancelled", "cancelled on request")?;
        if !sweeps.contains(sweep) {
            sweeps.push(sweep.clone());
        }
    }
    tx.commit()?;
    Ok((sweeps, targets.len() as u32))
}

pub fn events(conn: &Connection, job_id: &str) -> Result<Vec<EventRow>> {
    get_job(conn, job_id)?;
    let mut stmt = conn.prepare(
        "SELECT time_ms, kind, attempt, message FROM events WHERE job_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([job_id], |r| {
            Ok(EventRow {
                time_ms: r.get(0)?,
                kind: r.get(1)?,
                attempt: r.get(2)?,
                message: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The finished runs of a sweep, and how many jobs have not ended.
pub fn outcomes(conn: &Connection, sweep: &str) -> Result<(SweepRow, Vec<RunOutcome>, usize)> {
    let row = sweeps(conn)?
        .into_iter()
        .find(|s| s.name == sweep)
        .ok_or_else(|| CoordinatorError::NotFound(format!("no sweep {sweep:?}")))?;
    let mut outcomes = Vec::new();
    let mut pending = 0;
    for job in jobs(conn, Some(sweep))? {
        if !job.state.is_terminal() {
            pending += 1;
        }
        if job.state != JobState::Succeeded {
            continue;
        }
        let Some(metrics) = job.final_metrics else {
            continue;
        };
        let Some(test) = metrics.test else { continue };
        outcomes.push(RunOutcome {
            variant: job.variant,
            seed: job.seed,
            test_acc: test.test_acc,
            best_val_acc: metrics.best_val_acc.unwrap_or(f64::NAN),
            best_epoch: metrics.best_epoch,
            train_seconds: metrics.train_seconds,
        });
    }
    Ok((row, outcomes, pending))
}

pub fn mark_results_written(conn: &Connection, sweep: &str) -> Result<()> {
    conn.execute(
        "UPDATE sweeps SET results_written = 1 WHERE name = ?1",
        [sweep],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep_core::config::ExperimentConfig;

    const CONFIG: &str = "name: v\nseed: 1\nmodel: {type: fc, input_size: 784, hidden_sizes: [8], num_classes: 10}\n";

    fn store_with_job() -> (tempfile::TempDir, Connection, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("db.sqlite")).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        let config = ExperimentConfig::from_yaml(CONFIG, Path::new("test")).expect("config");
        let job = JobSpec {
            id: "v-seed-1-00000000".into(),
            sweep: "s".into(),
            variant: "v".into(),
            seed: 1,
            config,
        };
        let sweep = NewSweep {
            name: "s".into(),
            description: String::new(),
            seeds: vec![1],
            metric: "test_acc".into(),
            baseline: "v".into(),
        };
        assert_eq!(
            submit(&mut conn, &sweep, std::slice::from_ref(&job)).expect("submit"),
            (1, 1)
        );
        // Resubmitting the same spec adds nothing.
        assert_eq!(
            submit(&mut conn, &sweep, std::slice::from_ref(&job)).expect("resubmit"),
            (1, 0)
        );
        (dir, conn, job.id)
    }

    fn worker(conn: &mut Connection, name: &str) -> String {
        let row = WorkerRow {
            id: String::new(),
            name: name.into(),
            host: "h".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            last_seen_ms: 0,
        };
        register_worker(conn, &row).expect("register")
    }

    #[test]
    fn expired_lease_fences_the_old_attempt_and_completion_is_once() {
        let (_dir, mut conn, id) = store_with_job();
        let (a, b) = (worker(&mut conn, "a"), worker(&mut conn, "b"));
        let first = lease(&mut conn, &a, Duration::ZERO)
            .expect("lease")
            .expect("a job");
        assert_eq!(first.attempt, 1);
        std::thread::sleep(Duration::from_millis(5));
        let expired = expire_leases(&mut conn).expect("expire");
        assert_eq!(expired.requeued, vec![id.clone()]);
        let second = lease(&mut conn, &b, Duration::from_secs(60))
            .expect("lease")
            .expect("a job");
        assert_eq!(second.attempt, 2);

        // The first attempt is stale for everything it may still send.
        let epoch = EpochMetrics {
            epoch: 1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.5,
            lr: 0.1,
            seconds: 1.0,
        };
        assert!(matches!(
            report_epoch(&mut conn, &a, &id, 1, &epoch),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let done = Outcome::Succeeded(RunMetrics::default());
        assert!(matches!(
            complete(&mut conn, &a, &id, 1, &done),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let (cancelled, lost) =
            heartbeat(&mut conn, &a, &[(id.clone(), 1)], Duration::from_secs(60))
                .expect("heartbeat");
        assert!(cancelled.is_empty());
        assert_eq!(lost, vec![id.clone()]);

        // Re-sent epochs are ingested once; completion commits once.
        assert!(
            report_epoch(&mut conn, &b, &id, 2, &epoch)
                .expect("epoch")
                .new
        );
        assert!(
            !report_epoch(&mut conn, &b, &id, 2, &epoch)
                .expect("epoch again")
                .new
        );
        assert_eq!(
            complete(&mut conn, &b, &id, 2, &done)
                .expect("complete")
                .state,
            JobState::Succeeded
        );
        assert!(matches!(
            complete(&mut conn, &b, &id, 2, &done),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let (_, outcomes, pending) = outcomes(&conn, "s").expect("outcomes");
        assert_eq!(pending, 0);
        assert!(outcomes.is_empty(), "no test metrics, so no outcome");
    }

    #[test]
    fn permanent_failures_are_not_retried_and_transient_ones_are() {
        let (_dir, mut conn, id) = store_with_job();
        let a = worker(&mut conn, "a");
        lease(&mut conn, &a, Duration::from_secs(60)).expect("lease");
        let transient = Outcome::Failed {
            message: "oom".into(),
            permanent: false,
        };
        assert_eq!(
            complete(&mut conn, &a, &id, 1, &transient)
                .expect("complete")
                .state,
            JobState::Pending
        );
        lease(&mut conn, &a, Duration::from_secs(60)).expect("lease");
        let permanent = Outcome::Failed {
            message: "bad config".into(),
            permanent: true,
        };
        assert_eq!(
            complete(&mut conn, &a, &id, 2, &permanent)
                .expect("complete")
                .state,
            JobState::Failed
        );
        assert!(
            lease(&mut conn, &a, Duration::from_secs(60))
                .expect("lease")
                .is_none()
        );
    }
}
