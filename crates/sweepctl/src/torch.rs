//! `train`, `eval`, `analyze` and `bench`: the commands that need libtorch.
//! They live in a separate binary, `sweepctl-torch` (crates/sweepctl-torch),
//! so that this one links no libtorch and installs in seconds on a laptop
//! without PyTorch. Here they are only passed on: the arguments as typed, the
//! working directory and the environment unchanged, and on Unix the process
//! replaced (`exec`), so signals and the exit status are the other binary's.
//!
//! Where `sweepctl-torch` is looked for, first match wins:
//! 1. `$SWEEPCTL_TORCH` (a path to the binary; set but missing is an error);
//! 2. next to this `sweepctl` (`make build`, `cargo install` of both, the
//!    wheel and the Docker image all put them side by side);
//! 3. each directory of `$PATH`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The binary's file name.
pub const BINARY: &str = "sweepctl-torch";

/// The environment variable that names the binary explicitly.
pub const ENV: &str = "SWEEPCTL_TORCH";

/// How to get the binary, for the error when it is missing.
const HOW_TO_GET_IT: &str = "it needs libtorch: on a machine with it, `make build` builds it next to sweepctl \
     (target/release/sweepctl-torch), or `LIBTORCH=$(scripts/libtorch.sh) cargo install --path crates/sweepctl-torch`; \
     set SWEEPCTL_TORCH=/path/to/sweepctl-torch to use one elsewhere. \
     The other commands (submit, status, watch, results, show, cancel, workers, logs, report, certs) need neither";

/// Where `sweepctl-torch` is, by the rules of the module documentation.
/// `explicit` is `$SWEEPCTL_TORCH`, `exe` this binary's path, `path` `$PATH`.
pub fn locate(
    explicit: Option<&OsStr>,
    exe: Option<&Path>,
    path: Option<&OsStr>,
) -> anyhow::Result<PathBuf> {
    if let Some(explicit) = explicit.filter(|v| !v.is_empty()) {
        let candidate = PathBuf::from(explicit);
        if !candidate.is_file() {
            bail!(
                "{ENV}={} names no file; {HOW_TO_GET_IT}",
                candidate.display()
            );
        }
        return Ok(candidate);
    }
    let beside = exe.and_then(Path::parent).map(|dir| dir.join(BINARY));
    let on_path = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(BINARY));
    for candidate in beside.into_iter().chain(on_path) {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "{BINARY} was not found (not in ${ENV}, not next to {}, not on PATH); {HOW_TO_GET_IT}",
        exe.map_or_else(|| "sweepctl".to_string(), |p| p.display().to_string())
    )
}

/// Runs `sweepctl-torch COMMAND ARGS...` in place of this process; returns
/// only when it cannot.
pub fn delegate(command: &str, args: &[OsString]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().ok();
    let binary = locate(
        std::env::var_os(ENV).as_deref(),
        exe.as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
    .with_context(|| format!("`sweepctl {command}` runs {BINARY}"))?;
    let mut child = std::process::Command::new(&binary);
    child.arg(command).args(args);
    hand_over(child, &binary)
}

/// Replaces this process with `child`: returns only if that failed.
#[cfg(unix)]
fn hand_over(mut child: std::process::Command, binary: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = child.exec();
    Err(err).with_context(|| format!("running {}", binary.display()))
}

/// Runs `child` and exits with its status (no `exec` here).
#[cfg(not(unix))]
fn hand_over(mut child: std::process::Command, binary: &Path) -> anyhow::Result<()> {
    let status = child
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    #[test]
    fn found_by_variable_then_beside_then_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let exe = root.join("bin/sweepctl");
        let beside = root.join("bin").join(BINARY);
        let on_path = root.join("usr/bin").join(BINARY);
        let explicit = root.join("opt/torch-tool");
        let path = std::env::join_paths([root.join("empty"), root.join("usr/bin")]).unwrap();

        // Nowhere: the error says how to get it.
        let err = locate(None, Some(&exe), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(
            err.contains("cargo install --path crates/sweepctl-torch"),
            "{err}"
        );
        assert!(err.contains(ENV), "{err}");

        touch(&on_path);
        assert_eq!(locate(None, Some(&exe), Some(&path)).unwrap(), on_path);
        touch(&beside);
        assert_eq!(locate(None, Some(&exe), Some(&path)).unwrap(), beside);
        // An empty variable counts as unset.
        assert_eq!(
            locate(Some(OsStr::new("")), Some(&exe), Some(&path)).unwrap(),
            beside
        );
        // Set but missing is an error, not a silent fallback to another binary.
        let err = locate(Some(explicit.as_os_str()), Some(&exe), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no file"), "{err}");
        touch(&explicit);
        assert_eq!(
            locate(Some(explicit.as_os_str()), Some(&exe), Some(&path)).unwrap(),
            explicit
        );
    }
}
