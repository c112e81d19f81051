//! Domain types and logic of the sweep runner, free of libtorch and of gRPC so
//! that every process (trainer, worker, coordinator, sweepctl) shares them.
//!
//! # Layout
//! - [`config`]: the experiment config (YAML): its schema and its validation.
//! - [`yaml`]: located YAML trees (file, line, key path of every value) and
//!   their deep merge, under both config and sweep files.
//! - [`cores`]: the default thread count of a job, the cores split between
//!   the workers and slots that share them.
//! - [`command`]: command jobs (the user's own program) and [`command::JobConfig`],
//!   what one job runs.
//! - [`sweep`]: a sweep spec (base config × variants × seeds) and its expansion
//!   into jobs with stable ids.
//! - `space`: `grid:` and `random:` search spaces, expanded into variants.
//! - [`lease`]: a leased job as a worker holds it, and how an attempt failed.
//! - [`status`]: the progress of sweeps, the workers and job logs as the
//!   coordinator reports them.
//! - [`metrics`]: per-epoch and final metrics of one run, as `metrics.json` holds them.
//! - [`tensorboard`]: a minimal TensorBoard event-file writer (TFRecord framing).
//! - [`results`]: mean ± std across seeds, Welch's t-test against the baseline,
//!   and the table in its terminal, Markdown, CSV and JSON forms.
//! - [`provenance`]: where and how each attempt of a run was computed
//!   (worker, device, versions, data hashes, times), `provenance.json`.
//! - [`run_dir`]: the checkpoint file names of a run directory, atomic writes,
//!   the host name.
//! - [`names`]: validation of names that become path components.
//! - [`token`]: bearer tokens: loading from files or the environment, never
//!   printed, compared in constant time.

pub mod command;
pub mod config;
pub mod cores;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod provenance;
pub mod results;
pub mod run_dir;
pub(crate) mod space;
pub mod status;
pub mod sweep;
pub mod tensorboard;
pub mod token;
pub mod yaml;
