"""The folders that ship to the device must run on Python 3.6 and stand alone.

The rules are lowpower.ship.pyz's (the ones presubmit applies to every package: import statements and
imports written as code, one scan) with the device facts of evaluation.contract, so this test and
presubmit cannot drift apart.
"""
import pathlib

import pytest

from lowpower.ship.pyz import device_has, own_modules, scan_folder, vermin_check

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVICE_FOLDERS = [name for name in ("networks", "solution", "evaluation") if (REPO_ROOT / name).is_dir()]


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_vermin_finds_no_python_36_violations(folder):
    result = vermin_check(REPO_ROOT / folder)
    assert result.ok is not None, result.text  # vermin is pinned in requirements.txt
    assert result.ok, "\n".join(result.violations) or result.text


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_device_code_never_imports_lowpower(folder):
    offenders = [str(item) for item in scan_folder(REPO_ROOT / folder).imports if item.top == "lowpower"]
    assert offenders == []


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_device_code_imports_only_what_the_device_has(folder):
    # its sibling modules (script-mode imports) and the other device folders (they ship together)
    local = own_modules(REPO_ROOT / folder) | set(DEVICE_FOLDERS)
    scan = scan_folder(REPO_ROOT / folder)
    offenders = [str(item) for item in scan.imports
                 if item.level == 0 and not device_has(item.module) and item.top not in local]
    assert scan.unparsable == [] and offenders == []


@pytest.mark.parametrize("folder", DEVICE_FOLDERS)
def test_device_code_has_no_dynamic_import_presubmit_would_warn_about(folder):
    assert [str(item) for item in scan_folder(REPO_ROOT / folder).dynamic] == []
