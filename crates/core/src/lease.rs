//! A leased job as a worker holds it: what the coordinator hands out with a
//! lease, after the protocol boundary has checked it (`sweep-proto`'s
//! `convert`), so that the worker's code works on checked values and never
//! on the wire format; and how an attempt of it failed, as the worker
//! reports it back.

/// One job, leased to one worker for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    /// The job's id (`{variant}-seed-{seed}-{hash8}` for a sweep's jobs).
    pub id: String,
    /// Fencing token: every report about the job carries it; a newer lease
    /// of the same job makes this attempt's reports stale.
    pub attempt: u32,
    /// Safe as a path component (checked at the boundary).
    pub sweep: String,
    /// Safe as a path component (checked at the boundary).
    pub variant: String,
    pub seed: u64,
    /// The fully resolved config (YAML), read by the worker with its own
    /// hardware settings applied.
    pub config_yaml: String,
    /// Unix milliseconds; heartbeats push it forward.
    pub lease_deadline_ms: i64,
    /// Checkpoint files the coordinator holds for the job (empty: start
    /// fresh): the worker downloads them all, then resumes.
    pub checkpoints: Vec<StoredFile>,
}

impl LeasedJob {
    /// Whether the attempt resumes from the coordinator's checkpoints.
    pub fn resumes(&self) -> bool {
        !self.checkpoints.is_empty()
    }
}

/// A file the coordinator holds (or is sent): name, size and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
}

/// Why an attempt failed, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub message: String,
    /// Retrying cannot help (config or data errors): the job fails for good
    /// instead of going back to pending.
    pub permanent: bool,
}
