//! The worker's installable artifact, as deploy/colab/README.md uses it: the
//! test builds the `sweeprun` wheel from the release binaries with
//! deploy/dist/build-wheel.py (what `make dist` runs), installs it with pip
//! into a fresh virtualenv, and runs that venv's `sweep-worker` console script
//! against a real coordinator serving TLS with worker and admin tokens (the
//! Colab setup, on loopback). A small sweep (2 variants × 2 seeds) must end
//! with every job done by that worker and a result for every seed; the venv's
//! `sweepctl` (the light client) makes the certificates, prints its version
//! and shows the results table.
//!
//! What is real and what stands in:
//! - Real: the wheel, built into a temporary directory from target/release;
//!   the venv (`python3 -m venv`); `pip install --no-index <wheel>` resolving
//!   the wheel's `Requires-Dist: torch==2.13.0`, torch's own dependencies
//!   included, without `--no-deps`; the console scripts pip writes; the
//!   launcher in the wheel finding libtorch through `find_spec("torch")` and
//!   exec'ing the wheel's binary with nothing of the test's environment (no
//!   LD_LIBRARY_PATH, LIBTORCH or PYTHONPATH: the venv's programs run with a
//!   cleared environment); TLS, tokens, the dataset fetched from the
//!   coordinator.
//! - Stands in: torch 2.13.0 is not downloaded from PyPI (4.7 GB; tests never
//!   download). The venv sees the torch install that scripts/libtorch.sh made
//!   (a `pip install --target` directory: the parent of `$LIBTORCH`, else
//!   `~/.cache/sweeprun/torch-2.13.0`) through a `.pth` file in its
//!   site-packages, so pip finds torch 2.13.0 and its dependencies already
//!   installed, as it would after downloading them. First, without that
//!   `.pth`, the same `pip install --no-index` must fail for want of
//!   torch==2.13.0: the dependency is declared and enforced.
//! - So torch lies outside the venv's site-packages, and the binaries' own
//!   run path (`$ORIGIN/../../torch/lib`, for torch and sweeprun in one
//!   site-packages, as pip installs them on Colab) is not what loads libtorch
//!   for the sweep: the launcher's LD_LIBRARY_PATH is (the worker process maps
//!   the cached torch's `lib/libtorch_cpu.so`). The run path is checked on its
//!   own: the binary run directly, without the launcher, finds no libtorch,
//!   and finds it once a symbolic link puts torch into the venv's
//!   site-packages (removed before the sweep).
//! - The venv is made `--without-pip`, and pip is the host's, run with
//!   `--python <venv>/bin/python` (pip 22.3+): a venv's own pip brings
//!   setuptools 65, which would shadow the newer setuptools that torch 2.13.0
//!   requires and that the stand-in holds.
//! - Not tested: Colab, a GPU, pip downloading torch from PyPI.
//!
//! Needs python3 with venv and pip 22.3+, patchelf and strip (scripts/test-deps.sh
//! installs them), the torch 2.13.0 install of scripts/libtorch.sh, and the
//! release binaries (`make build`). Without one of the first three it skips
//! with a message (under `CI=true` it fails instead, see crates/testkit).
//! Takes about 35 seconds on 2 cores: 12 to build the wheel (stripping and
//! compressing the binaries), 8 for the sweep, the rest pip and the venv.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sweep_core::token::Token;
use sweep_e2e::{KillOnDrop, log_field, release_bin_dir, repo_root, strip_ansi, wait_for};
use sweep_proto::client::Client;
use sweep_proto::pb;
use sweep_testkit::skip_or_fail;

/// The torch that build-wheel.py's wheel depends on (and tch 0.26 binds to).
const TORCH: &str = "torch==2.13.0";
const TORCH_DIST_INFO: &str = "torch-2.13.0.dist-info";
/// The wheel's version: the workspace's, as the Makefile's `dist` passes it.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const SEEDS: [u64; 2] = [1, 2];
const VARIANTS: [&str; 2] = ["baseline", "no_dropout"];
const WORKER_NAME: &str = "wheel-worker";
const WORKER_TOKEN: &str = "dist-wheel-test-worker-token-0123456789";
const ADMIN_TOKEN: &str = "dist-wheel-test-admin-token-0123456789";
/// Generous: one worker trains four tiny jobs in seconds.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(100);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd` and fails the test unless it succeeds; returns its output.
fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    text(&out)
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

