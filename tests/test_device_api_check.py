"""lowpower.ship.device_api.check against a small hand-written index (the real-index tests are the fetch half's).

The index below restates, in the fetch half's format, a few names as torch 1.10.2, torchvision
0.11.2 and Pillow 8.4.0 have them: no torch.compile, no antialias keyword, no weights= keyword, no
Image.Resampling, no torch.ao.
"""
import json
import subprocess
import sys
import zipapp
from pathlib import Path

import pytest

from lowpower.cli import main as lowpower_main
from lowpower.ship.device_api.check import CheckError, check_paths, check_source

ROOT = Path(__file__).resolve().parents[1]


def fn(*params, varkw=False):
    return {"kind": "function", "params": list(params), "varkw": varkw}


INDEX = {
    "format": 1,
    "packages": {"torch": "1.10.2", "torchvision": "0.11.2", "numpy": "1.19.5", "PIL": "8.4.0"},
    "partial": ["numpy"],
    "modules": {
        "torch": {"nn": {"kind": "module", "target": "torch.nn"}, "jit": {"kind": "module", "target": "torch.jit"},
                  "Tensor": {"kind": "class", "target": "torch.Tensor", "params": None, "varkw": False},
                  "float32": {"kind": "attribute"}, "zeros": fn("size", "out", "dtype", varkw=False)},
        "torch.nn": {"Conv2d": {"kind": "class", "target": "torch.nn.modules.conv.Conv2d",
                                "params": ["in_channels", "out_channels", "kernel_size", "stride", "padding",
                                           "bias"], "varkw": False},
                     "Module": {"kind": "class", "target": "torch.nn.modules.module.Module", "params": [],
                                "varkw": False}},
        "torch.nn.functional": {"interpolate": fn("input", "size", "scale_factor", "mode", "align_corners",
                                                  "recompute_scale_factor"),
                                "relu": fn("input", "inplace")},
        "torch.jit": {"script": fn("obj", "optimize", "_frames_up", "_rcb")},
        "torch.quantization": {"QuantStub": {"kind": "class", "target": "torch.quantization.stubs.QuantStub",
                                             "params": ["qconfig"], "varkw": False}},
        "torchvision": {"models": {"kind": "module", "target": "torchvision.models"}},
        "torchvision.models": {"resnet18": fn("pretrained", "progress"),
                               "resnet": {"kind": "module", "target": "torchvision.models.resnet"}},
        "torchvision.models.resnet": {"ResNet": {"kind": "class", "target": "torchvision.models.resnet.ResNet",
                                                 "params": ["block", "layers", "num_classes"], "varkw": False}},
        "numpy": {"load": fn("file", "mmap_mode", "allow_pickle")},
        "PIL": {"Image": {"kind": "module", "target": "PIL.Image"}},
        "PIL.Image": {"BILINEAR": {"kind": "attribute"}, "open": fn("fp", "mode", "formats"),
                      "Image": {"kind": "class", "target": "PIL.Image.Image", "params": [], "varkw": False}},
    },
    "classes": {
        "torch.Tensor": {"view": fn("self", "dtype")},
        "torch.nn.modules.conv.Conv2d": {"forward": fn("self", "input")},
        "torch.nn.modules.module.Module": {"eval": fn("self")},
        "torch.quantization.stubs.QuantStub": {},
        "torchvision.models.resnet.ResNet": {},
        "PIL.Image.Image": {"resize": fn("self", "size", "resample", "box", "reducing_gap")},
    },
}

# Each line the issue names, with the name the check must report.
BARS = [
    ("F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False, antialias=True)",
     "torch.nn.functional.interpolate(antialias=)"),
    ("torchvision.models.resnet18(weights=None)", "torchvision.models.resnet18(weights=)"),
    ("torch.compile(model)", "torch.compile"),
    ("Image.Resampling.BILINEAR", "PIL.Image.Resampling"),
]
HEADER = "import torch\nimport torch.nn.functional as F\nimport torchvision\nfrom PIL import Image\n"


def statuses(source):
    return {(f.line, f.name): f.status for f in check_source(source, "a.py", INDEX)}


@pytest.mark.parametrize("use, name", BARS)
def test_each_bar_is_missing_with_file_line_and_name(use, name):
    findings = check_source(HEADER + "x = model = None\n" + use + "\n", "net.py", INDEX)
    assert [(f.file, f.line, f.name, f.status) for f in findings] == [("net.py", 6, name, "missing")]
    assert "1.10.2" in findings[0].reason or "0.11.2" in findings[0].reason or "8.4.0" in findings[0].reason


def test_reasons_name_the_device_version():
    found = {f.name: f.reason for f in check_source(HEADER + "\n".join(use for use, _ in BARS), "a.py", INDEX)}
    assert found["torch.compile"] == "the device's torch 1.10.2 has no torch.compile"
    assert found["torch.nn.functional.interpolate(antialias=)"] == (
        "torch.nn.functional.interpolate in the device's torch 1.10.2 takes no keyword antialias")


