//! Rendering of what the coordinator answers: status, workers and job logs as
//! text. Pure functions of what it answered (status as its messages, workers
//! and job logs as their domain types) and of "now" where ages are shown, so
//! they are tested without a server.

use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use sweep_core::status::{JobCounts, JobEvent, WorkerStatus};
use sweep_proto::pb;

/// Shown where a value does not exist (yet): no epoch finished, no worker.
const NONE: &str = "—";

/// Up to this many jobs in a sweep, `status` and `watch` show each job; beyond
/// it they summarise per variant and state (a 10,000-job sweep would be
/// 10,000 lines), listing only the failed jobs. `--all` lists them all.
pub const JOB_LIST_LIMIT: usize = 50;

/// Failed jobs listed under a summary: enough to see what goes wrong, few
/// enough to stay on a screen; `--all` (or `logs JOB`) shows the rest.
pub const FAILED_LISTED: usize = 20;

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        // Wraps to the terminal's width when there is one; piped output keeps
        // whole lines so that grep and friends see one row per line.
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

fn align_right(table: &mut Table, columns: &[usize]) {
    for &index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// An accuracy (a fraction) as a percentage, or a dash.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.2}%", v * 100.0),
        _ => NONE.to_string(),
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        NONE.to_string()
    } else {
        text.to_string()
    }
}

/// `epoch/epochs`, e.g. `3/20`; the epoch alone where the total is not
/// known (a command job whose config has no `training.epochs`).
pub fn progress(job: &pb::JobStatus) -> String {
    match job.epochs {
        0 => job.epoch.to_string(),
        epochs => format!("{}/{epochs}", job.epoch),
    }
}

/// A row's job counts: jobs, pending, running, succeeded, failed, cancelled.
const COUNT_COLUMNS: [&str; 6] = [
    "jobs",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
];

fn count_cells(c: &JobCounts) -> [String; 6] {
    [
        c.total,
        c.pending,
        c.running,
        c.succeeded,
        c.failed,
        c.cancelled,
    ]
    .map(|n| n.to_string())
}

/// The columns `first`, the counts, then `last`.
fn counts_table(first: &str, last: &str) -> Table {
    let mut headers = vec![first];
    headers.extend(COUNT_COLUMNS);
    headers.push(last);
    new_table(&headers)
}

/// One line per sweep with its job counts.
pub fn sweeps_table(sweeps: &[pb::SweepStatus]) -> Table {
    let mut table = counts_table("sweep", "done");
    for s in sweeps {
        let mut row = vec![s.name.clone()];
        row.extend(count_cells(&JobCounts::from(s)));
        row.push(if s.done { "yes" } else { "no" }.to_string());
        table.add_row(row);
    }
    align_right(&mut table, &[1, 2, 3, 4, 5, 6]);
    table
}

/// One line per job. The job id comes first: `logs` and `cancel --job` take it.
pub fn jobs_table<'a>(jobs: impl IntoIterator<Item = &'a pb::JobStatus>) -> Table {
    let mut table = new_table(&[
        "job", "variant", "seed", "state", "attempt", "worker", "epoch", "val acc", "test acc",
        "error",
    ]);
    for job in jobs {
        table.add_row(vec![
            job.job_id.clone(),
            job.variant.clone(),
            job.seed.to_string(),
            job.state.clone(),
            job.attempt.to_string(),
            or_dash(&job.worker),
            progress(job),
            percent(job.latest.as_ref().map(|m| m.val_acc)),
            percent(job.test.as_ref().map(|t| t.test_acc)),
            or_dash(&job.error),
        ]);
    }
    align_right(&mut table, &[2, 4, 6, 7, 8]);
    table
}

/// One variant's job counts by state, and its epochs done of all planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariantCounts {
    pub variant: String,
    pub jobs: JobCounts,
    pub epochs_done: u64,
    pub epochs_total: u64,
}

/// The jobs counted per variant, by variant name.
pub fn variant_counts<'a>(jobs: impl IntoIterator<Item = &'a pb::JobStatus>) -> Vec<VariantCounts> {
    let mut by_variant: std::collections::BTreeMap<&str, VariantCounts> = Default::default();
    for job in jobs {
        let c = by_variant
            .entry(job.variant.as_str())
            .or_insert_with(|| VariantCounts {
                variant: job.variant.clone(),
                ..Default::default()
            });
        c.jobs.add(&job.state, 1);
        c.epochs_done += u64::from(job.epoch.min(job.epochs));
        c.epochs_total += u64::from(job.epochs);
    }
    by_variant.into_values().collect()
}

