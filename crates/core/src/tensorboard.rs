//! A minimal TensorBoard event-file writer, so that `tensorboard --logdir runs`
//! shows every run's curves without linking TensorFlow or pulling an
//! unmaintained crate.
//!
//! An event file is a TFRecord stream of serialized `tensorflow.Event` protos.
//! Only the handful of fields that scalars need are declared here, with the
//! field numbers of `tensorflow/core/util/event.proto` and
//! `tensorflow/core/framework/summary.proto`; readers skip nothing they need
//! and ignore nothing we write.
//!
//! Each record is framed as
//!
//! ```text
//! u64 LE  length
//! u32 LE  masked CRC32C of the 8 length bytes
//! [u8]    data (one serialized Event)
//! u32 LE  masked CRC32C of the data
//! ```
//!
//! [`read_scalars`] reads the files back, checking both checksums, so that tests
//! anywhere in the project can assert on what a run logged.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

/// The version string TensorBoard expects in the first event of a file.
const FILE_VERSION: &str = "brain.Event:2";

/// Length of the record header: the length itself and its masked CRC.
const HEADER_LEN: usize = 8 + 4;
/// Length of the record footer: the data's masked CRC.
const FOOTER_LEN: usize = 4;

/// `tensorflow.Event`, reduced to what scalar logging uses.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5")]
    pub what: Option<event::What>,
}

pub mod event {
    /// The `what` oneof of `tensorflow.Event`; the graph, log message and other
    /// members are left out.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`, scalars only.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Declared `optional` because in the real proto it is a member of a oneof,
    /// which is always written; a plain proto3 float would silently drop 0.0
    /// and TensorBoard would not see the point at all.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// One scalar point as read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub tag: String,
    pub step: i64,
    /// TensorBoard stores scalars as 32-bit floats.
    pub value: f32,
}

/// Appends scalar summaries to a fresh event file in one directory.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file inside it named like
    /// TensorFlow's own (`events.out.tfevents.{unix_seconds}.{hostname}.{pid}`),
    /// since TensorBoard only picks up files whose name contains `tfevents`.
    /// An existing file is never overwritten: should the name be taken (two
    /// writers for one directory within a second), a numeric suffix is added.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = format!(
            "events.out.tfevents.{seconds}.{}.{}",
            crate::run_dir::hostname().replace(['/', '\\'], "_"),
            std::process::id()
        );
        let (path, file) = create_unique(dir, &base)?;
        let mut writer = EventWriter {
            path,
            file: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(event::What::FileVersion(FILE_VERSION.to_string())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `value` under `tag` at `step` and flushes, so that a crash loses no
    /// epoch and a live TensorBoard sees the point at once (epochs are rare
    /// enough for a flush each to cost nothing).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: i64) -> io::Result<()> {
        self.write_scalar(tag, value, step)?;
        self.flush()
    }

    /// One epoch's scalars, under the tags every run uses (local runs and the
    /// coordinator's alike), so all runs compare in one TensorBoard; flushed
    /// together (one write for the epoch, which counts under a fleet's load).
    pub fn add_epoch(&mut self, m: &crate::metrics::EpochMetrics) -> io::Result<()> {
        let step = i64::from(m.epoch);
        self.write_scalar("loss/train", m.train_loss, step)?;
        self.write_scalar("loss/val", m.val_loss, step)?;
        self.write_scalar("accuracy/train", m.train_acc, step)?;
        self.write_scalar("accuracy/val", m.val_acc, step)?;
        self.write_scalar("lr", m.lr, step)?;
        self.write_scalar("epoch_seconds", m.seconds, step)?;
        self.flush()
    }

    /// The final test metrics, at the step of the last epoch.
    pub fn add_test(&mut self, test: &crate::metrics::TestMetrics, step: u32) -> io::Result<()> {
        self.write_scalar("test/loss", test.test_loss, i64::from(step))?;
        self.write_scalar("test/accuracy", test.test_acc, i64::from(step))?;
        self.flush()
    }

    /// Pushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn write_scalar(&mut self, tag: &str, value: f64, step: i64) -> io::Result<()> {
        let summary = Summary {
            value: vec![SummaryValue {
                tag: tag.to_string(),
                simple_value: Some(value as f32),
            }],
        };
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(event::What::Summary(summary)),
        })
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        self.file.write_all(&len)?;
        self.file.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.file.write_all(&data)?;
        self.file.write_all(&masked_crc32c(&data).to_le_bytes())
    }
}

/// Reads every scalar summary from one event file, in file order, verifying the
/// framing and both checksums of every record. A corrupt or truncated record is
/// an [`io::ErrorKind::InvalidData`] error rather than a silently shorter list.
pub fn read_scalars(path: &Path) -> io::Result<Vec<Scalar>> {
    let bytes = fs::read(path)?;
    let mut rest = bytes.as_slice();
    let mut scalars = Vec::new();
    let mut offset = 0usize;
    while !rest.is_empty() {
        let (data, used) = read_record(rest).map_err(|msg| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: record at byte {offset}: {msg}", path.display()),
            )
        })?;
        let event = Event::decode(data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: event at byte {offset}: {e}", path.display()),
            )
        })?;
        if let Some(event::What::Summary(summary)) = event.what {
            scalars.extend(summary.value.into_iter().filter_map(|v| {
                v.simple_value.map(|value| Scalar {
                    tag: v.tag,
                    step: event.step,
                    value,
                })
            }));
        }
        rest = &rest[used..];
        offset += used;
    }
    Ok(scalars)
}

