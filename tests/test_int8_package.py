"""Shipping int8: npz round trip, the int8 package run alone, presubmit, size, engine fallback.

The real path: a tiny train.py run -> ``lowpower quantize ptq`` (the session's float_checkpoint and
int8_checkpoint, tests/conftest.py) -> ``build_package`` (precision int8) -> the pyz run with
``python -I`` from an empty folder.
"""
import io
import json
import pathlib
import shutil
import zipapp
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lowpower.checkpoint import build_model, load_checkpoint, save_checkpoint
from lowpower.compress.quantize import ptq
from lowpower.compress.quantize.npz import differences, encode_state_dict
from lowpower.ship.build import build_package
from lowpower.ship.manifest import PackageError
from lowpower.ship.presubmit.cli import check
from lowpower.ship.presubmit.run import RunOptions
from lowpower.ship.runner import run_pyz
from networks import create_model
from solution.int8 import Int8WeightsError, decode_state_dict

DEMO_KWARGS = {"num_classes": 14, "base_width": 16, "depth": 4}  # configs/synthetic/demo.yaml
MISSING_ENGINE = "no_such_engine"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ----------------------------------------------------------------------------- npz round trip

def quantized_entries():
    """Per-tensor quint8 and qint8, per-channel on axes 0 and 1, and plain entries."""
    torch.manual_seed(0)
    return {
        "act": torch.quantize_per_tensor(torch.randn(2, 3), 0.0173, 121, torch.quint8),
        "w_tensor": torch.quantize_per_tensor(torch.randn(4, 3, 3, 3), 0.0051, 0, torch.qint8),
        "w_channel0": torch.quantize_per_channel(torch.randn(5, 3, 3, 3), torch.rand(5, dtype=torch.float64) / 50
                                                 + 1e-4, torch.tensor([0, 1, -3, 2, 0]), 0, torch.qint8),
        "w_channel1": torch.quantize_per_channel(torch.randn(3, 6, 2, 2), torch.rand(6, dtype=torch.float64) / 50
                                                 + 1e-4, torch.zeros(6, dtype=torch.int64), 1, torch.qint8),
        "bias": torch.randn(5),
        "scale": torch.tensor(0.25),
        "zero_point": torch.tensor(3, dtype=torch.int64),
    }