/// One line per variant with its counts by state.
pub fn variants_table(counts: &[VariantCounts]) -> Table {
    let mut table = counts_table("variant", "epochs");
    for c in counts {
        let mut row = vec![c.variant.clone()];
        row.extend(count_cells(&c.jobs));
        row.push(format!("{}/{}", c.epochs_done, c.epochs_total));
        table.add_row(row);
    }
    align_right(&mut table, &[1, 2, 3, 4, 5, 6, 7]);
    table
}

/// The whole `status` answer: per sweep, its counts, then its jobs; beyond
/// [`JOB_LIST_LIMIT`] jobs (and without `all`), its variants' counts and only
/// its failed jobs instead.
pub fn render_status(snapshot: &pb::StatusSnapshot, all: bool) -> String {
    let mut out = String::new();
    for sweep in &snapshot.sweeps {
        let jobs: Vec<&pb::JobStatus> = snapshot
            .jobs
            .iter()
            .filter(|j| j.sweep == sweep.name)
            .collect();
        let _ = writeln!(out, "{}", sweeps_table(std::slice::from_ref(sweep)));
        match sweep.waiting_for_command_worker {
            0 => {}
            n => {
                let _ = writeln!(
                    out,
                    "{n} command {} {} for a worker started with `sweep-worker --allow-commands` (or `sweep-coordinator --allow-commands` for its local workers): no connected worker runs a sweep's own program.",
                    if n == 1 { "job" } else { "jobs" },
                    if n == 1 { "waits" } else { "wait" },
                );
            }
        }
        if jobs.is_empty() {
            continue;
        }
        if all || jobs.len() <= JOB_LIST_LIMIT {
            let _ = writeln!(out, "{}", jobs_table(jobs.iter().copied()));
            continue;
        }
        let counts = variant_counts(jobs.iter().copied());
        let _ = writeln!(out, "{}", variants_table(&counts));
        let failed: Vec<&pb::JobStatus> = jobs
            .iter()
            .copied()
            .filter(|j| j.state == "failed")
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(
                out,
                "{}",
                jobs_table(failed.iter().copied().take(FAILED_LISTED))
            );
        }
        let _ = writeln!(
            out,
            "{} jobs in {} variants, summarised{}; `sweepctl status --all` lists every job",
            jobs.len(),
            counts.len(),
            match failed.len() {
                0 => String::new(),
                n if n > FAILED_LISTED =>
                    format!(" (the first {FAILED_LISTED} of {n} failed jobs above)"),
                _ => " (the failed jobs above)".to_string(),
            }
        );
    }
    out
}

/// `5s`, `3m 12s`, `2h 5m`, `3d 4h`: how long ago, to the precision that matters.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".to_string();
    }
    let secs = (now_ms - then_ms).max(0) / 1000;
    let text = match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    };
    format!("{text} ago")
}

/// The `workers` table.
pub fn workers_table(workers: &[WorkerStatus], now_ms: i64) -> Table {
    let mut table = new_table(&[
        "name",
        "host",
        "device",
        "threads",
        "slots",
        "alive",
        "last seen",
        // Held now (the dashboard's workers page counts those done).
        "running jobs",
    ]);
    for w in workers {
        table.add_row(vec![
            w.name.clone(),
            or_dash(&w.host),
            or_dash(&w.device),
            // 0 only from workers older than the default split: libtorch's
            // default, or the job config's count (as the dashboard says).
            if w.threads == 0 {
                "per job".to_string()
            } else {
                w.threads.to_string()
            },
            w.slots.to_string(),
            if w.alive { "yes" } else { "no" }.to_string(),
            ago(now_ms, w.last_seen_ms),
            if w.jobs.is_empty() {
                NONE.to_string()
            } else {
                w.jobs.join("\n")
            },
        ]);
    }
    align_right(&mut table, &[3, 4]);
    table
}

/// A Unix-milliseconds time in the local time zone, to the millisecond.
pub fn timestamp(time_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(time_ms) {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        None => format!("<time {time_ms}>"),
    }
}

