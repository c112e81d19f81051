//! What the coordinator reports about its sweeps, workers and jobs: the
//! progress of sweeps (`sweepctl status`, `watch`: per-sweep job counts and
//! one line per job), the registered workers (`sweepctl workers`) and a job's
//! log (`sweepctl logs`). Domain types, so that the coordinator builds them
//! from its store, sweepctl reads them, and the protocol boundary
//! (`sweep-proto`'s `convert`) alone knows the wire form.

use serde::Serialize;

use crate::metrics::{EpochMetrics, TestMetrics};

/// Every sweep asked for, with its jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    pub sweeps: Vec<SweepStatus>,
    pub jobs: Vec<JobStatus>,
}

/// A sweep's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStatus {
    pub name: String,
    pub jobs: JobCounts,
    /// Every job has ended and the sweep's results are written.
    pub done: bool,
    /// Pending command jobs while no live worker was started with
    /// `--allow-commands`: they wait for one, and the user should know why.
    pub waiting_for_command_worker: u32,
}

/// How many jobs are in each state: of a sweep (`sweepctl status`, the
/// dashboard) or of one variant (`sweepctl watch`'s summaries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub total: u32,
    pub pending: u32,
    /// Leased or running.
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
}

impl JobCounts {
    /// Counts `n` more jobs in `state`, one of the job model's state names
    /// (pending, leased, running, succeeded, failed, cancelled); a name from
    /// a newer coordinator counts in the total only.
    pub fn add(&mut self, state: &str, n: u32) {
        self.total += n;
        match state {
            "pending" => self.pending += n,
            "leased" | "running" => self.running += n,
            "succeeded" => self.succeeded += n,
            "failed" => self.failed += n,
            "cancelled" => self.cancelled += n,
            _ => {}
        }
    }

    /// Jobs that succeeded, failed or were cancelled.
    pub fn ended(&self) -> u32 {
        self.succeeded + self.failed + self.cancelled
    }

    /// No job is pending or running (also true of no jobs at all).
    pub fn all_ended(&self) -> bool {
        self.pending == 0 && self.running == 0
    }

    /// `3/10 finished (2 running, 5 pending, 2 succeeded, 1 failed, 0 cancelled)`.
    pub fn line(&self) -> String {
        format!(
            "{}/{} finished ({} running, {} pending, {} succeeded, {} failed, {} cancelled)",
            self.ended(),
            self.total,
            self.running,
            self.pending,
            self.succeeded,
            self.failed,
            self.cancelled
        )
    }
}

/// One job's state and latest figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStatus {
    pub job_id: String,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
    /// pending | leased | running | succeeded | failed | cancelled
    pub state: String,
    pub attempt: u32,
    pub worker: Option<String>,
    /// Epochs done.
    pub epoch: u32,
    /// Epochs of its config.
    pub epochs: u32,
    pub latest: Option<EpochMetrics>,
    pub test: Option<TestMetrics>,
    pub error: Option<String>,
}

/// A registered worker (one incarnation of a worker process) as the
/// coordinator knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// `w{n}-{name}`: unique across restarts of the same worker.
    pub id: String,
    pub name: String,
    pub host: String,
    pub device: String,
    /// Threads of each job; 0 only from workers older than the default split.
    pub threads: u32,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Unix milliseconds of the last call heard from it.
    pub last_seen_ms: i64,
    /// Heard from within a lease timeout.
    pub alive: bool,
    /// Started with --allow-commands: may be leased command jobs.
    pub allow_commands: bool,
    /// Jobs it completed successfully (the dashboard shows them; ListWorkers
    /// does not carry them, so 0 when read from the wire).
    pub jobs_done: u64,
    /// Ids of the jobs it holds now (leased or running).
    pub jobs: Vec<String>,
}

/// One line of a job's log: an event of the job model (submitted, leased,
/// epoch, artifact, succeeded, failed, retry, expired, cancelled) or a batch
/// of a command job's output (`stdout`, `stderr`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobEvent {
    /// Unix milliseconds.
    pub time_ms: i64,
    pub kind: String,
    pub attempt: u32,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_group_leased_with_running_and_end_with_the_terminal_states() {
        let mut counts = JobCounts::default();
        for (state, n) in [
            ("pending", 5),
            ("leased", 1),
            ("running", 1),
            ("succeeded", 2),
            ("failed", 1),
        ] {
            counts.add(state, n);
        }
        assert_eq!(counts.total, 10);
        assert_eq!(counts.running, 2);
        assert_eq!(counts.ended(), 3);
        assert!(!counts.all_ended());
        assert_eq!(
            counts.line(),
            "3/10 finished (2 running, 5 pending, 2 succeeded, 1 failed, 0 cancelled)"
        );
        counts = JobCounts::default();
        counts.add("cancelled", 4);
        assert!(counts.all_ended());
        assert_eq!(counts.ended(), counts.total);
    }
}
