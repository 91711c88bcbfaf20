"""The built-in synthetic LPCVC data set: procedural aerial disaster scenes.

It is written in the real competition layout so the same loaders serve the
real data::

    DIR/LPCVC_Train/{IMG,GT}/train/*.png
    DIR/LPCVC_Val/{IMG,GT}/val/*.png
    DIR/test/{IMG,GT}/*.png          (the referee's layout)

Each image is a pure function of (seed, split, index), so asking for more
images later keeps the first ones identical. A marker (``.incomplete`` while
writing, ``.complete`` when done) records the parameters, so the generator
writes only into a folder it made itself with the same ones: never over a
user's images, never a mix of two data sets.
"""
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lowpower.data.synthetic.scene import make_scene
from lowpower.safe import UserError

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


COMPLETE_MARKER = ".complete"  # the parameters of a finished data set, written last
PARTIAL_MARKER = ".incomplete"  # the same line, written before the first image and renamed at the end
PARAMETERS = ("train", "val", "test", "seed", "size")


class ForeignFilesError(UserError, ValueError):
    """The destination is not a folder this generator made with these parameters; nothing was written."""


def marker_line(params):
    """The marker's text: ``train 300 val 50 test 50 seed 0 size 512`` (the format markers always had).

    Example:
        >>> marker_line(dict(train=8, val=2, test=2, seed=0, size=64)).strip()
        'train 8 val 2 test 2 seed 0 size 64'
    """
    return " ".join("%s %d" % (name, params[name]) for name in PARAMETERS) + "\n"


def read_marker(path):
    """The parameters a marker file records, or None when ``path`` is missing or not such a marker.

    Example:
        >>> read_marker("/nonexistent/.complete") is None
        True
    """
    try:
        words = Path(path).read_text().split()
    except (OSError, UnicodeDecodeError):
        return None
    pairs = dict(zip(words[::2], words[1::2]))
    if len(words) != 2 * len(PARAMETERS) or set(pairs) != set(PARAMETERS):
        return None
    try:
        return {name: int(pairs[name]) for name in PARAMETERS}
    except ValueError:
        return None


def own_files(out, params):
    """Every path :func:`generate` writes under ``out`` with ``params`` (images, masks, markers)."""
    out = Path(out)
    paths = {out / COMPLETE_MARKER, out / PARTIAL_MARKER}
    for split in SPLIT_DIRS:
        for sub in SPLIT_DIRS[split]:
            paths.update(out / sub / ("%s_%05d.png" % (split, index)) for index in range(params[split]))
    return paths


def files_under(out):
    """Every file (and link) under ``out``, sorted; empty folders do not count."""
    return sorted(path for path in Path(out).rglob("*") if path.is_symlink() or not path.is_dir())


def foreign_files(out, params=None):
    """Files under ``out`` that :func:`generate` with ``params`` would not have written (sorted).

    Without ``params`` only the names are judged (``SPLIT_DIRS[split]/<split>_NNNNN.png``, markers).

    Example:
        >>> foreign_files("/nonexistent")
        []
    """
    out = Path(out)
    if not out.is_dir():
        return []
    if params is not None:
        own = own_files(out, params)
        return [path for path in files_under(out) if path not in own]
    own_dirs = {(out / sub).resolve(): split for split, subs in SPLIT_DIRS.items() for sub in subs}
    foreign = []
    for path in files_under(out):
        if path in (out / COMPLETE_MARKER, out / PARTIAL_MARKER):
            continue
        match = _OWN_NAME.match(path.name)
        if not (match and own_dirs.get(path.parent.resolve()) == match.group(1)):
            foreign.append(path)
    return foreign


_OWN_NAME = re.compile(r"^(train|val|test)_[0-9]{5}\.png$")


def _some_files(out, paths):
    shown = ", ".join(str(path.relative_to(out)) for path in paths[:3])
    return shown + (" and %d more" % (len(paths) - 3) if len(paths) > 3 else "")


def _differences(made, wanted):
    return ", ".join("%s %d (this asks for %d)" % (name, made[name], wanted[name])
                     for name in PARAMETERS if made[name] != wanted[name])


