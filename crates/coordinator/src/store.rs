//! The coordinator's durable state: one SQLite database (WAL mode) under the
//! state directory, holding sweeps, jobs with their attempts and leases, the
//! streamed epoch metrics, uploaded artifacts, workers and an event log.
//!
//! Every mutation of the job model happens here, inside a transaction, so that
//! the rules (fencing by attempt, exactly-once completion, lease expiry) live
//! in one place and survive a crash at any point: on restart the database is
//! simply reopened. The connection has one owner, [`Store`], whose own thread
//! runs the calls queued to it, so that disk waits never block the async
//! runtime; its callers get a [`Db`], whose methods are the queries and rules, and never
//! the connection, so that every SQL statement stays in this file.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashMap, HashSet};
use sweep_core::metrics::{EpochMetrics, RunMetrics};
use sweep_core::results::{self, ResultsTable, RunOutcome};

use sweep_core::command::{COMMAND_MAX_EPOCHS, JobConfig};
use sweep_core::lease::{LeasedJob, StoredFile};
use sweep_core::provenance::{AttemptProvenance, RunProvenance};
use sweep_core::status::{JobEvent, JobStatus, StatusSnapshot, SweepStatus, WorkerStatus};
use sweep_core::sweep::{JobSpec, SeedPolicy, extra_seed};

use crate::error::{CoordinatorError, Result};
use crate::limits::Limits;

/// How many times a job is leased before the coordinator gives up on it when
/// its workers keep disappearing or failing transiently: enough to ride out a
/// few lost machines, few enough that a job that crashes its workers stops.
/// Each `sweepctl retry` grants this many more.
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
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_id TEXT NOT NULL,
    leased_ms INTEGER NOT NULL,
    started_ms INTEGER,
    ended_ms INTEGER,
    outcome TEXT NOT NULL,
    message TEXT,
    provenance TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS job_output (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);
";

/// Columns added after the first release, with their definitions: a state
/// directory written by an older coordinator gains them on open (SQLite's
/// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
const ADDED_COLUMNS: [(&str, &str, &str); 6] = [
    // Adaptive seeds: the sweep's SeedPolicy as JSON (NULL: fixed seeds).
    ("sweeps", "seed_policy", "TEXT"),
    // Grid/random sweeps: {"keys": [...], "values": {variant: [...]}} as JSON.
    ("sweeps", "space", "TEXT"),
    // A command job (the user's program): leased only to workers that opted in.
    ("jobs", "command", "INTEGER NOT NULL DEFAULT 0"),
    // The worker was started with --allow-commands.
    ("workers", "allow_commands", "INTEGER NOT NULL DEFAULT 0"),
    // Jobs the worker completed successfully (the dashboard's workers page).
    ("workers", "jobs_done", "INTEGER NOT NULL DEFAULT 0"),
    // The attempt after which a job fails for good: MAX_ATTEMPTS (checked
    // by a test), raised by each retry on request.
    ("jobs", "attempt_limit", "INTEGER NOT NULL DEFAULT 5"),
];

/// Output a command job's program may leave in the database per attempt:
/// enough for a long run's log lines, bounded against a program (or a
/// worker) that prints without end. The worker keeps the full output locally.
pub const MAX_OUTPUT_BYTES_PER_ATTEMPT: i64 = 4 << 20;

fn add_missing_columns(conn: &Connection) -> Result<()> {
    for (table, column, definition) in ADDED_COLUMNS {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let present = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .iter()
            .any(|name| name == column);
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

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
    /// The attempt after which a failure is final ([`MAX_ATTEMPTS`], raised
    /// by [`Db::retry`]).
    pub attempt_limit: u32,
}

impl JobRow {
    /// What the worker that leased this job is handed, with the checkpoint
    /// files it resumes from.
    pub fn leased(self, checkpoints: Vec<StoredFile>) -> LeasedJob {
        LeasedJob {
            id: self.id,
            attempt: self.attempt,
            sweep: self.sweep,
            variant: self.variant,
            seed: self.seed,
            config_yaml: self.config_yaml,
            lease_deadline_ms: self.lease_deadline_ms.unwrap_or_default(),
            checkpoints,
        }
    }
}

/// The columns [`job_from_row`] reads, as a literal so that the queries
/// built from it are `&'static str` (no string formatted per call).
macro_rules! job_columns {
    () => {
        "id, sweep, variant, seed, config_yaml, epochs, state, attempt, worker, \
         lease_deadline_ms, epochs_done, final_metrics, error, attempt_limit"
    };
}

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
            attempt_limit: row.get(13)?,
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
    pub description: String,
    pub baseline: String,
    pub results_written: bool,
    /// Adaptive seeds, when the sweep asked for them.
    pub seed_policy: Option<SeedPolicy>,
    /// Grid/random sweeps: the swept keys and each generated variant's values.
    pub space: Space,
}

/// The swept keys of a grid or random sweep and each generated variant's
/// values of them (empty for a sweep of named variants).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Space {
    pub keys: Vec<String>,
    pub values: BTreeMap<String, Vec<String>>,
}

fn json_column<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> rusqlite::Result<Option<T>> {
    text.map(|text| {
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("{what}: {e}").into(),
            )
        })
    })
    .transpose()
}

/// A worker's registration (the store gives it its id).
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub name: String,
    pub host: String,
    pub device: String,
    pub threads: u32,
    pub slots: u32,
    /// Started with --allow-commands: may be leased command jobs.
    pub allow_commands: bool,
}

/// What a lease expiry pass did.
#[derive(Debug, Default)]
pub struct Expired {
    /// Jobs returned to pending, with their sweep.
    pub requeued: Vec<(String, String)>,
    /// Jobs failed for good (too many attempts), with their sweep.
    pub failed: Vec<(String, String)>,
    /// Jobs added by a seed policy after those failures.
    pub seeds_added: usize,
}

impl Expired {
    /// Whether a job became pending: only then do idle workers need waking.
    pub fn queued(&self) -> bool {
        !self.requeued.is_empty() || self.seeds_added > 0
    }
}

/// An attempt's outcome, committed.
#[derive(Debug)]
pub struct Completed {
    /// The job as it now stands.
    pub job: JobRow,
    /// Whether a job became pending: this one (to be retried), or seeds its
    /// end made a seed policy add.
    pub queued: bool,
    /// Whether this was the sweep's last open job: its results may be due
    /// ([`Db::results_due`] decides, once).
    pub sweep_ended: bool,
}

/// Statements through the connection's prepared-statement cache: under a
/// fleet's load the same few dozen statements run thousands of times a
/// second, and SQLite parsing each one again was a measurable share of every
/// call (BENCHMARKS.md, "A fleet of simulated workers").
trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A savepoint whose statements come from the statement cache: rusqlite's
/// own parses `SAVEPOINT` and `RELEASE` anew each time, and a fleet's load
/// opens two per store call (this one, and the batch's), thousands a
/// second. Dropped without [`Savepoint::commit`], it undoes what was done
/// since it began.
struct Savepoint<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Savepoint<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Savepoint<'c>> {
        conn.exec("SAVEPOINT sp", [])?;
        Ok(Savepoint { conn, open: true })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.open = false;
        self.conn.exec("RELEASE sp", []).map(drop)
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to tell anyone: the error that brought us here is.
            let _ = self.conn.exec("ROLLBACK TO sp", []);
            let _ = self.conn.exec("RELEASE sp", []);
        }
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// Owner of the database connection: one thread, `sweep-store`, holds it and
/// runs the calls queued to it one at a time. Cloning shares it; the thread
/// ends, after the calls already queued, when the last clone is dropped.
///
/// One thread rather than a lock taken on the blocking pool: under a fleet's
/// load the pool's threads queued on the lock and most of the coordinator's
/// time went to waking them (BENCHMARKS.md, "A fleet of simulated workers"),
/// while a busy owner thread takes the next call without sleeping.
///
/// Group commit: the calls waiting when the thread turns to the queue (up to
/// [`MAX_BATCH`]) run in one transaction, each in a savepoint of its own (a
/// call that panics undoes only its own changes), and are answered after
/// that transaction commits. Under load one commit then serves many calls;
/// a lone call is a batch of one. No caller hears "done" before its change
/// is committed, so a killed coordinator still loses nothing it confirmed.
#[derive(Clone)]
pub struct Store {
    calls: std::sync::mpsc::Sender<StoreCall>,
}

/// Runs against the database and returns how to answer its caller once the
/// batch it ran in has committed (None) or failed to (the error).
type StoreCall = Box<dyn FnOnce(&mut Db) -> Answer + Send>;
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// The most calls one transaction serves: enough that a commit's cost is
/// shared under a fleet's load, few enough that the first caller of a batch
/// does not wait long for the last.
const MAX_BATCH: usize = 256;

/// The database as the rest of the coordinator sees it: one method per
/// query or rule. The connection never leaves this module, so every SQL
/// statement of the coordinator is in this file.
pub struct Db {
    conn: Connection,
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
        // A checkpoint (WAL pages copied into the database, and its fsyncs)
        // runs on the store's thread at the commit that crosses this many
        // pages: at SQLite's 1,000 it was 9% of the store's time under a
        // fleet's load, and a page rewritten often is copied once per
        // checkpoint however often it changed. The WAL stays under ~40 MB.
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        // 64 MiB of page cache (SQLite's default is 2 MiB): a 10,000-job
        // sweep's database is ~40 MB, and a miss is a read through the kernel.
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // Plans fixed at prepare time: SQLite (built with STAT4) otherwise
        // re-prepares some cached statements whenever a bound value changes,
        // and that re-parsing of one query per completion (a job's
        // attempts) was 12% of the store's time under a fleet's load.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        // Room for every statement in this file (see [`Cached`]).
        conn.set_prepared_statement_cache_capacity(128);
        conn.execute_batch(SCHEMA)?;
        add_missing_columns(&conn)?;
        let mut db = Db { conn };
        let (calls, queued) = std::sync::mpsc::channel::<StoreCall>();
        std::thread::Builder::new()
            .name("sweep-store".into())
            .spawn(move || {
                while let Ok(first) = queued.recv() {
                    // Those waiting now, not those that arrive while the batch
                    // runs: its first caller waits for no later one.
                    let batch: Vec<StoreCall> = std::iter::once(first)
                        .chain(std::iter::from_fn(|| queued.try_recv().ok()))
                        .take(MAX_BATCH)
                        .collect();
                    db.run_batch(batch);
                }
            })
            .map_err(|e| CoordinatorError::Internal(format!("starting the store thread: {e}")))?;
        Ok(Store { calls })
    }

    /// Runs `f` with the database on the store's thread: what `f` does
    /// (queries, and the files that go with them) happens as one step for
    /// every other caller, and its changes are committed before it returns.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R> + Send + 'static,
    {
        let (call, answered) = queued(f);
        self.calls
            .send(call)
            .map_err(|_| CoordinatorError::Internal("the store thread has stopped".into()))?;
        answered
            .await
            .map_err(|_| CoordinatorError::Internal("a database call panicked".into()))?
    }
}

