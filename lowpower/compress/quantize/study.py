"""The fixed-point study: validation mean Dice of a checkpoint over weight and activation bit widths.

    lowpower quantize study runs/demo/best.pt --weight-bits 2,4,6,8 --act-bits 4,6,8,16 \\
        --qat-epochs 2 --out runs/fixed_point

For every (weight bits, activation bits) pair the checkpoint's network is fake-quantized with the
fixed-point quantizer of :mod:`lowpower.compress.quantize.fixed_point` (every weight and every activation),
its activation ranges are calibrated on training batches, it is optionally fine-tuned for a few
epochs (quantization-aware, the trainer's own ``train_one_epoch`` on the checkpoint's data config)
and scored on the validation split by the referee's rule (``lowpower.train.engine.validate_ranks``).
An fp32 row comes first. Outputs in ``--out``: ``study.csv`` (rewritten atomically as each pair
finishes), ``study.md`` and ``study.png`` (Dice against weight bits, one line per activation width).

``study.csv`` is the study's cache. A row is keyed by the sha256 of the checkpoint file and every
setting that changes its numbers (data folder, BatchNorm folding, calibration batches, fine-tune
epochs and learning rate, the bit widths), so a rerun of the same command continues a killed study,
and a study of another checkpoint (or other settings) into the same folder adds its own rows beside
the others, never reusing them. A ``study.csv`` this study did not write, and a ``study.md`` or
``study.png`` without one, are replaced only with ``--force``; the checkpoint itself never. int8 and
QAT checkpoints are refused: the study fake-quantizes a float network.

Example:
    >>> main(["runs/demo/best.pt", "--weight-bits", "4", "--act-bits", "6", "--out", "/tmp/fp"])  # doctest: +SKIP
    0
"""
import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lowpower.checkpoint import CheckpointError, build_model, kind_of, load_checkpoint
from lowpower.compress.quantize.fixed_point import FLOAT_BITS, SCHEMES, FixedPointModel
from lowpower.compress.quantize.study_files import check_outputs, read_rows, row_key, write_reports, write_rows
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_loaders, ensure_synthetic
from lowpower.safe.bounds import bounded, bounded_list
from lowpower.safe.load import sha256_of
from lowpower.safe.write import add_force_argument
from lowpower.train.distributed import pick_device
from lowpower.train.engine import build_optimizer, poly_with_warmup, train_one_epoch, validate_ranks
from lowpower.train.losses import criterion_from_config

PROG = "lowpower quantize study"

