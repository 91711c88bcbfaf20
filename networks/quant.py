"""Eager-mode int8 quantization helpers that work on torch 1.10 and torch 2.x alike.

Device-side code: Python 3.6 syntax and the torch 1.10 API only; every difference between the
two APIs is found by feature detection (hasattr / ImportError), never by a version check:

- torch 1.10 has the full API in ``torch.quantization``; its ``torch.ao.quantization`` exists
  but re-exports only part of it (no ``QConfig``, ``QuantStub`` or observers), so ``api()``
  checks for those names, not for the package.
- ``fuse_modules_qat`` exists from torch 1.11; in 1.10 ``fuse_modules`` makes QAT modules
  (ConvBn2d) when the model is in train mode and folds BN into the conv in eval mode.
- the ``x86`` and ``onednn`` engines exist only in torch 2.x builds; the Jetson's 1.10 has
  ``qnnpack`` only. ``select_engine`` falls back with a warning.

A network follows the convention of ``networks/__init__.py``: ``quant``/``dequant`` stubs,
``FloatFunctional`` for tensor add/cat/mul, and ``fuse_model(qat=False)``.

Example:
    >>> engine, warning = select_engine('x86')
    >>> model = prepare_ptq(networks.create_model('unet', base_width=8, depth=2), engine)
    >>> _ = model(torch.rand(2, 3, 64, 64))   # calibration: observers record ranges
    >>> int8 = convert_int8(model)
    >>> int8(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 14, 64, 64])
"""
import warnings

import torch
import torch.nn as nn

# Engines whose int8 kernels (fbgemm's) accumulate in a way that overflows with the full 8-bit
# activation range; torch's own defaults use reduce_range=True for exactly these.
REDUCE_RANGE_ENGINES = ('fbgemm', 'x86')
# qnnpack is the one engine torch's default qconfigs give per-tensor weights; we follow it so the
# Jetson (qnnpack only) gets the kernels torch tests there.
PER_TENSOR_ENGINES = ('qnnpack',)
# What to try, in order, when the wanted engine is missing: an engine of the same rounding rule.
FALLBACK_ORDER = {
    'x86': ('fbgemm', 'onednn', 'qnnpack'),
    'fbgemm': ('x86', 'onednn', 'qnnpack'),
    'onednn': ('x86', 'fbgemm', 'qnnpack'),
    'qnnpack': ('x86', 'fbgemm', 'onednn'),
}


# Modules kept in float inside int8 networks. Quantized ConvTranspose2d gives wrong outputs on the
# x86, fbgemm and onednn engines of torch 2.14 (errors larger than the outputs for some channel
# counts; qnnpack is right); kept float on every engine so an int8 state dict has one layout
# whatever engine loads it.
FLOAT_MODULE_TYPES = (nn.ConvTranspose2d,)


class FloatIsland(nn.Module):
    """Runs ``module`` in float inside an int8 network: dequantize, module, quantize again.

    Example:
        >>> island = FloatIsland(nn.ConvTranspose2d(8, 4, 2, stride=2))
    """

    def __init__(self, module):
        super(FloatIsland, self).__init__()
        self.dequant = api().DeQuantStub()
        self.module = module
        self.module.qconfig = None  # a module's own qconfig wins over the model's in prepare
        self.quant = api().QuantStub()

    def forward(self, x):
        return self.quant(self.module(self.dequant(x)))


def isolate_float_modules(model):
    """Wrap every FLOAT_MODULE_TYPES submodule of ``model`` in a FloatIsland, in place; returns model.

    Example:
        >>> unet = networks.create_model('unet', base_width=8, depth=2)
        >>> isolate_float_modules(unet).up[0].up
        FloatIsland(
          (dequant): DeQuantStub()
          (module): ConvTranspose2d(32, 16, kernel_size=(2, 2), stride=(2, 2))
          (quant): QuantStub()
        )
    """
    for name, child in list(model.named_children()):
        if isinstance(child, FLOAT_MODULE_TYPES) and not isinstance(model, FloatIsland):
            setattr(model, name, FloatIsland(child))
        elif not isinstance(child, FloatIsland):
            isolate_float_modules(child)
    return model