@pytest.mark.parametrize("source", [
    "getattr(Image, 'Resampling', Image).BILINEAR\n",
    "if hasattr(torch, 'compile'):\n    model = torch.compile(model)\n",
    "if not hasattr(torch, 'compile'):\n    pass\nelse:\n    model = torch.compile(model)\n",
    "model = torch.compile(model) if hasattr(torch, 'compile') else model\n",
    "try:\n    y = F.interpolate(x, scale_factor=2, antialias=True)\nexcept TypeError:\n    y = F.interpolate(x)\n",
    "try:\n    net = torchvision.models.resnet18(weights=None)\nexcept (ValueError, TypeError):\n    net = None\n",
    "try:\n    BILINEAR = Image.Resampling.BILINEAR\nexcept AttributeError:\n    BILINEAR = Image.BILINEAR\n",
    "try:\n    from torch.ao import quantization as tq\nexcept ImportError:\n"
    "    from torch import quantization as tq\n",
    "try:\n    model = torch.compile(model)\nexcept Exception:\n    pass\n",
    "try:\n    model = torch.compile(model)\nexcept:\n    pass\n",
])
def test_feature_tests_make_uses_guarded_not_missing(source):
    found = statuses(HEADER + source)
    assert found and set(found.values()) == {"guarded"}, found


def test_a_try_whose_handler_catches_something_else_is_no_guard():
    assert set(statuses(HEADER + "try:\n    torch.compile(m)\nexcept ValueError:\n    pass\n").values()) == {"missing"}


def test_uses_of_a_name_whose_import_is_guarded_are_guarded():
    source = ("try:\n    from torch.ao.quantization import QuantStub\nexcept ImportError:\n    QuantStub = None\n"
              "stub = QuantStub()\n")
    assert statuses("import torch\n" + source) == {(3, "torch.ao"): "guarded"}


def test_imports_of_absent_modules_or_names_are_missing_once():
    source = ("from torch.ao import quantization\nimport torch.ao.quantization\nfrom torchvision.models import nope\n"
              "quantization.QuantStub()\n")
    assert statuses(source) == {(1, "torch.ao"): "missing", (2, "torch.ao"): "missing",
                                (3, "torchvision.models.nope"): "missing"}


def test_aliases_and_from_imports_are_followed():
    source = ("import torch as T\nfrom torch import nn\nfrom torchvision.models import resnet18 as r18\n"
              "from torch.nn import functional as fun\nimport numpy as np\n"
              "T.compile(m)\nnn.Conv2d(3, 8, 3, dilation=2)\nr18(weights=None)\nfun.relu(x, inplace=True)\n"
              "nn.Conv2d(3, 8, 3, padding=1)\nnp.load(p, allow_pickle=False)\n")
    assert statuses(source) == {(6, "torch.compile"): "missing", (7, "torch.nn.Conv2d(dilation=)"): "missing",
                                (8, "torchvision.models.resnet18(weights=)"): "missing"}


def test_chains_continue_into_classes_and_stop_at_values():
    source = ("import torch\nfrom PIL import Image\nimport torchvision\n"
              "Image.Image.resize(im, (2, 2), resample=Image.BILINEAR, antialias=1)\n"
              "torch.zeros(3).anything.at_all(k=1)\n"  # a return value: not guessed
              "torch.float32.is_floating_point\n"  # an attribute's value: not guessed
              "torchvision.models.resnet.ResNet(block, [2, 2, 2, 2], num_classes=14, **extra)\n"
              "torch.nn.Conv2d(3, 8, 3, **{'dilation': 2})\n")
    assert statuses(source) == {(4, "PIL.Image.Image.resize(antialias=)"): "missing"}


def test_a_keyword_is_reported_on_its_own_line():
    assert statuses(HEADER + "y = F.interpolate(\n    x,\n    antialias=True)\n") == {
        (7, "torch.nn.functional.interpolate(antialias=)"): "missing"}


def test_open_or_unknown_signatures_take_any_keyword():
    index = json.loads(json.dumps(INDEX))
    index["modules"]["torch.nn.functional"]["interpolate"]["params"] = None
    index["modules"]["torchvision.models"]["resnet18"]["varkw"] = True
    source = HEADER + BARS[0][0] + "\n" + BARS[1][0] + "\n"
    assert check_source(source, "a.py", index) == []


def test_partial_packages_open_classes_and_module_getattr_are_unverified_not_missing():
    index = json.loads(json.dumps(INDEX))
    index["modules"]["torch"]["Tensor"]["open"] = True  # a base outside the index
    index["modules"]["torch.jit"]["__getattr__"] = fn("name")
    source = "import numpy as np\nimport torch\nnp.float32\ntorch.Tensor.reshape\ntorch.jit.anything\n"
    found = check_source(source, "a.py", index)
    assert {(f.name, f.status) for f in found} == {("numpy.float32", "unverified"),
                                                   ("torch.Tensor.reshape", "unverified"),
                                                   ("torch.jit.anything", "unverified")}
    assert "numpy is partial" in found[0].reason
    # Closed: the class's listed members, its bases' included, are all it has.
    assert statuses(source) == {(3, "numpy.float32"): "unverified", (4, "torch.Tensor.reshape"): "missing",
                                (5, "torch.jit.anything"): "missing"}


