//! MNIST and Fashion-MNIST in IDX format, loaded whole into memory (the
//! training set is 47 MB of bytes), verified, normalised and split.
//!
//! The loader accepts the layouts people already have on disk: the four files
//! (raw or `.gz`) directly in the data directory, or torchvision's
//! `MNIST/raw/` and `FashionMNIST/raw/`. The decompressed bytes are checked
//! against the canonical SHA-256 sums, so a corrupt download is caught before
//! any training starts.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sweep_core::config::{DataConfig, DatasetKind};
use tch::{Device, Kind, Tensor};

use crate::rng::SplitMix64;

/// Where a dataset lives when the config names no `data_dir`.
pub fn default_data_dir(dataset: DatasetKind) -> PathBuf {
    match dataset {
        DatasetKind::Mnist => PathBuf::from("./data/mnist"),
        DatasetKind::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "{dataset}: no {file}[.gz] in {dir} (nor in its torchvision layout {torchvision}/raw/)"
    )]
    Missing {
        dataset: &'static str,
        file: &'static str,
        dir: PathBuf,
        torchvision: &'static str,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: SHA-256 of the decompressed bytes is {actual}, expected {expected} (the file is corrupt or not the canonical dataset)"
    )]
    Checksum {
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}

/// The four files of a dataset with the SHA-256 of their decompressed bytes.
struct DatasetFiles {
    name: &'static str,
    /// Folder name of torchvision's layout (`<root>/<folder>/raw/...`).
    torchvision: &'static str,
    train_images: (&'static str, &'static str),
    train_labels: (&'static str, &'static str),
    test_images: (&'static str, &'static str),
    test_labels: (&'static str, &'static str),
}

