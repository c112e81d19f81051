//! The networks a config can name. Parameter names follow the equivalent
//! PyTorch modules (see `bench/reference.py` and the README's checkpoint
//! table), so a checkpoint loads in Python with `load_state_dict`:
//!
//! - `fc`: `fc{i}.weight|bias` for each linear layer, `bn{i}.*` after hidden
//!   layer i when `batch_norm` is on (Linear → BN → ReLU → Dropout).
//! - `cnn`: `conv1`, `bn1`, `conv2`, `bn2`, `fc1`, `fc2`
//!   (Conv32-3x3 → ReLU → BN → MaxPool → Conv64-3x3 → ReLU → BN → MaxPool →
//!   FC128 → ReLU → Dropout → FC10).
//! - `fc_scratch`: the same parameters as `fc` (no batch norm), but forward and
//!   backward are written out by hand, without autograd: the original project's
//!   educational network, kept to show what autograd computes.
//!
//! Construction is fallible: the layers whose size a config sets (the fully
//! connected ones) allocate through tch's `f_var`, so that a model libtorch
//! cannot allocate is an error, not a panic inside `nn::linear`'s unwrap.
//! The convolutions are of fixed, small size and use tch's builders.

use sweep_core::config::{InitKind, ModelConfig, ModelKind};
use tch::nn::{self, ModuleT};
use tch::{Kind, TchError, Tensor};

/// How a network turns a batch into gradients.
pub enum Network {
    /// Uses libtorch's autograd.
    Autograd(Box<dyn ModuleT + Send>),
    /// Computes gradients itself.
    Scratch(ScratchFc),
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::Autograd(_) => f.write_str("Network::Autograd"),
            Network::Scratch(_) => f.write_str("Network::Scratch"),
        }
    }
}

impl Network {
    /// Creates the network's parameters under `root` as the config asks;
    /// libtorch's error when it cannot allocate them. Callers check the
    /// estimate against the machine first ([`crate::check_memory`]): on CPU an
    /// allocation larger than memory may succeed (overcommit) and the process
    /// be killed when it is touched.
    pub fn new(root: &nn::Path, config: &ModelConfig) -> Result<Network, TchError> {
        Ok(match config.kind {
            ModelKind::Fc => Network::Autograd(Box::new(fc(root, config)?)),
            ModelKind::Cnn => Network::Autograd(Box::new(cnn(root, config)?)),
            ModelKind::FcScratch => Network::Scratch(ScratchFc::new(root, config)?),
        })
    }

    /// Logits for a batch of images `[N, 1, 28, 28]`.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        match self {
            Network::Autograd(module) => module.forward_t(images, train),
            Network::Scratch(net) => net.forward(images, train).logits,
        }
    }
}

/// Layer initialisation, in PyTorch's terms.
struct LayerInit {
    weight: nn::Init,
    bias: nn::Init,
}

fn layer_init(kind: InitKind, fan_in: i64, fan_out: i64) -> LayerInit {
    match kind {
        // PyTorch's default for Linear and Conv: kaiming_uniform(a=√5), which
        // works out to U(±1/√fan_in) for the weights and the same for the bias.
        InitKind::Default => {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let uniform = nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            LayerInit {
                weight: uniform,
                bias: uniform,
            }
        }
        InitKind::Xavier => {
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            LayerInit {
                weight: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bias: nn::Init::Const(0.0),
            }
        }
        InitKind::Kaiming => LayerInit {
            weight: nn::Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_in as f64).sqrt(),
            },
            bias: nn::Init::Const(0.0),
        },
    }
}

/// `nn::linear` with its allocations fallible. The bias is drawn before the
/// weight, in `nn::linear`'s order, so that a seed gives the same weights as
/// before (and as runs trained by earlier versions).
fn linear(
    path: nn::Path,
    init: InitKind,
    in_dim: i64,
    out_dim: i64,
) -> Result<nn::Linear, TchError> {
    let li = layer_init(init, in_dim, out_dim);
    let bs = path.f_var("bias", &[out_dim], li.bias)?;
    let ws = path.f_var("weight", &[out_dim, in_dim], li.weight)?;
    Ok(nn::Linear { ws, bs: Some(bs) })
}

