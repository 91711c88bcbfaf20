"""The shipped program: checkpoint -> pyz -> run with ``python -I`` from an empty folder.

The pyz runs under this interpreter (the device's Python 3.6 is not available here); the
reference masks come from the in-repository model with the same preprocessing written out
independently below.
"""
import ast
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import networks
from evaluation.contract import CLASS_NAMES as LPCVC_CLASSES
from lowpower.checkpoint import build_model, load_checkpoint, save_checkpoint
from lowpower.data.transforms import eval_transforms
from lowpower.ship.build import build_package
from lowpower.train import engine
from solution import imagefiles, postprocess
from solution.model import Segmenter

INPUT_SIZE = 64
REFEREE_FLOAT = re.compile(r"[0-9]+\.[0-9]+")
READABLE = ["a_rgb.png", "b_odd.png", "c_rgba.png", "d_gray.png", "e_deep16.png", "f_jpeg.png", "g_palette.png"]
BROKEN = ["x_corrupt.png", "y_empty.png", "z_truncated.png"]


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def smooth_image(rng, height, width, channels=3):
    """Blobby colour image, so a random network predicts several classes."""
    small = rng.integers(0, 256, (6, 6, channels), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return image.reshape(height, width, channels)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = {"num_classes": 14, "base_width": 8, "depth": 2}
    model = networks.create_model("unet", **kwargs)
    with torch.no_grad():  # spread the logits apart so argmax is not decided by rounding noise
        model.head.weight.mul_(8.0)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint({"arch": "unet", "arch_kwargs": kwargs, "model": model.state_dict(),
                     "config": {"data": {"input_size": INPUT_SIZE}}, "epoch": 1, "best_mean_dice": 0.1,
                     "metrics": {"mean_dice": 0.1, "miou": 0.05}, "classes": list(LPCVC_CLASSES),
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": INPUT_SIZE},
                    path)
    return path


@pytest.fixture(scope="module")
def packages(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyz")
    return {name: build_package(checkpoint, folder / (name + ".pyz"), precision=precision, timer=timer,
                                build_dir=folder / ("build_" + name), verify=False)["path"]
            for name, precision, timer in [("fp32", "fp32", "model"), ("fp16", "fp16", "model"),
                                           ("wall", "fp32", "wall"), ("network", "fp32", "network")]}


@pytest.fixture(scope="module")
def batched_package(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pyz_batch")
    return build_package(checkpoint, folder / "b3.pyz", batch_size=3, build_dir=folder / "build",
                         verify=False)["path"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Inputs the program has never seen: odd sizes, RGBA, gray, 16-bit, JPEG named .png, broken files.

    Returns (folder, {name: the RGB uint8 image the program should see, or None when unreadable}).
    """
    folder = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(1)
    rgb = smooth_image(rng, 512, 512)
    odd = smooth_image(rng, 333, 517)
    expected = {}

    def save_bgr(name, image_rgb):
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        expected[name] = image_rgb

    save_bgr("a_rgb.png", rgb)
    save_bgr("b_odd.png", odd)
    alpha = rng.integers(0, 256, (512, 512, 1), dtype=np.uint8)
    cv2.imwrite(str(folder / "c_rgba.png"), np.concatenate([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha], 2))
    expected["c_rgba.png"] = rgb  # alpha is dropped
    gray = smooth_image(rng, 400, 300, channels=1)[:, :, 0]
    cv2.imwrite(str(folder / "d_gray.png"), gray)
    expected["d_gray.png"] = np.repeat(gray[:, :, None], 3, axis=2)
    cv2.imwrite(str(folder / "e_deep16.png"), cv2.cvtColor(odd, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    expected["e_deep16.png"] = odd  # x * 257 in 16 bits is x in 8 bits
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    (folder / "f_jpeg.png").write_bytes(jpeg.tobytes())
    expected["f_jpeg.png"] = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    palette = Image.fromarray(odd).convert("P", palette=Image.ADAPTIVE, colors=32)
    palette.save(str(folder / "g_palette.png"))
    expected["g_palette.png"] = np.asarray(palette.convert("RGB"))
    (folder / "x_corrupt.png").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (folder / "y_empty.png").write_bytes(b"")
    png = (folder / "a_rgb.png").read_bytes()
    (folder / "z_truncated.png").write_bytes(png[: len(png) // 3])
    expected.update({name: None for name in BROKEN})
    return folder, expected


def run_program(pyz, images, out, cwd, **env):
    """Run the pyz as the referee does, with -I from an empty folder."""
    cwd.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, LOWPOWER_THREADS="1")
    environment.update(env)
    return subprocess.run([sys.executable, "-I", str(pyz), "-i", str(images), "-o", str(out)], cwd=str(cwd),
                          env=environment, capture_output=True, text=True, timeout=600)


def reference_masks(checkpoint, expected):
    """The in-repository model on the same preprocessing: RGB, Pillow bilinear resize, /255, mean/std."""
    state = load_checkpoint(checkpoint)
    model = build_model(state).eval()
    mean = torch.tensor(state["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(state["std"]).view(1, 3, 1, 1)
    masks = {}
    for name, rgb in expected.items():
        if rgb is None:
            continue
        resized = np.array(Image.fromarray(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
        x = torch.from_numpy(resized).permute(2, 0, 1)[None].contiguous().float().mul_(1.0 / 255)
        x = x.sub_(mean).div_(std)
        with torch.no_grad():
            logits = F.interpolate(model(x), size=(512, 512), mode="bilinear", align_corners=False)
        masks[name] = logits.argmax(1)[0].to(torch.uint8).numpy()
    return masks


@pytest.fixture(scope="module")
def reference(checkpoint, images):
    return reference_masks(checkpoint, images[1])


@pytest.fixture(scope="module")
def fp32_run(packages, images, tmp_path_factory):
    base = tmp_path_factory.mktemp("run32")
    result = run_program(packages["fp32"], images[0], base / "out" / "nested", base / "cwd")
    return result, base / "out" / "nested"


def read_mask(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def assert_one_float(stdout):
    assert re.fullmatch(r"[0-9]+\.[0-9]+\n", stdout), repr(stdout)
    assert len(REFEREE_FLOAT.findall(stdout)) == 1


# ----------------------------------------------------------------------------- end to end

def test_reference_preprocessing_is_the_train_time_evaluation(images):
    """Pillow's bilinear resize reproduces torchvision's antialiased Resize to within one grey level."""
    transform = eval_transforms(INPUT_SIZE)
    for name in ("a_rgb.png", "b_odd.png"):
        rgb = images[1][name]
        train_time, _ = transform(rgb, np.zeros(rgb.shape[:2], np.uint8))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        ours = torch.from_numpy(np.array(imagefiles.resize(rgb, INPUT_SIZE))).permute(2, 0, 1).float() / 255
        difference = ((ours - mean) / std - train_time).abs() * std * 255
        assert float(difference.max()) <= 1.0 + 1e-3, name


def test_run_exits_zero_and_prints_one_float(fp32_run):
    result, _ = fp32_run
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)


def test_one_512_mask_per_input_with_the_same_name(fp32_run, images):
    _, out = fp32_run
    assert sorted(os.listdir(out)) == sorted(images[1])
    for name in images[1]:
        mask = read_mask(out / name)
        assert mask.shape == (512, 512) and mask.dtype == np.uint8, name
        assert mask.max() <= 13, name


def test_masks_equal_the_in_repository_model_in_fp32(fp32_run, reference):
    _, out = fp32_run
    assert len(np.unique(reference["a_rgb.png"])) >= 2  # the comparison means something
    for name, expected in reference.items():
        np.testing.assert_array_equal(read_mask(out / name), expected, err_msg=name)


def test_odd_formats_read_like_their_plain_rgb(fp32_run):
    _, out = fp32_run
    np.testing.assert_array_equal(read_mask(out / "c_rgba.png"), read_mask(out / "a_rgb.png"))
    np.testing.assert_array_equal(read_mask(out / "e_deep16.png"), read_mask(out / "b_odd.png"))


@pytest.mark.parametrize("name", BROKEN)
def test_unreadable_file_gets_a_background_mask_and_a_warning(fp32_run, name):
    result, out = fp32_run
    mask = read_mask(out / name)
    assert mask.shape == (512, 512) and not mask.any()
    assert re.search(r"warning: %s is unreadable" % re.escape(name), result.stderr)


@pytest.mark.slow  # a variant of the run the fp32 tests make: one more fresh interpreter runs the package
def test_fp16_package_agrees_with_fp32_model(packages, images, reference, tmp_path):
    result = run_program(packages["fp16"], images[0], tmp_path / "out", tmp_path / "cwd")
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)
    assert "fp16-rounded weights" in result.stderr  # CPU: fp16 weights, fp32 compute
    agreement = np.mean([np.mean(read_mask(tmp_path / "out" / name) == mask) for name, mask in reference.items()])
    assert agreement >= 0.99


@pytest.mark.slow  # a variant of the run the fp32 tests make: one more fresh interpreter runs the package
def test_sequential_mode_writes_the_same_masks(packages, images, fp32_run, tmp_path):
    stats = tmp_path / "stats.json"
    result = run_program(packages["fp32"], images[0], tmp_path / "out", tmp_path / "cwd",
                         LOWPOWER_SEQUENTIAL="1", LOWPOWER_STATS=str(stats))
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)
    recorded = json.loads(stats.read_text())
    assert recorded["sequential"] is True and recorded["images"] == len(images[1])
    assert recorded["model_seconds"] == pytest.approx(float(result.stdout), abs=1e-5)
    for name in images[1]:
        assert (tmp_path / "out" / name).read_bytes() == (fp32_run[1] / name).read_bytes(), name


@pytest.mark.slow  # a variant of the run the fp32 tests make: one more fresh interpreter runs the package
def test_wall_timer_prints_the_whole_run(packages, images, tmp_path):
    stats = tmp_path / "stats.json"
    result = run_program(packages["wall"], images[0], tmp_path / "out", tmp_path / "cwd", LOWPOWER_STATS=str(stats))
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)
    recorded = json.loads(stats.read_text())
    assert float(result.stdout) == pytest.approx(recorded["wall_seconds"], abs=1e-5)
    assert recorded["wall_seconds"] > recorded["loop_seconds"] >= recorded["model_seconds"]


@pytest.mark.slow  # a variant of the run the fp32 tests make: one more fresh interpreter runs the package
def test_network_timer_prints_the_network_calls_without_the_post_processing(packages, images, tmp_path):
    stats = tmp_path / "stats.json"
    result = run_program(packages["network"], images[0], tmp_path / "out", tmp_path / "cwd",
                         LOWPOWER_STATS=str(stats))
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)
    recorded = json.loads(stats.read_text())
    assert float(result.stdout) == pytest.approx(recorded["network_seconds"], abs=1e-5)
    assert 0 < recorded["network_seconds"] < recorded["model_seconds"]


@pytest.mark.slow  # a variant of the run the fp32 tests make: one more fresh interpreter runs the package
def test_batches_of_three_give_the_same_masks(batched_package, images, reference, tmp_path):
    result = run_program(batched_package, images[0], tmp_path / "out", tmp_path / "cwd")
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)
    agreement = np.mean([np.mean(read_mask(tmp_path / "out" / name) == mask) for name, mask in reference.items()])
    assert agreement >= 0.999
    for name in BROKEN:
        assert not read_mask(tmp_path / "out" / name).any()


@pytest.mark.parametrize("case", ["empty", "missing", "file"])
def test_bad_input_folder_exits_nonzero_with_one_line(packages, tmp_path, case):
    target = tmp_path / "input"
    if case == "empty":
        target.mkdir()
    elif case == "file":
        target.write_text("x")
    result = run_program(packages["fp32"], target, tmp_path / "out", tmp_path / "cwd")
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0], result.stderr


def test_broken_symlink_gets_a_background_mask_and_a_warning(packages, images, tmp_path):
    """Fault 10 of issue 12: a broken link got no mask and no warning."""
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "a_rgb.png").write_bytes((images[0] / "a_rgb.png").read_bytes())
    (folder / "b_link.png").symlink_to(tmp_path / "unmounted" / "b.png")
    result = run_program(packages["fp32"], folder, tmp_path / "out", tmp_path / "cwd")
    assert result.returncode == 0, result.stderr
    assert_one_float(result.stdout)  # the warning went to stderr, never to stdout
    mask = read_mask(tmp_path / "out" / "b_link.png")
    assert mask.shape == (512, 512) and mask.dtype == np.uint8 and not mask.any()
    assert re.search(r"warning: b_link\.png is unreadable \(a broken symbolic link to .*unmounted", result.stderr)
    assert sorted(os.listdir(tmp_path / "out")) == ["a_rgb.png", "b_link.png"]


def test_folder_of_only_unreadable_files_exits_nonzero(packages, images, tmp_path):
    """Fault 10 of issue 12: a folder in which nothing is an image printed 0.000000 and exited 0."""
    folder = tmp_path / "img"
    folder.mkdir()
    for name in BROKEN:
        (folder / name).write_bytes((images[0] / name).read_bytes())
    (folder / "w_link.png").symlink_to(tmp_path / "nowhere.png")
    result = run_program(packages["fp32"], folder, tmp_path / "out", tmp_path / "cwd")
    assert result.returncode == 2
    assert result.stdout == ""  # no number that could pass for a result
    last = result.stderr.strip().splitlines()[-1]
    assert "none of the 4 files in {} could be read as an image".format(folder) in last, result.stderr


def test_package_ships_every_solution_module(packages):
    """package.py copies every solution/*.py; the split modules must be in the archive."""
    with zipfile.ZipFile(str(packages["fp32"])) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("solution/manifest.json"))
    modules = {"__main__.py" if path.name == "__main__.py" else "solution/" + path.name
               for path in pathlib.Path(postprocess.__file__).parent.glob("*.py")}
    assert modules >= {"solution/main.py", "solution/postprocess.py", "solution/model.py",
                       "solution/pipeline.py", "solution/imagefiles.py"}
    assert modules <= names
    assert manifest["referee_classes"] == len(LPCVC_CLASSES)


def test_validation_uses_the_shipped_post_processing():
    assert engine.segment is postprocess.segment


def test_post_processing_holds_no_threads_or_state():
    """postprocess.py imports torch only and defines functions only: no pools, no module globals."""
    tree = ast.parse(pathlib.Path(postprocess.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"torch", "torch.nn.functional"}
    assert all(isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)) or
               (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in tree.body)


class FiveChannels(torch.nn.Module):
    """Logits whose channels 3 and 4 win everywhere: ids a 3-class referee must never see."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 5, x.shape[2], x.shape[3])
        logits[:, 1, :, : x.shape[3] // 2] = 1.0
        logits[:, 3:] = 5.0
        return {"out": logits}


def test_segmenter_scores_only_the_manifest_referee_classes():
    """The channel limit comes from the manifest's referee_classes (the contract), not a literal 14."""
    manifest = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "output_size": 8}
    batch = np.zeros((2, 8, 8, 3), np.uint8)
    three = Segmenter(FiveChannels(), dict(manifest, referee_classes=3), torch.device("cpu"), False)(batch)
    assert three.shape == (2, 8, 8) and three.dtype == np.uint8
    assert set(np.unique(three).tolist()) == {0, 1}  # channels 3 and 4 never scored
    five = Segmenter(FiveChannels(), dict(manifest, referee_classes=5), torch.device("cpu"), False)(batch)
    assert set(np.unique(five).tolist()) == {3}


# ----------------------------------------------------------------------------- the reader, in process

def test_decode_handles_every_input_kind(images):
    folder, expected = images
    for name, rgb in expected.items():
        decoded = imagefiles.decode((folder / name).read_bytes())
        if rgb is None:
            assert decoded is None, name
        else:
            np.testing.assert_array_equal(decoded, rgb, err_msg=name)


def test_decode_falls_back_to_pillow_for_formats_opencv_lacks():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (200, 10, 10)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="GIF")
    decoded = imagefiles.decode(buffer.getvalue())
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8
    assert tuple(decoded[0, 0]) == (200, 10, 10)


def test_channel_argmax_matches_torch_argmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 14, 33, 47)
    logits[:, 5] = logits[:, 3]  # ties: the first maximum wins, as in torch.argmax
    np.testing.assert_array_equal(postprocess.channel_argmax(logits).numpy(),
                                  logits.argmax(1).to(torch.uint8).numpy())
