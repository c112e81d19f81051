//! The coordinator's errors and their one mapping to gRPC status codes, so
//! that every handler answers the same way for the same kind of failure.

use std::path::PathBuf;

use sweep_core::config::ConfigError;
use sweep_core::names::NameError;
use sweep_core::sweep::SweepError;
use sweep_proto::convert::ConvertError;

use crate::auth::{AuthError, AuthSetupError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// A request that is malformed in itself (missing field, bad value).
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    BadName(#[from] NameError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// A submitted config that does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sweep that does not load (`--config`) or does not validate (SubmitSweep).
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error("{0}")]
    NotFound(String),
    /// A request turned away by the token check.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Tokens missing or inconsistent at start (never a request's answer).
    #[error(transparent)]
    AuthSetup(#[from] AuthSetupError),
    /// A request over one of the limits (`crate::limits`).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A request that is well formed but not valid now: a stale attempt, a
    /// protocol mismatch, a sweep resubmitted with other jobs.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Internal(String),
}

impl CoordinatorError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CoordinatorError {
        let path = path.into();
        move |source| CoordinatorError::Io { path, source }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(err: CoordinatorError) -> Self {
        use CoordinatorError as E;
        let message = err.to_string();
        match err {
            E::InvalidArgument(_) | E::BadName(_) | E::Convert(_) | E::Config(_) | E::Sweep(_) => {
                tonic::Status::invalid_argument(message)
            }
            E::NotFound(_) => tonic::Status::not_found(message),
            E::Auth(AuthError::Forbidden { .. }) => tonic::Status::permission_denied(message),
            E::Auth(_) => tonic::Status::unauthenticated(message),
            E::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            E::AuthSetup(_) => tonic::Status::failed_precondition(message),
            E::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            E::Db(_) | E::Io { .. } | E::Transport(_) | E::Internal(_) => {
                tracing::error!(error = %message, "internal error answering a request");
                tonic::Status::internal(message)
            }
        }
    }
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