/// `f` as a call for the store's thread, and where its answer will arrive.
fn queued<R, F>(f: F) -> (StoreCall, tokio::sync::oneshot::Receiver<Result<R>>)
where
    R: Send + 'static,
    F: FnOnce(&mut Db) -> Result<R> + Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let call = Box::new(move |db: &mut Db| {
        let result = f(db);
        Box::new(move |commit_error: Option<&str>| {
            let result = match commit_error {
                None => result,
                Some(e) => Err(CoordinatorError::Internal(format!(
                    "the database did not commit: {e}"
                ))),
            };
            // The caller may have gone (a cancelled request): nothing to tell.
            let _ = answer.send(result);
        }) as Answer
    });
    (call, answered)
}

impl Db {
    /// One transaction for `batch`, each call in a savepoint, answered after
    /// the commit. The writing functions below open savepoints of their own
    /// (not transactions), which nest inside it and still commit alone
    /// where no batch is open (the unit tests).
    fn run_batch(&mut self, batch: Vec<StoreCall>) {
        if !self.conn.is_autocommit() {
            // Left open by a failed COMMIT and ROLLBACK: nothing in it was
            // confirmed to anyone.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let mut in_transaction = self.conn.exec("BEGIN", []).is_ok();
        let mut uncommitted: Vec<Answer> = Vec::new();
        for call in batch {
            // A call that panics is undone and its answer dropped (its
            // caller gets an error); the batch goes on.
            let marked = in_transaction && self.conn.exec("SAVEPOINT call", []).is_ok();
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(self))).ok();
            if marked && !self.conn.is_autocommit() {
                if answer.is_none() {
                    let _ = self.conn.exec("ROLLBACK TO call", []);
                }
                let _ = self.conn.exec("RELEASE call", []);
            }
            if in_transaction && self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (a disk error):
                // what this call and those before it did is gone.
                let lost = "the database rolled back its transaction";
                tracing::error!(calls = uncommitted.len() + 1, "{lost}");
                for answer in uncommitted.drain(..).chain(answer) {
                    answer(Some(lost));
                }
                in_transaction = self.conn.exec("BEGIN", []).is_ok();
                continue;
            }
            match answer {
                Some(answer) if in_transaction => uncommitted.push(answer),
                // Outside a transaction each savepoint committed on its own,
                // unless one is still open.
                Some(answer) if self.conn.is_autocommit() => answer(None),
                Some(answer) => answer(Some("a transaction was left open")),
                None => {}
            }
        }
        if !in_transaction {
            return;
        }
        let error = self.conn.exec("COMMIT", []).err().map(|e| {
            tracing::error!(error = %e, calls = uncommitted.len(), "a store transaction failed to commit");
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            e.to_string()
        });
        for answer in uncommitted {
            answer(error.as_deref());
        }
    }
}

/// `epochs` 0: a command job whose config does not say; it is held to
/// [`COMMAND_MAX_EPOCHS`]. What bounds the metric rows of a job: a metric
/// point (or a run of `count` epochs) beyond the job's configured epochs
/// plus `slack` is refused.
fn check_epochs(count: usize, epochs: u32, slack: u32) -> Result<()> {
    let epochs = if epochs == 0 {
        COMMAND_MAX_EPOCHS
    } else {
        epochs
    };
    let max = epochs as usize + slack as usize;
    if count > max {
        return Err(CoordinatorError::ResourceExhausted(format!(
            "epoch {count} is past the job's {epochs} epochs (limit {max})"
        )));
    }
    Ok(())
}

impl Db {
    pub fn get_job(&self, job_id: &str) -> Result<JobRow> {
        get_job(&self.conn, job_id)
    }

    /// The jobs of one sweep, or of all.
    pub fn jobs(&self, sweep: Option<&str>) -> Result<Vec<JobRow>> {
        jobs(&self.conn, sweep)
    }

    /// Workers seen since `alive_since_ms` count as alive.
    pub fn status(&self, sweep: Option<&str>, alive_since_ms: i64) -> Result<StatusSnapshot> {
        status(&self.conn, sweep, alive_since_ms)
    }

    /// See [`waiting_for_command_worker`].
    pub fn waiting_for_command_worker(
        &self,
        sweep: Option<&str>,
        alive_since_ms: i64,
    ) -> Result<Vec<(String, u32)>> {
        waiting_for_command_worker(&self.conn, sweep, alive_since_ms)
    }

    pub fn sweeps(&self) -> Result<Vec<SweepRow>> {
        sweeps(&self.conn)
    }

    pub fn sweep(&self, name: &str) -> Result<SweepRow> {
        sweep(&self.conn, name)
    }

    pub fn state_counts(&self) -> Result<HashMap<String, Vec<(JobState, u32)>>> {
        state_counts(&self.conn)
    }

    pub fn submit(&mut self, sweep: &NewSweep, specs: &[JobSpec]) -> Result<(u32, u32)> {
        submit(&mut self.conn, sweep, specs)
    }

    /// Registers a worker unless `max_workers` have been seen since
    /// `alive_since_ms` (then ResourceExhausted).
    pub fn register_worker(
        &mut self,
        worker: &NewWorker,
        max_workers: usize,
        alive_since_ms: i64,
    ) -> Result<String> {
        let alive = workers_seen_since(&self.conn, alive_since_ms)?;
        if alive >= max_workers {
            return Err(CoordinatorError::ResourceExhausted(format!(
                "{alive} workers are registered, the limit is {max_workers}"
            )));
        }
        register_worker(&mut self.conn, worker)
    }

    /// Every worker in the order they registered; those heard from since
    /// `alive_since_ms` are alive.
    pub fn workers(&self, alive_since_ms: i64) -> Result<Vec<WorkerStatus>> {
        workers(&self.conn, alive_since_ms)
    }

    /// Marks the worker seen and leases it the next job, if any.
    pub fn lease(&mut self, worker_id: &str, lease_timeout: Duration) -> Result<Option<JobRow>> {
        touch_worker(&self.conn, worker_id)?;
        lease(&mut self.conn, worker_id, lease_timeout)
    }

    /// Marks the worker seen and returns the job if the worker holds it now.
    pub fn held_job(&self, worker_id: &str, job_id: &str) -> Result<JobRow> {
        touch_worker(&self.conn, worker_id)?;
        let job = get_job(&self.conn, job_id)?;
        if !job.state.is_active() || job.worker.as_deref() != Some(worker_id) {
            return Err(CoordinatorError::FailedPrecondition(format!(
                "job {job_id} is not leased to {worker_id}"
            )));
        }
        Ok(job)
    }

    pub fn check_fence(&self, job_id: &str, attempt: u32, worker_id: &str) -> Result<JobRow> {
        check_fence(&self.conn, job_id, attempt, worker_id)
    }

    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        held: &[(String, u32)],
        lease_timeout: Duration,
    ) -> Result<(Vec<String>, Vec<String>)> {
        heartbeat(&mut self.conn, worker_id, held, lease_timeout)
    }

    /// Records an epoch's metrics; an epoch past the job's epochs plus
    /// `slack` is refused. `with_epochs`: also return every epoch recorded.
    pub fn report_epoch(
        &mut self,
        worker_id: &str,
        job_id: &str,
        attempt: u32,
        metrics: &EpochMetrics,
        slack: u32,
        with_epochs: bool,
    ) -> Result<EpochIngest> {
        report_epoch(
            &mut self.conn,
            worker_id,
            (job_id, attempt),
            metrics,
            slack,
            with_epochs,
        )
    }

    pub fn epochs_of(&self, job_id: &str) -> Result<Vec<EpochMetrics>> {
        epochs_of(&self.conn, job_id)
    }

    pub fn epochs_of_sweep(&self, sweep: &str) -> Result<HashMap<String, Vec<EpochMetrics>>> {
        epochs_of_sweep(&self.conn, sweep)
    }

    /// The job if `attempt` is its live attempt on `worker_id` and an upload
    /// of `size` bytes as `name` keeps the job's and the sweep's checkpoints
    /// within their limits (a file being replaced counts with its new size
    /// only).
    pub fn check_upload(
        &self,
        job_id: &str,
        attempt: u32,
        worker_id: &str,
        name: &str,
        size: u64,
        limits: &Limits,
    ) -> Result<JobRow> {
        let job = check_fence(&self.conn, job_id, attempt, worker_id)?;
        let (job_bytes, sweep_bytes) = artifact_bytes(&self.conn, &job.sweep, &job.id, name)?;
        if job_bytes.saturating_add(size) > limits.max_job_artifact_bytes {
            return Err(CoordinatorError::ResourceExhausted(format!(
                "job {} would hold {} checkpoint bytes, the limit is {}",
                job.id,
                job_bytes.saturating_add(size),
                limits.max_job_artifact_bytes
            )));
        }
        if sweep_bytes.saturating_add(size) > limits.max_sweep_artifact_bytes {
            return Err(CoordinatorError::ResourceExhausted(format!(
                "sweep {} would hold {} checkpoint bytes, the limit is {}",
                job.sweep,
                sweep_bytes.saturating_add(size),
                limits.max_sweep_artifact_bytes
            )));
        }
        Ok(job)
    }

    pub fn record_artifact(&self, job_id: &str, attempt: u32, file: &StoredFile) -> Result<()> {
        record_artifact(
            &self.conn,
            job_id,
            attempt,
            &file.name,
            &file.sha256,
            file.size,
        )
    }

    /// Ends an attempt; a success with more epochs than the job's plus
    /// `slack` is refused.
    pub fn complete(
        &mut self,
        worker_id: &str,
        job_id: &str,
        attempt: u32,
        outcome: &Outcome,
        slack: u32,
    ) -> Result<Completed> {
        complete(&mut self.conn, worker_id, (job_id, attempt), outcome, slack)
    }

    pub fn expire_leases(&mut self) -> Result<Expired> {
        expire_leases(&mut self.conn)
    }

    pub fn cancel(
        &mut self,
        sweep: Option<&str>,
        job_id: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>)> {
        cancel(&mut self.conn, sweep, job_id)
    }

    pub fn retry(&mut self, sweep: Option<&str>, job_id: Option<&str>) -> Result<Retried> {
        retry(&mut self.conn, sweep, job_id)
    }

    pub fn events(&self, job_id: &str) -> Result<Vec<JobEvent>> {
        events(&self.conn, job_id)
    }

    /// Records a chunk of a command job's output; false when it was
    /// already recorded (a retried request).
    pub fn append_output(
        &mut self,
        worker_id: &str,
        job_id: &str,
        attempt: u32,
        seq: u64,
        stream: &str,
        text: &str,
    ) -> Result<bool> {
        append_output(
            &mut self.conn,
            worker_id,
            job_id,
            attempt,
            seq,
            stream,
            text,
        )
    }

    pub fn record_attempt(
        &mut self,
        worker_id: &str,
        job_id: &str,
        attempt: u32,
        provenance: &AttemptProvenance,
    ) -> Result<()> {
        record_attempt(&mut self.conn, worker_id, job_id, attempt, provenance)
    }

    pub fn attempts_of(&self, job_id: &str) -> Result<Vec<AttemptProvenance>> {
        attempts_of(&self.conn, job_id)
    }

    pub fn provenance(&self, job_id: &str) -> Result<RunProvenance> {
        provenance(&self.conn, job_id)
    }

    /// [`Db::provenance`] of a job already read (a completion's).
    pub fn provenance_of(&self, job: &JobRow) -> Result<RunProvenance> {
        provenance_of(&self.conn, job)
    }

    /// The sweep's results table when every job of it has ended and the
    /// results are not written yet (see [`Db::mark_results_written`]).
    pub fn results_due(&self, sweep: &str) -> Result<Option<ResultsTable>> {
        if !results_due(&self.conn, sweep)? {
            return Ok(None);
        }
        let (row, outcomes, tally) = outcomes(&self.conn, sweep)?;
        if tally.pending > 0 || row.results_written {
            return Ok(None);
        }
        results_table(&self.conn, &row, &outcomes, tally).map(Some)
    }

    pub fn mark_results_written(&self, sweep: &str) -> Result<()> {
        mark_results_written(&self.conn, sweep)
    }

    /// The results table of a sweep (None: the only one; an error when
    /// there are none or several).
    pub fn results(&self, sweep: Option<&str>) -> Result<ResultsTable> {
        let name = match sweep {
            Some(name) => name.to_string(),
            None => {
                let sweeps = sweeps(&self.conn)?;
                match sweeps.as_slice() {
                    [only] => only.name.clone(),
                    [] => {
                        return Err(CoordinatorError::NotFound(
                            "no sweep has been submitted".into(),
                        ));
                    }
                    _ => {
                        let names: Vec<_> = sweeps.iter().map(|s| s.name.as_str()).collect();
                        return Err(CoordinatorError::InvalidArgument(format!(
                            "several sweeps ({}); name one",
                            names.join(", ")
                        )));
                    }
                }
            }
        };
        let (row, outcomes, tally) = outcomes(&self.conn, &name)?;
        results_table(&self.conn, &row, &outcomes, tally)
    }
}