def through_npz(arrays):
    """Save with np.savez, read back without pickle as the package does (torch.from_numpy)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {key: torch.from_numpy(loaded[key]) for key in loaded.files}


def test_npz_round_trip_of_quantized_tensors_is_exact():
    entries = quantized_entries()
    decoded = decode_state_dict(through_npz(encode_state_dict(entries)))
    assert differences(entries, decoded) == []
    for key, tensor in entries.items():
        got = decoded[key]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape, key
        if not tensor.is_quantized:
            assert torch.equal(got, tensor), key
            continue
        assert got.qscheme() == tensor.qscheme(), key
        assert torch.equal(got.int_repr(), tensor.int_repr()), key
        if tensor.qscheme() == torch.per_tensor_affine:
            assert (got.q_scale(), got.q_zero_point()) == (tensor.q_scale(), tensor.q_zero_point()), key
        else:
            assert torch.equal(got.q_per_channel_scales(), tensor.q_per_channel_scales()), key
            assert torch.equal(got.q_per_channel_zero_points(), tensor.q_per_channel_zero_points()), key
            assert got.q_per_channel_axis() == tensor.q_per_channel_axis(), key


def test_an_int8_conv_without_bias_round_trips_and_runs_the_same():
    # DDRNet's DAPPM and PIDNet's PAPPM: BN-ReLU then a conv without bias, whose int8 state holds bias None
    from networks import quant

    torch.manual_seed(0)
    model = torch.nn.Sequential(quant.api().QuantStub(), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                                torch.nn.Conv2d(3, 4, 3, bias=False), quant.api().DeQuantStub()).eval()
    engine, _ = quant.select_engine("x86")
    model.qconfig = quant.api().get_default_qconfig(engine)
    prepared = quant.api().prepare(model)
    prepared(torch.rand(2, 3, 8, 8))
    int8 = quant.api().convert(prepared)
    state = int8.state_dict()
    assert state["3.bias"] is None
    arrays = encode_state_dict(state)
    assert arrays["3.bias::none"].size == 0 and "3.bias" not in arrays
    decoded = decode_state_dict(through_npz(arrays))
    assert decoded["3.bias"] is None and differences(state, decoded) == []
    fresh = quant.api().convert(quant.api().prepare(model))
    fresh.load_state_dict(decoded)
    images = torch.rand(1, 3, 8, 8)
    assert torch.equal(fresh(images), int8(images))


def test_npz_layout_is_plain_arrays_with_axis():
    arrays = encode_state_dict(quantized_entries())
    assert arrays["w_tensor::int8"].dtype == np.int8 and arrays["act::int8"].dtype == np.uint8
    assert int(arrays["w_tensor::axis"]) == -1 and int(arrays["w_channel1::axis"]) == 1
    assert arrays["w_channel0::scale"].dtype == np.float64 and arrays["w_channel0::scale"].shape == (5,)
    assert arrays["w_channel0::zero_point"].tolist() == [0, 1, -3, 2, 0]
    assert all(isinstance(value, np.ndarray) and value.dtype != object for value in arrays.values())


def test_round_trip_check_sees_a_changed_scale():
    entries = quantized_entries()
    arrays = encode_state_dict(entries)
    arrays["w_channel0::scale"] = arrays["w_channel0::scale"] * (1 + 1e-12)
    assert differences(entries, decode_state_dict(arrays)) == ["differs w_channel0"]


def test_decoder_names_a_missing_part():
    arrays = encode_state_dict(quantized_entries())
    del arrays["w_tensor::axis"]
    with pytest.raises(Int8WeightsError, match="w_tensor::axis"):
        decode_state_dict(arrays)


# ----------------------------------------------------------------------------- the real path

def quantize(checkpoint, data, out, engine="x86"):
    assert ptq.main([str(checkpoint), "--calib", "4", "--engine", engine, "--data", str(data), "--out",
                     str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def int8_package(int8_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8_pyz")
    return build_package(int8_checkpoint, folder / "int8.pyz", precision="int8", min_class_area=0.0,
                         build_dir=folder / "build", verify=False)


def workstation_masks(checkpoint, folder):
    """The workstation's int8 model on the package's preprocessing, written out here: RGB, Pillow
    bilinear resize, /255, mean/std; logits upsampled bilinearly to 512; argmax."""
    state = load_checkpoint(checkpoint)
    model = build_model(state).eval()
    size = int(state["input_size"] or state["config"]["data"]["input_size"])
    mean = torch.tensor(state["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(state["std"]).view(1, 3, 1, 1)
    masks = {}
    for path in sorted(pathlib.Path(folder).glob("*.png")):
        rgb = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            logits = model((x - mean) / std)
        logits = F.interpolate(logits, size=(512, 512), mode="bilinear", align_corners=False)
        masks[path.name] = logits.argmax(1)[0].numpy().astype(np.uint8)
    return masks


def package_masks(folder):
    return {path.name: np.asarray(Image.open(path)) for path in sorted(pathlib.Path(folder).glob("*.png"))}


def test_int8_package_alone_matches_the_workstation_int8_model(int8_package, int8_checkpoint, trained_data,
                                                              tmp_path):
    images = trained_data / "test" / "IMG"  # scenes like the training ones, so the masks are not constant
    run = run_pyz(int8_package["path"], images, tmp_path / "out")  # -I, a fresh empty cwd
    assert run.ok, run.stderr_tail()
    expected, got = workstation_masks(int8_checkpoint, images), package_masks(tmp_path / "out")
    assert sorted(got) == sorted(expected) and len(got) == 2
    same = sum(int((got[name] == expected[name]).sum()) for name in got)
    total = sum(mask.size for mask in got.values())
    assert same / total >= 0.999, "only %.4f%% of pixels agree" % (100.0 * same / total)
    assert len(np.unique(np.concatenate([m.ravel() for m in got.values()]))) > 1  # not a constant mask
    assert "int8" in run.stderr and "warning" not in run.stderr.lower(), run.stderr


def test_int8_package_records_engine_and_ships_the_decoder(int8_package, int8_checkpoint):
    manifest = int8_package["manifest"]
    quant = load_checkpoint(int8_checkpoint)["quant"]
    assert manifest["precision"] == "int8"
    assert (manifest["quant"]["engine"], manifest["quant"]["mode"]) == ("x86", "ptq") == (quant["engine"], "ptq")
    assert manifest["quant"]["per_channel"] is True
    assert {"networks/quant.py", "solution/int8.py"} <= set(int8_package["files"])
    with zipfile.ZipFile(int8_package["path"]) as archive:
        with archive.open("solution/weights.npz") as handle:
            names = np.load(io.BytesIO(handle.read()), allow_pickle=False).files
    assert "head.weight::int8" in names and "head.weight" not in names


@pytest.mark.slow  # a full presubmit run of the package
def test_int8_package_passes_presubmit(int8_package, gt_samples):
    report = check(int8_package["path"], images=gt_samples, options=RunOptions(timeout=600))
    assert report.failed == [], report.failed
    assert report.rows_with("PASS")


@pytest.mark.slow  # a variant of the run above: one more fresh interpreter runs the package
def test_missing_engine_falls_back_with_one_warning(int8_package, gt_samples, tmp_path):
    build = tmp_path / "build"
    shutil.copytree(int8_package["build_dir"], build)
    manifest_path = build / "solution" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["quant"]["engine"] = MISSING_ENGINE
    manifest_path.write_text(json.dumps(manifest))
    pyz = tmp_path / "fallback.pyz"
    zipapp.create_archive(build, pyz, interpreter="/usr/bin/env python3", compressed=True)
    run = run_pyz(pyz, gt_samples / "IMG", tmp_path / "out")
    assert run.ok, run.stderr_tail()
    warnings = [line for line in run.stderr.splitlines() if MISSING_ENGINE in line]
    assert len(warnings) == 1 and "warning" in warnings[0] and "using" in warnings[0], run.stderr
    assert len(package_masks(tmp_path / "out")) == 2


def test_precision_must_match_the_checkpoint(int8_checkpoint, float_checkpoint, tmp_path):
    with pytest.raises(PackageError, match="int8 checkpoint.*--precision int8"):
        build_package(int8_checkpoint, tmp_path / "a.pyz", precision="fp16", build_dir=tmp_path / "a", verify=False)
    with pytest.raises(PackageError, match="float checkpoint; quantize it first"):
        build_package(float_checkpoint, tmp_path / "b.pyz", precision="int8", build_dir=tmp_path / "b", verify=False)
    info = build_package(int8_checkpoint, tmp_path / "c.pyz", build_dir=tmp_path / "c", verify=False)
    assert info["manifest"]["precision"] == "int8"  # an int8 checkpoint packages as int8 by default


def test_int8_weights_are_at_most_0_3x_fp32_at_demo_width(trained_data, float_checkpoint, tmp_path):
    state = load_checkpoint(float_checkpoint)
    torch.manual_seed(1)
    state.update(arch_kwargs=dict(DEMO_KWARGS), model=create_model("unet", **DEMO_KWARGS).state_dict())
    demo = tmp_path / "demo_width.pt"
    save_checkpoint(state, demo)
    int8 = quantize(demo, trained_data, tmp_path / "demo_int8.pt")
    sizes = {name: build_package(path, tmp_path / (name + ".pyz"), build_dir=tmp_path / name,
                                 verify=False)["weights_bytes"]
             for name, path in (("fp32", demo), ("int8", int8))}
    assert sizes["int8"] <= 0.3 * sizes["fp32"], sizes
