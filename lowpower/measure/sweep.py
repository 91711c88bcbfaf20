"""Dice and CPU time against model input size for one trained checkpoint.

    lowpower bench sweep runs/demo/best.pt
    lowpower bench sweep runs/demo/best.pt --sizes 128,192,256,288,384,512 --split val --out runs/demo/sweep

For every input size the checkpoint's network is scored on the split exactly as ``python test.py
--input-size N`` scores it (the referee's per-image mean Dice, with the checkpoint
config's post-processing, eval.min_class_area), then timed: fp32, batch 1, forward plus post-processing
(upsampling to the scored size, argmax, small-class removal) per image, after warm-up calls, under
torch.inference_mode, the median over the images. Reading and decoding files are not timed.

The times are THIS machine's CPU (named in the output), not the Jetson Nano the referee uses: read
them as relative costs between sizes. Writes OUT/sweep.csv, OUT/sweep.png (Dice and ms/image
against input size) and OUT/sweep_args.json (the resolved arguments); OUT defaults to RUN/sweep/
next to the checkpoint. A rerun replaces an earlier sweep's files there; a sweep.csv the sweep did not
write is replaced only with ``--force``, and OUT is never the checkpoint or the data folder. Sizes
are 8..2048 pixels (``lowpower.measure.limits``: memory grows with the side squared).
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lowpower.checkpoint import CheckpointError, build_model, kind_of, load_checkpoint
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_dataset, data_root
from lowpower.measure.limits import MAX_SIDE, MIN_SIDE, SIDES, THREADS, WARMUP
from lowpower.measure.report import check_result_folder, cpu_name, pyplot, save_figure, write_csv
from lowpower.safe.bounds import bounded
from lowpower.safe.write import add_force_argument, atomic_output
from lowpower.train.engine import evaluate, predict_masks, summary_metrics

PROG = "lowpower bench sweep"
DEFAULT_SIZES = "128,192,256,288,384,512"
RESULTS = ("sweep.csv", "sweep.png", "sweep_args.json")
# The timed images of every size are decoded into memory before the clock starts.
TIME_IMAGES = bounded(int, 1, 200, "the timed images are held in memory together, per size: 200 at 512x512 "
                      "take 0.6 GB, and the median settles long before")
COLUMNS = ["input_size", "mean_dice", "miou", "ms_per_image", "forward_ms", "dice_per_second", "images", "timed_images"]


class SweepError(ValueError):
    """A size the network cannot run at, or timing that failed; the message is one line."""


def parse_sizes(text):
    """``"128,256"`` -> ``[128, 256]``: distinct input sides of 8..2048 pixels, in the order given (argparse type).

    Example:
        >>> parse_sizes("256, 128")
        [256, 128]
    """
    if not str(text).strip(" ,"):
        raise argparse.ArgumentTypeError("%r is empty; give input sides such as %s" % (text, DEFAULT_SIZES))
    sizes = SIDES(text)
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError("%r: the sizes must be distinct" % text)
    return sizes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a train.py checkpoint (best.pt or last.pt)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, type=parse_sizes,
                        help="comma-separated input sides the model sees, each %d..%d (default %s)"
                             % (MIN_SIDE, MAX_SIDE, DEFAULT_SIZES))
    parser.add_argument("--split", default="val", choices=["train", "val", "test"], help="split to score (default val)")
    parser.add_argument("--data", help="data folder (default: the checkpoint's data.root)")
    parser.add_argument("--out", help="folder for sweep.csv, sweep.png, sweep_args.json (default RUN/sweep/); "
                                      "an earlier sweep's files there are replaced")
    parser.add_argument("--warmup", type=WARMUP, default=3, help="untimed calls per size before timing (default 3)")
    parser.add_argument("--time-images", type=TIME_IMAGES, default=50,
                        help="time at most this many images per size, the first ones of the split (default 50)")
    parser.add_argument("--threads", type=THREADS, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_argument(parser, help="replace a sweep.csv (and sweep.png, sweep_args.json) in --out that a sweep "
                                    "did not write")
    return parser.parse_args(argv)


def load_config(checkpoint):
    """The checkpoint's state and run config; a checkpoint without a config is a one-line error."""
    state = load_checkpoint(checkpoint)
    cfg = state.get("config")
    if not cfg:
        raise ConfigError("%s has no config (not written by train.py); cannot tell its data set" % checkpoint)
    cfg["data"]["cache"] = False  # each size reads every file once; a cache would only cost memory
    if kind_of(state).cpu_only:  # int8 kernels: no AMP, no channels-last, as lowpower.train.tester scores it
        cfg["train"]["amp"] = False
        cfg["train"]["channels_last"] = False
    return state, cfg


