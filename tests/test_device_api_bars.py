"""Issue 16's bars, on the real index of the device's wheels: newer API added to a copy of a shipped
network fails `lowpower device-api check` and presubmit, naming file, line and name; the
same guarded passes; today's device folders pass."""
import shutil
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

from lowpower.ship.device_api.check import check_paths
from lowpower.ship.presubmit.cli import check as presubmit_check
from lowpower.ship.presubmit.static import device_api_index

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "\nimport torch.nn.functional as F  # noqa\nimport torchvision  # noqa\nfrom PIL import Image  # noqa\n"
# name the check must report -> the line that uses it
NEWER = {
    "torch.nn.functional.interpolate(antialias=)":
        "F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False, antialias=True)",
    "torchvision.models.resnet18(weights=)": "torchvision.models.resnet18(weights=None)",
    "torch.compile": "torch.compile(model)",
    "PIL.Image.Resampling": "Image.Resampling.BILINEAR",
}
GUARDED = """
def _guarded(model, x):
    if hasattr(torch, 'compile'):
        model = torch.compile(model)
    try:
        net = torchvision.models.resnet18(weights=None)
    except TypeError:
        net = torchvision.models.resnet18(pretrained=False)
    mode = getattr(Image, 'Resampling', Image).BILINEAR
    try:
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False, antialias=True), net, mode
    except TypeError:
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False), net, mode
"""


@pytest.fixture(scope="module")
def index():
    return device_api_index()  # fetched and built on first use (about 90 MB once), then cached


def network_copy(tmp_path, body):
    """networks/ copied with ``body`` appended to unet.py; returns (folder, the lines each use sits on)."""
    folder = tmp_path / "networks"
    shutil.copytree(ROOT / "networks", folder, ignore=shutil.ignore_patterns("__pycache__"))
    unet = folder / "unet.py"
    text = unet.read_text() + IMPORTS + body
    unet.write_text(text)
    lines = {name: next(i for i, line in enumerate(text.splitlines(), 1) if use in line)
             for name, use in NEWER.items() if use in body}
    return folder, lines


def newer_body():
    return "\n\ndef _newer(model, x):\n" + "".join("    _ = %s\n" % use for use in NEWER.values())


@pytest.mark.parametrize("folder", ["networks", "solution", "evaluation"])
def test_todays_device_folders_use_only_what_the_device_has(index, folder):
    missing = [str(item) for item in check_paths([str(ROOT / folder)], index) if item.status == "missing"]
    assert missing == []


def test_newer_api_fails_the_check_naming_file_line_and_name(index, tmp_path):
    folder, lines = network_copy(tmp_path, newer_body())
    found = {(item.name, item.line) for item in check_paths([str(folder)], index)
             if item.status == "missing" and item.file.endswith("unet.py")}
    assert found == {(name, line) for name, line in lines.items()}


def test_the_same_api_guarded_passes_as_guarded(index, tmp_path):
    folder, _ = network_copy(tmp_path, GUARDED)
    findings = check_paths([str(folder)], index)
    assert [str(item) for item in findings if item.status == "missing"] == []
    guarded = {item.name for item in findings if item.status == "guarded"}
    assert {"torch.compile", "PIL.Image.Resampling"} <= guarded


def test_the_cli_exits_1_and_prints_file_line_and_name(index, tmp_path):
    folder, lines = network_copy(tmp_path, newer_body())
    result = subprocess.run([sys.executable, "-m", "lowpower", "device-api", "check", str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    for name, line in lines.items():
        assert "unet.py:%d: %s" % (line, name) in result.stdout, (name, result.stdout)


@pytest.mark.slow  # a full presubmit run of the package
def test_presubmit_fails_a_package_with_newer_api(index, tmp_path):
    folder, _ = network_copy(tmp_path, newer_body())
    source = tmp_path / "pkg"
    shutil.copytree(folder, source / "networks")
    (source / "__main__.py").write_text("import networks.unet\nprint('0.5')\n")
    archive = tmp_path / "solution.pyz"
    zipapp.create_archive(str(source), str(archive), interpreter="/usr/bin/env python3")
    rows = {row["check"]: row for row in presubmit_check(str(archive), samples=1).rows}
    assert rows["device API"]["result"] == "FAIL"
    assert "networks/unet.py:" in rows["device API"]["detail"] and "torch.compile" in rows["device API"]["detail"]