# 2 bits are a sign and one magnitude bit, the fewest a signed fixed-point number has; 32 is float.
bit_list = bounded_list(int, 2, FLOAT_BITS, "a fixed-point width has a sign bit and at least one more, "
                        "and %d bits is float" % FLOAT_BITS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fixed-point weight/activation bit sweep of a checkpoint (arXiv 1908.01073): "
        "fake-quantize every weight and activation, optionally fine-tune, score val mean Dice by the "
        "referee's rule; writes study.csv, study.md and study.png. Rerun the same command to continue.")
    parser.add_argument("checkpoint", help="float checkpoint written by train.py (e.g. runs/demo/best.pt)")
    parser.add_argument("--weight-bits", type=bit_list, default=[2, 4, 6, 8], help="2..32, default 2,4,6,8")
    parser.add_argument("--act-bits", type=bit_list, default=[4, 6, 8, 16], help="2..32, default 4,6,8,16")
    parser.add_argument("--qat-epochs", default=0,
                        type=bounded(int, 0, 100, "epochs of fine-tune per bit pair; more than 100 per pair is "
                                     "a training run (train.py with quant settings), not a study step"),
                        help="quantization-aware fine-tune epochs per pair, 0..100 (default 0: calibration only)")
    parser.add_argument("--lr", default=None,
                        type=bounded(float, 1e-9, 1.0, "a learning rate is positive, and a fine-tune of "
                                     "trained weights above 1 diverges"),
                        help="fine-tune learning rate, decayed to 0 (default: the config's train.lr / 10)")
    parser.add_argument("--calib-batches", default=4,
                        type=bounded(int, 1, 64, "the batches are held in memory together: 64 batches of 8 "
                                     "images at 512x512 take 1.6 GB"),
                        help="training batches that set the activation ranges, 1..64 (default 4)")
    parser.add_argument("--scheme", default="range", choices=SCHEMES,
                        help="the quantizers: range (the split of each tensor from its range, the default), paper "
                             "(the authors' quantizer and splits, arXiv 1908.01073), lsq (learned step sizes, "
                             "Esser et al. 2020; per-channel weight steps)")
    parser.add_argument("--edge-bits", default=None, type=bounded(int, 2, FLOAT_BITS - 1, "an edge width is a "
                        "fixed-point width below float"),
                        help="width of the first and last layers' weights and activations (e.g. 8); default: "
                             "the same as every layer")
    parser.add_argument("--no-fold-bn", action="store_true",
                        help="keep BatchNorm layers (quantizing their parameters) instead of folding them")
    parser.add_argument("--data", default=None, help="data folder (default: the checkpoint config's data.root)")
    parser.add_argument("--out", default=None, help="output folder for study.csv, study.md and study.png "
                        "(default: CHECKPOINT_FOLDER/fixed_point); a study.csv of this study there is continued")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where to fine-tune and score (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_argument(parser, help="replace a study.csv in --out that this study did not write (or an older "
                       "study's), and a study.md or study.png without one (never the checkpoint)")
    args = parser.parse_args(argv)
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


def refuse_quantized(path, state):
    """Refuse an int8 or QAT checkpoint in one line: the study fake-quantizes a float network itself.

    Example:
        >>> refuse_quantized("runs/demo/int8_ptq.pt", load_checkpoint("runs/demo/int8_ptq.pt"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        lowpower.checkpoint.CheckpointError: runs/demo/int8_ptq.pt is an int8 checkpoint, but ...
    """
    kind = kind_of(state).name
    if kind == "int8":
        raise CheckpointError("%s is an int8 checkpoint, but the study fake-quantizes a float network; give the "
                              "float checkpoint it was made from (e.g. the run's best.pt)" % path)
    if kind == "qat":
        raise CheckpointError("%s is a QAT training state, already fake-quantized; give a float checkpoint "
                              "(e.g. best.pt of a float run)" % path)


class Study:
    """One checkpoint's sweep: its model, data, loss and the memory of the fp32 network.

    Args:
        args: the parsed arguments.
        state: the checkpoint dict (a float or pruned one: :func:`refuse_quantized`).
    """

    def __init__(self, args, state):
        self.args = args
        self.cfg = study_config(state, args)
        self.sha256 = sha256_of(args.checkpoint)
        self.data = str(ensure_synthetic(self.cfg).resolve())
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

    def fine_tune_lr(self):
        """``--lr``, or the config's ``train.lr`` / 10."""
        return float(self.args.lr if self.args.lr is not None else self.cfg["train"]["lr"] / 10)

    def settings(self, weight_bits, act_bits):
        """The settings that decide the numbers of a bit pair's row: its key in study.csv (strings).

        The fp32 pair (32, 32) is neither calibrated nor fine-tuned, so its calibration, epochs and lr
        are empty and 0, and every run of the study on this checkpoint shares its row.
        """
        quantized = weight_bits < FLOAT_BITS or act_bits < FLOAT_BITS
        qat_epochs = self.args.qat_epochs if quantized else 0
        return {"checkpoint_sha256": self.sha256, "data": self.data, "fold_bn": str(int(not self.args.no_fold_bn)),
                "calib_batches": str(self.args.calib_batches) if quantized else "", "qat_epochs": str(qat_epochs),
                "lr": repr(self.fine_tune_lr()) if qat_epochs else "", "weight_bits": str(weight_bits),
                "act_bits": str(act_bits), "scheme": self.args.scheme if quantized else "range",
                "edge_bits": str(self.args.edge_bits) if quantized and self.args.edge_bits else ""}

    def fine_tune(self, model):
        """``--qat-epochs`` epochs of the trainer's loop on the fake-quantized ``model``."""
        train = dict(self.cfg["train"])
        train["lr"] = self.fine_tune_lr()
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
            model, quantized = self.model, None
        else:
            quantized = FixedPointModel(self.model, weight_bits, act_bits, fold_bn=not self.args.no_fold_bn,
                                        scheme=self.args.scheme, edge_bits=self.args.edge_bits)
            quantized.calibrate(self.calibration_batches())
            if self.args.qat_epochs:
                self.fine_tune(quantized.model)
                qat_epochs = self.args.qat_epochs
            model = quantized.model
        summary = validate_ranks(model, self.val_loader, self.device, self.cfg, progress=self.progress)
        settings = self.settings(weight_bits, act_bits)
        assert int(settings["qat_epochs"]) == qat_epochs, "the key says what was measured"
        return {
            **settings, "checkpoint": str(self.args.checkpoint),
            "val_mean_dice": "%.5f" % summary["mean_dice"], "val_miou": "%.5f" % summary["miou"],
            **self.memory(weight_bits, act_bits, quantized),
            "seconds": "%.1f" % (time.time() - started),
        }


    def memory(self, weight_bits, act_bits, quantized):
        """The memory columns of a row: the fp32 row's from the counts, a quantized row's from its model
        (edge layers at their own width)."""
        side = self.cfg["data"]["input_size"]
        weight = quantized.weight_memory_bits() if quantized else weight_bits * self.params
        act = quantized.activation_memory_bits((3, side, side)) if quantized else act_bits * self.act_elements
        return {"weight_memory_kib": "%.2f" % (weight / 8192),
                "weight_memory_ratio": "%.3f" % (FLOAT_BITS * self.params / weight),
                "act_memory_kib_per_image": "%.2f" % (act / 8192),
                "act_memory_ratio": "%.3f" % (FLOAT_BITS * self.act_elements / act)}


def sweep_keys(study, args):
    """The keys of this sweep's rows, fp32 first, and the bit pair of each: ``(keys, {key: (w, a)})``."""
    pairs = {}
    for bits in [(FLOAT_BITS, FLOAT_BITS)] + [(w, a) for w in args.weight_bits for a in args.act_bits]:
        pairs.setdefault(row_key(study.settings(*bits)), bits)
    return list(pairs), pairs


def run(args):
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "fixed_point"
    own = check_outputs(args, out)  # before any work: a refusal costs nothing
    state = load_checkpoint(args.checkpoint)
    refuse_quantized(args.checkpoint, state)
    csv_path = out / "study.csv"
    rows = read_rows(csv_path) if own else []
    done = {row_key(row): row for row in rows}
    study = Study(args, state)
    keys, pairs = sweep_keys(study, args)
    todo = [key for key in keys if key not in done]
    if len(todo) < len(keys):
        print("%s: %d of %d rows already in %s; measuring the other %d" % (PROG, len(keys) - len(todo), len(keys),
                                                                          csv_path, len(todo)), file=sys.stderr)
    for key in tqdm(todo, desc="bit pairs", unit="pair", disable=args.no_progress, file=sys.stderr):
        row = study.measure(*pairs[key])
        baseline = done.get(keys[0], row)
        row["dice_drop"] = "%.5f" % (float(baseline["val_mean_dice"]) - float(row["val_mean_dice"]))
        rows.append(row)
        done[key] = row
        write_rows(csv_path, rows)
        write_reports(rows, keys, out, args.checkpoint)  # after each pair: a killed study keeps its reports
    if not todo:  # every row was already measured: the reports still show this sweep's
        write_reports(rows, keys, out, args.checkpoint)
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
