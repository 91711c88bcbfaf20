"""lowpower.measure.sweep on the session's tiny trained run (conftest's float_checkpoint): one row per size,
files written, Dice equal to lowpower.train.tester's.

Example:
    .venv/bin/python -m pytest tests/test_sweep.py -q
"""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lowpower.checkpoint import load_checkpoint, save_checkpoint
from lowpower.measure import sweep
from lowpower.train import tester as test_cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")
TRAINED_SIZE = 32  # TINY_TRAINING's data.input_size


@pytest.fixture(scope="module")
def tiny_run(trained_data, float_checkpoint, tmp_path_factory):
    """(data folder, a copy of the session's best.pt whose config says eval.min_class_area 0.01)"""
    # A clearly nonzero min_class_area so the sweep must use the checkpoint's post-processing to agree with test.py.
    state = load_checkpoint(float_checkpoint)
    state["config"]["eval"]["min_class_area"] = 0.01
    copy = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(state, copy)
    return trained_data, copy


def test_one_row_per_size_files_written_and_dice_equal_to_test(tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    out = tmp_path / "sweep"
    assert sweep.main([str(checkpoint), "--sizes", "16,%d,48" % TRAINED_SIZE, "--out", str(out),
                       "--warmup", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in table] == [16, TRAINED_SIZE, 48]
    assert "not the Jetson Nano" in printed and "CPU" in printed
    with open(out / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["input_size"]) for row in rows] == [16, TRAINED_SIZE, 48]
    for row in rows:
        assert 0.0 <= float(row["mean_dice"]) <= 1.0
        assert 0 < float(row["forward_ms"]) < float(row["ms_per_image"]) and int(row["images"]) == 3
    assert (out / "sweep.png").stat().st_size > 1000
    resolved = json.loads((out / "sweep_args.json").read_text())
    assert resolved["sizes"] == [16, TRAINED_SIZE, 48] and resolved["min_class_area"] == 0.01

    record = tmp_path / "test.json"
    assert test_cli.main(["--checkpoint", str(checkpoint), "--json", str(record), "--device", "cpu",
                          "--no-progress"]) == 0
    at_trained = next(row for row in rows if int(row["input_size"]) == TRAINED_SIZE)
    # csv holds repr()s of the floats, so the round trip is exact.
    assert float(at_trained["mean_dice"]) > 0, "a Dice of exactly 0 would make the comparison vacuous"
    assert float(at_trained["mean_dice"]) == pytest.approx(json.loads(record.read_text())["mean_dice"], abs=1e-9)


def test_default_out_is_next_to_the_checkpoint(tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    copy = tmp_path / "run" / "best.pt"
    copy.parent.mkdir()
    copy.write_bytes(checkpoint.read_bytes())
    assert sweep.main([str(copy), "--sizes", "%d" % TRAINED_SIZE, "--split", "test", "--warmup", "0",
                       "--no-progress"]) == 0
    assert {p.name for p in (tmp_path / "run" / "sweep").iterdir()} == {"sweep.csv", "sweep.png", "sweep_args.json"}


@pytest.mark.parametrize("sizes, words", [("", "empty"), ("64,abc", "not an integer"), ("64,64", "distinct"),
                                          ("0", "under 8"), ("64,4096", "over 2048")])
def test_a_bad_size_list_is_refused_by_argparse_in_one_line(tiny_run, sizes, words, capsys):
    _, checkpoint = tiny_run
    with pytest.raises(SystemExit) as stop:
        sweep.main([str(checkpoint), "--sizes", sizes, "--no-progress"])
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--sizes" in errors[0] and words in errors[0]


def test_a_missing_or_bad_checkpoint_is_a_one_line_error_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert sweep.main([str(missing), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(missing) in error
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint\n")
    assert sweep.main([str(garbage), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(garbage) in error


@pytest.mark.slow  # a fresh interpreter that imports torch before it reads its arguments
def test_help_explains_the_tool(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lowpower", "bench", "sweep", "--help"], cwd=ROOT,
                            capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "--sizes" in result.stdout and "Nano" in result.stdout and "sweep.csv" in result.stdout
