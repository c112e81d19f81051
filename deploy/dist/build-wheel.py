#!/usr/bin/env python3
"""Builds the worker's installable artifact: a Python wheel, `sweeprun`, that
depends on torch==2.13.0 and carries the release binaries (sweep-worker,
sweepctl, sweepctl-torch, sweep-coordinator).

    deploy/dist/build-wheel.py --bin-dir target/release --out dist

`pip install dist/sweeprun-<version>-py3-none-linux_x86_64.whl` installs torch
2.13.0 (from PyPI, as any torch install) and puts `sweep-worker`, `sweepctl`
and `sweep-coordinator` on PATH. Each is a small Python entry point that finds
libtorch in the installed torch package (without importing it) and execs the
binary with that `lib/` directory on LD_LIBRARY_PATH; the binaries' own run
path is `$ORIGIN/../../torch/lib`, which is the same directory whenever torch
and sweeprun share a site-packages. So no LD_LIBRARY_PATH cell is needed on
Colab or in a virtualenv. Standard library only: no maturin or setuptools.

`make dist` runs this after `make build`.
"""

import argparse
import base64
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile

NAME = "sweeprun"
TORCH = "torch==2.13.0"
# Binaries shipped, and the console scripts that run them.
BINARIES = ["sweep-worker", "sweepctl", "sweepctl-torch", "sweep-coordinator"]
# Shipped when the build has it (the light/heavy sweepctl split).
OPTIONAL = {"sweepctl-torch"}
SCRIPTS = {"sweep-worker": "sweep-worker", "sweepctl": "sweepctl",
           "sweep-coordinator": "sweep-coordinator"}
# A binary in <site-packages>/sweeprun/bin/ finds <site-packages>/torch/lib here.
RPATH = "$ORIGIN/../../torch/lib"
# Any glibc Linux on x86-64: the binaries need glibc >= 2.34 (Colab, Ubuntu
# 22.04+, Debian 12+); manylinux tags would overstate what was checked.
TAG = "py3-none-linux_x86_64"

LAUNCHER = '''\
"""Runs the sweeprun binaries with libtorch from the installed torch package."""

import importlib.util
import os
import sys

_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")


def _torch_lib():
    """torch/lib of the installed torch, found without importing torch (slow)."""
    spec = importlib.util.find_spec("torch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        lib = os.path.join(location, "lib")
        if os.path.isfile(os.path.join(lib, "libtorch_cpu.so")):
            return lib
    return None


def _exec(name):
    binary = os.path.join(_BIN, name)
    env = dict(os.environ)
    lib = _torch_lib()
    if lib is None and name != "sweepctl":
        sys.exit(f"{name}: no torch package with lib/libtorch_cpu.so is importable "
                 f"by {sys.executable}; pip install {TORCH!r}")
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (lib, env.get("LD_LIBRARY_PATH", "")) if p)
    os.execve(binary, [name] + sys.argv[1:], env)


def sweep_worker():
    _exec("sweep-worker")


def sweepctl():
    _exec("sweepctl")


def sweep_coordinator():
    _exec("sweep-coordinator")
'''.replace("{TORCH!r}", repr(TORCH))


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="target/release")
    parser.add_argument("--out", default="dist")
    parser.add_argument("--version", required=True)
    parser.add_argument("--commit", default="unknown")
    args = parser.parse_args()

    for tool in ("patchelf", "strip"):
        if shutil.which(tool) is None:
            sys.exit(f"build-wheel: {tool} is missing (Debian: apt-get install "
                     f"{'patchelf' if tool == 'patchelf' else 'binutils'})")

    dist_info = f"{NAME}-{args.version}.dist-info"
    files: dict[str, tuple[bytes, bool]] = {}  # path in wheel -> (bytes, executable)

    with tempfile.TemporaryDirectory() as tmp:
        for name in BINARIES:
            src = os.path.join(args.bin_dir, name)
            if not os.path.isfile(src):
                if name in OPTIONAL:
                    continue
                sys.exit(f"build-wheel: {src} is missing: run `make build` first")
            dst = os.path.join(tmp, name)
            shutil.copyfile(src, dst)
            subprocess.run(["strip", "--strip-debug", dst], check=True)
            # The build machine's libtorch path must not leak into the artifact.
            needs_torch = b"libtorch" in subprocess.run(
                ["patchelf", "--print-needed", dst], check=True,
                capture_output=True).stdout
            if needs_torch:
                subprocess.run(["patchelf", "--set-rpath", RPATH, dst], check=True)
            else:
                subprocess.run(["patchelf", "--remove-rpath", dst], check=True)
            with open(dst, "rb") as f:
                files[f"{NAME}/bin/{name}"] = (f.read(), True)

    files[f"{NAME}/__init__.py"] = (LAUNCHER.encode(), False)
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {args.version}",
        "Summary: sweeprun's worker, coordinator and sweepctl (Rust binaries over libtorch 2.13.0)",
        "License: MIT OR Apache-2.0",
        "Requires-Python: >=3.9",
        f"Requires-Dist: {TORCH}",
        "",
        f"Built from git commit {args.commit}. The binaries load libtorch from the",
        "installed torch package; see deploy/colab/README.md.",
        "",
    ])
    files[f"{dist_info}/METADATA"] = (metadata.encode(), False)
    files[f"{dist_info}/WHEEL"] = ("\n".join([
        "Wheel-Version: 1.0",
        "Generator: sweeprun deploy/dist/build-wheel.py",
        "Root-Is-Purelib: false",
        f"Tag: {TAG}",
        "",
    ]).encode(), False)
    entry_points = "[console_scripts]\n" + "".join(
        f"{script} = {NAME}:{func.replace('-', '_')}\n" for script, func in SCRIPTS.items())
    files[f"{dist_info}/entry_points.txt"] = (entry_points.encode(), False)

    record = io.StringIO()
    for path, (data, _) in files.items():
        record.write(f"{path},{record_hash(data)},{len(data)}\n")
    record.write(f"{dist_info}/RECORD,,\n")
    files[f"{dist_info}/RECORD"] = (record.getvalue().encode(), False)

    os.makedirs(args.out, exist_ok=True)
    wheel = os.path.join(args.out, f"{NAME}-{args.version}-{TAG}.whl")
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, (data, executable) in files.items():
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            mode = 0o755 if executable else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    size = os.path.getsize(wheel) / (1 << 20)
    print(f"{wheel} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
