"""Resume: bit-exact mid-epoch continuation with augmentation, RNG state in the checkpoint, the
resumed epoch's loss, a changed --cfg refused, a corrupt checkpoint named, stale temp files removed."""
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from lowpower.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from lowpower.train import trainer as train_module
from lowpower.train.trainer import main as train_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")
# Augmentation on (scale, crop, flip, colour jitter), loading from disk (no cache).
AUGMENTED = ["data.crop_size=24", "data.scale_min=0.5", "data.scale_max=1.5", "data.hflip=0.5", "data.jitter=0.3",
             "train.class_weights=null"]


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    return synthetic_data(train=8, val=2, test=0, seed=5)


@pytest.fixture
def tiny_args(train_args):
    """The tiny run of conftest with augmentation on."""
    return lambda data, out, *extra: train_args(data, out, *AUGMENTED, *extra)


def stop_after_steps(monkeypatch, steps):
    """Make the training loop receive a real SIGTERM during its ``steps``-th step (once)."""
    real = train_module.train_one_epoch
    calls = {"n": 0}

    def wrapped(model, loader, *args, **kwargs):
        class Counting:
            def __init__(self, inner):
                self.inner, self.sampler = inner, inner.sampler

            def __len__(self):
                return len(self.inner)

            def __iter__(self):
                for batch in self.inner:
                    calls["n"] += 1
                    if calls["n"] == steps:
                        os.kill(os.getpid(), signal.SIGTERM)
                    yield batch
        return real(model, Counting(loader), *args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", wrapped)


EMA = ("train.ema=true", "train.ema_decay=0.9", "train.ema_warmup=3")
# Fixed-point training: LSQ's learned steps and the range scheme's running maxima must continue exactly too.
FIXED_LSQ = ("train.amp=false", "quant.fixed_point=lsq", "quant.weight_bits=4", "quant.act_bits=6",
             "quant.edge_bits=8", "quant.calib_batches=2")
FIXED_RANGE = ("train.amp=false", "quant.fixed_point=range", "quant.weight_bits=4", "quant.act_bits=6")


@pytest.mark.parametrize("workers, more", [(0, ()), pytest.param(2, (), marks=pytest.mark.slow),  # 2: worker processes
                                           (0, EMA), (0, FIXED_LSQ), (0, FIXED_RANGE)],
                         ids=["main-process", "2-workers", "ema", "fixed-point-lsq", "fixed-point-range"])
def test_mid_epoch_resume_with_augmentation_is_bit_exact(tiny_args, tiny_data, tmp_path, monkeypatch, workers, more,
                                                         restore_signal_handlers):
    extra = ("train.epochs=2", "data.workers=%d" % workers, *more)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(tiny_args(tiny_data, straight, *extra)) == 0
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 6)  # 4 steps per epoch: stops in epoch 2 after its 2nd step
        assert train_main(tiny_args(tiny_data, split, *extra)) == train_module.EXIT_STOPPED
    stopped = load_checkpoint(split / "last.pt")
    assert (stopped["epoch"], stopped["step_in_epoch"]) == (1, 2)
    assert train_main(tiny_args(tiny_data, split, *extra, ) + ["--resume", "auto"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), "%s differs by %g" % (
            name, (tensor.double() - b["model"][name].double()).abs().max())
    if more == FIXED_LSQ:  # the quantizers are in the state dict, so the loop above compared them
        assert any(name.endswith("fixed_point_output.step") for name in a["model"])
    if more == FIXED_RANGE:
        assert any(name.endswith("fixed_point_output.max_abs") for name in a["model"])
    if more == EMA:  # the weight average continues bit for bit too
        assert int(a["ema"]["n_averaged"]) == 8 and a["ema"].keys() == b["ema"].keys()
        assert all(torch.equal(tensor, b["ema"][name]) for name, tensor in a["ema"].items())
    for key, value in a["optimizer"]["state"].items():
        assert all(torch.equal(value[k], b["optimizer"]["state"][key][k]) for k in value if torch.is_tensor(value[k]))
    # the resumed epoch's loss averages all 4 of its steps, not the 2 after the restart
    assert [h["loss"] for h in b["history"]] == pytest.approx([h["loss"] for h in a["history"]], rel=1e-9)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    saved = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    save_checkpoint({"arch": "unet", "arch_kwargs": {}, "model": {}, "rng": saved}, tmp_path / "c.pt")
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])  # the safe (weights_only) loader reads it
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])


def test_resume_with_a_changed_cfg_is_refused_naming_the_keys(tiny_args, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == 0
    before = (out / "last.pt").read_bytes()
    changed = tiny_args(tiny_data, out, "train.epochs=2", "model.kwargs={base_width: 8, depth: 2}")
    assert train_main(changed + ["--resume", "auto"]) == 2
    error = capsys.readouterr().err
    assert "--override-config" in error and "train.epochs" in error and "model.kwargs" in error
    assert "data.root" not in error, "only the keys that differ are listed"
    assert (out / "last.pt").read_bytes() == before
    # the same config resumes; a changed epoch count with the flag continues the run
    assert train_main(tiny_args(tiny_data, out, "train.epochs=2") + ["--resume", "auto", "--override-config"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


def test_override_config_with_a_changed_width_fails_in_one_line(tiny_args, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == 0
    capsys.readouterr()
    args = tiny_args(tiny_data, out, "train.epochs=2", "model.kwargs={base_width: 8, depth: 2}")
    assert train_main(args + ["--resume", "auto", "--override-config"]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    error = error.split("train.py: error: ", 1)[1].strip()  # after the log lines: one line naming the file
    assert "last.pt" in error and "size mismatch" in error and len(error.splitlines()) == 1


def test_a_corrupt_resume_file_is_named_in_one_line(tiny_args, tiny_data, tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    assert train_main(tiny_args(tiny_data, tmp_path / "run", "train.epochs=1") + ["--resume", str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert str(bad) in error and "Traceback" not in error and len(error.splitlines()) == 1


def test_stale_temp_files_of_a_killed_save_are_removed_at_start(tiny_args, tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / "last.pt.a1b2c3.tmp", out / "best.pt.x9y8.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = out / "notes.tmp"
    keep.write_text("not ours")
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == 0
    assert not any(path.exists() for path in stale) and keep.exists()
    assert "stale" in (out / "log.txt").read_text()


def test_resume_without_cfg_reuses_the_checkpoint_config_with_set_applied(tiny_args, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == 0
    assert train_main(["--resume", str(out / "last.pt"), "--no-progress", "--set", "train.epochs=2"]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 2 and state["config"]["train"]["epochs"] == 2
    assert state["config"]["data"]["crop_size"] == 24, "the rest is the checkpoint's config"
