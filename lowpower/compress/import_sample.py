"""Convert the LPCVC 2023 sample solution's weight file into a lowpower checkpoint.

The sample (lpcvai/23LPCVC_Segmentation_Track-Sample_Solution) saves its FANet's
state dict with ``torch.save`` (its ``model.pkl``). This module renames every
key to ``networks.fanet_r18_sample`` with an explicit table, drops the keys of
the modules whose output never reaches the logits (printing a note), checks the
result loads strictly, and writes a checkpoint that ``./compress.sh`` packages.

Usage::

    lowpower import-sample model.pkl -o runs/sample/best.pt
    ./compress.sh runs/sample/best.pt

Example:
    >>> convert_state_dict(torch.load("model.pkl"))[1][:1]  # doctest: +SKIP
    ['clslayer_16 (never called)']
"""
import argparse
import sys
from pathlib import Path

import torch

import networks
from evaluation.contract import CLASS_NAMES, NUM_CLASSES
from lowpower.checkpoint import save_checkpoint
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from lowpower.safe.bounds import bounded
from lowpower.safe.load import WeightsFileError, load_weights
from lowpower.safe.write import add_force_argument, check_output

ARCH = "fanet_r18_sample"
SAMPLE_INPUT_SIZE = 512  # the sample resizes every image to 512x512

# The sample names its fusion modules by the strides they would have with a stride-1 layer1;
# ours are named by their true strides (its layer1 has stride 2).
SAMPLE_LEVELS = {"4": "8", "8": "16", "16": "32", "32": "64"}
# Sample fusion sub-module -> ours (FastAttention's query/key/value/out, the padded up conv, smooth).
FUSION_PARTS = {"w_qs": "attention.{}.query", "w_ks": "attention.{}.key", "w_vs": "attention.{}.value",
                "latlayer3": "attention.{}.out", "up": "lateral.{}", "smooth": "smooth.{}"}
# The sample wraps conv and bn as attributes; ours are nn.Sequential positions.
CONV_BN = {"conv.": "0.", "bn.": "1."}

# Sample key prefixes whose modules cannot change the logits, with why; their keys are dropped.
DROPPED = {
    "clslayer_32.": "never called",
    "clslayer_16.": "never called",
    "ffm_8.smooth.": "never called",
    "ffm_4.up.": "never called",
    "ffm_32.smooth.": "called, output discarded",
}


def _prefix_table():
    """Sample key prefix -> ours, spelled out for every module the logits depend on."""
    table = {
        "resnet.": "backbone.",  # torchvision's names below it (conv1, bn1, layerN.i.conv1, downsample.0 ...)
        "clslayer_8.conv.conv.": "classifier.0.0.",
        "clslayer_8.conv.bn.": "classifier.0.1.",
        "clslayer_8.conv_out.": "classifier.1.",
    }
    for sample_level, level in SAMPLE_LEVELS.items():
        for part, ours in FUSION_PARTS.items():
            for wrapper, position in CONV_BN.items():
                sample = "ffm_%s.%s.%s" % (sample_level, part, wrapper)
                if not any(sample.startswith(prefix) for prefix in DROPPED):
                    table[sample] = ours.format(level) + "." + position
    return table


PREFIXES = _prefix_table()


class SampleWeightsError(ValueError):
    """A file that is not the sample's state dict; the message names the file and is one line."""


def our_key(key):
    """Our name for the sample's ``key``; None for a dropped key; KeyError for a foreign one.

    Example:
        >>> our_key("ffm_4.w_qs.bn.running_mean")
        'attention.8.query.1.running_mean'
    """
    if any(key.startswith(prefix) for prefix in DROPPED):
        return None
    for prefix, ours in PREFIXES.items():
        if key.startswith(prefix):
            return ours + key[len(prefix):]
    raise KeyError(key)


def convert_state_dict(sample_state):
    """Rename the sample's state dict to ``fanet_r18_sample``'s.

    Args:
        sample_state: the sample's ``model.state_dict()`` (a ``module.`` prefix from
            DataParallel is removed).

    Returns:
        ``(state, notes)``: our state dict, and one note per dropped module (``name (why)``).

    Raises:
        KeyError: a key that is not the sample's (the first few are named).
    """
    state, dropped, foreign = {}, {}, []
    for key, value in sample_state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        try:
            ours = our_key(key)
        except KeyError:
            foreign.append(key)
            continue
        if ours is None:
            prefix = next(prefix for prefix in DROPPED if key.startswith(prefix))
            dropped[prefix.rstrip(".")] = DROPPED[prefix]
        else:
            state[ours] = value
    if foreign:
        raise KeyError("%d keys the sample's FANet does not have, e.g. %s" % (len(foreign), ", ".join(foreign[:3])))
    return state, ["%s (%s)" % (name, why) for name, why in sorted(dropped.items())]


