"""run.pbs as plain bash with a faked PBS environment: one node with two processes, stopped by
SIGTERM mid-epoch (as at the walltime) and resubmitted; two "nodes", the second started through a
stand-in pbsdsh that runs its command on this machine."""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lowpower.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
JOB = "4242.pbs-fake"

# Stand-in for PBS's pbsdsh: record the call, then run the node's command here.
FAKE_PBSDSH = r"""#!/bin/bash
printf "%s\n" "$*" >> "$(dirname "$0")/calls.txt"
[ "$1" = -n ] && shift 2
[ "$1" = -- ] && shift
exec "$@"
"""


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    """24 train and 5 val synthetic images of 64x64."""
    return synthetic_data(train=24, val=5, test=0, seed=5)


def job_env(tmp_path, data_root, nodes, nproc, epochs=1, batch=2, path_first=None):
    """The environment qsub -v and PBS would give the job, for a seconds-long CPU run."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(node + "\n" for node in nodes))
    overrides = ["data.dataset=lpcvc", "data.root=%s" % data_root, "data.input_size=32", "data.cache=false",
                 "data.workers=0", "model.kwargs={base_width: 4, depth: 2}", "train.epochs=%d" % epochs,
                 "train.batch_size=%d" % batch, "train.amp=false", "train.channels_last=false",
                 "train.warmup_iters=2", "eval.batch_size=1", "eval.output_size=64"]
    path = os.pathsep.join(p for p in (path_first, str(Path(sys.executable).parent), os.environ["PATH"]) if p)
    return dict(os.environ, PATH=path, PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(ROOT), PBS_JOBID=JOB,
                CFG="configs/synthetic/demo.yaml", OUT=str(tmp_path / "run"), NPROC=str(nproc),
                ARGS="--set " + " ".join(shlex.quote(o) for o in overrides),
                TQDM_MININTERVAL="0")  # a progress line per step, which the SIGTERM test waits for


def run_job(env, tmp_path, timeout=300):
    """``bash run.pbs`` started from another folder, as PBS does (it must cd to PBS_O_WORKDIR)."""
    return subprocess.run(["bash", str(ROOT / "run.pbs")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


class OutputReader(threading.Thread):
    """Collects a process's output as it comes (tqdm ends its updates with carriage returns)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.text = stream, ""

    def run(self):
        for chunk in iter(lambda: os.read(self.stream.fileno(), 4096), b""):
            self.text += chunk.decode(errors="replace")


def wait_for_step(reader, process, low, high, seconds=120):
    """Wait until the first epoch's progress bar shows a step in [low, high]; return it."""
    pattern = re.compile(r"epoch 1:[^\r\n]*?\| *(\d+)/(\d+) ")
    deadline = time.time() + seconds
    while time.time() < deadline:
        steps = [int(m.group(1)) for m in pattern.finditer(reader.text)]
        if steps and low <= steps[-1] <= high:
            return steps[-1]
        assert process.poll() is None and not (steps and steps[-1] > high), reader.text
        time.sleep(0.01)
    raise AssertionError("no progress in %d s:\n%s" % (seconds, reader.text))


