//! `sweepctl train`, `sweepctl eval` and `sweepctl analyze`: the original project's
//! `scripts/train.py` and `scripts/evaluate.py`, over the Rust trainer.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sweep_core::config::{DeviceSpec, ExperimentConfig};
use sweep_core::metrics::EpochMetrics;
use sweep_train::checkpoint::Checkpoint;
use sweep_train::{Dataset, TrainHooks};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Experiment config (YAML).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue an interrupted run from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Where to write the run (default: <logging.checkpoint_dir>/<name>_<timestamp>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Override training.device (auto, cpu, cuda, cuda:N).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Override training.threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Override training.epochs.
    #[arg(long)]
    pub epochs: Option<u32>,
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let (mut config, run_dir, resume) = match (&args.config, &args.resume) {
        (_, Some(run_dir)) => {
            let config = ExperimentConfig::load(&run_dir.join("config.yaml"))?;
            (config, run_dir.clone(), true)
        }
        (Some(path), None) => {
            let config = ExperimentConfig::load(path)?;
            let run_dir = args.run_dir.clone().unwrap_or_else(|| {
                let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
                config
                    .logging
                    .checkpoint_dir
                    .join(format!("{}_{stamp}", config.name))
            });
            (config, run_dir, false)
        }
        (None, None) => bail!("give --config FILE or --resume RUN_DIR"),
    };
    if let Some(device) = args.device {
        config.training.device = device;
    }
    if args.threads.is_some() {
        config.training.threads = args.threads;
    }
    if let Some(epochs) = args.epochs {
        config.training.epochs = epochs;
    }
    config.validate()?;

    let dataset = load_dataset(&config)?;
    eprintln!(
        "training {} ({}, seed {}) into {}{}",
        config.name,
        config.model.kind.name(),
        config.seed,
        run_dir.display(),
        if resume { " (resuming)" } else { "" }
    );
    let mut progress = EpochPrinter {
        epochs: config.training.epochs,
    };
    let metrics = sweep_train::train(&config, &dataset, &run_dir, resume, &mut progress)?;
    let test = metrics
        .test
        .context("the run finished without a test evaluation")?;
    println!(
        "done: test accuracy {:.2}%  (best epoch {}, val accuracy {:.2}%, {:.1}s{})",
        100.0 * test.test_acc,
        metrics.best_epoch,
        100.0 * metrics.best_val_acc.unwrap_or(0.0),
        metrics.train_seconds,
        if metrics.stopped_early {
            ", stopped early"
        } else {
            ""
        }
    );
    println!("run directory: {}", run_dir.display());
    Ok(())
}

pub fn eval(run_dir: &Path) -> anyhow::Result<()> {
    let config = ExperimentConfig::load(&run_dir.join("config.yaml"))?;
    let dataset = load_dataset(&config)?;
    let checkpoint = sweep_train::checkpoint::best_path(run_dir);
    let evaluation = sweep_train::trainer::evaluate_checkpoint(&config, &dataset, &checkpoint)?;
    let report = serde_json::json!({
        "run": run_dir,
        "checkpoint": checkpoint,
        "test": evaluation,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn analyze(run_dir: &Path) -> anyhow::Result<()> {
    let config = ExperimentConfig::load(&run_dir.join("config.yaml"))?;
    let dataset = load_dataset(&config)?;
    let output = sweep_train::analysis::analyze(&config, &dataset, run_dir)
        .with_context(|| format!("analysing {}", run_dir.display()))?;
    let s = &output.summary;
    println!(
        "test accuracy {:.2}% on {} samples; {} failures{}; {:.1}s",
        100.0 * s.accuracy,
        s.test_samples,
        s.confusion
            .iter()
            .enumerate()
            .map(|(t, row)| row.iter().sum::<u64>() - row[t])
            .sum::<u64>(),
        s.clusters.as_ref().map_or_else(String::new, |c| format!(
            " in {} clusters",
            c.clusters.len()
        )),
        s.seconds
    );
    for file in &output.files {
        println!("{}", output.dir.join(file).display());
    }
    Ok(())
}

fn load_dataset(config: &ExperimentConfig) -> anyhow::Result<Dataset> {
    let dir = config
        .data
        .data_dir
        .clone()
        .unwrap_or_else(|| sweep_train::data::default_data_dir(config.data.dataset));
    Ok(Dataset::load(config.data.dataset, &dir)?)
}

/// Prints one line per finished epoch.
struct EpochPrinter {
    epochs: u32,
}

impl TrainHooks for EpochPrinter {
    fn on_epoch(&mut self, m: &EpochMetrics, checkpoint: &Checkpoint) {
        let best = if checkpoint.files.contains(&sweep_train::checkpoint::BEST) {
            "  *best*"
        } else {
            ""
        };
        println!(
            "epoch {:>3}/{}  train loss {:.4} acc {:6.2}%  val loss {:.4} acc {:6.2}%  lr {:.2e}  {:5.1}s{best}",
            m.epoch,
            self.epochs,
            m.train_loss,
            100.0 * m.train_acc,
            m.val_loss,
            100.0 * m.val_acc,
            m.lr,
            m.seconds
        );
    }
}
