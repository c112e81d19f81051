//! The light client: `sweepctl` links no libtorch (checked with `ldd` on the
//! built binary), runs from a directory of its own, and hands `train`,
//! `eval`, `analyze` and `bench` to `sweepctl-torch` with the arguments,
//! working directory and exit status intact, or says how to get it.

use std::path::Path;
use std::process::{Command, Output};

const SWEEPCTL: &str = env!("CARGO_BIN_EXE_sweepctl");

/// The shared libraries `ldd` lists for `binary`, one per line.
fn ldd(binary: &Path) -> String {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd runs (Debian: libc-bin)");
    assert!(out.status.success(), "ldd {}: {out:?}", binary.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `command`, retrying while the program file is still busy: a file just
/// written can be held open for a moment by a child that another test thread
/// forked (ETXTBSY), until that child execs.
fn output(command: &mut Command) -> Output {
    for _ in 0..50 {
        match command.output() {
            Err(err) if err.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result.expect("the program runs"),
        }
    }
    panic!("{command:?} stayed busy (ETXTBSY)");
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sweepctl_links_no_libtorch() {
    let libs = ldd(Path::new(SWEEPCTL));
    for torch in ["libtorch", "libc10"] {
        assert!(
            !libs.contains(torch),
            "sweepctl links {torch}; the light client must not:\n{libs}"
        );
    }
}

/// A copy of sweepctl alone in a directory, with no sweepctl-torch beside it
/// or on PATH: the client commands work, the torch ones say what to install.
#[test]
fn alone_it_runs_and_says_how_to_get_the_torch_commands() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sweepctl");
    std::fs::copy(SWEEPCTL, &copy).unwrap();
    let run = |args: &[&str]| {
        output(
            Command::new(&copy)
                .args(args)
                .env("PATH", "/usr/bin:/bin")
                .env_remove("SWEEPCTL_TORCH")
                .env_remove("LD_LIBRARY_PATH"),
        )
    };
    let help = run(&["--help"]);
    assert!(help.status.success(), "{}", text(&help));
    let help = String::from_utf8_lossy(&help.stdout);
    for command in ["train", "results", "watch", "status"] {
        assert!(help.contains(command), "{command} missing from\n{help}");
    }
    let out = run(&["train", "--config", "configs/baseline.yaml"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sweepctl-torch was not found"), "{err}");
    assert!(err.contains("SWEEPCTL_TORCH"), "{err}");
    assert!(
        err.contains("cargo install --path crates/sweepctl-torch"),
        "{err}"
    );
    // `report` is a light command; where there are no runs it says where it looked.
    let out = output(Command::new(&copy).arg("report").current_dir(dir.path()));
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runs: no such directory (give --runs"),
        "{err}"
    );
}

/// `SWEEPCTL_TORCH` names a stand-in script that echoes what it was given:
/// the subcommand and every argument (flags, `--help` included) arrive as
/// typed, in the same working directory, and its exit status is sweepctl's.
#[test]
fn torch_commands_are_passed_on_as_typed() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-torch");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"cwd=$(pwd)\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\nexit 7\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (command, args) in [
        ("train", vec!["--config", "a b.yaml", "--epochs", "2"]),
        ("eval", vec!["--run", "runs/x"]),
        ("analyze", vec!["--help"]),
        ("bench", vec!["--model", "cnn", "-h"]),
    ] {
        let out = output(
            Command::new(SWEEPCTL)
                .arg(command)
                .args(&args)
                .env("SWEEPCTL_TORCH", &script)
                .current_dir(dir.path()),
        );
        assert_eq!(out.status.code(), Some(7), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut expected = vec![format!(
            "cwd={}",
            dir.path().canonicalize().unwrap().display()
        )];
        expected.push(format!("arg={command}"));
        expected.extend(args.iter().map(|a| format!("arg={a}")));
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            expected,
            "{}",
            text(&out)
        );
    }
}
