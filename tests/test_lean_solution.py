"""The lean shipped program: the CPU post-processing shortcut, the stats breakdown, imports, exit codes."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowpower.measure.solution import PHASES, phase_values
from solution import postprocess

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def smooth_logits(seed, count, classes, side, blobs=5):
    """Blobby logits (a few regions per class), as a trained network gives, at side x side."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(count, classes, blobs, blobs, generator=gen) * 4
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)


@pytest.mark.parametrize("side,size", [(32, 128), (64, 128), (48, 100), (40, (96, 64))])
@pytest.mark.parametrize("fraction", [0.0, 0.01])
def test_cpu_shortcut_gives_the_reference_masks(side, size, fraction):
    logits = smooth_logits(side, 2, 6, side)
    shape = size if isinstance(size, tuple) else (size, size)
    ids, scores_at = postprocess.upsampled_class_ids(logits, shape, max_share=1.0)  # always the shortcut
    shortcut = postprocess.reassign_small_classes(ids, scores_at, 6, fraction)
    expected = postprocess.segment_reference(logits, size, fraction)
    assert len(expected.unique()) >= 3  # the comparison means something
    assert torch.equal(shortcut, expected)
    assert torch.equal(postprocess.segment(logits, size, fraction), expected)  # whichever path it takes


def test_noisy_logits_fall_back_to_the_reference():
    logits = torch.randn(1, 5, 32, 32, generator=torch.Generator().manual_seed(3))
    assert postprocess.upsampled_class_ids(logits, (128, 128)) == (None, None)
    assert torch.equal(postprocess.segment(logits, 128, 0.01), postprocess.segment_reference(logits, 128, 0.01))


def test_edge_pixels_are_scored_like_f_interpolate():
    logits = smooth_logits(7, 1, 4, 16)
    scores_at = postprocess.bilinear_scores(logits, (64, 64))
    image, row, col = torch.zeros(64 * 64, dtype=torch.long), *torch.meshgrid(
        torch.arange(64), torch.arange(64), indexing="ij")
    ours = scores_at(image, row.reshape(-1), col.reshape(-1))
    theirs = F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, theirs[0].permute(1, 2, 0).reshape(-1, 4), rtol=1e-5, atol=1e-5)


def test_top_two_gives_argmax_and_margin():
    logits = torch.randn(2, 7, 9, 11, generator=torch.Generator().manual_seed(1))
    ids, margin = postprocess.top_two(logits)
    values, _ = logits.topk(2, dim=1)
    assert torch.equal(ids.long(), logits.argmax(1))
    torch.testing.assert_close(margin, values[:, 0] - values[:, 1])


# ----------------------------------------------------------------------------- the program

@pytest.fixture(scope="module")
def unet_package(float_package, tmp_path_factory):
    """(the session's package of its tiny trained UNet (tests/conftest.py), a folder of 3 random 96x80 images)"""
    images = tmp_path_factory.mktemp("lean_img")
    rng = np.random.default_rng(0)
    for index in range(3):
        assert cv2.imwrite(str(images / ("%d.png" % index)), rng.integers(0, 256, (96, 80, 3), dtype=np.uint8))
    return float_package["path"], images


def run(pyz, images, out, tmp_path, *flags, **env):
    environment = dict(os.environ, LOWPOWER_THREADS="1", **env)
    return subprocess.run([sys.executable, "-I", *flags, str(pyz), "-i", str(images), "-o", str(out)],
                          cwd=str(tmp_path), env=environment, capture_output=True, text=True, timeout=300)


def test_a_unet_package_imports_no_torchvision(unet_package, tmp_path):
    pyz, images = unet_package
    result = run(pyz, images, tmp_path / "out", tmp_path, "-X", "importtime")
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "torch" in imported and "solution.main" in imported  # the listing is the program's
    assert not [name for name in imported if name.split(".")[0] == "torchvision"]


def test_stats_hold_the_breakdown_in_order(unet_package, tmp_path):
    pyz, images = unet_package
    stats_file = tmp_path / "stats.json"
    result = run(pyz, images, tmp_path / "out", tmp_path, LOWPOWER_STATS=str(stats_file))
    assert result.returncode == 0, result.stderr
    stats = json.loads(stats_file.read_text())
    assert stats["main_start"] <= stats["model_ready"] <= stats["first_batch_ready"] \
        <= stats["first_mask_written"] <= stats["last_mask_written"]
    assert stats["input_seconds"] + stats["network_seconds"] + stats["postprocess_seconds"] == \
        pytest.approx(stats["model_seconds"])
    assert stats["input_seconds"] > 0
    assert stats["postprocess_seconds"] > 0 and stats["network_seconds"] > 0
    stats.update(launched=stats["main_start"] - 0.05, process_seconds=stats["wall_seconds"] + 0.2)
    values = phase_values(stats)
    assert set(values) == {key for _, key, _ in PHASES}
    assert values["startup"] > 0.05 and values["teardown"] > 0
    assert stats["wait_policy"] == "PASSIVE" and stats["keep_heap"] is True  # runtime.prepare_process ran


@pytest.mark.slow  # a variant of the stats run above: one more fresh interpreter runs the package
def test_the_allocator_is_left_alone_when_switched_off(unet_package, tmp_path):
    pyz, images = unet_package
    stats_file = tmp_path / "stats.json"
    result = run(pyz, images, tmp_path / "out", tmp_path, LOWPOWER_STATS=str(stats_file), LOWPOWER_KEEP_HEAP="0")
    assert result.returncode == 0, result.stderr
    assert json.loads(stats_file.read_text())["keep_heap"] is False


def test_a_failed_write_still_exits_one_after_os_exit(unet_package, tmp_path):
    pyz, images = unet_package
    out = tmp_path / "out"
    (out / "1.png").mkdir(parents=True)  # a folder where the mask should go: that write fails
    result = run(pyz, images, out, tmp_path)
    assert result.returncode == 1
    assert "could not write the mask of 1.png" in result.stderr  # stderr flushed before os._exit
    assert result.stdout.strip()  # the number is still printed
    assert (out / "0.png").is_file() and (out / "2.png").is_file()
