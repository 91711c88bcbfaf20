"""Post-training static int8 quantization of a train.py checkpoint.

    lowpower quantize ptq runs/demo/best.pt
    lowpower quantize ptq runs/demo/best.pt --calib 64 --engine qnnpack --out runs/demo/int8_qnnpack.pt

Steps: rebuild the float network, fuse every conv-bn(-relu) group, insert observers (histogram
observers on activations; per-channel weights where the engine supports them: x86, fbgemm,
onednn, not qnnpack), run CALIB training images through it with the evaluation preprocessing,
convert to int8 and write an int8 checkpoint: the float checkpoint's layout with the int8 state
dict as "model" and "quant": {"engine", "mode": "ptq", "per_channel"} (optimizer state dropped).

OUT is never CHECKPOINT; an existing OUT is replaced only with --force, and both are checked before
any work. OUT is written to a temporary file beside it and renamed into place.

`python test.py --checkpoint OUT` scores the int8 model on the CPU. Engines: x86 and onednn exist
in torch 2.x only; qnnpack is the engine of the Jetson's ARM cores. A missing engine falls back to
one this torch has, with a warning, and the file records the engine actually used.
"""
import argparse
import sys
from pathlib import Path

import torch

import networks
from lowpower.checkpoint import CheckpointError, kind_of, load_checkpoint, save_checkpoint
from lowpower.compress.quantize.calibrate import calibrate, calibration_loader
from lowpower.compress.quantize.kinds import QAT
from lowpower.config import ConfigError
from lowpower.data import DataError
from lowpower.safe import UserError
from lowpower.safe.bounds import bounded
from lowpower.safe.write import add_force_argument, check_output
from networks import quant

PROG = "lowpower quantize ptq"
ENGINES = ("x86", "qnnpack", "fbgemm", "onednn")
# Measured on the demo UNet (x86, 50 val images, fp32 0.7146): int8 val mean Dice 0.7147, 0.7199,
# 0.7228, 0.7187, 0.7195, 0.7176, 0.7217 for 1, 2, 4, 8, 16, 32, 64 images: flat from 2 on within
# +-0.003. 32 samples each of the 7 synthetic scene kinds several times for about 20 s on 2 cores.
DEFAULT_CALIB = 32
CALIB = bounded(int, 1, 4096, "calibration images; Dice is flat from 2 on (DEFAULT_CALIB), more only cost time")
# Training-only state that means nothing for an int8 model.
DROPPED_KEYS = ("optimizer", "scheduler", "scaler", "rng", "step_in_epoch", "epoch_loss")


class QuantizeError(ValueError):
    """A one-line, user-facing reason the checkpoint cannot be quantized."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a float train.py checkpoint (best.pt or last.pt)")
    parser.add_argument("--calib", type=CALIB, default=DEFAULT_CALIB, metavar="N",
                        help="training images for calibration, spread over the split, 1-4096 (default %d)"
                        % DEFAULT_CALIB)
    parser.add_argument("--engine", default="x86", choices=ENGINES,
                        help="quantized engine to calibrate and pack for (default x86, this CPU's fastest; "
                             "qnnpack for the Jetson's ARM cores)")
    parser.add_argument("--out", help="int8 checkpoint to write (default: int8_ptq.pt next to CHECKPOINT); "
                                      "never CHECKPOINT itself")
    add_force_argument(parser, "replace OUT when it exists (never allowed when it is CHECKPOINT)")
    parser.add_argument("--data", help="data folder (default: the checkpoint's data.root)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_quantizable(model, arch, path):
    """Raise QuantizeError naming the reason when ``model``'s class does not follow the int8 convention."""
    if getattr(model, "quantizable", False) and hasattr(model, "fuse_model"):
        return
    reason = getattr(model, "quantize_reason", "it declares no quantize support (quantizable = True, fuse_model)")
    raise QuantizeError("%s: network %r cannot be quantized: %s" % (path, arch, reason))


