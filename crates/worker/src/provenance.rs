//! What this worker says about an attempt when it starts it (RecordAttempt):
//! its name and host, the device as the trainer resolves it and that
//! device's model (the CPU's from /proc/cpuinfo, the GPU's from nvidia-smi),
//! the thread count, the libtorch it has loaded, its own version and git
//! commit, and the dataset's files with the hashes the trainer verifies. The
//! coordinator adds the times and the outcome, and keeps it all with the run.
//!
//! Everything here is best effort: a value that cannot be found is left
//! empty, and a coordinator that cannot take the record (an older one) does
//! not stop the job.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sweep_core::config::{DatasetKind, DeviceSpec, ExperimentConfig};
use sweep_core::lease::LeasedJob;
use sweep_core::provenance::{AttemptProvenance, DatasetFile};
use sweep_proto::pb;
use tonic::Code;

use crate::Ctx;

/// The git commit this binary was built from (build.rs; `unknown` outside git).
pub const GIT_COMMIT: &str = env!("SWEEPRUN_GIT_COMMIT");

/// How long `nvidia-smi` may take to name a GPU before it is left unnamed: it
/// answers in well under a second, and a job must not wait on a hung driver.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(5);

/// The provenance of a built-in training job about to run with `config`
/// (device and threads already set to this worker's) on the worker named
/// `worker_name`. Blocking: it asks libtorch for the device and may run
/// nvidia-smi.
pub(crate) fn builtin(worker_name: &str, config: &ExperimentConfig) -> AttemptProvenance {
    // Training will fail with the reason; say what was asked for.
    let device = resolved(config.training.device).unwrap_or(config.training.device);
    let threads = config
        .training
        .threads
        .map_or_else(|| tch::get_num_threads().max(0) as u32, |t| t as u32);
    AttemptProvenance {
        dataset: dataset_files(config.data.dataset),
        libtorch_version: libtorch_version().unwrap_or_default(),
        ..describe(worker_name, device, threads)
    }
}

/// The provenance of a command job (the user's program brings its own
/// libraries and data; the device is the worker's `--device`, as passed on).
/// Blocking: it may run nvidia-smi.
pub(crate) fn command(worker_name: &str, device: DeviceSpec, threads: u32) -> AttemptProvenance {
    describe(worker_name, device, threads)
}

/// The device this worker's `--device` resolves to, with its model, as
/// `sweepctl workers` shows it ("cuda:0 (NVIDIA H200)"), or why it is not
/// here. Blocking: it asks libtorch and may run nvidia-smi.
pub(crate) fn worker_device(spec: DeviceSpec) -> Result<String, sweep_train::TrainError> {
    let device = resolved(spec)?;
    let name = device_name(device);
    Ok(if name.is_empty() {
        device.to_string()
    } else {
        format!("{device} ({name})")
    })
}

/// The device libtorch picks for `spec` (`auto` made concrete), as a spec.
fn resolved(spec: DeviceSpec) -> Result<DeviceSpec, sweep_train::TrainError> {
    Ok(match sweep_train::resolve_device(spec)? {
        tch::Device::Cuda(index) => DeviceSpec::Cuda(index),
        _ => DeviceSpec::Cpu,
    })
}

fn device_name(device: DeviceSpec) -> String {
    match device {
        DeviceSpec::Cuda(index) => gpu_name(index).unwrap_or_default(),
        DeviceSpec::Cpu => cpu_model().unwrap_or_default(),
        DeviceSpec::Auto => String::new(),
    }
}

