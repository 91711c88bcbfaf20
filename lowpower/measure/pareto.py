"""Mean Dice against model ms per image for many packages or checkpoints, the Pareto frontier marked.

    lowpower bench pareto RUN_OR_PYZ ... [--images DIR] [--out DIR] [-n 1]

Each argument is a package (``.pyz``), a checkpoint (``.pt``) or a run folder (its ``best.pt``);
checkpoints are packaged first with ``lowpower.ship.build.build_package(..., verify=False)``. Every
package runs through ``lowpower.ship.runner.run_pyz`` on the same images with GT (``DIR/IMG`` + ``DIR/GT``,
or synthetic ones made for the run); ms per image is the seconds it printed (the referee's model
time) over the image count, the median over ``-n`` runs; mean Dice is the referee's rule
(``evaluation.folders.score_folders``). A point is on the frontier when no other point has at least
its Dice at no more ms with one of the two strictly better. Writes ``pareto.csv`` and ``pareto.png``
under ``--out`` and prints the table.

``--out`` is the command's own folder: the packages it builds (``packages/NAME.pyz``) and an earlier
run's report are replaced on a rerun; it is checked before any work, so a package, checkpoint or run
folder given as input is never written over, and a ``pareto.csv`` the command did not write is
replaced only with ``--force``.
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from evaluation.contract import REFEREE_TIMEOUT
from evaluation.folders import score_folders
from evaluation.pairing import list_pngs
from lowpower.measure.compare import CompareError, run_figures
from lowpower.measure.limits import RUNS, SAMPLES, TIMEOUT
from lowpower.measure.report import check_result_folder, pyplot, save_figure, write_csv
from lowpower.safe.write import add_force_argument
from lowpower.ship.presubmit.run import sample_images
from lowpower.ship.runner import run_pyz

COLUMNS = ["name", "mean_dice", "ms_per_image", "wall_ms_per_image", "peak_mib", "frontier", "source", "package"]
RESULTS = ("pareto.csv", "pareto.png")
PACKAGES = "packages"  # under --out: the packages built from checkpoints and run folders


def pareto_front(points):
    """For each ``(dice, ms)`` point, True when no other point dominates it (higher Dice, lower ms).

    A point is dominated by one with Dice >= and ms <= that is strictly better in at least one;
    equal points are both on the frontier.

    Args:
        points: list of ``(mean_dice, ms_per_image)``.

    Example:
        >>> pareto_front([(0.5, 10.0), (0.6, 20.0), (0.4, 15.0), (0.6, 25.0)])
        [True, True, False, False]
    """
    def dominated(dice, ms):
        return any(other_dice >= dice and other_ms <= ms and (other_dice > dice or other_ms < ms)
                   for other_dice, other_ms in points)
    return [not dominated(dice, ms) for dice, ms in points]


def resolve_package(source, build_dir, build=None):
    """``(name, pyz)`` for one argument, packaging a checkpoint or run folder into ``build_dir``.

    Args:
        source: a ``.pyz``, a ``.pt`` checkpoint, or a run folder holding ``best.pt``.
        build_dir: where packaged checkpoints are written.
        build: ``lowpower.ship.build.build_package`` or a stand-in (tests).

    Raises:
        CompareError: one line naming the argument when it is none of these.
    """
    path = Path(source)
    if path.is_dir() and not (path / "best.pt").is_file():
        raise CompareError("{}: a run folder without best.pt".format(source))
    if not path.exists():
        raise CompareError("{}: no such package, checkpoint or run folder".format(source))
    name, checkpoint, target = package_plan(source, build_dir)
    if checkpoint is None:
        return name, path
    if build is None:
        from lowpower.ship.build import build_package as build  # torch: only when a checkpoint is given
    build(checkpoint, str(target), verify=False, build_dir=str(target.with_suffix("")))
    return name, target


def package_plan(source, build_dir):
    """``(name, checkpoint, package to build)`` for one argument; checkpoint and package are None for a pyz.

    Example:
        >>> package_plan("runs/demo/best.pt", "pareto/packages")
        ('demo/best', PosixPath('runs/demo/best.pt'), PosixPath('pareto/packages/demo-best.pyz'))
    """
    path = Path(source)
    if path.is_dir():
        name, checkpoint = path.name, path / "best.pt"
    elif path.suffix == ".pt":
        name, checkpoint = "{}/{}".format(path.parent.name, path.stem), path
    else:
        return path.stem, None, None
    return name, checkpoint, Path(build_dir) / "{}.pyz".format(name.replace("/", "-"))


def check_out(args):
    """Refuse, before any work, an ``--out`` whose files would land on an input or a user's pareto.csv."""
    plans = [package_plan(source, Path(args.out) / PACKAGES) for source in args.sources]
    inputs = list(args.sources) + [checkpoint for _, checkpoint, _ in plans] + [args.images]
    products = [str(target.relative_to(args.out)) for _, _, target in plans if target is not None]
    check_result_folder(args.out, inputs=inputs, force=args.force, products=products, results=RESULTS,
                        header=COLUMNS)


