//! Compiles `proto/sweep.proto` with protox (pure Rust), so that no system
//! `protoc` is needed anywhere the workspace builds.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a target directory
    // copied from another checkout must not compile that checkout's proto.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_dir = std::path::Path::new(&manifest_dir).join("../../proto");
    let file = proto_dir.join("sweep.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_dir])?;
    // The strict codec answers undecodable messages `invalid_argument`.
    tonic_prost_build::configure()
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
