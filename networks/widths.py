"""Rebuild a channel-pruned network from its width plan: plain data, no pickled modules.

A pruned checkpoint (``lowpower prune``) stores, in its ``arch_kwargs``, a
``width_plan``: for every layer whose shape pruning changed, its dotted module name and the
constructor widths it now has::

    {'stem.0.0': {'in_channels': 3, 'out_channels': 24, 'groups': 1},
     'stem.0.1': {'num_features': 24}}

``networks.create_model`` builds the network from its source as usual, then
:func:`apply_width_plan` swaps each named layer for a fresh one of the same type with the
planned widths (every other setting copied), so ``load_state_dict(strict=True)`` then fits the
pruned weights. Only Conv2d, ConvTranspose2d and BatchNorm2d are narrowed: the zoo's layers
with weights are of these types, and the forward code reads widths from the layers themselves.

Device-side code: Python 3.6 syntax and the torch 1.10 API only; never imports ``lowpower``.

Example:
    >>> import torch, networks
    >>> model = networks.create_model('unet', base_width=8, depth=2)
    >>> plan = {'stem.0.0': {'in_channels': 3, 'out_channels': 4, 'groups': 1},
    ...         'stem.0.1': {'num_features': 4},
    ...         'stem.1.0': {'in_channels': 4, 'out_channels': 8, 'groups': 1}}
    >>> apply_width_plan(model, plan).stem[0][0].out_channels
    4
"""
import torch.nn as nn

CONV_KEYS = ('in_channels', 'out_channels', 'groups')
NORM_KEYS = ('num_features',)


def plan_entry(module):
    """The width entry of one layer (the constructor widths it has), or None for other types.

    Example:
        >>> plan_entry(nn.BatchNorm2d(16))
        {'num_features': 16}
    """
    if type(module) in (nn.Conv2d, nn.ConvTranspose2d):
        return {key: int(getattr(module, key)) for key in CONV_KEYS}
    if type(module) is nn.BatchNorm2d:
        return {'num_features': int(module.num_features)}
    return None


def narrowed_conv(conv, widths):
    """A new conv of the same type and settings as ``conv`` with the planned channels and groups."""
    kwargs = dict(kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                  dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    if type(conv) is nn.ConvTranspose2d:
        kwargs['output_padding'] = conv.output_padding
    return type(conv)(widths['in_channels'], widths['out_channels'], groups=widths['groups'], **kwargs)


def narrowed_norm(norm, widths):
    """A new BatchNorm2d with the planned features and ``norm``'s eps, momentum and flags."""
    return nn.BatchNorm2d(widths['num_features'], eps=norm.eps, momentum=norm.momentum,
                          affine=norm.affine, track_running_stats=norm.track_running_stats)


def narrowed(module, widths, name):
    """The replacement of layer ``name`` for its plan entry ``widths``.

    Raises:
        ValueError: the layer's type cannot be narrowed, or the entry lacks a width.
    """
    keys = CONV_KEYS if type(module) in (nn.Conv2d, nn.ConvTranspose2d) else NORM_KEYS
    if plan_entry(module) is None:
        raise ValueError('width plan names {} ({}), which cannot be narrowed; only Conv2d, ConvTranspose2d '
                         'and BatchNorm2d can'.format(name, type(module).__name__))
    missing = [key for key in keys if key not in widths]
    if missing:
        raise ValueError('width plan entry {} lacks {}'.format(name, ', '.join(missing)))
    if keys is NORM_KEYS:
        return narrowed_norm(module, widths)
    return narrowed_conv(module, widths)


def apply_width_plan(model, plan):
    """Replace every layer the plan names with a narrower one; returns ``model`` (changed in place).

    The model remembers its plan as ``model.width_plan`` so that a trainer saving it can write
    the plan back into the checkpoint's ``arch_kwargs``.

    Args:
        model: the network as its builder made it.
        plan: ``{module name: {width: value}}`` (see the module docstring).

    Raises:
        ValueError: a name that is not a module of ``model``, or a layer that cannot be narrowed.

    Example:
        >>> model = apply_width_plan(networks.create_model('unet', base_width=8, depth=2), {})
        >>> model.width_plan
        {}
    """
    modules = dict(model.named_modules())
    for name in sorted(plan):
        if name not in modules or not name:
            raise ValueError('width plan names {!r}, which is not a layer of {}; the plan was made for another '
                             'network or version of its source'.format(name, type(model).__name__))
        parent_name, _, attribute = name.rpartition('.')
        setattr(modules[parent_name], attribute, narrowed(modules[name], plan[name], name))
    model.width_plan = {name: dict(plan[name]) for name in plan}
    return model
