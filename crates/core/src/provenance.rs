//! Provenance: where and how each run was computed. A result that cannot be
//! traced to a machine, a device, a library build and the exact data is hard
//! to trust, and one that silently mixes device types across seeds is hard to
//! compare: bit-for-bit reproducibility holds only on the same machine type
//! (CPU model, libtorch build) with the same thread count.
//!
//! One [`AttemptProvenance`] per attempt (a job leased again after a lost
//! worker has several): the worker describes itself when it starts the
//! attempt, the coordinator adds the lease and end times and the outcome. A
//! [`RunProvenance`] gathers a run's attempts; the coordinator keeps them in
//! its store and writes them to `provenance.json` in the run directory.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The run directory's file.
pub const FILE_NAME: &str = "provenance.json";

/// One file of the dataset a run trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFile {
    pub name: String,
    /// Lower-case hex SHA-256 of its (decompressed) content, as verified.
    pub sha256: String,
}

/// One attempt of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptProvenance {
    pub attempt: u32,
    /// The worker's id for this registration (`w3-gpu-box`).
    pub worker_id: String,
    /// The name the worker registered with (`--name`, default: the host name).
    #[serde(default)]
    pub worker_name: String,
    #[serde(default)]
    pub host: String,
    /// The device the attempt trained on as the trainer resolved it: `cpu`,
    /// `cuda:0`; empty when the worker did not say (an older worker).
    #[serde(default)]
    pub device: String,
    /// The CPU model (from /proc/cpuinfo) or the GPU's name.
    #[serde(default)]
    pub device_name: String,
    /// libtorch's intra-op threads.
    #[serde(default)]
    pub threads: u32,
    #[serde(default)]
    pub libtorch_version: String,
    /// The worker's sweeprun version and the git commit it was built from
    /// (`unknown` when built outside a git checkout).
    #[serde(default)]
    pub sweeprun_version: String,
    #[serde(default)]
    pub git_commit: String,
    /// The dataset's files with their hashes (empty for command jobs, whose
    /// program brings its own data).
    #[serde(default)]
    pub dataset: Vec<DatasetFile>,
    /// Unix milliseconds; 0 where unknown.
    #[serde(default)]
    pub leased_ms: i64,
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub ended_ms: i64,
    /// `running` while it runs; then `succeeded`, `failed`, `retry` (failed,
    /// to be run again), `expired` (lease lost) or `cancelled`.
    #[serde(default)]
    pub outcome: String,
    /// Why it failed, expired or was cancelled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl AttemptProvenance {
    /// What decides whether two runs may differ in their last bits: the kind
    /// of device and its model, e.g. `cpu (Intel(R) Xeon(R) Gold 6230)` or
    /// `cuda (NVIDIA H200)`; None when the worker did not describe it.
    pub fn device_type(&self) -> Option<String> {
        let kind = self.device.split(':').next().unwrap_or_default().trim();
        if kind.is_empty() {
            return None;
        }
        Some(if self.device_name.is_empty() {
            kind.to_string()
        } else {
            format!("{kind} ({})", self.device_name)
        })
    }
}

/// Everything known about how one run (one job) was computed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProvenance {
    pub job_id: String,
    pub sweep: String,
    pub variant: String,
    pub seed: u64,
    /// The job's state now.
    pub state: String,
    /// SHA-256 of the resolved config (`config.yaml` of the run directory).
    pub config_sha256: String,
    /// In attempt order.
    pub attempts: Vec<AttemptProvenance>,
}

