//! Chunked file transfers with the coordinator: every file arrives as a
//! header (name, size, SHA-256) and data chunks, and is written to a
//! temporary name and renamed only once its size and hash check out.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sweep_core::names;
use sweep_proto::{CHUNK_SIZE, pb};
use tonic::{Status, Streaming};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Status(#[from] Status),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Receives every file of `stream` into `dir`. Returns their names.
pub async fn receive_files(
    mut stream: Streaming<pb::FileChunk>,
    dir: &Path,
) -> Result<Vec<String>, TransferError> {
    use pb::file_chunk::Kind;
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    let mut done = Vec::new();
    let mut current: Option<(pb::FileHeader, Vec<u8>)> = None;
    while let Some(chunk) = stream.message().await? {
        match chunk.kind {
            Some(Kind::Header(header)) => {
                if let Some((header, data)) = current.take() {
                    done.push(finish(dir, header, data).await?);
                }
                names::validate("file name", &header.name)
                    .map_err(|e| TransferError::Corrupt(e.to_string()))?;
                current = Some((header, Vec::new()));
            }
            Some(Kind::Data(data)) => {
                let Some((header, buffer)) = current.as_mut() else {
                    return Err(TransferError::Corrupt("data before any file header".into()));
                };
                if buffer.len() as u64 + data.len() as u64 > header.size {
                    return Err(TransferError::Corrupt(format!(
                        "{} is longer than its declared {} bytes",
                        header.name, header.size
                    )));
                }
                buffer.extend_from_slice(&data);
            }
            None => return Err(TransferError::Corrupt("empty chunk".into())),
        }
    }
    if let Some((header, data)) = current.take() {
        done.push(finish(dir, header, data).await?);
    }
    Ok(done)
}

async fn finish(
    dir: &Path,
    header: pb::FileHeader,
    data: Vec<u8>,
) -> Result<String, TransferError> {
    let sha = hex::encode(Sha256::digest(&data));
    if data.len() as u64 != header.size || sha != header.sha256 {
        return Err(TransferError::Corrupt(format!(
            "{}: got {} bytes with SHA-256 {sha}, expected {} bytes with {}",
            header.name,
            data.len(),
            header.size,
            header.sha256
        )));
    }
    let path = dir.join(&header.name);
    let tmp = dir.join(format!("{}.part", header.name));
    tokio::fs::write(&tmp, &data).await.map_err(io(&tmp))?;
    tokio::fs::rename(&tmp, &path).await.map_err(io(&path))?;
    Ok(header.name)
}

/// The messages of one upload: header, then the data in chunks.
pub fn upload_messages(
    worker_id: &str,
    job_id: &str,
    attempt: u32,
    name: &str,
    data: &[u8],
) -> Vec<pb::UploadArtifactRequest> {
    use pb::upload_artifact_request::Kind;
    let header = pb::UploadArtifactHeader {
        worker_id: worker_id.to_string(),
        job_id: job_id.to_string(),
        attempt,
        file: Some(pb::FileHeader {
            name: name.to_string(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        }),
    };
    let mut messages = vec![pb::UploadArtifactRequest {
        kind: Some(Kind::Header(header)),
    }];
    messages.extend(data.chunks(CHUNK_SIZE).map(|c| pb::UploadArtifactRequest {
        kind: Some(Kind::Data(c.to_vec())),
    }));
    messages
}
