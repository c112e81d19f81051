//! The seed-averaged view for TensorBoard users: `runs/<sweep>/_aggregate/<variant>/`
//! holds one event file with, per epoch, the mean over seeds of each scalar
//! under the runs' own tag (so `tensorboard --logdir runs` draws one line per
//! variant beside the single runs) and the mean ± one sample std under
//! `<tag>_mean+std` and `<tag>_mean-std`.

use std::path::{Path, PathBuf};

use sweep_core::metrics::EpochMetrics;
use sweep_core::tensorboard::EventWriter;

use crate::curves::epoch_stats;
use crate::sweep::SweepData;

/// Directory of the aggregates inside a sweep directory.
pub const AGGREGATE_DIR: &str = "_aggregate";

/// The scalars aggregated, under the tags every run's event file uses.
/// Reads one scalar of an epoch.
type Getter = fn(&EpochMetrics) -> f64;

const TAGS: [(&str, Getter); 5] = [
    ("loss/train", |e| e.train_loss),
    ("loss/val", |e| e.val_loss),
    ("accuracy/train", |e| e.train_acc),
    ("accuracy/val", |e| e.val_acc),
    ("lr", |e| e.lr),
];

/// Writes `_aggregate/<variant>/` for every variant with epochs, replacing
/// earlier aggregate event files (a rewrite must not leave two lines).
/// Returns the event files written.
pub fn write_aggregate(data: &SweepData) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for variant in data.variants() {
        let runs: Vec<&Vec<EpochMetrics>> = data
            .runs_of(&variant)
            .filter_map(|r| r.metrics.as_ref().map(|m| &m.epochs))
            .filter(|e| !e.is_empty())
            .collect();
        if runs.is_empty() {
            continue;
        }
        let dir = data.dir.join(AGGREGATE_DIR).join(&variant);
        remove_event_files(&dir)?;
        let mut writer = EventWriter::create(&dir)?;
        for (tag, get) in TAGS {
            let seeds: Vec<Vec<f64>> = runs.iter().map(|e| e.iter().map(get).collect()).collect();
            for s in epoch_stats(&seeds) {
                let step = i64::from(s.epoch);
                writer.add_scalar(tag, s.mean, step)?;
                if let Some(std) = s.std {
                    writer.add_scalar(&format!("{tag}_mean+std"), s.mean + std, step)?;
                    writer.add_scalar(&format!("{tag}_mean-std"), s.mean - std, step)?;
                }
            }
        }
        writer.flush()?;
        written.push(writer.path().to_path_buf());
    }
    Ok(written)
}

fn remove_event_files(dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("tfevents"))
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
