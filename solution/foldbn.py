"""Fold BatchNorm into the preceding convolutions of a float model before it runs.

In eval mode a BatchNorm after a convolution is a fixed per-channel scale and shift, so it can be
multiplied into the convolution's weights and bias: one kernel instead of two per layer, the same
result up to float rounding. The zoo networks (``networks/fusion.py``, ``QuantizableNetwork``) know
their conv-BN(-ReLU) groups and fuse them with ``fuse_model()``: in eval mode torch's
``fuse_modules`` folds BN into the conv (``fuse_conv_bn_eval``, torch 1.10 and 2.x alike) and wraps
conv-ReLU pairs in ``ConvReLU2d``, a ``Sequential`` that computes what the pair computed. A network
without ``fuse_model`` (a user's own) runs unfolded. ``LOWPOWER_FOLD_BN=0`` turns folding off, so
that ``lowpower bench solution`` can time both in turns.

Device-side code: Python 3.6 syntax, the torch 1.10 API; the standard library and torch only.

Example:
    >>> rebuild = lambda: networks.create_model('unet', base_width=8, depth=2).eval()
    >>> model = fold_for_inference(rebuild(), rebuild, environ={})
    >>> batchnorm_count(model)
    0
"""
import sys

import torch.nn as nn

from .runtime import switch_on

FOLD_ENV = 'LOWPOWER_FOLD_BN'


def fold_enabled(environ=None):
    """Whether BN folding is on: yes unless LOWPOWER_FOLD_BN is 0 (or false, no, off).

    Args:
        environ: a mapping of environment variables (default ``os.environ``).

    Example:
        >>> fold_enabled({'LOWPOWER_FOLD_BN': '0'}), fold_enabled({})
        (False, True)
    """
    return switch_on(FOLD_ENV, environ)


def batchnorm_count(model):
    """The number of BatchNorm modules in ``model`` (BN left inside a fused BN-ReLU included).

    Example:
        >>> batchnorm_count(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
        1
    """
    return sum(1 for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm))


def can_fold(model):
    """Whether ``model`` says how to fuse itself (``fuse_model``, the zoo's convention).

    Example:
        >>> can_fold(nn.Conv2d(3, 8, 3))
        False
    """
    return callable(getattr(model, 'fuse_model', None))


def fold_batchnorm(model):
    """Fold every conv-BN group of ``model`` in place (eval mode); returns how many BN were folded.

    Only legal for inference: the running statistics become constants in the conv, so the model is
    put (and left) in eval mode. A model without ``fuse_model`` is left untouched (0). BN that follows
    no conv (after a transposed conv, or alone) stays, inside a ``BNReLU2d`` when a ReLU follows it.

    Args:
        model: a float network with its weights loaded.

    Example:
        >>> fold_batchnorm(networks.create_model('unet', base_width=8, depth=2))
        10
    """
    if not can_fold(model):
        return 0
    before = batchnorm_count(model)
    model.eval()  # fuse_modules folds BN only for modules in eval mode (QAT fusion otherwise)
    model.fuse_model()  # qat=False: BN folded into the conv weights
    model.eval()
    return before - batchnorm_count(model)


def warn(message):
    """One line on stderr, as solution.main's warnings."""
    sys.stderr.write('solution: {}\n'.format(message))
    sys.stderr.flush()


def fold_for_inference(model, rebuild, environ=None):
    """``model`` with its BN folded, or unfolded when LOWPOWER_FOLD_BN=0 or it has no ``fuse_model``.

    Fusing replaces modules in place, so a failure half-way leaves a model that cannot be trusted:
    then a warning goes to stderr and ``rebuild()`` gives a fresh, unfolded one.

    Args:
        model: the float network, weights loaded, in eval mode.
        rebuild: a function returning a fresh copy of that model (weights loaded, eval mode).
        environ: environment variables (default ``os.environ``).

    Example:
        >>> rebuild = lambda: networks.create_model('unet', base_width=8, depth=2).eval()
        >>> batchnorm_count(fold_for_inference(rebuild(), rebuild, environ={'LOWPOWER_FOLD_BN': '0'}))
        10
    """
    if not fold_enabled(environ) or not can_fold(model):
        return model
    try:
        fold_batchnorm(model)
    except Exception as error:  # any failure of a network's own fuse_model: run the model unfolded
        warn('warning: BatchNorm not folded ({}: {}); running the unfolded model'.format(
            type(error).__name__, error))
        return rebuild()
    return model
