//! Training throughput, measured the way `bench/reference.py` measures
//! PyTorch: the same model, batch size, optimizer and data, a few warm-up
//! steps, then a timed run of consecutive batches through [`train_step`], the
//! very step the trainer uses.

use std::time::Instant;

use serde::Serialize;
use sweep_core::config::ExperimentConfig;
use tch::{Kind, Tensor, nn};

use crate::checkpoint;
use crate::data::Dataset;
use crate::model::Network;
use crate::optim::Optimizer;
use crate::trainer::train_step;
use crate::{TrainError, resolve_device};

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub steps: usize,
    pub batch_size: i64,
    pub seconds: f64,
    pub samples_per_s: f64,
}

/// Times `steps` training steps of `config`'s model after `warmup` untimed ones.
pub fn measure(
    config: &ExperimentConfig,
    dataset: &Dataset,
    warmup: usize,
    steps: usize,
) -> Result<Throughput, TrainError> {
    if let Some(threads) = config.training.threads {
        tch::set_num_threads(threads as i32);
    }
    let device = resolve_device(config.training.device)?;
    crate::check_memory(config, device)?;
    tch::manual_seed(config.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs.root(), &config.model)?;
    let mut optimizer = Optimizer::new(&config.training, checkpoint::trainable(&vs));
    let pool = dataset.train_pool.to_device(device);
    let batch_size = config.data.batch_size;
    let batches = (pool.len() / batch_size).max(1);
    let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
    let mut correct = Tensor::zeros([], (Kind::Int64, device));
    let mut run = |from: usize, count: usize| -> Result<(), TrainError> {
        for i in from..from + count {
            let start = (i as i64 % batches) * batch_size;
            let images = pool.images.narrow(0, start, batch_size);
            let labels = pool.labels.narrow(0, start, batch_size);
            train_step(
                &net,
                &mut optimizer,
                &images,
                &labels,
                &mut loss_sum,
                &mut correct,
            )?;
        }
        Ok(())
    };
    run(0, warmup)?;
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
    let started = Instant::now();
    run(warmup, steps)?;
    // Reading the totals waits for queued device work, so the clock is honest on GPUs.
    let _ = loss_sum.double_value(&[]);
    let seconds = started.elapsed().as_secs_f64();
    Ok(Throughput {
        steps,
        batch_size,
        seconds,
        samples_per_s: (steps as i64 * batch_size) as f64 / seconds,
    })
}
