"""train.py end to end on tiny generated data: outputs, checkpoints, exact resume, config errors."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lowpower.data.synthetic import COMPLETE_MARKER, PARTIAL_MARKER, SPLIT_DIRS, marker_line, write_scene
from lowpower.train import trainer as train_module
from lowpower.train.trainer import main as train_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    return synthetic_data(train=6, val=2, test=2, seed=3)


@pytest.fixture
def tiny_args(train_args):
    """The tiny run of conftest, validating every epoch."""
    return lambda data, out, *extra: train_args(data, out, "train.val_every=1", *extra)


def test_one_epoch_leaves_checkpoints_config_and_curves(tiny_args, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == 0
    for name in ("best.pt", "last.pt", "config.yaml", "curves.png", "log.txt", "history.json"):
        assert (out / name).is_file(), name
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    for key in ("arch", "arch_kwargs", "model", "optimizer", "scheduler", "scaler", "epoch", "config"):
        assert key in state, key
    assert state["arch"] == "unet" and state["arch_kwargs"] == {"base_width": 4, "depth": 2, "num_classes": 14}
    assert state["epoch"] == 1
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1, "the --set override wins over the file"
    assert resolved["data"]["root"] == str(tiny_data)
    assert "val mean Dice" in (out / "log.txt").read_text()
    assert not list(out.glob("*.tmp*")), "checkpoints are written through a temporary file"



def sigterm_after(function):
    """Wrap ``function`` so the process receives a real SIGTERM right after (or before) it runs."""
    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return result
    return wrapped


def test_sigterm_then_resume_continues_exactly(tiny_args, tiny_data, tmp_path, monkeypatch, restore_signal_handlers):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(tiny_args(tiny_data, straight, "train.epochs=2")) == 0
    # a walltime SIGTERM lands at the end of epoch 1 of the same 2-epoch run
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "write_outputs", sigterm_after(train_module.write_outputs))
        assert train_main(tiny_args(tiny_data, split, "train.epochs=2")) == train_module.EXIT_STOPPED
    stopped = torch.load(split / "last.pt", map_location="cpu", weights_only=False)
    assert stopped["epoch"] == 1
    assert "SIGTERM" in (split / "log.txt").read_text()
    assert train_main(tiny_args(tiny_data, split, "train.epochs=2") + ["--resume", "auto"]) == 0
    a = torch.load(straight / "last.pt", map_location="cpu", weights_only=False)
    b = torch.load(split / "last.pt", map_location="cpu", weights_only=False)
    assert b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert a["scheduler"] == b["scheduler"]
    assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=1e-6)


def test_sigterm_mid_epoch_saves_the_step_and_resumes(tiny_args, tiny_data, tmp_path, monkeypatch,
                                                      restore_signal_handlers):
    out = tmp_path / "run"
    real_step = train_module.train_one_epoch

    def signal_before_first_step(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the loop finishes the step in flight, then stops
        return real_step(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "train_one_epoch", signal_before_first_step)
        assert train_main(tiny_args(tiny_data, out, "train.epochs=1")) == train_module.EXIT_STOPPED
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1
    assert not (out / "best.pt").exists()
    assert train_main(tiny_args(tiny_data, out, "train.epochs=1") + ["--resume", "auto"]) == 0
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and (out / "best.pt").is_file()
    assert "and 1 steps of the next" in (out / "log.txt").read_text()


def test_a_misspelled_key_fails_naming_it(tiny_args, tiny_data, tmp_path, capsys):
    assert train_main(tiny_args(tiny_data, tmp_path / "r", "train.epoch=1")) == 2
    error = capsys.readouterr().err
    assert "train.epoch" in error and "train.epochs" in error
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    assert train_main(["--cfg", str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "learning_rate" in capsys.readouterr().err


def test_a_missing_synthetic_folder_is_generated_saying_so(tiny_args, tmp_path, capsys):
    root, out = tmp_path / "fresh", tmp_path / "run"
    args = tiny_args(root, out, "train.epochs=1", "data.synthetic_train=4", "data.synthetic_val=2",
                     "data.synthetic_test=1")
    assert train_main(args) == 0
    assert len(list((root / "LPCVC_Train/IMG/train").glob("*.png"))) == 4
    assert len(list((root / "test/GT").glob("*.png"))) == 1
    assert "generat" in (out / "log.txt").read_text().lower()
    assert "synthetic data:" not in capsys.readouterr().err  # --no-progress: no generator bar either


@pytest.mark.slow  # a fresh interpreter that imports torch before it reads its arguments
def test_train_py_help_runs_from_anywhere(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--resume" in result.stdout and "--set" in result.stdout


def test_a_synthetic_root_holding_other_files_is_never_written_into(tiny_args, tmp_path, capsys):
    root, out = tmp_path / "my_photos", tmp_path / "run"
    (root / "LPCVC_Train/IMG/train").mkdir(parents=True)
    mine = root / "LPCVC_Train/IMG/train/train_00000.png"
    mine.write_bytes(b"a user's own image")
    (root / "notes.txt").write_text("field notes")
    args = tiny_args(root, out, "train.epochs=1", "data.synthetic_train=2", "data.synthetic_val=1",
                     "data.synthetic_test=0")
    assert train_main(args) == 2
    error = capsys.readouterr().err.strip()
    assert str(root) in error and "notes.txt" in error and len(error.splitlines()) == 1
    assert mine.read_bytes() == b"a user's own image"
    assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["notes.txt", "train_00000.png"]


def test_an_interrupted_generation_is_finished(tiny_args, tmp_path):
    root = tmp_path / "half"
    for sub in SPLIT_DIRS["train"]:
        (root / sub).mkdir(parents=True)
    # as if killed after the first image: the marker of the parameters the config asks for, one image
    (root / PARTIAL_MARKER).write_text(marker_line(dict(train=2, val=2, test=1, seed=0, size=512)))
    write_scene((str(root), "train", 0, 0, 512))
    args = tiny_args(root, tmp_path / "run", "train.epochs=1", "data.synthetic_train=2",
                     "data.synthetic_val=2", "data.synthetic_test=1")
    assert train_main(args) == 0 and (root / COMPLETE_MARKER).is_file() and not (root / PARTIAL_MARKER).exists()
    assert len(list((root / "LPCVC_Val/GT/val").glob("*.png"))) == 2


def test_repeated_set_options_all_apply(tiny_args, tiny_data, tmp_path, capsys):
    args = tiny_args(tiny_data, tmp_path / "r", "train.epochs=1") + ["--set", "train.epochs=abc",
                                                                      "--set", "train.threads=1"]
    assert train_main(args) == 2
    assert "--set train.epochs=abc: train.epochs must be an integer" in capsys.readouterr().err
    parsed = train_module.parse_args(["--set", "a.b=1", "c.d=2", "--set", "e.f=3"])
    assert parsed.set == ["a.b=1", "c.d=2", "e.f=3"]


def test_a_negative_lr_is_one_line_naming_the_key(tiny_args, tiny_data, tmp_path, capsys):
    assert train_main(tiny_args(tiny_data, tmp_path / "r", "train.lr=-1e-3")) == 2
    error = capsys.readouterr().err.strip()
    assert error == "train.py: error: --set train.lr=-1e-3: train.lr must be greater than 0, got -0.001"


def test_a_nan_loss_names_epoch_and_step_in_one_line(tiny_args, tiny_data, tmp_path, capsys):
    args = tiny_args(tiny_data, tmp_path / "r", "train.epochs=1", "train.optimizer=sgd", "train.lr=1e30",
                     "train.warmup_iters=0")
    assert train_main(args) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    error = error.split("train.py: error: ", 1)[1].strip()  # after the log lines: one line
    assert len(error.splitlines()) == 1
    assert "epoch 1 step 2" in error and "train.lr" in error and "data" in error
