"""evaluation/evaluate.bash on hand-made solution archives: exit status, reason and JSON for each fault."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import make_pyz

REPO_ROOT = Path(__file__).resolve().parent.parent
EVALUATE = REPO_ROOT / "evaluation" / "evaluate.bash"

# The referee's CLI: -i IMG_DIR -o OUT_DIR. This one cheats by copying the GT next to IMG/,
# so it scores a perfect 1.0; it prints one float, as the referee requires.
GOOD = '''
import argparse, os, time
import cv2
parser = argparse.ArgumentParser()
parser.add_argument("-i", required=True)
parser.add_argument("-o", required=True)
args = parser.parse_args()
gt_dir = os.path.join(os.path.dirname(os.path.abspath(args.i)), "GT")
if not os.path.isdir(args.o):
    os.makedirs(args.o)
names = sorted(os.listdir(args.i))
start = time.time()
for name in names:
    label = cv2.imread(os.path.join(gt_dir, name), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(os.path.join(args.o, name), OUTPUT)
print("%.6f" % (time.time() - start))
'''

PROGRAMS = {
    "good": GOOD.replace("OUTPUT", "label"),
    "crash": 'import sys\nsys.stderr.write("loading weights\\n")\nraise RuntimeError("no model found")\n',
    "sleepy": "import time\ntime.sleep(60)\n",
    "two_numbers": GOOD.replace("OUTPUT", "label") + 'print("0.5")\n',
    "too_few": GOOD.replace("OUTPUT", "label").replace("for name in names:", "for name in names[:1]:"),
    "big_ids": GOOD.replace("OUTPUT", "label + 14"),
}



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Three 512x512 inputs with 1-channel GT: DATA/IMG and DATA/GT."""
    root = tmp_path_factory.mktemp("data")
    (root / "IMG").mkdir()
    (root / "GT").mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        small = rng.integers(0, 14, (16, 16)).astype(np.uint8)
        label = cv2.resize(small, (512, 512), interpolation=cv2.INTER_NEAREST)
        name = "img_{}.png".format(index)
        cv2.imwrite(str(root / "GT" / name), label)
        cv2.imwrite(str(root / "IMG" / name), cv2.cvtColor(label * 18, cv2.COLOR_GRAY2BGR))
    return root


