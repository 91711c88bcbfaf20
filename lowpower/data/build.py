"""Datasets from a run config: which folder layout, which transforms, optional in-memory cache.

Example:
    >>> cfg = load_config("configs/synthetic/demo.yaml")   # doctest: +SKIP
    >>> train_set = build_dataset(cfg, "train")              # doctest: +SKIP
    >>> image, mask = train_set[0]                           # doctest: +SKIP
"""
import sys
from pathlib import Path

import cv2
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lowpower.config import ConfigError
from lowpower.data.lpcvc import CLASS_NAMES, DataError, LPCVCDataset, find_split_dirs
from lowpower.data.samplers import EpochSampler, SeededItems, ShardSampler
from lowpower.data.synthetic import COMPLETE_MARKER, ForeignFilesError, check_destination, generate
from lowpower.data.transforms import eval_transforms, train_transforms
from lowpower.paths import REPO_ROOT

SYNTHETIC_SIZE = 512  # the side of generated images: the competition's


def data_root(cfg):
    """``data.root`` as an absolute path; relative roots are taken from the repository root."""
    root = Path(cfg["data"]["root"]).expanduser()
    return root if root.is_absolute() else REPO_ROOT / root


def ensure_synthetic(cfg, log=print, progress=True):
    """Generate the synthetic data set at ``data.root`` when a synthetic config finds it missing.

    A finished set (its ``.complete`` marker) is used as it is, whatever its counts. Otherwise the
    generator's own rule applies (``lowpower.data.synthetic.check_destination``): a missing or empty
    folder is generated, a half-made one with the same parameters finished, and anything else (a
    user's own files, a set made with other parameters) refused before a file is written.

    Raises:
        DataError: ``data.root`` is not a folder the generator may write (one line: the folder, what
            differs, the fix).

    Example:
        >>> ensure_synthetic(load_config("configs/synthetic/demo.yaml"))  # doctest: +SKIP
        PosixPath('.../data/synthetic')
    """
    data = cfg["data"]
    root = data_root(cfg)
    if data["dataset"] != "synthetic":
        return root
    params = dict(train=data["synthetic_train"], val=data["synthetic_val"], test=data["synthetic_test"],
                  seed=data["synthetic_seed"], size=SYNTHETIC_SIZE)
    if (root / COMPLETE_MARKER).is_file():  # the data.synthetic_* keys say what to generate, not what to expect
        return root
    try:  # before saying "generating": a user's own files are never touched
        check_destination(root, params, "data.root", hint=", or set data.dataset to lpcvc to train on its files")
        log("data.root %s has no complete synthetic data set: generating %d train, %d val, %d test "
            "images (seed %d) ..." % (root, params["train"], params["val"], params["test"], params["seed"]))
        generate(root, **params, what="data.root", progress=progress)
    except ForeignFilesError as error:
        raise DataError(str(error)) from None
    return root


def validates_on_train(cfg, root=None):
    """Refuse a data root whose validation split is its training split, unless ``data.val_on_train``.

    A plain ``IMG`` + ``GT`` pair serves every split (``lowpower.data.lpcvc.find_split_dirs``), so
    validation would score the very images training fits, and the val mean Dice would say nothing
    about new images.

    Args:
        cfg: resolved run config.
        root: data folder overriding ``data.root``.

    Returns:
        True when both splits are one folder and ``data.val_on_train`` allows it, else False.

    Raises:
        DataError: both splits are one folder and ``data.val_on_train`` is false (one line: the folder, the fix).

    Example:
        >>> validates_on_train(load_config("configs/synthetic/demo.yaml"))  # doctest: +SKIP
        False
    """
    if cfg["data"]["dataset"] == "cityscapes":  # leftImg8bit/train and leftImg8bit/val: never one folder
        return False
    root = Path(root) if root is not None else data_root(cfg)
    try:
        train_dir, val_dir = find_split_dirs(root, "train")[0], find_split_dirs(root, "val")[0]
    except DataError:  # a missing split: the data check and the datasets report it, with the layouts tried
        return False
    if train_dir.resolve() != val_dir.resolve():
        return False
    if not cfg["data"].get("val_on_train", False):  # .get: a checkpoint's config from before the key
        raise DataError("data.root %s: training and validation would both use the images in %s, so the val score "
                        "would not measure new images; give val images of their own (LPCVC_Val/IMG/val + "
                        "LPCVC_Val/GT/val, or IMG/val + GT/val), or set data.val_on_train=true if that is meant"
                        % (root, train_dir))
    return True


def class_names(cfg):
    """Names of the classes the config's data set labels."""
    if cfg["data"]["dataset"] == "cityscapes":
        # cityscapesscripts: imported only for Cityscapes data
        from lowpower.data.cityscapes import CLASS_NAMES as CITYSCAPES_NAMES

        return CITYSCAPES_NAMES
    return CLASS_NAMES


def raw_dataset(cfg, split, root=None):
    """The split's pairs without transforms: ``load_pair(i)`` gives (RGB uint8, mask uint8)."""
    root = Path(root) if root is not None else data_root(cfg)
    dataset = cfg["data"]["dataset"]
    if dataset == "cityscapes":
        # cityscapesscripts: imported only for Cityscapes data
        from lowpower.data.cityscapes import CityscapesDataset

        return CityscapesDataset(root, split)
    return LPCVCDataset(root, split, num_classes=cfg["data"]["num_classes"])


