//! Adam, AdamW and SGD with momentum, written over tensors rather than taken
//! from libtorch's C++ optimizers, because those keep their state (moments,
//! momentum buffers) where tch cannot reach it, and an exact resume needs that
//! state in the checkpoint. The update rules are PyTorch's (`torch.optim`).

use sweep_core::config::{OptimizerKind, TrainingConfig};
use tch::Tensor;

const ADAM_BETA1: f64 = 0.9;
const ADAM_BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;

#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    /// Number of updates applied so far (Adam's bias correction needs it).
    step: i64,
    /// Trainable parameters with their names in the model's state dict.
    params: Vec<(String, Tensor)>,
    /// The same parameters, as autograd's list of inputs.
    tensors: Vec<Tensor>,
    /// Per parameter: Adam's two moments, or SGD's single momentum buffer
    /// (created lazily, as PyTorch does, so a fresh buffer equals the first gradient).
    state: Vec<Vec<Tensor>>,
}

impl Optimizer {
    pub fn new(config: &TrainingConfig, params: Vec<(String, Tensor)>) -> Optimizer {
        let state = params.iter().map(|_| Vec::new()).collect();
        let tensors = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        Optimizer {
            tensors,
            kind: config.optimizer,
            lr: config.learning_rate,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            step: 0,
            params,
            state,
        }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Backpropagates `loss` and applies one update. The gradients come back
    /// as fresh tensors (`torch.autograd.grad`) instead of accumulating into
    /// each parameter's `.grad`, which saves zeroing and accumulating them
    /// every step (PyTorch's `zero_grad(set_to_none=True)` has the same effect).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), tch::TchError> {
        let grads = Tensor::f_run_backward(&[loss], &self.tensors, false, false)?;
        self.apply(&grads);
        Ok(())
    }

    /// One update from gradients computed elsewhere, given by parameter name.
    pub fn apply_named(&mut self, named: &[(String, Tensor)]) {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(name, _)| {
                named
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or_else(Tensor::new, |(_, g)| g.shallow_clone())
            })
            .collect();
        self.apply(&grads);
    }

    /// One update from explicit gradients, in the order of the parameters.
    fn apply(&mut self, grads: &[Tensor]) {
        self.step += 1;
        let (lr, wd, step) = (self.lr, self.weight_decay, self.step);
        tch::no_grad(|| {
            for (((_, p), state), grad) in self.params.iter_mut().zip(&mut self.state).zip(grads) {
                if !grad.defined() {
                    continue;
                }
                match self.kind {
                    OptimizerKind::Adam | OptimizerKind::AdamW => {
                        let grad = if self.kind == OptimizerKind::Adam && wd != 0.0 {
                            grad + &*p * wd
                        } else {
                            grad.shallow_clone()
                        };
                        if self.kind == OptimizerKind::AdamW && wd != 0.0 {
                            let _ = p.f_mul_scalar_(1.0 - lr * wd);
                        }
                        if state.is_empty() {
                            state.push(grad.zeros_like());
                            state.push(grad.zeros_like());
                        }
                        let (exp_avg, exp_avg_sq) = state.split_at_mut(1);
                        let (exp_avg, exp_avg_sq) = (&mut exp_avg[0], &mut exp_avg_sq[0]);
                        // Fewest ops per parameter: per-op dispatch, not
                        // arithmetic, is what a small model's step costs.
                        let _ = exp_avg.lerp_(&grad, 1.0 - ADAM_BETA1);
                        let _ = exp_avg_sq.lerp_(&(&grad * &grad), 1.0 - ADAM_BETA2);
                        let bias1 = 1.0 - ADAM_BETA1.powi(step as i32);
                        let bias2 = 1.0 - ADAM_BETA2.powi(step as i32);
                        // p -= lr/bias1 · m / (√v/√bias2 + eps), with the step
                        // size folded into the denominator so addcdiv_ needs no scale.
                        let scale = -bias1 / lr;
                        let mut denom = exp_avg_sq.sqrt();
                        let _ = denom.g_mul_scalar_(scale / bias2.sqrt());
                        let _ = denom.g_add_scalar_(ADAM_EPS * scale);
                        let _ = p.addcdiv_(exp_avg, &denom);
                    }
                    OptimizerKind::Sgd => {
                        let mut grad = if wd != 0.0 {
                            grad + &*p * wd
                        } else {
                            grad.shallow_clone()
                        };
                        if self.momentum != 0.0 {
                            if state.is_empty() {
                                state.push(grad.detach().copy());
                            } else {
                                let _ = state[0].g_mul_scalar_(self.momentum).g_add_(&grad);
                            }
                            grad = state[0].shallow_clone();
                        }
                        let _ = p.g_add_(&(grad * -lr));
                    }
                }
            }
        });
    }

    /// The optimizer's state as named tensors for a checkpoint:
    /// `<param>.exp_avg`, `<param>.exp_avg_sq` or `<param>.momentum_buffer`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let names: &[&str] = match self.kind {
            OptimizerKind::Sgd => &["momentum_buffer"],
            _ => &["exp_avg", "exp_avg_sq"],
        };
        let mut out = Vec::new();
        for ((name, _), state) in self.params.iter().zip(&self.state) {
            for (suffix, t) in names.iter().zip(state) {
                out.push((format!("{name}.{suffix}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Restores what [`Optimizer::state_tensors`] saved, and the step count.
    pub fn load_state(
        &mut self,
        step: i64,
        mut saved: std::collections::HashMap<String, Tensor>,
    ) -> Result<(), String> {
        let names: &[&str] = match self.kind {
            OptimizerKind::Sgd => &["momentum_buffer"],
            _ => &["exp_avg", "exp_avg_sq"],
        };
        for ((name, p), state) in self.params.iter().zip(&mut self.state) {
            state.clear();
            for suffix in names {
                let key = format!("{name}.{suffix}");
                match saved.remove(&key) {
                    Some(t) if t.size() == p.size() => state.push(t.to_device(p.device())),
                    Some(t) => {
                        return Err(format!(
                            "{key} has shape {:?}, the parameter {:?}",
                            t.size(),
                            p.size()
                        ));
                    }
                    // A parameter that has never been updated has no state yet.
                    None if step == 0 => {}
                    None => return Err(format!("optimizer state lacks {key}")),
                }
            }
        }
        self.step = step;
        Ok(())
    }
}
