"""Where a solution.pyz spends its time: start-up, read, model, post-process, write, teardown.

    lowpower bench solution solution.pyz --images data/synthetic/test/IMG --repeats 5
    lowpower bench solution solution.pyz --images IMG --variants OMP_WAIT_POLICY=PASSIVE \\
        OMP_WAIT_POLICY=ACTIVE
    lowpower bench solution solution.pyz --images IMG --compare-sequential

Runs the pyz the way the referee does (``lowpower.ship.runner.run_pyz``: ``python -I -W ignore
solution.pyz -i IMAGES -o OUT`` from an empty folder) and reads each run's timings from the
``LOWPOWER_STATS`` JSON the program writes, plus the process's wall clock measured here. Per run:

- start-up: launch of the process to the first batch read and handed to the model (interpreter,
  imports, model build, warm-up, first reads); first mask: launch to the first mask written;
- read, model (the network), post-process (upsampling, argmax, small-class removal), write: seconds
  per image (read and write run in pools, beside the model, so they need not add up to the loop);
- teardown: the last mask written to the end of the process;
- process: the whole process's wall clock.

The table gives the median, min and max over the repeats. ``--variants`` runs several environments
in turns (A B A B ...), one column of medians each plus their ratio to the first, so load on a
shared machine hits every variant alike. ``--compare-sequential`` instead compares the normal
pooled mode with ``LOWPOWER_SEQUENTIAL=1`` (no reader/writer pools) and checks both wrote identical
masks. Timings only: nothing here is a test.
"""
import argparse
import filecmp
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from lowpower.measure.limits import RUNS, THREADS
from lowpower.ship.runner import run_pyz

BAR = 0.8  # pooled / sequential loop wall clock the pools should reach

# ----------------------------------------------------------------------------- runs

def run_once(pyz, images, python, sequential, threads, workdir, extra_env=None):
    """One run of the program (``lowpower.ship.runner.run_pyz``, the referee's command, no time limit).

    Returns:
        Its ``LOWPOWER_STATS`` dict plus ``process_seconds`` (wall clock of the whole process),
        ``launched`` (``time.time()`` just before the launch), ``printed`` (its stdout), and the
        output folder.
    """
    out = Path(tempfile.mkdtemp(prefix="out-", dir=workdir))
    stats_file = Path(workdir) / "stats.json"
    env = dict(os.environ, LOWPOWER_STATS=str(stats_file))
    env.pop("LOWPOWER_SEQUENTIAL", None)
    if sequential:
        env["LOWPOWER_SEQUENTIAL"] = "1"
    if threads:
        env["LOWPOWER_THREADS"] = str(threads)
    env.update(extra_env or {})
    run = run_pyz(pyz, images, out, python=python, timeout=None, env=env)
    if not run.ok:
        raise SystemExit("the program failed (exit %s):\n%s" % (run.exit_code, run.stderr[-3000:]))
    stats = json.loads(stats_file.read_text())
    stats.update(process_seconds=run.wall_seconds, launched=run.started, printed=run.stdout.strip())
    return stats, out


# ----------------------------------------------------------------------------- pooled vs sequential

def same_masks(first, second):
    names = sorted(os.listdir(first))
    if names != sorted(os.listdir(second)):
        return False
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    return not mismatch and not errors


def table(results, images):
    """Lines of the pooled vs sequential table, and the loop wall ratio."""
    lines = ["%-11s %4s %14s %14s %14s" % ("mode", "runs", "process s/img", "loop s/img", "model s/img")]
    medians = {}
    for mode in ("pooled", "sequential"):
        runs = results[mode]
        medians[mode] = {key: statistics.median(run[key] for run in runs) / images
                         for key in ("process_seconds", "loop_seconds", "model_seconds")}
        lines.append("%-11s %4d %14.4f %14.4f %14.4f" % (
            mode, len(runs), medians[mode]["process_seconds"], medians[mode]["loop_seconds"],
            medians[mode]["model_seconds"]))
    sequential = results["sequential"]
    hideable = statistics.median(run["read_seconds"] + run["write_seconds"] for run in sequential)
    loop = statistics.median(run["loop_seconds"] for run in sequential)
    lines.append("sequential runs spend %.4f s/img reading (decode + resize) and writing (encode + file): "
                 "%.0f%% of the loop, all the pools can hide; best ratio with free cores about %.2f" % (
                     hideable / images, 100.0 * hideable / loop, 1.0 - hideable / loop))
    loop_ratio = medians["pooled"]["loop_seconds"] / medians["sequential"]["loop_seconds"]
    process_ratio = medians["pooled"]["process_seconds"] / medians["sequential"]["process_seconds"]
    lines.append("pooled / sequential: loop wall %.3f (bar <= %.2f: %s), process wall %.3f" % (
        loop_ratio, BAR, "met" if loop_ratio <= BAR else "NOT met", process_ratio))
    return lines, loop_ratio


