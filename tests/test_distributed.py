"""DDP under torchrun on the CPU (gloo): one epoch on tiny synthetic data, checkpoints written
once, a reduced validation confusion matrix that every rank shares and a single process agrees with.

SIGTERM mid-epoch and ``--resume auto`` are tested through run.pbs in tests/test_run_pbs.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lowpower.data.samplers import ShardSampler
from lowpower.train.engine import evaluate

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # two processes each (torchrun, gloo): make test, not make test-fast


def tiny_overrides(data_root, epochs=1, train_batch=2):
    """``--set`` values that make the demo config a seconds-long CPU run on 64x64 images."""
    return ["data.dataset=lpcvc", "data.root=%s" % data_root, "data.input_size=32", "data.cache=false",
            "data.workers=0", "model.kwargs={base_width: 4, depth: 2}", "train.epochs=%d" % epochs,
            "train.batch_size=%d" % train_batch, "train.amp=false", "train.channels_last=false",
            "train.warmup_iters=2", "eval.batch_size=1", "eval.output_size=64"]


def torchrun(out, overrides, nproc=2):
    """Command line of a ``torchrun --standalone`` (a free port) training run of the demo config."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=%d" % nproc,
            "train.py", "--cfg", "configs/synthetic/demo.yaml", "--out", str(out), "--no-progress",
            "--set", *overrides]


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    """16 train and 5 val synthetic images of 64x64 (an odd count: the shards differ in size)."""
    return synthetic_data(train=16, val=5, test=0, seed=3)


def test_two_processes_train_one_epoch_and_agree_with_a_single_process(tiny_data, tmp_path):
    # Imported here: the ranks spawned by the next test re-import this module, and need neither.
    from lowpower.checkpoint import load_checkpoint
    from lowpower.train import tester as test_cli

    out = tmp_path / "run"
    done = subprocess.run(torchrun(out, tiny_overrides(tiny_data)), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    # One set of outputs, written by rank 0 alone (no second log line, no stray temporary files).
    assert sorted(p.name for p in out.glob("*.pt*")) == ["best.pt", "last.pt"]
    assert not list(out.glob("*.tmp")) and (out / "log.txt").is_file() and (out / "config.yaml").is_file()
    logged = done.stdout + done.stderr
    assert logged.count("run folder") == 1 and "2 process(es) on cpu" in logged

    state = load_checkpoint(out / "best.pt")
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0
    assert not any(key.startswith("module.") for key in state["model"])  # the unwrapped model
    reduced = np.array(state["metrics"]["confusion_matrix"])
    assert state["metrics"]["images"] == 5  # 3 + 2 images: every one counted once, none twice

    # The same checkpoint scored by test.py in one process.

    report = tmp_path / "single.json"
    assert test_cli.main(["--checkpoint", str(out / "best.pt"), "--device", "cpu", "--no-progress",
                          "--json", str(report)]) == 0
    single = json.loads(report.read_text())
    assert single["images"] == 5
    np.testing.assert_array_equal(reduced, np.array(single["confusion_matrix"]))
    assert reduced.sum() == 5 * 64 * 64
    assert state["metrics"]["miou"] == pytest.approx(single["miou"], abs=1e-12)


def _evaluate_rank(rank, world, port, result_dir):
    """One gloo process: score a fixed model on its shard of a fixed set, save the reduced matrix."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    from lowpower.train import distributed

    info = distributed.init_distributed_mode("cpu")
    images, masks = _fixed_split()
    dataset = torch.utils.data.TensorDataset(images, masks)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=ShardSampler(dataset, world, rank))
    meter = evaluate(_fixed_model(), loader, info.device, num_classes=3)
    np.save(Path(result_dir) / ("rank%d.npy" % rank), meter.summary()["confusion_matrix"])
    distributed.cleanup()


def _fixed_split():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(7, 3, 8, 8, generator=generator), torch.randint(0, 3, (7, 8, 8), generator=generator)


def _fixed_model():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 3, 3, padding=1)


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_rank_gets_the_summed_confusion_matrix(tmp_path):
    torch.multiprocessing.spawn(_evaluate_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    images, masks = _fixed_split()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, masks), batch_size=2)
    whole = evaluate(_fixed_model(), loader, torch.device("cpu"), num_classes=3).summary()["confusion_matrix"]
    rank0, rank1 = np.load(tmp_path / "rank0.npy"), np.load(tmp_path / "rank1.npy")
    np.testing.assert_array_equal(rank0, rank1)
    np.testing.assert_array_equal(rank0, whole)
    assert whole.sum() == 7 * 8 * 8
