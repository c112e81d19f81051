//! The training loop: epochs of shuffled mini-batches, validation, early
//! stopping, learning-rate schedules, checkpoints after every epoch, and the
//! final test of the best checkpoint.
//!
//! The loop is synchronous and meant to run on a thread of its own; callers
//! observe it through [`TrainHooks`] (metrics after each epoch, checkpoint
//! files as they land, a stop request checked before every step).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sweep_core::config::{ExperimentConfig, LrSchedule};
use sweep_core::metrics::{EpochMetrics, RunMetrics, TestMetrics};
use sweep_core::tensorboard::EventWriter;
use tch::{Kind, Tensor, nn};

use crate::checkpoint::{self, Checkpoint, TrainerState};
use crate::data::{Dataset, RunData, Split};
use crate::eval::{Evaluation, evaluate};
use crate::model::Network;
use crate::optim::Optimizer;
use crate::rng::{SplitMix64, derive_seed};
use crate::{TrainError, augment, resolve_device};

/// Separate random streams derived from the run seed.
const SHUFFLE_STREAM: u64 = 1;
const TORCH_STREAM: u64 = 2;

/// What the caller of [`train`] sees while it runs. Every method has a default
/// so a caller implements only what it needs.
pub trait TrainHooks {
    /// After each epoch, once its checkpoint is on disk.
    fn on_epoch(&mut self, _epoch: &EpochMetrics, _checkpoint: &Checkpoint) {}
    /// Checked before every optimisation step; returning true stops the run
    /// with [`TrainError::Stopped`], leaving the last epoch's checkpoint.
    fn should_stop(&self) -> bool {
        false
    }
}

/// Hooks that observe nothing.
pub struct NoHooks;
impl TrainHooks for NoHooks {}

/// Trains `config` into `run_dir`, or continues the run there from its last
/// checkpoint when `resume` is set and one exists. Returns the final metrics
/// (also written to `run_dir/metrics.json`).
pub fn train(
    config: &ExperimentConfig,
    dataset: &Dataset,
    run_dir: &Path,
    resume: bool,
    hooks: &mut dyn TrainHooks,
) -> Result<RunMetrics, TrainError> {
    if let Some(threads) = config.training.threads {
        tch::set_num_threads(threads as i32);
    }
    let device = resolve_device(config.training.device)?;
    // Before the run directory exists: a refused model leaves nothing behind.
    crate::check_memory(config, device)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(run_dir.join("checkpoints")).map_err(io(run_dir))?;
    let config_path = run_dir.join("config.yaml");
    checkpoint::write_atomic(&config_path, config.to_yaml().as_bytes())
        .map_err(io(&config_path))?;

    let data = dataset.split(&config.data, config.seed);
    let data = RunData {
        train: data.train.to_device(device),
        val: data.val.to_device(device),
        test: data.test.to_device(device),
    };

    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs.root(), &config.model).map_err(TrainError::Allocation)?;
    let mut optimizer = Optimizer::new(&config.training, checkpoint::trainable(&vs));

    let mut state = TrainerState::default();
    if resume && let Some(saved) = checkpoint::load_last(run_dir, &vs, &mut optimizer)? {
        tracing::info!(run = %run_dir.display(), epoch = saved.epoch, "resuming from the last checkpoint");
        state = saved;
    }

    let mut events = if config.logging.tensorboard {
        Some(EventWriter::create(run_dir).map_err(io(run_dir))?)
    } else {
        None
    };
    let epochs = config.training.epochs;
    let patience = config
        .training
        .early_stopping
        .as_ref()
        .map(|e| (e.patience, e.min_delta));
    let batch_size = config.data.batch_size;

    while state.epoch < epochs && !state.metrics.stopped_early {
        let epoch = state.epoch + 1;
        let started = Instant::now();
        let lr = learning_rate(config, epoch);
        optimizer.set_lr(lr);
        tch::manual_seed(derive_seed(config.seed, TORCH_STREAM, epoch) as i64);

        let (train_loss, train_acc) =
            train_epoch(config, &net, &mut optimizer, &data.train, epoch, hooks)?;
        let val = evaluate(&net, &data.val, batch_size.max(256))?;
        let metrics = EpochMetrics {
            epoch,
            train_loss,
            train_acc,
            val_loss: val.loss,
            val_acc: val.accuracy,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        };
        if !metrics.train_loss.is_finite() || !metrics.val_loss.is_finite() {
            return Err(TrainError::Diverged {
                epoch,
                loss: metrics.train_loss,
            });
        }

        let min_delta = patience.map_or(0.0, |(_, d)| d);
        let improved = state
            .metrics
            .best_val_loss
            .is_none_or(|best| metrics.val_loss < best - min_delta);
        state.metrics.record_epoch(metrics, improved);
        state.epochs_without_improvement = if improved {
            0
        } else {
            state.epochs_without_improvement + 1
        };
        if let Some((patience, _)) = patience
            && state.epochs_without_improvement >= patience
            && epoch < epochs
        {
            state.metrics.stopped_early = true;
        }
        state.epoch = epoch;
        state.optimizer_steps = optimizer.steps();

        let saved = checkpoint::save(run_dir, &vs, &optimizer, &state, improved)?;
        write_metrics(run_dir, &state.metrics)?;
        if let Some(events) = &mut events {
            events.add_epoch(&metrics).map_err(io(run_dir))?;
        }
        hooks.on_epoch(&metrics, &saved);
    }

    let test = test_best(run_dir, &vs, &net, &data.test, batch_size)?;
    let test = TestMetrics {
        test_loss: test.loss,
        test_acc: test.accuracy,
    };
    state.metrics.test = Some(test);
    if let Some(events) = &mut events {
        events.add_test(&test, state.epoch).map_err(io(run_dir))?;
    }
    write_metrics(run_dir, &state.metrics)?;
    if !config.logging.save_checkpoints {
        // A run needs its checkpoints while it runs (to survive a crash and to
        // test the best epoch); this setting only drops them once it is done.
        let dir = run_dir.join("checkpoints");
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    Ok(state.metrics)
}