const MNIST: DatasetFiles = DatasetFiles {
    name: "mnist",
    torchvision: "MNIST",
    train_images: (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    train_labels: (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    test_images: (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    test_labels: (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
};

const FASHION_MNIST: DatasetFiles = DatasetFiles {
    name: "fashion-mnist",
    torchvision: "FashionMNIST",
    train_images: ("train-images-idx3-ubyte", FASHION_SHA256[0]),
    train_labels: ("train-labels-idx1-ubyte", FASHION_SHA256[1]),
    test_images: ("t10k-images-idx3-ubyte", FASHION_SHA256[2]),
    test_labels: ("t10k-labels-idx1-ubyte", FASHION_SHA256[3]),
};

/// SHA-256 of the decompressed canonical Fashion-MNIST files (train images,
/// train labels, test images, test labels), as Zalando publishes them
/// (and Debian packages them in `dataset-fashion-mnist`).
const FASHION_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// Mean and standard deviation of MNIST pixels in [0, 1]: the normalisation
/// the original PyTorch project (and most MNIST code) applies.
const PIXEL_MEAN: f64 = 0.1307;
const PIXEL_STD: f64 = 0.3081;

/// Images `[N, 1, 28, 28]` (float, normalised) and labels `[N]` (int64).
#[derive(Debug)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &Tensor) -> Split {
        Split {
            images: self.images.index_select(0, indices),
            labels: self.labels.index_select(0, indices),
        }
    }

    pub fn to_device(&self, device: Device) -> Split {
        Split {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }
}

/// The 60k training pool and the 10k test set, as stored on disk.
#[derive(Debug)]
pub struct Dataset {
    pub train_pool: Split,
    pub test: Split,
}

/// Train, validation and test sets of one run.
#[derive(Debug)]
pub struct RunData {
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

/// The four files of a dataset and the SHA-256 of their decompressed content:
/// exactly what [`Dataset::load`] verifies, so a run that loaded the dataset
/// trained on these bytes (a run's provenance lists them).
pub fn canonical_files(kind: DatasetKind) -> [(&'static str, &'static str); 4] {
    let files = match kind {
        DatasetKind::Mnist => &MNIST,
        DatasetKind::FashionMnist => &FASHION_MNIST,
    };
    [
        files.train_images,
        files.train_labels,
        files.test_images,
        files.test_labels,
    ]
}

impl Dataset {
    /// Loads and verifies a dataset from `dir` (see the module doc for the layouts).
    pub fn load(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
        let files = match kind {
            DatasetKind::Mnist => &MNIST,
            DatasetKind::FashionMnist => &FASHION_MNIST,
        };
        let read =
            |(file, sha): (&'static str, &'static str)| -> Result<(PathBuf, Vec<u8>), DataError> {
                let path = find_file(files, dir, file)?;
                let bytes = read_maybe_gz(&path)?;
                verify_sha256(&path, &bytes, sha)?;
                Ok((path, bytes))
            };
        let train_pool = decode_split(read(files.train_images)?, read(files.train_labels)?)?;
        let test = decode_split(read(files.test_images)?, read(files.test_labels)?)?;
        Ok(Dataset { train_pool, test })
    }

    /// The seeded train/validation split of the training pool (48k/12k for
    /// `train_split: 0.8`), optionally cut down to `data.subset` first. The same
    /// seed always yields the same split, whatever else the run does.
    pub fn split(&self, data: &DataConfig, seed: u64) -> RunData {
        let pool_len = self.train_pool.len() as usize;
        let mut order: Vec<i64> = (0..pool_len as i64).collect();
        SplitMix64::new(seed ^ SPLIT_STREAM).shuffle(&mut order);
        let (pool_take, test_take) = match &data.subset {
            Some(subset) => (
                subset.train.min(pool_len),
                subset.test.min(self.test.len() as usize),
            ),
            None => (pool_len, self.test.len() as usize),
        };
        order.truncate(pool_take);
        let n_train = ((pool_take as f64) * data.train_split).round() as usize;
        let n_train = n_train.clamp(1, pool_take.saturating_sub(1).max(1));
        let train_idx = Tensor::from_slice(&order[..n_train]);
        let val_idx = Tensor::from_slice(&order[n_train..]);
        let test = if test_take == self.test.len() as usize {
            Split {
                images: self.test.images.shallow_clone(),
                labels: self.test.labels.shallow_clone(),
            }
        } else {
            self.test.select(&Tensor::arange(
                test_take as i64,
                (Kind::Int64, Device::Cpu),
            ))
        };
        RunData {
            train: self.train_pool.select(&train_idx),
            val: self.train_pool.select(&val_idx),
            test,
        }
    }
}

/// Keeps the split's random stream apart from the per-epoch shuffles, which
/// are seeded from the same run seed.
const SPLIT_STREAM: u64 = 0x5EED_5B17_u64;

fn find_file(files: &DatasetFiles, dir: &Path, stem: &'static str) -> Result<PathBuf, DataError> {
    let raw_dir = dir.join(files.torchvision).join("raw");
    for base in [dir, raw_dir.as_path()] {
        for name in [stem.to_string(), format!("{stem}.gz")] {
            let path = base.join(name);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(DataError::Missing {
        dataset: files.name,
        file: stem,
        dir: dir.to_path_buf(),
        torchvision: files.torchvision,
    })
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io_err = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not a valid gzip stream (truncated download?): {e}"),
        })?;
    Ok(out)
}

fn verify_sha256(path: &Path, bytes: &[u8], expected: &'static str) -> Result<(), DataError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Parses an IDX file: magic (0, 0, type 0x08 = u8, number of dimensions),
/// then one big-endian u32 per dimension, then the data.
fn parse_idx(
    path: &Path,
    bytes: &[u8],
    expected_dims: usize,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 4
        || bytes[0] != 0
        || bytes[1] != 0
        || bytes[2] != 0x08
        || bytes[3] as usize != expected_dims
    {
        return Err(corrupt(format!(
            "wrong IDX magic number {:02x?}: expected [00, 00, 08, {expected_dims:02x}]",
            &bytes[..bytes.len().min(4)]
        )));
    }
    let header_len = 4 + 4 * expected_dims;
    if bytes.len() < header_len {
        return Err(corrupt(format!(
            "truncated IDX header ({} bytes)",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected_len: usize = dims.iter().product();
    let data = &bytes[header_len..];
    if data.len() != expected_len {
        return Err(corrupt(format!(
            "truncated or oversized: header promises {expected_len} bytes of data for dimensions {dims:?}, file has {}",
            data.len()
        )));
    }
    Ok((dims, data.to_vec()))
}

fn decode_split(
    images: (PathBuf, Vec<u8>),
    labels: (PathBuf, Vec<u8>),
) -> Result<Split, DataError> {
    let (image_dims, pixels) = parse_idx(&images.0, &images.1, 3)?;
    let (label_dims, label_bytes) = parse_idx(&labels.0, &labels.1, 1)?;
    if image_dims[1..] != [28, 28] {
        return Err(DataError::Corrupt {
            path: images.0,
            reason: format!("images are {image_dims:?}, expected N×28×28"),
        });
    }
    if label_dims[0] != image_dims[0] {
        return Err(DataError::Corrupt {
            path: labels.0,
            reason: format!("{} labels for {} images", label_dims[0], image_dims[0]),
        });
    }
    if let Some(bad) = label_bytes.iter().find(|&&l| l > 9) {
        return Err(DataError::Corrupt {
            path: labels.0,
            reason: format!("label {bad} is outside 0..=9"),
        });
    }
    let n = image_dims[0] as i64;
    let images = Tensor::from_slice(&pixels)
        .view([n, 1, 28, 28])
        .to_kind(Kind::Float)
        .divide_scalar(255.0)
        .f_sub_scalar(PIXEL_MEAN)?
        .f_div_scalar(PIXEL_STD)?;
    let labels = Tensor::from_slice(&label_bytes).to_kind(Kind::Int64);
    Ok(Split { images, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic_dims: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, magic_dims];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_a_well_formed_idx_file() {
        let bytes = idx(1, &[3], &[1, 2, 3]);
        let (dims, data) = parse_idx(Path::new("x"), &bytes, 1).unwrap();
        assert_eq!(dims, vec![3]);
        assert_eq!(data, vec![1, 2, 3]);
    }

    #[test]
    fn wrong_magic_and_truncation_name_the_file() {
        let err = parse_idx(Path::new("labels.idx"), &[0, 0, 9, 1, 0, 0, 0, 1, 5], 1).unwrap_err();
        assert!(
            err.to_string().starts_with("labels.idx: wrong IDX magic"),
            "{err}"
        );
        let err = parse_idx(Path::new("labels.idx"), &idx(1, &[4], &[1, 2]), 1).unwrap_err();
        assert!(err.to_string().contains("labels.idx: truncated"), "{err}");
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::load(DatasetKind::Mnist, dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte")
                && msg.contains(&dir.path().display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_bytes_fail_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx(3, &[1, 28, 28], &[0; 784]),
        )
        .unwrap();
        let err = Dataset::load(DatasetKind::Mnist, dir.path()).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    }
}
