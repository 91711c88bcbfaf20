"""evaluate.bash and run_pyz run a package the same way: the contract's flags and timeout, one verdict.

Each fake package (one __main__.py, zipped with zipapp) records how it was started: its argv, the
interpreter's own command line, sys.flags, sys.warnoptions, whether PYTHONPATH reached it, whether
its -o folder existed. Then it behaves well or commits one fault. The same archive runs through
``evaluation/evaluate.bash`` and through ``lowpower.ship.runner.run_pyz`` followed by the scorer;
the records and the verdicts must be the same.
"""
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import contract
from evaluation.contract import INTERPRETER_FLAGS, OUTPUT_SIZE, REFEREE_TIMEOUT, only_a_float
from evaluation.folders import score_folders
from lowpower.ship.runner import run_pyz
from tests.conftest import make_pyz

REPO_ROOT = Path(__file__).resolve().parent.parent
EVALUATE = REPO_ROOT / "evaluation" / "evaluate.bash"
SMALL_TIMEOUT = 2.0  # for every run here: the well-behaved packages end in well under a second

RECORD = '''
import argparse, json, os, shutil, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("-i", required=True)
parser.add_argument("-o", required=True)
args = parser.parse_args()
try:
    import leak_probe  # only on the caller's PYTHONPATH, which an isolated run ignores
    leaked = True
except ImportError:
    leaked = False
record = {
    "argv": sys.argv, "orig_argv": getattr(sys, "orig_argv", None),
    "isolated": sys.flags.isolated, "ignore_environment": sys.flags.ignore_environment,
    "no_user_site": sys.flags.no_user_site, "warnoptions": sys.warnoptions,
    "leaked": leaked, "out_existed": os.path.isdir(args.o),
}
with open(os.environ["ONE_RUNNER_RECORD"], "w") as handle:
    json.dump(record, handle)
gt = os.path.join(os.path.dirname(os.path.abspath(args.i)), "GT")


def write_masks():  # the GT itself: a perfect answer
    if not os.path.isdir(args.o):
        os.makedirs(args.o)
    for name in sorted(os.listdir(args.i)):
        shutil.copyfile(os.path.join(gt, name), os.path.join(args.o, name))
'''

PROGRAMS = {  # name: (what it does after recording, the verdict both runners must give)
    "good": ('write_masks()\nprint("0.012345")\n', "scored"),
    "two_numbers": ('write_masks()\nprint("0.012345")\nprint("0.5")\n', "failed"),
    "exits_non_zero": ('write_masks()\nprint("0.012345")\nsys.exit(3)\n', "failed"),
    "no_masks": ('print("0.012345")\n', "failed"),
    "sleeps_past_timeout": ('time.sleep(60)\n', "timed_out"),
}



@pytest.fixture()
def caller_env(tmp_path):
    """The caller's environment with a PYTHONPATH and PYTHONWARNINGS that an isolated run ignores."""
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "leak_probe.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "TIMEOUT", "OUTPUT_DIR")}
    env.update(PYTHONPATH=str(leak), PYTHONWARNINGS="default")
    return env


