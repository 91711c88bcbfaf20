"""Benchmark the registered networks side by side on this machine's CPU.

    lowpower bench models [--size 512] [--threads 2] [--md FILE] [--csv FILE]
                                    [--models a,b] [--repeats N] [--warmup N]

For every model (one fresh subprocess each, so models do not share memory or
allocator state) it measures, at batch 1 and ``--size`` x ``--size`` input:

- ``params``: number of parameters;
- ``gflops``: forward-pass GFLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``
  (convolutions and matrix products, 2 FLOPs per multiply-accumulate;
  element-wise ops, normalisation and interpolation are not counted);
- ``weights_fp32_mb`` / ``weights_fp16_mb``: size of the state dict with
  floating tensors stored in fp32 / fp16 (1 MB = 10^6 bytes);
- ``latency_*_ms``: CPU wall time of one ``model(x)`` call under
  ``torch.inference_mode()`` after ``--warmup`` calls: median, min and max
  over ``--repeats`` calls, with ``torch.set_num_threads(--threads)``;
- ``peak_memory_mb``: how far the process's resident memory rose above its
  level just before the first forward call, at its highest during the
  warm-up and timed calls (activations, workspaces and allocator caching;
  the weights and the torch runtime, initialised by a few tiny ops first,
  are already resident and not counted). Read from the kernel's peak-RSS
  counter (``VmHWM``), reset just before the first call; ``peak_rss_mb`` in
  the CSV is that whole-process peak.

The table printed (and written with ``--md``) is markdown; ``--csv`` writes
the raw numbers. Both are checked before any model is measured: an existing file is replaced only
with ``--force``, a folder never, and both are written atomically. CPU timings on a shared machine are noisy: the header
records the load average before and after the run, and the ``load`` column
the 1-minute load average just after each model was measured (above the
number of threads used, other processes were competing for the cores).
"""
import argparse
import datetime
import gc
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
from tqdm import tqdm

import networks
from lowpower.measure.flops import MB, count_flops, weights_megabytes
from lowpower.measure.limits import CALLS, NUM_CLASSES, SIDE, THREADS, WARMUP
from lowpower.measure.report import cpu_name, load_average, write_csv
from lowpower.paths import REPO_ROOT
from lowpower.safe.write import OutputError, add_force_argument, atomic_output, check_output, same_file

COLUMNS = [
    "model", "params", "gflops", "weights_fp32_mb", "weights_fp16_mb",
    "latency_median_ms", "latency_min_ms", "latency_max_ms", "peak_memory_mb", "peak_rss_mb", "load_1min",
]
# Markdown table: (column, header, format).
TABLE = [
    ("model", "model", "{}"),
    ("params", "params (M)", "{:.2f}"),
    ("gflops", "GFLOPs", "{:.2f}"),
    ("weights_fp32_mb", "fp32 MB", "{:.1f}"),
    ("weights_fp16_mb", "fp16 MB", "{:.1f}"),
    ("latency_median_ms", "median ms", "{:.0f}"),
    ("latency_min_ms", "min ms", "{:.0f}"),
    ("latency_max_ms", "max ms", "{:.0f}"),
    ("peak_memory_mb", "peak mem MB", "{:.0f}"),
    ("load_1min", "load", "{:.1f}"),
]


def _status_kb(field):
    """Read a ``VmRSS``/``VmHWM`` line of /proc/self/status in kB, or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Reset the kernel's peak-RSS counter to the current RSS (Linux >= 4.0); True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def warm_up_runtime():
    """Run a few tiny ops so torch's lazily initialised CPU runtime (thread pool,
    kernels) is resident before the memory baseline is taken; otherwise its
    tens of MB would be charged to the first model call."""
    with torch.inference_mode():
        features = torch.randn(1, 8, 16, 16)
        torch.nn.functional.conv2d(features, torch.randn(8, 8, 3, 3), padding=1)
        torch.nn.functional.conv2d(features, torch.randn(8, 1, 3, 3), padding=1, groups=8)
        torch.nn.functional.interpolate(features, size=(32, 32), mode="bilinear", align_corners=False)


def measure_model(name, size=512, threads=2, repeats=10, warmup=3, num_classes=14):
    """Measure one model in this process; return a dict with the keys of ``COLUMNS`` but ``load_1min``.

    Call it in a fresh process for an honest ``peak_memory_mb`` (``measure_in_subprocess``
    does, through ``lowpower bench models --measure-one NAME``).

    Example:
        >>> row = measure_model("cunet", size=64, threads=1, repeats=2, warmup=1)
        >>> sorted(row) == sorted(set(COLUMNS) - {"load_1min"})
        True
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = networks.create_model(name, num_classes=num_classes).eval()
    images = torch.randn(1, 3, size, size)
    fp32_mb, fp16_mb = weights_megabytes(model)
    warm_up_runtime()
    gc.collect()

    reset = _reset_peak_rss()
    rss_before = _status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = time.perf_counter()
            model(images)
            elapsed = time.perf_counter() - start
            if index >= warmup:
                timings.append(elapsed * 1000.0)
    if reset and rss_before is not None:
        peak_kb = _status_kb("VmHWM")
        peak_memory = (peak_kb - rss_before) * 1024 / MB
    else:  # no resettable counter: rise of the lifetime peak (may read 0 if building peaked higher)
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_memory = (peak_kb - maxrss_before) * 1024 / MB

    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": count_flops(model, images) / 1e9,
        "weights_fp32_mb": fp32_mb,
        "weights_fp16_mb": fp16_mb,
        "latency_median_ms": statistics.median(timings),
        "latency_min_ms": min(timings),
        "latency_max_ms": max(timings),
        "peak_memory_mb": peak_memory,
        "peak_rss_mb": peak_kb * 1024 / MB,
    }