def evaluate(tmp_path, program, data_dir, timeout="60"):
    archive = make_pyz(tmp_path, program, PROGRAMS[program])
    out = tmp_path / "output"
    env = dict(os.environ, PYTHON=sys.executable, TIMEOUT=timeout, OUTPUT_DIR=str(out))
    result = subprocess.run(["bash", str(EVALUATE), str(archive), str(data_dir)], env=env,
                            capture_output=True, text=True, timeout=120)
    report_path = out / (program + ".json")
    assert report_path.is_file(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    return result, report, out / program


def test_perfect_solution_scores_and_reports_everything(tmp_path, data_dir):
    result, report, run_dir = evaluate(tmp_path, "good", data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["status"] == "scored" and report["exit_status"] == 0
    assert report["mean_dice"] == 1.0 and report["miou"] == 1.0 and report["images"] == 3
    assert report["reported_seconds"] >= 0 and report["wall_seconds"] > 0
    assert report["score"] == pytest.approx(1.0 / (report["reported_seconds"] / 3), rel=1e-6)
    assert report["score_wall"] == pytest.approx(1.0 / (report["wall_seconds"] / 3), rel=1e-6)
    assert report["ms_per_image_wall"] == pytest.approx(report["wall_seconds"] * 1000 / 3, rel=1e-6)
    assert report["solution_exit_status"] == 0 and report["name"] == "good"
    for row in ("mean Dice (referee)", "mIoU", "reported seconds", "wall seconds",
                "ms per image (reported)", "ms per image (wall)", "score with wall-clock", "SCORED"):
        assert row in result.stdout
    assert sorted(p.name for p in (run_dir / "pred").iterdir()) == ["img_0.png", "img_1.png", "img_2.png"]


def test_crash_fails_with_the_exit_status_and_stderr(tmp_path, data_dir):
    result, report, run_dir = evaluate(tmp_path, "crash", data_dir)
    assert result.returncode == 1
    assert report["status"] == "failed" and report["solution_exit_status"] == 1
    assert report["mean_dice"] is None and report["score"] is None and "partial" not in report
    assert "exited with status 1" in report["reason"] and "no model found" in report["reason"]
    assert "loading weights" in (run_dir / "stderr.log").read_text()  # stderr kept, not thrown away
    assert "no model found" in result.stdout


@pytest.mark.slow  # waits out a timeout
def test_timeout_gives_status_2(tmp_path, data_dir):
    result, report, _ = evaluate(tmp_path, "sleepy", data_dir, timeout="1")
    assert result.returncode == 2
    assert report["status"] == "timed_out" and "timed out" in report["reason"]
    assert report["wall_seconds"] < 30  # killed, not waited for
    assert "TIMED OUT" in result.stdout


def test_two_numbers_on_stdout_fail(tmp_path, data_dir):
    result, report, _ = evaluate(tmp_path, "two_numbers", data_dir)
    assert result.returncode == 1
    assert report["status"] == "failed" and "2 numbers" in report["reason"]
    # the outputs are scored for information, but a failed report ranks nothing (fault 9)
    assert report["mean_dice"] is None and report["score"] is None and report["score_wall"] is None
    assert report["partial"]["mean_dice"] == 1.0 and report["partial"]["images"] == 3
    assert "partial, not a result" in result.stdout


def test_too_few_outputs_fail_naming_the_missing(tmp_path, data_dir):
    result, report, _ = evaluate(tmp_path, "too_few", data_dir)
    assert result.returncode == 1
    assert report["status"] == "failed"
    assert report["missing"] == ["img_1.png", "img_2.png"]
    assert "img_1.png" in report["reason"]
    # fault 9 of issue 12: this reported status failed with score ~ 1.0 / (s / 3) from the one mask
    for key in ("mean_dice", "miou", "score", "score_wall"):
        assert report[key] is None, key
    assert report["partial"] == {"mean_dice": 1.0, "miou": 1.0, "images": 1, "of": 3,
                                 "note": report["partial"]["note"]}
    assert "not a result" in report["partial"]["note"]
    assert "score = Dice" not in result.stdout  # the text shows no score row either


def test_ids_above_13_fail_naming_the_file(tmp_path, data_dir):
    result, report, _ = evaluate(tmp_path, "big_ids", data_dir)
    assert result.returncode == 1
    assert report["status"] == "failed"
    assert "img_0.png" in report["reason"] and "outside [0, 14)" in report["reason"]


def test_missing_data_folder_still_writes_a_json(tmp_path):
    archive = make_pyz(tmp_path, "good", PROGRAMS["good"])
    out = tmp_path / "output"
    env = dict(os.environ, PYTHON=sys.executable, OUTPUT_DIR=str(out))
    result = subprocess.run(["bash", str(EVALUATE), str(archive), str(tmp_path / "nowhere")],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    report = json.loads((out / "good.json").read_text())
    assert report["status"] == "failed" and "IMG/" in report["reason"]
    assert report["mean_dice"] is None and report["score"] is None


def test_help_and_executable_bit():
    assert os.access(str(EVALUATE), os.X_OK)
    result = subprocess.run(["bash", str(EVALUATE), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "TIMEOUT" in result.stdout and "OUTPUT_DIR" in result.stdout


def test_in_a_checkout_the_default_interpreter_is_the_checkouts_venv(tmp_path, data_dir):
    # `cd evaluation && ./evaluate.bash solution.pyz` must work as the sample solution's README says:
    # the venv of `make setup` has numpy, OpenCV and Pillow; the bare python3 may not.
    import shutil

    checkout = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "evaluation", checkout / "evaluation",
                    ignore=shutil.ignore_patterns("output", "test", "__pycache__"))
    (checkout / ".venv").symlink_to(sys.prefix, target_is_directory=True)  # this test's own environment
    venv_python = checkout / ".venv" / "bin" / "python"
    archive = make_pyz(tmp_path, "good", PROGRAMS["good"])
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["OUTPUT_DIR"] = str(tmp_path / "output")
    result = subprocess.run(["./evaluate.bash", str(archive), str(data_dir)], cwd=checkout / "evaluation",
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(venv_python) in result.stderr, "the run names the interpreter it used"
    (checkout / ".venv").unlink()  # a bare evaluation/ folder, as on the scoring machine: python3 from PATH
    result = subprocess.run(["./evaluate.bash", str(archive), str(data_dir)], cwd=checkout / "evaluation",
                            env=env, capture_output=True, text=True, timeout=120)
    running = next(line for line in result.stderr.splitlines() if line.startswith("running good"))
    assert ".venv" not in running and running.rstrip(")").endswith("python3"), running
