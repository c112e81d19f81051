//! The run files that follow a running job (`metrics.json`,
//! `provenance.json`, its TensorBoard event file), written by one thread of
//! their own that owns every open event file.
//!
//! Handlers hand it the files a committed change calls for and wait until
//! they are written, so a completion is never confirmed before its
//! `metrics.json` is on disk. One thread rather than a blocking task per
//! request: under a fleet's load those tasks queued on the lock over the
//! open event files, the blocking pool grew to its 512 threads, and the
//! coordinator made 51 futex calls per job (BENCHMARKS.md, "One thread for
//! the run files, and SQLite without re-parsing"). What is waiting when the
//! thread turns to its queue is written together: a file replaced twice in
//! it is written once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::provenance::RunProvenance;
use sweep_core::tensorboard::EventWriter;
use tokio::sync::oneshot;

use crate::error::{CoordinatorError, Result};
use crate::layout;

/// One file change in a run directory.
pub enum RunFile {
    /// Replaces `metrics.json`.
    Metrics { dir: PathBuf, metrics: RunMetrics },
    /// Replaces `provenance.json`.
    Provenance {
        dir: PathBuf,
        provenance: RunProvenance,
    },
    /// Appends an epoch's scalars to the job's event file (created by the
    /// job's first epoch in this coordinator process).
    Epoch {
        job_id: String,
        dir: PathBuf,
        metrics: EpochMetrics,
    },
    /// Appends the test metrics, if any, at `step` and closes the job's
    /// event file: the job has ended.
    Ended {
        job_id: String,
        dir: PathBuf,
        test: Option<TestMetrics>,
        step: u32,
    },
}

/// Files to write, and whom to tell once they are.
type Request = (Vec<RunFile>, oneshot::Sender<()>);

/// The most requests written together: bounds how long the first of them
/// waits for the others.
const MAX_BATCH: usize = 256;

/// The handle to the run files' thread. Cloning shares it; the thread ends,
/// after the requests already queued, when the last clone is dropped.
#[derive(Clone)]
pub struct RunFiles {
    queue: mpsc::Sender<Request>,
}

impl RunFiles {
    pub fn start() -> Result<RunFiles> {
        let (queue, queued) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("sweep-files".into())
            .spawn(move || {
                let mut writer = Writer::default();
                while let Ok(first) = queued.recv() {
                    let requests: Vec<Request> = std::iter::once(first)
                        .chain(std::iter::from_fn(|| queued.try_recv().ok()))
                        .take(MAX_BATCH)
                        .collect();
                    let mut answers = Vec::with_capacity(requests.len());
                    for (files, answer) in requests {
                        files.into_iter().for_each(|file| writer.apply(file));
                        answers.push(answer);
                    }
                    writer.write_replaced();
                    for answer in answers {
                        // The handler may have gone (a cancelled request).
                        let _ = answer.send(());
                    }
                }
            })
            .map_err(|e| CoordinatorError::Internal(format!("starting the files thread: {e}")))?;
        Ok(RunFiles { queue })
    }

    /// Writes `files` after everything handed over before them, and returns
    /// once they are written. A failure is logged, not returned: what the
    /// files copy is committed in the store already, which a retried request
    /// would not change (and the sweep's end rewrites the files of runs
    /// that did not complete).
    pub async fn write(&self, files: Vec<RunFile>) {
        let (answer, written) = oneshot::channel();
        if self.queue.send((files, answer)).is_err() {
            tracing::error!("the run files' thread has stopped; run files are not written");
            return;
        }
        // An error here means the thread panicked: logged where it did.
        let _ = written.await;
    }
}

/// What the thread keeps between requests: the open event files, and the
/// whole-file replacements not yet written, by run directory.
#[derive(Default)]
struct Writer {
    event_files: HashMap<String, EventWriter>,
    metrics: HashMap<PathBuf, RunMetrics>,
    provenance: HashMap<PathBuf, RunProvenance>,
}

impl Writer {
    fn apply(&mut self, file: RunFile) {
        match file {
            RunFile::Metrics { dir, metrics } => {
                self.metrics.insert(dir, metrics);
            }
            RunFile::Provenance { dir, provenance } => {
                self.provenance.insert(dir, provenance);
            }
            RunFile::Epoch {
                job_id,
                dir,
                metrics,
            } => {
                let written = self
                    .event_file(job_id, &dir)
                    .and_then(|writer| writer.add_epoch(&metrics));
                if let Err(err) = written {
                    tracing::warn!(dir = %dir.display(), error = %err, "writing TensorBoard events failed");
                }
            }
            RunFile::Ended {
                job_id,
                dir,
                test,
                step,
            } => {
                if let Some(test) = test {
                    // A job whose epochs came before a restart of the
                    // coordinator gets a new event file for its test metrics.
                    let written = self
                        .event_file(job_id.clone(), &dir)
                        .and_then(|writer| writer.add_test(&test, step));
                    if let Err(err) = written {
                        tracing::warn!(dir = %dir.display(), error = %err, "writing TensorBoard events failed");
                    }
                }
                self.event_files.remove(&job_id);
            }
        }
    }

