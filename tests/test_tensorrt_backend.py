"""``--backend tensorrt``: the package, its ONNX file, presubmit, and the fallback run alone.

No GPU and no tensorrt here, so the engine itself is never built or run by these tests. What is
tested: the package (model.onnx inside, onnx.checker, manifest, presubmit's NOT-PROVEN row), the
program's fallback decision and its warning, masks equal to the plain fp16 package's, the engine
cache file logic, which of TensorRT's two APIs the helpers choose (on stand-in objects that record
the call, not on TensorRT), and the device API check of solution/tensorrt.py.
"""
import hashlib
import io
import json
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import networks
from evaluation.contract import CLASS_NAMES
from lowpower.checkpoint import save_checkpoint
from lowpower.ship.build import build_package, check_backend
from lowpower.ship.device_api.check import check_paths
from lowpower.ship.manifest import PackageError
from lowpower.ship.presubmit.cli import NOT_PROVEN, not_proven
from lowpower.ship.presubmit.static import device_api_index
from lowpower.ship.runner import run_pyz
from solution import tensorrt as backend

ARCH_KWARGS = {"num_classes": 14, "base_width": 4, "depth": 2}
NO_CUDA = {"CUDA_VISIBLE_DEVICES": ""}  # the fallback on any machine, so the masks must match

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = networks.create_model("unet", **ARCH_KWARGS)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint({"arch": "unet", "arch_kwargs": dict(ARCH_KWARGS), "model": model.state_dict(),
                     "config": {"data": {"input_size": 32}}, "epoch": 3, "classes": list(CLASS_NAMES),
                     "input_size": 32}, path)
    return path


@pytest.fixture(scope="module")
def packages(checkpoint, tmp_path_factory):
    """The tensorrt package (verified by presubmit on build) and the plain fp16 one."""
    folder = tmp_path_factory.mktemp("packages")
    trt = build_package(checkpoint, folder / "trt" / "solution.pyz", precision="fp16", backend="tensorrt",
                        build_dir=folder / "build_trt")
    plain = build_package(checkpoint, folder / "plain" / "solution.pyz", precision="fp16",
                          build_dir=folder / "build_plain", verify=False)
    return trt, plain


