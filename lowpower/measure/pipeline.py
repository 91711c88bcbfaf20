"""A compression pipeline, step by step: one table, CSV and plot of what each step costs and scores.

    lowpower bench pipeline base=runs/demo/best.pt pruned=runs/demo_pruned/best.pt \\
        int8=runs/demo_pruned/int8_x86.pt --images data/synthetic/test \\
        [--forward-size N] [-n 30] [--package-runs 3] [--out runs/pipeline/report]

Each LABEL=CKPT is one step: train.py's best.pt, a pruned checkpoint (``lowpower.compress.prune.cli``), an int8
one (``lowpower.compress.quantize``, a QAT run's best_int8.pt) or any other. The first step is the baseline
every ratio is against. Each step is packaged (``lowpower.ship.build.build_package``: int8 for an
int8 checkpoint, else fp32) and, per step, the row gives:

- params (M): parameters of the float network of the checkpoint's layout,
  ``networks.create_model(arch, **arch_kwargs)`` (an int8 checkpoint's layout gives the same count);
- GFLOPs: of that float network at the checkpoint's input size (``lowpower.measure.flops.count_flops``;
  an int8 network does the same multiply-adds in int8);
- weights.npz MB and pyz MB: the package's weights file and the whole package;
- forward ms: CPU forward latency in this process, batch 1, a real validation image at
  ``--forward-size`` (default each checkpoint's input size); median (min-max) over ``-n`` calls, the
  steps in turns call by call so a change in the machine's load falls on every step alike; and its
  ratio to the baseline;
- package ms/img: each package run by the referee's command (``lowpower.ship.runner.run_pyz``) on
  ``DIR/IMG``, the packages in turns, median over ``--package-runs`` of the model seconds it printed
  divided by the image count; its ratio to the baseline; and that time split into network and
  post-process ms/img (the median share of the network in the ``LOWPOWER_STATS`` file of each run);
- val mean Dice: in this process, by the referee's rule, on the val split of the checkpoint's config;
- test mean Dice: the package's masks of its last run scored against ``DIR/GT``.

Written to ``--out``: pipeline.md (the command and the table), pipeline.csv (raw numbers, one row
per step), pipeline.png (test mean Dice against package ms/image, the steps joined in order), and
the packages. int8 steps must share one quantized engine; it is selected before they run.
Timings only: nothing here is a test.
"""
import argparse
import functools
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

import networks
from evaluation.folders import score_folders
from evaluation.pairing import list_pngs
from lowpower.checkpoint import CheckpointError, build_model, kind_of, load_checkpoint
from lowpower.measure.compare import CompareError, ratio, run_figures
from lowpower.measure.flops import count_flops
from lowpower.measure.limits import CALLS, RUNS, SIDE
from lowpower.measure.pipeline_report import CSV_FIELDS, write_report
from lowpower.measure.report import check_result_folder
from lowpower.measure.variants import forward_times, val_dice, val_loader
from lowpower.safe.write import add_force_argument
from lowpower.ship.build import build_package
from lowpower.ship.manifest import PackageError
from lowpower.ship.runner import run_pyz
from networks import quant

REPORT = ("pipeline.csv", "pipeline.md", "pipeline.png")  # pipeline_report.write_report's files, the CSV first


class PipelineError(Exception):
    """A bad argument or input; the message is one line."""


def parse_steps(texts):
    """``[(label, Path)]`` of ``LABEL=CKPT`` arguments; PipelineError for a malformed one or a missing file.

    Example:
        >>> parse_steps(["base=runs/demo/best.pt"])  # doctest: +SKIP
        [('base', PosixPath('runs/demo/best.pt'))]
    """
    steps = []
    for text in texts:
        label, equals, path = text.partition("=")  # the first '=': a path may hold one, a label not
        if not equals or not label.strip() or not path.strip():
            raise PipelineError("{!r} is not LABEL=CKPT (e.g. base=runs/demo/best.pt)".format(text))
        if label.strip() in [known for known, _ in steps]:
            raise PipelineError("label {!r} is given twice; every step needs its own".format(label.strip()))
        if not Path(path).is_file():
            raise PipelineError("{}: no such checkpoint".format(path))
        steps.append((label.strip(), Path(path)))
    return steps


def test_folders(folder):
    """``(DIR/IMG, DIR/GT)``; PipelineError unless both are folders."""
    images, gt = Path(folder) / "IMG", Path(folder) / "GT"
    if not images.is_dir() or not gt.is_dir():
        raise PipelineError("--images {}: needs IMG/ and GT/ folders inside (e.g. data/synthetic/test)".format(folder))
    if not list_pngs(str(images))[0]:
        raise PipelineError("--images {}: no PNG images in IMG/".format(folder))
    return images, gt