def float_checkpoint(path):
    """Load ``path`` and refuse one without float weights (int8: quantizing twice; QAT) or without a config.

    A QAT run's checkpoint has its own int8 conversion (``lowpower quantize qat-convert``), which the
    refusal names.

    Example:
        >>> float_checkpoint("runs/demo_qat/best.pt")  # doctest: +SKIP
        QuantizeError: runs/demo_qat/best.pt is a QAT training checkpoint ...: lowpower quantize qat-convert ...
    """
    state = load_checkpoint(path)
    kind = kind_of(state)
    if kind is QAT:
        raise QuantizeError("%s is %s, trained with fake quantization: convert it with `lowpower quantize "
                            "qat-convert %s` (train.py already wrote best_int8.pt beside best.pt)"
                            % (path, kind.title, path))
    if not kind.float_weights:
        raise QuantizeError("%s is already %s (%s); give the float best.pt it came from"
                            % (path, kind.title, kind.describe(state)))
    if not state.get("config"):
        raise QuantizeError("%s has no config (not written by train.py); calibration needs its data set" % path)
    return state


def int8_state(state, model, engine, calib_images):
    """The int8 checkpoint dict: the float one's layout, the int8 weights and the "quant" record."""
    result = {key: value for key, value in state.items() if key not in DROPPED_KEYS}
    result.update(optimizer=None, scheduler=None, scaler=None,
                  model={name: value for name, value in model.state_dict().items()},
                  quant={"engine": engine, "mode": "ptq", "per_channel": quant.per_channel(engine),
                         "calib_images": calib_images},
                  float_metrics=state.get("metrics", {}), metrics={})
    return result


def quantize_checkpoint(state, engine, calib, root=None, progress=True, path="checkpoint"):
    """Fuse, calibrate on ``calib`` training images and convert; returns ``(int8 model, int8 state)``.

    Example:
        >>> model, state = quantize_checkpoint(load_checkpoint("runs/demo/best.pt"), "x86", 32)  # doctest: +SKIP
    """
    # Checked before the weights load, so a network without int8 support fails fast and plainly.
    model = networks.create_model(state["arch"], **state["arch_kwargs"])
    check_quantizable(model, state["arch"], path)
    model.load_state_dict(state["model"])
    model.eval()
    loader = calibration_loader(state["config"], calib, root=root)
    prepared = quant.prepare_ptq(model, engine)
    seen = calibrate(prepared, loader, progress=progress)
    int8 = quant.convert_int8(prepared)
    return int8, int8_state(state, int8, engine, seen)


def output_path(args):
    """``--out``, or int8_ptq.pt beside the checkpoint; refused (OutputError) when it is the checkpoint,
    a folder, unwritable, or an existing file without ``--force``.

    Example:
        >>> output_path(parse_args(["runs/demo/best.pt"]))  # doctest: +SKIP
        PosixPath('runs/demo/int8_ptq.pt')
    """
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "int8_ptq.pt"
    return check_output(out, inputs=[args.checkpoint], force=args.force, what="--out" if args.out else "output")


def run(args):
    out = output_path(args)  # before any work: a refusal costs nothing
    state = float_checkpoint(args.checkpoint)
    engine, warning = quant.select_engine(args.engine)
    if warning:
        print("%s: warning: %s" % (PROG, warning), file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        _, result = quantize_checkpoint(state, engine, args.calib, root=args.data,
                                        progress=not args.no_progress, path=args.checkpoint)
    save_checkpoint(result, out)  # atomic: a temporary file renamed into place, stale ones removed
    print("wrote %s (%s int8, engine %s, %s weights, calibrated on %d training images, %.2f MB)" % (
        out, state["arch"], engine, "per-channel" if result["quant"]["per_channel"] else "per-tensor",
        result["quant"]["calib_images"], out.stat().st_size / 1e6))
    print("score it: python test.py --checkpoint %s" % out)
    return 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (QuantizeError, UserError, CheckpointError, ConfigError, DataError, FileNotFoundError) as error:
        print("%s: error: %s" % (PROG, error), file=sys.stderr)
        return 2
