"""lowpower data check: every problem of a data set at once, the class table, exit status;
train.py runs the same check before the first epoch when data.cache is false."""
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lowpower.data.check import check_dataset
from lowpower.data.check import main as check_main
from lowpower.train.trainer import main as train_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def clean_data(synthetic_data):
    return synthetic_data(train=4, val=3, test=2, seed=7)  # shared: tests change copies only


def broken_copy(clean, tmp_path):
    """A copy with one truncated image, one missing mask and one mask holding id 200."""
    root = tmp_path / "broken"
    shutil.copytree(clean, root)
    truncated = root / "LPCVC_Train/IMG/train/train_00001.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "LPCVC_Train/GT/train/train_00002.png").unlink()
    bad_ids = root / "LPCVC_Val/GT/val/val_00001.png"
    mask = cv2.imread(str(bad_ids), cv2.IMREAD_UNCHANGED)
    mask[:4, :4] = 200
    cv2.imwrite(str(bad_ids), mask)
    return root, ["train_00001.png", "train_00002.png", "val_00001.png"]


@pytest.mark.slow  # a fresh interpreter that imports torch before it reads its arguments
def test_the_cli_names_all_three_broken_files_and_exits_1(clean_data, tmp_path):
    root, names = broken_copy(clean_data, tmp_path)
    done = subprocess.run([sys.executable, "-m", "lowpower", "data", "check", str(root), "--dataset", "synthetic"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    for name in names:
        assert name in done.stdout, name
    assert "3 problem" in done.stdout and "200" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_clean_set_passes_with_a_class_share_table(clean_data, capsys):
    assert check_main([str(clean_data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out and "background" in out and "%" in out


def test_every_kind_of_problem_is_reported(clean_data, tmp_path):
    root = tmp_path / "many"
    shutil.copytree(clean_data, root)
    (root / "LPCVC_Train/IMG/train/extra_image.png").write_bytes(
        (root / "LPCVC_Train/IMG/train/train_00000.png").read_bytes())           # no mask
    cv2.imwrite(str(root / "LPCVC_Train/GT/train/orphan.png"), np.zeros((64, 64), np.uint8))  # no image
    cv2.imwrite(str(root / "LPCVC_Val/GT/val/val_00002.png"), np.zeros((40, 64), np.uint8))   # size
    (root / "LPCVC_Val/IMG/val/val_00000.png").write_bytes(b"")                 # unreadable
    for path in (root / "test/IMG").iterdir():                                  # an empty split
        path.unlink()
    for path in (root / "test/GT").iterdir():
        path.unlink()
    report = check_dataset(root, "lpcvc", num_classes=14, progress=False)
    text = "\n".join(report.problems)
    for expected in ("extra_image.png", "orphan.png", "val_00002.png", "val_00000.png", "test"):
        assert expected in text, expected
    assert len(report.problems) == 5, text
    # fewer classes: the synthetic masks' higher ids are out of range and named once per file
    assert any("outside [0, 3)" in p for p in check_dataset(clean_data, "synthetic", 3, progress=False).problems)


@pytest.mark.slow  # a fresh interpreter that imports torch before it reads its arguments
def test_help_explains_the_command():
    done = subprocess.run([sys.executable, "-m", "lowpower", "data", "check", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--dataset" in done.stdout and "exit" in done.stdout.lower()


def test_train_checks_uncached_data_before_the_first_epoch(train_args, clean_data, tmp_path, capsys):
    root, names = broken_copy(clean_data, tmp_path)
    (root / ".complete").write_text("synthetic\n")
    out = tmp_path / "run"
    assert train_main(train_args(root, out, "train.epochs=1")) == 2
    error = capsys.readouterr().err
    assert all(name in error for name in names) and "lowpower data check" in error
    assert not (out / "last.pt").exists(), "no epoch was trained"


@pytest.mark.parametrize("cache", [False, True])
def test_train_runs_the_check_only_without_the_cache(train_args, clean_data, tmp_path, cache):
    out = tmp_path / "run"
    args = train_args(clean_data, out, "data.cache=%s" % str(cache).lower(), "data.crop_size=32", "train.epochs=1")
    assert train_main(args) == 0
    assert ("data check: 4 train + 3 val pairs read, no problems" in (out / "log.txt").read_text()) is not cache