def common_engine(steps, states):
    """Select the quantized engine the int8 steps were made for (None without int8 steps).

    Raises:
        PipelineError: the int8 steps were made for different engines.
    """
    engines = {label: kind_of(state).engine(state) for (label, _), state in zip(steps, states)}
    engines = {label: engine for label, engine in engines.items() if engine}
    if len(set(engines.values())) > 1:
        raise PipelineError("the int8 steps use different quantized engines ({}); quantize them for one".format(
            ", ".join("{}: {}".format(label, engine) for label, engine in engines.items())))
    if not engines:
        return None
    engine, warning = quant.select_engine(next(iter(engines.values())))
    if warning:
        print("bench pipeline: warning: {}".format(warning), file=sys.stderr)
    return engine


def network_cost(state):
    """``(params, GFLOPs)`` of the float network of the checkpoint's layout, at its input size."""

    model = networks.create_model(state["arch"], **state["arch_kwargs"]).eval()
    size = int(state.get("input_size") or state["config"]["data"]["input_size"])
    flops = count_flops(model, torch.randn(1, 3, size, size))
    return sum(p.numel() for p in model.parameters()), flops / 1e9


def slug(index, label):
    """A file name for step ``index`` of label ``label``.

    Example:
        >>> slug(1, "pruned x0.5")
        '01_pruned_x0.5'
    """
    return "{:02d}_{}".format(index, re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "step")


def measure_step(index, label, path, state, engine, args):
    """The step's static figures (row), its model and its timing image; packages it under ``--out``."""
    if not state.get("config"):
        raise PipelineError("{}: no config (not written by train.py); val Dice needs its data set".format(path))
    cfg, precision = state["config"], kind_of(state).default_precision  # None: build_package says why not
    out = Path(args.out)
    pyz = out / (slug(index, label) + ".pyz")
    info = build_package(path, pyz, precision=precision, verify=False, build_dir=out / "build" / pyz.stem)
    params, gflops = network_cost(state)
    model = build_model(state).eval()
    loader = val_loader(cfg)
    image = loader.dataset[0][0][None]
    if args.forward_size:  # the same real image at another size (int8 gains grow with the input)
        image = torch.nn.functional.interpolate(image, size=(args.forward_size,) * 2, mode="bilinear",
                                                align_corners=False)
    row = {"label": label, "checkpoint": str(path), "precision": precision,
           "engine": engine if precision == "int8" else "", "params": params, "gflops": gflops, "pyz": pyz,
           "npz_bytes": info["weights_bytes"], "pyz_bytes": info["bytes"],
           "val_mean_dice": val_dice(model, cfg, loader)}
    return row, model, image


def on_own_image(model, image):
    """A callable that runs ``model`` on ``image`` whatever it is given: ``forward_times`` hands one
    image to every model, and the steps' input sizes may differ."""
    return lambda _shared: model(image)


def run_with_stats(stats_file):
    """``run_pyz`` with ``LOWPOWER_STATS`` set, so the program writes its network/post-process split."""
    return functools.partial(run_pyz, env=dict(os.environ, LOWPOWER_STATS=str(stats_file)))


def network_share(stats_file):
    """The share of the model seconds before the post-processing (the network with its input's upload
    and normalisation) in one run's stats (NaN when it printed 0)."""
    stats = json.loads(Path(stats_file).read_text())
    return ratio(stats["model_seconds"] - stats["postprocess_seconds"], stats["model_seconds"])


def package_runs(packages, images, runs, workdir):
    """Per package, ``(printed model seconds per run, network share per run)`` and its masks' folder.

    The packages run in turns (A B C A B C ...); the masks are those of the last run.
    """
    seconds, shares = [[] for _ in packages], [[] for _ in packages]
    outs = [Path(workdir) / "out-{}".format(index) for index in range(len(packages))]
    stats_file = Path(workdir) / "stats.json"
    for _ in tqdm(range(runs), desc="packages", unit="turn", file=sys.stderr, leave=False):
        for index, pyz in enumerate(packages):
            if stats_file.exists():
                stats_file.unlink()  # a run that wrote none must not read the previous one's
            seconds[index].append(run_figures(pyz, images, outs[index], runner=run_with_stats(stats_file))["model"])
            shares[index].append(network_share(stats_file))
    return seconds, shares, outs


def add_timings(rows, base):
    """Fill the derived ms figures and the ratios to ``base`` (a row of ``rows``) in place."""
    for row in rows:
        ms = [1000.0 * t for t in row["forward"]]
        row.update(forward_median_ms=statistics.median(ms), forward_min_ms=min(ms), forward_max_ms=max(ms),
                   forward_ratio=ratio(statistics.median(row["forward"]), statistics.median(base["forward"])))
        package_ms = 1000.0 * statistics.median(row["package_seconds"]) / row["images"]
        network_ms = package_ms * statistics.median(row["network_shares"])  # so network + post = package
        row.update(package_ms_per_image=package_ms, network_ms_per_image=network_ms,
                   postprocess_ms_per_image=package_ms - network_ms)
    for row in rows:
        row["package_ratio"] = ratio(row["package_ms_per_image"], base["package_ms_per_image"])