def api():
    """The eager quantization namespace: ``torch.ao.quantization`` where it is complete, else
    ``torch.quantization`` (torch 1.10's partial ``torch.ao.quantization`` lacks QConfig).

    Example:
        >>> api().QuantStub()
        QuantStub()
    """
    try:
        import torch.ao.quantization as candidate
    except ImportError:
        candidate = None
    if candidate is not None and all(hasattr(candidate, name) for name in
                                      ('QConfig', 'QuantStub', 'HistogramObserver', 'prepare', 'convert')):
        return candidate
    import torch.quantization as legacy
    return legacy


def nnq():
    """The quantized module namespace: ``torch.ao.nn.quantized`` (torch >= 1.13) or ``torch.nn.quantized``.

    Example:
        >>> int8 = int8_skeleton(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> isinstance(int8.head, nnq().Conv2d)
        True
    """
    try:
        import torch.ao.nn.quantized as quantized
    except ImportError:
        import torch.nn.quantized as quantized
    return quantized


def fuse_modules(module, groups, qat=False):
    """Fuse conv-bn(-relu) groups of ``module`` in place and return it.

    Args:
        module: the network; its training mode is restored afterwards.
        groups: lists of submodule names, e.g. ``[['conv', 'bn', 'relu'], ['down.0', 'down.1']]``.
        qat: fuse for quantization-aware training (BN kept, trained with the conv) instead of
            folding BN into the conv for inference.

    Example:
        >>> block = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
        >>> [type(layer).__name__ for layer in fuse_modules(block, [['0', '1', '2']])]
        ['ConvReLU2d', 'Identity', 'Identity']
    """
    groups = [list(group) for group in groups]
    if not groups:
        return module
    quantization = api()
    was_training = module.training
    if qat and hasattr(quantization, 'fuse_modules_qat'):
        module.train()
        quantization.fuse_modules_qat(module, groups, inplace=True)
    else:
        # torch 1.10 picks QAT or inference fusion from the modules' training flag.
        module.train(bool(qat))
        quantization.fuse_modules(module, groups, inplace=True)
    module.train(was_training)
    return module


def supported_engines():
    """The quantized engines this torch build has, without the placeholder 'none'.

    Example:
        >>> supported_engines()
        ['qnnpack', 'onednn', 'x86', 'fbgemm']
    """
    return [name for name in torch.backends.quantized.supported_engines if name != 'none']


def select_engine(wanted):
    """Set ``torch.backends.quantized.engine`` to ``wanted`` or, if this build lacks it, to a fallback.

    Returns:
        ``(engine actually set, warning text or None)``.

    Raises:
        RuntimeError: this torch has no quantized engine at all.

    On the Jetson's torch 1.10 (qnnpack only) the call below returns ``('qnnpack', "quantized engine
    'x86' is not in this torch (it has: qnnpack); using 'qnnpack'")``; a torch 2.x workstation has x86.

    Example:
        >>> select_engine('x86')          # a torch 2.x workstation
        ('x86', None)
    """
    available = supported_engines()
    if not available:
        raise RuntimeError('this torch build has no quantized engine; int8 models cannot run here')
    if wanted in available:
        torch.backends.quantized.engine = wanted
        return wanted, None
    preferred = [name for name in FALLBACK_ORDER.get(wanted, ()) if name in available]
    chosen = (preferred or available)[0]
    torch.backends.quantized.engine = chosen
    return chosen, "quantized engine {!r} is not in this torch (it has: {}); using {!r}".format(
        wanted, ', '.join(available), chosen)


