"""Run a package as the referee does, in its own process group, with its peak memory sampled.

The packager's verification, presubmit's run checks and the bench commands all run a pyz through
``run_pyz``.

Example:
    >>> run = run_pyz("solution.pyz", "evaluation/test/IMG", "/tmp/out")  # doctest: +SKIP
    >>> run.ok, run.stdout  # doctest: +SKIP
    (True, '1.234567\\n')
"""
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from evaluation import contract
from evaluation.contract import REFEREE_TIMEOUT, solution_command


@dataclass
class PyzRun:
    """What one run of a package did (bytes, seconds). ``peak_process``: the largest per-process
    high-water mark (VmHWM); ``peak_group``: the largest summed resident memory of its process group
    (a solution may start workers); ``outputs``: {file in the output folder: mtime} (compare with
    ``started``); ``strays``: files it left in its working folder; ``timeout``: the limit it ran
    under (seconds, None: none).
    """
    command: list
    exit_code: object  # int; None only if it could not be reaped
    stdout: str
    stderr: str
    wall_seconds: float
    started: float
    timed_out: bool
    peak_process: int
    peak_group: int
    outputs: dict
    strays: list
    timeout: object = None

    @property
    def peak_memory(self):
        return max(self.peak_process, self.peak_group)

    @property
    def ok(self):
        return self.exit_code == 0 and not self.timed_out

    def stderr_tail(self, lines=8):
        return self.stderr.strip().splitlines()[-lines:]


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def group_memory(pgid, page=PAGE_SIZE):
    """(summed resident bytes, largest per-process peak VmHWM) of a process group; zeros without /proc.

    VmHWM is read from the process itself rather than from wait4's ru_maxrss: after fork the
    child's ru_maxrss already counts the parent's resident pages, so a launcher holding torch
    (pytest, presubmit) would be charged to the solution.
    """
    total, largest = 0, 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0, 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open("/proc/{}/statm".format(entry)) as handle:
                total += int(handle.read().split()[1]) * page
            with open("/proc/{}/status".format(entry)) as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        largest = max(largest, int(line.split()[1]) * 1024)
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we read it
    return total, largest


class _MemorySampler(threading.Thread):
    """Polls a process group's memory until stopped; a thread, so the wait itself stays exact."""

    def __init__(self, pgid, interval):
        super().__init__(daemon=True)
        self.pgid, self.interval, self.peak_group, self.peak_process = pgid, interval, 0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            group, largest = group_memory(self.pgid)
            self.peak_group, self.peak_process = max(self.peak_group, group), max(self.peak_process, largest)
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()


def _kill_group(pgid, sig):
    with contextlib.suppress(OSError):  # already gone
        os.killpg(pgid, sig)


def _wait(process, timeout):
    """Wait for the process; at the timeout SIGTERM its group, then SIGKILL 5 s later. True if timed out."""
    try:
        process.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()
        return True


def run_pyz(pyz, images_dir, out_dir, python=sys.executable, cwd=None, timeout=REFEREE_TIMEOUT, env=None,
            interval=0.05):
    """Run a package as the referee does: ``python FLAGS PYZ -i IMAGES -o OUT``.

    FLAGS, the default timeout and the output folder's preparation come from ``evaluation.contract``
    (``INTERPRETER_FLAGS``, ``REFEREE_TIMEOUT``, ``prepare_output``), as in ``evaluation/evaluate.bash``:
    both run a package the same way.

    Args:
        pyz: the package.
        images_dir: folder of input images (``-i``).
        out_dir: folder for the masks (``-o``); created before the run when absent, as the referee
            does (``contract.prepare_output``), never emptied.
        python: the interpreter (the device's is ``python3.6``).
        cwd: working folder; default a fresh empty one, removed afterwards.
        timeout: seconds before the process group is stopped (None: no limit).
        env: the environment (default this process's); ``-I`` (in the contract's flags) keeps
            PYTHONPATH and the like out.
        interval: seconds between memory samples.

    Returns:
        PyzRun.

    Example:
        >>> run = run_pyz("solution.pyz", "evaluation/test/IMG", "/tmp/out", timeout=900)  # doctest: +SKIP
        >>> run.ok, run.stdout.strip(), run.peak_memory > 0  # doctest: +SKIP
        (True, '1.234567', True)
    """
    out_dir = Path(out_dir).resolve()
    contract.prepare_output(out_dir)  # the referee creates it before it runs a solution
    command = solution_command(python, Path(pyz).resolve(), Path(images_dir).resolve(), out_dir)
    with contextlib.ExitStack() as stack:
        cwd = Path(cwd if cwd is not None else stack.enter_context(tempfile.TemporaryDirectory(prefix="pyz-run-")))
        before = set(os.listdir(cwd))
        stdout, stderr = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))
        started, begin = time.time(), time.perf_counter()
        # its own session, so a timeout stops the workers it started too, and memory counts them
        process = subprocess.Popen(command, cwd=str(cwd), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        sampler = _MemorySampler(process.pid, interval)
        sampler.start()
        try:
            timed_out = _wait(process, timeout)
            wall = time.perf_counter() - begin
        finally:
            sampler.stop()
            _kill_group(process.pid, signal.SIGKILL)  # leftovers it did not wait for, or ^C
        strays = sorted(set(os.listdir(cwd)) - before)
        outputs = {entry.name: entry.stat().st_mtime for entry in sorted(out_dir.iterdir())
                   if entry.is_file()} if out_dir.is_dir() else {}
        stdout.seek(0)
        stderr.seek(0)
        return PyzRun(command=command, exit_code=process.returncode, timed_out=timed_out,
                      stdout=stdout.read().decode("utf-8", "replace"), stderr=stderr.read().decode("utf-8", "replace"),
                      wall_seconds=wall, started=started, peak_process=sampler.peak_process,
                      peak_group=sampler.peak_group, outputs=outputs, strays=strays, timeout=timeout)