def measure(args):
    """Every figure of every step of ``args.steps``, as row dicts, in order.

    The keys are ``pipeline_report.CSV_FIELDS`` and a few more.

    Example:
        >>> rows = measure(bench.parse_args(["pipeline", "a=best.pt", "--images", "test"]))  # doctest: +SKIP
        >>> rows[0]["forward_ratio"], rows[0]["package_ratio"]  # doctest: +SKIP
        (1.0, 1.0)
    """
    steps = parse_steps(args.steps)
    unknown = set(getattr(args, "reference", ())) - set(label for label, _ in steps)
    if unknown:
        raise PipelineError("--reference {}: no step has that label".format(", ".join(sorted(unknown))))
    images, gt = test_folders(args.images)
    states = [load_checkpoint(path) for _, path in steps]
    engine = common_engine(steps, states)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows, models = [], []
    for index, ((label, path), state) in enumerate(tqdm(list(zip(steps, states)), desc="steps", unit="step",
                                                        file=sys.stderr, leave=False)):
        row, model, image = measure_step(index + 1, label, path, state, engine, args)
        rows.append(row)
        models.append(on_own_image(model, image))
    for row, times in zip(rows, forward_times(models, None, args.calls)):
        row["forward"] = times
    count = len(list_pngs(str(images))[0])
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as workdir:
        seconds, shares, outs = package_runs([row["pyz"] for row in rows], images, args.package_runs, workdir)
        for row, runs, share, masks in zip(rows, seconds, shares, outs):
            row.update(images=count, package_seconds=runs, network_shares=share,
                       test_mean_dice=score_folders(str(masks), str(gt))["mean_dice"])
    add_timings(rows, rows[0])
    return rows


def parse_args(argv=None):
    """The command line of ``lowpower bench pipeline``."""
    sub = argparse.ArgumentParser(prog="lowpower bench pipeline", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("steps", nargs="+", metavar="LABEL=CKPT",
                     help="the steps in order, the first the baseline (e.g. base=runs/demo/best.pt)")
    sub.add_argument("--images", required=True, help="folder holding IMG/ and GT/ (e.g. data/synthetic/test)")
    sub.add_argument("--forward-size", type=SIDE, help="input side of the forward timing, 8..2048 (default: each "
                                                       "checkpoint's; Dice and packages keep theirs)")
    sub.add_argument("-n", "--calls", type=CALLS, default=30, help="forward calls per step (default 30)")
    sub.add_argument("--package-runs", type=RUNS, default=3, help="runs per package (default 3)")
    sub.add_argument("--reference", action="append", default=[], metavar="LABEL",
                     help="a step measured like the others but plotted apart, not on the pipeline's line "
                          "(e.g. the student trained without a teacher); repeatable")
    sub.add_argument("--out", default="runs/pipeline/report", help="where the packages and the report go "
                                                                   "(default runs/pipeline/report); an earlier "
                                                                   "run's files there are replaced")
    add_force_argument(sub, help="replace a pipeline.csv (and pipeline.md, pipeline.png) in --out that this "
                                 "command did not write")
    args = sub.parse_args(argv)
    check_out(args)  # before any work: a refusal costs nothing
    return args


def check_out(args):
    """Refuse an ``--out`` that is an input, or holds a pipeline.csv this command did not write (without --force).

    The packages and an earlier run's report in ``--out`` are the command's own and are replaced.
    """
    checkpoints = [text.partition("=")[2] or text for text in args.steps]
    check_result_folder(args.out, inputs=checkpoints + [args.images], force=args.force, results=REPORT,
                        header=CSV_FIELDS)


def run(args):
    """``bench pipeline``: print the table and write the report; 2 with a one-line error on bad input."""
    command = "lowpower bench " + " ".join(shlex.quote(arg) for arg in getattr(args, "argv", []))
    try:
        if args.calls < 1 or args.package_runs < 1:
            raise PipelineError("-n and --package-runs must be at least 1")
        rows = measure(args)
    except (PipelineError, CompareError, PackageError, CheckpointError) as error:
        print("bench pipeline: {}".format(error), file=sys.stderr)
        return 2
    print(write_report(rows, args.out, command, args.reference))
    return 0


def main(argv=None):
    """``lowpower bench pipeline``: returns the exit status."""
    return run(parse_args(argv))
