"""Download the device's wheels once into a cache folder, without installing them.

Cache layout (CACHE is `DEFAULT_CACHE` unless given):
    CACHE/wheels/<wheel file>   the wheels as pip downloaded them
    CACHE/wheels.json           {"<wheel file>": "<sha256>"}
    CACHE/index.json            the API index (see lowpower.ship.device_api.index)

Example:
    >>> from lowpower.ship.device_api.fetch import fetch_wheels
    >>> sorted(fetch_wheels())[0]                      # doctest: +SKIP
    'Pillow-8.4.0-cp36-cp36m-manylinux_2_17_aarch64.manylinux2014_aarch64.whl'
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from lowpower.ship.device_api import DeviceApiError

DEFAULT_CACHE = Path(os.environ.get("LOWPOWER_DEVICE_API_CACHE")
                     or Path.home() / ".cache" / "lowpower" / "device_api")

# (requirement, platform, python version, implementation, abi, file name prefix).
# torch 1.10.2 has no cp36 aarch64 wheel on PyPI; the cp39 one holds the same Python API as the
# Nano's cp36 build (the .py/.pyi files are generated from the same source tree).
WHEELS = (
    ("torch==1.10.2", "manylinux2014_aarch64", "3.9", "cp", "cp39", "torch-1.10.2-"),
    ("torchvision==0.11.2", "manylinux2014_aarch64", "3.6", "cp", "cp36m", "torchvision-0.11.2-"),
    ("numpy==1.19.5", "manylinux2014_aarch64", "3.6", "cp", "cp36m", "numpy-1.19.5-"),
    ("Pillow==8.4.0", "manylinux2014_aarch64", "3.6", "cp", "cp36m", "Pillow-8.4.0-"),
    ("imageio==2.15.0", "any", "3.6", "py", "none", "imageio-2.15.0-"),
)


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _present(folder, prefix):
    return sorted(p for p in folder.glob(prefix + "*.whl")) if folder.is_dir() else []


def pip_command(spec, dest):
    """The `pip download` command line for one WHEELS row (a list for subprocess).

    Args:
        spec: one row of WHEELS.
        dest: the folder the wheel goes to.
    """
    req, platform, pyver, impl, abi, _ = spec
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", platform, "--python-version", pyver, "--implementation", impl,
            "--abi", abi, "-d", str(dest), req]


def fetch_wheels(cache=DEFAULT_CACHE, progress=True):
    """Download every wheel of WHEELS not yet in CACHE/wheels and record their sha256.

    Args:
        cache: the cache folder (created when missing).
        progress: print one line per wheel to stderr and let pip show its download bar.
    Returns:
        {wheel file name: sha256}, also written to CACHE/wheels.json.
    Raises:
        DeviceApiError: a download failed; the message names the package and pip's last error line.
    """
    folder = Path(cache) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    for spec in WHEELS:
        if _present(folder, spec[5]):
            continue
        if progress:
            print("device_api: downloading %s (%s, %s)" % (spec[0], spec[1], spec[4]),
                  file=sys.stderr, flush=True)
        cmd = pip_command(spec, folder)
        # pip writes its bar and chatter to stdout (shown when progress) and its errors to stderr,
        # which is kept for the one-line error.
        res = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        if res.returncode != 0 or not _present(folder, spec[5]):
            lines = [ln.strip() for ln in (res.stderr or "").splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no wheel saved"]
            raise DeviceApiError("cannot download %s: %s" % (spec[0], errors[-1]))
    shas = {p.name: _sha256(p) for spec in WHEELS for p in _present(folder, spec[5])}
    tmp = Path(cache) / "wheels.json.tmp"
    tmp.write_text(json.dumps(shas, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, Path(cache) / "wheels.json")
    return shas