def by_evaluate(archive, data, tmp_path, env, timeout=SMALL_TIMEOUT, evaluate=EVALUATE):
    """evaluate.bash, called from an unrelated folder with a relative archive path and PYTHON set to
    this venv's interpreter; returns (verdict, exit status, JSON report, record)."""
    record, out, elsewhere = tmp_path / "evaluate_record.json", tmp_path / "evaluate_out", tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = dict(env, PYTHON=sys.executable, OUTPUT_DIR=str(out), ONE_RUNNER_RECORD=str(record))
    if timeout is not None:
        env["TIMEOUT"] = contract.seconds_text(timeout)
    result = subprocess.run(["bash", str(evaluate), os.path.relpath(str(archive), str(elsewhere)), str(data)],
                            cwd=str(elsewhere), env=env, capture_output=True, text=True, timeout=120)
    report_path = out / (archive.stem + ".json")
    assert report_path.is_file(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert record.is_file(), result.stdout + result.stderr
    return report["status"], result.returncode, report, json.loads(record.read_text())


def by_run_pyz(archive, data, tmp_path, env, **options):
    """run_pyz, then the scorer's rule on what it did; returns (verdict, PyzRun, record)."""
    record, out = tmp_path / "run_pyz_record.json", tmp_path / "run_pyz_out"
    run = run_pyz(archive, data / "IMG", out, env=dict(env, ONE_RUNNER_RECORD=str(record)), **options)
    if run.timed_out:
        verdict = "timed_out"
    elif run.exit_code != 0 or only_a_float(run.stdout) is None or not out.is_dir():
        verdict = "failed"
    else:
        scored = score_folders(str(out), str(data / "GT"), workers=1, expect_size=OUTPUT_SIZE)
        verdict = "scored" if scored["status"] == "scored" else "failed"
    assert record.is_file(), run.stderr
    return verdict, run, json.loads(record.read_text())


def interpreter_flags(record):
    """What came between the interpreter and the archive on its command line (Python 3.10+)."""
    orig = record["orig_argv"]
    return orig[1:orig.index(record["argv"][0])] if orig else None


@pytest.mark.parametrize("program", [pytest.param(name, marks=pytest.mark.slow) if name == "sleeps_past_timeout"
                                     else name for name in sorted(PROGRAMS)])  # that one waits out a timeout
def test_both_runners_start_it_alike_and_give_the_same_verdict(program, tmp_path, gt_samples, caller_env):
    source, expected = PROGRAMS[program]
    archive = make_pyz(tmp_path, program, RECORD + source)
    verdict_e, status_e, report, record_e = by_evaluate(archive, gt_samples, tmp_path, caller_env)
    verdict_r, run, record_r = by_run_pyz(archive, gt_samples, tmp_path, caller_env, timeout=SMALL_TIMEOUT)

    # the same verdict, and the one this package deserves
    assert verdict_e == verdict_r == expected, (report["reason"], run.stdout, run.stderr_tail())
    assert status_e == {"scored": 0, "failed": 1, "timed_out": 2}[expected]
    # the same interpreter state: isolated, PYTHONPATH and PYTHONWARNINGS ignored, warnings off
    for key in ("isolated", "ignore_environment", "no_user_site", "warnoptions", "leaked"):
        assert record_e[key] == record_r[key], key
    assert record_e["isolated"] == int("-I" in INTERPRETER_FLAGS)
    assert record_e["warnoptions"] == ["ignore"] and not record_e["leaked"]
    # the same command line: the contract's flags, then ARCHIVE -i IMG -o OUT
    if sys.version_info >= (3, 10):
        assert interpreter_flags(record_e) == interpreter_flags(record_r) == list(INTERPRETER_FLAGS)
        assert run.command[1:1 + len(INTERPRETER_FLAGS)] == list(INTERPRETER_FLAGS)
    for record in (record_e, record_r):
        assert record["argv"][1::2] == ["-i", "-o"] and len(record["argv"]) == 5
        assert Path(record["argv"][0]).resolve() == archive.resolve()
        assert Path(record["argv"][2]).resolve() == (gt_samples / "IMG").resolve()
    # the same limit in force
    assert report["timeout"] == run.timeout == SMALL_TIMEOUT
    if expected == "timed_out":
        assert SMALL_TIMEOUT <= report["wall_seconds"] < SMALL_TIMEOUT + 8
        assert SMALL_TIMEOUT <= run.wall_seconds < SMALL_TIMEOUT + 8


def test_by_default_both_use_the_contracts_timeout(tmp_path, gt_samples, caller_env):
    archive = make_pyz(tmp_path, "good", RECORD + PROGRAMS["good"][0])
    verdict_e, _, report, _ = by_evaluate(archive, gt_samples, tmp_path, caller_env, timeout=None)
    verdict_r, run, _ = by_run_pyz(archive, gt_samples, tmp_path, caller_env)
    assert verdict_e == verdict_r == "scored"
    assert report["timeout"] == run.timeout == REFEREE_TIMEOUT == 900
    assert inspect.signature(run_pyz).parameters["timeout"].default == REFEREE_TIMEOUT


def test_both_follow_the_contract_when_it_changes(tmp_path, gt_samples, caller_env, monkeypatch):
    # The flags and the timeout are read from contract.py, not repeated: a contract without -I and with
    # a 7 s limit changes both runs alike (evaluate.bash from a copy of evaluation/, run_pyz patched).
    copy = tmp_path / "copy"
    shutil.copytree(str(REPO_ROOT / "evaluation"), str(copy / "evaluation"),
                    ignore=shutil.ignore_patterns("output", "test", "__pycache__"))
    text = (copy / "evaluation" / "contract.py").read_text()
    for old, new in (("INTERPRETER_FLAGS = ('-I', '-W', 'ignore')", "INTERPRETER_FLAGS = ('-W', 'ignore')"),
                     ("REFEREE_TIMEOUT = 900.0", "REFEREE_TIMEOUT = 7.0")):
        assert old in text, old
        text = text.replace(old, new)
    (copy / "evaluation" / "contract.py").write_text(text)
    monkeypatch.setattr(contract, "INTERPRETER_FLAGS", ("-W", "ignore"))

    archive = make_pyz(tmp_path, "good", RECORD + PROGRAMS["good"][0])
    verdict_e, _, report, record_e = by_evaluate(archive, gt_samples, tmp_path, caller_env, timeout=None,
                                                 evaluate=copy / "evaluation" / "evaluate.bash")
    verdict_r, _, record_r = by_run_pyz(archive, gt_samples, tmp_path, caller_env, timeout=7.0)
    assert verdict_e == verdict_r == "scored"
    assert report["timeout"] == 7.0
    for record in (record_e, record_r):  # not isolated now: the caller's PYTHONPATH reaches the program
        assert record["isolated"] == 0 and record["leaked"] is True
        assert record["warnoptions"] == ["default", "ignore"]


def test_contract_prints_its_rules_for_the_shell():
    script = ('eval "$("$0" -I evaluation/contract.py --shell)"; '
              'printf "%s\\n" "$REFEREE_TIMEOUT" "${INTERPRETER_FLAGS[@]}"')
    result = subprocess.run(["bash", "-c", script, sys.executable], cwd=str(REPO_ROOT), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [contract.seconds_text(REFEREE_TIMEOUT)] + list(INTERPRETER_FLAGS)
    usage = subprocess.run([sys.executable, "evaluation/contract.py"], cwd=str(REPO_ROOT), capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode == 2 and "--shell" in usage.stderr


def test_both_runners_create_the_output_folder_first(tmp_path, gt_samples, caller_env):
    archive = make_pyz(tmp_path, "good", RECORD + PROGRAMS["good"][0])
    record_e = by_evaluate(archive, gt_samples, tmp_path, caller_env)[3]
    record_r = by_run_pyz(archive, gt_samples, tmp_path, caller_env, timeout=SMALL_TIMEOUT)[2]
    assert record_e["out_existed"] is True
    assert record_r["out_existed"] is True
