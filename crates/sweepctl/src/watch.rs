//! `sweepctl watch`: follows a sweep live over the WatchStatus stream until
//! every job has ended, then prints its results table.
//!
//! On a terminal it draws progress bars (one per sweep: finished/total; one
//! per pending or running job: epoch/epochs and the latest validation
//! accuracy). Piped, it prints one line per change instead, so that a log
//! file or CI output reads as a history rather than as escape codes.
//!
//! A sweep of more than [`tables::JOB_LIST_LIMIT`] jobs is followed per
//! variant instead (a bar per variant; piped, the sweep's counts at most every
//! [`SUMMARY_INTERVAL`] and a line per variant that ends), with failed jobs
//! still named one by one; `--all` follows every job whatever the size.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_core::results::Format;
use sweep_core::status::JobCounts;
use sweep_proto::pb;

use crate::client::{self, ConnectArgs};
use crate::remote;
use crate::tables;

/// Piped output of a summarised sweep: its counts at most this often, so a
/// 10,000-job sweep prints a few hundred lines an hour, not one per job event.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The sweeps of a snapshot that are followed per variant rather than per job.
fn summarised_sweeps(snapshot: &pb::StatusSnapshot, all: bool) -> HashSet<String> {
    if all {
        return HashSet::new();
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for job in &snapshot.jobs {
        *counts.entry(job.sweep.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > tables::JOB_LIST_LIMIT)
        .map(|(sweep, _)| sweep.to_string())
        .collect()
}

/// A variant's counts in one line, with its sweep.
fn variant_line(sweep: &str, c: &tables::VariantCounts) -> String {
    format!("sweep {sweep} variant {}: {}", c.variant, c.jobs.line())
}

/// States after which a job never changes again.
fn has_ended(job: &pb::JobStatus) -> bool {
    matches!(job.state.as_str(), "succeeded" | "failed" | "cancelled")
}

/// Every sweep in the snapshot has ended (and there is at least one).
fn all_done(snapshot: &pb::StatusSnapshot) -> bool {
    !snapshot.sweeps.is_empty() && snapshot.sweeps.iter().all(|s| s.done)
}

/// A sweep's counts in one line.
pub fn sweep_line(s: &pb::SweepStatus) -> String {
    format!("sweep {}: {}", s.name, JobCounts::from(s).line())
}

/// What a job is doing, in one line (without its id); the epoch only
/// `with_epoch` (a bar shows it already).
fn job_detail(job: &pb::JobStatus, with_epoch: bool) -> String {
    let val = tables::percent(job.latest.as_ref().map(|m| m.val_acc));
    match job.state.as_str() {
        "leased" | "running" => {
            let epoch = if with_epoch {
                format!(", epoch {}", tables::progress(job))
            } else {
                String::new()
            };
            let mut text = format!("{} on {}{epoch}, val acc {val}", job.state, job.worker);
            if job.attempt > 1 {
                text.push_str(&format!(" (attempt {})", job.attempt));
            }
            text
        }
        "succeeded" => {
            format!(
                "succeeded: test acc {}, val acc {val}",
                tables::percent(job.test.as_ref().map(|t| t.test_acc))
            )
        }
        "failed" => format!("failed: {}", job.error),
        "pending" if job.attempt > 0 => format!(
            "pending (retry after attempt {}, epoch {})",
            job.attempt,
            tables::progress(job)
        ),
        state => state.to_string(),
    }
}

/// A job's state in one line.
pub fn job_line(job: &pb::JobStatus) -> String {
    format!("{}: {}", job.job_id, job_detail(job, true))
}

/// How the progress is shown.
trait View {
    fn update(&mut self, snapshot: &pb::StatusSnapshot);
    /// Every job has ended: leave the final state on screen.
    fn finish(&mut self);
    /// The user stopped watching: stop drawing, leave what is there.
    fn abandon(&mut self);
}

/// Line mode: prints what changed since the previous snapshot.
#[derive(Default)]
struct Lines {
    /// Follow every job, however many (`--all`).
    all: bool,
    /// Last line printed per sweep, variant and job, to print only changes.
    last: HashMap<String, String>,
    /// When each summarised sweep's line was last printed.
    printed_at: HashMap<String, Instant>,
}

impl Lines {
    fn new(all: bool) -> Self {
        Lines {
            all,
            ..Default::default()
        }
    }

    /// Records `line` under `key`; true when it differs from the last one.
    fn changed(&mut self, key: String, line: &str) -> bool {
        if self.last.get(&key).map(String::as_str) == Some(line) {
            return false;
        }
        self.last.insert(key, line.to_string());
        true
    }

    /// The lines that differ from those printed before, sweeps first. A
    /// summarised sweep's counts wait until [`SUMMARY_INTERVAL`] has passed
    /// since they were last printed (or the sweep is done); of its jobs only
    /// the failed ones are named, and a variant gets a line when it ends.
    fn changes(&mut self, snapshot: &pb::StatusSnapshot, now: Instant) -> Vec<String> {
        let summarised = summarised_sweeps(snapshot, self.all);
        let mut out = Vec::new();
        for s in &snapshot.sweeps {
            let line = sweep_line(s);
            let key = format!("sweep\0{}", s.name);
            if summarised.contains(&s.name) && !s.done {
                let recent = self
                    .printed_at
                    .get(&s.name)
                    .is_some_and(|at| now.duration_since(*at) < SUMMARY_INTERVAL);
                if recent || self.last.get(&key) == Some(&line) {
                    continue;
                }
                self.printed_at.insert(s.name.clone(), now);
            }
            if self.changed(key, &line) {
                out.push(line);
            }
        }
        for sweep in &summarised {
            let jobs = snapshot.jobs.iter().filter(|j| &j.sweep == sweep);
            for c in tables::variant_counts(jobs)
                .iter()
                .filter(|c| c.jobs.all_ended())
            {
                let line = variant_line(sweep, c);
                if self.changed(format!("variant\0{sweep}\0{}", c.variant), &line) {
                    out.push(line);
                }
            }
        }
        for job in &snapshot.jobs {
            if summarised.contains(&job.sweep) && job.state != "failed" {
                continue;
            }
            let line = job_line(job);
            if self.changed(format!("job\0{}", job.job_id), &line) {
                out.push(line);
            }
        }
        out
    }
}

impl View for Lines {
    fn update(&mut self, snapshot: &pb::StatusSnapshot) {
        let now = chrono::Local::now().format("%H:%M:%S");
        for line in self.changes(snapshot, Instant::now()) {
            println!("{now} {line}");
        }
    }

    fn finish(&mut self) {}

    fn abandon(&mut self) {}
}

/// Bar mode.
struct Bars {
    /// Follow every job, however many (`--all`).
    all: bool,
    multi: MultiProgress,
    sweep_style: ProgressStyle,
    job_style: ProgressStyle,
    variant_style: ProgressStyle,
    sweeps: HashMap<String, ProgressBar>,
    /// Bars of the jobs that have not ended; removed when they end.
    jobs: HashMap<String, ProgressBar>,
    /// Bars of the variants of summarised sweeps that have not ended.
    variants: HashMap<String, ProgressBar>,
    /// Variants and failed jobs of summarised sweeps already reported.
    reported: HashSet<String>,
}

/// A bar style from a constant template, falling back to the default rather
/// than failing the command over a cosmetic detail.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    fn new(all: bool) -> Self {
        Bars {
            all,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            // Under 120 columns with a 36-character prefix and the message
            // of a running job.
            sweep_style: style("{prefix:.bold} [{bar:20.green}] {pos}/{len} finished · {msg}"),
            job_style: style("  {prefix:<36} [{bar:20.cyan}] epoch {pos}/{len} · {msg}"),
            variant_style: style("  {prefix:<36} [{bar:20.cyan}] {pos}/{len} jobs · {msg}"),
            sweeps: HashMap::new(),
            jobs: HashMap::new(),
            variants: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    /// A summarised sweep: one bar per variant that has not ended, a line per
    /// variant that ends and per failed job.
    fn update_variants(&mut self, sweep: &str, snapshot: &pb::StatusSnapshot) {
        let jobs = snapshot.jobs.iter().filter(|j| j.sweep == sweep);
        for c in tables::variant_counts(jobs) {
            let key = format!("{sweep}\0{}", c.variant);
            if c.jobs.all_ended() {
                if let Some(bar) = self.variants.remove(&key) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if self.reported.insert(key) {
                    let _ = self.multi.println(variant_line(sweep, &c));
                }
                continue;
            }
            let bar = self.variants.entry(key).or_insert_with(|| {
                let bar = self.multi.add(
                    ProgressBar::new(u64::from(c.jobs.total))
                        .with_style(self.variant_style.clone()),
                );
                bar.set_prefix(c.variant.clone());
                bar
            });
            bar.set_length(u64::from(c.jobs.total.max(1)));
            bar.set_position(u64::from(c.jobs.ended()));
            bar.set_message(format!(
                "{} running, {} pending, {} failed · epochs {}/{}",
                c.jobs.running, c.jobs.pending, c.jobs.failed, c.epochs_done, c.epochs_total
            ));
        }
        for job in snapshot
            .jobs
            .iter()
            .filter(|j| j.sweep == sweep && j.state == "failed")
        {
            if self.reported.insert(format!("job\0{}", job.job_id)) {
                let _ = self.multi.println(job_line(job));
            }
        }
    }
}

impl View for Bars {
    fn update(&mut self, snapshot: &pb::StatusSnapshot) {
        let summarised = summarised_sweeps(snapshot, self.all);
        for sweep in &summarised {
            self.update_variants(sweep, snapshot);
        }
        for s in &snapshot.sweeps {
            let bar = self.sweeps.entry(s.name.clone()).or_insert_with(|| {
                let bar = self
                    .multi
                    .add(ProgressBar::new(u64::from(s.total)).with_style(self.sweep_style.clone()));
                bar.set_prefix(format!("sweep {}", s.name));
                bar
            });
            bar.set_length(u64::from(s.total));
            bar.set_position(u64::from(JobCounts::from(s).ended()));
            bar.set_message(format!(
                "{} running, {} pending, {} failed, {} cancelled",
                s.running, s.pending, s.failed, s.cancelled
            ));
        }
        for job in &snapshot.jobs {
            if summarised.contains(&job.sweep) {
                continue;
            }
            if has_ended(job) {
                // Jobs that had ended before we started watching get no line:
                // the final table shows them.
                if let Some(bar) = self.jobs.remove(&job.job_id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                    let _ = self.multi.println(job_line(job));
                }
                continue;
            }
            let bar = self.jobs.entry(job.job_id.clone()).or_insert_with(|| {
                let bar = self.multi.add(
                    ProgressBar::new(u64::from(job.epochs)).with_style(self.job_style.clone()),
                );
                bar.set_prefix(format!("{} seed {}", job.variant, job.seed));
                bar
            });
            bar.set_length(u64::from(job.epochs.max(1)));
            bar.set_position(u64::from(job.epoch));
            bar.set_message(job_detail(job, false));
        }
    }

    fn finish(&mut self) {
        for bar in self.jobs.values().chain(self.variants.values()) {
            bar.finish_and_clear();
        }
        for bar in self.sweeps.values() {
            bar.finish();
        }
    }

    fn abandon(&mut self) {
        for bar in self
            .jobs
            .values()
            .chain(self.variants.values())
            .chain(self.sweeps.values())
        {
            bar.abandon();
        }
    }
}

/// Resolves on Ctrl-C; never, if the handler cannot be installed (then the
/// default action, ending the process, still applies).
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub async fn watch(connect: &ConnectArgs, sweep: Option<String>, all: bool) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let mut stream = client
        .watch_status(pb::GetStatusRequest {
            sweep: sweep.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "watching the status", s))?
        .into_inner();
    let mut view: Box<dyn View> = if std::io::stdout().is_terminal() {
        Box::new(Bars::new(all))
    } else {
        Box::new(Lines::new(all))
    };
    let interrupted = ctrl_c();
    tokio::pin!(interrupted);
    let mut first = true;
    let last = loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(snapshot)) => {
                    if first {
                        remote::check_not_empty(&snapshot, connect, &sweep)?;
                        first = false;
                    }
                    view.update(&snapshot);
                    if all_done(&snapshot) {
                        break snapshot;
                    }
                }
                Ok(None) => {
                    view.abandon();
                    bail!("the coordinator at {} ended the watch before the sweep did (did it shut down?)", connect.coordinator);
                }
                Err(status) => {
                    view.abandon();
                    return Err(client::status_error(&connect.coordinator, "watching the status", status));
                }
            },
            _ = &mut interrupted => {
                view.abandon();
                eprintln!("stopped watching; the sweep goes on (`sweepctl watch` follows it again)");
                return Ok(());
            }
        }
    };
    view.finish();
    drop(view);

    for s in &last.sweeps {
        let answer =
            remote::fetch_results(&mut client, connect, &Some(s.name.clone()), Format::Table)
                .await?;
        println!();
        print!("{}", answer.rendered);
    }
    let failed: u32 = last.sweeps.iter().map(|s| s.failed).sum();
    if failed > 0 {
        bail!(
            "{failed} jobs failed; `sweepctl status` shows their errors and `sweepctl logs JOB_ID` their history"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, epoch: u32) -> pb::JobStatus {
        pb::JobStatus {
            job_id: "baseline-seed-42-0123abcd".into(),
            sweep: "quick".into(),
            variant: "baseline".into(),
            seed: 42,
            state: state.into(),
            attempt: 1,
            worker: "local-0".into(),
            epoch,
            epochs: 4,
            latest: (epoch > 0).then(|| pb::EpochMetrics {
                epoch,
                val_acc: 0.9,
                ..Default::default()
            }),
            test: (state == "succeeded").then_some(pb::TestMetrics {
                test_loss: 0.3,
                test_acc: 0.91,
            }),
            error: String::new(),
        }
    }

    fn snapshot(state: &str, epoch: u32, done: bool) -> pb::StatusSnapshot {
        pb::StatusSnapshot {
            sweeps: vec![pb::SweepStatus {
                name: "quick".into(),
                total: 1,
                running: u32::from(!done),
                succeeded: u32::from(done),
                done,
                ..Default::default()
            }],
            jobs: vec![job(state, epoch)],
        }
    }

    #[test]
    fn line_mode_prints_only_changes() {
        let mut lines = Lines::new(false);
        let now = Instant::now();
        assert_eq!(
            lines.changes(&snapshot("running", 1, false), now).len(),
            2,
            "first snapshot: everything"
        );
        assert!(
            lines
                .changes(&snapshot("running", 1, false), now)
                .is_empty(),
            "no change, no line"
        );
        let next = lines.changes(&snapshot("running", 2, false), now);
        assert_eq!(
            next,
            vec![
                "baseline-seed-42-0123abcd: running on local-0, epoch 2/4, val acc 90.00%"
                    .to_string()
            ]
        );
        let end = lines.changes(&snapshot("succeeded", 4, true), now);
        assert_eq!(end.len(), 2);
        assert!(end[0].starts_with("sweep quick: 1/1 finished"), "{end:?}");
        assert!(
            end[1].ends_with("succeeded: test acc 91.00%, val acc 90.00%"),
            "{end:?}"
        );
    }

    /// A 10,000-job sweep, `finished` of its jobs succeeded (one failed), the
    /// next 1,000 running.
    fn big(finished: usize) -> pb::StatusSnapshot {
        let jobs: Vec<pb::JobStatus> = (0..10_000usize)
            .map(|i| {
                let state = match i {
                    7 => "failed",
                    i if i < finished => "succeeded",
                    i if i < finished + 1000 => "running",
                    _ => "pending",
                };
                let mut j = job(state, u32::from(state != "pending"));
                j.job_id = format!("v{}-seed-{i}-0123abcd", i % 4);
                j.variant = format!("v{}", i % 4);
                j.seed = i as u64;
                j.error = "boom".into();
                j
            })
            .collect();
        let done = finished == jobs.len();
        let count = |s: &str| jobs.iter().filter(|j| j.state == s).count() as u32;
        pb::StatusSnapshot {
            sweeps: vec![pb::SweepStatus {
                name: "quick".into(),
                total: 10_000,
                running: count("running"),
                pending: count("pending"),
                succeeded: count("succeeded"),
                failed: count("failed"),
                done,
                ..Default::default()
            }],
            jobs,
        }
    }

    #[test]
    fn a_large_sweep_is_followed_per_variant_and_throttled() {
        let mut lines = Lines::new(false);
        let t0 = Instant::now();
        let first = lines.changes(&big(100), t0);
        // The sweep's counts and the one failed job; no line per job.
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first[0].starts_with("sweep quick: 100/10000"), "{first:?}");
        assert!(first[1].contains("failed: boom"), "{first:?}");
        // Progress within the interval: nothing; after it: the counts again.
        assert!(
            lines
                .changes(&big(200), t0 + Duration::from_secs(1))
                .is_empty()
        );
        let later = lines.changes(&big(300), t0 + SUMMARY_INTERVAL);
        assert_eq!(later.len(), 1, "{later:?}");
        // Every variant ends: a line each, and the final counts at once.
        let end = lines.changes(&big(10_000), t0 + SUMMARY_INTERVAL);
        assert_eq!(end.len(), 1 + 4, "{end:?}");
        assert!(end[0].starts_with("sweep quick: 10000/10000"), "{end:?}");
        assert!(end[1..].iter().all(|l| l.contains(" variant v")), "{end:?}");
        // --all: a line per job.
        assert!(Lines::new(true).changes(&big(100), t0).len() > 10_000);
    }

    #[test]
    fn done_needs_every_sweep() {
        assert!(!all_done(&pb::StatusSnapshot::default()));
        assert!(!all_done(&snapshot("running", 1, false)));
        assert!(all_done(&snapshot("succeeded", 4, true)));
    }
}