/// A command with none of the test's environment (cargo's, make's LIBTORCH,
/// any LD_LIBRARY_PATH or PYTHONPATH or PIP_*): only a plain PATH and HOME.
fn clean(program: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .current_dir(home);
    cmd
}

/// Host pip, pointed at `venv` (`pip --python`), offline and without the
/// user's pip configuration (this machine's may add --find-links).
fn pip(python: &Path, venv: &Path, home: &Path) -> Command {
    let mut cmd = clean(python, home);
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .args(["-m", "pip", "--python"])
        .arg(venv.join("bin/python"))
        .args(["install", "--no-index", "--no-input"]);
    cmd
}

/// The site directory of the torch 2.13.0 install that scripts/libtorch.sh
/// made: the parent of `$LIBTORCH` (its `torch/` directory, as `make test`
/// exports it), else the script's default cache. None unless it holds
/// torch 2.13.0 as pip installed it (with its dist-info) and libtorch.
fn torch_site() -> Option<PathBuf> {
    let from_env = std::env::var_os("LIBTORCH")
        .filter(|v| !v.is_empty())
        .and_then(|dir| PathBuf::from(dir).parent().map(Path::to_path_buf));
    let cache = std::env::var_os("SWEEPRUN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sweeprun")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/sweeprun")))
        .map(|cache| cache.join("torch-2.13.0"));
    [from_env, cache].into_iter().flatten().find_map(|site| {
        (site.join(TORCH_DIST_INFO).join("METADATA").is_file()
            && site.join("torch/lib/libtorch_cpu.so").is_file())
        .then(|| site.canonicalize().ok())
        .flatten()
    })
}

/// The interpreter that `python3` on PATH runs (a pyenv shim resolved), if it
/// has the venv module.
fn host_python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys, sysconfig, venv; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file().then_some(path)
}

/// `pip --python` came with pip 22.3.
fn pip_has_python_option(python: &Path) -> bool {
    let Ok(out) = Command::new(python)
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .output()
    else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    out.status.success() && (major, minor) >= (22, 3)
}

fn write_token(path: &Path, value: &str) {
    std::fs::write(path, value).expect("token file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod token");
}

/// The last `n` lines of a file, or why there are none.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({e})"),
    }
}

