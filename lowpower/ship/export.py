"""Export a checkpoint's network to ONNX for TensorRT 8.2 (Jetson Nano), and check the file.

    lowpower export runs/demo/best.pt --onnx runs/demo/model.onnx [--input-size 256] [--opset 13]
    lowpower export --zoo [--input-size 256]

The file maps ``image`` (1, 3, N, N), normalised as in training, to ``logits`` (1, classes, N, N).
Opsets 11-13 only: TensorRT 8.2 reads up to 13, and before 11 a bilinear resize exports as Upsample,
whose coordinates are shifted half a pixel against PyTorch's align_corners=False.

After export the file is checked: ``onnx.checker`` passes, every bilinear Resize uses a coordinate
mode that matches PyTorch (half_pixel / pytorch_half_pixel, or align_corners), and onnxruntime on
the CPU agrees with PyTorch on >= 99.9% of argmax pixels (2 seeded random and 2 smooth images).
A table shows params, opset, file size, agreement, max |logit difference| and the Resize modes.

The file is written to a temporary file beside ``--onnx`` and renamed into place only when every
check passed, so a failed export leaves no .onnx. ``--onnx`` is never the checkpoint, and an
existing file is replaced only with ``--force`` (both checked before any work).

``--zoo`` tries every registered network (seeded random weights, eval mode) and prints one row per
network: its numbers, or a one-line reason it cannot be exported.
"""
import argparse
import inspect
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import networks
from lowpower.checkpoint import build_model, load_checkpoint
from lowpower.safe import UserError
from lowpower.safe.bounds import bounded
from lowpower.safe.write import add_force_argument, atomic_output, check_output
from lowpower.ship.export_check import (
    check_onnx,
    compare_with_onnxruntime,
    resize_modes,
    resize_problems,
    summarise_modes,
)

MAX_OPSET = 13  # TensorRT 8.2 (JetPack 4.6) reads ONNX opsets up to 13
MIN_OPSET = 11  # Resize with coordinate_transformation_mode arrived in opset 11
MIN_AGREEMENT = 0.999
# Limits of the numeric options, each with its reason.
INPUT_SIZE = bounded(int, 32, 2048, "the zoo's networks downsample 32x, and at 2048 one image's activations "
                                    "already take gigabytes")
OPSET = bounded(int, MIN_OPSET, MAX_OPSET, "the device's TensorRT 8.2 reads ONNX opsets up to %d, and before %d a "
                                           "bilinear resize exports as Upsample, which does not match PyTorch's"
                                           % (MAX_OPSET, MIN_OPSET))
SEED = bounded(int, 0, 2 ** 32 - 1, "torch and numpy seeds are unsigned 32-bit")


class ExportError(ValueError):
    """An export that cannot run or whose file fails a check; the message is one line."""


def check_opset(opset):
    """Raise :class:`ExportError` unless ``MIN_OPSET <= opset <= MAX_OPSET``."""
    if opset > MAX_OPSET:
        raise ExportError("opset %d is too new: the device's TensorRT 8.2 reads ONNX opsets up to %d"
                          % (opset, MAX_OPSET))
    if opset < MIN_OPSET:
        raise ExportError("opset %d is too old: before %d a bilinear resize exports as Upsample, which does "
                          "not match PyTorch's align_corners=False" % (opset, MIN_OPSET))


def export_onnx(model, path, input_size, opset=MAX_OPSET):
    """Write ``model``'s logits at batch 1 and ``input_size`` x ``input_size`` to ``path``.

    Uses the TorchScript-based exporter: it writes the requested opset directly. The dynamo exporter
    (torch 2.14's default) needs onnxscript and builds opset 18 first, then down-converts.

    Args:
        model: an ``nn.Module`` mapping (N, 3, H, W) to (N, classes, H, W); put in eval mode here.
        path: the .onnx file to write.
        input_size: image side.
        opset: ONNX opset, 11-13.

    Example:
        >>> export_onnx(networks.create_model("unet"), "unet.onnx", 256)  # doctest: +SKIP
    """
    check_opset(opset)
    model.eval()
    options = {}
    # Feature detection, not a version check: torch >= 2.5 has the switch, older ones only this exporter.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    image = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation and the tracer warns about Python ints in
        # shapes; both are expected with a fixed input size and would bury the table.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (image,), str(path), opset_version=opset, input_names=["image"],
                          output_names=["logits"], do_constant_folding=True, **options)
    return Path(path)


