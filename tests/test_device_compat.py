"""The folders that ship to the device must run on Python 3.6 and stand alone."""
import ast
import pathlib
import subprocess
import sys

import pytest

from evaluation.contract import DEVICE_PACKAGES, VERMIN_FLAGS

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVICE_FOLDERS = [name for name in ("networks", "solution", "evaluation") if (REPO_ROOT / name).is_dir()]


def python_files(folder):
    return sorted((REPO_ROOT / folder).rglob("*.py"))


def imported_top_level_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_vermin_finds_no_python_36_violations(folder):
    # vermin has no __main__ module, so call its entry point through the running interpreter
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
    result = subprocess.run(command + list(VERMIN_FLAGS) + [folder], cwd=str(REPO_ROOT),
                            capture_output=True, text=True, timeout=120)
    report = result.stdout + result.stderr
    assert result.returncode == 0 and "requires" not in report.lower(), report


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_device_code_never_imports_lowpower(folder):
    offenders = [str(path.relative_to(REPO_ROOT)) for path in python_files(folder)
                 if "lowpower" in set(imported_top_level_modules(path))]
    assert offenders == []


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_device_code_imports_only_what_the_device_has(folder):
    siblings = {path.stem for path in (REPO_ROOT / folder).glob("*.py")}  # script-mode imports
    allowed = set(sys.stdlib_module_names) | DEVICE_PACKAGES | set(DEVICE_FOLDERS) | siblings
    offenders = sorted("{}: {}".format(path.relative_to(REPO_ROOT), module)
                       for path in python_files(folder)
                       for module in set(imported_top_level_modules(path)) - allowed)
    assert offenders == []
