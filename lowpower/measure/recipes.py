"""A training-recipe study as one markdown table: each arm's val mean Dice over seeds, paired with the baseline.

    lowpower bench recipes runs/study --md docs/study_table.md

A study is a folder of finished ``train.py`` runs laid out as ``STUDY/<arm>/seed<k>/`` (each with
``config.yaml``, ``history.json`` and ``log.txt``); one arm is the baseline (``--baseline``, default
``baseline``). Per run: the final val mean Dice (the last validated epoch), the best one, the epochs done,
and the seconds per epoch (median of the positive steps of the history's clock, the first epoch's own
seconds included; a resumed run restarts that clock, and the negative step it leaves is dropped).

One row per arm: the final val mean Dice over its seeds (mean ± sample std), the difference to the
baseline seed by seed (only the seeds both have), their mean ± sample std, and the median s/epoch.
A seed folder without history.json, or whose run stopped before ``train.epochs``, is left out and
named on stderr, as is a seed that other arms have and this one lacks.

Example:
    >>> results, warnings = collect("runs/study")  # doctest: +SKIP
    >>> print(table(results, baseline="baseline"))  # doctest: +SKIP
"""
import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import yaml

from lowpower.measure.report import add_markdown_output, print_table
from lowpower.safe import UserError
from lowpower.safe.write import check_output

SEED = re.compile(r"^seed(\d+)$")
HEADER = ("| arm | seeds | val mean Dice (final), mean ± std | difference to baseline by seed "
          "| mean difference ± std | s/epoch (median) |\n|---|---|---|---|---|---|")


def seconds_per_epoch(history):
    """Median of the positive steps of ``seconds`` (the first record's seconds is its own step).

    Example:
        >>> seconds_per_epoch([{"seconds": 10.0}, {"seconds": 21.0}, {"seconds": 12.0}, {"seconds": 24.0}])
        11.0
    """
    clock = [record["seconds"] for record in history if record.get("seconds") is not None]
    steps = [b - a for a, b in zip([0.0] + clock, clock) if b - a > 0]
    return statistics.median(steps) if steps else None


def run_figures(run):
    """``{final, best, epochs, s_per_epoch}`` of one finished run folder, or a string: why it is left out."""
    history_path, config_path = run / "history.json", run / "config.yaml"
    if not history_path.is_file():
        return "no history.json"
    try:
        history = json.loads(history_path.read_text())
    except ValueError as error:
        return "history.json unreadable (%s)" % error
    epochs = max((int(record["epoch"]) for record in history), default=0)
    wanted = None
    if config_path.is_file():
        wanted = ((yaml.safe_load(config_path.read_text()) or {}).get("train") or {}).get("epochs")
    if wanted is None:
        return "no train.epochs in config.yaml"
    if epochs < int(wanted):
        return "unfinished: %d of %d epochs" % (epochs, int(wanted))
    scored = [record["mean_dice"] for record in history if record.get("mean_dice") is not None]
    if not scored:
        return "no validated epoch in history.json"
    return {"final": float(scored[-1]), "best": float(max(scored)), "epochs": epochs,
            "s_per_epoch": seconds_per_epoch(history)}


def collect(study):
    """Every finished run of ``STUDY/<arm>/seed<k>/``: ``({arm: {k: figures}}, [warning, ...])``.

    ``figures`` is :func:`run_figures`'s dict. The warnings name each seed folder left out and why, and
    each seed some arm has a folder for and another arm lacks.
    """
    study = Path(study)
    if not study.is_dir():
        raise UserError("study folder %s does not exist" % study)
    folders = {}
    for arm in sorted(path for path in study.iterdir() if path.is_dir()):
        seeds = {int(SEED.match(p.name).group(1)): p for p in arm.iterdir() if p.is_dir() and SEED.match(p.name)}
        if seeds:
            folders[arm.name] = dict(sorted(seeds.items()))
    if not folders:
        raise UserError("no STUDY/<arm>/seed<k>/ run folders under %s" % study)
    every_seed = sorted({seed for seeds in folders.values() for seed in seeds})
    results, warnings = {}, []
    for arm, seeds in folders.items():
        results[arm] = {}
        for seed in every_seed:
            if seed not in seeds:
                warnings.append("%s: no seed%d folder (another arm has one)" % (arm, seed))
                continue
            figures = run_figures(seeds[seed])
            if isinstance(figures, str):
                warnings.append("%s: left out: %s" % (seeds[seed], figures))
            else:
                results[arm][seed] = figures
    return results, warnings


