"""Does the shipped program's reader/writer overlap pay? Pooled vs strictly sequential runs.

    python -m lowpower.bench_solution solution.pyz --images data/synthetic/test/IMG --repeats 3

Runs the pyz the way the referee does (``lowpower.pyz.run_pyz``: ``python -I -W ignore
solution.pyz -i IMAGES -o OUT`` from an empty folder), alternating the normal pooled mode with
``LOWPOWER_SEQUENTIAL=1`` (no pools: read, segment, write one batch at a time; same code
otherwise), and reads each run's timings from the
``LOWPOWER_STATS`` JSON the program writes. Prints, per mode, the median over the repeats of:

- process: wall clock of the whole process (Python start, imports, model build, warm-up, loop);
- loop: wall clock from the first read to the last PNG written;
- model: the summed synchronised model seconds (what timer ``model`` prints);

all per image; then the time sequential runs spend reading and writing, which bounds what the
overlap can save (when the model already keeps every core busy, nothing is left to overlap with);
then the pooled / sequential ratio of the loop wall clock (the issue's bar: at most
0.8) and checks that both modes wrote identical masks. Timings only: nothing here is a test.
"""
import argparse
import filecmp
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from lowpower.pyz import run_pyz

BAR = 0.8


def run_once(pyz, images, python, sequential, threads, workdir):
    """One run of the program (``lowpower.pyz.run_pyz``, the referee's command, no time limit).

    Returns:
        Its ``LOWPOWER_STATS`` dict plus ``process_seconds`` (wall clock of the whole process),
        ``printed`` (its stdout) and the output folder.
    """
    out = Path(tempfile.mkdtemp(prefix="out-", dir=workdir))
    stats_file = Path(workdir) / "stats.json"
    env = dict(os.environ, LOWPOWER_STATS=str(stats_file))
    env.pop("LOWPOWER_SEQUENTIAL", None)
    if sequential:
        env["LOWPOWER_SEQUENTIAL"] = "1"
    if threads:
        env["LOWPOWER_THREADS"] = str(threads)
    run = run_pyz(pyz, images, out, python=python, timeout=None, env=env)
    if not run.ok:
        raise SystemExit("the program failed (exit %s):\n%s" % (run.exit_code, run.stderr[-3000:]))
    stats = json.loads(stats_file.read_text())
    stats["process_seconds"] = run.wall_seconds
    stats["printed"] = run.stdout.strip()
    return stats, out


def same_masks(first, second):
    names = sorted(os.listdir(first))
    if names != sorted(os.listdir(second)):
        return False
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    return not mismatch and not errors


def table(results, images):
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lowpower.bench_solution",
        description="Wall clock per image of a solution.pyz with its reader/writer pools vs strictly "
                    "sequential (LOWPOWER_SEQUENTIAL=1), run as the referee runs it.")
    parser.add_argument("pyz", help="the package to measure")
    parser.add_argument("--images", required=True, help="folder of input images, e.g. data/synthetic/test/IMG")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode, alternated (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="LOWPOWER_THREADS for the program: torch CPU threads (default: all cores)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run the pyz with")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    count = len([name for name in os.listdir(args.images)
                 if not name.startswith(".") and os.path.isfile(os.path.join(args.images, name))])
    if not count:
        raise SystemExit("no images in %s" % args.images)
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


if __name__ == "__main__":
    sys.exit(main())
