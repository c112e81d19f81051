//! The worker's build script: libtorch's run path, as every package that
//! links it (../train/link-libtorch.rs), and the git commit the binary is
//! built from, which each attempt's provenance records
//! (`SWEEPRUN_GIT_COMMIT`; `unknown` when built outside a git checkout, for
//! instance from a source archive; `-dirty` appended, as `git describe
//! --dirty` does, when tracked files differed from that commit, since the
//! commit alone would then name code that did not produce the results).

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

fn git_commit() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let commit = match git(&dir, &["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let changed = git(&dir, &["status", "--porcelain", "--untracked-files=no"]);
            format!("{commit}{}", if changed.is_some() { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=SWEEPRUN_GIT_COMMIT={commit}");
    // And when the code the worker is built from changes, so that `-dirty`
    // follows edits (cargo scans a directory for any change in it).
    if let Some(root) = git(&dir, &["rev-parse", "--show-toplevel"]) {
        for part in [
            "crates/worker",
            "crates/core",
            "crates/proto",
            "crates/train",
            "crates/startup",
            "proto",
            "Cargo.lock",
        ] {
            let path = Path::new(&root).join(part);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    // Run again when HEAD moves: HEAD itself (a checkout) and the branch it
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