fn describe(worker_name: &str, device: DeviceSpec, threads: u32) -> AttemptProvenance {
    AttemptProvenance {
        worker_name: worker_name.to_string(),
        host: sweep_core::run_dir::hostname(),
        device: device.to_string(),
        device_name: device_name(device),
        threads,
        sweeprun_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: GIT_COMMIT.to_string(),
        started_ms: now_ms(),
        ..AttemptProvenance::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Describes the attempt off the async threads with `describe` (one of the
/// functions above) and sends the record; never fails the job.
pub(crate) async fn record<F>(ctx: &Ctx, job: &LeasedJob, describe: F)
where
    F: FnOnce() -> AttemptProvenance + Send + 'static,
{
    let provenance = match tokio::task::spawn_blocking(describe).await {
        Ok(provenance) => provenance,
        Err(err) => {
            tracing::warn!(job = %job.id, error = %err, "describing the attempt failed");
            return;
        }
    };
    let request = pb::RecordAttemptRequest {
        worker_id: ctx.worker_id(),
        job_id: job.id.clone(),
        attempt: job.attempt,
        provenance: Some(provenance.into()),
    };
    let sent = ctx
        .retry("record attempt", || {
            let mut client = ctx.client();
            let arg = request.clone();
            async move { client.record_attempt(arg).await }
        })
        .await;
    match sent {
        Ok(_) => {}
        Err(status) if status.code() == Code::Unimplemented => {
            tracing::debug!(job = %job.id, "the coordinator keeps no provenance (an older version)")
        }
        // A fenced attempt learns it from its next report, which stops it.
        Err(status) => {
            tracing::warn!(job = %job.id, error = %status.message(), "recording the attempt's provenance failed")
        }
    }
}

/// The dataset's files and the SHA-256 of their content, as
/// `sweep_train::Dataset::load` verifies them before any training.
fn dataset_files(kind: DatasetKind) -> Vec<DatasetFile> {
    sweep_train::data::canonical_files(kind)
        .into_iter()
        .map(|(name, sha256)| DatasetFile {
            name: name.to_string(),
            sha256: sha256.to_string(),
        })
        .collect()
}

/// The CPU's model name, from /proc/cpuinfo (x86: `model name`; some ARM
/// kernels say `Model` or `Hardware`).
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpu_model_in(&text)
}

fn cpu_model_in(cpuinfo: &str) -> Option<String> {
    for key in ["model name", "Model", "Hardware", "cpu model"] {
        let found = cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The name of GPU `index` as nvidia-smi reports it (`NVIDIA H200`).
fn gpu_name(index: usize) -> Option<String> {
    let mut child = Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i"])
        .arg(index.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + NVIDIA_SMI_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    let name = out.lines().next()?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The version of the libtorch this process has loaded: found through the
/// path of `libtorch_cpu.so` in /proc/self/maps, then the version file next
/// to it (`torch/version.py` of a PyTorch install, `build-version` of a
/// libtorch archive).
pub fn libtorch_version() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let lib = loaded_library(&maps, "libtorch_cpu.so")?;
    version_near(lib.parent()?)
}

fn loaded_library(maps: &str, name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(name))
        })
        .map(PathBuf::from)
}

fn version_near(lib_dir: &Path) -> Option<String> {
    let root = lib_dir.parent()?;
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        let found = text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix("__version__")?;
            let value = rest.trim_start().strip_prefix('=')?.trim();
            Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
        });
        if found.is_some() {
            return found;
        }
    }
    let text = std::fs::read_to_string(root.join("build-version")).ok()?;
    let version = text.trim().to_string();
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_models_of_x86_and_arm() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n";
        assert_eq!(
            cpu_model_in(x86).as_deref(),
            Some("Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz")
        );
        let arm =
            "processor\t: 0\nBogoMIPS\t: 108.00\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(
            cpu_model_in(arm).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        assert_eq!(cpu_model_in("processor : 0\n"), None);
    }

    #[test]
    fn libtorch_version_from_the_loaded_library() {
        let dir = tempfile::tempdir().unwrap();
        let torch = dir.path().join("site-packages/torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::write(
            torch.join("version.py"),
            "from typing import Optional\n__version__ = '2.13.0+cpu'\ndebug = False\n",
        )
        .unwrap();
        let lib = torch.join("lib/libtorch_cpu.so");
        let maps = format!(
            "7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/libc.so.6\n7f20-7f30 r-xp 00000000 08:01 2 {}\n",
            lib.display()
        );
        assert_eq!(loaded_library(&maps, "libtorch_cpu.so"), Some(lib.clone()));
        assert_eq!(
            version_near(lib.parent().unwrap()).as_deref(),
            Some("2.13.0+cpu")
        );
        // A libtorch archive: libtorch/build-version.
        let archive = dir.path().join("libtorch");
        std::fs::create_dir_all(archive.join("lib")).unwrap();
        std::fs::write(archive.join("build-version"), "2.13.0+cu130\n").unwrap();
        assert_eq!(
            version_near(&archive.join("lib")).as_deref(),
            Some("2.13.0+cu130")
        );
    }
}
