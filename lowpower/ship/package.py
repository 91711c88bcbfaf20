"""Checkpoint -> self-contained ``solution.pyz`` for the device (``./compress.sh`` wraps this).

    lowpower package runs/demo/best.pt -o solution.pyz --precision fp16
    lowpower package            # the newest runs/*/best.pt -> evaluation/solution.pyz

The output is never the checkpoint; an existing one is replaced only with ``--force``, except
``evaluation/solution.pyz`` when no checkpoint is given (its job), which stderr announces. Both are
checked before any work.

Steps:

1. read the checkpoint and rebuild its model, which checks the weights (``manifest``);
2. lay out a fresh build folder (default ``build/<output stem>/``, git-ignored)::

       __main__.py                 the template's entry point (solution/__main__.py)
       solution/__init__.py        the template (solution/*.py), copied unmodified
       solution/main.py ...        (main, pipeline, imagefiles, model, postprocess)
       solution/manifest.json      generated: what the program needs besides the weights
       solution/weights.npz        generated: the state dict as plain arrays (fp16 when asked)
       networks/__init__.py        generated: a registry of the one shipped model
       networks/<model>.py ...     the model's file and every ``networks`` module it imports,
                                   found by walking the imports (``closure``)

3. zip it behind the interpreter line, as ``zipapp`` does (sources deflated, weights stored);
4. verify it (unless ``--no-verify``): presubmit's checks (``lowpower.ship.presubmit.cli.check``: archive,
   vermin 3.6, imports, a run as the referee runs it, stdout, masks, memory) on two generated
   images. The pyz is written as a temporary file beside the output and renamed into place only
   when no check fails (``lowpower.safe.write.atomic_output``).

The steps live in ``lowpower.ship.manifest`` (checkpoint -> manifest and weights),
``lowpower.ship.closure`` (the model's source) and ``lowpower.ship.build`` (lay out, zip, verify);
this module is the command line.

Example:
    >>> from lowpower.ship.build import build_package
    >>> info = build_package("runs/demo/best.pt", "/tmp/s.pyz", precision="fp16")  # doctest: +SKIP
    >>> info["parameters"]  # doctest: +SKIP
    1940654
"""
import argparse
import math
import sys
import textwrap
import time
from pathlib import Path

from lowpower.paths import EVALUATION_DIR, RUNS_DIR
from lowpower.safe import UserError
from lowpower.safe.bounds import bounded
from lowpower.safe.write import add_force_argument
from lowpower.ship.build import DEFAULT_BATCH_SIZE, DEFAULT_PYTHON, TIMERS, build_package
from lowpower.ship.manifest import PackageError

# Where a package of the newest run goes: `cd evaluation && ./evaluate.bash solution.pyz` scores it.
# Replacing it is that default's documented job, so it needs no --force; stderr says when it happens.
NEWEST_OUTPUT = EVALUATION_DIR / "solution.pyz"
# Limits of the numeric options, each with its reason.
INPUT_SIZE = bounded(int, 32, 2048, "the zoo's networks downsample 32x, and at 2048 one image's activations "
                                    "already take gigabytes on the device's 4 GB")
BATCH_SIZE = bounded(int, 1, 64, "images per forward pass; past a few the device gains nothing and runs out "
                                 "of memory")
MIN_CLASS_AREA = bounded(float, 0.0, 0.99, "a share of the image; 1 would drop every class")


# ----------------------------------------------------------------------------- CLI

def newest_checkpoint(runs=RUNS_DIR):
    """The most recently modified ``RUNS/*/best.pt``.

    Raises:
        PackageError: there is none.

    Example:
        >>> newest_checkpoint("runs")  # doctest: +SKIP
        PosixPath('runs/demo/best.pt')
    """
    candidates = [path for path in Path(runs).glob("*/best.pt") if path.is_file()]
    if not candidates:
        raise PackageError("no checkpoint given and no %s/*/best.pt to package; train one (train.py) or "
                           "pass the checkpoint to package" % runs)
    return max(candidates, key=lambda path: path.stat().st_mtime)


def _size(num_bytes):
    return "%.1f KiB" % (num_bytes / 1024.0) if num_bytes < 1 << 20 else "%.2f MiB" % (num_bytes / 2.0 ** 20)


