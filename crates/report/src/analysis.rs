//! What the analysis of one run's best checkpoint found, in the shape
//! `analysis/summary.json` stores it, and the arithmetic on predictions that
//! needs no libtorch: the confusion matrix, per-class precision / recall / F1
//! and the worst failures. The trainer (crates/train) computes predictions and
//! embeddings and calls these; the sweep report reads the summaries back.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Name of the summary file inside a run's `analysis/` directory.
pub const SUMMARY_FILE: &str = "summary.json";
/// Name of the analysis directory inside a run directory.
pub const ANALYSIS_DIR: &str = "analysis";
/// How many of the highest-loss test samples the summary keeps.
pub const TOP_FAILURES: usize = 25;
/// Version of the summary's format; bumped on incompatible changes.
pub const SUMMARY_VERSION: u32 = 1;

/// One test sample's outcome under the analysed checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Index of the sample in the test set (after any configured subset).
    pub index: usize,
    pub label: u8,
    pub predicted: u8,
    /// Cross-entropy loss of this sample.
    pub loss: f64,
    /// Softmax probability of the predicted class.
    pub confidence: f64,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub class: u8,
    /// Test samples whose label is this class.
    pub support: u64,
    /// Of the samples predicted as this class, the fraction labelled so
    /// (0 when the class is never predicted).
    pub precision: f64,
    /// Of the samples labelled this class, the fraction predicted so: the
    /// per-class accuracy (0 without support).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
}

/// A (true, predicted) pair and how often it occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCount {
    pub label: u8,
    pub predicted: u8,
    pub count: u64,
}

/// One cluster of misclassified samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureCluster {
    pub id: usize,
    pub size: usize,
    /// The most frequent (true, predicted) pairs, most frequent first (at most 5).
    pub pairs: Vec<PairCount>,
    /// Test-set indices of the members nearest the centroid, nearest first (at most 8).
    pub typical: Vec<usize>,
}

/// How the failures were clustered, and what came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureClusters {
    /// Misclassified samples that were clustered.
    pub failures: usize,
    /// The layer whose activations were the embedding ("fc2 input (128)", ...).
    pub embedding: String,
    /// Dimensions kept by PCA.
    pub pca_dims: usize,
    /// Fraction of the embedding's variance the kept dimensions explain.
    pub explained_variance: f64,
    pub k: usize,
    /// Why this k (the rule that chose it).
    pub k_rule: String,
    pub seed: u64,
    pub clusters: Vec<FailureCluster>,
}

/// `analysis/summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSummary {
    pub version: u32,
    /// The checkpoint analysed, relative to the run directory.
    pub checkpoint: String,
    pub test_samples: usize,
    pub accuracy: f64,
    /// Mean cross-entropy over the test set.
    pub loss: f64,
    /// `confusion[true][predicted]` = count.
    pub confusion: Vec<Vec<u64>>,
    pub per_class: Vec<ClassScores>,
    /// The highest-loss test samples, highest first.
    pub top_failures: Vec<Prediction>,
    /// `None` when there were too few failures to cluster.
    pub clusters: Option<FailureClusters>,
    /// Wall-clock seconds the analysis took (evaluation, clustering, figures).
    pub seconds: f64,
}

/// Reading or checking a summary file failed.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an analysis summary: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl AnalysisSummary {
    /// Reads and checks `analysis/summary.json` (the path given in full).
    pub fn load(path: &Path) -> Result<Self, SummaryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SummaryError::Io {
            path: shown.clone(),
            source,
        })?;
        let summary: AnalysisSummary =
            serde_json::from_str(&text).map_err(|source| SummaryError::Parse {
                path: shown.clone(),
                source,
            })?;
        let k = summary.confusion.len();
        let invalid = |message: String| SummaryError::Invalid {
            path: shown.clone(),
            message,
        };
        if summary.version != SUMMARY_VERSION {
            return Err(invalid(format!(
                "version {}, expected {SUMMARY_VERSION}",
                summary.version
            )));
        }
        if k == 0 || summary.confusion.iter().any(|row| row.len() != k) {
            return Err(invalid("confusion: not a square, non-empty matrix".into()));
        }
        if summary.per_class.len() != k {
            return Err(invalid(format!(
                "per_class: {} entries for {k} classes",
                summary.per_class.len()
            )));
        }
        Ok(summary)
    }
}

