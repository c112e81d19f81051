//! Command jobs: the user's own training program, run beside the built-in
//! trainer. The program runs as a child process in its own process group,
//! in the job's run directory (or the config's `workdir`), with
//! `SWEEP_RUN_DIR`, `SWEEP_SEED`, `SWEEP_METRICS` (and `SWEEP_RESUME_FROM` on
//! a resumed attempt) set. It appends one JSON object per line to
//! `$SWEEP_METRICS`; this module tails that file and streams each epoch
//! through the same ReportEpoch path as the built-in trainer (so the results
//! table, TensorBoard and the dashboard need nothing new), uploads what the
//! program writes under `checkpoints/` with each epoch, ships its
//! stdout/stderr as the job's log, and turns its exit into the job's outcome.
//!
//! Checkpoints reuse the coordinator's commit protocol: the files of an epoch
//! are staged until a commit record arrives, and here the worker writes that
//! record (a manifest of the epochs so far and of the file written last), so
//! a resumed attempt gets back a consistent set of files, the epochs already
//! reported, and `SWEEP_RESUME_FROM` pointing at the newest file.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sweep_core::command::{CommandConfig, Runtime};
use sweep_core::lease::LeasedJob;
use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::names;
use sweep_proto::pb;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tonic::Status;

use crate::Ctx;
use crate::job::{complete, download_checkpoints, fail, is_fenced, report_epoch};
use crate::transfer::{self, TransferError};

/// The metrics file the program appends to (`$SWEEP_METRICS`).
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The program's stdout and stderr, in full, in the local run directory.
pub const OUTPUT_FILE: &str = "output.log";
/// The commit record of a command job's checkpoints. The coordinator commits
/// an epoch's staged files when a file of this name arrives (it is also the
/// built-in trainer's state file), so the name is reserved: a program's own
/// file of that name is not uploaded.
pub const MANIFEST: &str = "last.state.json";
/// What the manifest says it is, so that a built-in trainer's state file is
/// never mistaken for one.
const MANIFEST_FORMAT: &str = "sweeprun-command-checkpoint-v1";

/// How often the metrics file and the stop flag are looked at: a fifth of a
/// second is immediate for a human and nothing for the CPU.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Between SIGTERM and SIGKILL: time for the program to save and exit.
pub const TERM_GRACE: Duration = Duration::from_secs(10);
/// How long output still drains after the program exited: its pipes can be
/// held open by a grandchild that outlives it.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Output is sent in batches at most this far apart.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Output sent to the coordinator per attempt (its own limit is the same);
/// the rest stays in the local `output.log`.
const MAX_LOG_BYTES: usize = 4 << 20;
/// Lines of stderr quoted in the error of a failed attempt.
const STDERR_TAIL_LINES: usize = 20;
/// Longest line kept from the program's output, in bytes.
const MAX_LINE_BYTES: usize = 8 << 10;

/// How a command job ended, short of being reported.
enum Ended {
    /// Exited 0 with a test line: the run's metrics.
    Finished(RunMetrics),
    /// Stopped on the coordinator's word or on shutdown; nothing to report.
    Stopped,
    /// The attempt failed.
    Failed { message: String, permanent: bool },
}

/// The commit record uploaded with every set of checkpoint files.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    /// The file the program wrote last (`$SWEEP_RESUME_FROM` on resume).
    latest: Option<String>,
    /// Every epoch reported so far, so that a resumed attempt's final
    /// metrics hold the epochs of the attempts before it.
    epochs: Vec<EpochMetrics>,
}

/// The threads of a command job, resolved as for a built-in one
/// ([`crate::WorkerConfig::job_threads`]): `--threads`, else the config's
/// `training.threads` when it is a positive integer, else the worker's share
/// of the cores. The program gets it as `SWEEP_THREADS`.
fn command_threads(ctx: &Ctx, config: &CommandConfig) -> usize {
    let configured = config
        .lookup("training.threads")
        .and_then(Value::as_u64)
        .and_then(|t| usize::try_from(t).ok())
        .filter(|&t| t > 0);
    ctx.config.job_threads(configured)
}