/// Splits the first record off `buf`, returning its data and the number of
/// bytes the whole record occupies.
fn read_record(buf: &[u8]) -> Result<(&[u8], usize), String> {
    let Some((header, after_header)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "truncated header ({} of {HEADER_LEN} bytes)",
            buf.len()
        ));
    };
    let (len_bytes, len_crc) = header.split_at(8);
    if masked_crc32c(len_bytes).to_le_bytes() != len_crc {
        return Err("length checksum mismatch".to_string());
    }
    let len = u64::from_le_bytes(len_bytes.try_into().expect("split_at(8) yields 8 bytes"));
    // Compare before converting so that a huge length cannot overflow or
    // make us allocate: the data must already be in the buffer.
    let available = after_header.len() as u64;
    if len.saturating_add(FOOTER_LEN as u64) > available {
        return Err(format!(
            "truncated record (length {len} plus checksum, {available} bytes left)"
        ));
    }
    let len = len as usize;
    let (data, after_data) = after_header.split_at(len);
    if masked_crc32c(data).to_le_bytes() != after_data[..FOOTER_LEN] {
        return Err("data checksum mismatch".to_string());
    }
    Ok((data, HEADER_LEN + len + FOOTER_LEN))
}

/// The CRC32C (Castagnoli) of `data`, masked as TFRecord does: a CRC stored
/// next to data that itself holds CRCs is otherwise prone to degenerate cases.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c::crc32c(data))
}

fn mask(crc: u32) -> u32 {
    // TFRecord's `((crc >> 15) | (crc << 17)) + 0xa282ead8`.
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Creates `dir/base`, or `dir/base.1`, `dir/base.2`, ... if taken.
fn create_unique(dir: &Path, base: &str) -> io::Result<(PathBuf, File)> {
    let mut suffix = 0u32;
    loop {
        let name = if suffix == 0 {
            base.to_string()
        } else {
            format!("{base}.{suffix}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && suffix < 1000 => suffix += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_of_known_vector() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // Reference values from TensorBoard's own pure-Python `masked_crc32c`.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(&0u64.to_le_bytes()), 0x0798_0329);
    }

    #[test]
    fn writes_then_reads_back_including_zero() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("sweep/variant/seed-1");
        let mut writer = EventWriter::create(&run_dir).unwrap();
        writer.add_scalar("loss/train", 0.5, 1).unwrap();
        writer.add_scalar("loss/train", 0.0, 2).unwrap();
        writer.add_scalar("acc/val", 0.975, 2).unwrap();
        let path = writer.path().to_path_buf();
        drop(writer);

        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(
            name.ends_with(&format!(".{}", std::process::id())),
            "{name}"
        );
        assert_eq!(path.parent().unwrap(), run_dir);

        let scalars = read_scalars(&path).unwrap();
        assert_eq!(
            scalars,
            vec![
                Scalar {
                    tag: "loss/train".into(),
                    step: 1,
                    value: 0.5
                },
                Scalar {
                    tag: "loss/train".into(),
                    step: 2,
                    value: 0.0
                },
                Scalar {
                    tag: "acc/val".into(),
                    step: 2,
                    value: 0.975
                },
            ]
        );
    }

    #[test]
    fn first_record_is_the_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let writer = EventWriter::create(dir.path()).unwrap();
        let bytes = fs::read(writer.path()).unwrap();
        let (data, used) = read_record(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let event = Event::decode(data).unwrap();
        assert_eq!(
            event.what,
            Some(event::What::FileVersion(FILE_VERSION.to_string()))
        );
    }

    #[test]
    fn second_writer_in_same_dir_does_not_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = EventWriter::create(dir.path()).unwrap();
        let mut b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        a.add_scalar("x", 1.0, 1).unwrap();
        b.add_scalar("x", 2.0, 1).unwrap();
        assert_eq!(read_scalars(a.path()).unwrap()[0].value, 1.0);
        assert_eq!(read_scalars(b.path()).unwrap()[0].value, 2.0);
    }

    fn written_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        writer.add_scalar("loss/train", 1.25, 7).unwrap();
        let path = writer.path().to_path_buf();
        (dir, path)
    }

    #[test]
    fn every_corrupted_byte_is_detected() {
        let (_dir, path) = written_file();
        let original = fs::read(&path).unwrap();
        for i in 0..original.len() {
            let mut bytes = original.clone();
            bytes[i] ^= 0x01;
            fs::write(&path, &bytes).unwrap();
            let err = read_scalars(&path).expect_err(&format!("flipped byte {i} went unnoticed"));
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "byte {i}: {err}");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let (_dir, path) = written_file();
        let original = fs::read(&path).unwrap();
        let (_, first_len) = read_record(&original).unwrap();
        for cut in (1..original.len()).filter(|&cut| cut != first_len) {
            fs::write(&path, &original[..cut]).unwrap();
            let err = read_scalars(&path).expect_err(&format!("cut at {cut} went unnoticed"));
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn huge_length_is_rejected_without_allocating() {
        let len = u64::MAX.to_le_bytes();
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.out.tfevents.bad");
        fs::write(&path, bytes).unwrap();
        assert_eq!(
            read_scalars(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
