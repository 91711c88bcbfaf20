"""Calibration data for post-training quantization: training images, preprocessed as at inference.

Observers must see the activations the deployed model will see, so the images go through the
evaluation transforms (resize to the model input, normalisation), not the training augmentation.
They are spread evenly over the training split, so a split stored scene by scene is sampled
across all its scenes.

Example:
    >>> loader = calibration_loader(state["config"], count=32)          # doctest: +SKIP
    >>> calibrate(prepared_model, loader)                                # doctest: +SKIP
    32
"""
import copy
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lowpower.data.build import build_dataset


def spread_indices(total, count):
    """``count`` indices spread evenly over ``range(total)`` (all of them when count >= total).

    Example:
        >>> spread_indices(10, 3)
        [0, 4, 9]
    """
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})


def calibration_loader(cfg, count, root=None, batch_size=None):
    """A loader of ``count`` training images (and masks) with the evaluation transforms of ``cfg``.

    Args:
        cfg: the checkpoint's resolved config (not modified).
        count: images to use (fewer when the split is smaller).
        root: data folder overriding ``data.root``.
        batch_size: images per step (default ``eval.batch_size``).
    """
    cfg = copy.deepcopy(cfg)
    cfg["data"]["cache"] = False  # a handful of images: caching the split would cost more than it saves
    dataset = build_dataset(cfg, "train", train=False, root=root, progress=False)
    subset = Subset(dataset, spread_indices(len(dataset), count))
    return DataLoader(subset, batch_size=batch_size or cfg["eval"]["batch_size"], shuffle=False,
                      num_workers=min(2, cfg["data"]["workers"]))


def calibrate(model, loader, progress=True):
    """Run ``model`` (with observers inserted) over every image of ``loader``; returns the image count.

    Example:
        >>> calibrate(prepare_ptq(model, "x86"), calibration_loader(cfg, 32))  # doctest: +SKIP
        32
    """
    seen = 0
    bar = tqdm(total=len(loader.dataset), desc="calibrate", unit="img", disable=not progress,
               file=sys.stderr, leave=False, dynamic_ncols=True)
    with torch.no_grad(), bar:
        for images, _ in loader:
            model(images)
            seen += len(images)
            bar.update(len(images))
    return seen