fn conv3x3(path: nn::Path, init: InitKind, in_ch: i64, out_ch: i64) -> nn::Conv2D {
    let li = layer_init(init, in_ch * 9, out_ch * 9);
    let config = nn::ConvConfig {
        padding: 1,
        ws_init: li.weight,
        bs_init: li.bias,
        ..Default::default()
    };
    nn::conv2d(path, in_ch, out_ch, 3, config)
}

fn fc(root: &nn::Path, config: &ModelConfig) -> Result<nn::SequentialT, TchError> {
    let mut net = nn::seq_t().add_fn(|xs| xs.flatten(1, -1));
    let mut in_dim = config.input_size;
    for (i, &width) in config.hidden_sizes.iter().enumerate() {
        let n = i + 1;
        net = net.add(linear(root / format!("fc{n}"), config.init, in_dim, width)?);
        // tch builds batch norm only through its panicking builder; its four
        // vectors of `width` are far smaller than the layer just allocated.
        if config.batch_norm {
            net = net.add(nn::batch_norm1d(
                root / format!("bn{n}"),
                width,
                Default::default(),
            ));
        }
        let p = config.dropout;
        net = net
            .add_fn(|xs| xs.relu())
            .add_fn_t(move |xs, train| xs.dropout(p, train));
        in_dim = width;
    }
    let last = config.hidden_sizes.len() + 1;
    Ok(net.add(linear(
        root / format!("fc{last}"),
        config.init,
        in_dim,
        config.num_classes,
    )?))
}

fn cnn(root: &nn::Path, config: &ModelConfig) -> Result<nn::SequentialT, TchError> {
    let mut net = nn::seq_t();
    for (n, (in_ch, out_ch)) in [(1, 32), (32, 64)]
        .into_iter()
        .enumerate()
        .map(|(i, c)| (i + 1, c))
    {
        net = net
            .add(conv3x3(
                root / format!("conv{n}"),
                config.init,
                in_ch,
                out_ch,
            ))
            .add_fn(|xs| xs.relu());
        if config.batch_norm {
            net = net.add(nn::batch_norm2d(
                root / format!("bn{n}"),
                out_ch,
                Default::default(),
            ));
        }
        net = net.add_fn(|xs| xs.max_pool2d_default(2));
    }
    let p = config.dropout;
    Ok(net
        .add_fn(|xs| xs.flatten(1, -1))
        .add(linear(root / "fc1", config.init, 64 * 7 * 7, 128)?)
        .add_fn(|xs| xs.relu())
        .add_fn_t(move |xs, train| xs.dropout(p, train))
        .add(linear(root / "fc2", config.init, 128, config.num_classes)?))
}

/// Mean cross-entropy of logits against class labels (PyTorch's
/// `F.cross_entropy`), fallible because labels come from data files.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor, tch::TchError> {
    logits.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)
}

/// The fully connected network with forward and backward written by hand.
#[derive(Debug)]
pub struct ScratchFc {
    /// `(weight [out, in], bias [out])` per layer, as in `torch.nn.Linear`.
    layers: Vec<(Tensor, Tensor)>,
    dropout: f64,
}

/// What the backward pass needs from the forward pass.
pub struct ScratchForward {
    pub logits: Tensor,
    /// Input of each layer (the flattened images, then each hidden activation).
    inputs: Vec<Tensor>,
    /// Pre-activation of each hidden layer, for ReLU's derivative.
    pre_activations: Vec<Tensor>,
    /// Each hidden layer's dropout mask, already scaled by 1/(1−p).
    dropout_masks: Vec<Option<Tensor>>,
}

