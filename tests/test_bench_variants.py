"""lowpower.measure.bench variants on the session's tiny trained run (conftest's float_checkpoint): one row per
precision, sizes in order, Dice as test.py's."""
import json

import pytest

from lowpower.cli import main as lowpower_main
from lowpower.train import tester as test_cli

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(trained_data, float_checkpoint):
    """(data folder, best.pt)"""
    return trained_data, float_checkpoint


def table_rows(printed):
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in printed.splitlines() if line.startswith("| ") and not line.startswith("| variant")]


@pytest.mark.slow  # quantizes, builds and times three packages
def test_each_precision_is_a_row_with_smaller_weights_and_the_dice_test_py_prints(tiny_run, tmp_path, capsys):
    data, checkpoint = tiny_run
    argv = ["variants", str(checkpoint), "--calib", "4", "-n", "2", "--package-runs", "1",
            "--images", str(data / "test"), "--out", str(tmp_path / "variants")]
    assert lowpower_main(["bench"] + argv) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["fp32", "fp16", "int8 PTQ (x86)"]
    build = tmp_path / "variants" / "build"
    npz = [(build / name / "solution" / "weights.npz").stat().st_size for name in ("fp32", "fp16", "int8_PTQ")]
    # tiny tensors: npz headers weigh, so only the order is certain here (test_int8_package checks 0.3x)
    assert npz[1] < npz[0] and npz[2] < npz[0]
    assert [float(row[1]) for row in rows] == [round(size / 1e6, 2) for size in npz]
    for row in rows:
        assert row[5] != "-" and 0.0 <= float(row[8]) <= 1.0  # package timed and scored on the GT
    record = tmp_path / "val.json"
    assert test_cli.main(["--checkpoint", str(checkpoint), "--split", "val", "--json", str(record),
                          "--device", "cpu", "--no-progress"]) == 0
    assert float(rows[0][7]) == pytest.approx(json.loads(record.read_text())["mean_dice"], abs=5e-5)
    assert (tmp_path / "variants" / "int8_ptq_x86.pt").is_file()


def test_a_missing_qat_checkpoint_is_a_one_line_error(tiny_run, tmp_path, capsys):
    _, checkpoint = tiny_run
    assert lowpower_main(["bench", "variants", str(checkpoint), "--qat", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt: no such checkpoint" in capsys.readouterr().err