/// Runs one leased command job to its end (or until stopped).
pub(crate) async fn run(ctx: &Ctx, job: &LeasedJob, config: CommandConfig, stop: &Arc<AtomicBool>) {
    if !ctx.config.allow_commands {
        // The coordinator should never lease one here; refuse rather than run.
        let message = "this worker was not started with --allow-commands".to_string();
        fail(ctx, job, message, false).await;
        return;
    }
    let run_dir = match std::path::absolute(crate::local_run_dir(
        &ctx.config.cache_dir,
        &job.sweep,
        &job.variant,
        job.seed,
    )) {
        Ok(dir) => dir,
        Err(err) => {
            fail(ctx, job, format!("run directory: {err}"), false).await;
            return;
        }
    };
    let resume = match download_checkpoints(ctx, job, &run_dir.join("checkpoints")).await {
        Ok(resume) => resume,
        Err(TransferError::Status(status)) if is_fenced(&status) || ctx.shutdown.is_cancelled() => {
            tracing::warn!(job = %job.id, error = %status.message(), "job abandoned before it started");
            return;
        }
        Err(err) => {
            fail(ctx, job, format!("preparing the job: {err}"), false).await;
            return;
        }
    };
    let (name, device) = (ctx.config.name.clone(), ctx.config.device);
    let threads = command_threads(ctx, &config) as u32;
    crate::provenance::record(ctx, job, move || {
        crate::provenance::command(&name, device, threads)
    })
    .await;
    let outcome = match Execution::new(ctx, job, &config, &run_dir, resume, stop).await {
        Ok(execution) => execution.run().await,
        Err(ended) => ended,
    };
    match outcome {
        Ended::Finished(metrics) => {
            tracing::info!(job = %job.id, test_acc = metrics.test.map(|t| t.test_acc), "command job finished");
            complete(
                ctx,
                job,
                pb::complete_job_request::Outcome::Metrics(metrics.into()),
            )
            .await;
        }
        Ended::Stopped => tracing::info!(job = %job.id, "command job stopped"),
        Ended::Failed { message, permanent } => {
            tracing::error!(job = %job.id, error = %message, permanent, "command job failed");
            fail(ctx, job, message, permanent).await;
        }
    }
}

/// One attempt of a command job: the child process and what is learnt from it.
struct Execution<'a> {
    ctx: &'a Ctx,
    job: &'a LeasedJob,
    stop: &'a Arc<AtomicBool>,
    child: tokio::process::Child,
    /// The child's process group (its pid): signals go to the whole group.
    pgid: i32,
    started: Instant,
    metrics: MetricsTail,
    checkpoints: CheckpointSync,
    log: LogShipper,
    output: mpsc::Receiver<(&'static str, String)>,
    output_file: tokio::fs::File,
    stderr_tail: VecDeque<String>,
    /// Every epoch so far, the earlier attempts' included.
    epochs: Vec<EpochMetrics>,
    test: Option<TestMetrics>,
    last_line_at: Instant,
    /// The epoch of this attempt's previous line, to notice one going back.
    last_epoch: Option<u32>,
    /// Near-miss keys already warned about, so that each is named once per
    /// attempt.
    warned: HashSet<String>,
    /// Set once the coordinator refused a report: nothing more is sent.
    fenced: bool,
}