/// The results table of a sweep, with its swept-key columns and the marks
/// of its seed policy.
fn results_table(
    conn: &Connection,
    row: &SweepRow,
    outcomes: &[RunOutcome],
    tally: JobTally,
) -> Result<ResultsTable> {
    let mut table = results::summarize(&row.name, &row.baseline, outcomes, tally.pending);
    table.set_unsuccessful(tally.failed, tally.cancelled);
    if !row.space.keys.is_empty() {
        table.set_swept(&row.space.keys, &row.space.values);
    }
    if let Some(policy) = row.seed_policy {
        let jobs = jobs_per_variant(conn, &row.name)?;
        table.set_seed_policy(policy.max, policy.target_ci_halfwidth, &jobs);
    }
    Ok(table)
}

fn event(tx: &Connection, job_id: &str, attempt: u32, kind: &str, message: &str) -> Result<()> {
    tx.exec(
        "INSERT INTO events (job_id, time_ms, kind, attempt, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![job_id, now_ms(), kind, attempt, message],
    )?;
    Ok(())
}

fn get_job(conn: &Connection, job_id: &str) -> Result<JobRow> {
    let row = conn
        .row(
            concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ?1"),
            [job_id],
            job_from_row,
        )
        .optional()?
        .ok_or_else(|| {
            CoordinatorError::NotFound(format!(
                "no job {job_id:?} (`sweepctl status` lists the jobs)"
            ))
        })?;
    finish_job(row)
}

fn jobs(conn: &Connection, sweep: Option<&str>) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE ?1 IS NULL OR sweep = ?1 ORDER BY rowid"
    ))?;
    let rows = stmt
        .query_map([sweep], job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(finish_job).collect()
}

/// The jobs of one sweep (or of all) with their latest epoch, counted by
/// sweep and state.
fn status(conn: &Connection, sweep: Option<&str>, alive_since_ms: i64) -> Result<StatusSnapshot> {
    let jobs = jobs(conn, sweep)?;
    let mut sweeps: Vec<SweepStatus> = Vec::new();
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let index = match sweeps.iter().position(|s| s.name == job.sweep) {
            Some(i) => i,
            None => {
                sweeps.push(SweepStatus {
                    name: job.sweep.clone(),
                    ..Default::default()
                });
                sweeps.len() - 1
            }
        };
        sweeps[index].jobs.add(job.state.as_str(), 1);
        let latest = epochs_of(conn, &job.id)?.last().copied();
        out.push(JobStatus {
            job_id: job.id,
            sweep: job.sweep,
            variant: job.variant,
            seed: job.seed,
            state: job.state.as_str().to_string(),
            attempt: job.attempt,
            worker: job.worker,
            epoch: job.epochs_done,
            epochs: job.epochs,
            latest,
            test: job.final_metrics.and_then(|m| m.test),
            error: job.error,
        });
    }
    // Done once its results are on disk, not merely when its last job
    // ended: whoever sees "done" may read results.{md,csv,json} at once.
    let written: HashSet<String> = self::sweeps(conn)?
        .into_iter()
        .filter(|s| s.results_written)
        .map(|s| s.name)
        .collect();
    for s in &mut sweeps {
        s.done = s.jobs.all_ended() && written.contains(&s.name);
    }
    for (name, count) in waiting_for_command_worker(conn, sweep, alive_since_ms)? {
        if let Some(s) = sweeps.iter_mut().find(|s| s.name == name) {
            s.waiting_for_command_worker = count;
        }
    }
    Ok(StatusSnapshot { sweeps, jobs: out })
}

/// Per sweep, its pending command jobs, when no worker seen since
/// `alive_since_ms` runs them (none was started with `--allow-commands`).
fn waiting_for_command_worker(
    conn: &Connection,
    sweep: Option<&str>,
    alive_since_ms: i64,
) -> Result<Vec<(String, u32)>> {
    let command_workers: i64 = conn.row(
        "SELECT COUNT(*) FROM workers WHERE allow_commands = 1 AND last_seen_ms >= ?1",
        params![alive_since_ms],
        |r| r.get(0),
    )?;
    if command_workers > 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT sweep, COUNT(*) FROM jobs WHERE state = 'pending' AND command = 1 \
         AND (?1 IS NULL OR sweep = ?1) GROUP BY sweep",
    )?;
    let waiting = stmt
        .query_map([sweep], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(waiting)
}

fn sweeps(conn: &Connection) -> Result<Vec<SweepRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, baseline, results_written, seed_policy, space, description FROM sweeps ORDER BY created_ms, name",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok(SweepRow {
                name: row.get(0)?,
                description: row.get(5)?,
                baseline: row.get(1)?,
                results_written: row.get(2)?,
                seed_policy: json_column(row.get(3)?, "seed_policy")?,
                space: json_column(row.get(4)?, "space")?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One sweep's row.
fn sweep(conn: &Connection, name: &str) -> Result<SweepRow> {
    let mut sweeps = sweeps(conn)?;
    match sweeps.iter().position(|s| s.name == name) {
        Some(index) => Ok(sweeps.swap_remove(index)),
        None => Err(no_sweep(name, &sweeps)),
    }
}

/// NotFound for sweep `name`, naming the sweeps there are.
fn no_sweep(name: &str, sweeps: &[SweepRow]) -> CoordinatorError {
    const LISTED: usize = 10;
    let mut names: Vec<&str> = sweeps
        .iter()
        .take(LISTED)
        .map(|s| s.name.as_str())
        .collect();
    if sweeps.len() > LISTED {
        names.push("…");
    }
    CoordinatorError::NotFound(if names.is_empty() {
        format!("no sweep {name:?} (none has been submitted)")
    } else {
        format!("no sweep {name:?} (there are: {})", names.join(", "))
    })
}

/// Per sweep, how many of its jobs are in each state: one query, however
/// many jobs there are.
fn state_counts(conn: &Connection) -> Result<HashMap<String, Vec<(JobState, u32)>>> {
    let mut stmt =
        conn.prepare_cached("SELECT sweep, state, COUNT(*) FROM jobs GROUP BY sweep, state")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out: HashMap<String, Vec<(JobState, u32)>> = HashMap::new();
    for (sweep, state, n) in rows {
        out.entry(sweep)
            .or_default()
            .push((JobState::parse(&state)?, n));
    }
    Ok(out)
}

/// Sweep metadata from a submission.
pub struct NewSweep {
    pub name: String,
    pub description: String,
    pub seeds: Vec<u64>,
    pub metric: String,
    pub baseline: String,
    pub seed_policy: Option<SeedPolicy>,
    pub space: Space,
}

