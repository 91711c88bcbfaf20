"""LPCVC 2023 segmentation data: folder discovery and a paired image/mask dataset.

The shipped archives lay data out as ``LPCVC_Train/IMG/train`` + ``LPCVC_Train/GT/train`` (and the
same for ``Val``), with some copies spelling folders ``..._Updated``; the referee's private test set
is ``test/IMG`` + ``test/GT``. See ``/work/shared/DESIGN.md`` section 2.

Example:
    >>> ds = LPCVCDataset("/data/lpcvc", "val")           # doctest: +SKIP
    >>> image, mask = ds[0]                                # doctest: +SKIP
    >>> image.shape, image.dtype, mask.shape, mask.dtype   # doctest: +SKIP
    (torch.Size([3, 512, 512]), torch.uint8, torch.Size([512, 512]), torch.int64)
"""
import os
from pathlib import Path
from typing import Callable, Optional, Union

import cv2
import numpy as np
import torch

from evaluation.contract import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES  # noqa: F401 (CLASS_NAMES: re-exported)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "val", "test")

# How many file names an error message spells out before summarising the rest.
_MAX_NAMES_IN_ERROR = 5

# Shipped top-level folder names per split; "_Updated" copies come first because they carry the
# organisers' corrected labels when both are present.
_SPLIT_TOPS = {
    "train": ("LPCVC_Train_Updated", "LPCVC_Train"),
    "val": ("LPCVC_Val_Updated", "LPCVC_Val"),
}
_IMG_NAMES = ("IMG",)
_GT_NAMES = ("GT_Updated", "GT")

PathLike = Union[str, Path]


class DataError(ValueError, FileNotFoundError):
    """Bad or missing data on disk (a folder, a file, a label id).

    Subclasses both ValueError and FileNotFoundError so callers may catch whichever they expect,
    or catch ``DataError`` to handle only this module's complaints.
    """


def _summarise_names(names, limit=_MAX_NAMES_IN_ERROR):
    """Join up to ``limit`` names and say how many more there are.

    Example:
        >>> _summarise_names(["a", "b", "c"], limit=2)
        'a, b and 1 more'
    """
    names = sorted(str(n) for n in names)
    shown = ", ".join(names[:limit])
    extra = len(names) - limit
    return shown + (" and %d more" % extra if extra > 0 else "")


def _candidate_dir_pairs(root, split):
    """All (img_dir, gt_dir) pairs worth trying for ``split`` under ``root``, most preferred first."""
    pairs = []
    tops = list(_SPLIT_TOPS.get(split, ()))
    if split == "test":
        pairs.append((root / "test" / "IMG", root / "test" / "GT"))
    for top in tops:
        for img_name in _IMG_NAMES:
            for gt_name in _GT_NAMES:
                pairs.append((root / top / img_name / split, root / top / gt_name / split))
    # A user may point root straight at LPCVC_Train (IMG/train) or at a plain IMG + GT pair.
    for gt_name in _GT_NAMES:
        pairs.append((root / "IMG" / split, root / gt_name / split))
    for gt_name in _GT_NAMES:
        pairs.append((root / "IMG", root / gt_name))
    return pairs


def find_split_dirs(root, split):
    """Locate the image and ground-truth folders of one split.

    Tries, in order: for ``test`` the referee layout ``root/test/IMG`` + ``root/test/GT``; the
    shipped ``root/LPCVC_{Train,Val}[_Updated]/IMG/<split>`` + ``.../GT[_Updated]/<split>``;
    ``root/IMG/<split>`` + ``root/GT[_Updated]/<split>``; and a plain ``root/IMG`` + ``root/GT``.

    Args:
        root: dataset root folder.
        split: one of ``'train'``, ``'val'``, ``'test'``.

    Returns:
        ``(img_dir, gt_dir)`` as ``pathlib.Path``.

    Raises:
        DataError: unknown split, or no candidate pair exists (the message lists every path tried).

    Example:
        >>> find_split_dirs("/data/lpcvc", "train")  # doctest: +SKIP
        (PosixPath('/data/lpcvc/LPCVC_Train/IMG/train'), PosixPath('/data/lpcvc/LPCVC_Train/GT/train'))
    """
    if split not in SPLITS:
        raise DataError("unknown split %r: expected one of %s" % (split, ", ".join(SPLITS)))
    root = Path(root).expanduser()
    pairs = _candidate_dir_pairs(root, split)
    for img_dir, gt_dir in pairs:
        if img_dir.is_dir() and gt_dir.is_dir():
            return img_dir, gt_dir
    tried = "\n".join("  %s + %s" % pair for pair in pairs)
    raise DataError(
        "no %r split found under %s. Expected the LPCVC layout as shipped, e.g.\n"
        "  LPCVC_Train/IMG/train + LPCVC_Train/GT/train, LPCVC_Val/IMG/val + LPCVC_Val/GT/val\n"
        "  (folders may be spelled LPCVC_Train_Updated / LPCVC_Val_Updated / GT_Updated),\n"
        "  test/IMG + test/GT for the test split, or a plain IMG + GT folder pair.\n"
        "Tried (image folder + ground-truth folder):\n%s" % (split, root, tried)
    )


