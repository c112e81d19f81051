//! The gRPC protocol between coordinator, workers and sweepctl.
//!
//! The generated types live in [`pb`]; domain types (from `sweep-core`) stay
//! separate, and [`convert`] moves between the two, validating what arrives
//! from the network (a missing field is an error, never a panic).
//! [`codec`] answers undecodable messages `invalid_argument`; [`auth`] adds
//! the bearer token to a client's requests; [`client`] connects workers and
//! sweepctl alike (address forms, TLS, token).

/// Generated from `proto/sweep.proto` by tonic-prost-build, and checked in
/// (src/generated/sweep.v1.rs) so that building the workspace compiles no
/// protobuf compiler: installing the light `sweepctl` took a minute longer
/// with one (BENCHMARKS.md, "Installing the light client"). The test
/// `tests/generated.rs` regenerates it and fails when it differs; after a
/// change to the `.proto`, rewrite it with
/// `SWEEP_PROTO_REGENERATE=1 cargo test -p sweep-proto --test generated`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!("generated/sweep.v1.rs");
}

pub mod auth;
pub mod client;
pub mod codec;
pub mod convert;

pub use pb::coordinator_client::CoordinatorClient;
pub use pb::coordinator_server::{Coordinator, CoordinatorServer};

/// Version of the protocol, exchanged in `RegisterWorker`. Bump it on any
/// change an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 1;

/// Size of the data chunks of streamed files: well under tonic's default
/// 4 MiB message limit, large enough that per-message overhead is negligible.
pub const CHUNK_SIZE: usize = 1 << 20;