def summary(info):
    """The lines the CLI prints about a built package."""
    manifest = info["manifest"]
    kwargs = ", ".join("%s=%r" % item for item in sorted(manifest["arch_kwargs"].items()))
    dice = manifest["val_mean_dice"]
    size_note = ""
    if manifest["trained_input_size"] and manifest["trained_input_size"] != manifest["input_size"]:
        size_note = " (trained at %d)" % manifest["trained_input_size"]
    lines = [
        "built %s (%s)" % (info["path"], _size(info["bytes"])),
        "  model       %s(%s): %s parameters" % (manifest["arch"], kwargs, format(info["parameters"], ",")),
        "  precision   %s (weights.npz %s), input %d%s -> output %d, timer %s, batch %d" % (
            manifest["precision"], _size(info["weights_bytes"]), manifest["input_size"], size_note,
            manifest["output_size"], manifest["timer"], manifest["batch_size"]),
        "  int8        engine %s (%s, %s weights); the device falls back with a warning if it lacks it" % (
            manifest["quant"].get("engine"), manifest["quant"].get("mode"),
            "per-channel" if manifest["quant"].get("per_channel") else "per-tensor")
        if "quant" in manifest else None,
        "  postprocess drop classes under %.2f%% of an image" % (100 * manifest["min_class_area"])
        if manifest["min_class_area"] else "  postprocess none (argmax)",
        "  source      networks/__init__.py (generated), %s" % ", ".join(info["modules"]),
        "  checkpoint  %s sha256 %s, epoch %s, val mean Dice %s" % (
            manifest["checkpoint"], manifest["checkpoint_sha256"][:16], manifest["epoch"],
            "n/a" if dice is None or (isinstance(dice, float) and math.isnan(dice)) else "%.4f" % dice),
        "  build       %s" % info["build_dir"],
    ]
    lines += ["  check       %s" % check for check in info["checks"]]
    if manifest.get("backend") == "tensorrt":
        trt = manifest["tensorrt"]
        lines.insert(3, "  backend     tensorrt: solution/%s (opset %d, onnxruntime agrees on %.3f%% of pixels); "
                        "NOT PROVEN: %s" % (trt["onnx"], trt["opset"], 100 * trt["onnxruntime_agreement"],
                                            trt["not_proven"]))
    return [line for line in lines if line is not None]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower package",
        description=textwrap.fill(
                    "Package a lowpower checkpoint as a self-contained solution.pyz for the device: the "
                    "shipped program (solution/), the model's networks/ source found from its imports, "
                    "weights.npz (stored, for a fast start) and manifest.json, zipped as zipapp does. The pyz runs as "
                    "'python3.6 solution.pyz -i IMG_DIR -o OUT_DIR' and prints one float (seconds). "
                    "Before it is moved into place it passes presubmit's checks on two sample images "
                    "(see --no-verify).", 100),
        epilog="examples:\n"
               "  ./compress.sh runs/demo/best.pt -o runs/demo/solution.pyz --precision fp16\n"
               "  ./compress.sh runs/demo/int8_ptq.pt -o runs/demo/int8.pyz   "
               "# an int8 checkpoint (lowpower quantize ptq) packages as int8\n"
               "  ./compress.sh && (cd evaluation && ./evaluate.bash solution.pyz)   "
               "# the newest run, scored on evaluation/test",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=None,
                        help="checkpoint written by train.py, e.g. runs/NAME/best.pt; default: the most "
                             "recently modified RUNS/*/best.pt (named on stderr), packaged to "
                             "evaluation/solution.pyz unless -o is given")
    parser.add_argument("-o", "--output", default=None,
                        help="pyz to write (default: solution.pyz in the current folder, or "
                             "evaluation/solution.pyz when no checkpoint is given, which is replaced "
                             "with a notice on stderr); an existing file needs --force, and it may never "
                             "be the checkpoint")
    add_force_argument(parser, "replace OUTPUT when it exists (never allowed when it is the checkpoint)")
    parser.add_argument("--runs", default=str(RUNS_DIR),
                        help="folder of training runs searched when no checkpoint is given "
                             "(default: runs/ in the repository)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default=None,
                        help="weights stored as fp32 or fp16; fp16 also computes in fp16 on CUDA "
                             "(on a CPU the program computes in fp32 with the fp16 weights); int8 is for "
                             "int8 checkpoints (lowpower quantize), which run on the CPU "
                             "(default: int8 for an int8 checkpoint, else fp32)")
    parser.add_argument("--input-size", type=INPUT_SIZE, default=None, metavar="N",
                        help="square model input size, 32-2048 (default: the checkpoint's)")
    parser.add_argument("--timer", choices=TIMERS, default="model",
                        help="what the printed number measures: model = the summed synchronised seconds of "
                             "the network and the post-processing (upsampling to 512, argmax, small-class "
                             "removal); network = the network calls alone, as the LPCVC 2023 sample and the "
                             "winners timed; wall = the whole run (default: model)")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help="interpreter line of the pyz (default: %r)" % DEFAULT_PYTHON)
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=DEFAULT_BATCH_SIZE,
                        help="images per forward pass, 1-64 (default: %(default)s, chosen from measurements: see "
                             "docs/results.md, 'The shipped program's own costs')")
    parser.add_argument("--min-class-area", type=MIN_CLASS_AREA, default=None,
                        help="drop a class from an image's prediction when it covers less than this share "
                             "of the image, 0-0.99 (the referee scores a spurious class 0); default: the "
                             "checkpoint config's eval.min_class_area")
    parser.add_argument("--build-dir", default=None,
                        help="folder the package tree is laid out in, replaced on each build "
                             "(default: build/<output stem> in the repository)")
    parser.add_argument("--backend", choices=("pytorch", "tensorrt"), default="pytorch",
                        help="tensorrt: also ship the network as solution/model.onnx (opset 13); on the "
                             "device the program builds a TensorRT engine from it at start-up (fp16 with "
                             "--precision fp16), or reads the one cached beside the package "
                             "(solution.pyz.engine), and falls back to PyTorch with a warning when "
                             "tensorrt or CUDA is missing. Not run on a GPU here (default: pytorch)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip presubmit's checks (vermin 3.6, imports, a run on two sample images) "
                             "of the built pyz")
    return parser.parse_args(argv)


