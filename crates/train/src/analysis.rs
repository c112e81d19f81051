//! Analysis of a run's best checkpoint on the test set: why the model wins or
//! loses, not just by how much. Writes `RUN_DIR/analysis/`:
//!
//! - `predictions.safetensors`: per test sample `label` (u8), `predicted`
//!   (u8), `loss` (f32, cross-entropy) and `confidence` (f32, softmax
//!   probability of the prediction), in test-set order;
//! - `summary.json` ([`sweep_report::analysis::AnalysisSummary`]): confusion
//!   matrix, per-class precision / recall / F1, the 25 highest-loss failures,
//!   and the failure clusters;
//! - figures: `confusion_counts.{png,svg}`, `confusion_normalized.{png,svg}`,
//!   `top_failures.png`, `cluster_<id>.png`, `accuracy_curves.{png,svg}`,
//!   `loss_curves.{png,svg}`; for the CNN `conv1_filters.png` and
//!   `activations_conv{1,2}.png`; for FC models `fc1_weights.png`.
//!
//! Failure clusters: the misclassified samples' activations at the input of
//! the last linear layer (the penultimate representation), reduced by PCA and
//! grouped by seeded k-means (linfa). The forward pass that yields them is
//! written out from the checkpoint's named tensors (inference mode), and a
//! test checks it gives the same logits as the model itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use linfa::prelude::*;
use linfa_clustering::KMeans;
use linfa_reduction::Pca;
use ndarray::{Array2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use sweep_core::config::{ExperimentConfig, ModelKind};
use sweep_core::metrics::RunMetrics;
use sweep_report::analysis::{
    self as summary, ANALYSIS_DIR, AnalysisSummary, FailureCluster, FailureClusters, PairCount,
    Prediction, SUMMARY_FILE, SUMMARY_VERSION, TOP_FAILURES,
};
use sweep_report::charts::{ConfusionChart, ImageGrid, Tile, TileScale};
use sweep_report::curves::{CurveChart, Series};
use sweep_report::figure::{self, Figure};
use tch::{Device, Kind, Tensor, nn};

use crate::model::Network;
use crate::{Dataset, TrainError, checkpoint, resolve_device};

/// PyTorch's default batch-norm epsilon, which tch's layers use too.
const BN_EPS: f64 = 1e-5;
/// Test digits whose activation maps are drawn: the first four of the test set.
const ACTIVATION_SAMPLES: usize = 4;
/// Channels shown per conv layer in the activation figure.
const ACTIVATION_CHANNELS: usize = 16;
/// Fewer failures than this are not clustered.
const MIN_FAILURES_TO_CLUSTER: usize = 6;
/// Members shown per cluster.
const TYPICAL: usize = 8;
/// Dimensions PCA keeps (at most; fewer with few failures).
const PCA_DIMS: usize = 10;

/// What [`analyze`] wrote.
#[derive(Debug, Clone)]
pub struct AnalysisOutput {
    /// `RUN_DIR/analysis`.
    pub dir: PathBuf,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
    pub summary: AnalysisSummary,
}

/// The network's internals for a batch, in inference mode.
pub struct Forward {
    /// Input of the last linear layer, `[N, D]`.
    pub embedding: Tensor,
    pub logits: Tensor,
    /// CNN only: the two conv layers' outputs after ReLU.
    pub conv_maps: Option<(Tensor, Tensor)>,
}

fn var<'a>(vars: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor, TrainError> {
    vars.get(name)
        .ok_or_else(|| TrainError::Analysis(format!("the model has no tensor {name}")))
}

