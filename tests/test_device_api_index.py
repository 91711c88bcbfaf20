"""The device API index: ast extraction on made-up wheels (fast), and the real torch 1.10.2 /
torchvision 0.11.2 / Pillow 8.4.0 wheels (the first run downloads about 90 MB into the cache)."""
import json
import subprocess
import zipfile

import pytest

from lowpower.ship.device_api import DeviceApiError, fetch
from lowpower.ship.device_api.index import PACKAGES, dumps, load_index, lookup, read_wheel
from lowpower.ship.device_api.index_resolve import Resolver


def index_of(tmp_path, files):
    """The {"modules", "classes"} of a made-up wheel holding files {path: source} under pkg/."""
    path = tmp_path / "fake.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, source in files.items():
            zf.writestr(name, source)
    raw, unparsed = {}, []
    read_wheel(path, raw, unparsed, packages=("pkg",))
    assert not unparsed
    return Resolver(raw).run()


def test_star_imports_honour_all(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": "from .a import *\nfrom .b import *\n",
        "pkg/a.py": "__all__ = ['f']\n__all__ += ['K']\ndef f(x): pass\ndef g(): pass\nK = 1\n",
        "pkg/b.py": "import os\ndef h(): pass\n_private = 1\n",
    })
    assert lookup(ix, "pkg.f")["params"] == ["x"]
    assert lookup(ix, "pkg.K") == {"kind": "attribute"}
    assert lookup(ix, "pkg.g") is None  # not in a's __all__
    assert lookup(ix, "pkg.h") is not None and lookup(ix, "pkg._private") is None
    assert lookup(ix, "pkg.a") == {"kind": "module", "target": "pkg.a"}  # submodules are names


def test_all_edited_where_we_cannot_follow_takes_every_public_name(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": "from .n import *\n",
        "pkg/n.py": ("from ._a import asarray\n__all__ = ['zeros']\nzeros = 0\n"
                     "def extend_all(m):\n    __all__.append(m)\n"),  # numpy.core.numeric's way
        "pkg/_a.py": "def asarray(a, dtype=None): pass\n",
    })
    assert lookup(ix, "pkg.asarray")["params"] == ["a", "dtype"] and lookup(ix, "pkg.zeros")


def test_overloads_union_and_stub_adds_to_py(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/m.py": "def f(a, b=1): pass\n",
        "pkg/m.pyi": ("from typing import overload\n@overload\ndef f(a: int) -> int: ...\n"
                      "@overload\ndef f(a: str, *, c: int) -> str: ...\ndef g(x, /, y): ...\n"),
    })
    assert lookup(ix, "pkg.m.f") == {"kind": "function", "params": ["a", "b", "c"], "varkw": False}
    assert lookup(ix, "pkg.m.g")["params"] == ["x", "y"]


def test_aliases_and_del(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": ("from .m import f as g\nimport pkg.m as M\nfrom . import m\n"
                            "h = g\ngone = 1\ndel gone\n"),
        "pkg/m.py": "def f(q): pass\n",
    })
    assert lookup(ix, "pkg.g")["params"] == ["q"] and lookup(ix, "pkg.h")["params"] == ["q"]
    assert lookup(ix, "pkg.M.f")["params"] == ["q"] and lookup(ix, "pkg.m.f") is not None
    assert lookup(ix, "pkg.gone") is None


def test_kwargs_followed_to_known_callees(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": (
            "import os\n"
            "class Net:\n    def __init__(self, n=1):\n        self.width = n\n"
            "def _build(arch, **kwargs):\n    return Net(**kwargs)\n"
            "def net(pretrained=False, **kwargs):\n    kwargs.pop('legacy', None)\n"
            "    return _build('net', **kwargs)\n"
            "def loose(**kwargs):\n    return os.path.join(**kwargs)\n"
            "def ignores(**kwargs):\n    return kwargs.get('a')\n"),
    })
    assert lookup(ix, "pkg.net") == {"kind": "function", "varkw": False,
                                     "params": ["pretrained", "legacy", "arch", "n"]}
    assert lookup(ix, "pkg.Net")["params"] == ["n"]
    assert lookup(ix, "pkg.Net.width") == {"kind": "attribute"}  # self.x in methods
    assert lookup(ix, "pkg.loose")["varkw"]  # goes to a callee outside the index
    assert lookup(ix, "pkg.ignores")["varkw"]  # unknown keywords are silently dropped


