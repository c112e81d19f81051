//! `sweepctl watch`: follows a sweep live over the WatchStatus stream until
//! every job has ended, then prints its results table.
//!
//! On a terminal it draws progress bars (one per sweep: finished/total; one
//! per pending or running job: epoch/epochs and the latest validation
//! accuracy). Piped, it prints one line per change instead, so that a log
//! file or CI output reads as a history rather than as escape codes.

use std::collections::HashMap;
use std::io::IsTerminal as _;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sweep_core::results::Format;
use sweep_proto::pb;

use crate::client::{self, ConnectArgs};
use crate::remote;
use crate::tables;

/// States after which a job never changes again.
fn has_ended(job: &pb::JobStatus) -> bool {
    matches!(job.state.as_str(), "succeeded" | "failed" | "cancelled")
}

fn finished(sweep: &pb::SweepStatus) -> u32 {
    sweep.succeeded + sweep.failed + sweep.cancelled
}

/// Every sweep in the snapshot has ended (and there is at least one).
fn all_done(snapshot: &pb::StatusSnapshot) -> bool {
    !snapshot.sweeps.is_empty() && snapshot.sweeps.iter().all(|s| s.done)
}

/// A sweep's counts in one line.
pub fn sweep_line(s: &pb::SweepStatus) -> String {
    format!(
        "sweep {}: {}/{} finished ({} running, {} pending, {} succeeded, {} failed, {} cancelled)",
        s.name,
        finished(s),
        s.total,
        s.running,
        s.pending,
        s.succeeded,
        s.failed,
        s.cancelled
    )
}

/// What a job is doing, in one line (without its id).
fn job_detail(job: &pb::JobStatus) -> String {
    let val = tables::percent(job.latest.as_ref().map(|m| m.val_acc));
    match job.state.as_str() {
        "leased" | "running" => {
            let mut text = format!(
                "{} on {}, epoch {}, val acc {val}",
                job.state,
                job.worker,
                tables::progress(job)
            );
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
    format!("{}: {}", job.job_id, job_detail(job))
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
    /// Last line printed per sweep and per job, to print only changes.
    last: HashMap<String, String>,
}

impl Lines {
    /// The lines that differ from those printed before, sweeps first.
    fn changes(&mut self, snapshot: &pb::StatusSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let sweeps = snapshot
            .sweeps
            .iter()
            .map(|s| (format!("sweep\0{}", s.name), sweep_line(s)));
        let jobs = snapshot
            .jobs
            .iter()
            .map(|j| (format!("job\0{}", j.job_id), job_line(j)));
        for (key, line) in sweeps.chain(jobs) {
            if self.last.get(&key) != Some(&line) {
                out.push(line.clone());
                self.last.insert(key, line);
            }
        }
        out
    }
}

impl View for Lines {
    fn update(&mut self, snapshot: &pb::StatusSnapshot) {
        let now = chrono::Local::now().format("%H:%M:%S");
        for line in self.changes(snapshot) {
            println!("{now} {line}");
        }
    }

    fn finish(&mut self) {}

    fn abandon(&mut self) {}
}

/// Bar mode.
struct Bars {
    multi: MultiProgress,
    sweep_style: ProgressStyle,
    job_style: ProgressStyle,
    sweeps: HashMap<String, ProgressBar>,
    /// Bars of the jobs that have not ended; removed when they end.
    jobs: HashMap<String, ProgressBar>,
}

/// A bar style from a constant template, falling back to the default rather
/// than failing the command over a cosmetic detail.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    fn new() -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            sweep_style: style("{prefix:.bold} [{bar:30.green}] {pos}/{len} finished · {msg}"),
            job_style: style("  {prefix:<36} [{bar:30.cyan}] epoch {pos}/{len} · {msg}"),
            sweeps: HashMap::new(),
            jobs: HashMap::new(),
        }
    }
}

impl View for Bars {
    fn update(&mut self, snapshot: &pb::StatusSnapshot) {
        for s in &snapshot.sweeps {
            let bar = self.sweeps.entry(s.name.clone()).or_insert_with(|| {
                let bar = self
                    .multi
                    .add(ProgressBar::new(u64::from(s.total)).with_style(self.sweep_style.clone()));
                bar.set_prefix(format!("sweep {}", s.name));
                bar
            });
            bar.set_length(u64::from(s.total));
            bar.set_position(u64::from(finished(s)));
            bar.set_message(format!(
                "{} running, {} pending, {} failed, {} cancelled",
                s.running, s.pending, s.failed, s.cancelled
            ));
        }
        for job in &snapshot.jobs {
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
            bar.set_message(job_detail(job));
        }
    }

    fn finish(&mut self) {
        for bar in self.jobs.values() {
            bar.finish_and_clear();
        }
        for bar in self.sweeps.values() {
            bar.finish();
        }
    }

    fn abandon(&mut self) {
        for bar in self.jobs.values().chain(self.sweeps.values()) {
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

pub async fn watch(connect: &ConnectArgs, sweep: Option<String>) -> anyhow::Result<()> {
    let mut client = client::connect(connect).await?;
    let mut stream = client
        .watch_status(pb::GetStatusRequest {
            sweep: sweep.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| client::status_error(&connect.coordinator, "watching the status", s))?
        .into_inner();
    let mut view: Box<dyn View> = if std::io::stdout().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::default())
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
        let mut lines = Lines::default();
        assert_eq!(
            lines.changes(&snapshot("running", 1, false)).len(),
            2,
            "first snapshot: everything"
        );
        assert!(
            lines.changes(&snapshot("running", 1, false)).is_empty(),
            "no change, no line"
        );
        let next = lines.changes(&snapshot("running", 2, false));
        assert_eq!(
            next,
            vec![
                "baseline-seed-42-0123abcd: running on local-0, epoch 2/4, val acc 90.00%"
                    .to_string()
            ]
        );
        let end = lines.changes(&snapshot("succeeded", 4, true));
        assert_eq!(end.len(), 2);
        assert!(end[0].starts_with("sweep quick: 1/1 finished"), "{end:?}");
        assert!(
            end[1].ends_with("succeeded: test acc 91.00%, val acc 90.00%"),
            "{end:?}"
        );
    }

    #[test]
    fn done_needs_every_sweep() {
        assert!(!all_done(&pb::StatusSnapshot::default()));
        assert!(!all_done(&snapshot("running", 1, false)));
        assert!(all_done(&snapshot("succeeded", 4, true)));
    }
}
