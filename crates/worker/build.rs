//! The worker's build script: libtorch's run path, as every package that
//! links it (../train/link-libtorch.rs), and the git commit the binary is
//! built from, which each attempt's provenance records
//! (`SWEEPRUN_GIT_COMMIT`; `unknown` when built outside a git checkout, for
//! instance from a source archive; `-dirty` appended, as `git describe
//! --dirty` does, when the worker's sources differed from that commit, since
//! the commit alone would then name code that did not produce the results).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../train/link-libtorch.rs"]
mod link_libtorch;

fn main() {
    link_libtorch::main();
    git_commit();
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// What the worker binary is built from, relative to the repository root:
/// `-dirty` looks only at these, and a change to any of them reruns this
/// script (cargo scans a directory for any change in it).
const SOURCES: [&str; 15] = [
    "Cargo.toml",
    "Cargo.lock",
    "proto",
    "crates/worker/src",
    "crates/worker/Cargo.toml",
    "crates/worker/build.rs",
    "crates/core/src",
    "crates/core/Cargo.toml",
    "crates/proto/src",
    "crates/proto/Cargo.toml",
    "crates/train/src",
    "crates/train/Cargo.toml",
    "crates/train/link-libtorch.rs",
    "crates/startup/src",
    "crates/startup/Cargo.toml",
];

fn git_commit() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let root = git(&dir, &["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let commit = match (git(&dir, &["rev-parse", "--short=12", "HEAD"]), &root) {
        (Some(commit), Some(root)) => {
            // --no-optional-locks: a `git commit` during the build must not
            // find the index locked by this.
            let mut args = vec![
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
            ];
            args.extend(SOURCES);
            let changed = git(root, &args);
            format!("{commit}{}", if changed.is_some() { "-dirty" } else { "" })
        }
        _ => "unknown".into(),
    };
    println!("cargo:rustc-env=SWEEPRUN_GIT_COMMIT={commit}");
    if let Some(root) = &root {
        for source in SOURCES {
            let path = root.join(source);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    // And when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit). Only files that exist: cargo would rerun on every
    // build for a missing one (a branch held in packed-refs).
    let mut watched = vec![git(&dir, &["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&dir, &["rev-parse", "--git-path", &branch]));
    }
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
