"""The layers of a network as the fixed-point quantizer sees them, and the activations they make.

A layer is a leaf module that produces a new activation (:func:`leaf_modules`); a weighted layer
(:data:`WEIGHTED`) has its input quantized too. :func:`activation_tensors` counts the activation
memory of one image.

Example:
    >>> activation_elements(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), (3, 2, 2))
    28
"""
import torch
from torch import nn

# The attributes of a layer that hold the quantizers of its input and output: children of the layer, so
# that a learned step trains, saves, loads and moves with the network, its key beside the layer's own.
QUANTIZER_NAMES = ("fixed_point_input", "fixed_point_output")
NOT_LAYERS = ("parametrizations",) + QUANTIZER_NAMES
# Modules whose outputs are not new activations (they pass their input on, or hold no data).
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten)
# Modules that multiply their input by weights: their inputs are quantized too, which covers the
# image and every functional result (interpolate, cat, add) that feeds a layer.
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


def leaf_modules(model):
    """(name, module) of every module without children (its weight parametrizations aside) that
    produces a new activation."""
    # A weight's quantizer (module.parametrizations.weight.0) is a leaf too, but what it makes is the
    # weight as the layer sees it, not an activation; an activation quantizer is not a layer either.
    return [(name, module) for name, module in model.named_modules()
            if name and not isinstance(module, PASS_THROUGH) and not set(name.split(".")) & set(NOT_LAYERS)
            and all(child in NOT_LAYERS for child, _ in module.named_children())]


def activation_elements(model, input_shape):
    """Elements of the distinct activation tensors one image of ``input_shape`` (C, H, W) creates.

    Example:
        >>> activation_elements(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True)), (3, 2, 2))
        28
    """
    return sum(elements for elements, _ in activation_tensors(model, input_shape))


@torch.no_grad()
def activation_tensors(model, input_shape, edges=()):
    """(elements, whether a module of ``edges`` reads or writes it) of each distinct activation tensor
    one image of ``input_shape`` (C, H, W) creates.

    Counted: the outputs of every leaf module and the inputs of every weighted layer (the image,
    and results of interpolate / cat / add that feed a layer). Each storage counts once, so an
    in-place ReLU does not count its input again; all tensors are kept alive while counting, so a
    freed address reused by a later tensor cannot hide it.

    Example:
        >>> activation_tensors(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True)), (3, 2, 2))
        [(12, False), (16, False)]
    """
    seen, wide = {}, set()

    def keep(values, module):
        if torch.is_tensor(values) and values.is_floating_point():
            seen.setdefault(values.data_ptr(), values)
            if module in edges:
                wide.add(values.data_ptr())

    handles = []
    for _, module in leaf_modules(model):
        handles.append(module.register_forward_hook(lambda module, inputs, output: keep(output, module)))
        if isinstance(module, WEIGHTED):
            handles.append(module.register_forward_pre_hook(lambda module, inputs: keep(inputs[0], module)))
    training = model.training
    try:
        model.eval()
        device = next(iter(model.parameters()), torch.zeros(())).device
        model(torch.zeros((1,) + tuple(input_shape), device=device))
        return [(values.numel(), address in wide) for address, values in seen.items()]
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