def export_and_verify(model, path, input_size, opset=MAX_OPSET, seed=0, threads=None):
    """Export ``model`` (see :func:`export_onnx`) and check the file.

    Returns:
        ``{"params", "opset", "bytes", "agreement", "max_diff", "resize", "problem"}``; ``problem`` is
        None when every check passed, else a one-line reason (agreement too low, wrong Resize mode).

    Raises:
        ExportError: the exporter or ``onnx.checker`` refused; one line.

    Example:
        >>> export_and_verify(networks.create_model("unet"), "unet.onnx", 256)["agreement"]  # doctest: +SKIP
        1.0
    """
    import onnx

    model.eval()
    try:
        export_onnx(model, path, input_size, opset)
        check_onnx(path)
    except ExportError:
        raise
    except Exception as error:  # the exporter raises many types; each becomes a one-line reason
        raise ExportError(one_line(error)) from error
    modes = resize_modes(onnx.load(str(path), load_external_data=False))
    result = {"params": sum(p.numel() for p in model.parameters()), "opset": opset,
              "bytes": Path(path).stat().st_size, "resize": summarise_modes(modes), "problem": None}
    result.update(compare_with_onnxruntime(model, path, input_size, seed=seed, threads=threads))
    wrong = resize_problems(modes)
    if wrong:
        result["problem"] = "Resize modes %s do not match PyTorch's bilinear" % ", ".join(sorted(set(wrong)))
    elif result["agreement"] < MIN_AGREEMENT:
        result["problem"] = "onnxruntime agrees on only %.3f%% of argmax pixels (< %.1f%%)" % (
            100 * result["agreement"], 100 * MIN_AGREEMENT)
    return result