impl ScratchFc {
    fn new(root: &nn::Path, config: &ModelConfig) -> Result<ScratchFc, TchError> {
        let mut dims = vec![config.input_size];
        dims.extend(&config.hidden_sizes);
        dims.push(config.num_classes);
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let li = layer_init(config.init, w[0], w[1]);
                let path = root / format!("fc{}", i + 1);
                Ok((
                    path.f_var("weight", &[w[1], w[0]], li.weight)?,
                    path.f_var("bias", &[w[1]], li.bias)?,
                ))
            })
            .collect::<Result<_, TchError>>()?;
        Ok(ScratchFc {
            layers,
            dropout: config.dropout,
        })
    }

    /// The forward pass, keeping what backward needs. No autograd graph is built.
    pub fn forward(&self, images: &Tensor, train: bool) -> ScratchForward {
        tch::no_grad(|| {
            let mut x = images.flatten(1, -1);
            let mut fwd = ScratchForward {
                logits: Tensor::new(),
                inputs: Vec::new(),
                pre_activations: Vec::new(),
                dropout_masks: Vec::new(),
            };
            let hidden = self.layers.len() - 1;
            for (i, (w, b)) in self.layers.iter().enumerate() {
                let z = x.matmul(&w.tr()) + b;
                fwd.inputs.push(x);
                if i == hidden {
                    fwd.logits = z;
                    break;
                }
                let mut h = z.relu();
                fwd.pre_activations.push(z);
                let mask = (train && self.dropout > 0.0).then(|| {
                    let keep = 1.0 - self.dropout;
                    h.rand_like().lt(keep).to_kind(Kind::Float) / keep
                });
                if let Some(mask) = &mask {
                    h *= mask;
                }
                fwd.dropout_masks.push(mask);
                x = h;
            }
            fwd
        })
    }

    /// Mean cross-entropy of `fwd.logits` against `labels` and its gradient with
    /// respect to every parameter, named like the parameters.
    pub fn backward(
        &self,
        fwd: &ScratchForward,
        labels: &Tensor,
    ) -> (Tensor, Vec<(String, Tensor)>) {
        let (loss, grads) = self.gradients(fwd, labels);
        let named = grads
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    format!(
                        "fc{}.{}",
                        i / 2 + 1,
                        if i % 2 == 0 { "weight" } else { "bias" }
                    ),
                    g,
                )
            })
            .collect();
        (loss, named)
    }

    /// The gradients in the order of [`ScratchFc::parameters`].
    fn gradients(&self, fwd: &ScratchForward, labels: &Tensor) -> (Tensor, Vec<Tensor>) {
        tch::no_grad(|| {
            let n = fwd.logits.size()[0] as f64;
            let log_probs = fwd.logits.log_softmax(-1, Kind::Float);
            let loss = log_probs.nll_loss(labels);
            // d(mean CE)/d(logits) = (softmax − onehot) / N
            let onehot = labels.one_hot(fwd.logits.size()[1]).to_kind(Kind::Float);
            let mut grad_out = (log_probs.exp() - onehot) / n;
            let mut grads: Vec<Tensor> =
                (0..2 * self.layers.len()).map(|_| Tensor::new()).collect();
            for i in (0..self.layers.len()).rev() {
                let (w, _) = &self.layers[i];
                grads[2 * i] = grad_out.tr().matmul(&fwd.inputs[i]);
                grads[2 * i + 1] = grad_out.sum_dim_intlist(0, false, Kind::Float);
                if i == 0 {
                    break;
                }
                // Back through the layer below's dropout and ReLU.
                let mut grad_in = grad_out.matmul(w);
                if let Some(mask) = &fwd.dropout_masks[i - 1] {
                    grad_in *= mask;
                }
                grad_out = grad_in * fwd.pre_activations[i - 1].gt(0.0).to_kind(Kind::Float);
            }
            (loss, grads)
        })
    }

    /// The parameters as `[w1, b1, w2, b2, ...]`.
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|(w, b)| [w, b]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sweep_core::config::ExperimentConfig;
    use tch::{Device, nn::VarStore};

    fn model_config(kind: ModelKind) -> ModelConfig {
        let mut config =
            ExperimentConfig::from_yaml("name: t\nmodel: {type: fc}\n", "t.yaml".as_ref())
                .expect("minimal config")
                .model;
        config.kind = kind;
        config
    }

    fn parameter_count(vs: &VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    #[test]
    fn baseline_fc_has_the_original_parameter_count() {
        let vs = VarStore::new(Device::Cpu);
        let _net = Network::new(&vs.root(), &model_config(ModelKind::Fc)).expect("network");
        assert_eq!(parameter_count(&vs), 235_146);
        let mut names: Vec<_> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "fc1.bias",
                "fc1.weight",
                "fc2.bias",
                "fc2.weight",
                "fc3.bias",
                "fc3.weight"
            ]
        );
        assert_eq!(
            vs.variables()["fc1.weight"].size(),
            [256, 784],
            "torch.nn.Linear layout is [out, in]"
        );
    }

    /// sweep_core estimates the memory from the schema alone; its counts
    /// must be those of the networks built here.
    #[test]
    fn the_core_estimate_counts_what_is_built() {
        for kind in [ModelKind::Fc, ModelKind::Cnn, ModelKind::FcScratch] {
            for batch_norm in [false, true] {
                let mut config =
                    ExperimentConfig::from_yaml("name: t\n", "t.yaml".as_ref()).expect("config");
                config.model = model_config(kind);
                config.model.batch_norm = batch_norm;
                config.model.hidden_sizes = vec![48, 24, 12];
                let vs = VarStore::new(Device::Cpu);
                let _net = Network::new(&vs.root(), &config.model).expect("network");
                let memory = config.model_memory();
                assert_eq!(
                    memory.parameters,
                    parameter_count(&vs) as u128,
                    "{kind:?} bn={batch_norm}"
                );
                let buffers: i64 = vs
                    .variables()
                    .iter()
                    .filter(|(name, _)| name.contains("running_"))
                    .map(|(_, t)| t.numel() as i64)
                    .sum();
                assert_eq!(memory.buffers, buffers as u128, "{kind:?} bn={batch_norm}");
            }
        }
    }

    /// A layer libtorch cannot allocate is an error, not tch's panic. 2^46
    /// floats (256 TiB) exceed any address space, so the allocation fails
    /// whatever the kernel's overcommit policy (a smaller one could succeed
    /// and get the test killed when filled).
    #[test]
    fn an_unallocatable_model_is_an_error() {
        for kind in [ModelKind::Fc, ModelKind::FcScratch] {
            let vs = VarStore::new(Device::Cpu);
            let mut config = model_config(kind);
            config.hidden_sizes = vec![1 << 46];
            let err = Network::new(&vs.root(), &config).expect_err("allocated 256 TiB");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn cnn_has_pytorch_names_and_shapes() {
        let vs = VarStore::new(Device::Cpu);
        let mut config = model_config(ModelKind::Cnn);
        config.batch_norm = true;
        let net = Network::new(&vs.root(), &config).expect("network");
        let vars = vs.variables();
        assert_eq!(vars["conv1.weight"].size(), [32, 1, 3, 3]);
        assert_eq!(vars["conv2.weight"].size(), [64, 32, 3, 3]);
        assert_eq!(vars["bn2.running_var"].size(), [64]);
        assert_eq!(vars["fc1.weight"].size(), [128, 3136]);
        assert_eq!(vars["fc2.weight"].size(), [10, 128]);
        let logits = net.forward_t(
            &Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(logits.size(), [2, 10]);
    }

    #[test]
    fn scratch_gradients_match_autograd() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let mut config = model_config(ModelKind::FcScratch);
        config.hidden_sizes = vec![32, 16];
        let Ok(Network::Scratch(net)) = Network::new(&vs.root(), &config) else {
            unreachable!()
        };
        let images = Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);

        let fwd = net.forward(&images, false);
        let (loss, grads) = net.gradients(&fwd, &labels);

        // The same computation through autograd.
        let mut x = images.flatten(1, -1);
        let params = net.parameters();
        for (i, pair) in params.chunks(2).enumerate() {
            x = x.matmul(&pair[0].tr()) + pair[1];
            if i + 1 < params.len() / 2 {
                x = x.relu();
            }
        }
        let auto_loss = x.cross_entropy_for_logits(&labels);
        auto_loss.backward();
        assert!((loss.double_value(&[]) - auto_loss.double_value(&[])).abs() < 1e-6);
        for (p, g) in params.iter().zip(&grads) {
            let diff = (p.grad() - g).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "gradient differs by {diff}");
        }
    }
}
