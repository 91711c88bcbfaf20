"""Check a data set before training on it: every file read once, every problem listed at once.

A cluster job that dies at its first validation on a corrupt image has cost its queue wait and an
epoch. This reads every image and mask of every split once, with the same readers training uses
(``lowpower.data.lpcvc.read_rgb`` / ``read_mask``, ``lowpower.data.cityscapes.read_label_ids``),
and reports unpaired names, unreadable or truncated files, image/mask size mismatches, label ids
outside the class range (other than the ignore id) and empty splits, then the pixel share of
every class per split.

    lowpower data check data/lpcvc
    lowpower data check data/cityscapes --dataset cityscapes

train.py runs :func:`check_dataset` on the train and val splits before its first epoch when
``data.cache`` is false (with the cache on, caching reads every file anyway).

Example:
    >>> report = check_dataset("data/synthetic", "synthetic", progress=False)   # doctest: +SKIP
    >>> report.problems, report.pairs                                           # doctest: +SKIP
    ([], {'train': 300, 'val': 50, 'test': 50})
"""
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.contract import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from lowpower.data.lpcvc import (
    DataError,
    broken_links,
    check_label_ids,
    describe_broken_link,
    find_split_dirs,
    index_by_stem,
    read_mask,
    read_rgb,
)
from lowpower.safe.bounds import bounded

DATASETS = ("lpcvc", "synthetic", "cityscapes")
SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "val")  # training needs these; a test split is checked when present
NUM_CLASSES_ARG = bounded(int, 1, 255, "masks are 8-bit: ids 0..254 can be classes, 255 is the ignore id")


