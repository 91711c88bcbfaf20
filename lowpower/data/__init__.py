"""Data loading for lowpower: LPCVC folders and dataset, paired transforms, mask colours.

Example:
    >>> from lowpower.data import LPCVCDataset, train_transforms
    >>> ds = LPCVCDataset("/data/lpcvc", "train", transforms=train_transforms(288))  # doctest: +SKIP
"""

from .colors import PALETTE, colorize, overlay
from .lpcvc import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    DataError,
    LPCVCDataset,
    find_split_dirs,
    pair_images_and_masks,
    read_mask,
    read_rgb,
)
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    denormalize,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "PALETTE",
    "DataError",
    "LPCVCDataset",
    "colorize",
    "denormalize",
    "eval_transforms",
    "find_split_dirs",
    "overlay",
    "pair_images_and_masks",
    "read_mask",
    "read_rgb",
    "train_transforms",
]