fn batch_norm(
    x: &Tensor,
    vars: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<Tensor, TrainError> {
    Ok(Tensor::batch_norm(
        x,
        Some(var(vars, &format!("{prefix}.weight"))?),
        Some(var(vars, &format!("{prefix}.bias"))?),
        Some(var(vars, &format!("{prefix}.running_mean"))?),
        Some(var(vars, &format!("{prefix}.running_var"))?),
        false,
        0.1,
        BN_EPS,
        false,
    ))
}

fn linear(x: &Tensor, vars: &HashMap<String, Tensor>, prefix: &str) -> Result<Tensor, TrainError> {
    Ok(x.linear(
        var(vars, &format!("{prefix}.weight"))?,
        Some(var(vars, &format!("{prefix}.bias"))?),
    ))
}

/// The inference-mode forward pass of `config`'s model from its named
/// parameters, keeping what the analysis looks at.
pub fn forward(
    config: &ExperimentConfig,
    vars: &HashMap<String, Tensor>,
    images: &Tensor,
) -> Result<Forward, TrainError> {
    let model = &config.model;
    tch::no_grad(|| match model.kind {
        ModelKind::Fc | ModelKind::FcScratch => {
            let mut h = images.flatten(1, -1);
            for i in 1..=model.hidden_sizes.len() {
                h = linear(&h, vars, &format!("fc{i}"))?;
                if model.batch_norm && model.kind == ModelKind::Fc {
                    h = batch_norm(&h, vars, &format!("bn{i}"))?;
                }
                h = h.relu();
            }
            let logits = linear(&h, vars, &format!("fc{}", model.hidden_sizes.len() + 1))?;
            Ok(Forward {
                embedding: h,
                logits,
                conv_maps: None,
            })
        }
        ModelKind::Cnn => {
            let conv = |x: &Tensor, n: usize| -> Result<Tensor, TrainError> {
                Ok(x.conv2d(
                    var(vars, &format!("conv{n}.weight"))?,
                    Some(var(vars, &format!("conv{n}.bias"))?),
                    [1, 1],
                    [1, 1],
                    [1, 1],
                    1,
                )
                .relu())
            };
            let bn = |x: Tensor, n: usize| -> Result<Tensor, TrainError> {
                if model.batch_norm {
                    batch_norm(&x, vars, &format!("bn{n}"))
                } else {
                    Ok(x)
                }
            };
            let a1 = conv(images, 1)?;
            let h = bn(a1.shallow_clone(), 1)?.max_pool2d_default(2);
            let a2 = conv(&h, 2)?;
            let h = bn(a2.shallow_clone(), 2)?.max_pool2d_default(2);
            let embedding = linear(&h.flatten(1, -1), vars, "fc1")?.relu();
            let logits = linear(&embedding, vars, "fc2")?;
            Ok(Forward {
                embedding,
                logits,
                conv_maps: Some((a1, a2)),
            })
        }
    })
}

fn embedding_name(config: &ExperimentConfig) -> String {
    match config.model.kind {
        ModelKind::Cnn => "input of fc2 (128, after ReLU)".to_string(),
        _ => {
            let n = config.model.hidden_sizes.len();
            let width = config
                .model
                .hidden_sizes
                .last()
                .copied()
                .unwrap_or(config.model.input_size);
            format!("input of fc{} ({width}, after ReLU)", n + 1)
        }
    }
}

fn to_f32(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    Ok(Vec::<f32>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view(-1),
    )?)
}

fn to_i64(t: &Tensor) -> Result<Vec<i64>, TrainError> {
    Ok(Vec::<i64>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(Kind::Int64)
            .contiguous()
            .view(-1),
    )?)
}

