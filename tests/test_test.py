"""test.py on the session's tiny trained run (conftest's float_checkpoint): scores agree with the
metrics module, panels and JSON are written."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluation.metrics import confusion_matrix, image_mean_dice
from lowpower.data import PALETTE
from lowpower.train import panels
from lowpower.train import tester as test_cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(trained_data, float_checkpoint):
    """(its data folder: 3 val images of 64x64, best.pt)"""
    return trained_data, float_checkpoint


def test_scores_match_the_metrics_module_on_the_saved_predictions(tiny_run, tmp_path, capsys):
    data, checkpoint = tiny_run
    preds, panels, record = tmp_path / "pred", tmp_path / "panels", tmp_path / "m.json"
    assert test_cli.main(["--checkpoint", str(checkpoint), "--save-predictions", str(preds),
                      "--save-images", str(panels), "--json", str(record), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mean Dice (referee)" in printed and "confusion matrix" in printed.lower()
    scores = json.loads(record.read_text())
    names = sorted(p.name for p in (data / "LPCVC_Val/GT/val").glob("*.png"))
    assert sorted(p.name for p in preds.glob("*.png")) == names
    assert sorted(p.name for p in panels.glob("*.png")) == names
    by_hand = []
    for name in names:
        gt = cv2.imread(str(data / "LPCVC_Val/GT/val" / name), cv2.IMREAD_UNCHANGED)
        pred = cv2.imread(str(preds / name), cv2.IMREAD_UNCHANGED)
        by_hand.append(image_mean_dice(confusion_matrix(gt, pred, 14)))
    assert scores["mean_dice"] == pytest.approx(float(np.mean(by_hand)), abs=1e-9)
    assert scores["mean_dice"] > 0, "a score of exactly 0 would make the comparison above vacuous"
    assert scores["images"] == 3 and len(scores["per_class_dice"]) == 14
    assert np.array(scores["confusion_matrix"]).sum() == 3 * 64 * 64


def test_panels_show_titled_columns_and_a_class_legend(tiny_run, tmp_path):
    _, checkpoint = tiny_run
    assert test_cli.main(["--checkpoint", str(checkpoint), "--split", "test", "--save-images", str(tmp_path),
                      "--no-progress"]) == 0
    panel = cv2.cvtColor(cv2.imread(str(sorted(tmp_path.glob("*.png"))[0])), cv2.COLOR_BGR2RGB)
    tile = 64 * 3  # 64-pixel predictions enlarged to at least panels.MIN_TILE
    assert panel.shape[1] == 4 * tile, "four tiles side by side"
    band = panels.BAND
    assert panel.shape[0] > band + tile, "a title band above and a legend below the tiles"
    for column in range(4):  # every title band cell holds dark text on white
        cell = panel[:band, column * tile:(column + 1) * tile]
        assert (cell.min(axis=2) < 100).sum() > 20 and (cell == 255).all(axis=2).mean() > 0.5
    legend = panel[band + tile:]
    for colour in PALETTE:  # a swatch of every class colour sits in the legend
        assert (legend == colour).all(axis=2).sum() >= (panels.SWATCH - 2) ** 2, colour


def test_legend_rows_wrap_to_the_panel_width():
    names = ["class %d" % i for i in range(14)]
    wide, narrow = panels.legend(names, 2000), panels.legend(names, 300)
    assert wide.shape[1] == 2000 and narrow.shape[1] == 300
    assert narrow.shape[0] > wide.shape[0], "fewer entries per row means more rows"


def test_a_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert test_cli.main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter that imports torch before it reads its arguments
def test_help_runs_from_anywhere(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "test.py"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--save-images" in result.stdout
