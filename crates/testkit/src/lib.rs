//! What every test crate of the workspace shares, and nothing else (no
//! dependencies, so that any crate can take it as a dev-dependency).
//!
//! Rust tests have no "skipped" outcome, and a test that returns early when a
//! tool is missing passes: a CI run that lacks an install step would stay green
//! without running it. [`skip_or_fail`] is the one way a test skips itself: it
//! says so on the real stderr, and under `CI=true` it fails the test instead,
//! so that a skip can no longer hide behind a green run. `make test` installs
//! what the tests need first (scripts/test-deps.sh).

use std::fmt::Display;
use std::io::Write;

/// Whether this run is CI's: the `CI` variable that CI services set (`true`,
/// or any value but empty, `0` and `false`).
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") | Some("0") => false,
        Some(v) => !v.eq_ignore_ascii_case("false"),
    }
}

/// Skips the calling test, which must `return` right after: prints why on the
/// real stderr (past the harness's capture, so `cargo test` shows it), naming
/// the caller's file and line. Under `CI=true` it panics instead, failing the
/// test with the same message.
///
/// ```no_run
/// if std::process::Command::new("docker").arg("info").status().is_err() {
///     return sweep_testkit::skip_or_fail("no Docker engine answers `docker info`");
/// }
/// ```
#[track_caller]
pub fn skip_or_fail(why: impl Display) {
    let at = std::panic::Location::caller();
    if in_ci() {
        panic!(
            "test at {}:{} would skip itself, which CI=true does not allow: {why}",
            at.file(),
            at.line()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED test at {}:{}: {why} ***\n",
        at.file(),
        at.line()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_values() {
        for (value, ci) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_value(value), ci, "{value:?}");
        }
    }

    /// Run only by `skip_passes_outside_ci_and_fails_under_ci`, in a child process.
    #[test]
    #[ignore = "run by another test with CI set"]
    fn skipping_test() {
        skip_or_fail("nothing to run it on");
    }

    #[test]
    fn skip_passes_outside_ci_and_fails_under_ci() {
        let run = |ci: &str| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "tests::skipping_test"])
                .env("CI", ci)
                .output()
                .unwrap()
        };
        let outside = run("false");
        let stderr = String::from_utf8_lossy(&outside.stderr);
        assert!(outside.status.success(), "{stderr}");
        assert!(stderr.contains("SKIPPED test at"), "{stderr}");
        assert!(stderr.contains("nothing to run it on"), "{stderr}");

        let under_ci = run("true");
        let out = String::from_utf8_lossy(&under_ci.stdout);
        assert!(!under_ci.status.success(), "{out}");
        assert!(out.contains("CI=true does not allow"), "{out}");
    }
}
