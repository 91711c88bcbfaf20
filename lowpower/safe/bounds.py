"""Numeric command-line arguments with limits that say why.

An unbounded number can ask for more memory than the machine has (``bench sweep --sizes 10000``
wanted 23.7 GB and was killed without a word); a zero or negative one can silently mean a default.
:func:`bounded` makes an argparse ``type`` that refuses values outside ``[low, high]`` with the reason.

Example:
    >>> size = bounded(int, 32, 2048, "a 2048x2048 input already takes about 1 GB of activations")
    >>> size("512")
    512
    >>> size("10000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 10000 is over 2048: a 2048x2048 input already takes about 1 GB of activations
"""
import argparse
import math


def bounded(kind, low=None, high=None, why=""):
    """An argparse ``type``: parse with ``kind`` (int or float), then require ``low <= value <= high``.

    Args:
        kind: ``int`` or ``float``.
        low, high: inclusive limits; None for none.
        why: the reason for the limits, appended to the refusal.
    """
    reason = ": " + why if why else ""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            wanted = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError("%r is not %s" % (text, wanted)) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError("%s is not a finite number" % text)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError("%s is under %s%s" % (text, low, reason))
        if high is not None and value > high:
            raise argparse.ArgumentTypeError("%s is over %s%s" % (text, high, reason))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


def bounded_list(kind, low=None, high=None, why=""):
    """An argparse ``type`` for a comma-separated list of bounded numbers (``"256,384,512"``).

    Example:
        >>> bounded_list(int, 32, 2048)("256,512")
        [256, 512]
    """
    one = bounded(kind, low, high, why)

    def parse(text):
        values = [one(part.strip()) for part in str(text).split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("%r gives no values" % text)
        return values

    parse.__name__ = kind.__name__
    return parse


# ----------------------------------------------------------------------------- limits shared by commands

MIN_SIDE, MAX_SIDE = 8, 2048
# Measured with `lowpower bench models --size 2048 --repeats 1 --warmup 0 --threads 1` (docs/measuring.md).
SIDE_WHY = ("an input side from %d pixels to %d: one forward pass at 2048x2048 already takes 0.3 GB "
            "(lraspp_mbv3_small) to 4 GB (unet_light), memory grows with the side squared, and 10000 took "
            "23.7 GB before the kernel killed it" % (MIN_SIDE, MAX_SIDE))
SIDE = bounded(int, MIN_SIDE, MAX_SIDE, SIDE_WHY)
SIDES = bounded_list(int, MIN_SIDE, MAX_SIDE, SIDE_WHY)
BATCH = bounded(int, 1, 1024, "images per step: at least one, and 1024 images of 512x512 already hold 3 GB")
SHARE = bounded(float, 0.0, 1.0, "a share of an image's pixels, from 0 (off) to 1")
