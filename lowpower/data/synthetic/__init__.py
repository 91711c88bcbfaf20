"""The built-in synthetic LPCVC data set: procedural aerial disaster scenes.

It is written in the real competition layout so the same loaders serve the
real data::

    DIR/LPCVC_Train/{IMG,GT}/train/*.png
    DIR/LPCVC_Val/{IMG,GT}/val/*.png
    DIR/test/{IMG,GT}/*.png          (the referee's layout)

Each image is a pure function of (seed, split, index), so asking for more
images later keeps the first ones identical.
"""
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lowpower.data.synthetic.scene import make_scene

SPLIT_DIRS = {
    "train": ("LPCVC_Train/IMG/train", "LPCVC_Train/GT/train"),
    "val": ("LPCVC_Val/IMG/val", "LPCVC_Val/GT/val"),
    "test": ("test/IMG", "test/GT"),
}
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}


def scene_rng(seed, split, index):
    """The generator for one image: independent streams per split and index."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_STREAM[split], index]))


def write_scene(job):
    """Render and write one image/mask pair; runs in a worker process."""
    out, split, index, seed, size = job
    cv2.setNumThreads(1)  # one process per core already; nested threads only contend
    image, label = make_scene(scene_rng(seed, split, index), (size, size))
    img_dir, gt_dir = (Path(out) / d for d in SPLIT_DIRS[split])
    name = "%s_%05d.png" % (split, index)
    cv2.imwrite(str(img_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(gt_dir / name), label)
    return name


COMPLETE_MARKER = ".complete"
_OWN_NAME = re.compile(r"^(train|val|test)_[0-9]{5}\.png$")


class ForeignFilesError(ValueError):
    """The destination holds files the generator did not write; nothing was written."""


def foreign_files(out):
    """Files under ``out`` that :func:`generate` would not have written (sorted).

    The generator writes only ``SPLIT_DIRS[split]/<split>_NNNNN.png`` and the marker, so anything
    else means the folder is someone's own data.

    Example:
        >>> foreign_files("/nonexistent")
        []
    """
    out = Path(out)
    if not out.is_dir():
        return []
    own_dirs = {(out / sub).resolve(): split for split, subs in SPLIT_DIRS.items() for sub in subs}
    foreign = []
    for path in sorted(out.rglob("*")):
        if path.is_dir() or path == out / COMPLETE_MARKER:
            continue
        match = _OWN_NAME.match(path.name)
        split = own_dirs.get(path.parent.resolve())
        if not (match and split == match.group(1)):
            foreign.append(path)
    return foreign


def check_destination(out):
    """Raise :class:`ForeignFilesError` (naming ``out`` and a few of the files) unless every file
    under ``out`` is one the generator writes."""
    foreign = foreign_files(out)
    if foreign:
        shown = ", ".join(str(path.relative_to(out)) for path in foreign[:3])
        more = " and %d more" % (len(foreign) - 3) if len(foreign) > 3 else ""
        raise ForeignFilesError(
            "%s holds files the synthetic generator did not make (%s%s), so it will not write into it: "
            "point data.root (or --out) at a new or empty folder, or set data.dataset to lpcvc to train on "
            "those files" % (out, shown, more))


def generate(out, train=300, val=50, test=50, seed=0, size=512, workers=None, progress=True):
    """Write the synthetic data set under `out`.

    Args:
        out: destination folder (created).
        train, val, test: number of images per split.
        seed: data set seed; the same seed gives byte-identical files.
        size: image side in pixels (the competition uses 512).
        workers: processes to render with (default: all cores).
        progress: show a tqdm bar.

    Example:
        >>> generate("data/synthetic", train=8, val=2, test=2, progress=False)
        PosixPath('data/synthetic')

    Raises:
        ForeignFilesError: ``out`` holds files the generator did not make (a user's own data, which
            same-named generated files would replace); nothing is written.
    """
    out = Path(out)
    check_destination(out)
    counts = {"train": train, "val": val, "test": test}
    for split in counts:
        for sub in SPLIT_DIRS[split]:
            (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), split, i, seed, size) for split, n in counts.items() for i in range(n)]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="synthetic data", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            write_scene(job)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(write_scene, jobs, chunksize=4):
                bar.update()
    bar.close()
    # written last, so an interrupted run is recognised as incomplete and simply redone
    (out / COMPLETE_MARKER).write_text("train %d val %d test %d seed %d size %d\n"
                                       % (train, val, test, seed, size))
    return out
