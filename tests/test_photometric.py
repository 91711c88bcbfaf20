"""Tests for lowpower.data.photometric: mmsegmentation's PhotoMetricDistortion on tv_tensors.

The reference below restates mmseg's ``PhotoMetricDistortion`` (mmseg/datasets/transforms/
transforms.py) in numpy + cv2, line for line, with its random draws replaced by given parameters:
``convert`` in float32 with clip and a truncating uint8 cast, ``mmcv.bgr2hsv`` / ``hsv2bgr`` as
``cv2.cvtColor`` on uint8 (RGB order here: HSV does not depend on the channel order).

Tolerance, one uint8 level: OpenCV's uint8 HSV->RGB truncates in its vector loop but rounds in its
scalar loop (a row's last pixels), and its compiler may fuse a multiply-add, so OpenCV itself is
only reproducible to one level. One level in the middle of a chain can grow, since the next
RGB->HSV may land on another 2-degree hue step; so the chained cases compare against the
reference with OpenCV's vector-loop HSV->RGB restated in numpy (checked against cv2 to one level
below), and the single-op cases also against cv2 itself.
"""

import doctest
import random

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from lowpower.config import ConfigError, load_config
from lowpower.data import photometric
from lowpower.data.build import split_transforms
from lowpower.data.photometric import PhotometricDistortion, apply_photometric, hsv_to_rgb_cv
from lowpower.data.transforms import train_transforms

NONE = {"brightness": None, "contrast": None, "contrast_first": False, "saturation": None, "hue": None}


def params(**changes):
    return dict(NONE, **changes)


def cv2_hsv2rgb(hsv):
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def numpy_hsv2rgb(hsv):
    """OpenCV's vector-loop uint8 HSV->RGB (HSV2RGB_b with HSV2RGB_simd), float32, truncating."""
    h = hsv[..., 0].astype(np.float32) * np.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) * np.float32(1.0 / 255.0)
    v = hsv[..., 2].astype(np.float32) * np.float32(1.0 / 255.0)
    sector = np.trunc(h)
    f = h - sector
    one = np.float32(1.0)
    tab = [v, v * (one - s), v * (one - s * f), v * (one - s * (one - f))]
    # OpenCV's sector_data rows give (b, g, r) indices into tab.
    sector_data = [(1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0)]
    sector = sector.astype(int) % 6
    out = np.zeros(hsv.shape, np.float32)
    for k, (bi, gi, ri) in enumerate(sector_data):
        here = sector == k
        for channel, index in ((0, ri), (1, gi), (2, bi)):
            out[..., channel][here] = tab[index][here]
    return np.clip(np.trunc(out * np.float32(255.0)), 0, 255).astype(np.uint8)


def mmseg_reference(image, p, hsv2rgb=cv2_hsv2rgb):
    """mmseg's PhotoMetricDistortion.transform on an HxWx3 uint8 RGB array with drawn values ``p``."""

    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        img = np.clip(img, 0, 255)
        return img.astype(np.uint8)

    img = image
    if p["brightness"] is not None:
        img = convert(img, beta=p["brightness"])
    if p["contrast_first"] and p["contrast"] is not None:  # mmseg's mode == 1
        img = convert(img, alpha=p["contrast"])
    if p["saturation"] is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=p["saturation"])
        img = hsv2rgb(hsv)
    if p["hue"] is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + p["hue"]) % 180
        img = hsv2rgb(hsv)
    if not p["contrast_first"] and p["contrast"] is not None:  # mode == 0
        img = convert(img, alpha=p["contrast"])
    return img


def sample_images():
    """Noise (every colour region, saturated ones included) and a smooth gradient; odd widths."""
    noise = np.random.default_rng(0).integers(0, 256, (41, 67, 3), dtype=np.uint8)
    y, x = np.mgrid[0:48, 0:83]
    gradient = np.stack([x * 3, y * 5, 255 - x * 2 - y], -1).clip(0, 255).astype(np.uint8)
    return [noise, gradient]


def ours(image, p):
    out = apply_photometric(torch.from_numpy(image).permute(2, 0, 1).contiguous(), p)
    return out.permute(1, 2, 0).numpy()