def compare_modes(args, count):
    """The pooled mode against LOWPOWER_SEQUENTIAL=1, in turns; 0 when both wrote the same masks."""
    results = {"pooled": [], "sequential": []}
    outputs = {}
    with tempfile.TemporaryDirectory(prefix="lowpower-bench-") as workdir:
        for repeat in range(args.repeats):
            for mode in ("pooled", "sequential") if repeat % 2 == 0 else ("sequential", "pooled"):
                stats, out = run_once(args.pyz, args.images, args.python, mode == "sequential",
                                      args.threads, workdir)
                results[mode].append(stats)
                outputs.setdefault(mode, out)
                print("  run %d %-10s loop %.2f s, model %.2f s, process %.2f s (%s)" % (
                    repeat + 1, mode, stats["loop_seconds"], stats["model_seconds"],
                    stats["process_seconds"], stats["device"]), file=sys.stderr)
        identical = same_masks(outputs["pooled"], outputs["sequential"])
    lines, _ = table(results, count)
    print("%s on %d images from %s, %s" % (args.pyz, count, args.images, results["pooled"][0]["device"]))
    print("\n".join(lines))
    print("masks identical in both modes: %s" % ("yes" if identical else "NO"))
    return 0 if identical else 1


# (label, stats key or computed name, unit): "s" per run, "ms" per image
PHASES = [
    ("start-up (launch -> first batch ready)", "startup", "s"),
    ("first mask (launch -> first mask written)", "first_mask", "s"),
    ("read (decode + resize, pool)", "read_seconds", "ms"),
    ("input (upload, normalise)", "input_seconds", "ms"),
    ("model (network)", "network_seconds", "ms"),
    ("post-process (upsample, argmax, small classes)", "postprocess_seconds", "ms"),
    ("write (encode + file, pool)", "write_seconds", "ms"),
    ("loop (first read -> last mask)", "loop_seconds", "ms"),
    ("teardown (last mask -> process end)", "teardown", "s"),
    ("process wall clock", "process_seconds", "s"),
]
MOMENTS = ("first_batch_ready", "first_mask_written", "last_mask_written")


def phase_values(stats):
    """{phase key: seconds} of one run: stats per run, the per-image phases divided by the images.

    Raises:
        SystemExit: the stats lack the moments (a package built before they existed).
    """
    missing = [key for key in MOMENTS + ("input_seconds", "network_seconds", "postprocess_seconds")
               if key not in stats]
    if missing:
        raise SystemExit("the program's LOWPOWER_STATS lacks %s: re-package it with this version "
                         "(./compress.sh CKPT -o PYZ)" % ", ".join(missing))
    launch, images = stats["launched"], max(1, stats["images"])
    values = {"startup": stats["first_batch_ready"] - launch, "first_mask": stats["first_mask_written"] - launch,
              "teardown": launch + stats["process_seconds"] - stats["last_mask_written"],
              "process_seconds": stats["process_seconds"]}
    for _, key, unit in PHASES:
        if unit == "ms":
            values[key] = stats[key] / images
    return values


def shown(seconds, unit):
    return "%.3f s" % seconds if unit == "s" else "%.2f ms" % (1000.0 * seconds)


def breakdown_table(runs):
    """Lines of the table of one variant: phase, median, min, max over its runs."""
    values = [phase_values(stats) for stats in runs]
    lines = ["%-48s %10s %10s %10s" % ("phase (%d runs)" % len(runs), "median", "min", "max")]
    for label, key, unit in PHASES:
        column = [value[key] for value in values]
        lines.append("%-48s %10s %10s %10s" % (label, shown(statistics.median(column), unit),
                                              shown(min(column), unit), shown(max(column), unit)))
    return lines


