//! The generated protocol code (src/generated/sweep.v1.rs) is checked in, so
//! that a build needs no protobuf compiler; this test compiles
//! `proto/sweep.proto` again (protox: pure Rust, no system `protoc`) and fails
//! when the checked-in file differs, so it cannot go stale.
//!
//! After changing the `.proto` (or the generator's settings below), rewrite it:
//!
//!     SWEEP_PROTO_REGENERATE=1 cargo test -p sweep-proto --test generated

use std::path::Path;

/// The file tonic-prost-build writes for package `sweep.v1`.
const GENERATED: &str = "sweep.v1.rs";

#[test]
fn checked_in_code_matches_the_proto() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = crate_dir.join("../../proto");
    let checked_in = crate_dir.join("src/generated").join(GENERATED);

    let fds = protox::compile([proto_dir.join("sweep.proto")], [&proto_dir])
        .expect("compiling proto/sweep.proto");
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        // The strict codec answers undecodable messages `invalid_argument`.
        .codec_path("crate::codec::StrictCodec")
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_fds(fds)
        .expect("generating the Rust code");
    let fresh = std::fs::read_to_string(out.path().join(GENERATED)).unwrap();

    if std::env::var_os("SWEEP_PROTO_REGENERATE").is_some() {
        std::fs::write(&checked_in, &fresh).unwrap();
        eprintln!("rewrote {}", checked_in.display());
        return;
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is not what proto/sweep.proto generates; rewrite it with \
         `SWEEP_PROTO_REGENERATE=1 cargo test -p sweep-proto --test generated` \
         and commit it",
        checked_in.display()
    );
}