/// One pass over the shuffled training set. Returns mean loss and accuracy.
fn train_epoch(
    config: &ExperimentConfig,
    net: &Network,
    optimizer: &mut Optimizer,
    train: &Split,
    epoch: u32,
    hooks: &mut dyn TrainHooks,
) -> Result<(f64, f64), TrainError> {
    let n = train.len();
    let mut order: Vec<i64> = (0..n).collect();
    SplitMix64::new(derive_seed(config.seed, SHUFFLE_STREAM, epoch)).shuffle(&mut order);
    let device = train.images.device();
    let shuffled = train.select(&Tensor::from_slice(&order).to_device(device));

    // Summed on the device so the loop never waits for a value to come back.
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let batch_size = config.data.batch_size;
    let mut start = 0;
    while start < n {
        if hooks.should_stop() {
            return Err(TrainError::Stopped);
        }
        let len = batch_size.min(n - start);
        let mut images = shuffled.images.narrow(0, start, len);
        let labels = shuffled.labels.narrow(0, start, len);
        if config.data.augment.enabled {
            images = augment::shift_and_rotate(&images, &config.data.augment)?;
        }
        train_step(
            net,
            optimizer,
            &images,
            &labels,
            &mut loss_sum,
            &mut correct,
        )?;
        start += len;
    }
    let n = n as f64;
    Ok((
        loss_sum.double_value(&[]) / n,
        correct.int64_value(&[]) as f64 / n,
    ))
}

/// One optimisation step on a batch; adds the batch's summed loss and number of
/// correct predictions to the running totals (kept on the device).
pub fn train_step(
    net: &Network,
    optimizer: &mut Optimizer,
    images: &Tensor,
    labels: &Tensor,
    loss_sum: &mut Tensor,
    correct: &mut Tensor,
) -> Result<(), TrainError> {
    let len = labels.size()[0] as f64;
    let logits = match net {
        Network::Autograd(_) => {
            let logits = net.forward_t(images, true);
            let loss = crate::model::cross_entropy(&logits, labels)?;
            optimizer.backward_step(&loss)?;
            *loss_sum += loss.detach() * len;
            logits
        }
        Network::Scratch(scratch) => {
            let fwd = scratch.forward(images, true);
            let (loss, grads) = scratch.backward(&fwd, labels);
            optimizer.apply_named(&grads);
            *loss_sum += loss * len;
            fwd.logits
        }
    };
    *correct += logits
        .detach()
        .argmax(-1, false)
        .eq_tensor(labels)
        .sum(Kind::Int64);
    Ok(())
}

/// The learning rate of a 1-based epoch under the configured schedule
/// (PyTorch's StepLR and CosineAnnealingLR stepped once per epoch).
pub fn learning_rate(config: &ExperimentConfig, epoch: u32) -> f64 {
    let base = config.training.learning_rate;
    let done = f64::from(epoch - 1);
    match config.training.lr_schedule {
        LrSchedule::None => base,
        LrSchedule::Step { step_size, gamma } => {
            base * gamma.powi(((epoch - 1) / step_size) as i32)
        }
        LrSchedule::Cosine { min_lr } => {
            let t_max = f64::from(config.training.epochs);
            min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * done / t_max).cos()) / 2.0
        }
    }
}

/// Evaluates the best checkpoint (or the current weights when checkpoints are
/// off) on the test set, leaving the best weights in `vs`.
fn test_best(
    run_dir: &Path,
    vs: &nn::VarStore,
    net: &Network,
    test: &Split,
    batch_size: i64,
) -> Result<Evaluation, TrainError> {
    let best = checkpoint::best_path(run_dir);
    if best.exists() {
        checkpoint::load_weights(vs, &best)?;
    }
    evaluate(net, test, batch_size.max(256))
}

fn write_metrics(run_dir: &Path, metrics: &RunMetrics) -> Result<(), TrainError> {
    let path: PathBuf = run_dir.join("metrics.json");
    let json = serde_json::to_vec_pretty(metrics).map_err(|e| TrainError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    checkpoint::write_atomic(&path, &json).map_err(|source| TrainError::Io { path, source })
}

/// Evaluates a saved checkpoint of `config`'s model on the run's test set
/// (`sweepctl eval`).
pub fn evaluate_checkpoint(
    config: &ExperimentConfig,
    dataset: &Dataset,
    checkpoint: &Path,
) -> Result<Evaluation, TrainError> {
    let device = resolve_device(config.training.device)?;
    let data = dataset.split(&config.data, config.seed);
    crate::check_memory(config, device)?;
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs.root(), &config.model).map_err(TrainError::Allocation)?;
    checkpoint::load_weights(&vs, checkpoint)?;
    evaluate(
        &net,
        &data.test.to_device(device),
        config.data.batch_size.max(256),
    )
}
