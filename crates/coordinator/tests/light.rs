//! The coordinator links no libtorch (checked with `ldd` on the built binary):
//! it runs on a machine without PyTorch, and its image needs none.

use std::process::Command;

#[test]
fn coordinator_links_no_libtorch() {
    let binary = env!("CARGO_BIN_EXE_sweep-coordinator");
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd runs (Debian: libc-bin)");
    assert!(out.status.success(), "ldd {binary}: {out:?}");
    let libs = String::from_utf8_lossy(&out.stdout);
    for torch in ["libtorch", "libc10"] {
        assert!(
            !libs.contains(torch),
            "sweep-coordinator links {torch}; it must not:\n{libs}"
        );
    }
}