/// Records a sweep and its jobs. Resubmitting the same spec is a no-op (the
/// job ids are stable); a different spec under a known name is refused, since
/// its runs would land in the directories of the old one.
fn submit(conn: &mut Connection, sweep: &NewSweep, specs: &[JobSpec]) -> Result<(u32, u32)> {
    let tx = Savepoint::begin(conn)?;
    let known: Option<String> = tx
        .row(
            "SELECT name FROM sweeps WHERE name = ?1",
            [&sweep.name],
            |r| r.get(0),
        )
        .optional()?;
    if known.is_some() {
        let mut stmt =
            tx.prepare_cached("SELECT id, seed FROM jobs WHERE sweep = ?1 ORDER BY id")?;
        let mut existing = stmt
            .query_map([&sweep.name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            // Seeds the coordinator added (adaptive) are not in any spec.
            .filter(|(_, seed)| sweep.seed_policy.is_none() || sweep.seeds.contains(seed))
            .map(|(id, _)| id)
            .collect::<Vec<_>>();
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
    let policy = sweep
        .seed_policy
        .map(|p| serde_json::to_string(&p))
        .transpose()
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    let space = (!sweep.space.keys.is_empty())
        .then(|| serde_json::to_string(&sweep.space))
        .transpose()
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    tx.exec(
        "INSERT INTO sweeps (name, description, seeds, metric, baseline, created_ms, seed_policy, space) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![sweep.name, sweep.description, seeds, sweep.metric, sweep.baseline, now_ms(), policy, space],
    )?;
    // Jobs are leased in insertion order: costliest first (see
    // JobSpec::estimated_cost); ties keep the sweep's own order.
    let mut by_cost: Vec<&JobSpec> = specs.iter().collect();
    by_cost.sort_by(|a, b| b.estimated_cost().total_cmp(&a.estimated_cost()));
    for spec in by_cost {
        insert_job(&tx, spec, &format!("sweep {}", spec.sweep))?;
    }
    tx.commit()?;
    Ok((specs.len() as u32, specs.len() as u32))
}

/// Adds a pending job (nothing when its id is known already). Returns
/// whether it was added.
fn insert_job(tx: &Connection, spec: &JobSpec, why: &str) -> Result<bool> {
    let added = tx.exec(
        "INSERT OR IGNORE INTO jobs (id, sweep, variant, seed, config_yaml, epochs, state, updated_ms, command) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
        params![
            spec.id,
            spec.sweep,
            spec.variant,
            spec.seed as i64,
            spec.config_yaml,
            spec.config.epochs(),
            now_ms(),
            spec.config.is_command(),
        ],
    )? > 0;
    if added {
        event(tx, &spec.id, 0, "submitted", why)?;
    }
    Ok(added)
}

/// Seeds until the answer is clear: once every job of `variant` has ended,
/// adds seeds while the 95% CI of its mean test accuracy is wider than the
/// sweep's target (see [`SeedPolicy::seeds_to_add`]). Runs inside the
/// transaction that ended the variant's last job, so a crash either keeps
/// both or neither; the new jobs' ids follow from their seeds, which follow
/// from how many extra seeds the variant has, so running the decision again
/// can never add a seed twice. Returns the jobs added.
fn adapt_seeds(tx: &Connection, sweep: &str, variant: &str) -> Result<Vec<String>> {
    let row: Option<(Option<String>, String)> = tx
        .row(
            "SELECT seed_policy, seeds FROM sweeps WHERE name = ?1",
            [sweep],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((Some(policy), initial)) = row else {
        return Ok(Vec::new());
    };
    let internal = |e: serde_json::Error| CoordinatorError::Internal(format!("sweep {sweep}: {e}"));
    let policy: SeedPolicy = serde_json::from_str(&policy).map_err(internal)?;
    let initial: Vec<u64> = serde_json::from_str(&initial).map_err(internal)?;
    let jobs: Vec<JobRow> = jobs(tx, Some(sweep))?
        .into_iter()
        .filter(|job| job.variant == variant)
        .collect();
    if jobs.is_empty() || jobs.iter().any(|job| !job.state.is_terminal()) {
        return Ok(Vec::new());
    }
    // A user's cancellation is an answer too: no seeds after it.
    if jobs.iter().any(|job| job.state == JobState::Cancelled) {
        return Ok(Vec::new());
    }
    let values: Vec<f64> = jobs
        .iter()
        .filter_map(|job| job.final_metrics.as_ref()?.test.map(|t| t.test_acc))
        .collect();
    let more = policy.seeds_to_add(&values, jobs.len());
    if more == 0 {
        return Ok(Vec::new());
    }
    let template = JobConfig::from_yaml(&jobs[0].config_yaml, Path::new("stored config"))?;
    let extras = jobs
        .iter()
        .filter(|job| !initial.contains(&job.seed))
        .count();
    let halfwidth = sweep_core::results::ci95_halfwidth(&values).unwrap_or(f64::NAN) * 100.0;
    let mut added = Vec::new();
    for k in extras..extras + more {
        let seed = extra_seed(sweep, &initial, k);
        let spec = JobSpec::new(sweep, variant, &template, seed);
        let why = format!(
            "adaptive seed {} of at most {}: the 95% CI half-width after {} seeds is {halfwidth:.3} points, the target {}",
            k + initial.len() + 1,
            policy.max,
            values.len(),
            policy.target_ci_halfwidth
        );
        if insert_job(tx, &spec, &why)? {
            added.push(spec.id);
        }
    }
    Ok(added)
}

/// Ended jobs per variant of a sweep (the seeds each has run, failed ones
/// included): a variant counts as having used up `seeds.max` only once they
/// have all ended.
fn jobs_per_variant(conn: &Connection, sweep: &str) -> Result<BTreeMap<String, usize>> {
    let mut stmt = conn.prepare_cached(
        "SELECT variant, COUNT(*) FROM jobs WHERE sweep = ?1 \
         AND state IN ('succeeded', 'failed', 'cancelled') GROUP BY variant",
    )?;
    let rows = stmt
        .query_map([sweep], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
        })?
        .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    Ok(rows)
}

fn register_worker(conn: &mut Connection, worker: &NewWorker) -> Result<String> {
    let tx = Savepoint::begin(conn)?;
    let count: i64 = tx.row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))?;
    // Numbered so that ids are unique across restarts of the same worker
    // (each registration is a new incarnation whose leases are its own).
    let id = format!("w{}-{}", count + 1, worker.name);
    let now = now_ms();
    tx.exec(
        "INSERT INTO workers (id, name, host, device, threads, slots, registered_ms, last_seen_ms, allow_commands) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        params![
            id,
            worker.name,
            worker.host,
            worker.device,
            worker.threads,
            worker.slots,
            now,
            worker.allow_commands,
        ],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Workers heard from since `since_ms` (registered or seen): what the
/// worker limit counts, so that dead incarnations do not hold places.
fn workers_seen_since(conn: &Connection, since_ms: i64) -> Result<usize> {
    let count: i64 = conn.row(
        "SELECT COUNT(*) FROM workers WHERE last_seen_ms >= ?1",
        params![since_ms],
        |r| r.get(0),
    )?;
    Ok(count as usize)
}

/// Checkpoint bytes held by job `job_id` and by sweep `sweep`, leaving out
/// the job's file `except` (about to be replaced).
fn artifact_bytes(
    conn: &Connection,
    sweep: &str,
    job_id: &str,
    except: &str,
) -> Result<(u64, u64)> {
    let job: i64 = conn.row(
        "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE job_id = ?1 AND name != ?2",
        params![job_id, except],
        |r| r.get(0),
    )?;
    let sweep: i64 = conn.row(
        "SELECT COALESCE(SUM(a.size), 0) FROM artifacts a JOIN jobs j ON a.job_id = j.id \
         WHERE j.sweep = ?1 AND NOT (a.job_id = ?2 AND a.name = ?3)",
        params![sweep, job_id, except],
        |r| r.get(0),
    )?;
    Ok((job.max(0) as u64, sweep.max(0) as u64))
}

/// Marks the worker as heard from; NotFound when it is unknown (it must register).
fn touch_worker(conn: &Connection, worker_id: &str) -> Result<()> {
    let n = conn.exec(
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

fn workers(conn: &Connection, alive_since_ms: i64) -> Result<Vec<WorkerStatus>> {
    let mut stmt = conn.prepare_cached("SELECT id, name, host, device, threads, slots, last_seen_ms, allow_commands, jobs_done FROM workers ORDER BY registered_ms")?;
    let mut rows = stmt
        .query_map([], |r| {
            let last_seen_ms: i64 = r.get(6)?;
            Ok(WorkerStatus {
                id: r.get(0)?,
                name: r.get(1)?,
                host: r.get(2)?,
                device: r.get(3)?,
                threads: r.get(4)?,
                slots: r.get(5)?,
                last_seen_ms,
                alive: last_seen_ms >= alive_since_ms,
                allow_commands: r.get(7)?,
                jobs_done: r.get::<_, i64>(8)? as u64,
                jobs: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs_of = conn.prepare_cached(
        "SELECT id FROM jobs WHERE worker = ?1 AND state IN ('leased', 'running') ORDER BY id",
    )?;
    for row in &mut rows {
        row.jobs = jobs_of
            .query_map([&row.id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
    }
    Ok(rows)
}

/// Leases the first pending job (the costliest of its sweep, see [`submit`])
/// to `worker_id`, starting a new attempt. Command jobs go only to workers
/// registered with `allow_commands`.
fn lease(
    conn: &mut Connection,
    worker_id: &str,
    lease_timeout: Duration,
) -> Result<Option<JobRow>> {
    let tx = Savepoint::begin(conn)?;
    let allow_commands: bool = tx
        .row(
            "SELECT allow_commands FROM workers WHERE id = ?1",
            [worker_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(false);
    let id: Option<String> = tx
        .row(
            "SELECT id FROM jobs WHERE state = 'pending' AND (command = 0 OR ?1) ORDER BY rowid LIMIT 1",
            [allow_commands],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    let now = now_ms();
    let deadline = now + lease_timeout.as_millis() as i64;
    tx.exec(
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
    tx.exec(
        "INSERT OR REPLACE INTO attempts (job_id, attempt, worker_id, leased_ms, outcome) \
         VALUES (?1, ?2, ?3, ?4, 'running')",
        params![id, job.attempt, worker_id, now],
    )?;
    tx.commit()?;
    Ok(Some(job))
}

/// Checks that `attempt` is the live attempt of the job, held by `worker_id`:
/// the fence that keeps a worker that lost its lease from writing results.
fn check_fence(conn: &Connection, job_id: &str, attempt: u32, worker_id: &str) -> Result<JobRow> {
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
fn heartbeat(
    conn: &mut Connection,
    worker_id: &str,
    held: &[(String, u32)],
    lease_timeout: Duration,
) -> Result<(Vec<String>, Vec<String>)> {
    let tx = Savepoint::begin(conn)?;
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
                tx.exec(
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
    /// Every epoch recorded so far, in order (to rebuild metrics.json),
    /// when asked for: reading them back at every report was a sixth of the
    /// store's time under a fleet's load.
    pub epochs: Option<Vec<EpochMetrics>>,
}

fn report_epoch(
    conn: &mut Connection,
    worker_id: &str,
    (job_id, attempt): (&str, u32),
    metrics: &EpochMetrics,
    slack: u32,
    with_epochs: bool,
) -> Result<EpochIngest> {
    let tx = Savepoint::begin(conn)?;
    let job = check_fence(&tx, job_id, attempt, worker_id)?;
    check_epochs(metrics.epoch as usize, job.epochs, slack)?;
    let text =
        serde_json::to_string(metrics).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    // No recorded epoch is past `epochs_done` (each one recorded drops those
    // after it), so the next epoch in order, the common case, is new and
    // has nothing after it: two statements fewer per report.
    let next_in_order = metrics.epoch > job.epochs_done;
    let new = next_in_order
        || tx
            .row(
                "SELECT attempt FROM epochs WHERE job_id = ?1 AND epoch = ?2",
                params![job_id, metrics.epoch],
                |r| r.get::<_, u32>(0),
            )
            .optional()?
            != Some(attempt);
    if new {
        // A later attempt that redoes an epoch (resumed from an older
        // checkpoint) replaces what the lost attempt reported.
        tx.exec(
            "INSERT OR REPLACE INTO epochs (job_id, epoch, attempt, metrics) VALUES (?1, ?2, ?3, ?4)",
            params![job_id, metrics.epoch, attempt, text],
        )?;
        if !next_in_order {
            tx.exec(
                "DELETE FROM epochs WHERE job_id = ?1 AND epoch > ?2",
                params![job_id, metrics.epoch],
            )?;
        }
        tx.exec(
            "UPDATE jobs SET state = 'running', epochs_done = ?2, updated_ms = ?3 WHERE id = ?1",
            params![job_id, metrics.epoch, now_ms()],
        )?;
        event(
            &tx,
            job_id,
            attempt,
            "epoch",
            &format!(
                "epoch {}{}: train loss {:.4}, val loss {:.4}, val acc {:.2}%",
                metrics.epoch,
                // A command job's config may not say how many.
                match job.epochs {
                    0 => String::new(),
                    epochs => format!("/{epochs}"),
                },
                metrics.train_loss,
                metrics.val_loss,
                metrics.val_acc * 100.0
            ),
        )?;
    }
    let epochs = with_epochs.then(|| epochs_of(&tx, job_id)).transpose()?;
    tx.commit()?;
    Ok(EpochIngest { job, new, epochs })
}

fn epochs_of(conn: &Connection, job_id: &str) -> Result<Vec<EpochMetrics>> {
    let mut stmt =
        conn.prepare_cached("SELECT metrics FROM epochs WHERE job_id = ?1 ORDER BY epoch")?;
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

/// Every recorded epoch of every job of a sweep, per job id, in epoch order:
/// one query for the dashboard's curves instead of one per job.
fn epochs_of_sweep(conn: &Connection, sweep: &str) -> Result<HashMap<String, Vec<EpochMetrics>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.job_id, e.metrics FROM epochs e JOIN jobs j ON j.id = e.job_id \
         WHERE j.sweep = ?1 ORDER BY e.job_id, e.epoch",
    )?;
    let rows = stmt
        .query_map([sweep], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out: HashMap<String, Vec<EpochMetrics>> = HashMap::new();
    for (job_id, text) in rows {
        let metrics = serde_json::from_str(&text)
            .map_err(|e| CoordinatorError::Internal(format!("stored epoch of {job_id}: {e}")))?;
        out.entry(job_id).or_default().push(metrics);
    }
    Ok(out)
}

fn record_artifact(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    name: &str,
    sha256: &str,
    size: u64,
) -> Result<()> {
    conn.exec(
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
/// any report after the job ended.
fn complete(
    conn: &mut Connection,
    worker_id: &str,
    (job_id, attempt): (&str, u32),
    outcome: &Outcome,
    slack: u32,
) -> Result<Completed> {
    let tx = Savepoint::begin(conn)?;
    let mut job = check_fence(&tx, job_id, attempt, worker_id)?;
    let now = now_ms();
    match outcome {
        Outcome::Succeeded(metrics) => {
            let last = metrics
                .epochs
                .iter()
                .map(|e| e.epoch as usize)
                .max()
                .unwrap_or(0);
            check_epochs(metrics.epochs.len().max(last), job.epochs, slack)?;
            let text = serde_json::to_string(metrics)
                .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            tx.exec(
                "UPDATE jobs SET state = 'succeeded', final_metrics = ?2, epochs_done = ?3, worker = NULL, \
                 lease_deadline_ms = NULL, updated_ms = ?4 WHERE id = ?1",
                params![job_id, text, metrics.epochs.len() as u32, now],
            )?;
            let test = metrics
                .test
                .map(|t| format!("test acc {:.2}%", t.test_acc * 100.0))
                .unwrap_or_default();
            event(&tx, job_id, attempt, "succeeded", &test)?;
            end_attempt(&tx, job_id, attempt, "succeeded", "")?;
            tx.exec(
                "UPDATE workers SET jobs_done = jobs_done + 1 WHERE id = ?1",
                [worker_id],
            )?;
            job.state = JobState::Succeeded;
            job.final_metrics = Some(metrics.clone());
            job.epochs_done = metrics.epochs.len() as u32;
        }
        Outcome::Failed { message, permanent } => {
            let retry = !permanent && job.attempt < job.attempt_limit;
            let state = if retry {
                JobState::Pending
            } else {
                JobState::Failed
            };
            tx.exec(
                "UPDATE jobs SET state = ?2, error = ?3, worker = NULL, lease_deadline_ms = NULL, updated_ms = ?4 WHERE id = ?1",
                params![job_id, state.as_str(), message, now],
            )?;
            let kind = if retry { "retry" } else { "failed" };
            event(&tx, job_id, attempt, kind, message)?;
            end_attempt(&tx, job_id, attempt, kind, message)?;
            job.state = state;
            job.error = Some(message.clone());
        }
    }
    // The row as the UPDATE above left it, without reading it back.
    job.worker = None;
    job.lease_deadline_ms = None;
    let (seeds_added, sweep_ended) = if job.state.is_terminal() {
        let added = adapt_seeds(&tx, &job.sweep, &job.variant)?.len();
        (added, added == 0 && !has_open_jobs(&tx, &job.sweep)?)
    } else {
        (0, false)
    };
    tx.commit()?;
    let queued = job.state == JobState::Pending || seeds_added > 0;
    Ok(Completed {
        job,
        queued,
        sweep_ended,
    })
}

/// Returns jobs whose lease deadline has passed to pending (or fails them
/// at their `attempt_limit`).
fn expire_leases(conn: &mut Connection) -> Result<Expired> {
    let tx = Savepoint::begin(conn)?;
    let now = now_ms();
    let mut stmt = tx.prepare_cached(
        "SELECT id, sweep, attempt, worker, attempt_limit FROM jobs \
         WHERE state IN ('leased', 'running') AND lease_deadline_ms < ?1",
    )?;
    let stale = stmt
        .query_map([now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, u32>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    let mut expired = Expired::default();
    for (id, sweep, attempt, worker, limit) in stale {
        let worker = worker.unwrap_or_default();
        if attempt >= limit {
            let message = format!(
                "lease of attempt {attempt} on {worker} expired; giving up after {attempt} attempts"
            );
            tx.exec(
                "UPDATE jobs SET state = 'failed', error = ?2, worker = NULL, lease_deadline_ms = NULL, updated_ms = ?3 WHERE id = ?1",
                params![id, message, now],
            )?;
            event(&tx, &id, attempt, "failed", &message)?;
            end_attempt(&tx, &id, attempt, "expired", &message)?;
            let variant: String = tx.row("SELECT variant FROM jobs WHERE id = ?1", [&id], |r| {
                r.get(0)
            })?;
            expired.seeds_added += adapt_seeds(&tx, &sweep, &variant)?.len();
            expired.failed.push((id, sweep));
        } else {
            tx.exec(
                "UPDATE jobs SET state = 'pending', worker = NULL, lease_deadline_ms = NULL, updated_ms = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            let message = format!("lease on {worker} expired; the job returns to pending");
            event(&tx, &id, attempt, "expired", &message)?;
            end_attempt(&tx, &id, attempt, "expired", &message)?;
            expired.requeued.push((id, sweep));
        }
    }
    tx.commit()?;
    Ok(expired)
}

/// Cancels every job of a sweep, or one job, that has not ended. Returns the
/// affected sweeps and the ids of the jobs cancelled.
fn cancel(
    conn: &mut Connection,
    sweep: Option<&str>,
    job_id: Option<&str>,
) -> Result<(Vec<String>, Vec<String>)> {
    let tx = Savepoint::begin(conn)?;
    let targets: Vec<(String, String, u32)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, sweep, attempt FROM jobs WHERE state IN ('pending', 'leased', 'running') \
             AND (?1 IS NULL OR sweep = ?1) AND (?2 IS NULL OR id = ?2)",
        )?;
        stmt.query_map(params![sweep, job_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    if targets.is_empty() {
        known_target(&tx, sweep, job_id)?;
    }
    let now = now_ms();
    let mut sweeps = Vec::new();
    for (id, sweep, attempt) in &targets {
        // The worker keeps its lease fields until it hears of the
        // cancellation through its heartbeat.
        tx.exec(
            "UPDATE jobs SET state = 'cancelled', updated_ms = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        event(&tx, id, *attempt, "cancelled", "cancelled on request")?;
        end_attempt(&tx, id, *attempt, "cancelled", "cancelled on request")?;
        if !sweeps.contains(sweep) {
            sweeps.push(sweep.clone());
        }
    }
    tx.commit()?;
    Ok((sweeps, targets.into_iter().map(|t| t.0).collect()))
}

/// Returns the failed and cancelled jobs of `sweep` (or the job `job_id`)
/// to pending, each with [`MAX_ATTEMPTS`] more attempts; a retried job
/// resumes from its last checkpoint. Reopens their sweeps, whose results
/// are written again when they end.
///
/// A cancelled job whose lease has not expired is left alone: its worker
/// may not have heard of the cancellation yet, and a second attempt beside
/// it would share its run directory. Heartbeats do not extend a cancelled
/// job's lease, so it is retriable within a lease timeout.
fn retry(conn: &mut Connection, sweep: Option<&str>, job_id: Option<&str>) -> Result<Retried> {
    let tx = Savepoint::begin(conn)?;
    let now = now_ms();
    let matching: Vec<(String, String, u32, bool)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, sweep, attempt, state = 'cancelled' AND worker IS NOT NULL \
             AND lease_deadline_ms > ?3 FROM jobs WHERE state IN ('failed', 'cancelled') \
             AND (?1 IS NULL OR sweep = ?1) AND (?2 IS NULL OR id = ?2)",
        )?;
        stmt.query_map(params![sweep, job_id, now], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    if matching.is_empty() {
        known_target(&tx, sweep, job_id)?;
    }
    let (stopping, targets): (Vec<_>, Vec<_>) = matching.into_iter().partition(|t| t.3);
    let mut sweeps = Vec::new();
    for (id, sweep, attempt, _) in &targets {
        tx.exec(
            "UPDATE jobs SET state = 'pending', error = NULL, worker = NULL, lease_deadline_ms = NULL, \
             attempt_limit = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, attempt + MAX_ATTEMPTS, now],
        )?;
        event(
            &tx,
            id,
            *attempt,
            "retried",
            &format!("retried on request: up to {MAX_ATTEMPTS} more attempts"),
        )?;
        if !sweeps.contains(sweep) {
            sweeps.push(sweep.clone());
        }
    }
    for sweep in &sweeps {
        tx.exec(
            "UPDATE sweeps SET results_written = 0 WHERE name = ?1",
            [sweep],
        )?;
    }
    tx.commit()?;
    Ok(Retried {
        sweeps,
        jobs: targets.into_iter().map(|t| t.0).collect(),
        still_stopping: stopping.len() as u32,
    })
}

/// What [`Db::retry`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Retried {
    /// The sweeps reopened.
    pub sweeps: Vec<String>,
    /// The ids of the jobs made pending again.
    pub jobs: Vec<String>,
    /// Cancelled jobs whose lease has not expired yet: left alone.
    pub still_stopping: u32,
}

/// NotFound for a job or sweep that does not exist: what distinguishes
/// "nothing to do" from "no such thing" when a request matched no job.
fn known_target(tx: &Connection, sweep: Option<&str>, job_id: Option<&str>) -> Result<()> {
    if let Some(id) = job_id {
        get_job(tx, id)?;
    }
    if let Some(name) = sweep {
        self::sweep(tx, name)?;
    }
    Ok(())
}

/// A job's events and its program's output (kinds `stdout`/`stderr`), in
/// the order its attempts ran (see [`in_attempt_order`]).
fn events(conn: &Connection, job_id: &str) -> Result<Vec<JobEvent>> {
    get_job(conn, job_id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT time_ms, kind, attempt, message FROM events WHERE job_id = ?1 ORDER BY id",
    )?;
    let mut rows = stmt
        .query_map([job_id], |r| {
            Ok(JobEvent {
                time_ms: r.get(0)?,
                kind: r.get(1)?,
                attempt: r.get(2)?,
                message: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT time_ms, stream, attempt, text FROM job_output WHERE job_id = ?1 ORDER BY attempt, seq",
    )?;
    let output = stmt
        .query_map([job_id], |r| {
            Ok(JobEvent {
                time_ms: r.get(0)?,
                kind: r.get(1)?,
                attempt: r.get(2)?,
                message: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !output.is_empty() {
        rows.extend(output);
        // Stable: events and output keep their own order within one millisecond.
        rows.sort_by_key(|row| row.time_ms);
    }
    Ok(in_attempt_order(rows))
}

/// A job's log as its attempts ran: the submission, then per attempt its
/// lease, what it reported and printed, and how it ended; a retry asked for
/// after that end comes last. A cancellation is when it was asked for, which
/// the program's last output (it handles SIGTERM) follows: by time, like
/// epochs and output. A batch of output is stamped when it arrives,
/// after its lines were printed, and the attempt's end follows it often
/// within the same millisecond: by time alone, a log could read
/// "succeeded", then the last line the program printed.
fn in_attempt_order(mut log: Vec<JobEvent>) -> Vec<JobEvent> {
    let phase = |kind: &str| match kind {
        "submitted" | "leased" => 0,
        "succeeded" | "failed" | "retry" | "expired" => 2,
        "retried" => 3,
        _ => 1,
    };
    // Stable: within a phase, time order.
    log.sort_by_key(|event| (event.attempt, phase(&event.kind)));
    log
}

/// Records a batch of a command job's output, once per (job, attempt, seq).
/// Returns whether it was new (a re-sent batch is not).
fn append_output(
    conn: &mut Connection,
    worker_id: &str,
    job_id: &str,
    attempt: u32,
    seq: u64,
    stream: &str,
    text: &str,
) -> Result<bool> {
    let tx = Savepoint::begin(conn)?;
    check_fence(&tx, job_id, attempt, worker_id)?;
    let held: i64 = tx.row(
        "SELECT COALESCE(SUM(LENGTH(CAST(text AS BLOB))), 0) FROM job_output WHERE job_id = ?1 AND attempt = ?2",
        params![job_id, attempt],
        |r| r.get(0),
    )?;
    if held + text.len() as i64 > MAX_OUTPUT_BYTES_PER_ATTEMPT {
        return Err(CoordinatorError::ResourceExhausted(format!(
            "job {job_id} attempt {attempt} has sent {held} bytes of output; the limit is {MAX_OUTPUT_BYTES_PER_ATTEMPT}"
        )));
    }
    let new = tx.exec(
        "INSERT OR IGNORE INTO job_output (job_id, attempt, seq, time_ms, stream, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![job_id, attempt, seq as i64, now_ms(), stream, text],
    )? > 0;
    tx.commit()?;
    Ok(new)
}

/// The finished runs of a sweep, and how many of its jobs no row counts.
fn outcomes(conn: &Connection, sweep: &str) -> Result<(SweepRow, Vec<RunOutcome>, JobTally)> {
    let row = self::sweep(conn, sweep)?;
    let mut outcomes = Vec::new();
    let mut tally = JobTally::default();
    for job in jobs(conn, Some(sweep))? {
        match job.state {
            JobState::Succeeded => {}
            JobState::Failed => tally.failed += 1,
            JobState::Cancelled => tally.cancelled += 1,
            _ => tally.pending += 1,
        }
        if job.state != JobState::Succeeded {
            continue;
        }
        let Some(metrics) = job.final_metrics else {
            continue;
        };
        let Some(test) = metrics.test else { continue };
        let device = succeeded_attempt(conn, &job.id)?.and_then(|a| a.device_type());
        outcomes.push(RunOutcome {
            device,
            variant: job.variant,
            seed: job.seed,
            test_acc: test.test_acc,
            best_val_acc: metrics.best_val_acc.unwrap_or(f64::NAN),
            best_epoch: metrics.best_epoch,
            train_seconds: metrics.train_seconds,
        });
    }
    Ok((row, outcomes, tally))
}

/// The jobs of a sweep that no row of its results counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct JobTally {
    pending: usize,
    failed: usize,
    cancelled: usize,
}

/// Closes an attempt that is still open (a repeated close changes nothing).
fn end_attempt(
    tx: &Connection,
    job_id: &str,
    attempt: u32,
    outcome: &str,
    message: &str,
) -> Result<()> {
    tx.exec(
        "UPDATE attempts SET ended_ms = ?3, outcome = ?4, message = NULLIF(?5, '') \
         WHERE job_id = ?1 AND attempt = ?2 AND ended_ms IS NULL",
        params![job_id, attempt, now_ms(), outcome, message],
    )?;
    Ok(())
}

/// Records what the worker says about the attempt it runs (fenced like any
/// report). Idempotent: a re-sent record replaces the first.
fn record_attempt(
    conn: &mut Connection,
    worker_id: &str,
    job_id: &str,
    attempt: u32,
    provenance: &AttemptProvenance,
) -> Result<()> {
    let tx = Savepoint::begin(conn)?;
    check_fence(&tx, job_id, attempt, worker_id)?;
    let text =
        serde_json::to_string(provenance).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    let now = now_ms();
    let started = if provenance.started_ms > 0 {
        provenance.started_ms
    } else {
        now
    };
    // The row exists unless the lease predates this table (an upgrade).
    tx.exec(
        "INSERT OR IGNORE INTO attempts (job_id, attempt, worker_id, leased_ms, outcome) \
         VALUES (?1, ?2, ?3, ?4, 'running')",
        params![job_id, attempt, worker_id, now],
    )?;
    tx.exec(
        "UPDATE attempts SET provenance = ?3, started_ms = ?4 WHERE job_id = ?1 AND attempt = ?2",
        params![job_id, attempt, text, started],
    )?;
    tx.commit()?;
    Ok(())
}

/// One `attempts` row with the worker's registration: the attempt's
/// provenance as far as it is known.
fn attempt_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptProvenance> {
    let stored: Option<String> = r.get(8)?;
    let mut a: AttemptProvenance = json_column(stored, "attempt provenance")?.unwrap_or_default();
    a.attempt = r.get(0)?;
    a.worker_id = r.get(1)?;
    a.leased_ms = r.get(2)?;
    a.started_ms = r.get::<_, Option<i64>>(3)?.unwrap_or(0);
    a.ended_ms = r.get::<_, Option<i64>>(4)?.unwrap_or(0);
    a.outcome = r.get(5)?;
    a.message = r.get::<_, Option<String>>(6)?.unwrap_or_default();
    // The registration fills in what an older worker did not say.
    let (name, host, threads): (Option<String>, Option<String>, Option<u32>) =
        (r.get(9)?, r.get(10)?, r.get(11)?);
    if a.worker_name.is_empty() {
        a.worker_name = name.unwrap_or_default();
    }
    if a.host.is_empty() {
        a.host = host.unwrap_or_default();
    }
    if a.threads == 0 {
        a.threads = threads.unwrap_or(0);
    }
    Ok(a)
}

/// The columns [`attempt_from_row`] reads (a literal, like [`job_columns`]).
macro_rules! attempt_columns {
    () => {
        "a.attempt, a.worker_id, a.leased_ms, a.started_ms, a.ended_ms, \
         a.outcome, a.message, a.job_id, a.provenance, w.name, w.host, w.threads"
    };
}

/// The attempts of a job, in order.
fn attempts_of(conn: &Connection, job_id: &str) -> Result<Vec<AttemptProvenance>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id \
         WHERE a.job_id = ?1 ORDER BY a.attempt"
    ))?;
    let rows = stmt
        .query_map([job_id], attempt_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The attempt whose result the job reports, if it succeeded.
fn succeeded_attempt(conn: &Connection, job_id: &str) -> Result<Option<AttemptProvenance>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        attempt_columns!(),
        " FROM attempts a LEFT JOIN workers w ON w.id = a.worker_id \
         WHERE a.job_id = ?1 AND a.outcome = 'succeeded' ORDER BY a.attempt DESC LIMIT 1"
    ))?;
    Ok(stmt.query_row([job_id], attempt_from_row).optional()?)
}

/// Everything known about how a job's run was computed.
fn provenance(conn: &Connection, job_id: &str) -> Result<RunProvenance> {
    provenance_of(conn, &get_job(conn, job_id)?)
}

fn provenance_of(conn: &Connection, job: &JobRow) -> Result<RunProvenance> {
    Ok(RunProvenance {
        attempts: attempts_of(conn, &job.id)?,
        config_sha256: sweep_core::provenance::config_sha256(&job.config_yaml),
        state: job.state.as_str().to_string(),
        job_id: job.id.clone(),
        sweep: job.sweep.clone(),
        variant: job.variant.clone(),
        seed: job.seed,
    })
}

/// Whether the sweep's results are due: every job has ended and they are not
/// written yet. One indexed count, so that the check after each completion
/// does not cost a pass over the whole sweep (that made a 10,000-job sweep
/// slow down as it went). An unknown sweep counts as due, so that
/// [`outcomes`] reports it.
fn results_due(conn: &Connection, sweep: &str) -> Result<bool> {
    let written: Option<bool> = conn
        .row(
            "SELECT results_written FROM sweeps WHERE name = ?1",
            [sweep],
            |r| r.get(0),
        )
        .optional()?;
    match written {
        None => Ok(true),
        Some(true) => Ok(false),
        Some(false) => Ok(!has_open_jobs(conn, sweep)?),
    }
}

/// Whether a job of the sweep has not ended. EXISTS stops at the first open
/// job (a count visited every open job of the sweep at each completion:
/// quadratic in a 10,000-job sweep), and one equality per state keeps it to
/// index look-ups: `state IN (...)` built a temporary table for its list at
/// every run, with a page cache of its own (BENCHMARKS.md).
fn has_open_jobs(conn: &Connection, sweep: &str) -> Result<bool> {
    Ok(conn.row(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND sweep = ?1) \
             OR EXISTS (SELECT 1 FROM jobs WHERE state = 'leased' AND sweep = ?1) \
             OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND sweep = ?1)",
        [sweep],
        |r| r.get(0),
    )?)
}

fn mark_results_written(conn: &Connection, sweep: &str) -> Result<()> {
    conn.exec(
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

    /// A database with the schema, in a fresh temporary directory.
    fn empty_db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("db.sqlite")).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        add_missing_columns(&conn).expect("columns");
        (dir, conn)
    }

    fn store_with_job() -> (tempfile::TempDir, Connection, String) {
        let (dir, mut conn) = empty_db();
        let (_, sweep, job) = one_job();
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

    /// Sweep "s" of one job, and the job's id.
    fn one_job() -> (String, NewSweep, JobSpec) {
        let config = ExperimentConfig::from_yaml(CONFIG, Path::new("test")).expect("config");
        let config = JobConfig::Builtin(config);
        let job = JobSpec {
            id: "v-seed-1-00000000".into(),
            sweep: "s".into(),
            variant: "v".into(),
            seed: 1,
            config_yaml: config.to_yaml(),
            config,
        };
        let sweep = NewSweep {
            name: "s".into(),
            description: String::new(),
            seeds: vec![1],
            metric: "test_acc".into(),
            baseline: "v".into(),
            seed_policy: None,
            space: Space::default(),
        };
        (job.id.clone(), sweep, job)
    }

    /// A one-slot CPU worker; one named `cmd…` may run command jobs.
    fn new_worker(name: &str) -> NewWorker {
        NewWorker {
            name: name.into(),
            host: "h".into(),
            device: "cpu".into(),
            threads: 1,
            slots: 1,
            allow_commands: name.starts_with("cmd"),
        }
    }

    fn worker(conn: &mut Connection, name: &str) -> String {
        register_worker(conn, &new_worker(name)).expect("register")
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
        assert_eq!(expired.requeued, vec![(id.clone(), "s".to_string())]);
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
            report_epoch(&mut conn, &a, (&id, 1), &epoch, 0, false),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let done = Outcome::Succeeded(RunMetrics::default());
        assert!(matches!(
            complete(&mut conn, &a, (&id, 1), &done, 0),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let (cancelled, lost) =
            heartbeat(&mut conn, &a, &[(id.clone(), 1)], Duration::from_secs(60))
                .expect("heartbeat");
        assert!(cancelled.is_empty());
        assert_eq!(lost, vec![id.clone()]);

        // Re-sent epochs are ingested once; completion commits once.
        assert!(
            report_epoch(&mut conn, &b, (&id, 2), &epoch, 0, false)
                .expect("epoch")
                .new
        );
        assert!(
            !report_epoch(&mut conn, &b, (&id, 2), &epoch, 0, false)
                .expect("epoch again")
                .new
        );
        assert_eq!(
            complete(&mut conn, &b, (&id, 2), &done, 0)
                .expect("complete")
                .job
                .state,
            JobState::Succeeded
        );
        assert!(matches!(
            complete(&mut conn, &b, (&id, 2), &done, 0),
            Err(CoordinatorError::FailedPrecondition(_))
        ));
        let (_, outcomes, tally) = outcomes(&conn, "s").expect("outcomes");
        assert_eq!(tally, JobTally::default());
        assert!(outcomes.is_empty(), "no test metrics, so no outcome");
    }

    #[test]
    fn a_resumed_attempt_replaces_the_epochs_it_redoes_and_drops_those_after() {
        let (_dir, mut conn, id) = store_with_job();
        let w = worker(&mut conn, "w");
        let epoch = |epoch: u32, loss: f64| EpochMetrics {
            epoch,
            train_loss: loss,
            train_acc: 0.5,
            val_loss: loss,
            val_acc: 0.5,
            lr: 0.001,
            seconds: 1.0,
        };
        let losses = |ingest: EpochIngest| -> Vec<(u32, f64)> {
            let epochs = ingest.epochs.expect("asked for");
            epochs.iter().map(|e| (e.epoch, e.train_loss)).collect()
        };
        let first = lease(&mut conn, &w, Duration::from_secs(60))
            .expect("lease")
            .expect("a job");
        for n in 1..=3 {
            let ingest = report_epoch(
                &mut conn,
                &w,
                (&id, first.attempt),
                &epoch(n, 1.0),
                0,
                false,
            );
            assert!(ingest.expect("epoch").new);
        }
        let oom = Outcome::Failed {
            message: "oom".into(),
            permanent: false,
        };
        complete(&mut conn, &w, (&id, first.attempt), &oom, 0).expect("fail");
        // The retry resumes from its checkpoint of epoch 1: epoch 2 again.
        let second = lease(&mut conn, &w, Duration::from_secs(60))
            .expect("lease")
            .expect("the retry");
        let redone = report_epoch(
            &mut conn,
            &w,
            (&id, second.attempt),
            &epoch(2, 0.5),
            0,
            true,
        )
        .expect("epoch");
        assert!(redone.new);
        assert_eq!(
            losses(redone),
            vec![(1, 1.0), (2, 0.5)],
            "epoch 3 of the lost attempt is dropped"
        );
        let resent = report_epoch(
            &mut conn,
            &w,
            (&id, second.attempt),
            &epoch(2, 0.5),
            0,
            false,
        );
        assert!(!resent.expect("epoch again").new);
        let next = report_epoch(
            &mut conn,
            &w,
            (&id, second.attempt),
            &epoch(3, 0.25),
            0,
            true,
        )
        .expect("epoch");
        assert!(next.new);
        assert_eq!(losses(next), vec![(1, 1.0), (2, 0.5), (3, 0.25)]);
    }

    #[test]
    fn attempts_keep_their_provenance_and_results_their_device() {
        let (_dir, mut conn, id) = store_with_job();
        let (a, b) = (worker(&mut conn, "a"), worker(&mut conn, "b"));
        let gpu = AttemptProvenance {
            device: "cuda:0".into(),
            device_name: "NVIDIA H200".into(),
            threads: 4,
            libtorch_version: "2.13.0".into(),
            ..Default::default()
        };
        // Attempt 1 on a's GPU: its lease runs out.
        lease(&mut conn, &a, Duration::ZERO)
            .expect("lease")
            .expect("a job");
        record_attempt(&mut conn, &a, &id, 1, &gpu).expect("record");
        // Only the live attempt, from its worker, may record.
        assert!(record_attempt(&mut conn, &b, &id, 1, &gpu).is_err());
        assert!(record_attempt(&mut conn, &a, &id, 2, &gpu).is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            expire_leases(&mut conn).expect("expire").requeued,
            vec![(id.clone(), "s".to_string())]
        );
        // Attempt 2 on b's CPU, by an older worker that records nothing.
        lease(&mut conn, &b, Duration::from_secs(60))
            .expect("lease")
            .expect("a job");
        let metrics = RunMetrics {
            test: Some(sweep_core::metrics::TestMetrics {
                test_loss: 0.1,
                test_acc: 0.9,
            }),
            ..RunMetrics::default()
        };
        complete(&mut conn, &b, (&id, 2), &Outcome::Succeeded(metrics), 0).expect("complete");

        let run = provenance(&conn, &id).expect("provenance");
        assert_eq!(run.state, "succeeded");
        assert_eq!(run.config_sha256.len(), 64);
        let [first, second] = run.attempts.as_slice() else {
            panic!("two attempts: {run:#?}");
        };
        assert_eq!((first.attempt, first.outcome.as_str()), (1, "expired"));
        assert_eq!(first.worker_id, a);
        assert_eq!(
            (first.worker_name.as_str(), first.host.as_str()),
            ("a", "h")
        );
        assert_eq!(first.device_type().as_deref(), Some("cuda (NVIDIA H200)"));
        assert_eq!(
            (first.threads, first.libtorch_version.as_str()),
            (4, "2.13.0")
        );
        assert!(first.leased_ms > 0 && first.started_ms >= first.leased_ms);
        assert!(first.ended_ms >= first.started_ms && first.message.contains("expired"));
        assert_eq!((second.attempt, second.outcome.as_str()), (2, "succeeded"));
        // The registration stands in for what the worker did not say.
        assert_eq!((second.worker_name.as_str(), second.threads), ("b", 1));
        assert_eq!(second.device_type(), None);
        assert_eq!(run.device_type(), None);

        // The outcome carries the device of the attempt that produced it.
        let (_, before, _) = outcomes(&conn, "s").expect("outcomes");
        assert_eq!(before[0].device, None);
        let cpu = AttemptProvenance {
            device: "cpu".into(),
            device_name: "AMD EPYC 7B13".into(),
            ..Default::default()
        };
        conn.execute(
            "UPDATE attempts SET provenance = ?2 WHERE job_id = ?1 AND attempt = 2",
            params![id, serde_json::to_string(&cpu).unwrap()],
        )
        .unwrap();
        let (_, after, _) = outcomes(&conn, "s").expect("outcomes");
        assert_eq!(after[0].device.as_deref(), Some("cpu (AMD EPYC 7B13)"));
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
        let retried = complete(&mut conn, &a, (&id, 1), &transient, 0).expect("complete");
        assert_eq!(retried.job.state, JobState::Pending);
        assert!(
            retried.queued,
            "a job back to pending must wake idle workers"
        );
        assert!(!retried.sweep_ended, "a job to retry keeps its sweep open");
        assert_same_row(&retried.job, &get_job(&conn, &id).expect("job"));
        lease(&mut conn, &a, Duration::from_secs(60)).expect("lease");
        let permanent = Outcome::Failed {
            message: "bad config".into(),
            permanent: true,
        };
        let failed = complete(&mut conn, &a, (&id, 2), &permanent, 0).expect("complete");
        assert_eq!(failed.job.state, JobState::Failed);
        assert!(failed.sweep_ended, "the sweep's only job ended");
        assert_same_row(&failed.job, &get_job(&conn, &id).expect("job"));
        assert!(
            lease(&mut conn, &a, Duration::from_secs(60))
                .expect("lease")
                .is_none()
        );
    }

    fn log_event(attempt: u32, kind: &str, message: &str) -> JobEvent {
        JobEvent {
            time_ms: 0,
            kind: kind.into(),
            attempt,
            message: message.into(),
        }
    }

    #[test]
    fn an_attempts_output_goes_between_its_lease_and_its_end() {
        // By arrival, an attempt's last output can come after its end.
        let log = vec![
            log_event(0, "submitted", ""),
            log_event(1, "leased", ""),
            log_event(1, "retry", "exit 3"),
            log_event(1, "stdout", "starting"),
            log_event(1, "stderr", "boom"),
            log_event(2, "leased", ""),
            log_event(2, "stdout", "starting"),
            log_event(2, "epoch", "epoch 1/1"),
            log_event(2, "succeeded", "test 0.9"),
            log_event(2, "stdout", "done"),
            log_event(2, "retried", "retried on request"),
        ];
        let order: Vec<(u32, String)> = in_attempt_order(log)
            .into_iter()
            .map(|e| (e.attempt, format!("{} {}", e.kind, e.message)))
            .collect();
        let expected = [
            (0, "submitted "),
            (1, "leased "),
            (1, "stdout starting"),
            (1, "stderr boom"),
            (1, "retry exit 3"),
            (2, "leased "),
            (2, "stdout starting"),
            (2, "epoch epoch 1/1"),
            (2, "stdout done"),
            (2, "succeeded test 0.9"),
            (2, "retried retried on request"),
        ]
        .map(|(a, t)| (a, t.to_string()));
        assert_eq!(order, expected);
    }

    #[test]
    fn an_attempts_last_output_comes_before_its_ending_in_the_same_millisecond() {
        let (_dir, mut conn, id) = store_with_job();
        let a = worker(&mut conn, "a");
        lease(&mut conn, &a, Duration::from_secs(60)).expect("lease");
        append_output(&mut conn, &a, &id, 1, 0, "stdout", "last words").expect("output");
        let failed = Outcome::Failed {
            message: "exit 3".into(),
            permanent: true,
        };
        complete(&mut conn, &a, (&id, 1), &failed, 0).expect("complete");
        conn.execute_batch(
            "UPDATE events SET time_ms = 1 WHERE kind <> 'failed';
             UPDATE events SET time_ms = 5 WHERE kind = 'failed';
             UPDATE job_output SET time_ms = 5;",
        )
        .expect("the output and the ending in one millisecond");
        let kinds: Vec<String> = events(&conn, &id)
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        let n = kinds.len();
        assert_eq!(kinds[n - 2..], ["stdout", "failed"], "{kinds:?}");
    }

    #[test]
    fn a_retried_job_gets_a_full_attempt_budget_and_reopens_its_sweep() {
        assert_eq!(
            ADDED_COLUMNS
                .iter()
                .find(|c| c.1 == "attempt_limit")
                .map(|c| c.2),
            Some(format!("INTEGER NOT NULL DEFAULT {MAX_ATTEMPTS}").as_str()),
            "a new job's limit is MAX_ATTEMPTS"
        );
        let (_dir, mut conn, id) = store_with_job();
        let a = worker(&mut conn, "a");
        let transient = Outcome::Failed {
            message: "oom".into(),
            permanent: false,
        };
        for attempt in 1..=MAX_ATTEMPTS {
            lease(&mut conn, &a, Duration::from_secs(60))
                .expect("lease")
                .expect("a job");
            complete(&mut conn, &a, (&id, attempt), &transient, 0).expect("complete");
        }
        assert_eq!(get_job(&conn, &id).expect("job").state, JobState::Failed);
        mark_results_written(&conn, "s").expect("written");
        // Nothing to retry in a sweep that does not exist.
        assert!(matches!(
            retry(&mut conn, Some("nope"), None),
            Err(CoordinatorError::NotFound(_))
        ));

        let retried = retry(&mut conn, Some("s"), None).expect("retry");
        assert_eq!(
            retried,
            Retried {
                sweeps: vec!["s".to_string()],
                jobs: vec![id.clone()],
                still_stopping: 0
            }
        );
        let job = get_job(&conn, &id).expect("job");
        assert_eq!((job.state, job.error), (JobState::Pending, None));
        assert_eq!(job.attempt_limit, 2 * MAX_ATTEMPTS);
        assert!(
            !sweep(&conn, "s").expect("sweep").results_written,
            "reopened"
        );
        // Its next failures are retried again, up to the new limit.
        lease(&mut conn, &a, Duration::from_secs(60))
            .expect("lease")
            .expect("the job again");
        let again =
            complete(&mut conn, &a, (&id, MAX_ATTEMPTS + 1), &transient, 0).expect("complete");
        assert_eq!(again.job.state, JobState::Pending);
        assert_same_row(&again.job, &get_job(&conn, &id).expect("job"));
        // A job that is not failed or cancelled is left alone.
        assert!(
            retry(&mut conn, None, Some(&id))
                .expect("retry")
                .jobs
                .is_empty()
        );

        // Cancelled while a worker runs it: not retried until its lease has
        // expired, since that worker may not have stopped yet.
        lease(&mut conn, &a, Duration::from_secs(60))
            .expect("lease")
            .expect("the job again");
        cancel(&mut conn, None, Some(&id)).expect("cancel");
        let early = retry(&mut conn, None, Some(&id)).expect("retry");
        assert_eq!((early.jobs.len(), early.still_stopping), (0, 1));
        conn.execute("UPDATE jobs SET lease_deadline_ms = 0 WHERE id = ?1", [&id])
            .expect("expire");
        let late = retry(&mut conn, None, Some(&id)).expect("retry");
        assert_eq!((late.jobs.len(), late.still_stopping), (1, 0));
        // The cancelled attempt's late report is refused: the retry is a new attempt.
        assert!(complete(&mut conn, &a, (&id, MAX_ATTEMPTS + 2), &transient, 0).is_err());
        // Once the retried job ends, the sweep's results are due again.
        lease(&mut conn, &a, Duration::from_secs(60))
            .expect("lease")
            .expect("the job again");
        let permanent = Outcome::Failed {
            message: "bad".into(),
            permanent: true,
        };
        complete(&mut conn, &a, (&id, MAX_ATTEMPTS + 3), &permanent, 0).expect("complete");
        assert!(
            results_due(&conn, "s").expect("due"),
            "results written again"
        );
    }

    #[test]
    fn a_database_from_before_attempt_limit_gains_it_with_the_old_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = Connection::open(dir.path().join("db.sqlite")).expect("open");
        conn.execute_batch(SCHEMA).expect("schema");
        for (table, column, definition) in &ADDED_COLUMNS[..ADDED_COLUMNS.len() - 1] {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))
            .expect("an older version's columns");
        }
        let (id, sweep, job) = one_job();
        submit(&mut conn, &sweep, &[job]).expect("submit");
        add_missing_columns(&conn).expect("migrate");
        assert_eq!(
            get_job(&conn, &id).expect("job").attempt_limit,
            MAX_ATTEMPTS
        );
    }

    /// A completion answers with the job's row as it built it, without
    /// reading it back: it must be the row the database holds.
    fn assert_same_row(built: &JobRow, stored: &JobRow) {
        assert_eq!(format!("{built:?}"), format!("{stored:?}"));
    }

    #[test]
    fn a_success_answers_the_stored_row_and_the_last_one_ends_the_sweep() {
        let (_dir, mut conn) = adaptive_store(CONFIG);
        let w = worker(&mut conn, "w");
        let mut ended = Vec::new();
        // Equal accuracies: the seed policy adds no seed.
        for test_acc in [0.9, 0.9] {
            let job = lease(&mut conn, &w, Duration::from_secs(60))
                .expect("lease")
                .expect("a job");
            let metrics = RunMetrics {
                epochs: vec![EpochMetrics {
                    epoch: 1,
                    train_loss: 0.5,
                    train_acc: 0.8,
                    val_loss: 0.4,
                    val_acc: 0.85,
                    lr: 0.01,
                    seconds: 1.0,
                }],
                test: Some(sweep_core::metrics::TestMetrics {
                    test_loss: 0.1,
                    test_acc,
                }),
                ..RunMetrics::default()
            };
            let done = complete(
                &mut conn,
                &w,
                (&job.id, job.attempt),
                &Outcome::Succeeded(metrics),
                0,
            )
            .expect("complete");
            assert_same_row(&done.job, &get_job(&conn, &job.id).expect("job"));
            ended.push(done.sweep_ended);
        }
        assert_eq!(ended, [false, true]);
    }

    /// A store holding sweep `a` (variant `v`, seeds 1 and 2) with a seed policy.
    fn adaptive_store(config: &str) -> (tempfile::TempDir, Connection) {
        let (dir, mut conn) = empty_db();
        let config = JobConfig::from_yaml(config, Path::new("test")).expect("config");
        let jobs: Vec<JobSpec> = [1, 2]
            .into_iter()
            .map(|seed| JobSpec::new("a", "v", &config, seed))
            .collect();
        let sweep = NewSweep {
            name: "a".into(),
            description: String::new(),
            seeds: vec![1, 2],
            metric: "test_acc".into(),
            baseline: String::new(),
            seed_policy: Some(SeedPolicy {
                max: 5,
                target_ci_halfwidth: 0.5,
            }),
            space: Space::default(),
        };
        submit(&mut conn, &sweep, &jobs).expect("submit");
        (dir, conn)
    }

    fn succeed(conn: &mut Connection, worker: &str, test_acc: f64) -> Option<Completed> {
        let job = lease(conn, worker, Duration::from_secs(60)).expect("lease")?;
        let metrics = RunMetrics {
            test: Some(sweep_core::metrics::TestMetrics {
                test_loss: 0.1,
                test_acc,
            }),
            ..RunMetrics::default()
        };
        Some(
            complete(
                conn,
                worker,
                (&job.id, job.attempt),
                &Outcome::Succeeded(metrics),
                0,
            )
            .expect("complete"),
        )
    }

    #[test]
    fn adaptive_seeds_are_added_while_the_ci_is_wide_and_never_twice() {
        let (_dir, mut conn) = adaptive_store(CONFIG);
        let w = worker(&mut conn, "w");
        assert!(!succeed(&mut conn, &w, 0.90).expect("first").queued);
        // One seed of two ended: no decision yet.
        assert_eq!(jobs(&conn, Some("a")).expect("jobs").len(), 2);
        let second = succeed(&mut conn, &w, 0.95).expect("second");
        assert!(second.queued, "the added seeds must wake idle workers");
        assert!(!second.sweep_ended, "the added seeds keep the sweep open");
        // A spread of 5 points over two seeds: far above 0.5; up to max (5).
        let all = jobs(&conn, Some("a")).expect("jobs");
        assert_eq!(all.len(), 5, "{all:?}");
        let extra: Vec<u64> = all.iter().skip(2).map(|j| j.seed).collect();
        let expected: Vec<u64> = (0..3).map(|k| extra_seed("a", &[1, 2], k)).collect();
        assert_eq!(extra, expected);
        assert!(extra.iter().all(|s| ![1, 2].contains(s)));
        // The decision again (as after a crash and restart): nothing new,
        // because the variant's jobs have not ended, and ids are stable anyway.
        let tx = conn.transaction().expect("tx");
        assert!(adapt_seeds(&tx, "a", "v").expect("adapt").is_empty());
        tx.commit().expect("commit");
        while succeed(&mut conn, &w, 0.93).is_some() {}
        let all = jobs(&conn, Some("a")).expect("jobs");
        assert_eq!(all.len(), 5, "max is a hard bound");
        assert!(all.iter().all(|j| j.state == JobState::Succeeded));
        assert_eq!(jobs_per_variant(&conn, "a").expect("count")["v"], 5);
        // The submission again: its two initial jobs are known, the three
        // added ones do not make it "a different spec".
        let config = JobConfig::from_yaml(CONFIG, Path::new("test")).expect("config");
        let specs: Vec<JobSpec> = [1, 2]
            .into_iter()
            .map(|seed| JobSpec::new("a", "v", &config, seed))
            .collect();
        let sweep = NewSweep {
            name: "a".into(),
            description: String::new(),
            seeds: vec![1, 2],
            metric: "test_acc".into(),
            baseline: String::new(),
            seed_policy: Some(SeedPolicy {
                max: 5,
                target_ci_halfwidth: 0.5,
            }),
            space: Space::default(),
        };
        assert_eq!(submit(&mut conn, &sweep, &specs).expect("resubmit"), (2, 0));
    }

    #[test]
    fn a_narrow_ci_adds_no_seed() {
        let (_dir, mut conn) = adaptive_store(CONFIG);
        let w = worker(&mut conn, "w");
        succeed(&mut conn, &w, 0.9000).expect("first");
        succeed(&mut conn, &w, 0.9002).expect("second");
        // Half-width 12.7 × 0.000141 / √2 ≈ 0.13 points: under the 0.5 target.
        assert_eq!(jobs(&conn, Some("a")).expect("jobs").len(), 2);
    }

    #[test]
    fn command_jobs_go_only_to_workers_that_opted_in() {
        let (_dir, mut conn) = adaptive_store("command: [python3, t.py]\n");
        let plain = worker(&mut conn, "plain");
        assert!(
            lease(&mut conn, &plain, Duration::from_secs(60))
                .expect("lease")
                .is_none()
        );
        let cmd = worker(&mut conn, "cmd");
        assert!(
            lease(&mut conn, &cmd, Duration::from_secs(60))
                .expect("lease")
                .is_some()
        );
    }

    #[test]
    fn a_batch_is_one_commit_and_a_panicking_call_undoes_only_itself() {
        let (dir, conn) = empty_db();
        let mut db = Db { conn };
        let (a, b) = (new_worker("a"), new_worker("b"));
        let (first, first_answer) = queued(move |db| db.register_worker(&a, usize::MAX, 0));
        // Registers a worker, then panics: the registration is undone.
        let lost = new_worker("lost");
        let (panics, panic_answer) = queued(move |db: &mut Db| -> Result<()> {
            db.register_worker(&lost, usize::MAX, 0)?;
            panic!("a bug in a call");
        });
        // Sees the first call's uncommitted worker in the same transaction.
        let (second, second_answer) = queued(move |db| {
            db.register_worker(&b, usize::MAX, 0)?;
            Ok(db.workers(0)?.len())
        });
        db.run_batch(vec![first, panics, second]);

        assert!(first_answer.blocking_recv().expect("answered").is_ok());
        assert!(
            panic_answer.blocking_recv().is_err(),
            "its answer was dropped"
        );
        assert_eq!(
            second_answer
                .blocking_recv()
                .expect("answered")
                .expect("ok"),
            2
        );
        // Committed: another connection sees both workers, not the lost one.
        let other = Connection::open(dir.path().join("db.sqlite")).expect("open");
        let mut names: Vec<String> = other
            .prepare("SELECT name FROM workers")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(db.conn.is_autocommit(), "no transaction left open");
    }
}
