//! End-to-end tests of sweeprun across real processes and deployment files.
//! The tests are the `[[test]]` targets of this package (see Cargo.toml); this
//! library only holds what several of them share.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sweep_proto::{CoordinatorClient, pb};
use tonic::codegen::{Body, Bytes, StdError};

/// The repository root (this package lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The MNIST files shipped in `data/mnist`, as an absolute path (test configs
/// are read from other working directories).
pub fn mnist_dir() -> PathBuf {
    repo_root()
        .join("data/mnist")
        .canonicalize()
        .expect("data/mnist ships with the repository")
}

/// Where `make build` leaves the binaries: `SWEEPRUN_BIN_DIR`, else
/// `$CARGO_TARGET_DIR/release`, else `target/release`.
pub fn release_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWEEPRUN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_relative() {
        repo_root().join(target)
    } else {
        target
    };
    target.join("release")
}

/// A TCP port free on loopback now (the OS may hand it out again later, so
/// bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}

/// Removes terminal colour codes (`ESC [ ... m`) from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=value` in a structured log line (tracing's fmt output).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("{key}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(needle.as_str()))
}

/// A small sweep of FC models on the shipped MNIST, for tests that need
/// jobs to run rather than particular figures. [`TinySweep::write`] lays it
/// out as a sweep directory: `base.yaml` (the variant `baseline`: one hidden
/// layer, dropout 0.2), `sweep.yaml`, and a file per further variant.
#[derive(Debug, Clone)]
pub struct TinySweep<'a> {
    pub name: &'a str,
    pub seeds: &'a [u64],
    pub epochs: u32,
    /// Width of the hidden layer.
    pub hidden: u32,
    /// Training and test images used.
    pub subset: (u32, u32),
    /// `training.threads`; None leaves it to the worker's default split.
    pub threads: Option<u32>,
    /// Variants beside the baseline: file stem and YAML overrides.
    pub variants: &'a [(&'a str, &'a str)],
}

/// The variant most tiny sweeps compare with their baseline.
pub const NO_DROPOUT: (&str, &str) = ("no_dropout", "model: {dropout: 0.0}\n");

impl Default for TinySweep<'_> {
    fn default() -> Self {
        TinySweep {
            name: "tiny",
            seeds: &[1, 2],
            epochs: 2,
            hidden: 32,
            subset: (500, 200),
            threads: Some(1),
            variants: &[],
        }
    }
}

impl TinySweep<'_> {
    /// Writes the sweep into `dir` (created) and returns `dir`.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir sweep");
        let threads = self
            .threads
            .map(|t| format!(", threads: {t}"))
            .unwrap_or_default();
        let base = format!(
            "name: baseline\n\
             model: {{type: fc, hidden_sizes: [{}], dropout: 0.2}}\n\
             data: {{data_dir: {}, batch_size: 64, subset: {{train: {}, test: {}}}}}\n\
             training: {{epochs: {}{threads}}}\n",
            self.hidden,
            mnist_dir().display(),
            self.subset.0,
            self.subset.1,
            self.epochs,
        );
        std::fs::write(dir.join("base.yaml"), base).expect("base.yaml");
        for (variant, yaml) in self.variants {
            std::fs::write(dir.join(format!("{variant}.yaml")), yaml).expect("variant");
        }
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        std::fs::write(
            dir.join("sweep.yaml"),
            format!(
                "name: {}\nbase: base.yaml\nbaseline: baseline\nseeds: [{}]\n",
                self.name,
                seeds.join(", ")
            ),
        )
        .expect("sweep.yaml");
        dir.to_path_buf()
    }
}

/// Polls the coordinator's status (every 50 ms) until `done` holds and
/// returns that status; panics with `what` and the last status after `timeout`.
/// A coordinator that does not answer yet (Unavailable: not started, or
/// restarting) is asked again; any other error fails the test. Takes any
/// client, with or without a token.
pub async fn wait_for_status<T>(
    client: &mut CoordinatorClient<T>,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&pb::StatusSnapshot) -> bool,
) -> pb::StatusSnapshot
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match client.get_status(pb::GetStatusRequest::default()).await {
            Ok(status) => {
                let status = status.into_inner();
                if done(&status) {
                    return status;
                }
                format!("{status:#?}")
            }
            Err(e) if e.code() == tonic::Code::Unavailable => format!("no answer: {e}"),
            Err(e) => panic!("status while waiting for {what}: {e}"),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that a `results.json` holds exactly `variants` (in any order),
/// each with a result for every one of its `seeds` seeds.
pub fn assert_every_seed_has_a_result(
    results: &serde_json::Value,
    variants: &[&str],
    seeds: usize,
) {
    let rows = results["variants"]
        .as_array()
        .expect("results.json: variants");
    let mut names: Vec<&str> = rows.iter().filter_map(|v| v["variant"].as_str()).collect();
    names.sort();
    let mut expected = variants.to_vec();
    expected.sort();
    assert_eq!(names, expected, "results.json variants: {results:#}");
    for row in rows {
        assert_eq!(
            row["n"].as_u64(),
            Some(seeds as u64),
            "every seed of {} has a result: {results:#}",
            row["variant"]
        );
    }
}

/// A child process that is killed (and reaped) when dropped, so that a
/// failing test leaves no coordinator or worker behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every `every` until it returns Some, or panics after `limit`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// Every sweep the coordinator knows has ended (and there is at least one).
pub fn all_sweeps_done(status: &pb::StatusSnapshot) -> bool {
    !status.sweeps.is_empty() && status.sweeps.iter().all(|s| s.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_codes_are_stripped_and_fields_found() {
        let line = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m job started \u{1b}[3mjob\u{1b}[0m\u{1b}[2m=\u{1b}[0mbaseline-seed-42-0a1b2c3d \u{1b}[3mattempt\u{1b}[0m\u{1b}[2m=\u{1b}[0m1";
        let clean = strip_ansi(line);
        assert_eq!(
            clean,
            "2026  INFO job started job=baseline-seed-42-0a1b2c3d attempt=1"
        );
        assert_eq!(log_field(&clean, "job"), Some("baseline-seed-42-0a1b2c3d"));
        assert_eq!(log_field(&clean, "attempt"), Some("1"));
        assert_eq!(log_field(&clean, "worker"), None);
    }
}