def measure(name, pyz, images, gt, count, workdir, runs=1, timeout=REFEREE_TIMEOUT, runner=run_pyz):
    """One CSV row for a package: median ms per image (printed and wall) over ``runs``, peak, Dice.

    Raises:
        CompareError: a failed run, or masks that could not be scored, naming the package.
    """
    out = Path(workdir) / "out"
    figures = [run_figures(pyz, images, out, timeout, runner) for _ in range(runs)]
    scored = score_folders(str(out), str(gt))
    if scored["mean_dice"] is None:
        raise CompareError("{}: masks not scored: {}".format(pyz, scored["reason"]))
    return {"name": name, "package": str(pyz), "mean_dice": scored["mean_dice"],
            "ms_per_image": 1000.0 * statistics.median(f["model"] for f in figures) / count,
            "wall_ms_per_image": 1000.0 * statistics.median(f["wall"] for f in figures) / count,
            "peak_mib": max(f["peak"] for f in figures) / 2 ** 20}


def mark_frontier(rows):
    """Set ``frontier`` on every row from its (mean_dice, ms_per_image); returns the rows."""
    for row, on in zip(rows, pareto_front([(row["mean_dice"], row["ms_per_image"]) for row in rows])):
        row["frontier"] = on
    return rows


def plot(path, rows, about=""):
    """Scatter mean Dice against ms per image, the frontier joined and labelled, as a PNG."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(7, 4.5))
    front = sorted((row for row in rows if row["frontier"]), key=lambda row: row["ms_per_image"])
    others = [row for row in rows if not row["frontier"]]
    if others:  # no empty "dominated" entry in the legend
        axes.scatter([r["ms_per_image"] for r in others], [r["mean_dice"] for r in others], color="tab:gray",
                     label="dominated")
    axes.plot([r["ms_per_image"] for r in front], [r["mean_dice"] for r in front], "o-", color="tab:red",
              drawstyle="steps-post", label="Pareto frontier")
    for row in rows:
        axes.annotate(row["name"], (row["ms_per_image"], row["mean_dice"]), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)
    axes.set_xlabel("model ms per image (printed seconds / images)")
    axes.set_ylabel("mean Dice")
    axes.set_title("Dice vs speed" + (": " + about if about else ""), fontsize=10)
    axes.grid(alpha=0.3)
    axes.margins(0.12)  # room for the labels of the corner points
    axes.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, path, dpi=120)
    plt.close(figure)


def table(rows):
    """The printed table, fastest first, frontier rows starred.

    Example:
        >>> print(table([{"name": "a", "mean_dice": 0.5, "ms_per_image": 10.0, "wall_ms_per_image": 50.0,
        ...               "peak_mib": 300.0, "frontier": True}]))
        package                  mean Dice  model ms/img  wall ms/img  peak MiB  frontier
        a                           0.5000          10.0         50.0       300  *
    """
    lines = ["{:<24} {:>10} {:>13} {:>12} {:>9}  frontier".format(
        "package", "mean Dice", "model ms/img", "wall ms/img", "peak MiB")]
    for row in sorted(rows, key=lambda row: row["ms_per_image"]):
        lines.append("{:<24} {:>10.4f} {:>13.1f} {:>12.1f} {:>9.0f}  {}".format(
            row["name"], row["mean_dice"], row["ms_per_image"], row["wall_ms_per_image"], row["peak_mib"],
            "*" if row["frontier"] else ""))
    return "\n".join(lines)


def pareto(sources, images, gt, out_dir, runs=1, timeout=REFEREE_TIMEOUT, runner=run_pyz, build=None,
           progress=True, about=""):
    """Package, run and score every source; write CSV + PNG into ``out_dir``; return the rows.

    Args:
        sources: ``.pyz`` files, ``.pt`` checkpoints or run folders.
        images, gt: folders of input PNGs and their GT.
        out_dir: where ``pareto.csv`` and ``pareto.png`` go (created).
        runs: runs per package (the median is kept).
        runner, build: stand-ins for ``run_pyz`` and ``build_package`` (tests).

    Raises:
        CompareError: the first argument that could not be packaged, run or scored.

    Example:
        >>> rows = pareto(["runs/demo", "b96.pyz"], "s/IMG", "s/GT", "pareto")  # doctest: +SKIP
    """
    count = len(list_pngs(str(images))[0])
    if not count:
        raise CompareError("no PNG images in {}".format(images))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pareto-") as workdir:
        with tqdm(sources, desc="pareto", unit="package", file=sys.stderr, disable=not progress) as bar:
            for source in bar:
                bar.set_postfix_str(Path(source).name)
                try:
                    name, pyz = resolve_package(source, out_dir / PACKAGES, build)
                except CompareError:
                    raise
                except Exception as error:  # PackageError, torch.load's errors ...: still one line naming it
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise CompareError("{}: could not be packaged: {}".format(source, first)) from error
                row = measure(name, pyz, images, gt, count, workdir, runs, timeout, runner)
                row["source"] = str(source)
                rows.append(row)
    mark_frontier(rows)
    write_csv(out_dir / "pareto.csv", rows, COLUMNS)
    plot(out_dir / "pareto.png", rows, about)
    return rows


def parse_args(argv=None):
    """The command line of ``lowpower bench pareto``."""
    sub = argparse.ArgumentParser(prog="lowpower bench pareto", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: lowpower bench pareto runs/demo a128.pyz b96.pyz --out pareto")
    sub.add_argument("sources", nargs="+", metavar="RUN_OR_PYZ", help="a .pyz, a .pt checkpoint or a run folder")
    sub.add_argument("--images", help="folder holding IMG/ and GT/; default: --samples synthetic images")
    sub.add_argument("--samples", type=SAMPLES, default=20, help="synthetic images when --images is not given (20)")
    sub.add_argument("--out", default="pareto", help="folder for pareto.csv, pareto.png, packages/ (default "
                                                     "pareto); an earlier run's files there are replaced")
    sub.add_argument("-n", "--runs", type=RUNS, default=1, help="runs per package; the median is kept (1)")
    sub.add_argument("--timeout", type=TIMEOUT, default=REFEREE_TIMEOUT, help="seconds per run before it fails")
    add_force_argument(sub, help="replace a pareto.csv (and pareto.png) in --out that this command did not write")
    return sub.parse_args(argv)


def run(args):
    """``bench pareto``: print the table; 0, or 2 with a one-line error naming what failed."""
    check_out(args)
    with tempfile.TemporaryDirectory(prefix="bench-pareto-") as workdir:
        images, gt, about = sample_images(args.images, args.samples, workdir)
        if gt is None:
            print("pareto failed: {} has no GT/ folder; mean Dice needs one".format(args.images), file=sys.stderr)
            return 2
        try:
            rows = pareto(args.sources, images, gt, args.out, args.runs, args.timeout, about=about)
        except CompareError as error:
            print("pareto failed: {}".format(error), file=sys.stderr)
            return 2
    print(table(rows))
    print("\nwrote {} and {}".format(Path(args.out) / "pareto.csv", Path(args.out) / "pareto.png"))
    return 0


def main(argv=None):
    """``lowpower bench pareto``: returns the exit status."""
    return run(parse_args(argv))