def one_line(error, limit=200):
    """``TypeName: first line of the message``, cut to ``limit`` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "%s: %s" % (type(error).__name__, lines[0]) if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def export_zoo(input_size=256, names=None, opset=MAX_OPSET, seed=0, progress=True, threads=None):
    """Try every registered network (seeded random weights, eval mode); one row per network.

    Args:
        input_size: image side.
        names: networks to try (default ``networks.list_models()``).
        opset, seed, threads: as for :func:`export_and_verify`.
        progress: a tqdm bar on stderr.

    Returns:
        rows ``{"name", ...export_and_verify's keys...}``, or ``{"name", "problem"}`` when it failed.

    Example:
        >>> [row["problem"] for row in export_zoo(64, ["unet"], progress=False)]  # doctest: +SKIP
        [None]
    """
    from tqdm import tqdm

    names = list(names or networks.list_models())
    rows = []
    with tempfile.TemporaryDirectory(prefix="lowpower_export_") as folder:
        bar = tqdm(names, desc="export", unit="model", file=sys.stderr, disable=not progress)
        for name in bar:
            bar.set_postfix_str(name)
            torch.manual_seed(seed)
            model = networks.create_model(name).eval()
            path = Path(folder) / (name + ".onnx")
            try:
                row = export_and_verify(model, path, input_size, opset, seed, threads)
            except ExportError as error:
                row = {"problem": str(error)}
            rows.append(dict(row, name=name))
            path.unlink(missing_ok=True)  # one file at a time: resnet-101 alone is 240 MB
    return rows


def format_table(rows, input_size):
    """Rows of :func:`export_and_verify` (with ``name``) as a markdown table."""
    lines = ["| network @%d | params | opset | MB | argmax agreement | max abs diff | Resize modes | result |"
             % input_size, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "agreement" not in row:
            lines.append("| %s | | | | | | | %s |" % (row["name"], row["problem"]))
            continue
        lines.append("| %s | %.2f M | %d | %.1f | %.4f%% | %.2e | %s | %s |" % (
            row["name"], row["params"] / 1e6, row["opset"], row["bytes"] / 1e6, 100 * row["agreement"],
            row["max_diff"], row["resize"], row["problem"] or "ok"))
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="lowpower export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="a lowpower checkpoint (train.py's best.pt or last.pt)")
    parser.add_argument("--onnx", metavar="FILE",
                        help="the .onnx file to write (required with a checkpoint); written only when its "
                             "checks pass, and never over CHECKPOINT")
    add_force_argument(parser, "replace FILE when it exists (never allowed when it is CHECKPOINT)")
    parser.add_argument("--zoo", action="store_true", help="try every registered network with random weights")
    parser.add_argument("--input-size", type=INPUT_SIZE, metavar="N",
                        help="image side, 32-2048 (default: the checkpoint's input size; 256 with --zoo)")
    parser.add_argument("--opset", type=OPSET, default=MAX_OPSET,
                        help="ONNX opset, %d-%d (default %d: the most TensorRT 8.2 reads)"
                        % (MIN_OPSET, MAX_OPSET, MAX_OPSET))
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the random test images and zoo weights")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar with --zoo")
    args = parser.parse_args(argv)
    if args.zoo == bool(args.checkpoint):
        parser.error("give either a CHECKPOINT with --onnx FILE, or --zoo")
    if args.checkpoint and not args.onnx:
        parser.error("--onnx FILE is required with a checkpoint")
    return args


class _FailedCheck(Exception):
    """Raised inside ``atomic_output`` so that a file that failed its checks is not renamed into place."""


def export_checkpoint(checkpoint, onnx_path, input_size=None, opset=MAX_OPSET, seed=0):
    """Export a lowpower checkpoint; returns :func:`export_and_verify`'s row with ``name``.

    The file is exported and checked as a temporary file beside ``onnx_path`` and renamed into place
    only when ``problem`` is None; otherwise nothing is left (``written`` in the row says which).
    Callers ask ``check_output`` about ``onnx_path`` first.

    Example:
        >>> export_checkpoint("runs/demo/best.pt", "runs/demo/model.onnx")["problem"]  # doctest: +SKIP
    """
    state = load_checkpoint(checkpoint)
    size = input_size or state.get("input_size") or state.get("config", {}).get("data", {}).get("input_size")
    if not size:
        raise ExportError("%s records no input size; pass --input-size N" % checkpoint)
    try:
        model = build_model(state).eval()
    except (TypeError, ValueError, RuntimeError) as error:  # arch renamed, weights of another shape
        raise ExportError("cannot rebuild the network of %s: %s" % (checkpoint, one_line(error))) from None
    try:
        with atomic_output(onnx_path) as temp:
            row = export_and_verify(model, temp, int(size), opset, seed)
            if row["problem"]:
                raise _FailedCheck()
    except _FailedCheck:
        pass  # atomic_output removed the temporary file; the row says why
    return dict(row, name="%s (%s)" % (state["arch"], Path(checkpoint).name), input_size=int(size),
                written=row["problem"] is None)


def say_written(path, row):
    """Print where the file went, or (stderr, one line) why it was not written."""
    if row["written"]:
        print("wrote %s" % path)
    else:
        print("lowpower export: error: %s not written: it fails its check (%s)" % (path, row["problem"]),
              file=sys.stderr)


def main(argv=None):
    """The command line; returns 0 when every export passed its checks, 1 when one did not, 2 on errors."""
    args = parse_args(argv)
    try:
        check_opset(args.opset)
        if args.checkpoint:  # before any work: a refusal costs nothing
            check_output(args.onnx, inputs=[args.checkpoint], force=args.force, what="--onnx")
        if args.zoo:
            size = args.input_size or 256
            rows = export_zoo(size, opset=args.opset, seed=args.seed, progress=not args.no_progress)
        else:
            row = export_checkpoint(args.checkpoint, args.onnx, args.input_size, args.opset, args.seed)
            size, rows = row["input_size"], [row]
    except (ExportError, UserError, ValueError, FileNotFoundError) as error:  # CheckpointError is a ValueError
        print("lowpower export: error: %s" % error, file=sys.stderr)
        return 2
    print(format_table(rows, size))
    if not args.zoo:
        say_written(args.onnx, rows[0])
    return 0 if all(row.get("problem") is None for row in rows) else 1
