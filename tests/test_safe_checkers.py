"""Issue 23, items 9 and 10: presubmit runs a package as the referee does, and the checkers fail
what they could not check.

- 9: the official 2023 sample writes its masks into -o without creating it; the referee creates the
  folder first. evaluate.bash scores such a package and presubmit passes it, and the rule that
  creates the folder lives in one place (``evaluation.contract.prepare_output``), read by both.
- 10: ``lowpower device-api check`` fails a file that does not parse (file:line, exit 1) and
  refuses a path with no .py file (one line, exit 2); presubmit resolves imports written as code
  (exec, eval, __import__, importlib, their aliases, the builtins) and judges them like import
  statements, and warns with file:line about those it cannot resolve; our own package gets no
  new warning.

The stand-in for the official sample imports pkg_resources and imageio for real: both are on the
device's list (``evaluation.contract.DEVICE_PACKAGES``) and requirements.txt pins them here
(setuptools 81 still has pkg_resources), so the run is the run the device would make, no stub.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import contract
from lowpower.cli import main as lowpower_main
from lowpower.ship.presubmit import cli as presubmit
from lowpower.ship.presubmit import static
from lowpower.ship.presubmit.report import Report
from lowpower.ship.pyz import scan_folder
from lowpower.ship.runner import run_pyz
from tests.conftest import make_pyz

REPO_ROOT = Path(__file__).resolve().parent.parent
EVALUATE = REPO_ROOT / "evaluation" / "evaluate.bash"

# ----------------------------------------------------------------------------- item 9

# The official sample's habits: a main module beside __main__.py, pkg_resources and imageio imported
# at the top, images read and masks written with imageio, the masks written straight into -o (never
# created), one float printed. The masks are channel 0 // 18 of the input, which gt_samples makes
# equal to the GT (its images are label * 18), so a correct run scores a Dice of 1.
SAMPLE_MAIN = '''
import os
import time
from argparse import ArgumentParser

import numpy as np
import pkg_resources
from imageio import imread, imwrite


def main():
    parser = ArgumentParser()
    parser.add_argument("-i", "--input", type=str, required=True)
    parser.add_argument("-o", "--output", type=str, required=True)
    args = parser.parse_args()
    step = int(pkg_resources.resource_string(__name__, "step.txt").decode().strip())
    seconds = 0.0
    for name in sorted(os.listdir(args.input)):
        image = imread(os.path.join(args.input, name))
        start = time.time()
        mask = (np.asarray(image)[:, :, 0] // step).astype(np.uint8)
        seconds += time.time() - start
        imwrite(os.path.join(args.output, name), mask)
    print("%.6f" % seconds)
'''


def sample_package(folder):
    assert "makedirs" not in SAMPLE_MAIN and "mkdir" not in SAMPLE_MAIN  # -o is the referee's to create
    return make_pyz(folder, "sample", "from main import main\n\nmain()\n", {"main.py": SAMPLE_MAIN, "step.txt": "18\n"})


def evaluate(archive, data, out, evaluate_bash=EVALUATE):
    """evaluate.bash on ``archive``; returns (exit status, its JSON report, its output)."""
    env = dict(os.environ, PYTHON=sys.executable, TIMEOUT="60", OUTPUT_DIR=str(out))
    result = subprocess.run(["bash", str(evaluate_bash), str(archive), str(data)], env=env, capture_output=True,
                            text=True, timeout=120)
    report = out / (archive.stem + ".json")
    assert report.is_file(), result.stdout + result.stderr
    return result.returncode, json.loads(report.read_text()), result.stdout + result.stderr


def presubmit_rows(capsys, *argv):
    """presubmit in-process: (exit status, {check: (result, detail)}, text)."""
    status = presubmit.main([str(item) for item in argv])
    text = capsys.readouterr().out
    rows = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            break
        name, rest = line[:line.index("  ")], line[line.index("  "):].strip()
        rows[name] = (rest.split()[0], rest[len(rest.split()[0]):].strip())
    return status, rows, text


def test_the_devices_packages_the_sample_imports_are_installed_here():
    # the stand-in runs them for real; requirements.txt pins both for this reason
    assert {"pkg_resources", "imageio"} <= contract.DEVICE_PACKAGES
    for name in ("pkg_resources", "imageio"):
        assert subprocess.run([sys.executable, "-I", "-W", "ignore", "-c", "import " + name],
                              timeout=60).returncode == 0, name


def test_official_sample_style_package_is_scored_by_evaluate_and_passed_by_presubmit(tmp_path, capsys, gt_samples):
    archive = sample_package(tmp_path)
    status, report, output = evaluate(archive, gt_samples, tmp_path / "evaluate")
    assert status == 0 and report["status"] == "scored", output
    assert report["mean_dice"] == 1.0 and report["images"] == 2

    status, rows, text = presubmit_rows(capsys, archive, "--images", gt_samples)
    assert status == 0, text
    for name in ("imports", "run", "stdout", "outputs"):
        assert rows[name][0] == "PASS", (name, text)
    assert "dynamic imports" not in rows and "optional imports" not in rows
    assert "mean Dice 1.0000" in rows["accuracy"][1]


RECORD = '''
import os, shutil, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(os.environ["SAFE_CHECKERS_RECORD"], "w") as handle:
    handle.write("existed" if os.path.isdir(args["-o"]) else "absent")
if not os.path.isdir(args["-o"]):
    os.makedirs(args["-o"])
gt = os.path.join(os.path.dirname(os.path.abspath(args["-i"])), "GT")
for name in sorted(os.listdir(args["-i"])):
    shutil.copyfile(os.path.join(gt, name), os.path.join(args["-o"], name))
print("0.012345")
'''


def output_folder_seen(archive, data, tmp_path, monkeypatch, evaluate_bash, tag):
    """(what evaluate.bash's run found at -o, what run_pyz's run found): 'existed' or 'absent'."""
    records = tmp_path / (tag + "_evaluate.txt"), tmp_path / (tag + "_run_pyz.txt")
    monkeypatch.setenv("SAFE_CHECKERS_RECORD", str(records[0]))
    status, _, output = evaluate(archive, data, tmp_path / (tag + "_evaluate"), evaluate_bash)
    assert status == 0, output
    monkeypatch.setenv("SAFE_CHECKERS_RECORD", str(records[1]))
    run = run_pyz(archive, data / "IMG", tmp_path / tag / "pred", timeout=60)
    assert run.ok, run.stderr
    return records[0].read_text(), records[1].read_text()


def test_both_runners_create_the_output_folder_by_the_one_rule_in_the_contract(tmp_path, gt_samples, monkeypatch):
    archive = make_pyz(tmp_path, "record", RECORD)
    assert output_folder_seen(archive, gt_samples, tmp_path, monkeypatch, EVALUATE, "today") == ("existed", "existed")

    # The rule changed in contract.py alone (a copy of evaluation/ for evaluate.bash, the module for
    # run_pyz) changes both runs: neither has a second copy of it.
    copy = tmp_path / "copy" / "evaluation"
    shutil.copytree(str(REPO_ROOT / "evaluation"), str(copy), ignore=shutil.ignore_patterns("output", "test",
                                                                                               "__pycache__"))
    text = (copy / "contract.py").read_text()
    assert "OUTPUT_FOLDER_CREATED = True" in text
    (copy / "contract.py").write_text(text.replace("OUTPUT_FOLDER_CREATED = True", "OUTPUT_FOLDER_CREATED = False"))
    monkeypatch.setattr(contract, "OUTPUT_FOLDER_CREATED", False)
    seen = output_folder_seen(archive, gt_samples, tmp_path, monkeypatch, copy / "evaluate.bash", "off")
    assert seen == ("absent", "absent")


def test_prepare_output_creates_a_missing_folder_and_leaves_an_existing_one_alone(tmp_path):
    folder = tmp_path / "a" / "pred"
    contract.prepare_output(folder)
    assert folder.is_dir()
    (folder / "mine.png").write_bytes(b"kept")
    contract.prepare_output(folder)
    assert (folder / "mine.png").read_bytes() == b"kept"  # never emptied: nothing of the user's is removed
    result = subprocess.run([sys.executable, "-I", str(REPO_ROOT / "evaluation" / "contract.py"), "--prepare-output",
                             str(tmp_path / "b" / "pred")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and (tmp_path / "b" / "pred").is_dir(), result.stderr
    (tmp_path / "file").write_text("x")
    result = subprocess.run([sys.executable, "-I", str(REPO_ROOT / "evaluation" / "contract.py"), "--prepare-output",
                             str(tmp_path / "file")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "file") in result.stderr


# ----------------------------------------------------------------------------- item 10: device-api check

# A minimal index in the fetch half's format: enough for the check to run offline.
INDEX = {"format": 1, "packages": {"torch": "1.10.2"}, "partial": [],
         "modules": {"torch": {"zeros": {"kind": "function", "params": ["size"], "varkw": False}}}, "classes": {}}
BROKEN = "import torch\n\ndef f(:\n    return torch.zeros(3)\n"  # the syntax error is on line 3


@pytest.fixture
def index_file(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(INDEX))
    return str(path)


def test_device_api_check_fails_a_file_that_does_not_parse_naming_file_and_line(tmp_path, index_file, capsys):
    bad = tmp_path / "src" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(BROKEN)
    (tmp_path / "src" / "good.py").write_text("import torch\ntorch.zeros(3)\n")
    for target in (bad, bad.parent):
        assert lowpower_main(["device-api", "check", str(target), "--index", index_file]) == 1
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("{}:3: ".format(bad)) and "does not parse" in out[0], out
        assert "1 not parsed" in out[-1]


def test_device_api_check_of_a_path_without_python_files_exits_2_with_one_line(tmp_path, index_file, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("no code here\n")
    for target in (empty, tmp_path / "notes"):
        assert lowpower_main(["device-api", "check", str(target), "--index", index_file]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and str(target) in lines[0] and "no .py files" in lines[0], lines
    # one empty path among good ones is still refused: it was named, so something was meant
    good = tmp_path / "good.py"
    good.write_text("import torch\n")
    assert lowpower_main(["device-api", "check", str(good), str(empty), "--index", index_file]) == 2


def test_presubmit_fails_a_package_file_that_does_not_parse(tmp_path):
    archive = make_pyz(tmp_path, "broken", "print('1.0')\n", {"helpers/broken.py": BROKEN})
    report = Report()
    (tmp_path / "work").mkdir()
    static.static_checks(archive, report, tmp_path / "work")
    rows = {row["check"]: row for row in report.rows}
    assert rows["imports"]["result"] == "FAIL" and "helpers/broken.py" in rows["imports"]["detail"]
    if rows["device API"]["result"] != "WARN":  # WARN: this machine could not fetch the wheels
        assert rows["device API"]["result"] == "FAIL" and "helpers/broken.py:3" in rows["device API"]["detail"]


# ----------------------------------------------------------------------------- item 10: presubmit's imports

# (the code, kept in a module the program never imports, the line it sits on there, the verdict).
# FAIL: an import of a package the device lacks that the check resolves; WARN: one it cannot resolve.
HIDDEN_FORMS = {
    "exec of a constant": ('exec("import tensorflow")', 1, "FAIL"),
    "exec of a from-import": ('exec("from tensorflow import keras")', 1, "FAIL"),
    "eval of __import__": ("eval(\"__import__('tensorflow')\")", 1, "FAIL"),
    "__import__": ('__import__("tensorflow")', 1, "FAIL"),
    "importlib.import_module": ('import importlib\nimportlib.import_module("tensorflow")', 2, "FAIL"),
    "getattr(importlib, ...)": ('import importlib\ngetattr(importlib, "import_module")("tensorflow")', 2, "FAIL"),
    "an alias": ('import importlib\nim = importlib.import_module\nim("tensorflow")', 3, "FAIL"),
    "from importlib import ... as": ('from importlib import import_module as f\nf("tensorflow")', 2, "FAIL"),
    "__builtins__[...]": ('__builtins__["__import__"]("tensorflow")', 1, "FAIL"),
    "__builtins__.__import__": ('__builtins__.__import__("tensorflow")', 1, "FAIL"),
    "builtins.__import__": ('import builtins\nbuiltins.__import__("tensorflow")', 2, "FAIL"),
    "exec(compile(...))": ('exec(compile("import tensorflow", "f", "exec"))', 1, "FAIL"),
    "exec of exec": ("exec(\"exec('import tensorflow')\")", 1, "FAIL"),
    "exec of a computed string": ('code = "import " + "tensorflow"\nexec(code)', 2, "WARN"),
    "eval of a computed string": ("eval(input())", 1, "WARN"),
    "exec of a string that does not parse": ('exec("import (")', 1, "WARN"),
    "__import__ of a computed name": ('__import__("tensor" + "flow")', 1, "WARN"),
    "an alias, a computed name": ('import importlib\nim = importlib.import_module\nim(name)', 3, "WARN"),
    "getattr(importlib, computed)": ('import importlib\ngetattr(importlib, "import_" + "module")("x")', 2, "WARN"),
    "__builtins__[computed]": ('__builtins__["__imp" + "ort__"]("x")', 1, "WARN"),
    "passed on as a value": ('import importlib\nmodules = list(map(importlib.import_module, names))', 2, "WARN"),
    "loaded from a path": ('import runpy\nrunpy.run_path("/tmp/x.py")', 2, "WARN"),
}


@pytest.mark.parametrize("form", sorted(HIDDEN_FORMS))
def test_presubmit_judges_each_import_written_as_code_with_file_and_line(form, tmp_path):
    code, line, verdict = HIDDEN_FORMS[form]
    archive = make_pyz(tmp_path, "hidden", "print('1.0')\n", {"tools/hidden.py": code + "\n"})
    report = Report()
    (tmp_path / "work").mkdir()
    static.static_checks(archive, report, tmp_path / "work")
    rows = {row["check"]: row for row in report.rows}
    where = "tools/hidden.py:{}".format(line)
    if verdict == "FAIL":
        assert rows["imports"]["result"] == "FAIL", rows
        assert "tensorflow" in rows["imports"]["detail"] and where + " tensorflow" in rows["imports"]["detail"]
        assert "dynamic imports" not in rows, rows["dynamic imports"]  # resolved: nothing left unseen
    else:
        assert rows["imports"]["result"] == "PASS", rows["imports"]
        assert rows["dynamic imports"]["result"] == "WARN" and where in rows["dynamic imports"]["detail"], rows


def test_a_resolved_import_of_a_device_package_or_guarded_one_is_not_a_failure(tmp_path):
    code = ('exec("import numpy")\n__import__("cv2")\n'
            'try:\n    exec("import tensorflow")\nexcept ImportError:\n    tensorflow = None\n')
    archive = make_pyz(tmp_path, "fine", "print('1.0')\n", {"tools/fine.py": code})
    report = Report()
    (tmp_path / "work").mkdir()
    static.static_checks(archive, report, tmp_path / "work")
    rows = {row["check"]: row for row in report.rows}
    assert rows["imports"]["result"] == "PASS" and "dynamic imports" not in rows
    optional = rows["optional imports"]
    assert optional["result"] == "WARN" and "tools/fine.py:4 tensorflow" in optional["detail"]


def test_model_eval_and_re_compile_are_not_imports(tmp_path):
    code = ("import re\nPATTERN = re.compile('x')\n\n"
            "def run(model, name):\n    model.eval()\n    return getattr(model, name)\n")
    archive = make_pyz(tmp_path, "plain", "print('1.0')\n", {"tools/plain.py": code})
    report = Report()
    (tmp_path / "work").mkdir()
    static.static_checks(archive, report, tmp_path / "work")
    assert [row["check"] for row in report.rows if row["result"] in ("WARN", "FAIL")] == []


def test_presubmit_fails_exec_of_an_absent_package_end_to_end(tmp_path, capsys, gt_samples, monkeypatch):
    source = RECORD.replace("print(", 'exec("import tensorflow") if False else None\nprint(')
    archive = make_pyz(tmp_path, "exec", source)
    monkeypatch.setenv("SAFE_CHECKERS_RECORD", str(tmp_path / "record.txt"))
    status, rows, text = presubmit_rows(capsys, archive, "--images", gt_samples)
    assert status == 1 and rows["imports"][0] == "FAIL", text
    assert "__main__.py:" in rows["imports"][1] and "tensorflow (written as code)" in rows["imports"][1]
    assert rows["run"][0] == "PASS"  # it runs here: only the check saw what the device would lack


def test_our_own_package_gets_no_warning_from_the_import_checks(float_package, tmp_path):
    report = Report()
    (tmp_path / "work").mkdir()
    static.static_checks(str(float_package["path"]), report, tmp_path / "work")
    flagged = {row["check"]: row["detail"] for row in report.rows if row["result"] in ("WARN", "FAIL")}
    if flagged.get("device API", "").startswith("not checked"):  # this machine could not fetch the wheels
        del flagged["device API"]
    assert flagged == {}


@pytest.mark.parametrize("folder", ["solution", "networks", "evaluation"])
def test_our_device_folders_write_no_import_as_code(folder):
    scan = scan_folder(REPO_ROOT / folder)
    written = [str(item) for item in scan.imports if item.dynamic]
    assert written == [] and [str(item) for item in scan.dynamic] == []


# ----------------------------------------------------------------------------- bounds

@pytest.mark.parametrize("option, value, words", [
    ("--samples", "0", "under 1"), ("--samples", "100000", "over"),
    ("--timeout", "0", "under"), ("--timeout", "1e9", "over"),
    ("--device-slowdown", "0", "under"), ("--device-slowdown", "1e6", "over"),
    ("--memory-budget", "0", "under"), ("--memory-budget", "1TiB", "over"),
])
def test_presubmit_refuses_numbers_out_of_bounds_with_a_reason(option, value, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        presubmit.parse_args(["solution.pyz", option, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert option in error and words in error and ": " in error.split(words, 1)[1], error