/// One line per event: time, attempt, kind, message.
pub fn render_logs(events: &[JobEvent]) -> String {
    let mut out = String::new();
    for e in events {
        let _ = write!(
            out,
            "{}  attempt {}  {:<9}",
            timestamp(e.time_ms),
            e.attempt,
            e.kind
        );
        if !e.message.is_empty() {
            let _ = write!(out, "  {}", e.message);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str) -> pb::JobStatus {
        pb::JobStatus {
            job_id: "baseline-seed-42-0123abcd".into(),
            sweep: "quick".into(),
            variant: "baseline".into(),
            seed: 42,
            state: state.into(),
            attempt: 1,
            worker: "local-0".into(),
            epoch: 2,
            epochs: 4,
            latest: Some(pb::EpochMetrics {
                epoch: 2,
                val_acc: 0.9712,
                ..Default::default()
            }),
            test: None,
            error: String::new(),
        }
    }

    #[test]
    fn status_shows_each_job_with_its_progress() {
        let snapshot = pb::StatusSnapshot {
            sweeps: vec![pb::SweepStatus {
                name: "quick".into(),
                total: 1,
                running: 1,
                ..Default::default()
            }],
            jobs: vec![job("running")],
        };
        let text = render_status(&snapshot, false);
        for expected in [
            "quick",
            "baseline-seed-42-0123abcd",
            "running",
            "local-0",
            "2/4",
            "97.12%",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        // A command job without `training.epochs`: no "2/0".
        let mut no_total = job("running");
        no_total.epochs = 0;
        assert_eq!(progress(&no_total), "2");
    }

    #[test]
    fn command_jobs_without_a_worker_for_them_say_why_they_wait() {
        let mut snapshot = pb::StatusSnapshot {
            sweeps: vec![pb::SweepStatus {
                name: "quick".into(),
                total: 1,
                pending: 1,
                ..Default::default()
            }],
            jobs: vec![job("pending")],
        };
        assert!(!render_status(&snapshot, false).contains("--allow-commands"));
        snapshot.sweeps[0].waiting_for_command_worker = 1;
        let text = render_status(&snapshot, false);
        assert!(
            text.contains(
                "1 command job waits for a worker started with `sweep-worker --allow-commands`"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_large_sweep_is_summarised_per_variant() {
        let mut jobs = Vec::new();
        for i in 0..10_000u64 {
            let mut j = job(match i % 4 {
                0 => "succeeded",
                1 => "running",
                2 => "pending",
                _ if i == 3 => "failed",
                _ => "succeeded",
            });
            j.job_id = format!("v{}-seed-{i}-0123abcd", i % 3);
            j.variant = format!("v{}", i % 3);
            j.seed = i;
            j.error = if j.state == "failed" {
                "boom".into()
            } else {
                String::new()
            };
            jobs.push(j);
        }
        let snapshot = pb::StatusSnapshot {
            sweeps: vec![pb::SweepStatus {
                name: "quick".into(),
                total: 10_000,
                ..Default::default()
            }],
            jobs,
        };
        let started = std::time::Instant::now();
        let text = render_status(&snapshot, false);
        let took = started.elapsed();
        assert!(text.lines().count() < 40, "{text}");
        for expected in [
            "v0",
            "v1",
            "v2",
            "boom",
            "10000 jobs in 3 variants",
            "--all",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert!(
            !text.contains("v1-seed-1-"),
            "only failed jobs are listed:\n{text}"
        );
        // Well under a second even in a debug build.
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        let counts = variant_counts(&snapshot.jobs);
        assert_eq!(counts.iter().map(|c| c.jobs.total).sum::<u32>(), 10_000);
        assert_eq!(counts.iter().map(|c| c.jobs.failed).sum::<u32>(), 1);
        assert_eq!(counts.iter().map(|c| c.jobs.running).sum::<u32>(), 2_500);
        // --all: every job.
        let everything = render_status(&snapshot, true);
        assert!(everything.lines().count() > 10_000);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(10_000, 5_000), "5s ago");
        assert_eq!(ago(200_000, 8_000), "3m 12s ago");
        assert_eq!(ago(7_500_000, 0), "never");
        assert_eq!(ago(2 * 3_600_000 + 5 * 60_000 + 1, 1), "2h 5m ago");
        // A clock a little ahead on the coordinator is not "in the future".
        assert_eq!(ago(1_000, 3_000), "0s ago");
    }

    #[test]
    fn missing_values_are_dashes() {
        assert_eq!(percent(None), NONE);
        assert_eq!(percent(Some(f64::NAN)), NONE);
        assert_eq!(percent(Some(0.5)), "50.00%");
    }

    #[test]
    fn logs_have_one_line_per_event() {
        let events = vec![
            JobEvent {
                time_ms: 1_700_000_000_000,
                kind: "submitted".into(),
                attempt: 0,
                message: String::new(),
            },
            JobEvent {
                time_ms: 1_700_000_001_000,
                kind: "leased".into(),
                attempt: 1,
                message: "worker local-0".into(),
            },
        ];
        let text = render_logs(&events);
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .ends_with("leased     worker local-0"),
            "{text}"
        );
    }
}