def max_diff(a, b):
    return int(np.abs(a.astype(int) - b.astype(int)).max())


SINGLE = [
    params(brightness=25.7), params(brightness=-31.2), params(brightness=-0.49),
    params(contrast=1.43), params(contrast=0.52, contrast_first=True),
    params(saturation=1.37), params(saturation=0.61),
    params(hue=17), params(hue=-18), params(hue=7),
]
CHAINED = [
    params(brightness=12.3, contrast=1.21, contrast_first=True, saturation=0.74, hue=-9),
    params(brightness=12.3, contrast=1.21, contrast_first=False, saturation=0.74, hue=-9),
    params(brightness=-20.5, contrast=0.83, contrast_first=True, saturation=1.45, hue=15),
    params(brightness=-20.5, contrast=0.83, contrast_first=False, saturation=1.45, hue=15),
    params(contrast=1.5, contrast_first=False, hue=3),
    params(brightness=31.0, saturation=0.5),
    params(brightness=0.49),  # truncation: a delta in [0, 1) changes nothing, in (-1, 0) takes a level
    NONE,
]


def test_numpy_hsv2rgb_restatement_matches_cv2_to_one_level():
    h, s, v = np.meshgrid(np.arange(180), np.arange(0, 256, 3), np.arange(0, 256, 3), indexing="ij")
    hsv = np.stack([h, s, v], -1).astype(np.uint8).reshape(180, -1, 3)
    assert max_diff(numpy_hsv2rgb(hsv), cv2_hsv2rgb(hsv)) <= 1


@pytest.mark.parametrize("p", SINGLE)
def test_each_op_alone_matches_mmseg_with_cv2(p):
    for image in sample_images():
        expected = mmseg_reference(image, p)
        got = ours(image, p)
        if p["saturation"] is None and p["hue"] is None:
            assert np.array_equal(got, expected)  # brightness and contrast: no HSV round trip, exact
        else:
            assert max_diff(got, expected) <= 1
        assert not np.array_equal(got, image)


@pytest.mark.parametrize("p", SINGLE + CHAINED)
def test_all_ops_in_both_modes_match_the_restatement(p):
    for image in sample_images():
        assert max_diff(ours(image, p), mmseg_reference(image, p, numpy_hsv2rgb)) <= 1


def test_hsv_to_rgb_matches_cv2_over_every_hue():
    h, s, v = np.meshgrid(np.arange(180), np.arange(0, 256, 5), np.arange(0, 256, 5), indexing="ij")
    hsv = np.stack([h, s, v], -1).astype(np.uint8).reshape(180, -1, 3)
    t = torch.from_numpy(hsv.astype(np.int32))
    got = hsv_to_rgb_cv(t[..., 0], t[..., 1], t[..., 2]).permute(1, 2, 0).numpy()
    assert max_diff(got, cv2_hsv2rgb(hsv)) <= 1


def test_masks_pass_unchanged_and_images_change():
    image = tv_tensors.Image(torch.from_numpy(sample_images()[0]).permute(2, 0, 1).contiguous())
    mask = tv_tensors.Mask(torch.randint(0, 14, image.shape[-2:], dtype=torch.uint8))
    mask_before = mask.clone()
    t = PhotometricDistortion()
    changed = 0
    for seed in range(8):
        torch.manual_seed(seed)
        out_image, out_mask = t(image, mask)
        assert out_mask is mask and torch.equal(out_mask, mask_before)
        assert isinstance(out_image, tv_tensors.Image) and out_image.dtype == torch.uint8
        changed += not torch.equal(out_image, image)
    assert changed >= 4  # P(no op fires) = 1/16 per draw
    every_op = params(brightness=5.5, contrast=1.2, saturation=1.3, hue=4)
    assert t.transform(mask, every_op) is mask
    assert not torch.equal(t.transform(image, every_op), image)


def test_refuses_non_uint8_images():
    with pytest.raises(ValueError, match="uint8"):
        apply_photometric(torch.zeros(3, 4, 4), params(brightness=1.0))