def check_destination(out, params=None, what="--out", hint=""):
    """What :func:`generate` would do at ``out``: 'new', 'finish' (a half-made set) or 'done'.

    A folder is written into only when it is missing or empty, or when its marker says this generator
    made it with the same ``params`` (then a half-made set is finished, a finished one left alone).

    Args:
        out: the destination folder.
        params: ``{train, val, test, seed, size}``; None judges only file names (no marker needed).
        what: how the message names the folder (``--out``, ``data.root``).
        hint: more words for the fix, appended to a refusal of someone else's folder.

    Raises:
        ForeignFilesError: one line naming the folder, what differs and the fix; nothing is written.

    Example:
        >>> check_destination("/nonexistent", dict(train=1, val=1, test=1, seed=0, size=64))
        'new'
    """
    out = Path(out)
    fix = "give another %s (a new or empty folder), or delete %s" % (what, out)
    foreign_fix = fix + " if nothing in it is needed"  # someone's own files: deleting is their call
    if out.exists() and not out.is_dir():
        raise ForeignFilesError("%s %s is a file, not a folder: give another %s (a new or empty folder)"
                                % (what, out, what))
    if not out.exists() or not files_under(out):
        return "new"
    if params is None:  # names only: anything the generator would not write is someone's data
        foreign = foreign_files(out)
        if foreign:
            raise ForeignFilesError("%s %s holds files the synthetic generator did not make (%s), so it will "
                                    "not write into it: %s%s" % (what, out, _some_files(out, foreign), foreign_fix,
                                                                 hint))
        return "new"
    for marker, state in ((COMPLETE_MARKER, "done"), (PARTIAL_MARKER, "finish")):
        made = read_marker(out / marker)
        if made is None:
            continue
        if made != params:
            raise ForeignFilesError("%s %s holds a synthetic data set made with other parameters: %s; so that no "
                                    "old and new images mix, %s" % (what, out, _differences(made, params), fix))
        foreign = foreign_files(out, params)
        if state == "finish" and foreign:
            raise ForeignFilesError("%s %s holds files this synthetic data set does not (%s), so it will not "
                                    "write into it: %s" % (what, out, _some_files(out, foreign), foreign_fix))
        return state
    raise ForeignFilesError("%s %s is not empty and was not made by lowpower data synthetic (no %s marker; it holds "
                            "%s), so it will not write into it: %s%s"
                            % (what, out, COMPLETE_MARKER, _some_files(out, files_under(out)), foreign_fix, hint))


def generate(out, train=300, val=50, test=50, seed=0, size=512, workers=None, progress=True, what="--out"):
    """Write the synthetic data set under `out`.

    ``out/.incomplete`` (the parameters) is written before the first image and renamed to
    ``out/.complete`` after the last, so a folder is only ever written into by the generator that
    made it, with the same parameters: an interrupted set is finished, a finished one left as it is.

    Args:
        out: destination folder (created); missing, empty, or made by this generator with these parameters.
        train, val, test: number of images per split.
        seed: data set seed; the same seed gives byte-identical files.
        size: image side in pixels (the competition uses 512; at least 64).
        workers: processes to render with (default: all cores).
        progress: show a tqdm bar.
        what: how a refusal names ``out`` (``--out``, ``data.root``).

    Example:
        >>> generate("data/synthetic", train=8, val=2, test=2, progress=False)  # doctest: +SKIP
        PosixPath('data/synthetic')

    Raises:
        ForeignFilesError: ``out`` is a file, holds someone else's files, or a set made with other
            parameters (regenerating into it would replace a user's images or mix old and new
            ones); nothing is written.
    """
    out = Path(out)
    params = dict(train=train, val=val, test=test, seed=seed, size=size)
    if check_destination(out, params, what) == "done":
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTIAL_MARKER).write_text(marker_line(params))  # claims the folder before the first image
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
    # renamed last, so an interrupted run is recognised as incomplete and finished next time
    os.replace(out / PARTIAL_MARKER, out / COMPLETE_MARKER)
    return out
