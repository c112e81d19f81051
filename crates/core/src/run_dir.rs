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
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = tmp_path(path);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// This machine's host name, for provenance records and file names; any
/// failure to read it falls back to `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
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
    }
}