def per_channel(engine):
    """Whether weights are quantized per output channel for ``engine`` (all but qnnpack).

    Example:
        >>> per_channel('x86'), per_channel('qnnpack')
        (True, False)
    """
    return engine not in PER_TENSOR_ENGINES


def qconfig(engine, qat=False):
    """The QConfig for ``engine``: histogram-calibrated activations for PTQ, moving-average
    fake-quant for QAT; per-channel weights where the engine supports them.

    Built from observers present in torch 1.10 and 2.x, not from ``get_default_qconfig``, which
    in 1.10 does not know 'x86' or 'onednn' and silently returns per-tensor settings for them.

    Example:
        >>> model = networks.create_model('unet', base_width=8, depth=2)
        >>> model.qconfig = qconfig('x86')
    """
    quantization = api()
    reduce_range = engine in REDUCE_RANGE_ENGINES
    if qat:
        activation = quantization.FakeQuantize.with_args(
            observer=quantization.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
            reduce_range=reduce_range)
        weight = (quantization.default_per_channel_weight_fake_quant if per_channel(engine)
                  else quantization.default_weight_fake_quant)
    else:
        activation = quantization.HistogramObserver.with_args(reduce_range=reduce_range)
        weight = (quantization.default_per_channel_weight_observer if per_channel(engine)
                  else quantization.default_weight_observer)
    return quantization.QConfig(activation=activation, weight=weight)


def use_engine(engine):
    """Make ``engine`` the current quantized engine (weights are packed for it at convert and load).

    Raises:
        ValueError: this torch lacks ``engine``; call ``select_engine`` to get a fallback.
    """
    if engine not in supported_engines():
        raise ValueError('quantized engine {!r} is not in this torch (it has: {}); use select_engine()'.format(
            engine, ', '.join(supported_engines())))
    torch.backends.quantized.engine = engine


def prepare_ptq(model, engine):
    """Fuse ``model`` for inference and insert observers for post-training calibration.

    Example:
        >>> model = prepare_ptq(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> _ = model(torch.rand(2, 3, 64, 64))   # calibration images
        >>> int8 = convert_int8(model)
    """
    use_engine(engine)
    model.eval()
    model.fuse_model()
    isolate_float_modules(model)
    model.qconfig = qconfig(engine)
    api().prepare(model, inplace=True)
    return model


def prepare_qat(model, engine):
    """Fuse ``model`` for training and insert fake-quant modules (quantization-aware training).

    Example:
        >>> model = prepare_qat(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> model(torch.rand(2, 3, 64, 64)).sum().backward()   # training steps
        >>> int8 = convert_int8(model)
    """
    use_engine(engine)
    model.train()
    model.fuse_model(qat=True)
    isolate_float_modules(model)
    model.qconfig = qconfig(engine, qat=True)
    api().prepare_qat(model, inplace=True)
    return model


def convert_int8(model):
    """Swap the observed (or fake-quantized) modules for int8 ones; returns the model in eval mode.

    Example:
        >>> model = prepare_ptq(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> _ = model(torch.rand(2, 3, 64, 64))
        >>> convert_int8(model)(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    model.eval()
    api().convert(model, inplace=True)
    return model


def int8_skeleton(model, engine):
    """The int8 structure an int8 state dict loads into: fuse, prepare and convert without data.

    The scales in it are placeholders until ``load_state_dict`` sets the calibrated ones.

    Example:
        >>> calibrated = prepare_ptq(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> _ = calibrated(torch.rand(2, 3, 64, 64))
        >>> state = convert_int8(calibrated).state_dict()   # what an int8 checkpoint holds
        >>> model = int8_skeleton(networks.create_model('unet', base_width=8, depth=2), 'x86')
        >>> model.load_state_dict(state)
        <All keys matched successfully>
    """
    with warnings.catch_warnings():
        # Uncalibrated observers warn that they return default scales; here that is intended.
        warnings.simplefilter('ignore')
        return convert_int8(prepare_ptq(model, engine))
