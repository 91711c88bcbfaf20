"""Tests for lowpower.data.transforms (paired train/eval transforms) and lowpower.data.colors."""

import numpy as np
import pytest
import torch

from lowpower.data.colors import PALETTE, colorize, overlay
from lowpower.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    eval_transforms,
    train_transforms,
)


def sample_pair(size=32, ids=(0, 3, 7), seed=0):
    """A random RGB image and a blocky mask holding only ``ids``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    blocks = rng.choice(np.array(ids, np.uint8), size=(4, 4))
    mask = np.kron(blocks, np.ones((size // 4, size // 4), np.uint8))
    return image, mask


def test_train_mask_stays_integer_with_input_ids_plus_ignore():
    image, mask = sample_pair()
    t = train_transforms(32, crop_size=24, scale=(0.5, 2.0))
    torch.manual_seed(0)
    for _ in range(10):
        out_image, out_mask = t(image, mask)
        assert out_image.dtype == torch.float32 and tuple(out_image.shape) == (3, 24, 24)
        assert out_mask.dtype == torch.int64 and tuple(out_mask.shape) == (24, 24)
        assert set(out_mask.unique().tolist()) <= {0, 3, 7, 255}


def test_train_pads_with_ignore_when_crop_exceeds_scaled_image():
    image, mask = sample_pair()
    t = train_transforms(32, crop_size=32, scale=(0.5, 0.5), hflip=0.0, jitter=0.0)
    out_image, out_mask = t(image, mask)
    assert int((out_mask == 255).sum()) == 32 * 32 - 16 * 16
    # Padded image pixels are 0 before normalisation, i.e. -mean/std after it.
    padded = out_image[:, out_mask == 255]
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(padded, expected[:, None].expand_as(padded), atol=1e-5)


def test_train_custom_ignore_index():
    image, mask = sample_pair()
    t = train_transforms(32, crop_size=40, scale=(1.0, 1.0), ignore_index=250)
    assert set(t(image, mask)[1].unique().tolist()) == {0, 3, 7, 250}


def test_train_accepts_dataset_style_tensors():
    image, mask = sample_pair()
    t = train_transforms(16)
    out_image, out_mask = t(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask).long())
    assert tuple(out_image.shape) == (3, 16, 16) and out_mask.dtype == torch.int64


def test_train_is_deterministic_under_manual_seed():
    image, mask = sample_pair()
    t = train_transforms(32, crop_size=24)

    def run(seed):
        torch.manual_seed(seed)
        return t(image, mask)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_eval_image_normalised_and_mask_at_referee_size():
    image = np.empty((64, 48, 3), np.uint8)
    image[:] = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    mask = np.kron(np.array([[0, 13], [255, 4]], np.uint8), np.ones((256, 256), np.uint8))
    out_image, out_mask = eval_transforms(32, IMAGENET_MEAN, IMAGENET_STD)(image, mask)
    assert out_image.dtype == torch.float32 and tuple(out_image.shape) == (3, 32, 32)
    assert out_image.abs().max() < 0.02  # mean-coloured image normalises to about 0
    assert out_mask.dtype == torch.int64 and tuple(out_mask.shape) == (512, 512)
    assert torch.equal(out_mask, torch.from_numpy(mask).long())


def test_eval_mask_upsampled_to_512_keeps_only_input_ids():
    _, mask = sample_pair(size=128, ids=(1, 9, 12))
    image = np.zeros((128, 128, 3), np.uint8)
    _, out_mask = eval_transforms(64, IMAGENET_MEAN, IMAGENET_STD, mask_size=512)(image, mask)
    assert tuple(out_mask.shape) == (512, 512)
    assert set(out_mask.unique().tolist()) <= {1, 9, 12}


def test_denormalize_inverts_eval_normalisation():
    image, mask = sample_pair(size=16)
    out_image, _ = eval_transforms(16, IMAGENET_MEAN, IMAGENET_STD, mask_size=16)(image, mask)
    restored = denormalize(out_image, IMAGENET_MEAN, IMAGENET_STD)
    assert restored.dtype == np.uint8 and restored.shape == (16, 16, 3)
    assert np.abs(restored.astype(int) - image.astype(int)).max() <= 1


def test_colorize_and_overlay():
    mask = np.array([[0, 13], [255, 20]], np.uint8)
    colours = colorize(mask)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    assert colours[0, 0].tolist() == PALETTE[0].tolist() and colours[1, 0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 14
    image = np.full((4, 4, 3), 100, np.uint8)
    drawn = overlay(image, torch.from_numpy(mask).long(), alpha=1.0)  # mask resized to the image
    assert drawn[0, 3].tolist() == PALETTE[13].tolist()
    assert drawn[3, 0].tolist() == [100, 100, 100]  # ignore pixels keep the image


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)])
def test_train_rejects_non_rgb_arrays(bad):
    with pytest.raises(ValueError, match="HxWx3"):
        train_transforms(8)(bad, np.zeros((8, 8), np.uint8))


def test_eval_mask_follows_referee_prepare_for_odd_sizes():
    from evaluation.metrics import referee_prepare

    _, mask = sample_pair(size=300, ids=(0, 5, 13))
    _, out_mask = eval_transforms(64, IMAGENET_MEAN, IMAGENET_STD)(np.zeros((300, 300, 3), np.uint8), mask)
    assert np.array_equal(out_mask.numpy(), referee_prepare(mask, size=512))
