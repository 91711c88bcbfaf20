"""Run two packages in turns on the same images and print B/A ratios of what they cost.

    lowpower bench compare A.pyz B.pyz [--images DIR] [-n 5] [--samples 20]

Each package runs ``-n`` times through ``lowpower.ship.runner.run_pyz`` (the referee's command), in
turns A B A B ..., so a change in the machine's load falls on both alike. For every turn the
ratio B/A is taken of: wall seconds, the seconds the package printed (its model time, read with
``evaluation.contract.only_a_float``) and peak memory (largest of per-process peak and summed
process-group memory); their min, median and max are printed. When the images have GT
(``DIR/IMG`` + ``DIR/GT``, or the synthetic images made when ``--images`` is not given), both
mean Dice figures are printed too (``evaluation.folders.score_folders``, the referee's rule).

A run that fails (exit status, timeout, or stdout that is not one float) stops the comparison
with a one-line error naming the package: a failed run is never compared.
"""
import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from evaluation.contract import REFEREE_TIMEOUT, only_a_float
from evaluation.folders import score_folders
from evaluation.pairing import list_pngs
from lowpower.measure.limits import RUNS, SAMPLES, TIMEOUT
from lowpower.ship.presubmit.run import sample_images
from lowpower.ship.runner import run_pyz

MIB = 1024 * 1024
# (key in a run's figures, label, unit scale, format of one value)
FIGURES = [("wall", "wall s", 1.0, "{:.3f}"), ("model", "model s (printed)", 1.0, "{:.3f}"),
           ("peak", "peak MiB", MIB, "{:.0f}")]


class CompareError(Exception):
    """A package's run failed; the message is one line naming the package."""


def run_figures(pyz, images, out_dir, timeout=REFEREE_TIMEOUT, runner=run_pyz):
    """Run ``pyz`` once into a fresh ``out_dir``; ``{"wall", "model", "peak"}`` (s, s, bytes).

    Args:
        pyz: the package.
        images: folder of input PNGs.
        out_dir: where its masks go; emptied first, so old masks never count, and created, since
            some programs (the LPCVC 2023 sample's) expect the folder to exist.
        timeout: seconds before the run is stopped and counted as failed.
        runner: ``run_pyz`` or a stand-in with its signature (tests).

    Raises:
        CompareError: one line naming the package when the run failed or printed no single float.

    Example:
        >>> run_figures("a.pyz", "samples/IMG", "/tmp/out-a")  # doctest: +SKIP
        {'wall': 3.1, 'model': 1.2, 'peak': 912261120}
    """
    shutil.rmtree(str(out_dir), ignore_errors=True)
    Path(out_dir).mkdir(parents=True)
    run = runner(pyz, images, out_dir, timeout=timeout)
    if run.timed_out:
        raise CompareError("{}: timed out after {:.0f} s".format(pyz, run.wall_seconds))
    if run.exit_code != 0:
        tail = run.stderr_tail(1)
        raise CompareError("{}: exit status {}{}".format(pyz, run.exit_code, ": " + tail[0] if tail else ""))
    seconds = only_a_float(run.stdout)
    if seconds is None:
        raise CompareError("{}: stdout is not one float: {!r}".format(pyz, run.stdout[:80]))
    return {"wall": run.wall_seconds, "model": seconds, "peak": run.peak_memory}


def ratio(numerator, denominator):
    """``numerator / denominator``, NaN when the denominator is 0 (a package that printed 0.0)."""
    return numerator / denominator if denominator else float("nan")


def spread(values):
    """``(min, median, max)`` of a non-empty list.

    Example:
        >>> spread([3.0, 1.0, 2.0])
        (1.0, 2.0, 3.0)
    """
    return min(values), statistics.median(values), max(values)


