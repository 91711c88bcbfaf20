"""The fixed-point study: validation mean Dice of a checkpoint over weight and activation bit widths.

    lowpower quantize study runs/demo/best.pt --weight-bits 2,4,6,8 --act-bits 4,6,8,16 \\
        --qat-epochs 2 --out runs/fixed_point

For every (weight bits, activation bits) pair the checkpoint's network is fake-quantized with the
fixed-point quantizer of :mod:`lowpower.compress.quantize.fixed_point` (every weight and every activation),
its activation ranges are calibrated on training batches, it is optionally fine-tuned for a few
epochs (quantization-aware, the trainer's own ``train_one_epoch`` on the checkpoint's data config)
and scored on the validation split by the referee's rule (``lowpower.train.engine.validate_ranks``).
An fp32 row comes first. Outputs in ``--out``: ``study.csv`` (a row appended as each pair
finishes; rows already there are skipped on a rerun, so a killed study continues), ``study.md``
and ``study.png`` (Dice against weight bits, one line per activation width).

Example:
    >>> main(["runs/demo/best.pt", "--weight-bits", "4", "--act-bits", "6", "--out", "/tmp/fp"])  # doctest: +SKIP
    0
"""
import argparse
import copy
import csv
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lowpower.checkpoint import CheckpointError, build_model, load_checkpoint
from lowpower.compress.quantize.fixed_point import FLOAT_BITS, FixedPointModel
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_loaders, ensure_synthetic
from lowpower.measure.report import pyplot
from lowpower.train.distributed import pick_device
from lowpower.train.engine import build_optimizer, poly_with_warmup, train_one_epoch, validate_ranks
from lowpower.train.losses import criterion_from_config

PROG = "lowpower quantize study"
FIELDS = ["weight_bits", "act_bits", "qat_epochs", "val_mean_dice", "val_miou", "dice_drop",
          "weight_memory_kib", "weight_memory_ratio", "act_memory_kib_per_image", "act_memory_ratio",
          "seconds"]
KEY = ("weight_bits", "act_bits", "qat_epochs")


