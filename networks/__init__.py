"""Model zoo that ships to the device: a plain dict registry of builders.

Device-side code: Python 3.6 syntax and the torch 1.10 / torchvision 0.11 API
only; never imports ``lowpower``.

Example:
    >>> import torch, networks
    >>> model = networks.create_model('unet', base_width=16, depth=3)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 14, 64, 64])
"""
import difflib
import functools
import inspect

from networks.bisenetv2 import bisenetv2
from networks.cunet import cunet
from networks.ddrnet import ddrnet23_slim
from networks.deeplabv3 import deeplabv3_r18, deeplabv3_r50, deeplabv3_r101
from networks.fanet import fanet_r18
from networks.fanet_sample import fanet_r18_sample
from networks.fcn import fcn_r50
from networks.mobilenetv3 import deeplabv3_mbv3, lraspp_mbv3_large, lraspp_mbv3_small
from networks.pidnet import pidnet_s
from networks.ppliteseg import ppliteseg_t
from networks.squeeze_unet import squeeze_unet
from networks.topformer import topformer_t
from networks.unet import unet, unet_light, unet_lighter
from networks.widths import apply_width_plan

MODELS = {
    'deeplabv3_r18': deeplabv3_r18,
    'deeplabv3_r50': deeplabv3_r50,
    'deeplabv3_r101': deeplabv3_r101,
    'unet': unet,
    'unet_light': unet_light,
    'unet_lighter': unet_lighter,
    'squeeze_unet': squeeze_unet,
    'cunet': cunet,
    'fanet_r18': fanet_r18,
    'fanet_r18_sample': fanet_r18_sample,
    'deeplabv3_mbv3': deeplabv3_mbv3,
    'lraspp_mbv3_large': lraspp_mbv3_large,
    'lraspp_mbv3_small': lraspp_mbv3_small,
    'fcn_r50': fcn_r50,
    'bisenetv2': bisenetv2,
    'ppliteseg_t': ppliteseg_t,
    'topformer_t': topformer_t,
    'pidnet_s': pidnet_s,
    'ddrnet23_slim': ddrnet23_slim,
}


def list_models():
    """Return the registered model names, sorted.

    Example:
        >>> 'unet' in list_models()
        True
    """
    return sorted(MODELS)


def get_builder(name):
    """Return the builder registered as ``name``.

    Raises:
        ValueError: unknown name; the message lists the valid names and the closest match.
    """
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(str(name), list_models(), n=1)
    hint = ' Did you mean {!r}?'.format(close[0]) if close else ''
    raise ValueError('Unknown model {!r}.{} Valid names: {}'.format(
        name, hint, ', '.join(list_models())))


def quantizable(name):
    """Whether the network registered as ``name`` can be quantized to int8 in eager mode, and why not.

    Reads the class attribute ``quantizable`` of the model the builder makes
    (``quantize_reason`` says why not); a model without the attribute is not
    quantizable.

    Returns:
        ``(True, '')`` or ``(False, one-line reason)``.

    Example:
        >>> quantizable('unet')
        (True, '')
    """
    cls = model_class(name)
    if getattr(cls, 'quantizable', False):
        return True, ''
    return False, getattr(cls, 'quantize_reason', '{} does not declare quantize support'.format(name))


@functools.lru_cache(maxsize=None)
def model_class(name):
    """The class of the network registered as ``name`` (its class attributes say what it supports).

    Builders are functions, so one model is built, once per name.

    Example:
        >>> model_class('unet').__name__
        'UNet'
    """
    return type(get_builder(name)())


def builder_arguments(name):
    """Return the keyword arguments the builder of ``name`` accepts, in order.

    Example:
        >>> builder_arguments('unet_light')
        ['num_classes', 'in_channels', 'base_width', 'depth']
    """
    return list(inspect.signature(get_builder(name)).parameters)


def create_model(name, num_classes=14, **kwargs):
    """Build the model registered as ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: output channels of the logits.
        **kwargs: architecture arguments of that model (see :func:`builder_arguments`), and
            ``width_plan``: the narrower layers of a pruned network (:mod:`networks.widths`).

    Returns:
        An ``nn.Module`` mapping (N, 3, H, W) images to (N, num_classes, H, W) logits.

    Raises:
        ValueError: unknown model name.
        TypeError: an argument the model does not accept.

    Example:
        >>> create_model('deeplabv3_r18', output_stride=8)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """
    builder = get_builder(name)
    width_plan = kwargs.pop('width_plan', None)  # a pruned network's narrower layers (networks.widths)
    accepted = builder_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError('Model {!r} got unexpected argument(s) {}; it accepts: {}'.format(
            name, ', '.join(unknown), ', '.join(accepted)))
    model = builder(num_classes=num_classes, **kwargs)
    return apply_width_plan(model, width_plan) if width_plan else model