def compare(a, b, images, gt=None, runs=5, workdir=None, timeout=REFEREE_TIMEOUT, runner=run_pyz,
            progress=True):
    """Run ``a`` and ``b`` in turns ``runs`` times each and compute the B/A ratios per turn.

    Args:
        a, b: the two packages.
        images: folder of input PNGs.
        gt: folder of GT PNGs, or None (no Dice).
        runs: runs per package (n); turn i is A's run i then B's run i.
        workdir: where the masks go (default a temporary folder, removed afterwards).
        timeout: seconds per run.
        runner: ``run_pyz`` or a stand-in (tests).
        progress: show a tqdm bar on stderr.

    Returns:
        dict: ``order`` (the labels in the order run, e.g. ``['A', 'B', 'A', 'B']``), ``runs``
        ({label: [figures per run]}), ``ratios`` ({figure: [B/A per turn]}), ``dice``
        ({label: mean Dice or None}) and ``dice_reason`` ({label: why not scored, or '' }).

    Raises:
        CompareError: the first failed run, naming its package.

    Example:
        >>> result = compare("a.pyz", "b.pyz", "samples/IMG", "samples/GT", runs=3)  # doctest: +SKIP
        >>> result["order"], spread(result["ratios"]["wall"])  # doctest: +SKIP
        (['A', 'B', 'A', 'B', 'A', 'B'], (0.61, 0.63, 0.66))
    """
    if runs < 1:
        raise ValueError("runs must be at least 1, got {}".format(runs))
    packages = {"A": Path(a), "B": Path(b)}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch:
        folder = Path(workdir) if workdir else Path(scratch)
        outs = {label: folder / "out-{}".format(label) for label in packages}
        order, results = [], {label: [] for label in packages}
        turns = [label for _ in range(runs) for label in packages]  # A B A B ...: load hits both alike
        # closed on the way out, failure too, so an error starts on a line of its own
        with tqdm(turns, desc="compare", unit="run", file=sys.stderr, disable=not progress) as bar:
            for label in bar:
                bar.set_postfix_str("{} {}".format(label, packages[label].name))
                results[label].append(run_figures(packages[label], images, outs[label], timeout, runner))
                order.append(label)
        dice, reasons = {}, {}
        for label in packages:  # the masks of the last run; the packages are deterministic
            dice[label], reasons[label] = None, "no GT"
            if gt is not None:
                scored = score_folders(str(outs[label]), str(gt))
                dice[label], reasons[label] = scored["mean_dice"], "" if scored["mean_dice"] is not None \
                    else scored["reason"]
    ratios = {key: [ratio(b_run[key], a_run[key]) for a_run, b_run in zip(results["A"], results["B"])]
              for key, _, _, _ in FIGURES}
    return {"packages": {k: str(v) for k, v in packages.items()}, "order": order, "runs": results,
            "ratios": ratios, "dice": dice, "dice_reason": reasons}


def report(result, about=""):
    """The printed table: per figure, A and B medians and the B/A min/median/max; then mean Dice.

    Example:
        >>> print(report(result, "20 synthetic images"))  # doctest: +SKIP
    """
    runs = len(result["runs"]["A"])
    lines = ["A = {}".format(result["packages"]["A"]), "B = {}".format(result["packages"]["B"]),
             "{}{} runs each, in turns {} ...".format(about + "; " if about else "", runs,
                                                      " ".join(result["order"][:4])),
             "",
             "{:<18} {:>10} {:>10} {:>9} {:>10} {:>9}".format("", "A median", "B median", "B/A min",
                                                              "B/A median", "B/A max")]
    for key, label, scale, fmt in FIGURES:
        medians = [fmt.format(statistics.median(run[key] for run in result["runs"][side]) / scale)
                   for side in "AB"]
        low, middle, high = spread(result["ratios"][key])
        lines.append("{:<18} {:>10} {:>10} {:>9.3f} {:>10.3f} {:>9.3f}".format(label, *medians, low, middle, high))
    lines.append("")
    for side in "AB":
        value = result["dice"][side]
        lines.append("mean Dice {}: {}".format(side, "{:.4f}".format(value) if value is not None
                                               else "n/a ({})".format(result["dice_reason"][side])))
    return "\n".join(lines)


def parse_args(argv=None):
    """The command line of ``lowpower bench compare``."""
    sub = argparse.ArgumentParser(prog="lowpower bench compare", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: lowpower bench compare a128.pyz b96.pyz -n 5 --samples 20")
    sub.add_argument("a", help="package A (the reference: ratios are B/A)")
    sub.add_argument("b", help="package B")
    sub.add_argument("--images", help="folder of PNGs, or one holding IMG/ and GT/ (for Dice); "
                                      "default: --samples synthetic images with GT made for the run")
    sub.add_argument("--samples", type=SAMPLES, default=20, help="synthetic images when --images is not given (20)")
    sub.add_argument("-n", "--runs", type=RUNS, default=5, help="runs per package (default 5)")
    sub.add_argument("--timeout", type=TIMEOUT, default=REFEREE_TIMEOUT, help="seconds per run before it fails")
    return sub.parse_args(argv)


def run(args):
    """``bench compare``: print the table; 0, or 2 with a one-line error when a run failed."""
    for path in (args.a, args.b):
        if not Path(path).is_file():
            print("compare failed: {}: no such package".format(path), file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as workdir:
        images, gt, about = sample_images(args.images, args.samples, workdir)
        count = len(list_pngs(str(images))[0])
        if not count:
            print("compare failed: no PNG images in {}".format(images), file=sys.stderr)
            return 2
        try:
            result = compare(args.a, args.b, images, gt, args.runs, workdir, args.timeout)
        except (CompareError, ValueError) as error:
            print("compare failed: {}".format(error), file=sys.stderr)
            return 2
    print(report(result, "{} ({} images)".format(about, count) if args.images else about))
    return 0


def main(argv=None):
    """``lowpower bench compare``: returns the exit status."""
    return run(parse_args(argv))