def mean_std(values, signed=False):
    """``"mean ± std"`` with 4 decimals (sample std; "n/a" for one value), or "—" for none.

    Example:
        >>> mean_std([0.7, 0.72, 0.74]), mean_std([0.01], signed=True)
        ('0.7200 ± 0.0200', '+0.0100 ± n/a')
    """
    if not values:
        return "—"
    spread = "%.4f" % statistics.stdev(values) if len(values) > 1 else "n/a"
    return ("{:+.4f}" if signed else "{:.4f}").format(statistics.mean(values)) + " ± " + spread


def arm_order(results, baseline, order=None):
    """The baseline, then ``order``'s arms as given, then the rest by name."""
    if baseline not in results:
        raise UserError("no arm %r in the study (arms: %s); name the baseline with --baseline"
                        % (baseline, ", ".join(sorted(results))))
    unknown = [name for name in order or () if name not in results]
    if unknown:
        raise UserError("--order names arms the study does not have: %s" % ", ".join(unknown))
    listed = [name for name in order or () if name != baseline]
    return [baseline] + listed + sorted(name for name in results if name != baseline and name not in listed)


def differences(results, arm, baseline):
    """``{seed: arm's final − baseline's final}`` over the seeds both arms have."""
    base = results[baseline]
    return {seed: figures["final"] - base[seed]["final"] for seed, figures in sorted(results[arm].items())
            if seed in base}


def table(results, baseline="baseline", order=None):
    """The markdown table of :func:`collect`'s results, one row per arm, the baseline first.

    Example:
        >>> runs = {"baseline": {0: {"final": 0.70, "s_per_epoch": 10.0}, 1: {"final": 0.72, "s_per_epoch": 12.0}},
        ...         "wide": {0: {"final": 0.73, "s_per_epoch": 20.0}, 1: {"final": 0.74, "s_per_epoch": 22.0}}}
        >>> print(table(runs).splitlines()[-1])
        | wide | 0, 1 | 0.7350 ± 0.0071 | seed0 +0.0300, seed1 +0.0200 | +0.0250 ± 0.0071 | 21.00 |
    """
    lines = [HEADER]
    for arm in arm_order(results, baseline, order):
        runs = results[arm]
        finals = [figures["final"] for figures in runs.values()]
        clocks = [figures["s_per_epoch"] for figures in runs.values() if figures.get("s_per_epoch") is not None]
        by_seed = mean_diff = "—"
        if arm != baseline:
            paired = differences(results, arm, baseline)
            by_seed = ", ".join("seed%d %+.4f" % item for item in paired.items()) or "no seed in common"
            mean_diff = mean_std(list(paired.values()), signed=True)
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            arm, ", ".join(str(seed) for seed in runs) or "none finished", mean_std(finals), by_seed, mean_diff,
            "%.2f" % statistics.median(clocks) if clocks else "—"))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower bench recipes", description=__doc__.split("Example:")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="the study folder: STUDY/<arm>/seed<k>/ are train.py run folders")
    parser.add_argument("--baseline", default="baseline", help="the arm the others are compared to (default baseline)")
    parser.add_argument("--order", help="comma-separated arms in the order of the rows after the baseline "
                        "(default: by name; arms not named follow by name)")
    add_markdown_output(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.md:
        check_output(args.md, force=args.force, what="--md")
    order = [name.strip() for name in args.order.split(",") if name.strip()] if args.order else None
    results, warnings = collect(args.study)
    text = table(results, baseline=args.baseline, order=order)
    for warning in warnings:
        print("warning: " + warning, file=sys.stderr)
    print_table(text, args.md)
    return 0