/// Clusters the failures' embeddings (`embeddings` has one row per entry of
/// `failures`): PCA to at most [`PCA_DIMS`] dimensions, then k-means with k =
/// round(√(m/2)) clamped to [2, 6] for m failures, seeded by `seed`. `None`
/// below [`MIN_FAILURES_TO_CLUSTER`] failures.
pub fn cluster_failures(
    embeddings: &Array2<f64>,
    failures: &[Prediction],
    seed: u64,
    embedding: &str,
) -> Result<Option<FailureClusters>, TrainError> {
    let m = failures.len();
    if m < MIN_FAILURES_TO_CLUSTER || embeddings.nrows() != m {
        return Ok(None);
    }
    let err = |e: String| TrainError::Analysis(format!("failure clustering: {e}"));
    let dims = PCA_DIMS.min(m - 1).min(embeddings.ncols());
    let records = DatasetBase::from(embeddings.clone());
    let pca = Pca::params(dims)
        .fit(&records)
        .map_err(|e| err(e.to_string()))?;
    let reduced: Array2<f64> = pca.predict(embeddings);
    let centered = embeddings - &embeddings.mean_axis(Axis(0)).unwrap_or_default();
    let total: f64 = centered.iter().map(|v| v * v).sum();
    // The variance the projection keeps, measured on the projection itself.
    let kept: f64 = (&reduced - &reduced.mean_axis(Axis(0)).unwrap_or_default())
        .iter()
        .map(|v| v * v)
        .sum();
    let explained = if total > 0.0 {
        (kept / total).min(1.0)
    } else {
        0.0
    };

    let k = ((m as f64 / 2.0).sqrt().round() as usize).clamp(2, 6);
    let model = KMeans::params_with_rng(k, Xoshiro256Plus::seed_from_u64(seed))
        .n_runs(4)
        .max_n_iterations(300)
        .tolerance(1e-6)
        .fit(&DatasetBase::from(reduced.clone()))
        .map_err(|e| err(e.to_string()))?;
    let assignment = model.predict(&reduced);
    let centroids = model.centroids();

    let mut clusters: Vec<FailureCluster> = (0..k)
        .map(|c| {
            let members: Vec<usize> = (0..m).filter(|&i| assignment[i] == c).collect();
            let mut pairs: HashMap<(u8, u8), u64> = HashMap::new();
            for &i in &members {
                *pairs
                    .entry((failures[i].label, failures[i].predicted))
                    .or_default() += 1;
            }
            let mut pairs: Vec<PairCount> = pairs
                .into_iter()
                .map(|((label, predicted), count)| PairCount {
                    label,
                    predicted,
                    count,
                })
                .collect();
            pairs.sort_by(|a, b| {
                b.count
                    .cmp(&a.count)
                    .then((a.label, a.predicted).cmp(&(b.label, b.predicted)))
            });
            pairs.truncate(5);
            let centroid = centroids.row(c);
            let mut by_distance: Vec<(f64, usize)> = members
                .iter()
                .map(|&i| {
                    let d: f64 = reduced
                        .row(i)
                        .iter()
                        .zip(centroid.iter())
                        .map(|(a, b)| (a - b).powi(2))
                        .sum();
                    (d, failures[i].index)
                })
                .collect();
            by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            FailureCluster {
                id: 0,
                size: members.len(),
                pairs,
                typical: by_distance
                    .into_iter()
                    .take(TYPICAL)
                    .map(|(_, i)| i)
                    .collect(),
            }
        })
        .filter(|c| c.size > 0)
        .collect();
    // Largest first, numbered from 1; ties by their most typical member.
    clusters.sort_by(|a, b| b.size.cmp(&a.size).then(a.typical.cmp(&b.typical)));
    for (i, c) in clusters.iter_mut().enumerate() {
        c.id = i + 1;
    }
    Ok(Some(FailureClusters {
        failures: m,
        embedding: embedding.to_string(),
        pca_dims: dims,
        explained_variance: explained,
        k,
        k_rule: "k = round(√(m/2)) clamped to [2, 6], m = failures".to_string(),
        seed,
        clusters,
    }))
}

/// Analyses the run in `run_dir` (its `config.yaml` and best checkpoint).
pub fn analyze_run(run_dir: &Path, dataset: &Dataset) -> Result<AnalysisOutput, TrainError> {
    let path = run_dir.join("config.yaml");
    let config = ExperimentConfig::load(&path)
        .map_err(|e| TrainError::Analysis(format!("{}: {e}", path.display())))?;
    analyze(&config, dataset, run_dir)
}