    /// The job's open event file, created in `dir` if it has none yet.
    fn event_file(&mut self, job_id: String, dir: &Path) -> std::io::Result<&mut EventWriter> {
        Ok(match self.event_files.entry(job_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(EventWriter::create(dir)?),
        })
    }

    fn write_replaced(&mut self) {
        let written = self
            .metrics
            .drain()
            .map(|(dir, metrics)| layout::write_metrics(&dir, &metrics))
            .chain(
                self.provenance
                    .drain()
                    .map(|(dir, provenance)| layout::write_provenance(&dir, &provenance)),
            );
        for err in written.filter_map(Result::err) {
            tracing::warn!(error = %err, "writing a run file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(n: u32) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            train_loss: 1.0 / f64::from(n),
            train_acc: 0.5,
            val_loss: 1.0 / f64::from(n),
            val_acc: 0.5,
            lr: 0.1,
            seconds: 0.5,
        }
    }

    /// The TensorBoard event files in `dir`.
    fn event_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .expect("run dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tfevents"))
            .map(|e| e.path())
            .collect()
    }

    #[tokio::test]
    async fn files_are_written_when_write_returns_and_an_event_file_holds_every_epoch() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("sweep/baseline/seed-1");
        let files = RunFiles::start().expect("start");
        let mut metrics = RunMetrics::default();
        for n in 1..=3 {
            metrics.record_epoch(epoch(n), true);
            files
                .write(vec![
                    RunFile::Epoch {
                        job_id: "j".into(),
                        dir: dir.clone(),
                        metrics: epoch(n),
                    },
                    RunFile::Metrics {
                        dir: dir.clone(),
                        metrics: metrics.clone(),
                    },
                ])
                .await;
            let on_disk: RunMetrics = serde_json::from_slice(
                &std::fs::read(dir.join(layout::METRICS_FILE)).expect("metrics.json"),
            )
            .expect("json");
            assert_eq!(on_disk.epochs.len(), n as usize);
        }
        let test = TestMetrics {
            test_loss: 0.2,
            test_acc: 0.9,
        };
        files
            .write(vec![RunFile::Ended {
                job_id: "j".into(),
                dir: dir.clone(),
                test: Some(test),
                step: 3,
            }])
            .await;
        let event_files = event_files(&dir);
        assert_eq!(event_files.len(), 1, "one event file per job");
        let scalars = sweep_core::tensorboard::read_scalars(&event_files[0]).expect("events");
        let val_loss: Vec<i64> = scalars
            .iter()
            .filter(|s| s.tag == "loss/val")
            .map(|s| s.step)
            .collect();
        assert_eq!(val_loss, [1, 2, 3]);
        assert!(
            scalars
                .iter()
                .any(|s| s.tag == "test/accuracy" && s.step == 3 && (s.value - 0.9).abs() < 1e-6)
        );
    }

    #[tokio::test]
    async fn a_job_that_ends_without_an_open_event_file_still_records_its_test_metrics() {
        // As after a coordinator restart: the epochs went to another process's file.
        let root = tempfile::tempdir().expect("tempdir");
        let files = RunFiles::start().expect("start");
        let test = TestMetrics {
            test_loss: 0.3,
            test_acc: 0.8,
        };
        files
            .write(vec![RunFile::Ended {
                job_id: "j".into(),
                dir: root.path().to_path_buf(),
                test: Some(test),
                step: 4,
            }])
            .await;
        let event_files = event_files(root.path());
        assert_eq!(event_files.len(), 1, "an event file");
        let scalars = sweep_core::tensorboard::read_scalars(&event_files[0]).expect("events");
        assert!(
            scalars.iter().any(|s| s.tag == "test/loss" && s.step == 4),
            "{scalars:?}"
        );
    }

    #[tokio::test]
    async fn the_last_of_two_replacements_in_one_request_wins() {
        let root = tempfile::tempdir().expect("tempdir");
        let files = RunFiles::start().expect("start");
        let (mut first, mut last) = (RunMetrics::default(), RunMetrics::default());
        first.record_epoch(epoch(1), true);
        last.record_epoch(epoch(1), true);
        last.record_epoch(epoch(2), true);
        let dir = root.path().to_path_buf();
        files
            .write(vec![
                RunFile::Metrics {
                    dir: dir.clone(),
                    metrics: first,
                },
                RunFile::Metrics {
                    dir: dir.clone(),
                    metrics: last,
                },
            ])
            .await;
        let on_disk: RunMetrics =
            serde_json::from_slice(&std::fs::read(dir.join(layout::METRICS_FILE)).expect("file"))
                .expect("json");
        assert_eq!(on_disk.epochs.len(), 2);
    }
}