class CachedPairs(torch.utils.data.Dataset):
    """Every pair of a dataset decoded once and held in memory, images shrunk to ``image_side``.

    Small data sets (the synthetic demo) spend most of a CPU epoch decoding 512x512 PNGs; the
    cache does that once. Images larger than ``image_side`` are area-downsampled to it (square);
    masks follow with nearest neighbour when ``resize_masks`` (training, where the transforms
    resize both again), or stay as they are (evaluation, scored at the mask's own size).

    Args:
        base: a dataset with ``load_pair(i)`` and ``names``.
        image_side: side of the cached images.
        transforms: ``(image, mask) -> item`` applied on every access.
        resize_masks: shrink masks with the images.

    Example:
        >>> cached = CachedPairs(LPCVCDataset("data/synthetic", "val"), 256, eval_transforms(128))  # doctest: +SKIP
    """

    def __init__(self, base, image_side, transforms=None, resize_masks=True, progress=True):
        self.names = list(base.names)
        self.transforms = transforms
        self.pairs = []
        for index in tqdm(range(len(base)), desc="caching %s" % getattr(base, "split", "data"),
                          unit="img", disable=not progress, file=sys.stderr):
            image, mask = base.load_pair(index)
            if max(image.shape[:2]) > image_side:
                image = cv2.resize(image, (image_side, image_side), interpolation=cv2.INTER_AREA)
                if resize_masks:
                    mask = cv2.resize(mask, (image_side, image_side), interpolation=cv2.INTER_NEAREST)
            self.pairs.append((image, mask))

    def __len__(self):
        return len(self.pairs)

    def load_pair(self, index):
        return self.pairs[index]

    def __getitem__(self, index):
        image, mask = self.pairs[index]
        return self.transforms(image, mask) if self.transforms else (image, mask)


def split_transforms(cfg, train):
    """The paired transforms a config asks for: augmentation for training, resize for evaluation."""
    data = cfg["data"]
    if data["dataset"] == "cityscapes":
        # 1:2 images keep their aspect ratio and are scored at native size (see lowpower.data.cityscapes).
        # cityscapesscripts: imported only for Cityscapes data
        from lowpower.data.cityscapes import split_transforms as cityscapes_transforms

        return cityscapes_transforms(data, train)
    if train:
        return train_transforms(data["input_size"], crop_size=data["crop_size"],
                                scale=(data["scale_min"], data["scale_max"]),
                                hflip=data["hflip"], jitter=data["jitter"], photometric=data["photometric"])
    return eval_transforms(data["input_size"], mask_size=cfg["eval"]["output_size"])


def build_dataset(cfg, split, train=None, root=None, progress=True):
    """The dataset of one split with its transforms (and the in-memory cache when asked).

    Args:
        cfg: resolved run config.
        split: 'train', 'val' or 'test'.
        train: training transforms; default: only for the 'train' split.
        root: data folder overriding ``data.root``.
        progress: show a bar while caching.
    """
    train = split == "train" if train is None else train
    base = raw_dataset(cfg, split, root)
    transforms = split_transforms(cfg, train)
    if not cfg["data"]["cache"]:
        base.transforms = transforms
        return base
    data = cfg["data"]
    side = int(round(data["input_size"] * (data["scale_max"] if train else 1.0)))
    return CachedPairs(base, side, transforms, resize_masks=train, progress=progress)


def build_loaders(cfg, world_size=1, rank=0, pin_memory=False, progress=True):
    """Training loader with a resumable, seeded sampler, and a validation loader sharded across ranks.

    Args:
        cfg: resolved run config.
        world_size, rank: the process group (1 and 0 alone).
        pin_memory: page-locked batches (for CUDA).
        progress: show a bar while caching.

    Returns:
        ``(train_set, train_loader, val_loader)``.

    Example:
        >>> cfg = load_config("configs/synthetic/demo.yaml")                  # doctest: +SKIP
        >>> train_set, train_loader, val_loader = build_loaders(cfg)           # doctest: +SKIP
        >>> train_loader.sampler.set_position(epoch=0)                         # doctest: +SKIP
    """
    validates_on_train(cfg)  # before any image is read: refused unless data.val_on_train
    train_set = build_dataset(cfg, "train", progress=progress)
    val_set = build_dataset(cfg, "val", progress=progress)
    batch = cfg["train"]["batch_size"]
    if len(train_set) < batch * world_size:
        raise ConfigError("the training split has %d images, fewer than one step needs (%d = "
                          "train.batch_size x %d processes)" % (len(train_set), batch * world_size, world_size))
    sampler = EpochSampler(train_set, world_size, rank, cfg["train"]["seed"])
    workers = cfg["data"]["workers"]
    # SeededItems makes every sample's augmentation a function of (seed, epoch, rank, position), so
    # the workers' own seeds no longer matter; the loader gets a generator of its own so that drawing
    # those seeds leaves the main process's random numbers, which a checkpoint restores, alone.
    train_loader = DataLoader(SeededItems(train_set), batch_size=batch, sampler=sampler, num_workers=workers,
                              pin_memory=pin_memory, drop_last=True, persistent_workers=False,
                              generator=torch.Generator().manual_seed(cfg["train"]["seed"]))
    val_loader = DataLoader(val_set, batch_size=cfg["eval"]["batch_size"],
                            sampler=ShardSampler(val_set, world_size, rank),
                            num_workers=min(workers, 2), pin_memory=pin_memory)
    return train_set, train_loader, val_loader