def test_classes_flattened_nested_and_open(tmp_path):
    ix = index_of(tmp_path, {
        "pkg/__init__.py": "from .base import Base\nclass Child(Base):\n    x = 1\n"
                           "    class Inner:\n        def go(self, fast): pass\n"
                           "class Err(ValueError):\n    pass\n",
        "pkg/base.py": "class Base(object):\n    def __init__(self, a, **kw): pass\n"
                       "    def run(self, b): pass\n    @property\n    def size(self): return 1\n",
    })
    assert lookup(ix, "pkg.Child.run")["params"] == ["self", "b"]
    assert lookup(ix, "pkg.Child")["params"] == ["a"] and lookup(ix, "pkg.Child.size")
    assert lookup(ix, "pkg.Child.Inner.go")["params"] == ["self", "fast"]
    assert lookup(ix, "pkg.Child.missing") is None
    err = lookup(ix, "pkg.Err")
    assert err["open"] and err["params"] is None  # a base outside the index: anything may exist
    assert lookup(ix, "pkg.Err.args") is err


def test_module_getattr_names(tmp_path):
    ix = index_of(tmp_path, {"pkg/__init__.py": (
        "def __getattr__(name):\n    cats = {'NORMAL': 0}\n"
        "    if name == 'OLD' or name in cats:\n        return 1\n    raise AttributeError(name)\n")})
    assert lookup(ix, "pkg.OLD") and lookup(ix, "pkg.NORMAL") and lookup(ix, "pkg.NEW") is None


def test_fetch_flags_and_one_line_error(tmp_path, monkeypatch):
    cmd = fetch.pip_command(fetch.WHEELS[0], tmp_path)
    assert cmd[3:6] == ["download", "--no-deps", "--only-binary=:all:"] and "torch==1.10.2" in cmd

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: x\nERROR: No matching distribution\n")
    monkeypatch.setattr(fetch.subprocess, "run", failing)
    with pytest.raises(DeviceApiError, match=r"^cannot download torch==1.10.2: ERROR: No matching"):
        fetch.fetch_wheels(tmp_path, progress=False)


@pytest.fixture(scope="session")
def index():
    return load_index(progress=False)


def test_names_absent_in_the_device_versions(index):
    assert lookup(index, "torch.compile") is None
    assert lookup(index, "PIL.Image.Resampling") is None
    assert lookup(index, "PIL.Image.BILINEAR") == {"kind": "attribute"}
    # numpy is partial: its .py names are there, C-level ones (numpy.uint8) may not be
    assert lookup(index, "numpy.asarray")["params"] == ["a", "dtype", "order"]
    assert "numpy" in index["partial"]


def test_keywords_of_the_device_versions(index):
    interp = lookup(index, "torch.nn.functional.interpolate")
    assert "align_corners" in interp["params"] and "antialias" not in interp["params"]
    assert not interp["varkw"]
    # resnet18(pretrained=False, progress=True, **kwargs) in 0.11.2: the **kwargs go to _resnet and
    # then ResNet(...), which has no **kwargs, so the index knows weights= fails on the device.
    resnet18 = lookup(index, "torchvision.models.resnet18")
    assert "pretrained" in resnet18["params"] and "weights" not in resnet18["params"]
    assert not resnet18["varkw"]


def test_quantization_and_tensor(index):
    assert lookup(index, "torch.quantization.QuantStub")["kind"] == "class"
    # 1.10.2 has torch.ao.quantization, but its __init__ star-imports only fake_quantize,
    # fuse_modules, quant_type and quantize: QuantStub lives in torch.ao.quantization.stubs only.
    assert lookup(index, "torch.ao.quantization")["kind"] == "module"
    assert lookup(index, "torch.ao.quantization.QuantStub") is None
    assert lookup(index, "torch.ao.quantization.stubs.QuantStub")["kind"] == "class"
    assert lookup(index, "torch.Tensor.view")["kind"] == "function"  # from _C._TensorBase
    assert lookup(index, "torch.Tensor.nonexistent_method") is None
    assert "view" in index["classes"]["torch.Tensor"]
    assert lookup(index, "torch.conv2d")["kind"] == "function"  # from _VariableFunctions.pyi


@pytest.mark.slow  # builds the whole device-API index again from the wheels
def test_wheels_recorded_and_build_is_deterministic(index):
    wheels = json.loads((fetch.DEFAULT_CACHE / "wheels.json").read_text())
    assert index["wheels"] == wheels and len(wheels) == len(fetch.WHEELS)
    assert all(len(sha) == 64 for sha in wheels.values())
    assert set(index["packages"]) == set(PACKAGES) and index["partial"] == ["numpy"]
    from lowpower.ship.device_api.index import build_index
    assert dumps(build_index()) == (fetch.DEFAULT_CACHE / "index.json").read_text()