def test_assigning_a_module_attribute_checks_only_its_owner():
    assert statuses("import torch\ntorch.nn.brand_new = 1\ntorch.nope.x = 1\n") == {(3, "torch.nope"): "missing"}


def test_other_packages_and_relative_imports_are_ignored():
    assert statuses("import cv2\nfrom . import torch\ncv2.nothing(antialias=True)\n") == {}


def test_folders_py_files_and_pyz_archives_are_read(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "__main__.py").write_text("import torch\ntorch.compile(m)\n")
    (src / "pkg" / "net.py").write_text(HEADER + BARS[3][0] + "\n")
    archive = tmp_path / "solution.pyz"
    zipapp.create_archive(str(src), str(archive))
    (src / "__pycache__").mkdir()  # a folder's caches are skipped; an archive's members all ship
    (src / "__pycache__" / "junk.py").write_text("import torch\ntorch.compile(m)\n")
    for paths, prefix in (([src], str(src) + "/"), ([archive], str(archive) + "/")):
        found = check_paths(paths, INDEX)
        assert found.files == 2
        assert [(f.file, f.line, f.name) for f in found] == [(prefix + "__main__.py", 2, "torch.compile"),
                                                             (prefix + "pkg/net.py", 5, "PIL.Image.Resampling")]
    assert len(check_paths([src / "__main__.py"], INDEX)) == 1
    with pytest.raises(CheckError, match="not a folder"):
        check_paths([src, tmp_path / "absent"], INDEX)


# ----------------------------------------------------------------------------- command line

@pytest.fixture
def index_file(tmp_path):
    path = tmp_path / "index.json"
    path.write_text(json.dumps(INDEX))
    return str(path)


def test_cli_exits_1_and_prints_file_line_name_when_missing(tmp_path, index_file, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(HEADER + "torch.compile(m)\nif hasattr(torch, 'compile'):\n    torch.compile(m)\n")
    assert lowpower_main(["device-api", "check", str(bad), "--index", index_file]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "{}:5: torch.compile: the device's torch 1.10.2 has no torch.compile".format(bad)
    assert "1 missing, 1 guarded" in out[-1] and "numpy is checked only where its .py files define names" in out[-1]
    assert lowpower_main(["device-api", "check", str(bad), "--index", index_file, "--show-guarded"]) == 1
    assert "[guarded]" in capsys.readouterr().out


def test_cli_exits_0_when_clean_and_2_for_a_bad_path_or_index(tmp_path, index_file, capsys):
    good = tmp_path / "good.py"
    good.write_text(HEADER + "y = F.interpolate(x, scale_factor=2, align_corners=False)\n")
    assert lowpower_main(["device-api", "check", str(good), "--index", index_file]) == 0
    assert "0 missing" in capsys.readouterr().out
    assert lowpower_main(["device-api", "check", str(tmp_path / "absent.txt"), "--index", index_file]) == 2
    assert lowpower_main(["device-api", "check", str(good), "--index", str(tmp_path / "no_index.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("lowpower device-api check: ") for line in err)


def test_cli_runs_as_a_module_with_help():
    result = subprocess.run([sys.executable, "-m", "lowpower", "device-api", "check", "--help"], cwd=str(ROOT),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "fetch" in result.stdout and "guarded" in result.stdout


class FetchFailed(Exception):
    pass


def test_cli_fetch_prints_the_index_and_a_failed_fetch_exits_2(tmp_path, monkeypatch, capsys):
    import lowpower.ship.device_api.cli as cli

    calls = []

    def load_index(cache, fetch=True, progress=True):
        calls.append((cache, fetch, progress))
        if "broken" in str(cache):
            raise FetchFailed("pip download torch==1.10.2 failed: no network")
        return INDEX

    monkeypatch.setattr(cli, "_index_api", lambda: (load_index, tmp_path / "default", FetchFailed))
    assert lowpower_main(["device-api", "fetch"]) == 0
    out = capsys.readouterr().out
    assert "{}/index.json".format(tmp_path / "default") in out and "torch 1.10.2" in out
    assert lowpower_main(["device-api", "fetch", "--cache", str(tmp_path / "broken")]) == 2
    assert lowpower_main(["device-api", "check", str(ROOT / "evaluation"), "--cache", str(tmp_path / "broken")]) == 2
    err = capsys.readouterr().err
    assert err.count("pip download torch==1.10.2 failed") == 2 and err.count("lowpower device-api ") == 2
    assert calls[0] == (tmp_path / "default", True, True)