def read_masks(folder):
    return {path.name: np.array(Image.open(path)) for path in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------- the package

@pytest.mark.slow  # the packages fixture builds the tensorrt package with verification (a presubmit run)
def test_tensorrt_package_ships_a_checked_onnx_file_beside_the_weights(packages, tmp_path):
    import onnx

    trt, plain = packages
    with zipfile.ZipFile(trt["path"]) as archive:
        names = archive.namelist()
        onnx_bytes = archive.read("solution/model.onnx")
        manifest = json.loads(archive.read("solution/manifest.json"))
    assert "solution/weights.npz" in names  # the fallback's weights
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    onnx.checker.check_model(str(tmp_path / "model.onnx"), full_check=True)
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["image"] and graph.output[0].name == "logits"
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert manifest["backend"] == "tensorrt" and manifest["precision"] == "fp16"
    assert manifest["tensorrt"]["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert manifest["tensorrt"]["opset"] == 13 and manifest["tensorrt"]["onnxruntime_agreement"] >= 0.999
    assert "has not been run on a GPU" in manifest["tensorrt"]["not_proven"]
    assert "solution/model.onnx" not in zipfile.ZipFile(plain["path"]).namelist()
    assert "backend" not in plain["manifest"]


@pytest.mark.slow  # the packages fixture builds the tensorrt package with verification (a presubmit run)
def test_tensorrt_package_passes_presubmit_and_says_the_engine_is_not_proven(packages):
    trt, plain = packages
    assert trt["checks"][0].startswith("presubmit on 2 sample images: passed archive, python 3.6, imports, "
                                       "device API, run")
    assert not_proven(plain["path"]) == NOT_PROVEN
    said = not_proven(trt["path"])
    assert said.startswith(NOT_PROVEN) and "TensorRT path (model.onnx -> engine) has not been run on a GPU" in said


@pytest.mark.slow  # the packages fixture builds the tensorrt package with verification (a presubmit run)
def test_run_alone_falls_back_with_one_warning_and_writes_the_plain_packages_masks(packages, gt_samples, tmp_path):
    trt, plain = packages
    env = dict(__import__("os").environ, **NO_CUDA)
    run_trt = run_pyz(trt["path"], gt_samples / "IMG", tmp_path / "trt", env=env)
    run_plain = run_pyz(plain["path"], gt_samples / "IMG", tmp_path / "plain", env=env)
    assert run_trt.ok and run_plain.ok, run_trt.stderr_tail() + run_plain.stderr_tail()
    assert float(run_trt.stdout) > 0 and run_trt.stdout.count("\n") == 1
    warnings = [line for line in run_trt.stderr.splitlines() if "TensorRT backend not used" in line]
    assert len(warnings) == 1 and warnings[0].endswith("running the PyTorch model from weights.npz instead")
    assert "TensorRT" not in run_plain.stderr
    masks_trt, masks_plain = read_masks(tmp_path / "trt"), read_masks(tmp_path / "plain")
    assert sorted(masks_trt) == ["s0.png", "s1.png"] and masks_trt.keys() == masks_plain.keys()
    for name in masks_trt:
        assert masks_trt[name].shape == (512, 512)
        assert np.array_equal(masks_trt[name], masks_plain[name]), name
    assert not list((tmp_path / "trt").parent.glob("*.engine")) and run_trt.strays == []


def test_backend_refusals_name_the_fix(checkpoint, tmp_path):
    with pytest.raises(PackageError, match="backend must be pytorch or tensorrt"):
        check_backend("onnxruntime", "fp16")
    with pytest.raises(PackageError, match="--precision fp16"):
        check_backend("tensorrt", "int8")
    with pytest.raises(PackageError, match="backend must be"):
        build_package(checkpoint, tmp_path / "s.pyz", backend="trt", verify=False)
    assert not (tmp_path / "s.pyz").exists()


# ----------------------------------------------------------------------------- the fallback decision

def never_called():
    raise AssertionError("a fallback run must not read model.onnx")


def test_fallback_reason_prefers_the_import_problem_then_cuda():
    assert backend.fallback_reason(None, "tensorrt cannot be imported (x)", True) == "tensorrt cannot be imported (x)"
    assert backend.fallback_reason(None, None, True) == "tensorrt is not installed"
    module = types.ModuleType("tensorrt")
    assert backend.fallback_reason(module, None, False) == "CUDA is not available to torch"
    assert backend.fallback_reason(module, None, True) is None


def test_missing_tensorrt_returns_none_with_the_one_line_warning(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    trt, problem = backend.import_tensorrt()
    assert trt is None and problem.startswith("tensorrt cannot be imported")
    assert backend.load_engine_model({"precision": "fp16"}, never_called) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("solution: warning: TensorRT backend not used: tensorrt cannot")


def test_no_cuda_falls_back_before_tensorrt_is_touched(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # importable, no API at all
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend.load_engine_model({"precision": "fp16"}, never_called, str(tmp_path / "e.engine")) is None
    assert "TensorRT backend not used: CUDA is not available to torch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the engine cache

def test_engine_key_changes_with_each_thing_an_engine_depends_on():
    base = backend.engine_key(b"onnx", "8.2.1", "NVIDIA Tegra X1", True)
    assert base == backend.engine_key(b"onnx", "8.2.1", "NVIDIA Tegra X1", True)
    others = [backend.engine_key(b"onnx2", "8.2.1", "NVIDIA Tegra X1", True),
              backend.engine_key(b"onnx", "10.3.0", "NVIDIA Tegra X1", True),
              backend.engine_key(b"onnx", "8.2.1", "NVIDIA H200", True),
              backend.engine_key(b"onnx", "8.2.1", "NVIDIA Tegra X1", False)]
    assert len(set(others + [base])) == 5


def test_engine_cache_round_trip_and_stale_or_foreign_files(tmp_path):
    path = str(tmp_path / "solution.pyz.engine")
    assert backend.engine_cache_path(str(tmp_path / "solution.pyz")) == path
    assert backend.read_cached_engine(path, "a" * 64) is None  # absent
    assert backend.write_cached_engine(path, "a" * 64, b"\x00serialized\xff")
    assert backend.read_cached_engine(path, "a" * 64) == b"\x00serialized\xff"
    assert backend.read_cached_engine(path, "b" * 64) is None  # another ONNX file, TensorRT or GPU
    (tmp_path / "other.engine").write_bytes(b"a plain trtexec engine")
    assert backend.read_cached_engine(str(tmp_path / "other.engine"), "a" * 64) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.engine", "solution.pyz.engine"]  # no .partial


def test_engine_cache_in_an_unwritable_place_is_not_an_error(tmp_path):
    assert backend.write_cached_engine(str(tmp_path / "missing" / "s.pyz.engine"), "a" * 64, b"x") is False


def test_package_path_is_the_folder_or_archive_holding_the_solution_package():
    import solution

    assert backend.package_path() == str(__import__("pathlib").Path(solution.__file__).resolve().parent.parent)


# ----------------------------------------------------------------------------- which API is chosen

class Recorder(object):
    """Records attribute sets and calls; stands in for a builder config, never for an engine."""

    def __init__(self, *methods):
        self.calls = []
        for name in methods:
            setattr(self, name, lambda *args, _name=name: self.calls.append((_name,) + args) or b"blob")


def test_workspace_uses_the_memory_pool_api_when_present_else_the_82_attribute():
    trt = types.SimpleNamespace(MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"))
    new = Recorder("set_memory_pool_limit")
    backend.set_workspace(trt, new, 1 << 20)
    assert new.calls == [("set_memory_pool_limit", "WORKSPACE", 1 << 20)]
    old = Recorder()
    backend.set_workspace(trt, old, 1 << 20)
    assert old.max_workspace_size == 1 << 20 and old.calls == []


def test_network_flag_is_explicit_batch_when_the_flag_exists():
    for flags, expected in ((types.SimpleNamespace(EXPLICIT_BATCH=0), 1), (types.SimpleNamespace(), 0)):
        builder = Recorder("create_network")
        backend.create_network(types.SimpleNamespace(NetworkDefinitionCreationFlag=flags), builder)
        assert builder.calls == [("create_network", expected)]


def test_serialize_prefers_build_serialized_network_and_refuses_a_failed_build():
    builder = Recorder("build_serialized_network", "build_engine")
    assert backend.serialize(builder, "network", "config") == b"blob"
    assert [call[0] for call in builder.calls] == ["build_serialized_network"]
    failed = types.SimpleNamespace(build_serialized_network=lambda network, config: None)
    with pytest.raises(backend.EngineError, match="could not build an engine"):
        backend.serialize(failed, "network", "config")


def test_tensorrt_data_types_map_to_torch_buffer_types():
    assert backend.torch_dtype("DataType.HALF") is torch.float16
    assert backend.torch_dtype("DataType.FLOAT") is torch.float32
    with pytest.raises(backend.EngineError, match="no torch buffer type"):
        backend.torch_dtype("DataType.FP8")


def test_device_api_check_is_clean_for_the_backend():
    findings = check_paths([backend.__file__], device_api_index())
    assert [str(f) for f in findings if f.status == "missing"] == []
    source = io.open(backend.__file__, encoding="utf-8").read()
    assert "import tensorrt" in source and "try:" in source  # the guarded import the check must pass