/// Analyses the best checkpoint of `config`'s run in `run_dir`.
pub fn analyze(
    config: &ExperimentConfig,
    dataset: &Dataset,
    run_dir: &Path,
) -> Result<AnalysisOutput, TrainError> {
    let started = Instant::now();
    let device = resolve_device(config.training.device)?;
    let data = dataset.split(&config.data, config.seed);
    let test = data.test.to_device(device);
    crate::check_memory(config, device)?;
    let vs = nn::VarStore::new(device);
    let _net = Network::new(&vs.root(), &config.model)?;
    let best = checkpoint::best_path(run_dir);
    checkpoint::load_weights(&vs, &best)?;
    let vars = vs.variables();

    // One pass over the test set.
    let n = test.len();
    let batch = config.data.batch_size.max(512);
    let mut labels = Vec::with_capacity(n as usize);
    let mut predicted = Vec::with_capacity(n as usize);
    let mut losses = Vec::with_capacity(n as usize);
    let mut confidences = Vec::with_capacity(n as usize);
    let mut embeddings: Vec<f32> = Vec::new();
    let mut width = 0;
    let mut start = 0;
    while start < n {
        let len = batch.min(n - start);
        let images = test.images.narrow(0, start, len);
        let y = test.labels.narrow(0, start, len);
        let out = forward(config, &vars, &images)?;
        let logp = out.logits.log_softmax(-1, Kind::Float);
        let loss = -logp.gather(1, &y.unsqueeze(1), false).squeeze_dim(1);
        let (conf, pred) = logp.exp().max_dim(-1, false);
        labels.extend(to_i64(&y)?);
        predicted.extend(to_i64(&pred)?);
        losses.extend(to_f32(&loss)?);
        confidences.extend(to_f32(&conf)?);
        width = out.embedding.size()[1] as usize;
        embeddings.extend(to_f32(&out.embedding)?);
        start += len;
    }
    let predictions: Vec<Prediction> = (0..n as usize)
        .map(|i| Prediction {
            index: i,
            label: labels[i] as u8,
            predicted: predicted[i] as u8,
            loss: f64::from(losses[i]),
            confidence: f64::from(confidences[i]),
        })
        .collect();

    let classes = config.model.num_classes as usize;
    let confusion =
        summary::confusion_matrix(&predictions, classes).map_err(TrainError::Analysis)?;
    let per_class = summary::class_scores(&confusion);
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let top = summary::top_failures(&predictions, TOP_FAILURES);

    let failures: Vec<Prediction> = predictions
        .iter()
        .filter(|p| p.label != p.predicted)
        .copied()
        .collect();
    let failure_rows = Array2::from_shape_fn((failures.len(), width), |(r, c)| {
        f64::from(embeddings[failures[r].index * width + c])
    });
    let clusters = cluster_failures(
        &failure_rows,
        &failures,
        config.seed,
        &embedding_name(config),
    )?;

    let dir = run_dir.join(ANALYSIS_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
        path: dir.clone(),
        source,
    })?;
    let mut files = Vec::new();

    // predictions.safetensors
    let to_u8 = |v: &[i64]| Tensor::from_slice(&v.iter().map(|&x| x as u8).collect::<Vec<u8>>());
    let pred_path = dir.join("predictions.safetensors");
    Tensor::write_safetensors(
        &[
            ("label", to_u8(&labels)),
            ("predicted", to_u8(&predicted)),
            ("loss", Tensor::from_slice(&losses)),
            ("confidence", Tensor::from_slice(&confidences)),
        ],
        &pred_path,
    )?;
    files.push("predictions.safetensors".to_string());

    // Figures.
    let mut write =
        |name: &str, bytes: Result<Vec<u8>, figure::ChartError>| -> Result<(), TrainError> {
            let bytes = bytes.map_err(|e| TrainError::Analysis(e.to_string()))?;
            let path = dir.join(name);
            checkpoint::write_atomic(&path, &bytes)
                .map_err(|source| TrainError::Io { path, source })?;
            files.push(name.to_string());
            Ok(())
        };
    fn both<F: Figure>(
        f: &F,
    ) -> (
        Result<Vec<u8>, figure::ChartError>,
        Result<Vec<u8>, figure::ChartError>,
    ) {
        (figure::png(f), figure::svg(f).map(String::into_bytes))
    }
    let run_name = format!("{} (seed {})", config.name, config.seed);
    for (stem, percent) in [("confusion_counts", false), ("confusion_normalized", true)] {
        let chart = ConfusionChart::new(
            format!(
                "{run_name}: test confusion{}",
                if percent { " (row %)" } else { "" }
            ),
            confusion.clone(),
            percent,
        );
        let (png, svg) = both(&chart);
        write(&format!("{stem}.png"), png)?;
        write(&format!("{stem}.svg"), svg)?;
    }
    let test_cpu: Vec<f32> = to_f32(&data.test.images)?;
    let digit = |index: usize, caption: String| Tile {
        width: 28,
        height: 28,
        pixels: test_cpu[index * 784..(index + 1) * 784].to_vec(),
        caption,
    };
    let top_grid = ImageGrid {
        title: format!(
            "{run_name}: the {} test samples with the highest loss",
            top.len()
        ),
        tiles: top
            .iter()
            .map(|p| {
                digit(
                    p.index,
                    format!("{} → {} ({:.2})", p.label, p.predicted, p.confidence),
                )
            })
            .collect(),
        columns: 5,
        zoom: 3,
        scale: TileScale::Gray,
        note: "caption: true → predicted (confidence of the prediction)".to_string(),
    };
    write("top_failures.png", figure::png(&top_grid))?;
    if let Some(clusters) = &clusters {
        for c in &clusters.clusters {
            let pairs: Vec<String> = c
                .pairs
                .iter()
                .take(3)
                .map(|p| format!("{}→{} ×{}", p.label, p.predicted, p.count))
                .collect();
            let grid = ImageGrid {
                title: format!(
                    "{run_name}: failure cluster {} of {} ({} sample{})",
                    c.id,
                    clusters.clusters.len(),
                    c.size,
                    if c.size == 1 { "" } else { "s" }
                ),
                tiles: c
                    .typical
                    .iter()
                    .map(|&i| {
                        digit(
                            i,
                            format!("{} → {}", predictions[i].label, predictions[i].predicted),
                        )
                    })
                    .collect(),
                columns: 8,
                zoom: 3,
                scale: TileScale::Gray,
                note: format!("most typical members; most frequent: {}", pairs.join(", ")),
            };
            write(&format!("cluster_{}.png", c.id), figure::png(&grid))?;
        }
    }

    // Learning curves of this run, from metrics.json when the trainer wrote it.
    if let Ok(text) = std::fs::read_to_string(run_dir.join("metrics.json"))
        && let Ok(metrics) = serde_json::from_str::<RunMetrics>(&text)
        && !metrics.epochs.is_empty()
    {
        let series = |name: &str, f: fn(&sweep_core::metrics::EpochMetrics) -> f64| {
            Series::new(name, vec![metrics.epochs.iter().map(f).collect()])
        };
        let acc = CurveChart::new(
            format!("{run_name}: accuracy"),
            "accuracy (%)",
            vec![
                series("training", |e| 100.0 * e.train_acc),
                series("validation", |e| 100.0 * e.val_acc),
            ],
        );
        let (png, svg) = both(&acc);
        write("accuracy_curves.png", png)?;
        write("accuracy_curves.svg", svg)?;
        let loss = CurveChart::new(
            format!("{run_name}: loss"),
            "cross-entropy loss",
            vec![
                series("training", |e| e.train_loss),
                series("validation", |e| e.val_loss),
            ],
        );
        let (png, svg) = both(&loss);
        write("loss_curves.png", png)?;
        write("loss_curves.svg", svg)?;
    }

    // What the first layer learned.
    match config.model.kind {
        ModelKind::Cnn => {
            let w = var(&vars, "conv1.weight")?;
            let values = to_f32(w)?;
            let filters = w.size()[0] as usize;
            let grid = ImageGrid {
                title: format!("{run_name}: the {filters} first-layer filters (conv1, 3×3)"),
                tiles: (0..filters)
                    .map(|f| Tile { width: 3, height: 3, pixels: values[f * 9..(f + 1) * 9].to_vec(), caption: format!("{}", f + 1) })
                    .collect(),
                columns: 8,
                zoom: 24,
                scale: TileScale::Diverging,
                note: "red: positive weight, blue: negative; each filter scaled to its largest |weight|".into(),
            };
            write("conv1_filters.png", figure::png(&grid))?;
            let samples = ACTIVATION_SAMPLES.min(n as usize);
            let images = data
                .test
                .images
                .narrow(0, 0, samples as i64)
                .to_device(device);
            let out = forward(config, &vars, &images)?;
            if let Some((a1, a2)) = out.conv_maps {
                for (layer, maps, zoom) in [(1, a1, 2u32), (2, a2, 4)] {
                    let size = maps.size();
                    let (channels, h, w) = (size[1] as usize, size[2] as usize, size[3] as usize);
                    let shown = ACTIVATION_CHANNELS.min(channels);
                    let values = to_f32(&maps)?;
                    let mut tiles = Vec::new();
                    for (s, label) in labels.iter().enumerate().take(samples) {
                        let input = digit(s, format!("input ({label})"));
                        tiles.push(Tile {
                            width: 28,
                            height: 28,
                            pixels: input.pixels,
                            caption: input.caption,
                        });
                        for c in 0..shown {
                            let off = (s * channels + c) * h * w;
                            tiles.push(Tile {
                                width: w,
                                height: h,
                                pixels: values[off..off + h * w].to_vec(),
                                caption: format!("ch {}", c + 1),
                            });
                        }
                    }
                    let grid = ImageGrid {
                        title: format!("{run_name}: conv{layer} activation maps (after ReLU), first {shown} of {channels} channels"),
                        tiles,
                        columns: shown + 1,
                        zoom,
                        scale: TileScale::Gray,
                        note: "one row per test digit (the first four of the test set); dark: strong activation".into(),
                    };
                    write(&format!("activations_conv{layer}.png"), figure::png(&grid))?;
                }
            }
        }
        ModelKind::Fc | ModelKind::FcScratch => {
            let w = var(&vars, "fc1.weight")?;
            let size = w.size();
            let (rows, cols) = (size[0] as usize, size[1] as usize);
            if cols == 784 {
                let values = to_f32(w)?;
                let shown = rows.min(64);
                let grid = ImageGrid {
                    title: format!("{run_name}: the first {shown} of {rows} fc1 weight rows as 28×28 images"),
                    tiles: (0..shown)
                        .map(|r| Tile { width: 28, height: 28, pixels: values[r * 784..(r + 1) * 784].to_vec(), caption: String::new() })
                        .collect(),
                    columns: 8,
                    zoom: 3,
                    scale: TileScale::Diverging,
                    note: "red: positive weight, blue: negative; each unit scaled to its largest |weight|".into(),
                };
                write("fc1_weights.png", figure::png(&grid))?;
            }
        }
    }

    let summary = AnalysisSummary {
        version: SUMMARY_VERSION,
        checkpoint: "checkpoints/best.safetensors".to_string(),
        test_samples: n as usize,
        accuracy: correct as f64 / (n.max(1) as f64),
        loss: losses.iter().map(|&l| f64::from(l)).sum::<f64>() / (n.max(1) as f64),
        confusion,
        per_class,
        top_failures: top,
        clusters,
        seconds: started.elapsed().as_secs_f64(),
    };
    let json =
        serde_json::to_vec_pretty(&summary).map_err(|e| TrainError::Analysis(e.to_string()))?;
    let path = dir.join(SUMMARY_FILE);
    checkpoint::write_atomic(&path, &json).map_err(|source| TrainError::Io { path, source })?;
    files.push(SUMMARY_FILE.to_string());
    Ok(AnalysisOutput {
        dir,
        files,
        summary,
    })
}
