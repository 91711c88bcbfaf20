"""Find the conv-bn(-relu) groups of a zoo network and fuse them for eager-mode int8.

Every quantizable network's ``fuse_model(qat)`` calls :func:`fuse_for_quantization`,
so the groups are found the same way everywhere instead of being listed by hand
per network:

- inside containers that run their children in order (``nn.Sequential``, and classes that say
  so with a class attribute ``runs_children_in_order = True``, such as
  ``networks.resnet.IntermediateLayerGetter``): runs of Conv2d-BN(-ReLU), Conv2d-ReLU and
  BN-ReLU (the BN after a transposed conv, which torch 1.10 cannot fuse into it);
- modules whose layers are attributes and whose class lists its groups in a class attribute
  ``fuse_groups`` (the quantizable ResNet blocks of ``networks.resnet`` and the
  squeeze-excitation of ``networks.mobilenet_blocks``: the groups torchvision's own
  ``fuse_model`` uses for the classes they copy).

Both are class attributes rather than a table of classes here, so this module imports no
network code and a package ships only the network files its model needs.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.

Example:
    >>> from networks.blocks import ConvBNReLU
    >>> fuse_groups(nn.Sequential(ConvBNReLU(3, 8)))
    [['0.0', '0.1', '0.2']]
"""
import torch.nn as nn

from networks import quant


def runs_in_order(module):
    """Whether ``module`` applies its children one after the other, in registration order.

    Example:
        >>> runs_in_order(nn.Sequential()), runs_in_order(nn.ModuleDict())
        (True, False)
    """
    return isinstance(module, nn.Sequential) or getattr(type(module), 'runs_children_in_order', False)


def _is(module, kind):
    # Exact types: a fused or already-quantized module must not match again.
    return type(module) is kind


def sequence_groups(children):
    """Fusable runs among ``children``, a list of ``(name, module)`` applied in order.

    Example:
        >>> sequence_groups([('0', nn.Conv2d(3, 8, 3)), ('1', nn.BatchNorm2d(8)), ('2', nn.ReLU())])
        [['0', '1', '2']]
    """
    groups = []
    index = 0
    while index < len(children):
        kinds = [type(module) for _, module in children[index:index + 3]]
        if kinds[:2] == [nn.Conv2d, nn.BatchNorm2d]:
            size = 3 if kinds[2:] == [nn.ReLU] else 2
        elif kinds[:2] in ([nn.Conv2d, nn.ReLU], [nn.BatchNorm2d, nn.ReLU]):
            size = 2
        else:
            size = 1
        if size > 1:
            groups.append([name for name, _ in children[index:index + size]])
        index += size
    return groups


def attribute_groups(module):
    """The groups the class of ``module`` lists in ``fuse_groups``, or [] for a class without them.

    Example:
        >>> attribute_groups(nn.Conv2d(3, 8, 3))
        []
    """
    groups = getattr(type(module), 'fuse_groups', ())
    # The same run rule as in containers: a group whose layers are (no longer) conv-bn-relu is skipped.
    return [found for group in groups
            for found in sequence_groups([(name, getattr(module, name)) for name in group])]


def fuse_groups(model):
    """Every fusable group of ``model`` as lists of dotted submodule names.

    Example:
        >>> fuse_groups(networks.create_model('unet', base_width=8, depth=1))[0]
        ['stem.0.0', 'stem.0.1', 'stem.0.2']
    """
    groups = []
    for prefix, module in model.named_modules():
        dot = prefix + '.' if prefix else ''
        if runs_in_order(module):
            local = sequence_groups(list(module.named_children()))
        else:
            local = attribute_groups(module)
        groups.extend([dot + name for name in group] for group in local)
    return groups


def fuse_for_quantization(model, qat=False):
    """Fuse every conv-bn(-relu) group of ``model`` in place (``fuse_model`` of the zoo).

    Args:
        model: a zoo network.
        qat: fuse for quantization-aware training (BN kept) instead of folding BN.

    Example:
        >>> model = networks.create_model('unet', base_width=8, depth=2).eval()
        >>> fuse_for_quantization(model) is model
        True
    """
    quant.fuse_modules(model, fuse_groups(model), qat)
    return model


def float_functional():
    """A ``FloatFunctional`` (add, cat, mul that int8 conversion turns into quantized ops).

    Example:
        >>> float_functional().cat([torch.zeros(1, 2), torch.ones(1, 3)], dim=1).shape
        torch.Size([1, 5])
    """
    return quant.nnq().FloatFunctional()


def keep_missing_heads(network, state_dict, prefix):
    """Put into ``state_dict`` (in place) the current tensors of each module in the class's
    ``aux_modules`` that ``state_dict`` has no key of, so a checkpoint written before the
    auxiliary heads existed loads with ``strict=True`` and those heads keep their weights."""
    for name in type(network).aux_modules:
        head = prefix + name + '.'
        if not any(key.startswith(head) for key in state_dict):
            state_dict.update(getattr(network, name).state_dict(prefix=head))


class QuantizableNetwork(object):
    """Mixin of the quantizable zoo networks: the flag, the stubs and ``fuse_model``.

    The network calls ``self.add_quant_stubs()`` in ``__init__`` and applies
    ``self.quant`` to its input and ``self.dequant`` to its output; both are
    identity in float mode and hold no parameters, so float state dicts keep
    their keys.
    """

    quantizable = True

    def add_quant_stubs(self):
        self.quant = quant.api().QuantStub()
        self.dequant = quant.api().DeQuantStub()

    def fuse_model(self, qat=False):
        """Fuse the conv-bn(-relu) groups in place for int8 (see :func:`fuse_for_quantization`)."""
        fuse_for_quantization(self, qat)