def bit_list(text):
    """``"2,4,6"`` -> [2, 4, 6]; widths from 2 to 32 (argparse type)."""
    try:
        bits = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a comma-separated list of integers, e.g. 2,4,6,8" % text) from None
    if not bits or any(b < 2 or b > FLOAT_BITS for b in bits):
        raise argparse.ArgumentTypeError("bit widths must be 2..32, got %r" % text)
    return bits


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fixed-point weight/activation bit sweep of a checkpoint (arXiv 1908.01073): "
        "fake-quantize every weight and activation, optionally fine-tune, score val mean Dice by the "
        "referee's rule; writes study.csv, study.md and study.png. Rerun the same command to continue.")
    parser.add_argument("checkpoint", help="float checkpoint written by train.py (e.g. runs/demo/best.pt)")
    parser.add_argument("--weight-bits", type=bit_list, default=[2, 4, 6, 8], help="default 2,4,6,8")
    parser.add_argument("--act-bits", type=bit_list, default=[4, 6, 8, 16], help="default 4,6,8,16")
    parser.add_argument("--qat-epochs", type=int, default=0,
                        help="quantization-aware fine-tune epochs per pair (default 0: calibration only)")
    parser.add_argument("--lr", type=float, default=None,
                        help="fine-tune learning rate, decayed to 0 (default: the config's train.lr / 10)")
    parser.add_argument("--calib-batches", type=int, default=4,
                        help="training batches that set the activation ranges (default 4)")
    parser.add_argument("--no-fold-bn", action="store_true",
                        help="keep BatchNorm layers (quantizing their parameters) instead of folding them")
    parser.add_argument("--data", default=None, help="data folder (default: the checkpoint config's data.root)")
    parser.add_argument("--out", default=None, help="output folder (default: CHECKPOINT_FOLDER/fixed_point)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where to fine-tune and score (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.qat_epochs < 0 or args.calib_batches < 1:
        parser.error("--qat-epochs must be >= 0 and --calib-batches >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu")
    return args


def study_config(state, args):
    """The checkpoint's run config, made fit for fake quantization: fp32 (no autocast), one process."""
    if not state.get("config"):
        raise ConfigError("%s has no config (not written by train.py); the study needs its data set"
                          % args.checkpoint)
    cfg = copy.deepcopy(state["config"])
    cfg["train"]["amp"] = False  # bf16/fp16 autocast would round the fixed-point grid away
    if args.data:
        cfg["data"]["root"] = str(Path(args.data).resolve())
    return cfg


def read_rows(path):
    """Rows of an existing study CSV, keyed by (weight bits, activation bits, qat epochs)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {tuple(int(row[k]) for k in KEY): row for row in csv.DictReader(handle)}


def append_row(path, row):
    """Append one row (header first in a new file), flushed to disk before returning."""
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def write_markdown(rows, path):
    """``study.md``: the CSV as a table, fp32 first."""
    lines = ["| weight bits | act bits | QAT epochs | val mean Dice | Dice - fp32 | weight memory KiB (x less) "
             "| activation memory KiB/image (x less) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| %s | %s | %s | %.4f | %+.4f | %.1f (%.1fx) | %.1f (%.1fx) |" % (
            row["weight_bits"], row["act_bits"], row["qat_epochs"], float(row["val_mean_dice"]),
            0.0 - float(row["dice_drop"]), float(row["weight_memory_kib"]), float(row["weight_memory_ratio"]),
            float(row["act_memory_kib_per_image"]), float(row["act_memory_ratio"])))
    path.write_text("\n".join(lines) + "\n")


def plot_rows(rows, path, title):
    """``study.png``: val mean Dice against weight bits, one line per activation width, fp32 dashed."""
    plt = pyplot()

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    quantized = [r for r in rows if int(r["weight_bits"]) < FLOAT_BITS or int(r["act_bits"]) < FLOAT_BITS]
    # One line per activation width and fine-tune length (a CSV may hold rows of several runs).
    for act, qat in sorted({(int(r["act_bits"]), int(r["qat_epochs"])) for r in quantized}):
        line = sorted((int(r["weight_bits"]), float(r["val_mean_dice"])) for r in quantized
                      if (int(r["act_bits"]), int(r["qat_epochs"])) == (act, qat))
        axes.plot([w for w, _ in line], [d for _, d in line], marker="o",
                  linestyle="-" if qat else ":", label="activations %d bit, QAT %d epochs" % (act, qat))
    for row in rows:
        if row not in quantized:
            axes.axhline(float(row["val_mean_dice"]), color="black", linestyle="--", label="fp32")
    axes.set_xlabel("weight bits")
    axes.set_ylabel("val mean Dice (referee rule)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class Study:
    """One checkpoint's sweep: its model, data, loss and the memory of the fp32 network."""

    def __init__(self, args):
        self.args = args
        state = load_checkpoint(args.checkpoint)
        self.cfg = study_config(state, args)
        ensure_synthetic(self.cfg)
        self.device = torch.device(pick_device(args.device))
        self.model = build_model(state).eval().to(self.device)
        self.progress = not args.no_progress
        self.train_set, self.train_loader, self.val_loader = build_loaders(self.cfg, progress=self.progress)
        self.criterion = None
        side = self.cfg["data"]["input_size"]
        # Memory as a fixed-point device runs the network (BatchNorm folded), the same for every row,
        # so the fp32 row's figures are 32 bits x the same counts.
        reference = FixedPointModel(self.model, FLOAT_BITS, FLOAT_BITS, fold_bn=not args.no_fold_bn)
        self.params = sum(p.numel() for p in reference.model.parameters())
        self.act_elements = reference.activation_elements((3, side, side))

    def calibration_batches(self):
        """The first ``--calib-batches`` training batches (augmented as in training), images only."""
        self.train_loader.sampler.set_position(0)
        batches = []
        for images, _ in self.train_loader:
            batches.append(images.to(self.device))
            if len(batches) == self.args.calib_batches:
                break
        return batches

    def fine_tune(self, model):
        """``--qat-epochs`` epochs of the trainer's loop on the fake-quantized ``model``."""
        train = dict(self.cfg["train"])
        train["lr"] = self.args.lr if self.args.lr is not None else train["lr"] / 10
        if self.criterion is None:
            self.criterion = criterion_from_config(self.cfg, self.train_set, self.device)
        torch.manual_seed(train["seed"])
        optimizer = build_optimizer(model, train)
        steps = len(self.train_loader) * self.args.qat_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_with_warmup(steps, 0, train["poly_power"]))
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        for epoch in range(self.args.qat_epochs):
            self.train_loader.sampler.set_position(epoch)
            train_one_epoch(model, self.train_loader, self.criterion, optimizer, scheduler, scaler, self.device,
                            epoch, clip_grad=train["clip_grad"], progress=self.progress,
                            channels_last=train["channels_last"])
        model.eval()

    def measure(self, weight_bits, act_bits):
        """One row: score (after calibration and the optional fine-tune) and memory of a bit pair."""
        started = time.time()
        qat_epochs = 0
        if weight_bits >= FLOAT_BITS and act_bits >= FLOAT_BITS:
            model = self.model
        else:
            quantized = FixedPointModel(self.model, weight_bits, act_bits, fold_bn=not self.args.no_fold_bn)
            quantized.calibrate(self.calibration_batches())
            if self.args.qat_epochs:
                self.fine_tune(quantized.model)
                qat_epochs = self.args.qat_epochs
            model = quantized.model
        summary = validate_ranks(model, self.val_loader, self.device, self.cfg, progress=self.progress)
        return {
            "weight_bits": weight_bits, "act_bits": act_bits, "qat_epochs": qat_epochs,
            "val_mean_dice": "%.5f" % summary["mean_dice"], "val_miou": "%.5f" % summary["miou"],
            "weight_memory_kib": "%.2f" % (weight_bits * self.params / 8192),
            "weight_memory_ratio": "%.3f" % (FLOAT_BITS / weight_bits),
            "act_memory_kib_per_image": "%.2f" % (act_bits * self.act_elements / 8192),
            "act_memory_ratio": "%.3f" % (FLOAT_BITS / act_bits),
            "seconds": "%.1f" % (time.time() - started),
        }


