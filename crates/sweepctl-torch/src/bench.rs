//! `sweepctl bench`: training throughput of the Rust trainer against PyTorch
//! itself, side by side in one go (same model, batch size, optimizer, data and
//! thread count), and the ratio.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use sweep_core::config::{DeviceSpec, ExperimentConfig};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which shipped model to time: fc (configs/baseline.yaml) or cnn (configs/cnn.yaml).
    #[arg(long, default_value = "fc", value_parser = ["fc", "cnn"])]
    pub model: String,
    /// Intra-op threads for both sides.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed steps (default: 2000 for fc, 200 for cnn).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Device for both sides.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Python interpreter that can `import torch` (`make bench-throughput` sets
    /// PYTHONPATH to the cached PyTorch install).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The PyTorch reference script.
    #[arg(long, default_value = "bench/reference.py")]
    pub reference: PathBuf,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config_path = PathBuf::from(if args.model == "fc" {
        "configs/baseline.yaml"
    } else {
        "configs/cnn.yaml"
    });
    let mut config = ExperimentConfig::load(&config_path)?;
    config.training.threads = Some(args.threads);
    config.training.device = args.device;
    let steps = args
        .steps
        .unwrap_or(if args.model == "fc" { 2000 } else { 200 });
    let data_dir = config
        .data
        .data_dir
        .clone()
        .unwrap_or_else(|| sweep_train::data::default_data_dir(config.data.dataset));
    let dataset = sweep_train::Dataset::load(config.data.dataset, &data_dir)?;

    eprintln!(
        "timing {steps} steps of {} (batch {}) with {} thread(s) on {}...",
        args.model, config.data.batch_size, args.threads, args.device
    );
    let rust = sweep_train::bench::measure(&config, &dataset, args.warmup, steps)?;

    let device = match args.device {
        DeviceSpec::Cuda(i) => format!("cuda:{i}"),
        DeviceSpec::Auto => bail!("give --device cpu or cuda[:N] so both sides use the same one"),
        DeviceSpec::Cpu => "cpu".into(),
    };
    let output = Command::new(&args.python)
        .arg(&args.reference)
        .args(["--model", &args.model, "--data-dir"])
        .arg(&data_dir)
        .args(["--batch-size", &config.data.batch_size.to_string()])
        .args([
            "--steps",
            &steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--threads", &args.threads.to_string(), "--device", &device])
        .args(["--lr", &config.training.learning_rate.to_string()])
        .args(["--weight-decay", &config.training.weight_decay.to_string()])
        .output()
        .with_context(|| format!("running {} {}", args.python, args.reference.display()))?;
    if !output.status.success() {
        bail!(
            "the PyTorch reference failed (is torch importable by {}? `make bench-throughput` sets PYTHONPATH):\n{}",
            args.python,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("no JSON line from the reference script")?;
    let pytorch: serde_json::Value = serde_json::from_str(line)?;
    let pytorch_rate = pytorch["samples_per_s"]
        .as_f64()
        .context("reference output lacks samples_per_s")?;

    println!(
        "model {}  batch {}  threads {}  device {}  steps {steps}",
        args.model, config.data.batch_size, args.threads, device
    );
    println!("  rust (tch)   {:>10.0} samples/s", rust.samples_per_s);
    println!("  pytorch      {:>10.0} samples/s", pytorch_rate);
    println!(
        "  ratio        {:>10.2}x",
        rust.samples_per_s / pytorch_rate
    );
    Ok(())
}
