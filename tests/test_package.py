"""lowpower.ship.package: checkpoint -> solution.pyz (layout, manifest, weights, import closure, refusals)."""
import json
import os
import pathlib
import shutil
import subprocess
import time
import zipfile

import numpy as np
import pytest
import torch

import networks
from evaluation.contract import CLASS_NAMES as LPCVC_CLASSES
from lowpower.checkpoint import save_checkpoint
from lowpower.ship.build import DEFAULT_BATCH_SIZE, build_package
from lowpower.ship.closure import generated_init, import_closure
from lowpower.ship.manifest import PackageError, read_checkpoint
from lowpower.ship.package import main, parse_args, resolve_paths
from lowpower.ship.pyz import vermin_check

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = REPO_ROOT / "solution"
ARCH_KWARGS = {"num_classes": 14, "base_width": 8, "depth": 2}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_checkpoint(path, input_size=64, **extra):
    torch.manual_seed(0)
    model = networks.create_model("unet", **ARCH_KWARGS)
    state = {
        "arch": "unet", "arch_kwargs": dict(ARCH_KWARGS), "model": model.state_dict(),
        "config": {"data": {"input_size": input_size}}, "epoch": 7, "best_mean_dice": 0.31,
        "metrics": {"mean_dice": 0.31, "miou": 0.22}, "classes": list(LPCVC_CLASSES),
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": input_size,
    }
    state.update(extra)
    save_checkpoint(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def built(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("built")
    return build_package(checkpoint, folder / "s.pyz", precision="fp16", build_dir=folder / "build", verify=False)


def test_import_closure_of_unet_is_its_file_and_blocks():
    # fusion and quant: every zoo network can be quantized (fuse_model), so they ship with it
    assert [name for name, _ in import_closure("networks.unet")] == [
        "networks.blocks", "networks.fusion", "networks.quant", "networks.unet"]


def test_every_registered_model_has_a_shippable_closure():
    for arch in networks.list_models():
        module = networks.MODELS[arch].__module__
        names = [name for name, _ in import_closure(module)]
        assert module in names and "networks" not in names


def write_tree(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_import_closure_follows_relative_and_subpackage_imports(tmp_path):
    write_tree(tmp_path, {
        "networks/__init__.py": "",
        "networks/model.py": "import os\nfrom .blocks import conv\nfrom networks.heads import fpn\n"
                             "try:\n    import timm\nexcept ImportError:\n    timm = None\n",
        "networks/blocks.py": "import torch\n",
        "networks/heads/__init__.py": "from . import common\n",
        "networks/heads/fpn.py": "from ..blocks import conv\n",
        "networks/heads/common.py": "import numpy\n",
        "networks/unused.py": "import torch\n",
    })
    names = [name for name, _ in import_closure("networks.model", root=tmp_path)]
    assert names == ["networks.blocks", "networks.heads", "networks.heads.common", "networks.heads.fpn",
                     "networks.model"]


@pytest.mark.parametrize("source, fragment", [
    ("import lowpower.data\n", "imports lowpower, which is workstation code"),
    ("from evaluation.metrics import referee_prepare\n", "imports evaluation"),
    ("import timm\n", "imports timm, which is not on the device"),
    ("from networks import create_model\n", "imports create_model from networks/__init__.py"),
    ("from networks.missing import thing\n", "networks/missing.py does not exist"),
])
def test_import_closure_refuses_what_cannot_ship(tmp_path, source, fragment):
    write_tree(tmp_path, {"networks/__init__.py": "", "networks/model.py": "import torch\n" + source})
    with pytest.raises(PackageError, match="networks/model.py|missing") as error:
        import_closure("networks.model", root=tmp_path)
    assert fragment in str(error.value)


def test_generated_init_builds_the_one_model(tmp_path):
    source = generated_init("unet", "networks.unet", "unet")
    namespace = {}
    exec(compile(source, "networks/__init__.py", "exec"), namespace)
    assert namespace["list_models"]() == ["unet"]
    with pytest.raises(ValueError, match="ships only"):
        namespace["create_model"]("deeplabv3_r18")


def test_package_holds_only_template_closure_manifest_and_weights(built):
    template = {"__main__.py"} | {"solution/" + p.name for p in TEMPLATE.glob("*.py") if p.name != "__main__.py"}
    expected = template | {"solution/manifest.json", "solution/weights.npz", "networks/__init__.py",
                           "networks/unet.py", "networks/blocks.py", "networks/fusion.py", "networks/quant.py"}
    with zipfile.ZipFile(built["path"]) as archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        names = {info.filename for info in files}
        kinds = {info.filename: info.compress_type for info in files}
    assert names == expected
    assert set(built["files"]) == expected
    assert kinds.pop("solution/weights.npz") == zipfile.ZIP_STORED  # read whole at start-up: no inflating
    assert set(kinds.values()) == {zipfile.ZIP_DEFLATED}


def test_template_is_copied_unmodified(built):
    build = pathlib.Path(built["build_dir"])
    assert (build / "__main__.py").read_bytes() == (TEMPLATE / "__main__.py").read_bytes()
    assert (build / "solution" / "main.py").read_bytes() == (TEMPLATE / "main.py").read_bytes()
    assert not (TEMPLATE / "manifest.json").exists() and not (TEMPLATE / "weights.npz").exists()


def test_interpreter_line_defaults_to_python36(built, checkpoint, tmp_path):
    assert pathlib.Path(built["path"]).read_bytes().startswith(b"#!/usr/bin/env python3.6\n")
    assert os.access(built["path"], os.X_OK)
    other = build_package(checkpoint, tmp_path / "t.pyz", python="/usr/bin/python3", build_dir=tmp_path / "b",
                          verify=False)
    assert pathlib.Path(other["path"]).read_bytes().startswith(b"#!/usr/bin/python3\n")


def test_manifest_records_what_the_program_needs(built, checkpoint):
    manifest = json.loads((pathlib.Path(built["build_dir"]) / "solution" / "manifest.json").read_text())
    assert manifest["arch"] == "unet" and manifest["arch_kwargs"] == ARCH_KWARGS
    assert manifest["num_classes"] == 14 and manifest["classes"] == list(LPCVC_CLASSES)
    assert manifest["mean"] == [0.485, 0.456, 0.406] and manifest["std"] == [0.229, 0.224, 0.225]
    assert (manifest["input_size"], manifest["output_size"]) == (64, 512)
    assert (manifest["precision"], manifest["timer"], manifest["batch_size"]) == ("fp16", "model", DEFAULT_BATCH_SIZE)
    import hashlib
    assert manifest["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert manifest["val_mean_dice"] == pytest.approx(0.31) and manifest["epoch"] == 7
    assert "LOWPOWER_SEQUENTIAL" in manifest["environment"]
    assert manifest["parameters"] == built["parameters"] > 0


def test_weights_are_plain_arrays_fp16_when_asked(built, checkpoint):
    state = torch.load(checkpoint, weights_only=True)["model"]
    with np.load(pathlib.Path(built["build_dir"]) / "solution" / "weights.npz", allow_pickle=False) as arrays:
        assert set(arrays.files) == set(state)
        for key in arrays.files:
            expected = np.float16 if state[key].is_floating_point() else state[key].numpy().dtype
            assert arrays[key].dtype == expected, key
            np.testing.assert_allclose(arrays[key].astype(np.float64), state[key].double().numpy(),
                                       rtol=1e-3, atol=1e-4)


def test_fp32_weights_are_exact(checkpoint, tmp_path):
    info = build_package(checkpoint, tmp_path / "f.pyz", build_dir=tmp_path / "b", verify=False)
    state = torch.load(checkpoint, weights_only=True)["model"]
    with np.load(pathlib.Path(info["build_dir"]) / "solution" / "weights.npz", allow_pickle=False) as arrays:
        for key in arrays.files:
            assert np.array_equal(arrays[key], state[key].numpy()), key


def test_input_size_and_timer_options(checkpoint, tmp_path):
    info = build_package(checkpoint, tmp_path / "x.pyz", input_size=96, timer="wall", batch_size=2,
                         build_dir=tmp_path / "b", verify=False)
    manifest = info["manifest"]
    assert (manifest["input_size"], manifest["trained_input_size"]) == (96, 64)
    assert (manifest["timer"], manifest["batch_size"]) == ("wall", 2)


def test_never_wipes_a_folder_that_is_not_a_build(checkpoint, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(PackageError, match="refusing to replace"):
        build_package(checkpoint, tmp_path / "s.pyz", build_dir=precious, verify=False)
    assert (precious / "notes.txt").read_text() == "keep me"
    build_package(checkpoint, tmp_path / "s.pyz", build_dir=tmp_path / "b", verify=False)
    build_package(checkpoint, tmp_path / "s.pyz", build_dir=tmp_path / "b", verify=False)  # rebuilds in place


def test_generated_python_passes_vermin_36(built):
    result = vermin_check(built["build_dir"])
    assert result.ok, result.text


def test_refuses_an_unregistered_model(tmp_path):
    path = make_checkpoint(tmp_path / "odd.pt", arch="no_such_net")
    with pytest.raises(PackageError, match="no_such_net.*registered: .*unet"):
        build_package(path, tmp_path / "s.pyz", build_dir=tmp_path / "b", verify=False)


@pytest.mark.parametrize("kind", ["text", "raw_state_dict", "missing"])
def test_refuses_what_is_not_a_lowpower_checkpoint(tmp_path, kind):
    path = tmp_path / "thing.pt"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "raw_state_dict":
        torch.save(networks.create_model("unet", **ARCH_KWARGS).state_dict(), path)
    with pytest.raises(PackageError, match="thing.pt"):
        read_checkpoint(path)


def test_cli_refuses_a_foreign_file_naming_it(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert main([str(path), "-o", str(tmp_path / "s.pyz"), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "notes.txt is not a lowpower checkpoint" in err
    assert not (tmp_path / "s.pyz").exists()


def test_cli_prints_what_it_built(checkpoint, tmp_path, capsys):
    out = tmp_path / "deep" / "solution.pyz"
    assert main([str(checkpoint), "-o", str(out), "--precision", "fp16", "--build-dir", str(tmp_path / "b"),
                 "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file()
    for fragment in (str(out), "KiB", "unet(", "parameters", "fp16", "val mean Dice 0.3100"):
        assert fragment in printed


@pytest.mark.slow  # compress.sh: a fresh interpreter imports torch and builds the package
def test_compress_sh_works_from_any_folder(checkpoint, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(REPO_ROOT / "compress.sh"), str(checkpoint), "-o", "rel/s.pyz", "--no-verify",
                             "--build-dir", str(tmp_path / "b")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rel" / "s.pyz").is_file()
    assert "built rel/s.pyz" in result.stdout


@pytest.mark.slow  # a package build with verification: presubmit runs the package
def test_verification_is_presubmit_on_two_images(checkpoint, tmp_path):
    info = build_package(checkpoint, tmp_path / "v.pyz", precision="fp16", build_dir=tmp_path / "b")
    assert pathlib.Path(info["path"]).is_file()
    first = info["checks"][0]
    assert first.startswith("presubmit on 2 sample images: passed")
    for check in ("archive", "python 3.6", "imports", "run", "stdout", "outputs", "memory"):
        assert check in first, first


@pytest.mark.slow  # a package build with verification: presubmit runs the package
def test_a_package_that_fails_presubmit_is_not_written(checkpoint, tmp_path, monkeypatch):
    import lowpower.ship.build

    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.npz"))
    main_py = template / "main.py"
    main_py.write_text(main_py.read_text() + "\nraise RuntimeError('broken template')\n")
    monkeypatch.setattr(lowpower.ship.build, "TEMPLATE_DIR", template)
    with pytest.raises(PackageError) as error:
        build_package(checkpoint, tmp_path / "bad.pyz", build_dir=tmp_path / "b")
    message = str(error.value)
    assert "\n" not in message
    assert "fails presubmit on 2 sample images: run: exit status 1" in message
    assert "RuntimeError: broken template" in message
    assert not (tmp_path / "bad.pyz").exists() and not list(tmp_path.glob("bad.pyz*"))  # no temporary left


def make_runs(root, names_and_ages):
    """root/NAME/best.pt for each name, modified ``age`` seconds ago."""
    now = time.time()
    for name, age in names_and_ages:
        (root / name).mkdir(parents=True)
        path = make_checkpoint(root / name / "best.pt")
        os.utime(path, (now - age, now - age))
    return root


def test_no_checkpoint_packages_the_newest_run(tmp_path, capsys):
    runs = make_runs(tmp_path / "runs", [("old", 300), ("newest", 10), ("middle", 100)])
    (runs / "stray.pt").write_bytes(b"")  # only RUNS/*/best.pt count
    out = tmp_path / "s.pyz"
    assert main(["--runs", str(runs), "-o", str(out), "--no-verify", "--build-dir", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert "packaging the newest checkpoint: %s" % (runs / "newest" / "best.pt") in captured.err
    assert out.is_file() and "built %s" % out in captured.out


def test_no_checkpoint_writes_evaluation_solution_pyz_by_default(tmp_path):
    make_runs(tmp_path / "runs", [("only", 5)])
    args = parse_args(["--runs", str(tmp_path / "runs")])
    checkpoint, output = resolve_paths(args)
    assert checkpoint == tmp_path / "runs" / "only" / "best.pt"
    assert output == REPO_ROOT / "evaluation" / "solution.pyz"  # evaluate.bash solution.pyz finds it there
    explicit = parse_args([str(checkpoint)])
    assert resolve_paths(explicit) == (checkpoint, pathlib.Path("solution.pyz"))


def test_no_checkpoint_and_no_runs_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    assert main(["--runs", str(tmp_path / "runs"), "-o", str(tmp_path / "s.pyz"), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no %s/*/best.pt to package" % (tmp_path / "runs") in err
    assert not (tmp_path / "s.pyz").exists()


@pytest.mark.slow  # compress.sh: a fresh interpreter imports torch and builds the package
def test_compress_sh_without_a_checkpoint(tmp_path):
    runs = make_runs(tmp_path / "runs", [("a", 50), ("b", 5)])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([str(REPO_ROOT / "compress.sh"), "--runs", str(runs), "-o", "s.pyz", "--no-verify",
                             "--build-dir", str(tmp_path / "b")],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert str(runs / "b" / "best.pt") in result.stderr and (tmp_path / "s.pyz").is_file()
