//! How many CPU threads a job's tensor operations get when neither its
//! config (`training.threads`) nor a flag (`--threads`,
//! `--local-worker-threads`) says: the cores this process may use, split
//! between what runs side by side on them.
//!
//! It exists because libtorch's own default is every core for every process:
//! two local workers (or two slots of one worker) on one machine then each
//! start a full thread pool, and the pools fight over the cores. On 2 cores
//! the ablation sweep's epochs took 10–51 s instead of about 4
//! (BENCHMARKS.md, "Threads per job"). The coordinator (which starts local
//! workers) and the worker (which runs slots) both use it, so it lives here.

use std::num::NonZeroUsize;

/// The cores this process may run on: the CPUs of its affinity mask and its
/// cgroup's CPU quota, as the standard library reads them; 1 if unknown.
pub fn available() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Each of `parts` gets an equal share of `cores`, and never less than one
/// thread (more parts than cores share cores, as the OS schedules them).
pub fn share(cores: usize, parts: usize) -> usize {
    (cores / parts.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_cores_and_never_reach_zero() {
        assert_eq!(share(16, 2), 8);
        assert_eq!(share(2, 2), 1);
        assert_eq!(share(3, 2), 1);
        assert_eq!(share(2, 8), 1);
        assert_eq!(share(8, 1), 8);
        assert_eq!(share(8, 0), 8);
        assert!(available() >= 1);
    }
}