def read_sample_weights(path):
    """Load ``path`` as a state dict of tensors with the safe loader; SampleWeightsError naming it otherwise."""
    try:  # a stranger's file: weights_only, so a crafted pickle is refused, never run
        state = load_weights(path, "the sample's weight file")
    except WeightsFileError as error:
        raise SampleWeightsError(str(error)) from None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise SampleWeightsError("%s is not a state dict of the sample's FANet: expected a dict of tensors, got %s"
                                 % (path, type(state).__name__))
    return state


def import_sample(weights, output, input_size=SAMPLE_INPUT_SIZE, force=False):
    """Write a lowpower checkpoint of ``fanet_r18_sample`` from the sample's weight file.

    Args:
        weights: the sample's state dict file (``torch.save(model.state_dict(), ...)``).
        output: the checkpoint to write; its folder is created.
        input_size: the square input size recorded for packaging (the sample's: 512).
        force: replace ``output`` when it exists (it may never be ``weights``).

    Returns:
        ``(output, notes)``: the checkpoint path and the dropped modules' notes.

    Raises:
        SampleWeightsError: not such a file, foreign keys, missing keys or wrong shapes.
        OutputError: ``output`` is ``weights``, a folder, or exists without ``force``.

    Example:
        >>> import_sample("model.pkl", "runs/sample/best.pt")  # doctest: +SKIP
    """
    output = check_output(output, inputs=[weights], force=force)
    sample_state = read_sample_weights(weights)
    try:
        state, notes = convert_state_dict(sample_state)
    except KeyError as error:
        raise SampleWeightsError("%s is not a state dict of the sample's FANet: %s"
                                 % (weights, error.args[0])) from None
    head = state.get("classifier.1.weight")
    num_classes = int(head.shape[0]) if head is not None else NUM_CLASSES
    model = networks.create_model(ARCH, num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # missing keys or shape mismatches; keep the first reason
        reason = " ".join(str(error).split())[:300]
        raise SampleWeightsError("%s does not fit the sample's FANet: %s" % (weights, reason)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "arch": ARCH, "arch_kwargs": {"num_classes": num_classes}, "model": model.state_dict(),
        "config": {"model": {"arch": ARCH, "kwargs": {}, "pretrained": False},
                   "data": {"num_classes": num_classes, "input_size": int(input_size)},
                   "eval": {"min_class_area": 0.0}},  # the sample drops no small classes
        "epoch": 0, "metrics": {}, "input_size": int(input_size),
        "classes": list(CLASS_NAMES) if num_classes == NUM_CLASSES else None,
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),  # the sample's Normalize
        "source": "LPCVC 2023 sample solution weights %s" % Path(weights).name,
    }
    save_checkpoint(checkpoint, output)
    return output, notes


# The sample's FANet downsamples by 32; past 2048 one image's activations outgrow a Nano's 4 GB.
INPUT_SIZE = bounded(int, 32, 2048, "the network downsamples by 32, and a Jetson Nano has 4 GB for "
                                    "a 2048x2048 input's activations at most")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower import-sample",
        description="Convert the LPCVC 2023 sample solution's weight file into a lowpower checkpoint "
                    "of fanet_r18_sample (package it with ./compress.sh CKPT).")
    parser.add_argument("weights", help="the sample's state dict file (its model.pkl)")
    parser.add_argument("-o", "--output", default="runs/sample/best.pt",
                        help="checkpoint to write; refused when it exists unless --force (default %(default)s)")
    parser.add_argument("--input-size", type=INPUT_SIZE, default=SAMPLE_INPUT_SIZE,
                        help="square input size recorded for packaging (default %(default)s, as the sample)")
    add_force_argument(parser, "replace OUTPUT when it exists (never the weights file itself)")
    args = parser.parse_args(argv)
    try:
        output, notes = import_sample(args.weights, args.output, args.input_size, force=args.force)
    except SampleWeightsError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    for note in notes:
        print("note: dropped %s: it cannot change the logits" % note)
    print("wrote %s (%s); package it with ./compress.sh %s" % (output, ARCH, output))
    return 0
