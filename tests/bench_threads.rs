//! Threads per job (BENCHMARKS.md, "Threads per job"): the per-epoch time of two local
//! workers with the default split of the cores (max(1, cores / 2) threads
//! each) against every worker taking every core, which is what libtorch does
//! when nobody sets a count (the behaviour before the split) and what
//! `--local-worker-threads <cores>` asks for now. Both in the same run,
//! alternating, so that the ratio compares like with like on a machine whose
//! load drifts; a regression of the default shows as a ratio near or below 1.
//!
//!   cargo run --release -p sweep-e2e --example threads -- [ROUNDS=2] [EPOCHS=3] [TRAIN=20000]
//!
//! Needs the release `sweep-worker` (`make build`). Not a test: it asserts
//! nothing about time (tests/local_worker_threads.rs checks the counts).

use std::path::{Path, PathBuf};
use std::time::Instant;

use sweep_coordinator::CoordinatorConfig;
use tokio_util::sync::CancellationToken;

/// Jobs per sweep: two per worker, so that both workers train side by side
/// for most of the sweep.
const SEEDS: [u64; 4] = [1, 2, 3, 4];

/// The shipped baseline's model (FC 784→256→128→10, Adam) on a subset, with
/// `threads` unset as in the ablation configs.
fn write_sweep(root: &Path, epochs: u32, train: usize) -> PathBuf {
    let sweep = root.join("threads");
    std::fs::create_dir_all(&sweep).expect("mkdir");
    let seeds: Vec<String> = SEEDS.iter().map(u64::to_string).collect();
    std::fs::write(
        sweep.join("sweep.yaml"),
        format!(
            "name: threads\nbase: base.yaml\nseeds: [{}]\n",
            seeds.join(", ")
        ),
    )
    .expect("sweep");
    std::fs::write(
        sweep.join("base.yaml"),
        format!(
            "name: baseline\n\
             model: {{type: fc, hidden_sizes: [256, 128], dropout: 0.2}}\n\
             data: {{data_dir: {}, batch_size: 64, subset: {{train: {train}, test: 1000}}}}\n\
             training: {{epochs: {epochs}, optimizer: adam, learning_rate: 0.001}}\n",
            sweep_e2e::mnist_dir().display()
        ),
    )
    .expect("base");
    sweep
}

/// Runs the sweep on two local workers; returns every epoch's seconds and
/// the sweep's wall time.
async fn run(threads: Option<usize>, epochs: u32, train: usize) -> (Vec<f64>, f64) {
    let root = tempfile::tempdir().expect("tempdir");
    let state_dir = root.path().join("runs");
    let mut config = CoordinatorConfig::new(state_dir.clone());
    config.sweep = Some(write_sweep(root.path(), epochs, train));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.local_workers = 2;
    config.local_worker_threads = threads;
    config.worker_binary = Some(sweep_e2e::release_bin_dir().join("sweep-worker"));
    config.exit_when_done = true;
    let started = Instant::now();
    let coordinator = sweep_coordinator::start(config, CancellationToken::new())
        .await
        .expect("start");
    coordinator.wait().await.expect("sweep");
    let wall = started.elapsed().as_secs_f64();

    let mut seconds = Vec::new();
    for seed in SEEDS {
        let path = state_dir.join(format!("threads/baseline/seed-{seed}/metrics.json"));
        let text = std::fs::read_to_string(&path).expect("metrics.json");
        let metrics: serde_json::Value = serde_json::from_str(&text).expect("json");
        let run_epochs = metrics["epochs"].as_array().expect("epochs");
        assert_eq!(run_epochs.len(), epochs as usize, "{}", path.display());
        seconds.extend(run_epochs.iter().filter_map(|e| e["seconds"].as_f64()));
    }
    (seconds, wall)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn summary(label: &str, seconds: &[f64], walls: &[f64]) -> f64 {
    let min = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = seconds.iter().copied().fold(0.0, f64::max);
    let med = median(seconds);
    println!(
        "{label}: epoch median {med:.2} s, range {min:.2}–{max:.2} s ({} epochs); sweep wall {}",
        seconds.len(),
        walls
            .iter()
            .map(|w| format!("{w:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    med
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, epochs, train) = (arg(1, 2), arg(2, 3) as u32, arg(3, 20_000));
    let cores = sweep_core::cores::available();
    let split = sweep_core::cores::share(cores, 2);
    println!(
        "2 local workers, {cores} cores; {} jobs × {epochs} epochs of FC 784-256-128-10 on {train} images; {rounds} rounds",
        SEEDS.len()
    );
    let (mut default, mut every) = (Vec::new(), Vec::new());
    let (mut default_wall, mut every_wall) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternating, so that drift in the machine's load hits both.
        let (seconds, wall) = run(None, epochs, train).await;
        println!(
            "round {round}: default ({split} threads each): median {:.2} s",
            median(&seconds)
        );
        default.extend(seconds);
        default_wall.push(wall);
        let (seconds, wall) = run(Some(cores), epochs, train).await;
        println!(
            "round {round}: every core ({cores} threads each): median {:.2} s",
            median(&seconds)
        );
        every.extend(seconds);
        every_wall.push(wall);
    }
    let d = summary(
        &format!("default, {split} threads each"),
        &default,
        &default_wall,
    );
    let e = summary(
        &format!("every core, {cores} threads each"),
        &every,
        &every_wall,
    );
    println!(
        "ratio (every core / default), per-epoch median: {:.2}×",
        e / d
    );
}
