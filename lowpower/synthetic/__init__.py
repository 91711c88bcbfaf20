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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lowpower.synthetic.scene import make_scene

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
    """
    out = Path(out)
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