/// Prints the coordinator's and the worker's logs when the test fails.
struct LogsOnPanic(Vec<PathBuf>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.0 {
                eprintln!("---- last lines of {} ----", log.display());
                eprintln!("{}", tail(log, 60));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wheel_in_a_fresh_venv_runs_a_worker_through_a_sweep() {
    let started = Instant::now();
    // What cannot be had here: skip (fail under CI) with what to install.
    let Some(python) = host_python() else {
        return skip_or_fail("python3 with its venv module is needed (Debian: python3-venv)");
    };
    if !pip_has_python_option(&python) {
        return skip_or_fail(
            "python3 -m pip 22.3 or newer is needed (`pip --python`; Debian: python3-pip)",
        );
    }
    for tool in ["patchelf", "strip"] {
        if !on_path(tool) {
            return skip_or_fail(format!(
                "{tool} is needed to build the wheel (scripts/test-deps.sh installs it; \
                 Debian: apt-get install {})",
                if tool == "patchelf" {
                    "patchelf"
                } else {
                    "binutils"
                }
            ));
        }
    }
    let Some(site) = torch_site() else {
        return skip_or_fail(format!(
            "no pip-installed torch 2.13.0 (with {TORCH_DIST_INFO}) in ~/.cache/sweeprun/torch-2.13.0 \
             or next to $LIBTORCH: run scripts/libtorch.sh (make test does), without LIBTORCH \
             pointing at a libtorch that is not a torch package"
        ));
    };
    let bins = release_bin_dir();
    for bin in ["sweep-worker", "sweepctl", "sweep-coordinator"] {
        assert!(
            bins.join(bin).is_file(),
            "{} is missing: run `make build` first (`make test` does)",
            bins.join(bin).display()
        );
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().expect("tempdir path");
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home");

    // 1. The wheel, as `make dist` builds it, but into the temporary directory.
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    let dist = root.join("dist");
    must(
        Command::new(&python)
            .arg(repo_root().join("deploy/dist/build-wheel.py"))
            .arg("--bin-dir")
            .arg(&bins)
            .arg("--out")
            .arg(&dist)
            .args(["--version", VERSION, "--commit", &commit])
            .current_dir(repo_root()),
    );
    let wheel = dist.join(format!("sweeprun-{VERSION}-py3-none-linux_x86_64.whl"));
    assert!(wheel.is_file(), "{} was not built", wheel.display());
    let built = started.elapsed();

    // 2. A fresh virtualenv, in which pip must refuse the wheel while no
    // torch 2.13.0 can be had: the dependency is declared and enforced.
    let venv = root.join("venv");
    must(
        clean(&python, &home)
            .args(["-m", "venv", "--without-pip"])
            .arg(&venv),
    );
    let site_packages = PathBuf::from(
        must(clean(venv.join("bin/python"), &home).args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('platlib'))",
        ]))
        .trim(),
    );
    assert!(
        site_packages.starts_with(&venv),
        "{} is the venv's",
        site_packages.display()
    );
    let refused = run(pip(&python, &venv, &home).arg(&wheel));
    assert!(
        !refused.status.success() && text(&refused).contains(TORCH),
        "pip installed the wheel without torch 2.13.0 ({}):\n{}",
        refused.status,
        text(&refused)
    );
    assert!(!venv.join("bin/sweep-worker").exists());

    // 3. The stand-in for pip's download of torch: the cached install, seen
    // by the venv's python (and so by pip) through a .pth file.
    std::fs::write(
        site_packages.join("sweeprun-test-torch.pth"),
        format!("{}\n", site.display()),
    )
    .expect(".pth");
    let installed = must(pip(&python, &venv, &home).arg(&wheel));
    assert!(
        installed.contains(&format!("Requirement already satisfied: {TORCH}"))
            && installed.contains(&format!("Successfully installed sweeprun-{VERSION}")),
        "{installed}"
    );

    // The installed metadata declares the dependency.
    let metadata = std::fs::read_to_string(
        site_packages.join(format!("sweeprun-{VERSION}.dist-info/METADATA")),
    )
    .expect("the installed wheel's METADATA");
    assert!(
        metadata
            .lines()
            .any(|l| l.trim() == format!("Requires-Dist: {TORCH}")),
        "{metadata}"
    );
    // The launcher finds the torch package without importing it.
    let found = must(
        clean(venv.join("bin/python"), &home)
            .args(["-c", "import sweeprun; print(sweeprun._torch_lib())"]),
    );
    assert_eq!(
        Path::new(found.trim()),
        site.join("torch/lib"),
        "the launcher's torch/lib"
    );
    // The installed binaries hold no path of the build machine: those that
    // link libtorch (the worker at least) find it through the torch package
    // only, by a run path relative to the binary; the others have none.
    let installed_bin = site_packages.join("sweeprun/bin");
    let mut link_libtorch = Vec::new();
    for entry in std::fs::read_dir(&installed_bin).expect("sweeprun/bin") {
        let bin = entry.expect("sweeprun/bin entry").path();
        let patchelf = |option: &str| must(Command::new("patchelf").arg(option).arg(&bin));
        let rpath = patchelf("--print-rpath");
        if patchelf("--print-needed").contains("libtorch") {
            assert_eq!(rpath.trim(), "$ORIGIN/../../torch/lib", "{}", bin.display());
            link_libtorch.extend(bin.file_name().map(|n| n.to_string_lossy().into_owned()));
        } else {
            assert_eq!(rpath.trim(), "", "{} has a run path", bin.display());
        }
    }
    assert!(
        link_libtorch.iter().any(|n| n == "sweep-worker"),
        "{link_libtorch:?}"
    );
    // On its own (no launcher, no LD_LIBRARY_PATH) the binary finds no
    // libtorch here, torch being outside the venv's site-packages...
    let direct = run(clean(installed_bin.join("sweep-worker"), &home).arg("--version"));
    assert!(
        !direct.status.success() && text(&direct).contains("libtorch"),
        "the wheel's sweep-worker found libtorch without the torch package \
         (a path of the build machine, or a libtorch in the loader's default paths): {}",
        text(&direct)
    );
    // ...and with torch in the same site-packages, the layout pip makes on
    // Colab (a symbolic link here, removed right after), its run path does.
    let colocated = site_packages.join("torch");
    std::os::unix::fs::symlink(site.join("torch"), &colocated).expect("symlink torch");
    let direct = run(clean(installed_bin.join("sweep-worker"), &home).arg("--version"));
    std::fs::remove_file(&colocated).expect("remove the torch symlink");
    assert!(
        direct.status.success() && text(&direct).contains(VERSION),
        "the wheel's sweep-worker next to torch, through its run path: {}",
        text(&direct)
    );

    // 4. The light client from the venv: its version, and the Colab setup's
    // certificates (`sweepctl certs`; 127.0.0.1 is always in them).
    let version = must(clean(venv.join("bin/sweepctl"), &home).arg("--version"));
    assert!(
        version.starts_with("sweepctl ") && version.contains(VERSION),
        "{version}"
    );
    let worker_version = must(clean(venv.join("bin/sweep-worker"), &home).arg("--version"));
    assert!(worker_version.contains(VERSION), "{worker_version}");
    let tls = root.join("tls");
    must(
        clean(venv.join("bin/sweepctl"), &home)
            .args(["certs", "--host", "localhost", "--out"])
            .arg(&tls),
    );
    let worker_token = root.join("worker_token");
    let admin_token = root.join("admin_token");
    write_token(&worker_token, WORKER_TOKEN);
    write_token(&admin_token, ADMIN_TOKEN);

    // 5. A real coordinator (target/release) on a port the OS picks, with TLS
    // and tokens as deploy/colab/README.md starts it.
    let sweep = sweep_e2e::TinySweep {
        name: "wheel",
        seeds: &SEEDS,
        variants: &[sweep_e2e::NO_DROPOUT],
        ..Default::default()
    }
    .write(&root.join("sweep"));
    let coordinator_log = root.join("coordinator.log");
    let worker_log = root.join("worker.log");
    let _logs = LogsOnPanic(vec![coordinator_log.clone(), worker_log.clone()]);
    let log = std::fs::File::create(&coordinator_log).expect("coordinator log");
    let _coordinator = KillOnDrop(
        Command::new(bins.join("sweep-coordinator"))
            .arg("--config")
            .arg(&sweep)
            .arg("--state-dir")
            .arg(root.join("runs"))
            .args(["--listen", "127.0.0.1:0", "--http", "off"])
            .arg("--tls-cert")
            .arg(tls.join("server.pem"))
            .arg("--tls-key")
            .arg(tls.join("server.key"))
            .arg("--worker-token-file")
            .arg(&worker_token)
            .arg("--admin-token-file")
            .arg(&admin_token)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sweep-coordinator"),
    );
    let addr = wait_for(
        "the coordinator to listen",
        Duration::from_secs(30),
        POLL,
        || {
            let log = strip_ansi(&std::fs::read_to_string(&coordinator_log).ok()?);
            log.lines()
                .find(|l| l.contains("coordinator listening"))
                .and_then(|l| log_field(l, "addr"))
                .map(str::to_string)
        },
    );

    // 6. The venv's sweep-worker, as Colab's cells run it: token and CA from
    // the environment, a cache directory of its own, no dataset at hand (it
    // runs in an empty directory and fetches MNIST from the coordinator).
    let log = std::fs::File::create(&worker_log).expect("worker log");
    let mut worker = KillOnDrop(
        clean(venv.join("bin/sweep-worker"), &home)
            .args(["--connect", &addr, "--device", "cpu", "--name", WORKER_NAME])
            .args(["--threads", "1", "--cache-dir"])
            .arg(root.join("worker-cache"))
            .env("SWEEP_TOKEN_FILE", &worker_token)
            .env("SWEEP_TLS_CA", tls.join("ca.pem"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the venv's sweep-worker"),
    );

    // The launcher exec'd the wheel's binary (same process), which loaded
    // libtorch from the torch package, through the LD_LIBRARY_PATH that the
    // launcher set (the test set none).
    let pid = worker.0.id();
    let torch_lib = site.join("torch/lib");
    let libtorch = wait_for(
        "the worker to load libtorch",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            if let Ok(Some(status)) = worker.0.try_wait() {
                panic!("the venv's sweep-worker exited early ({status})");
            }
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|path| path.ends_with("/libtorch_cpu.so"))
                .map(PathBuf::from)
        },
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the worker's executable");
    assert_eq!(
        exe,
        installed_bin.join("sweep-worker"),
        "the worker runs the wheel's binary"
    );
    assert_eq!(
        libtorch.canonicalize().expect("libtorch_cpu.so"),
        torch_lib
            .join("libtorch_cpu.so")
            .canonicalize()
            .expect("libtorch_cpu.so"),
        "libtorch comes from the installed torch package"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the worker's environment");
    let ld_library_path = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"LD_LIBRARY_PATH="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        ld_library_path.as_deref(),
        Some(torch_lib.to_str().expect("UTF-8 path")),
        "the launcher's LD_LIBRARY_PATH, and nothing of the test's"
    );

    // 7. The sweep ends, every job done by the wheel's worker.
    let channel =
        sweep_proto::client::endpoint(&addr, Some(&tls.join("ca.pem")), Duration::from_secs(5))
            .expect("endpoint")
            .connect_lazy();
    let token = Token::new(ADMIN_TOKEN, "test").expect("admin token");
    let mut client: Client = sweep_proto::client::client(channel, Some(&token));
    let status = sweep_e2e::wait_for_status(&mut client, "the sweep", SWEEP_TIMEOUT, |status| {
        if let Ok(Some(exit)) = worker.0.try_wait() {
            panic!("the venv's sweep-worker exited during the sweep ({exit})");
        }
        sweep_e2e::all_sweeps_done(status)
    })
    .await;
    let jobs = VARIANTS.len() * SEEDS.len();
    assert_eq!(status.sweeps[0].succeeded as usize, jobs, "{status:#?}");
    assert_eq!(status.jobs.len(), jobs, "{status:#?}");
    for job in &status.jobs {
        assert_eq!(job.state, "succeeded", "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
        assert_eq!(job.epoch, 2, "{job:?}");
        assert!(job.test.is_some(), "{job:?}");
        let events = client
            .get_job_logs(pb::GetJobLogsRequest {
                job_id: job.job_id.clone(),
            })
            .await
            .expect("job logs")
            .into_inner()
            .events;
        assert!(
            events
                .iter()
                .any(|e| e.kind == "leased" && e.message.contains(WORKER_NAME)),
            "{} was leased to the wheel's worker: {events:#?}",
            job.job_id
        );
    }
    let path = root.join("runs/wheel/results.json");
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("results.json is JSON");
    sweep_e2e::assert_every_seed_has_a_result(&results, &VARIANTS, SEEDS.len());

    // The venv's sweepctl shows the same table over TLS with the admin token.
    let table = must(
        clean(venv.join("bin/sweepctl"), &home)
            .args(["results", "--coordinator", &addr])
            .env("SWEEP_TOKEN_FILE", &admin_token)
            .env("SWEEP_TLS_CA", tls.join("ca.pem")),
    );
    for variant in VARIANTS {
        assert!(table.contains(variant), "{table}");
    }
    eprintln!(
        "dist_wheel: wheel built in {:.1}s, all done in {:.1}s",
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