impl<'a> Execution<'a> {
    /// Writes the config, prepares the files and starts the program.
    async fn new(
        ctx: &'a Ctx,
        job: &'a LeasedJob,
        config: &CommandConfig,
        run_dir: &Path,
        resume: bool,
        stop: &'a Arc<AtomicBool>,
    ) -> Result<Execution<'a>, Ended> {
        let transient = |what: &str, err: std::io::Error| Ended::Failed {
            message: format!("{what}: {err}"),
            permanent: false,
        };
        let checkpoints_dir = run_dir.join("checkpoints");
        tokio::fs::create_dir_all(&checkpoints_dir)
            .await
            .map_err(|e| transient(&checkpoints_dir.display().to_string(), e))?;
        let config_path = run_dir.join("config.yaml");
        tokio::fs::write(&config_path, config.to_yaml())
            .await
            .map_err(|e| transient(&config_path.display().to_string(), e))?;
        let metrics_path = run_dir.join(METRICS_FILE);
        // Each attempt starts a new file: the earlier attempts' epochs come
        // back through the manifest, and a stale line must not be re-read.
        tokio::fs::write(&metrics_path, b"")
            .await
            .map_err(|e| transient(&metrics_path.display().to_string(), e))?;
        let output_path = run_dir.join(OUTPUT_FILE);
        let output_file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output_path)
            .await
            .map_err(|e| transient(&output_path.display().to_string(), e))?;

        let mut checkpoints = CheckpointSync::new(checkpoints_dir.clone());
        let mut epochs = Vec::new();
        let mut resume_from = None;
        if resume {
            checkpoints.mark_present();
            match read_manifest(&checkpoints_dir.join(MANIFEST)) {
                Ok(manifest) => {
                    epochs = manifest.epochs;
                    resume_from = manifest.latest.map(|name| checkpoints_dir.join(name));
                }
                Err(reason) => {
                    // Files without a readable manifest are not a checkpoint of
                    // ours: start over rather than fail for good.
                    tracing::warn!(job = %job.id, reason, "cannot resume from the downloaded checkpoint; starting over");
                    let _ = tokio::fs::remove_dir_all(&checkpoints_dir).await;
                    tokio::fs::create_dir_all(&checkpoints_dir)
                        .await
                        .map_err(|e| transient(&checkpoints_dir.display().to_string(), e))?;
                    checkpoints = CheckpointSync::new(checkpoints_dir.clone());
                }
            }
        }

        let runtime = Runtime {
            run_dir,
            config_path: &config_path,
        };
        let permanent = |message: String| Ended::Failed {
            message,
            permanent: true,
        };
        let argv = config
            .command
            .iter()
            .map(|arg| config.fill(arg, &runtime))
            .collect::<Result<Vec<_>, _>>()
            .map_err(permanent)?;
        let workdir = match &config.workdir {
            Some(dir) => std::path::absolute(dir).map_err(|e| transient("workdir", e))?,
            None => run_dir.to_path_buf(),
        };
        if !workdir.is_dir() {
            return Err(Ended::Failed {
                message: format!(
                    "workdir {} does not exist on this worker",
                    workdir.display()
                ),
                permanent: false,
            });
        }
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: SIGTERM/SIGKILL reach the program's children
            // (data loader processes) too, and a Ctrl-C in the worker's
            // terminal reaches the worker only, which then stops the job.
            .process_group(0)
            // The worker's credentials are not the program's business.
            .env_remove("SWEEP_TOKEN")
            .env_remove("SWEEP_TOKEN_FILE")
            .env_remove("SWEEP_TLS_CA")
            .env("SWEEP_RUN_DIR", run_dir)
            .env("SWEEP_SEED", config.seed.to_string())
            .env("SWEEP_METRICS", &metrics_path)
            .env("SWEEP_CONFIG", &config_path)
            .env("SWEEP_DEVICE", ctx.config.device.to_string())
            .env_remove("SWEEP_RESUME_FROM");
        // Always set, for the program to pass to its library: left unset,
        // PyTorch takes every core in each of the jobs side by side.
        command.env("SWEEP_THREADS", command_threads(ctx, config).to_string());
        if let Some(path) = &resume_from {
            command.env("SWEEP_RESUME_FROM", path);
        }
        for (name, value) in &config.env {
            command.env(name, config.fill(value, &runtime).map_err(permanent)?);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe. It makes the kernel kill
        // the program if the worker dies without stopping it (SIGKILL, OOM):
        // an orphaned training run would hold the machine's GPU and CPUs.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|err| Ended::Failed {
            message: format!("cannot start {:?} in {}: {err}", argv[0], workdir.display()),
            permanent: false,
        })?;
        let pgid = child.id().map_or(0, |pid| pid as i32);
        tracing::info!(job = %job.id, program = %argv[0], pid = pgid, resume_from = ?resume_from, "command job started");

        let (tx, output) = mpsc::channel(256);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(stdout, "stdout", tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, "stderr", tx));
        }
        let now = Instant::now();
        Ok(Execution {
            ctx,
            job,
            stop,
            child,
            pgid,
            started: now,
            metrics: MetricsTail::new(metrics_path),
            checkpoints,
            log: LogShipper::default(),
            output,
            output_file,
            stderr_tail: VecDeque::new(),
            epochs,
            test: None,
            last_line_at: now,
            last_epoch: None,
            warned: HashSet::new(),
            fenced: false,
        })
    }

    /// Supervises the program until it exits, then decides the outcome.
    async fn run(mut self) -> Ended {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        // When SIGTERM went out; SIGKILL follows after TERM_GRACE.
        let mut terminating: Option<Instant> = None;
        let mut failure: Option<(String, bool)> = None;
        let mut output_open = true;
        let status = loop {
            tokio::select! {
                status = self.child.wait() => break status,
                line = self.output.recv(), if output_open => match line {
                    Some((stream, line)) => self.on_output(stream, line).await,
                    None => output_open = false,
                },
                _ = tick.tick() => {
                    if terminating.is_none()
                        && failure.is_none()
                        && let Err(err) = self.poll_metrics(false).await
                    {
                        failure = Some(err);
                    }
                    if last_flush.elapsed() >= LOG_FLUSH_INTERVAL {
                        self.flush_log().await;
                        last_flush = Instant::now();
                    }
                    let must_stop = failure.is_some() || self.fenced || self.stop.load(Ordering::SeqCst);
                    match terminating {
                        None if must_stop => {
                            tracing::info!(job = %self.job.id, pgid = self.pgid, "stopping the program (SIGTERM)");
                            signal_group(self.pgid, libc::SIGTERM);
                            terminating = Some(Instant::now());
                        }
                        Some(since) if since.elapsed() >= TERM_GRACE => {
                            tracing::warn!(job = %self.job.id, pgid = self.pgid, "the program ignored SIGTERM; SIGKILL");
                            signal_group(self.pgid, libc::SIGKILL);
                            terminating = Some(Instant::now() + Duration::from_secs(3600));
                        }
                        _ => {}
                    }
                }
            }
        };
        // Whatever is left in the pipes, and anything still alive in the group.
        let drain_until = tokio::time::Instant::now() + OUTPUT_DRAIN;
        while output_open {
            tokio::select! {
                line = self.output.recv() => match line {
                    Some((stream, line)) => self.on_output(stream, line).await,
                    None => output_open = false,
                },
                _ = tokio::time::sleep_until(drain_until) => output_open = false,
            }
        }
        signal_group(self.pgid, libc::SIGKILL);

        if failure.is_none()
            && terminating.is_none()
            && let Err(err) = self.poll_metrics(true).await
        {
            failure = Some(err);
        }
        self.flush_log().await;
        if let Some((message, permanent)) = failure {
            return if self.fenced {
                Ended::Stopped
            } else {
                Ended::Failed { message, permanent }
            };
        }
        if self.fenced || terminating.is_some() || self.stop.load(Ordering::SeqCst) {
            return Ended::Stopped;
        }
        let status = match status {
            Ok(status) => status,
            Err(err) => {
                return Ended::Failed {
                    message: format!("waiting for the program: {err}"),
                    permanent: false,
                };
            }
        };
        if !status.success() {
            return Ended::Failed {
                message: format!(
                    "the program {}{}",
                    describe_exit(status),
                    self.stderr_excerpt()
                ),
                permanent: false,
            };
        }
        // Files written after the last epoch line (a final best checkpoint).
        if let Err(ended) = self.sync_checkpoints_only().await {
            return ended;
        }
        let Some(test) = self.test else {
            return Ended::Failed {
                message: format!(
                    "the program exited 0 without writing a final {{\"test_acc\": ...}} line to $SWEEP_METRICS ({}){}",
                    self.metrics.path.display(),
                    self.stderr_excerpt()
                ),
                permanent: true,
            };
        };
        let mut metrics = RunMetrics::default();
        for epoch in &self.epochs {
            let improved = metrics
                .best_val_loss
                .is_none_or(|best| epoch.val_loss < best);
            metrics.record_epoch(*epoch, improved);
        }
        metrics.test = Some(test);
        if metrics.epochs.is_empty() {
            // No epoch lines: the whole run counts as its training time.
            metrics.train_seconds = self.started.elapsed().as_secs_f64();
        }
        Ended::Finished(metrics)
    }

    async fn on_output(&mut self, stream: &'static str, line: String) {
        if stream == "stderr" {
            if self.stderr_tail.len() == STDERR_TAIL_LINES {
                self.stderr_tail.pop_front();
            }
            self.stderr_tail.push_back(line.clone());
        }
        self.record(stream, line).await;
    }

    /// A line of the job's log: in `output.log` here, and on its way to the
    /// coordinator (sent at once when much is pending).
    async fn record(&mut self, stream: &'static str, line: String) {
        let _ = self
            .output_file
            .write_all(format!("[{stream}] {line}\n").as_bytes())
            .await;
        self.log.push(stream, line);
        if self.log.pending_bytes() >= 64 << 10 {
            self.flush_log().await;
        }
    }

    /// Something the user's program wrote that is kept but looks like a
    /// mistake: in the job's log (beside the program's stderr, so that
    /// `sweepctl logs` and the dashboard show it) and in this worker's.
    async fn warn(&mut self, text: String) {
        tracing::warn!(job = %self.job.id, "{text}");
        self.record("stderr", format!("sweep-worker: {text}")).await;
    }

    async fn flush_log(&mut self) {
        if self.fenced {
            return;
        }
        self.log.flush(self.ctx, self.job).await;
    }

    fn stderr_excerpt(&self) -> String {
        if self.stderr_tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = self.stderr_tail.iter().map(String::as_str).collect();
        format!("; last lines of stderr:\n{}", lines.join("\n"))
    }

    /// Reads new metrics lines and reports each epoch (with the checkpoint
    /// files changed since the last report). `at_exit`: the program has
    /// ended, so a last line without its newline counts too.
    async fn poll_metrics(&mut self, at_exit: bool) -> Result<(), (String, bool)> {
        let lines = self
            .metrics
            .read_lines(at_exit)
            .map_err(|err| (err, false))?;
        for (number, line) in lines {
            let now = Instant::now();
            let seconds = now.duration_since(self.last_line_at).as_secs_f64();
            self.last_line_at = now;
            let parsed = parse_line(&line, seconds).map_err(|reason| {
                (
                    format!(
                        "{} line {number}: {reason}: {}",
                        self.metrics.path.display(),
                        truncate(&line, 200)
                    ),
                    true,
                )
            })?;
            let at = format!("{} line {number}", self.metrics.path.display());
            for miss in parsed.near_misses {
                if self.warned.insert(miss.clone()) {
                    self.warn(format!("{at}: {miss}")).await;
                }
            }
            if let Some(epoch) = parsed.epoch {
                let again = match self.last_epoch {
                    Some(previous) if epoch.epoch == previous => Some(format!(
                        "epoch {previous} again; it replaces the earlier one"
                    )),
                    Some(previous) if epoch.epoch < previous => Some(format!(
                        "epoch {} after epoch {previous}; it replaces epochs {} to {previous}",
                        epoch.epoch, epoch.epoch
                    )),
                    _ => None,
                };
                if let Some(again) = again {
                    self.warn(format!("{at}: {again}")).await;
                }
                self.last_epoch = Some(epoch.epoch);
                // A resumed program may redo epochs: later reports replace them.
                self.epochs.retain(|e| e.epoch < epoch.epoch);
                self.epochs.push(epoch);
                if !self.fenced {
                    let files = self.changed_checkpoint_files().map_err(|e| (e, false))?;
                    if let Err(status) = report_epoch(self.ctx, self.job, epoch, files).await {
                        self.on_refused(&status);
                    }
                }
            }
            if let Some(test) = parsed.test {
                self.test = Some(test);
            }
        }
        Ok(())
    }

    fn on_refused(&mut self, status: &Status) {
        if !self.ctx.shutdown.is_cancelled() {
            tracing::warn!(job = %self.job.id, error = %status.message(), "coordinator refused a report; stopping the job");
        }
        self.fenced = true;
    }

    /// The checkpoint files changed since the last upload, then the manifest
    /// (the commit record); empty when the program has written none.
    fn changed_checkpoint_files(&mut self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut files = self.checkpoints.changed()?;
        if files.is_empty() && !self.checkpoints.any_uploaded() {
            return Ok(files);
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            latest: self.checkpoints.latest.clone(),
            epochs: self.epochs.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        files.push((MANIFEST.to_string(), bytes));
        Ok(files)
    }

    /// Uploads checkpoint files written since the last epoch line.
    async fn sync_checkpoints_only(&mut self) -> Result<(), Ended> {
        if self.fenced || !self.checkpoints.has_changes() {
            return Ok(());
        }
        let files = self
            .changed_checkpoint_files()
            .map_err(|message| Ended::Failed {
                message,
                permanent: false,
            })?;
        if let Err(status) = upload_files(self.ctx, self.job, &files).await {
            self.on_refused(&status);
            return Err(Ended::Stopped);
        }
        Ok(())
    }
}