def resolve_paths(args):
    """``(checkpoint, output)``: the given ones, or the newest run's checkpoint and NEWEST_OUTPUT.

    Raises:
        PackageError: no checkpoint given and none under ``args.runs``.
    """
    if args.checkpoint is not None:
        return Path(args.checkpoint), Path(args.output or "solution.pyz")
    checkpoint = newest_checkpoint(args.runs)
    print("packaging the newest checkpoint: %s (modified %s)" % (
        checkpoint, time.strftime("%Y-%m-%d %H:%M", time.localtime(checkpoint.stat().st_mtime))), file=sys.stderr)
    return checkpoint, Path(args.output) if args.output else NEWEST_OUTPUT


def may_replace(args, output):
    """Whether ``output`` may replace an existing file: with ``--force``, or when it is the default
    output of a run with no checkpoint and no ``-o`` (NEWEST_OUTPUT), whose replacing is said on stderr.

    Example:
        >>> may_replace(parse_args(["runs/demo/best.pt", "-o", "s.pyz"]), Path("s.pyz"))
        False
    """
    if args.force:
        return True
    if args.checkpoint is None and args.output is None:
        if output.exists():
            print("replacing %s: the default output when no checkpoint is given (-o FILE writes elsewhere)"
                  % output, file=sys.stderr)
        return True
    return False


def main(argv=None):
    args = parse_args(argv)
    try:
        checkpoint, output = resolve_paths(args)
        info = build_package(checkpoint, output, precision=args.precision, input_size=args.input_size,
                             timer=args.timer, python=args.python, batch_size=args.batch_size,
                             build_dir=args.build_dir, verify=not args.no_verify,
                             min_class_area=args.min_class_area, backend=args.backend,
                             force=may_replace(args, output))
    except (PackageError, UserError) as error:
        print("lowpower package: error: %s" % error, file=sys.stderr)
        return 1
    print("\n".join(summary(info)))
    return 0