impl RunProvenance {
    /// The attempt whose result the run reports (the last that succeeded).
    pub fn succeeded(&self) -> Option<&AttemptProvenance> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.outcome == "succeeded")
    }

    /// The device type of the result, if the run has one and it is known.
    pub fn device_type(&self) -> Option<String> {
        self.succeeded().and_then(AttemptProvenance::device_type)
    }

    /// The provenance as `show` prints it: the run, then one block per attempt.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {}  (sweep {}, variant {}, seed {})",
            self.job_id, self.sweep, self.variant, self.seed
        );
        let _ = writeln!(out, "  state          {}", self.state);
        let _ = writeln!(out, "  config sha256  {}", self.config_sha256);
        if self.attempts.is_empty() {
            let _ = writeln!(out, "  no attempt yet");
        }
        for a in &self.attempts {
            let _ = writeln!(out, "attempt {}: {}", a.attempt, or_unknown(&a.outcome));
            let _ = writeln!(
                out,
                "  worker         {} ({}) on {}",
                or(&a.worker_name, &a.worker_id),
                a.worker_id,
                or_unknown(&a.host)
            );
            let _ = writeln!(
                out,
                "  device         {}{}",
                or_unknown(&a.device),
                if a.device_name.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.device_name)
                }
            );
            let _ = writeln!(out, "  threads        {}", a.threads);
            let _ = writeln!(out, "  libtorch       {}", or_unknown(&a.libtorch_version));
            let _ = writeln!(
                out,
                "  sweeprun       {} (commit {})",
                or_unknown(&a.sweeprun_version),
                or_unknown(&a.git_commit)
            );
            let _ = writeln!(
                out,
                "  time           leased {}, started {}, ended {}",
                time(a.leased_ms),
                time(a.started_ms),
                time(a.ended_ms)
            );
            for file in &a.dataset {
                let _ = writeln!(out, "  data           {}  {}", file.sha256, file.name);
            }
            if !a.message.is_empty() {
                let _ = writeln!(out, "  message        {}", a.message);
            }
        }
        out
    }
}

/// `text`, or `instead` where it is empty.
fn or<'a>(text: &'a str, instead: &'a str) -> &'a str {
    if text.is_empty() { instead } else { text }
}

fn or_unknown(text: &str) -> &str {
    or(text, "unknown")
}

/// Unix milliseconds as UTC `2026-11-28T10:15:16.123Z`; `—` for 0 (unknown).
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "—".to_string();
    }
    // Civil-from-days (Howard Hinnant's algorithm): no date crate needed here.
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Lower-case hex SHA-256 of a config's text (what `config_sha256` holds).
pub fn config_sha256(yaml: &str) -> String {
    hex::encode(Sha256::digest(yaml.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32, device: &str, name: &str, outcome: &str) -> AttemptProvenance {
        AttemptProvenance {
            attempt: n,
            worker_id: format!("w{n}-box"),
            device: device.into(),
            device_name: name.into(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }

    #[test]
    fn device_type_is_kind_and_model() {
        assert_eq!(
            attempt(1, "cuda:1", "NVIDIA H200", "")
                .device_type()
                .as_deref(),
            Some("cuda (NVIDIA H200)")
        );
        assert_eq!(
            attempt(1, "cpu", "", "").device_type().as_deref(),
            Some("cpu")
        );
        assert_eq!(attempt(1, "", "Xeon", "").device_type(), None);
    }

    #[test]
    fn the_result_is_the_last_succeeded_attempt() {
        let run = RunProvenance {
            attempts: vec![
                attempt(1, "cuda:0", "NVIDIA H200", "expired"),
                attempt(2, "cpu", "AMD EPYC 7B13", "succeeded"),
            ],
            ..Default::default()
        };
        assert_eq!(run.succeeded().map(|a| a.attempt), Some(2));
        assert_eq!(run.device_type().as_deref(), Some("cpu (AMD EPYC 7B13)"));
        let text = run.render();
        assert!(text.contains("attempt 1: expired"), "{text}");
        assert!(text.contains("device         cpu: AMD EPYC 7B13"), "{text}");
        // Round trip, and an older file without the newer fields still reads.
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<RunProvenance>(&json).unwrap(), run);
        let old: AttemptProvenance =
            serde_json::from_str(r#"{"attempt": 1, "worker_id": "w1-a"}"#).unwrap();
        assert_eq!(old.device_type(), None);
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time(0), "—");
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