impl Drop for Execution<'_> {
    /// A job abandoned mid-way (the worker's task dropped) leaves no program behind.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) on a process group this worker created, with a
        // valid signal number; it touches no memory of ours.
        unsafe { libc::kill(-pgid, signal) };
    }
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Sends each line of `reader` to `tx` until end of file.
async fn forward_lines<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    stream: &'static str,
    tx: mpsc::Sender<(&'static str, String)>,
) {
    let mut reader = BufReader::new(reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = truncate(line.trim_end_matches(['\n', '\r']), MAX_LINE_BYTES);
                if tx.send((stream, line.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(format!("{}: not a command job's manifest", path.display()));
    }
    Ok(manifest)
}

/// Uploads files in order (the manifest last commits the others).
async fn upload_files(
    ctx: &Ctx,
    job: &LeasedJob,
    files: &[(String, Vec<u8>)],
) -> Result<(), Status> {
    for (name, bytes) in files {
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

// ---------------------------------------------------------------------------
// The metrics file

/// Follows `$SWEEP_METRICS` as the program appends to it.
struct MetricsTail {
    path: PathBuf,
    /// Bytes consumed so far.
    offset: u64,
    /// A line read without its newline yet.
    partial: Vec<u8>,
    /// Lines consumed so far (for error messages, 1-based).
    lines: usize,
}

impl MetricsTail {
    fn new(path: PathBuf) -> Self {
        MetricsTail {
            path,
            offset: 0,
            partial: Vec::new(),
            lines: 0,
        }
    }

    /// The complete lines appended since the last call, numbered.
    fn read_lines(&mut self, at_exit: bool) -> Result<Vec<(usize, String)>, String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            // The program may have deleted it; nothing more to read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let mut out = Vec::new();
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.lines += 1;
            out.push((
                self.lines,
                String::from_utf8_lossy(&line).trim().to_string(),
            ));
        }
        if at_exit && !self.partial.is_empty() {
            self.lines += 1;
            let line = std::mem::take(&mut self.partial);
            out.push((
                self.lines,
                String::from_utf8_lossy(&line).trim().to_string(),
            ));
        }
        out.retain(|(_, line)| !line.is_empty());
        Ok(out)
    }
}

/// What one metrics line says.
#[derive(Debug, PartialEq)]
struct Line {
    epoch: Option<EpochMetrics>,
    test: Option<TestMetrics>,
    /// Keys that are none of [`METRIC_KEYS`] but nearly one (`train_los`):
    /// ignored like any other key of the program's, and worth a warning,
    /// since the metric meant reads 0 or is missing.
    near_misses: Vec<String>,
}

/// The keys a metrics line is read for.
const METRIC_KEYS: [&str; 9] = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "test_acc",
    "test_loss",
];

/// `"train_los" is not read (did you mean "train_loss"?)` for a key one
/// letter dropped, added or swapped with its neighbour away from a metric
/// key. A letter replaced is not a slip: `val_auc` is a metric of its own,
/// nor is a digit added at the end (`val_acc5`).
fn near_miss(key: &str) -> Option<String> {
    if METRIC_KEYS.contains(&key) {
        return None;
    }
    let letters = |s: &str| {
        let mut chars: Vec<char> = s.chars().collect();
        chars.sort_unstable();
        chars
    };
    METRIC_KEYS
        .iter()
        .filter(|known| known.len() > 3)
        .find(|known| {
            strsim::osa_distance(known, key) == 1
                && (known.len() != key.len() || letters(known) == letters(key))
                // `val_acc5`: a top-5 accuracy of the program's own.
                && !key.strip_prefix(*known).is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|known| format!("{key:?} is not read (did you mean {known:?}?)"))
}

/// Parses one metrics line. An epoch line has `epoch`, `val_loss` and
/// `val_acc`, and may have `train_loss`, `train_acc`, `lr` (0 when absent)
/// and `seconds` (default: the time since the previous line). A final line
/// has `test_acc` and may have `test_loss` (0 when absent). Other keys are
/// allowed and ignored. Accuracies are fractions in [0, 1].
fn parse_line(line: &str, seconds_since_previous: f64) -> Result<Line, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".into());
    };
    let number = |key: &str| -> Result<Option<f64>, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_f64() {
                Some(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(format!("{key} must be a finite number, got {value}")),
            },
        }
    };
    let fraction = |key: &str| -> Result<Option<f64>, String> {
        let v = number(key)?;
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            return Err(format!("{key} must be a fraction in [0, 1], got {v}"));
        }
        Ok(v)
    };
    let epoch = match map.get("epoch") {
        None => None,
        Some(value) => {
            let epoch = value
                .as_u64()
                .filter(|&e| e >= 1)
                .and_then(|e| u32::try_from(e).ok())
                .ok_or_else(|| format!("epoch must be an integer >= 1, got {value}"))?;
            let required =
                |key: &str, v: Option<f64>| v.ok_or_else(|| format!("an epoch line needs {key:?}"));
            Some(EpochMetrics {
                epoch,
                train_loss: number("train_loss")?.unwrap_or(0.0),
                train_acc: fraction("train_acc")?.unwrap_or(0.0),
                val_loss: required("val_loss", number("val_loss")?)?,
                val_acc: required("val_acc", fraction("val_acc")?)?,
                lr: number("lr")?.unwrap_or(0.0),
                seconds: number("seconds")?.unwrap_or(seconds_since_previous),
            })
        }
    };
    let test = match fraction("test_acc")? {
        None => None,
        Some(test_acc) => Some(TestMetrics {
            test_loss: number("test_loss")?.unwrap_or(0.0),
            test_acc,
        }),
    };
    if epoch.is_none() && test.is_none() {
        return Err(
            "a metrics line needs \"epoch\" (an epoch) or \"test_acc\" (the final line)".into(),
        );
    }
    let near_misses = map.keys().filter_map(|key| near_miss(key)).collect();
    Ok(Line {
        epoch,
        test,
        near_misses,
    })
}