def timing_batches(dataset, channels_last, limit):
    """Up to ``limit`` (image batch of 1, scored size) pairs, read and transformed before any clock starts,
    so only what the shipped program does per image after decoding is measured."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    samples = [dataset[index] for index in range(min(limit, len(dataset)))]
    return [(image[None].contiguous(memory_format=memory_format), mask.shape[-2:]) for image, mask in samples]


@torch.inference_mode()
def time_in_turns(timers, min_class_area, warmup, progress):
    """Median seconds (total, forward alone) per size of forward + post-processing, batch 1, CPU.

    The sizes take turns image by image (size A, B, C on image 1, then on image 2, ...), so a burst of
    load on a shared machine hits every size alike instead of one size's whole window. Warm-up calls
    come first because the first calls pay for allocator growth and oneDNN kernel selection.

    Args:
        timers: per size, ``(model, batches)`` with batches from ``timing_batches``.
        min_class_area: the post-processing's small-class threshold.
        warmup: calls per size before timing.
        progress: show a tqdm bar over images.

    Returns:
        Per size, ``(median total s, median forward s)``.
    """
    for model, batches in timers:
        for _ in range(warmup):
            predict_masks(model(batches[0][0]), batches[0][1], min_class_area)
    totals, forwards = [[] for _ in timers], [[] for _ in timers]
    count = min(len(batches) for _, batches in timers)
    for index in tqdm(range(count), desc="time", unit="img", disable=not progress, leave=False, file=sys.stderr):
        for turn, (model, batches) in enumerate(timers):
            image, size = batches[index]
            started = time.perf_counter()
            logits = model(image)
            # Split the clock too: at small inputs upsampling to 512 can cost more than the network.
            forwarded = time.perf_counter()
            predict_masks(logits, size, min_class_area)
            totals[turn].append(time.perf_counter() - started)
            forwards[turn].append(forwarded - started)
    # Medians, not means: one scheduler hiccup on a shared machine must not move a row.
    return [(statistics.median(t), statistics.median(f)) for t, f in zip(totals, forwards)]


def sweep_size(state, cfg, size, args, root):
    """One table row's scores at ``size`` (lowpower.train.tester's own path), and what timing it needs.

    Returns:
        ``(row, (model, batches))``; ``time_in_turns`` fills the row's times later.
    """
    cfg = json.loads(json.dumps(cfg))  # each size gets its own copy; the transforms read input_size
    cfg["data"]["input_size"] = size
    dataset = build_dataset(cfg, args.split, train=False, root=root)
    if len(dataset) == 0:
        raise DataError("the %s split of %s has no images" % (args.split, root))
    loader = DataLoader(dataset, batch_size=cfg["eval"]["batch_size"], shuffle=False, num_workers=0)
    channels_last = cfg["train"].get("channels_last", False)
    model = build_model(state)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    min_class_area = cfg["eval"].get("min_class_area", 0.0)
    try:
        # The same call and arguments as lowpower.train.tester, so the Dice here is the Dice it prints.
        meter = evaluate(model, loader, torch.device("cpu"), cfg["data"]["num_classes"], amp=cfg["train"]["amp"],
                         progress=not args.no_progress, channels_last=channels_last,
                         min_class_area=min_class_area)
    except RuntimeError as error:  # a shape the network cannot take (odd strides, too small for its depth)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SweepError("input size %d does not run with %s: %s" % (size, state["arch"], first[:200])) from None
    scores = summary_metrics(meter.summary())
    batches = timing_batches(dataset, channels_last, args.time_images)
    row = {"input_size": size, "mean_dice": scores["mean_dice"], "miou": scores["miou"],
           "images": scores["images"], "timed_images": len(batches)}
    return row, (model, batches)


def add_times(rows, timers, min_class_area, args):
    """Time every size in turns and put ms/image, forward ms and Dice per second into the rows."""
    for row, (seconds, forward) in zip(rows, time_in_turns(timers, min_class_area, args.warmup,
                                                          not args.no_progress)):
        row.update(ms_per_image=1000.0 * seconds, forward_ms=1000.0 * forward,
                   dice_per_second=row["mean_dice"] / seconds)


def format_table(rows):
    """Markdown table of the rows, ready for a README.

    Example:
        >>> print(format_table([{"input_size": 64, "mean_dice": 0.5, "miou": 0.4, "ms_per_image": 2.0,
        ...     "forward_ms": 1.5, "dice_per_second": 250.0, "images": 3, "timed_images": 3}]))  # doctest: +SKIP
    """
    lines = ["| input size | mean Dice (referee) | mIoU | ms/image (CPU, median) | of which forward | Dice / s (CPU) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append("| %d | %.4f | %.4f | %.1f | %.1f | %.2f |" % (
            row["input_size"], row["mean_dice"], row["miou"], row["ms_per_image"], row["forward_ms"],
            row["dice_per_second"]))
    return "\n".join(lines)


def plot(path, rows, title):
    """Dice (left axis) and ms/image (right axis) against input size, in one PNG."""
    plt = pyplot()

    sizes = [row["input_size"] for row in rows]
    figure, dice_axis = plt.subplots(figsize=(7, 4))
    dice_axis.plot(sizes, [row["mean_dice"] for row in rows], marker="o", color="tab:blue")
    dice_axis.set_xlabel("model input size (pixels per side)")
    dice_axis.set_ylabel("mean Dice (referee rule)", color="tab:blue")
    dice_axis.set_ylim(0, 1)
    dice_axis.set_xticks(sizes)
    dice_axis.grid(alpha=0.3)
    time_axis = dice_axis.twinx()
    time_axis.plot(sizes, [row["ms_per_image"] for row in rows], marker="s", color="tab:red")
    time_axis.set_ylabel("ms / image (this CPU, not the Nano)", color="tab:red")
    time_axis.set_ylim(bottom=0)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)


def run(args):
    sizes = args.sizes
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "sweep"
    # Before any work: never onto the checkpoint or the data, a user's sweep.csv only with --force.
    check_result_folder(out, inputs=[args.checkpoint, args.data], force=args.force, results=RESULTS, header=COLUMNS)
    state, cfg = load_config(args.checkpoint)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else data_root(cfg)
    machine = "%s, %d torch thread(s); torch %s" % (cpu_name(), torch.get_num_threads(), torch.__version__)
    scored = [sweep_size(state, cfg, size, args, root)
              for size in tqdm(sizes, desc="sizes", unit="size", disable=args.no_progress, file=sys.stderr)]
    rows = [row for row, _ in scored]
    try:
        add_times(rows, [timer for _, timer in scored], cfg["eval"].get("min_class_area", 0.0), args)
    except RuntimeError as error:
        raise SweepError("timing failed with %s: %s" % (state["arch"], str(error).strip()[:200])) from None
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sweep.csv", rows, COLUMNS)
    plot(out / "sweep.png", rows, "%s, %s split\n%s" % (args.checkpoint, args.split, machine))
    resolved = dict(vars(args), sizes=sizes, data=str(root), out=str(out), arch=state["arch"],
                    min_class_area=cfg["eval"].get("min_class_area", 0.0), cpu=machine,
                    python=platform.python_version())
    with atomic_output(out / "sweep_args.json") as temp:
        temp.write_text(json.dumps(resolved, indent=1))
    print("%s on the %s split of %s (%d images; min_class_area %s)" % (
        args.checkpoint, args.split, root, rows[0]["images"], resolved["min_class_area"]))
    print("times: fp32, batch 1, forward + post-processing, median of %d image(s) after %d warm-up call(s), the "
          "sizes taking turns image by image, on THIS "
          "machine's CPU (%s), not the Jetson Nano" % (rows[0]["timed_images"], args.warmup, machine))
    print(format_table(rows))
    print("wrote %s, %s, %s" % (out / "sweep.csv", out / "sweep.png", out / "sweep_args.json"))
    return rows


def main(argv=None):
    """Command-line entry point; returns the exit status (2 with a one-line message on bad input).

    Example:
        >>> main(["runs/demo/best.pt", "--sizes", "64,128", "--no-progress"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    try:
        run(args)
    except (SweepError, ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        message = " ".join(str(error).split())  # one line, whatever the underlying message held
        print("%s: error: %s" % (PROG, message), file=sys.stderr)
        return 2
    return 0
