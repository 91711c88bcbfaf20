"""The fixed-point study: validation mean Dice of a checkpoint over weight and activation bit widths.

    lowpower quantize study runs/demo/best.pt --weight-bits 2,4,6,8 --act-bits 4,6,8,16 --out runs/fixed_point
    lowpower quantize study runs/demo/best.pt --scheme lsq --edge-bits 8 --weight-bits 4 --act-bits 6 \\
        --qat-epochs 12 --out runs/fixed_point

For every (weight bits, activation bits) pair the checkpoint's network is fake-quantized with the
fixed-point quantizer of :mod:`lowpower.compress.quantize.fixed_point` (every weight and every activation,
BatchNorm folded first), its activation ranges are calibrated on training batches, and it is scored on
the validation split by the referee's rule (``lowpower.train.engine.validate_ranks``). With
``--qat-epochs N`` each pair is instead trained for N epochs with the quantizer in place by train.py
itself (``study_train``: a ``quant.fixed_point`` run from the checkpoint's weights in OUT/runs/), and
the fp32 row is trained for the same N epochs without one. An fp32 row comes first. Outputs in
``--out``: ``study.csv`` (rewritten atomically as each pair finishes), ``study.md`` and ``study.png``
(Dice against weight memory, one line per scheme).

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
from lowpower.compress.quantize import fixed_point_train, study_train
from lowpower.compress.quantize.fixed_point import FLOAT_BITS, SCHEMES, FixedPointModel
from lowpower.compress.quantize.study_files import check_outputs, read_rows, row_key, write_reports, write_rows
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.data.build import build_loaders, ensure_synthetic
from lowpower.safe.bounds import bounded, bounded_list
from lowpower.safe.load import sha256_of
from lowpower.safe.write import add_force_argument
from lowpower.train.distributed import pick_device
from lowpower.train.engine import validate_ranks

PROG = "lowpower quantize study"
TRAINED_BITS = 16  # the widest quant.weight_bits / quant.act_bits a training run takes

# 2 bits are a sign and one magnitude bit, the fewest a signed fixed-point number has; 32 is float.
bit_list = bounded_list(int, 2, FLOAT_BITS, "a fixed-point width has a sign bit and at least one more, "
                        "and %d bits is float" % FLOAT_BITS)


def bit_pairs(text):
    """``4/6,8/8`` -> [(4, 6), (8, 8)], each width 2..32 (argparse type).

    Example:
        >>> bit_pairs("4/6, 8/8")
        [(4, 6), (8, 8)]
    """
    pairs = []
    for item in text.split(","):
        weight, slash, act = item.strip().partition("/")
        if not slash:
            raise argparse.ArgumentTypeError("%r is not WEIGHT/ACT bits, e.g. 4/6" % item.strip())
        pairs.append((bit_list(weight)[0], bit_list(act)[0]))
    return pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fixed-point weight/activation bit sweep of a checkpoint (arXiv 1908.01073): "
        "fake-quantize every weight and activation, optionally fine-tune, score val mean Dice by the "
        "referee's rule; writes study.csv, study.md and study.png. Rerun the same command to continue.")
    parser.add_argument("checkpoint", help="float checkpoint written by train.py (e.g. runs/demo/best.pt)")
    parser.add_argument("--weight-bits", type=bit_list, default=[2, 4, 6, 8], help="2..32, default 2,4,6,8")
    parser.add_argument("--act-bits", type=bit_list, default=[4, 6, 8, 16], help="2..32, default 4,6,8,16")
    parser.add_argument("--qat-epochs", default=0,
                        type=bounded(int, 0, 100, "epochs of training per bit pair; more than 100 per pair is "
                                     "a run of its own (train.py with quant.fixed_point), not a study step"),
                        help="train each pair (and fp32) this many epochs from the checkpoint with train.py, "
                             "quantizer in place, runs in OUT/runs/; 0..100 (default 0: calibration only)")
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
    parser.add_argument("--edge-bits", default=None, type=bounded(int, 2, FLOAT_BITS, "an edge width is a "
                        "fixed-point width, or 32 for float"),
                        help="width of the first and last layers' weights and activations (e.g. 8; 32 keeps them "
                             "float, as the paper's authors did); default: the same as every layer")
    parser.add_argument("--pairs", default=None, type=bit_pairs,
                        help="WEIGHT/ACT bit pairs to measure instead of the --weight-bits x --act-bits grid, "
                             "e.g. 4/6,4/8,6/6,8/8")
    parser.add_argument("--no-fold-bn", action="store_true",
                        help="keep BatchNorm layers (quantizing their parameters) instead of folding them; "
                             "trained pairs (--qat-epochs) always keep BatchNorm, float")
    parser.add_argument("--data", default=None, help="data folder (default: the checkpoint config's data.root)")
    parser.add_argument("--out", default=None, help="output folder for study.csv, study.md and study.png "
                        "(default: CHECKPOINT_FOLDER/fixed_point); a study.csv of this study there is continued")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                        help="where to fine-tune and score (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_argument(parser, help="replace a study.csv in --out that this study did not write (or an older "
                       "study's), and a study.md or study.png without one (never the checkpoint)")
    args = parser.parse_args(argv)
    if args.pairs:
        args.weight_bits, args.act_bits = [w for w, _ in args.pairs], [a for _, a in args.pairs]
    if args.qat_epochs and max(args.weight_bits + args.act_bits) > TRAINED_BITS:
        parser.error("--qat-epochs trains pairs of at most %d bits (quant.weight_bits, quant.act_bits); the fp32 "
                     "row is trained anyway" % TRAINED_BITS)
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

    def __init__(self, args, state, out):
        self.args, self.out = args, out
        self.cfg = study_config(state, args)
        self.sha256 = sha256_of(args.checkpoint)
        self.data = str(ensure_synthetic(self.cfg).resolve())
        self.device = torch.device(pick_device(args.device))
        self.model = build_model(state).eval().to(self.device)
        self.progress = not args.no_progress
        self.train_set, self.train_loader, self.val_loader = build_loaders(self.cfg, progress=self.progress)
        side = self.cfg["data"]["input_size"]
        # Memory as a fixed-point device runs the network (BatchNorm folded), the same for every row,
        # so the fp32 row's figures are 32 bits x the same counts.
        reference = FixedPointModel(self.model, FLOAT_BITS, FLOAT_BITS, fold_bn=not args.no_fold_bn)
        self.params = sum(p.numel() for p in reference.model.parameters())
        self.act_elements = reference.activation_elements((3, side, side))

    def calibration_batches(self):
        """The first ``--calib-batches`` training batches (augmented as in training), images only."""
        return fixed_point_train.first_batches(self.train_loader, self.args.calib_batches, self.device)

    def fine_tune_lr(self):
        """``--lr``, or the config's ``train.lr`` / 10."""
        return float(self.args.lr if self.args.lr is not None else self.cfg["train"]["lr"] / 10)

    def settings(self, weight_bits, act_bits):
        """The settings that decide the numbers of a bit pair's row: its key in study.csv (strings).

        Without ``--qat-epochs`` the fp32 pair (32, 32) is neither calibrated nor trained, so its
        calibration, epochs and lr are empty and 0, and every such run of the study on this checkpoint
        shares its row; with it, the fp32 pair is trained for the same epochs as the others. Trained
        rows keep BatchNorm (``fold_bn`` 0: it cannot be folded while training moves it).
        """
        quantized = weight_bits < FLOAT_BITS or act_bits < FLOAT_BITS
        epochs = self.args.qat_epochs
        fold = "0" if epochs else str(int(not self.args.no_fold_bn))
        return {"checkpoint_sha256": self.sha256, "data": self.data, "fold_bn": fold,
                "calib_batches": str(self.args.calib_batches) if quantized else "", "qat_epochs": str(epochs),
                "lr": repr(self.fine_tune_lr()) if epochs else "", "weight_bits": str(weight_bits),
                "act_bits": str(act_bits), "scheme": self.args.scheme if quantized else "range",
                "edge_bits": str(self.args.edge_bits) if quantized and self.args.edge_bits else ""}

    def measure(self, weight_bits, act_bits):
        """One row: score and memory of a bit pair, calibrated only or trained (``--qat-epochs``)."""
        started = time.time()
        settings = self.settings(weight_bits, act_bits)
        if self.args.qat_epochs:
            summary, quantized = self.trained(settings)
        elif weight_bits >= FLOAT_BITS and act_bits >= FLOAT_BITS:
            summary, quantized = self.validate(self.model), None
        else:
            quantized = FixedPointModel(self.model, weight_bits, act_bits, fold_bn=not self.args.no_fold_bn,
                                        scheme=self.args.scheme, edge_bits=self.args.edge_bits)
            quantized.calibrate(self.calibration_batches())
            summary = self.validate(quantized.model)
        return {
            **settings, "checkpoint": str(self.args.checkpoint),
            "val_mean_dice": "%.5f" % summary["mean_dice"], "val_miou": "%.5f" % summary["miou"],
            **self.memory(weight_bits, act_bits, quantized),
            "seconds": "%.1f" % (time.time() - started),
        }

    def validate(self, model):
        return validate_ranks(model, self.val_loader, self.device, self.cfg, progress=self.progress)

    def trained(self, settings):
        """(val scores after the last epoch, a FixedPointModel for the memory figures, None for fp32) of a
        row trained by train.py (``study_train``)."""
        folder = study_train.run_folder(self.out, settings)
        state = study_train.train_pair(self.cfg, settings, folder, self.args.checkpoint, self.args.device,
                                       self.progress)
        if study_train.is_float(settings):
            return state["metrics"], None
        # Memory as a device runs the trained network: BatchNorm folded into the convs, the weights at
        # their widths, the biases left float (32 bits) as training kept them.
        pair = fixed_point_train.settings_of(state["config"])
        return state["metrics"], FixedPointModel(self.model, pair["weight_bits"], pair["act_bits"], fold_bn=True,
                                                 scheme=pair["scheme"], edge_bits=pair["edge_bits"],
                                                 weights_only=True)

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
    grid = args.pairs or [(w, a) for w in args.weight_bits for a in args.act_bits]
    for bits in [(FLOAT_BITS, FLOAT_BITS)] + grid:
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
    study = Study(args, state, out)
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
