//! What the processes that touch a run directory must agree on: the names of
//! the checkpoint files (the trainer writes them, the coordinator receives and
//! commits them) and how a file is written so that a reader or a crash never
//! sees half of it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Best checkpoint so far (by validation loss), under `checkpoints/`.
pub const BEST_CHECKPOINT: &str = "best.safetensors";
/// Checkpoint of the last finished epoch, under `checkpoints/`.
pub const LAST_CHECKPOINT: &str = "last.safetensors";
/// Optimizer state of the last finished epoch, under `checkpoints/`.
pub const LAST_OPTIMIZER: &str = "last.optimizer.safetensors";
/// Written last after each epoch, with the SHA-256 of the files above: its
/// arrival commits the epoch's other checkpoint files.
pub const LAST_STATE: &str = "last.state.json";

/// `path` with `.<pid>.tmp` appended to its file name: where [`write_atomic`]
/// stages it (the pid keeps two processes writing the same file, such as
/// `sweepctl report` beside the coordinator, from mixing their bytes).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes a file so that readers see either the old or the new content, and
/// the new content is on disk before the rename makes it visible. Creates the
/// parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

/// Like [`write_atomic`] (readers see the old or the new content, whole),
/// without waiting for the disk. For files copied from a database whose
/// commits do not wait for the disk either (the coordinator's, in WAL mode
/// with synchronous=NORMAL): a killed process loses neither, and only an OS
/// crash can leave such a file, like the database, a moment behind. An fsync
/// per file was most of the coordinator's time under a fleet's load
/// (BENCHMARKS.md, "A fleet of simulated workers").
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    // The directories are made only when missing: most writes replace a
    // file in a directory that exists, and a fleet's worth of them counts.
    let mut file = match std::fs::File::create(&tmp) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&tmp)?
        }
        opened => opened?,
    };
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// This machine's host name, for provenance records and file names; any
/// failure to read it falls back to `localhost`.
///
/// Read once per process: the coordinator names an event file after it for
/// every job.
pub fn hostname() -> String {
    static HOSTNAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOSTNAME
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_whole_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new content").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new content");
        assert!(!tmp_path(&path).exists());
        replace_file(&path, b"newer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"newer");
        assert!(!tmp_path(&path).exists());
    }
}