def variants_table(names, results):
    """Lines of the table of several variants: the median of each, and its ratio to the first."""
    medians = [{key: statistics.median(phase_values(stats)[key] for stats in results[name])
                for _, key, _ in PHASES} for name in names]
    header = "%-48s" % "phase (median)" + "".join(" %12s" % ("[%d]" % index) for index in range(len(names)))
    lines = ["[%d] %s (%d runs)" % (index, name, len(results[name])) for index, name in enumerate(names)]
    lines.append(header + "".join(" %8s" % ("[%d]/[0]" % index) for index in range(1, len(names))))
    for label, key, unit in PHASES:
        row = "%-48s" % label + "".join(" %12s" % shown(median[key], unit) for median in medians)
        base = medians[0][key]
        row += "".join(" %8s" % ("%.3f" % (median[key] / base) if base > 0 else "-") for median in medians[1:])
        lines.append(row)
    return lines


def parse_variant(text):
    """'KEY=VALUE,KEY=VALUE' -> {KEY: VALUE}; 'default' -> {} (the environment as it is)."""
    if text in ("", "default"):
        return {}
    pairs = {}
    for item in text.split(","):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise SystemExit("--variants: %r is not KEY=VALUE[,KEY=VALUE] (e.g. OMP_WAIT_POLICY=ACTIVE)" % item)
        pairs[key.strip()] = value
    return pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower bench solution",
        description="Where a solution.pyz spends its time, run as the referee runs it: start-up, read, model, "
                    "post-process, write and teardown, median/min/max over repeated runs. --variants compares "
                    "environments in turns; --compare-sequential compares the pooled and sequential modes.")
    parser.add_argument("pyz", help="the package to measure (built by ./compress.sh)")
    parser.add_argument("--images", required=True, help="folder of input images, e.g. data/synthetic/test/IMG")
    parser.add_argument("--repeats", type=RUNS, default=3, help="runs per variant or mode, in turns (default 3)")
    parser.add_argument("--threads", type=THREADS, default=None,
                        help="LOWPOWER_THREADS for the program: torch CPU threads (default: all cores)")
    parser.add_argument("--variants", nargs="+", metavar="KEY=VALUE[,KEY=VALUE]",
                        help="environments to compare in turns, e.g. OMP_WAIT_POLICY=PASSIVE OMP_WAIT_POLICY=ACTIVE "
                             "('default': the environment as it is)")
    parser.add_argument("--compare-sequential", action="store_true",
                        help="compare the pooled mode with LOWPOWER_SEQUENTIAL=1 instead (loop wall ratio, masks)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the pyz with")
    return parser.parse_args(argv)


def count_images(folder):
    if not os.path.isdir(folder):
        raise SystemExit("--images %s is not a folder: give the folder of input images" % folder)
    return len([name for name in os.listdir(folder)
                if not name.startswith(".") and os.path.isfile(os.path.join(folder, name))])


def measure_variants(args, names):
    """{variant: [stats of each run]}, the variants run in turns, A B A B ... (B A on odd rounds)."""
    from tqdm import tqdm

    environments = {name: parse_variant(name) for name in names}
    results = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="lowpower-bench-") as workdir, \
            tqdm(total=args.repeats * len(names), desc="runs", unit="run", file=sys.stderr) as bar:
        for repeat in range(args.repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                stats, _ = run_once(args.pyz, args.images, args.python, False, args.threads, workdir,
                                    extra_env=environments[name])
                results[name].append(stats)
                bar.update()
    return results


def main(argv=None):
    args = parse_args(argv)
    count = count_images(args.images)
    if not count:
        raise SystemExit("no images in %s" % args.images)
    if args.compare_sequential:
        return compare_modes(args, count)
    names = args.variants or ["default"]
    results = measure_variants(args, names)
    first = results[names[0]][0]
    print("%s on %d images from %s, %s, batch %s" % (args.pyz, count, args.images, first["device"],
                                                    first.get("batch_size", "?")))
    if len(names) == 1:
        print("\n".join(breakdown_table(results[names[0]])))
    else:
        print("\n".join(variants_table(names, results)))
    return 0