class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        root: the folder checked.
        problems: one line per problem, each naming its file (empty when the data is fine).
        pairs: ``{split: image/mask pairs found}``.
        counts: ``{split: int64 array of pixels per class}`` over the readable masks.
        class_names: names for the rows of the share table.
    """

    def __init__(self, root, class_names):
        self.root, self.class_names = Path(root), list(class_names)
        self.problems, self.pairs, self.counts = [], {}, {}

    def share_table(self):
        """Pixel share of each class per split, in percent, as aligned text."""
        splits = [split for split in self.counts if self.counts[split].sum()]
        width = max(len(name) for name in self.class_names + ["class"])
        lines = ["%-*s %s" % (width + 3, "id class", " ".join("%9s" % split for split in splits))]
        for index, name in enumerate(self.class_names):
            shares = ["%8.3f%%" % (100.0 * self.counts[s][index] / self.counts[s].sum()) for s in splits]
            lines.append("%2d %-*s %s" % (index, width, name, " ".join(shares)))
        return "\n".join(lines)


def _lpcvc_pairs(root, split, report):
    """(image, mask) paths of an LPCVC-layout split; unpaired and ambiguous names become problems."""
    img_dir, gt_dir = find_split_dirs(root, split)
    images, image_clashes = index_by_stem(img_dir)
    masks, mask_clashes = index_by_stem(gt_dir)
    for folder, clashes in ((img_dir, image_clashes), (gt_dir, mask_clashes)):
        report.problems += ["%s: %s share a name, so pairing is ambiguous" % (folder, c) for c in clashes]
    # a broken link is not a file, so index_by_stem leaves it out; say what it is, not that it is missing
    image_links, mask_links = broken_links(img_dir), broken_links(gt_dir)
    report.problems += [describe_broken_link(path) for path in sorted([*image_links.values(), *mask_links.values()])]
    broken = set(image_links) | set(mask_links)
    report.problems += ["%s: no mask of the same name in %s" % (images[s], gt_dir) for s in sorted(images)
                        if s not in masks and s not in broken]
    report.problems += ["%s: no image of the same name in %s" % (masks[s], img_dir) for s in sorted(masks)
                        if s not in images and s not in broken]
    return [(images[s], masks[s]) for s in sorted(images) if s in masks]


def _cityscapes_pairs(root, split, report):
    """(image, label) paths of a Cityscapes split, paired by CITY_SEQ_FRAME name."""
    # cityscapesscripts: imported only for Cityscapes data
    from lowpower.data.cityscapes import IMAGE_SUFFIX, LABEL_SUFFIX

    image_dir, label_dir = Path(root) / "leftImg8bit" / split, Path(root) / "gtFine" / split
    if not (image_dir.is_dir() and label_dir.is_dir()):
        raise DataError("no Cityscapes %r split under %s (expected leftImg8bit/%s and gtFine/%s)"
                        % (split, root, split, split))
    images = {p.name[:-len(IMAGE_SUFFIX)]: p for p in image_dir.glob("*/*" + IMAGE_SUFFIX)}
    labels = {p.name[:-len(LABEL_SUFFIX)]: p for p in label_dir.glob("*/*" + LABEL_SUFFIX)}
    report.problems += ["%s: no label file *%s of the same name" % (images[n], LABEL_SUFFIX)
                        for n in sorted(images) if n not in labels]
    report.problems += ["%s: no image *%s of the same name" % (labels[n], IMAGE_SUFFIX)
                        for n in sorted(labels) if n not in images]
    return [(images[n], labels[n]) for n in sorted(images) if n in labels]


def _read_cityscapes_mask(path, num_classes):
    """Cityscapes label ids -> train ids, after checking every id is a Cityscapes label id."""
    # cityscapesscripts: imported only for Cityscapes data
    from lowpower.data.cityscapes import CS_LABELS, label_ids_to_train_ids, read_label_ids

    label_ids = read_label_ids(path)
    unknown = sorted(set(np.unique(label_ids).tolist()) - {label.id for label in CS_LABELS})
    if unknown:
        raise DataError("labels %s hold ids %s that are not Cityscapes label ids" % (path, unknown))
    return label_ids_to_train_ids(label_ids)


def _check_pair(image_path, mask_path, dataset, num_classes):
    """Read one pair; returns (problems, mask or None)."""
    problems, image, mask = [], None, None
    try:
        image = read_rgb(image_path)
    except DataError as error:
        problems.append(str(error))
    try:
        if dataset == "cityscapes":
            mask = _read_cityscapes_mask(mask_path, num_classes)
        else:
            mask = read_mask(mask_path)
            check_label_ids(mask, mask_path, num_classes, IGNORE_INDEX)
    except DataError as error:
        problems.append(str(error))
        mask = None
    if image is not None and mask is not None and image.shape[:2] != mask.shape:
        problems.append("%s is %dx%d (HxW) but its mask %s is %dx%d" % (
            image_path, image.shape[0], image.shape[1], mask_path, mask.shape[0], mask.shape[1]))
    return problems, mask


def check_dataset(root, dataset="lpcvc", num_classes=None, splits=SPLITS, progress=True):
    """Read every file of a data set once and collect every problem.

    Args:
        root: the data folder (``data.root``).
        dataset: folder layout: 'lpcvc' and 'synthetic' (the same layout) or 'cityscapes'.
        num_classes: valid ids are ``0 .. num_classes - 1`` and the ignore id; default 14
            (LPCVC) or 19 (Cityscapes train ids).
        splits: the splits to check; train and val must exist, a missing test split is skipped.
        progress: a tqdm bar over the pairs (on stderr).

    Returns:
        A :class:`CheckReport`; ``report.problems`` is empty when the data is fine.

    Example:
        >>> check_dataset("/nonexistent", progress=False).problems
        ['/nonexistent does not exist']
    """
    if dataset not in DATASETS:
        raise ValueError("dataset must be one of %s, got %r" % (", ".join(DATASETS), dataset))
    if dataset == "cityscapes":
        # cityscapesscripts: imported only for Cityscapes data
        from lowpower.data.cityscapes import CLASS_NAMES as names
    else:
        names = CLASS_NAMES
    num_classes = num_classes or (len(names) if dataset == "cityscapes" else NUM_CLASSES)
    names = list(names[:num_classes]) + ["class %d" % i for i in range(len(names), num_classes)]
    report = CheckReport(root, names)
    if not Path(root).is_dir():
        report.problems.append("%s does not exist" % root)
        return report
    listing = _cityscapes_pairs if dataset == "cityscapes" else _lpcvc_pairs
    jobs = []
    for split in splits:
        try:
            pairs = listing(Path(root), split, report)
        except DataError as error:
            if split in REQUIRED_SPLITS:  # the layout error's first line; the full one is in the README
                report.problems.append(str(error).splitlines()[0])
            continue
        report.pairs[split] = len(pairs)
        report.counts[split] = np.zeros(num_classes, np.int64)
        if not pairs:
            report.problems.append("%s: the %r split has no image/mask pairs" % (root, split))
        jobs += [(split, image, mask) for image, mask in pairs]
    for split, image_path, mask_path in tqdm(jobs, desc="checking %s" % Path(root).name, unit="pair",
                                             disable=not progress, file=sys.stderr, dynamic_ncols=True):
        problems, mask = _check_pair(image_path, mask_path, dataset, num_classes)
        report.problems += problems
        if mask is not None:
            report.counts[split] += np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes)
    return report


def require_no_problems(report):
    """Raise a DataError listing every problem of ``report`` (what train.py stops with)."""
    if report.problems:
        raise DataError("%d problem(s) in the data, found before training (lowpower data check %s "
                        "lists them again):\n  %s" % (len(report.problems), report.root, "\n  ".join(report.problems)))


def format_report(report):
    """The text the command prints: a summary line, every problem, then the class share table."""
    found = ", ".join("%s %d" % item for item in report.pairs.items()) or "none"
    lines = ["checked %s: image/mask pairs per split: %s" % (report.root, found)]
    if report.problems:
        lines.append("%d problem(s):" % len(report.problems))
        lines += ["  " + problem for problem in report.problems]
    else:
        lines.append("no problems")
    if any(counts.sum() for counts in report.counts.values()):
        lines += ["pixel share per class (readable masks):", report.share_table()]
    return "\n".join(lines)


def main(argv=None):
    """``lowpower data check ROOT``; returns 1 when there was a problem, else 0."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="lowpower data check",
        description="Read every image and mask of a data set once and report every problem at once: "
                    "unpaired names, unreadable or truncated files, image/mask size mismatches, label ids "
                    "outside [0, N) other than the ignore id %d, empty splits. Then print each class's "
                    "pixel share per split. Run it before you qsub a training job." % IGNORE_INDEX,
        epilog="exit status: 0 when the data has no problem, 1 when it has any, 2 on a usage error.")
    parser.add_argument("root", help="the data folder (what data.root points at)")
    parser.add_argument("--dataset", choices=DATASETS, default="lpcvc",
                        help="folder layout (synthetic is the LPCVC layout; default lpcvc)")
    parser.add_argument("--num-classes", type=NUM_CLASSES_ARG, default=None, metavar="N",
                        help="valid ids are 0..N-1 (default: 14, or 19 for cityscapes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    report = check_dataset(args.root, args.dataset, args.num_classes, progress=not args.no_progress)
    print(format_report(report))
    return 1 if report.problems else 0