@pytest.mark.slow  # run.pbs starts torchrun: two training processes, twice
def test_sigterm_mid_epoch_saves_last_pt_and_the_resubmitted_job_resumes(tiny_data, tmp_path):
    # Batch 1: 12 steps per process; the node file names localhost twice (two chunks, one node).
    env = job_env(tmp_path, tiny_data, ["localhost", "localhost"], nproc=2, batch=1)
    out = Path(env["OUT"])
    process = subprocess.Popen(["bash", str(ROOT / "run.pbs")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    reader = OutputReader(process.stdout)
    reader.start()
    try:
        wait_for_step(reader, process, 2, 6)
        os.killpg(process.pid, signal.SIGTERM)  # PBS at the walltime signals every process of the job
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=10)
    assert process.returncode != 0
    assert "SIGTERM received: saved" in reader.text, reader.text
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["epoch"] == 0 and 2 <= stopped["step_in_epoch"] < 12, reader.text
    assert not (out / "best.pt").exists()

    resumed = run_job(env, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from %s: 0 epochs done and %d steps of the next" % (
        out / "last.pt", stopped["step_in_epoch"]) in resumed.stdout
    assert "1 node(s): localhost | 2 process(es) per node" in resumed.stdout
    final = load_checkpoint(out / "last.pt")
    assert final["epoch"] == 1 and final["step_in_epoch"] == 0 and (out / "best.pt").is_file()
    log = (out / ("torchrun.%s.localhost.log" % JOB)).read_text()
    assert "SIGTERM received: saved" in log and "resumed from" in log  # both jobs, one log


@pytest.mark.slow  # run.pbs starts torchrun on two "nodes": two training processes
def test_two_nodes_rendezvous_on_the_first(tiny_data, tmp_path):
    fakes = tmp_path / "bin"
    fakes.mkdir()
    (fakes / "pbsdsh").write_text(FAKE_PBSDSH)
    (fakes / "pbsdsh").chmod(0o755)
    env = job_env(tmp_path, tiny_data, ["localhost", "localhost", "node2"], nproc=1, path_first=str(fakes))
    done = run_job(env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = Path(env["OUT"])
    assert "2 node(s): localhost node2 | 1 process(es) per node" in done.stdout
    assert "2 process(es) on cpu" in (out / "log.txt").read_text()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and (out / "best.pt").is_file()
    assert (out / ("torchrun.%s.node2.log" % JOB)).is_file()

    # pbsdsh (found on PATH, so the default launcher) gets node2's 0-based line in PBS_NODEFILE
    # and one torchrun that meets the first node's c10d store.
    call = (fakes / "calls.txt").read_text()
    assert call.startswith("-n 2 -- bash -c cd %s && exec env " % ROOT)
    assert re.search(r"--nnodes=2 --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint=localhost:\d+ "
                     r"--rdzv-id=%s" % re.escape(JOB), call)


# Stand-in interpreter: records the torchrun command line instead of training; anything else
# (run.pbs's own small python -c helpers) goes to the real interpreter.
FAKE_PYTHON = r"""#!/bin/bash
if [ "$1" = -m ] && [ "$2" = torch.distributed.run ]; then
    printf "%s\n" "$*" > "$(dirname "$0")/torchrun.txt"
    exit 0
fi
exec "{python}" "$@"
"""


def test_plain_qsub_trains_the_default_config_named_near_the_top(tmp_path):
    script = (ROOT / "run.pbs").read_text()
    default = re.search(r"^DEFAULT_CFG=(\S+)$", script, re.M)
    assert default and (ROOT / default.group(1)).is_file(), "one DEFAULT_CFG line naming a real config"
    assert script.index("DEFAULT_CFG=") < script.index("set -eo pipefail"), "near the top, before any work"
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.replace("{python}", sys.executable))
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CFG", "ARGS")}
    env.update(PBS_O_WORKDIR=str(ROOT), PBS_JOBID=JOB, PYTHON=str(fake), OUT=str(tmp_path / "run"), NPROC="1")
    result = subprocess.run(["bash", str(ROOT / "run.pbs")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    command = (tmp_path / "torchrun.txt").read_text().split()
    assert command[command.index("--cfg") + 1] == default.group(1)
    assert "config %s" % default.group(1) in result.stdout


def test_a_missing_config_is_a_one_line_error_that_names_it(tmp_path):
    env = dict(os.environ, PBS_O_WORKDIR=str(ROOT), CFG="configs/nope.yaml", OUT=str(tmp_path / "run"))
    result = subprocess.run(["bash", str(ROOT / "run.pbs")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "configs/nope.yaml" in result.stderr and "DEFAULT_CFG" in result.stderr
    assert not (tmp_path / "run").exists(), "nothing is created for a job that cannot start"