def test_same_torch_seed_same_output_other_seed_other_output_other_rngs_ignored():
    image = tv_tensors.Image(torch.from_numpy(sample_images()[0]).permute(2, 0, 1).contiguous())
    t = PhotometricDistortion()

    def run(seed, other):
        torch.manual_seed(seed)
        random.seed(other)
        np.random.seed(other)
        return t(image)

    first = run(1, 0)
    assert torch.equal(first, run(1, 99))  # python and numpy generators play no part
    assert not torch.equal(first, run(2, 0))


def test_each_op_fires_about_half_the_time_with_values_in_range():
    t = PhotometricDistortion()
    torch.manual_seed(0)
    draws = [t.make_params([]) for _ in range(400)]
    for key in ("brightness", "contrast", "saturation", "hue"):
        share = sum(d[key] is not None for d in draws) / len(draws)
        assert 0.4 <= share <= 0.6, (key, share)
    assert 0.4 <= sum(d["contrast_first"] for d in draws) / len(draws) <= 0.6
    values = {key: [d[key] for d in draws if d[key] is not None] for key in ("brightness", "contrast", "hue")}
    assert -32 <= min(values["brightness"]) and max(values["brightness"]) <= 32
    assert 0.5 <= min(values["contrast"]) and max(values["contrast"]) <= 1.5
    assert -18 <= min(values["hue"]) and max(values["hue"]) <= 17  # mmseg's randint(-18, 18)
    assert all(isinstance(h, int) for h in values["hue"])


def test_train_transforms_end_to_end_and_unchanged_without_photometric():
    image = np.random.default_rng(1).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    mask = np.random.default_rng(2).integers(0, 14, (96, 80), dtype=np.uint8)

    def run(t, seed=3):
        torch.manual_seed(seed)
        return t(image, mask)

    with_photometric = train_transforms(64, photometric=True)
    kinds = [type(step).__name__ for step in with_photometric.pipeline.transforms]
    assert kinds.index("PhotometricDistortion") == kinds.index("RandomHorizontalFlip") + 1
    out_image, out_mask = run(with_photometric)
    assert out_image.dtype == torch.float32 and tuple(out_image.shape) == (3, 64, 64)
    assert out_mask.dtype == torch.int64 and tuple(out_mask.shape) == (64, 64)

    before, off = run(train_transforms(64)), run(train_transforms(64, photometric=False))
    assert torch.equal(before[0], off[0]) and torch.equal(before[1], off[1])
    assert "PhotometricDistortion" not in repr(train_transforms(64, photometric=False))
    # Same seed, photometric on: the geometry draws come first, so the mask is the same crop.
    assert torch.equal(out_mask, before[1]) and not torch.equal(out_image, before[0])


def test_config_key_validates_and_reaches_the_transforms():
    assert load_config(None)["data"]["photometric"] is False
    cfg = load_config(None, ["data.photometric=true"])
    assert cfg["data"]["photometric"] is True
    assert "PhotometricDistortion" in repr(split_transforms(cfg, train=True))
    assert "PhotometricDistortion" not in repr(split_transforms(load_config(None), train=True))
    with pytest.raises(ConfigError, match="data.photometric must be true/false"):
        load_config(None, ["data.photometric=3"])


def test_docstring_examples_run():
    # conftest.py runs the examples of a few listed modules only; this keeps these ones honest too.
    result = doctest.testmod(photometric)
    assert result.attempted >= 5 and result.failed == 0


def test_the_cityscapes_pipeline_takes_the_key_too():
    from lowpower.config import load_config
    from lowpower.data import cityscapes

    image = np.random.default_rng(3).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    mask = np.random.default_rng(4).integers(0, 19, (32, 64), dtype=np.uint8)
    outputs = {}
    for on in (False, True):
        data = load_config(None, ["data.dataset=cityscapes", "data.num_classes=19", "data.input_size=32",
                                  "data.jitter=0", "data.hflip=0", "data.scale_min=1", "data.scale_max=1",
                                  "data.photometric=%s" % str(on).lower()])["data"]
        torch.manual_seed(0)
        outputs[on] = cityscapes.split_transforms(data, train=True)(image, mask)
    assert torch.equal(outputs[False][1], outputs[True][1])  # the mask is not distorted
    assert not torch.equal(outputs[False][0], outputs[True][0])