def index_by_stem(folder):
    """Map file stem -> path for the image files in ``folder``, and list the clashing names.

    Returns:
        ``(by_stem, duplicates)``: the first file of each stem, and ``"a.png / a.jpg"`` strings for
        stems that more than one file shares (pairing those by name would be ambiguous).
    """
    by_stem = {}
    duplicates = []
    for path in sorted(Path(folder).iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in by_stem:
            duplicates.append("%s / %s" % (by_stem[path.stem].name, path.name))
            continue
        by_stem[path.stem] = path
    return by_stem, duplicates


def broken_links(folder):
    """Map file stem -> path for the image-named links in ``folder`` whose target does not exist.

    :func:`index_by_stem` skips them (they are not files), so without this a broken link reads as a
    missing file and its partner as "no image of the same name".

    Example:
        >>> broken_links("/nonexistent")
        {}
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {path.stem: path for path in sorted(folder.iterdir())
            if path.is_symlink() and not path.exists() and path.suffix.lower() in IMAGE_EXTENSIONS}


def describe_broken_link(path):
    """``'IMG/a.png is a broken link to /gone/a.png (that file does not exist)'``."""
    return "%s is a broken link to %s (that file does not exist)" % (path, os.readlink(path))


def _index_by_stem(folder):
    """:func:`index_by_stem` that raises on duplicate stems."""
    by_stem, duplicates = index_by_stem(folder)
    if duplicates:
        raise DataError(
            "files in %s share a name with different extensions, so pairing is ambiguous: %s"
            % (folder, _summarise_names(duplicates))
        )
    return by_stem


def pair_images_and_masks(img_dir, gt_dir):
    """Pair each image with the mask of the same file stem.

    Pairing is by name, never by sorted order, so a missing or extra file is reported rather than
    silently shifting every later pair.

    Args:
        img_dir: folder of ``.png/.jpg/.jpeg`` images (extension case ignored).
        gt_dir: folder of masks with the same stems.

    Returns:
        A list of ``(stem, image_path, mask_path)`` sorted by stem.

    Raises:
        DataError: broken links (named with their targets), no images, images without a mask, or masks
            without an image.

    Example:
        >>> pair_images_and_masks("IMG/val", "GT/val")[0]  # doctest: +SKIP
        ('000001', PosixPath('IMG/val/000001.png'), PosixPath('GT/val/000001.png'))
    """
    broken = sorted(list(broken_links(img_dir).values()) + list(broken_links(gt_dir).values()))
    if broken:
        raise DataError("%d broken link(s): %s; fix or remove them"
                        % (len(broken), "; ".join(describe_broken_link(path) for path in broken[:_MAX_NAMES_IN_ERROR])))
    images = _index_by_stem(img_dir)
    masks = _index_by_stem(gt_dir)
    if not images:
        raise DataError("no images (%s) found in %s" % ("/".join(IMAGE_EXTENSIONS), img_dir))
    no_mask = [images[s].name for s in images if s not in masks]
    if no_mask:
        raise DataError(
            "%d image(s) have no mask of the same name in %s: %s"
            % (len(no_mask), gt_dir, _summarise_names(no_mask))
        )
    no_image = [masks[s].name for s in masks if s not in images]
    if no_image:
        raise DataError(
            "%d mask(s) in %s have no image of the same name in %s: %s"
            % (len(no_image), gt_dir, img_dir, _summarise_names(no_image))
        )
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def read_rgb(path):
    """Read an image as an RGB uint8 HxWx3 array (grayscale is expanded, alpha dropped).

    Raises:
        DataError: the file cannot be decoded.

    Example:
        >>> read_rgb("IMG/val/000001.png").shape  # doctest: +SKIP
        (512, 512, 3)
    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError("cannot read image %s (missing, empty, truncated or not an image)" % path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path):
    """Read a label mask as a uint8 HxW array of class ids.

    A 3- or 4-channel mask keeps channel 0, as the referee does (its GT PNGs may be 1-channel or
    3 equal channels).

    Raises:
        DataError: the file cannot be decoded, or holds values above 255.

    Example:
        >>> read_mask("GT/val/000001.png").dtype  # doctest: +SKIP
        dtype('uint8')
    """
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError("cannot read mask %s (missing, empty, truncated or not an image)" % path)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.dtype != np.uint8:
        # 16-bit PNGs are harmless when the ids fit; casting larger ones would wrap silently.
        if mask.size and int(mask.max()) > 255:
            raise DataError("mask %s holds values above 255 (max %d)" % (path, int(mask.max())))
        mask = mask.astype(np.uint8)
    return np.ascontiguousarray(mask)


def check_label_ids(mask, path, num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX):
    """Raise if ``mask`` holds ids outside ``[0, num_classes)`` other than ``ignore_index``.

    Example:
        >>> check_label_ids(np.array([[0, 13, 255]], np.uint8), "m.png")
    """
    if mask.size == 0 or int(mask.max()) < num_classes:
        return
    bad = np.unique(mask[(mask >= num_classes) & (mask != ignore_index)])
    if bad.size:
        raise DataError(
            "mask %s holds label ids %s outside [0, %d) (ignore_index %d is allowed)"
            % (path, bad.tolist(), num_classes, ignore_index)
        )


class LPCVCDataset(torch.utils.data.Dataset):
    """LPCVC image/mask pairs of one split, paired by file stem.

    Without ``transforms`` an item is ``(image, mask)``: a torch uint8 ``3xHxW`` RGB tensor and a
    torch int64 ``HxW`` tensor of class ids. With ``transforms`` the item is
    ``transforms(image, mask)`` called on the decoded numpy arrays: an ``HxWx3`` uint8 RGB image and
    an ``HxW`` uint8 mask (the convention of ``lowpower.data.transforms``).

    Args:
        root: dataset root (see ``find_split_dirs`` for the layouts recognised).
        split: ``'train'``, ``'val'`` or ``'test'``.
        transforms: optional callable ``(image, mask) -> anything``.
        num_classes: label ids must be below this, except ``ignore_index``.
        ignore_index: the id that marks pixels to ignore (allowed in masks).

    Attributes:
        names: stems of the paired files, sorted.
        paths: ``(image_path, mask_path)`` per item, in the order of ``names``.
        img_dir, gt_dir: the folders found.

    Example:
        >>> ds = LPCVCDataset("/data/lpcvc", "train")  # doctest: +SKIP
        >>> len(ds), ds.names[0]                       # doctest: +SKIP
        (1021, '000000')
    """

    def __init__(
        self,
        root: PathLike,
        split: str,
        transforms: Optional[Callable] = None,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.img_dir, self.gt_dir = find_split_dirs(root, split)
        triples = pair_images_and_masks(self.img_dir, self.gt_dir)
        self.names = [stem for stem, _, _ in triples]
        self.paths = [(img, gt) for _, img, gt in triples]

    def __len__(self):
        return len(self.paths)

    def load_pair(self, index):
        """Decode and check one pair: ``(HxWx3 uint8 RGB, HxW uint8 mask)`` as numpy arrays."""
        img_path, gt_path = self.paths[index]
        image = read_rgb(img_path)
        mask = read_mask(gt_path)
        if image.shape[:2] != mask.shape:
            raise DataError(
                "image %s is %dx%d (HxW) but its mask %s is %dx%d"
                % (img_path, image.shape[0], image.shape[1], gt_path, mask.shape[0], mask.shape[1])
            )
        check_label_ids(mask, gt_path, self.num_classes, self.ignore_index)
        return image, mask

    def __getitem__(self, index):
        image, mask = self.load_pair(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask).long()

    def __repr__(self):
        return "%s(split=%r, n=%d, img_dir=%s, gt_dir=%s)" % (
            type(self).__name__, self.split, len(self), self.img_dir, self.gt_dir)
