"""What a package carries besides source: ``manifest.json`` and ``weights.npz``, from a checkpoint.

The manifest is everything the shipped program needs to know (solution/README.md lists the
fields); the weights are the state dict as plain numpy arrays (no pickle, no dependence on the
torch version that saved them), in fp16 when asked.

Example:
    >>> state = read_checkpoint("runs/demo/best.pt")  # doctest: +SKIP
    >>> describe_checkpoint(state, "runs/demo/best.pt")["input_size"]  # doctest: +SKIP
    128
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from evaluation.contract import CLASS_NAMES, NUM_CLASSES, OUTPUT_SIZE
from lowpower.checkpoint import CheckpointError, kind_of, load_checkpoint
from lowpower.compress.kinds import KindError
from lowpower.compress.quantize.npz import encode_state_dict
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD

FP16_MAX = 65504.0

# Knobs of the shipped program, never set by the referee (documented in solution/README.md).
PROGRAM_ENVIRONMENT = {
    "LOWPOWER_SEQUENTIAL": "1: no reader/writer pools, read-segment-write one batch at a time",
    "LOWPOWER_THREADS": "torch CPU threads (default: all cores)",
    "LOWPOWER_STATS": "path: write the run's timings as JSON there",
    "LOWPOWER_FOLD_BN": "0: keep BatchNorm apart from the convs of a float model (default: folded at load)",
    "LOWPOWER_KEEP_HEAP": "0: let glibc return freed memory to the system (default: kept for reuse)",
}
PREPROCESSING = ("RGB; bilinear antialiased resize to input_size (Pillow's, as torchvision "
                 "Resize(antialias=True)); /255; (x - mean) / std")
POSTPROCESSING = ("bilinear upsampling of the logits to output_size (align_corners=False); "
                  "classes under min_class_area of an image dropped; argmax")


class PackageError(Exception):
    """The package cannot be built; the message says why (every packaging step raises this)."""


def sha256_of(path):
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_checkpoint(path):
    """Load a lowpower checkpoint through the safe loader; PackageError naming the file for anything else.

    ``load_checkpoint`` reads with ``weights_only=True`` (a crafted file never runs) and refuses in one
    line what is not a lowpower checkpoint; that line, led by "NAME is not a lowpower checkpoint",
    becomes the PackageError.

    Example:
        >>> read_checkpoint("notes.txt")  # doctest: +SKIP
        PackageError: notes.txt is not a lowpower checkpoint: cannot read checkpoint notes.txt: ...
    """
    path = Path(path)
    try:
        state = load_checkpoint(path)
    except FileNotFoundError:
        raise PackageError("checkpoint %s does not exist" % path) from None
    except CheckpointError as error:
        reason = " ".join(str(error).split())
        raise PackageError(reason if "is not a lowpower checkpoint" in reason
                           else "%s is not a lowpower checkpoint: %s" % (path.name, reason)) from None
    if not isinstance(state["arch_kwargs"], dict):  # load_checkpoint checked the keys are there
        raise PackageError("%s is not a lowpower checkpoint: expected a dict with arch, arch_kwargs "
                           "(a dict) and model" % path)
    return state


def _json_ready(value, what):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise PackageError("%s cannot be written to manifest.json: %s" % (what, error)) from None


def describe_checkpoint(state, path, input_size=None):
    """The manifest fields that come from the checkpoint (see solution/README.md).

    Args:
        state: the checkpoint dict (``read_checkpoint``).
        path: its file, recorded by name and sha256.
        input_size: square model input size; default the checkpoint's.
    """
    arch_kwargs = dict(state["arch_kwargs"])
    num_classes = int(arch_kwargs.get("num_classes", NUM_CLASSES))
    classes = list(state.get("classes") or (CLASS_NAMES if num_classes == NUM_CLASSES
                                            else ["class_%d" % i for i in range(num_classes)]))
    if len(classes) != num_classes:
        raise PackageError("%s: %d class names for a model of %d classes" % (path, len(classes), num_classes))
    trained_size = state.get("input_size") or (state.get("config") or {}).get("data", {}).get("input_size")
    size = input_size or trained_size
    if not size:
        raise PackageError("%s records no input size; pass --input-size" % path)
    if int(size) < 1:
        raise PackageError("input size must be positive, got %s" % size)
    metrics = state.get("metrics") or {}
    mean_dice = metrics.get("mean_dice", state.get("best_mean_dice"))
    return {
        "arch": state["arch"],
        "arch_kwargs": _json_ready(arch_kwargs, "arch_kwargs"),
        "num_classes": num_classes,
        "classes": [str(name) for name in classes],
        "mean": [float(v) for v in (state.get("mean") or IMAGENET_MEAN)],
        "std": [float(v) for v in (state.get("std") or IMAGENET_STD)],
        "input_size": int(size),
        "trained_input_size": int(trained_size) if trained_size else None,
        "output_size": OUTPUT_SIZE,
        "referee_classes": NUM_CLASSES,  # ids the referee scores; a larger one crashes it
        "checkpoint": Path(path).name,
        "checkpoint_sha256": sha256_of(path),
        "epoch": state.get("epoch"),
        "val_mean_dice": None if mean_dice is None else float(mean_dice),
        "val_miou": None if metrics.get("miou") is None else float(metrics["miou"]),
    }


def resolve_precision(state, precision, path):
    """The precision to package ``state`` in, as its kind says (``lowpower.compress.kinds.Kind.precisions``):
    an int8 checkpoint is int8, a float or pruned one fp32 by default, a QAT one not packaged.

    Raises:
        PackageError: int8 asked for a float checkpoint, fp32/fp16 for an int8 one, or a QAT one.

    Example:
        >>> resolve_precision({"quant": {"engine": "x86", "mode": "ptq"}}, None, "q.pt")
        'int8'
    """
    try:
        return kind_of(state).package_precision(state, precision, path)
    except KindError as error:
        raise PackageError(str(error)) from None


def program_settings(state, precision, timer, batch_size, min_class_area, parameters):
    """The manifest fields that come from the packaging options rather than the checkpoint.

    ``min_class_area`` None takes the checkpoint config's ``eval.min_class_area``, so the package
    scores what validation scored. The checkpoint's kind adds its own fields: an int8 package
    records ``quant`` (engine, mode, per_channel) from the checkpoint.
    """
    if min_class_area is None:
        min_class_area = ((state.get("config") or {}).get("eval") or {}).get("min_class_area", 0.0)
    own = {key: _json_ready(value, key) for key, value in kind_of(state).manifest_fields(state).items()}
    return dict(own, **{
        "min_class_area": float(min_class_area),
        "precision": precision,
        "timer": timer,
        "batch_size": int(batch_size),
        "parameters": int(parameters),
        "preprocessing": PREPROCESSING,
        "postprocessing": POSTPROCESSING,
        "environment": PROGRAM_ENVIRONMENT,
    })


def fp16_array(key, tensor):
    """``tensor`` as an fp16 numpy array; PackageError naming ``key`` when a value is beyond fp16's range."""
    finite = torch.isfinite(tensor)
    if bool((tensor[finite].abs() > FP16_MAX).any()):
        raise PackageError("weight %s has values beyond fp16's range (%.4g); package with "
                           "--precision fp32" % (key, float(tensor[finite].abs().max())))
    return tensor.half().numpy()


