//! Bounds on what one client can make the coordinator store or allocate. A
//! worker token is copied to machines nobody controls; whoever holds it must
//! not be able to fill the disk, the database or the memory. Exceeding a limit
//! is `resource_exhausted` to that client and nothing else.

/// The limits of one coordinator; [`Limits::default`] suits MNIST-sized
/// sweeps with room to spare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message accepted. Uploads arrive in 1 MiB chunks
    /// (`sweep_proto::CHUNK_SIZE`) and a submitted sweep is a few configs, so
    /// 8 MiB leaves headroom while bounding what one message can allocate.
    pub max_message_bytes: usize,
    /// Epochs a job may report beyond its config's `training.epochs`. Zero:
    /// a run never trains more epochs than its config asks for; every metric
    /// point is then one of at most `epochs` rows.
    pub epoch_slack: u32,
    /// Checkpoint bytes one job may hold (all its files together): a CNN's
    /// best + last + optimizer state is a few MiB; 1 GiB allows far larger
    /// models while stopping a runaway or hostile uploader.
    pub max_job_artifact_bytes: u64,
    /// Checkpoint bytes one sweep may hold: 32 GiB, a disk's worth.
    pub max_sweep_artifact_bytes: u64,
    /// Workers heard from within a lease timeout: far more than any cluster
    /// we serve, few enough that registrations cannot flood the database.
    pub max_workers: usize,
    /// Longest free text kept from a worker (failure messages, host, device):
    /// enough for a stack trace's head, bounded for the database and logs.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 8 << 20,
            epoch_slack: 0,
            max_job_artifact_bytes: 1 << 30,
            max_sweep_artifact_bytes: 32 << 30,
            max_workers: 1024,
            max_text_bytes: 16 << 10,
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
pub fn truncate_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(truncate_text("short", 10), "short");
        assert_eq!(truncate_text("abcdef", 3), "abc… (3 bytes cut)");
        // 'é' is two bytes; cutting inside it backs off to before it.
        assert_eq!(truncate_text("aé", 2), "a… (2 bytes cut)");
    }
}