// ---------------------------------------------------------------------------
// Checkpoints

/// Which files under `checkpoints/` the coordinator has, by size and mtime.
struct CheckpointSync {
    dir: PathBuf,
    uploaded: HashMap<String, (u64, SystemTime)>,
    /// The file written last (by mtime) among those uploaded.
    latest: Option<String>,
}

impl CheckpointSync {
    fn new(dir: PathBuf) -> Self {
        CheckpointSync {
            dir,
            uploaded: HashMap::new(),
            latest: None,
        }
    }

    /// The program's files: plain files whose names are safe to send, but
    /// not the manifest and not temporaries (`.tmp`, `.part`, dotfiles), so
    /// that a program writing `x.tmp` and renaming it never has a half file
    /// uploaded.
    fn scan(&self) -> Result<Vec<(String, u64, SystemTime)>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == MANIFEST
                || name.ends_with(".tmp")
                || name.ends_with(".part")
                || names::validate("checkpoint file", &name).is_err()
            {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            files.push((name, meta.len(), mtime));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// Records what is there now as held by the coordinator (downloaded on resume).
    fn mark_present(&mut self) {
        if let Ok(files) = self.scan() {
            for (name, len, mtime) in files {
                self.uploaded.insert(name, (len, mtime));
            }
        }
    }

    fn has_changes(&self) -> bool {
        self.scan().is_ok_and(|files| {
            files
                .iter()
                .any(|(name, len, mtime)| self.uploaded.get(name) != Some(&(*len, *mtime)))
        })
    }

    fn any_uploaded(&self) -> bool {
        !self.uploaded.is_empty()
    }

    /// The contents of the files changed since the last call, recorded as uploaded.
    fn changed(&mut self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut out = Vec::new();
        let mut newest: Option<(SystemTime, String)> = None;
        for (name, len, mtime) in self.scan()? {
            if self.uploaded.get(&name) == Some(&(len, mtime)) {
                continue;
            }
            let path = self.dir.join(&name);
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Replaced or removed between the scan and the read: the next epoch has it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            };
            if newest.as_ref().is_none_or(|(t, _)| mtime >= *t) {
                newest = Some((mtime, name.clone()));
            }
            self.uploaded.insert(name.clone(), (len, mtime));
            out.push((name, bytes));
        }
        if let Some((_, name)) = newest {
            self.latest = Some(name);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Output shipping

/// Batches the program's output lines to the coordinator (`AppendJobLog`).
#[derive(Default)]
struct LogShipper {
    pending: Vec<(&'static str, String)>,
    pending_bytes: usize,
    /// Next batch number of this attempt.
    seq: u64,
    sent_bytes: usize,
    /// Set once the coordinator refused output or the budget is spent.
    closed: bool,
}

impl LogShipper {
    fn push(&mut self, stream: &'static str, line: String) {
        if self.closed {
            return;
        }
        self.pending_bytes += line.len() + 1;
        self.pending.push((stream, line));
    }

    fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Sends what is pending, one request per run of lines of one stream.
    async fn flush(&mut self, ctx: &Ctx, job: &LeasedJob) {
        if self.pending.is_empty() || self.closed {
            self.pending.clear();
            self.pending_bytes = 0;
            return;
        }
        let lines = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut batches: Vec<(&'static str, String)> = Vec::new();
        for (stream, line) in lines {
            match batches.last_mut() {
                Some((s, text)) if *s == stream => {
                    text.push_str(&line);
                    text.push('\n');
                }
                _ => batches.push((stream, format!("{line}\n"))),
            }
        }
        for (stream, mut text) in batches {
            if self.sent_bytes + text.len() > MAX_LOG_BYTES {
                text = format!(
                    "[sweeprun: more than {} MiB of output; the rest is only in the worker's {OUTPUT_FILE}]\n",
                    MAX_LOG_BYTES >> 20
                );
                self.closed = true;
            }
            self.sent_bytes += text.len();
            let request = pb::AppendJobLogRequest {
                worker_id: ctx.worker_id(),
                job_id: job.id.clone(),
                attempt: job.attempt,
                seq: self.seq,
                stream: stream.to_string(),
                text,
            };
            self.seq += 1;
            let sent = ctx
                .retry("append job log", || {
                    let mut client = ctx.client();
                    let arg = request.clone();
                    async move { client.append_job_log(arg).await }
                })
                .await;
            if let Err(status) = sent {
                // The log is not worth the job: keep running, stop sending.
                tracing::warn!(job = %job.id, error = %status.message(), "coordinator refused the program's output; it stays in the worker's run dir");
                self.closed = true;
            }
            if self.closed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_test_lines_parse() {
        let line = parse_line(
            r#"{"epoch": 2, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.2, "val_acc": 0.95, "lr": 0.001, "extra": "ignored"}"#,
            1.5,
        )
        .expect("epoch line");
        let epoch = line.epoch.expect("epoch");
        assert_eq!(epoch.epoch, 2);
        assert_eq!(epoch.val_acc, 0.95);
        assert_eq!(epoch.seconds, 1.5);
        assert!(line.test.is_none());

        let line = parse_line(r#"{"test_acc": 0.97}"#, 0.0).expect("test line");
        assert_eq!(
            line.test,
            Some(TestMetrics {
                test_loss: 0.0,
                test_acc: 0.97
            })
        );
    }

    #[test]
    fn keys_that_nearly_name_a_metric_are_pointed_out() {
        let line = parse_line(
            r#"{"epoch": 1, "val_loss": 1, "val_acc": 0.5, "train_los": 0.3, "valacc": 0.5, "trian_acc": 0.4, "val_auc": 0.9, "val_acc5": 0.99, "grad_norm": 2, "lr": 0.1}"#,
            0.0,
        )
        .expect("epoch line");
        let mut misses = line.near_misses;
        misses.sort();
        assert_eq!(
            misses,
            [
                "\"train_los\" is not read (did you mean \"train_loss\"?)",
                "\"trian_acc\" is not read (did you mean \"train_acc\"?)",
                "\"valacc\" is not read (did you mean \"val_acc\"?)",
            ]
        );
    }

    #[test]
    fn malformed_lines_say_why() {
        for (line, why) in [
            ("{\"epoch\": 1", "not JSON"),
            ("[1, 2]", "JSON object"),
            ("{\"loss\": 1}", "needs \"epoch\""),
            (
                "{\"epoch\": 0, \"val_loss\": 1, \"val_acc\": 0.5}",
                "integer >= 1",
            ),
            ("{\"epoch\": 1, \"val_acc\": 0.5}", "needs \"val_loss\""),
            (
                "{\"epoch\": 1, \"val_loss\": 1, \"val_acc\": 97}",
                "fraction",
            ),
            ("{\"test_acc\": \"high\"}", "finite number"),
        ] {
            let err = parse_line(line, 0.0).expect_err(line);
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn the_tail_returns_complete_lines_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, "{\"a\": 1}\n\n{\"b\"").expect("write");
        let mut tail = MetricsTail::new(path.clone());
        assert_eq!(
            tail.read_lines(false).expect("read"),
            [(1, "{\"a\": 1}".to_string())]
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut file, b": 2}\n{\"c\": 3}").expect("append");
        assert_eq!(
            tail.read_lines(false).expect("read"),
            [(3, "{\"b\": 2}".to_string())]
        );
        assert_eq!(
            tail.read_lines(true).expect("read"),
            [(4, "{\"c\": 3}".to_string())]
        );
    }

    #[test]
    fn checkpoint_sync_sends_changed_files_and_skips_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sync = CheckpointSync::new(dir.path().to_path_buf());
        std::fs::write(dir.path().join("last.pt"), b"1").expect("write");
        std::fs::write(dir.path().join("half.pt.tmp"), b"x").expect("write");
        std::fs::write(dir.path().join(MANIFEST), b"{}").expect("write");
        let names: Vec<String> = sync
            .changed()
            .expect("scan")
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(names, ["last.pt"]);
        assert!(sync.changed().expect("scan").is_empty());
        assert_eq!(sync.latest.as_deref(), Some("last.pt"));
        std::fs::write(dir.path().join("last.pt"), b"22").expect("write");
        assert!(sync.has_changes());
        assert_eq!(sync.changed().expect("scan").len(), 1);
    }
}