def int8_ships_in_fp16(key, array):
    """True for an int8 model's float weights (the float islands: transposed convs), which ship in
    fp16 as an fp16 package's do and are cast back to fp32 on the device; biases and quantization
    scales stay exact, so only the weights the int8 model keeps in float are rounded.

    Example:
        >>> int8_ships_in_fp16("up.0.up.module.weight", np.zeros(3, np.float32))
        True
    """
    return key.endswith(".weight") and array.dtype == np.float32


def export_weights(model, precision):
    """The state dict as numpy arrays; floating tensors in fp16 when ``precision == 'fp16'``; an
    int8 model's quantized tensors split into values, scales, zero points and axis
    (``lowpower.compress.quantize.npz``).

    Raises:
        PackageError: a weight does not fit in fp16, or an int8 entry cannot be stored.
    """
    if precision == "int8":
        try:
            arrays = encode_state_dict(model.state_dict())
        except ValueError as error:
            raise PackageError("the int8 model cannot be stored as plain arrays: %s" % error) from None
        return {key: fp16_array(key, torch.from_numpy(array)) if int8_ships_in_fp16(key, array) else array
                for key, array in arrays.items()}
    arrays = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        arrays[key] = fp16_array(key, tensor) if precision == "fp16" and tensor.is_floating_point() \
            else tensor.numpy()
    return arrays