/// `confusion[true][predicted]` over `classes` classes; labels or predictions
/// outside the classes are an error naming the sample.
pub fn confusion_matrix(
    predictions: &[Prediction],
    classes: usize,
) -> Result<Vec<Vec<u64>>, String> {
    let mut matrix = vec![vec![0u64; classes]; classes];
    for p in predictions {
        let (t, q) = (usize::from(p.label), usize::from(p.predicted));
        if t >= classes || q >= classes {
            return Err(format!(
                "sample {}: label {t} / prediction {q} outside the {classes} classes",
                p.index
            ));
        }
        matrix[t][q] += 1;
    }
    Ok(matrix)
}

/// Per-class precision, recall and F1 from a confusion matrix.
pub fn class_scores(confusion: &[Vec<u64>]) -> Vec<ClassScores> {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (0..confusion.len())
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                class: c as u8,
                support,
                precision,
                recall,
                f1,
            }
        })
        .collect()
}

/// The `n` misclassified samples with the highest loss, highest first (ties by
/// index, so the order is deterministic).
pub fn top_failures(predictions: &[Prediction], n: usize) -> Vec<Prediction> {
    let mut failures: Vec<Prediction> = predictions
        .iter()
        .filter(|p| p.label != p.predicted)
        .copied()
        .collect();
    failures.sort_by(|a, b| b.loss.total_cmp(&a.loss).then(a.index.cmp(&b.index)));
    failures.truncate(n);
    failures
}

/// Element-wise sum of confusion matrices of the same shape (over seeds);
/// `None` when the shapes differ or there are none.
pub fn sum_confusions<'a>(
    matrices: impl IntoIterator<Item = &'a Vec<Vec<u64>>>,
) -> Option<Vec<Vec<u64>>> {
    let mut total: Option<Vec<Vec<u64>>> = None;
    for m in matrices {
        match &mut total {
            None => total = Some(m.clone()),
            Some(t) => {
                if t.len() != m.len() || t.iter().zip(m).any(|(a, b)| a.len() != b.len()) {
                    return None;
                }
                for (ra, rb) in t.iter_mut().zip(m) {
                    for (a, b) in ra.iter_mut().zip(rb) {
                        *a += b;
                    }
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(index: usize, label: u8, predicted: u8, loss: f64) -> Prediction {
        Prediction {
            index,
            label,
            predicted,
            loss,
            confidence: 0.5,
        }
    }

    #[test]
    fn always_three_confusion_by_hand() {
        // Labels 0..9 twice; the model always answers 3.
        let preds: Vec<_> = (0..20).map(|i| p(i, (i % 10) as u8, 3, 1.0)).collect();
        let m = confusion_matrix(&preds, 10).unwrap();
        for (t, row) in m.iter().enumerate() {
            for (q, &count) in row.iter().enumerate() {
                assert_eq!(count, if q == 3 { 2 } else { 0 }, "[{t}][{q}]");
            }
        }
        let scores = class_scores(&m);
        // Class 3: all 20 predicted, 2 right → precision 0.1, recall 1.
        assert_eq!(scores[3].precision, 0.1);
        assert_eq!(scores[3].recall, 1.0);
        assert!((scores[3].f1 - 2.0 * 0.1 / 1.1).abs() < 1e-15);
        // Every other class: never predicted, never right.
        for c in (0..10).filter(|&c| c != 3) {
            assert_eq!(
                (scores[c].precision, scores[c].recall, scores[c].f1),
                (0.0, 0.0, 0.0)
            );
            assert_eq!(scores[c].support, 2);
        }
        assert!(
            confusion_matrix(&[p(7, 10, 3, 0.0)], 10)
                .unwrap_err()
                .contains("sample 7")
        );
    }

    #[test]
    fn top_failures_sorted_by_loss() {
        let preds = vec![
            p(0, 1, 1, 9.0), // right: never a failure, whatever its loss
            p(1, 1, 2, 0.5),
            p(2, 3, 4, 4.0),
            p(3, 5, 6, 2.0),
            p(4, 7, 8, 4.0),
        ];
        let top = top_failures(&preds, 3);
        let order: Vec<usize> = top.iter().map(|p| p.index).collect();
        assert_eq!(order, [2, 4, 3], "by loss, ties by index");
        assert_eq!(top_failures(&preds, 25).len(), 4);
    }

    #[test]
    fn confusions_sum_and_refuse_other_shapes() {
        let a = vec![vec![1, 2], vec![3, 4]];
        let b = vec![vec![10, 20], vec![30, 40]];
        assert_eq!(
            sum_confusions([&a, &b]).unwrap(),
            vec![vec![11, 22], vec![33, 44]]
        );
        let c = vec![vec![1]];
        assert_eq!(sum_confusions([&a, &c]), None);
        assert_eq!(sum_confusions(std::iter::empty()), None);
    }
}