def measure_in_subprocess(name, size, threads, repeats, warmup, num_classes):
    """Run :func:`measure_model` in a fresh interpreter; return its row, or raise RuntimeError."""
    root = str(REPO_ROOT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "lowpower", "bench", "models", "--measure-one", name, "--size", str(size),
               "--threads", str(threads), "--repeats", str(repeats), "--warmup", str(warmup),
               "--num-classes", str(num_classes)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    if result.returncode != 0:
        raise RuntimeError("measuring {} failed (exit {}):\n{}".format(name, result.returncode, result.stderr[-2000:]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def format_row(row):
    """Markdown cells for one result row (``error`` rows show the message)."""
    if "error" in row:
        return [row["model"], "error: " + row["error"].strip().splitlines()[-1]] + [""] * (len(TABLE) - 2)
    cells = []
    for key, _, fmt in TABLE:
        value = row[key] / 1e6 if key == "params" else row[key]
        cells.append(fmt.format(value))
    return cells


def markdown_table(rows):
    """Return the results as a markdown table.

    Example:
        >>> print(markdown_table([]).splitlines()[0])
        | model | params (M) | GFLOPs | fp32 MB | fp16 MB | median ms | min ms | max ms | peak mem MB | load |
    """
    lines = ["| " + " | ".join(header for _, header, _ in TABLE) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(TABLE) - 1)) + "|"]
    lines += ["| " + " | ".join(format_row(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def report(rows, command, started, load_before, load_after, args):
    """The markdown report: how it was measured, the table, what the columns mean."""
    out = io.StringIO()
    out.write("Measured {} with `{}`\n\n".format(started.strftime("%Y-%m-%d %H:%M %Z").strip(), command))
    out.write("CPU: {} ({} logical cores), {} thread(s); torch {}, Python {}; batch 1, {}x{} input, "
              "{} warm-up + {} timed calls per model; load average (1/5/15 min) before {}, after {}.\n\n".format(
                  cpu_name(), os.cpu_count(), args.threads, torch.__version__, platform.python_version(),
                  args.size, args.size, args.warmup, args.repeats, load_before, load_after))
    out.write(markdown_table(rows))
    out.write("\nGFLOPs: convolutions and matrix products counted by torch's FlopCounterMode "
              "(2 FLOPs per multiply-add). fp32/fp16 MB: state dict size (1 MB = 10^6 bytes). "
              "Latency: wall time of one forward call on this CPU. Peak mem: rise of the process's "
              "resident memory above its level before the first forward call (activations and "
              "workspace; weights not included). Load: 1-minute load average after the model's "
              "measurement (other processes share this machine).\n")
    return out.getvalue()


def check_reports(args):
    """Refuse ``--md`` / ``--csv`` before any model is measured: one file each, not over another without --force.

    Raises:
        OutputError: one line naming the file and the fix.
    """
    if args.md and args.csv and same_file(args.md, args.csv):
        raise OutputError("--md and --csv are both %s; give two files" % args.md)
    for path, flag in ((args.md, "--md"), (args.csv, "--csv")):
        if path:
            check_output(path, force=args.force, what=flag)


def run_models(args):
    names = networks.list_models() if not args.models else [n.strip() for n in args.models.split(",") if n.strip()]
    for name in names:
        networks.get_builder(name)  # ValueError listing the valid names
    check_reports(args)
    command = "lowpower bench models " + " ".join(args.argv)
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    rows = []
    progress = tqdm(names, desc="bench", unit="model", file=sys.stderr)
    for name in progress:
        progress.set_postfix_str(name)
        try:
            row = measure_in_subprocess(name, args.size, args.threads, args.repeats, args.warmup,
                                        args.num_classes)
            row["load_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            rows.append(row)
        except RuntimeError as exc:
            rows.append({"model": name, "error": str(exc)})
            tqdm.write(str(exc), file=sys.stderr)
    text = report(rows, command, started, load_before, load_average(), args)
    print(text)
    if args.md:
        with atomic_output(args.md) as temp:
            temp.write_text(text)
    if args.csv:
        write_csv(args.csv, rows, COLUMNS + ["error"])
    return 1 if any("error" in row for row in rows) else 0


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="lowpower bench models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=SIDE, default=512, help="square input side, 8..2048 (default 512)")
    parser.add_argument("--threads", type=THREADS, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=CALLS, default=10, help="timed calls per model (default 10)")
    parser.add_argument("--warmup", type=WARMUP, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--num-classes", type=NUM_CLASSES, default=14, help="output classes (default 14)")
    parser.add_argument("--models", default="", help="comma-separated names (default: all registered)")
    parser.add_argument("--md", help="also write the markdown report here")
    parser.add_argument("--csv", help="also write the raw numbers here")
    add_force_argument(parser, help="replace an existing --md or --csv file")
    # The fresh interpreter of measure_in_subprocess: one model in this process, a JSON line out.
    parser.add_argument("--measure-one", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv=None):
    """``lowpower bench models``: returns the exit status (1 when a model failed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.measure_one:
        print(json.dumps(measure_model(args.measure_one, args.size, args.threads, args.repeats, args.warmup,
                                       args.num_classes)))
        return 0
    return run_models(args)
