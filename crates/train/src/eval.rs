//! Evaluation of a network on a split: loss, accuracy, per-class accuracy and
//! the confusion matrix (what `sweepctl eval` prints as JSON).

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::TrainError;
use crate::data::Split;
use crate::model::Network;

const CLASSES: i64 = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub samples: i64,
    pub loss: f64,
    pub accuracy: f64,
    /// Accuracy per true class (NaN-free: a class absent from the split scores 0).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<i64>>,
}

/// Evaluates in inference mode (no dropout, batch norm on running statistics).
pub fn evaluate(net: &Network, split: &Split, batch_size: i64) -> Result<Evaluation, TrainError> {
    let n = split.len();
    let device = split.images.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut confusion = Tensor::zeros([CLASSES * CLASSES], (Kind::Int64, device));
    tch::no_grad(|| -> Result<(), TrainError> {
        let mut start = 0;
        while start < n {
            let len = batch_size.min(n - start);
            let images = split.images.narrow(0, start, len);
            let labels = split.labels.narrow(0, start, len);
            let logits = net.forward_t(&images, false);
            let loss = crate::model::cross_entropy(&logits, &labels)?;
            loss_sum += loss.to_kind(Kind::Double) * len as f64;
            let cells = &labels * CLASSES + logits.argmax(-1, false);
            confusion += cells.bincount::<Tensor>(None, CLASSES * CLASSES);
            start += len;
        }
        Ok(())
    })?;
    let confusion: Vec<i64> = Vec::<i64>::try_from(confusion.to_device(tch::Device::Cpu))?;
    let confusion: Vec<Vec<i64>> = confusion
        .chunks(CLASSES as usize)
        .map(<[i64]>::to_vec)
        .collect();
    let correct: i64 = (0..CLASSES as usize).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: i64 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[c] as f64 / total as f64
            }
        })
        .collect();
    let denom = n.max(1) as f64;
    Ok(Evaluation {
        samples: n,
        loss: loss_sum.double_value(&[]) / denom,
        accuracy: correct as f64 / denom,
        per_class_accuracy,
        confusion,
    })
}
