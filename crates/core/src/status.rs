//! The progress of sweeps as the coordinator reports it (`sweepctl status`,
//! `watch`): per-sweep job counts and one line per job. A domain type, so
//! that the coordinator builds it from its store and the protocol boundary
//! (`sweep-proto`'s `convert`) alone knows the wire form.

use crate::metrics::{EpochMetrics, TestMetrics};

/// Every sweep asked for, with its jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSnapshot {
    pub sweeps: Vec<SweepStatus>,
    pub jobs: Vec<JobStatus>,
}

/// Counts of a sweep's jobs by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepStatus {
    pub name: String,
    pub total: u32,
    pub pending: u32,
    /// Leased or running.
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// Every job has ended.
    pub done: bool,
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