def write_reports(done, pairs, out, title):
    """``study.md`` and ``study.png`` from every row of the CSV: this sweep's in its order, then the
    rows earlier runs of the study left there (another fine-tune length, other bits)."""
    rows = [done[pair] for pair in pairs if pair in done] + [done[pair] for pair in sorted(done)
                                                             if pair not in pairs]
    write_markdown(rows, out / "study.md")
    plot_rows(rows, out / "study.png", title)


def run(args):
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "fixed_point"
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "study.csv"
    done = read_rows(csv_path)
    study = Study(args)
    pairs = [(FLOAT_BITS, FLOAT_BITS, 0)] + [(w, a, args.qat_epochs) for w in args.weight_bits for a in args.act_bits]
    todo = [pair for pair in pairs if pair not in done]
    if len(todo) < len(pairs):
        print("%s: %d of %d rows already in %s; measuring the other %d" % (PROG, len(pairs) - len(todo), len(pairs),
                                                                          csv_path, len(todo)), file=sys.stderr)
    title = "%s: fixed-point fake quantization, val split" % args.checkpoint
    for weight_bits, act_bits, qat in tqdm(todo, desc="bit pairs", unit="pair", disable=args.no_progress,
                                           file=sys.stderr):
        row = study.measure(weight_bits, act_bits)
        baseline = done.get((FLOAT_BITS, FLOAT_BITS, 0), row)
        row["dice_drop"] = "%.5f" % (float(baseline["val_mean_dice"]) - float(row["val_mean_dice"]))
        append_row(csv_path, row)
        done[(weight_bits, act_bits, qat)] = row
        write_reports(done, pairs, out, title)
    write_reports(done, pairs, out, title)
    print((out / "study.md").read_text())
    print("outputs: %s, %s, %s" % (csv_path, out / "study.md", out / "study.png"))
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as error:
        print("%s: error: %s" % (PROG, error), file=sys.stderr)
        return 2
