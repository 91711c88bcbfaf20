"""Fixed-point fake quantization of any zoo network, after AskariHemmat et al., "U-Net Fixed-Point
Quantization for Medical Image Segmentation" (arXiv 1908.01073).

The paper's quantizer represents a value by its sign, an integer part and a fractional part:
the magnitude is rounded to the nearest multiple of 2**-f (f fractional bits) and clamped to what
i integer bits hold. This module's "range" scheme does that, with the straight-through estimator
clipped (gradient 1 where the value lies inside the clamp range, 0 where it was clipped); the
authors' own code (``paper_scheme``, the "paper" scheme) also rounds weights to a power of two
first and passes the gradient everywhere. Every weight and every activation goes
through it during evaluation and fine-tuning (fake quantization: float tensors on the fixed-point
grid).

Our rule for a b-bit tensor (the paper fixes the integer/fractional split per tensor from its
range; we derive it from the largest magnitude m the tensor takes):

    sign bit        1 for tensors that take negative values (weights, pre-ReLU maps), 0 otherwise
    integer bits    i = floor(log2(m)) + 1, the fewest that hold m (negative when m < 0.5: the
                    binary point then lies left of the first stored bit, still a power-of-two scale)
    fractional bits f = b - sign - i
    value           sign(x) * min(round_half_up(|x| * 2**f), 2**(i+f) - 1) / 2**f
                    (an unsigned tensor clamps negatives to 0)

Weights take m from their current values on every forward (so the split follows them during
fine-tuning); activations take m as the running maximum seen during calibration and training.

BatchNorm layers that directly follow a convolution inside an ``nn.Sequential`` are folded into it
first, as a fixed-point device would run them; the folded weights and biases are quantized like any
other weight.

Example:
    >>> model = networks.create_model("unet", num_classes=14, base_width=8, depth=2)   # doctest: +SKIP
    >>> quantized = FixedPointModel(model, weight_bits=4, act_bits=6)                  # doctest: +SKIP
    >>> quantized.calibrate([torch.rand(2, 3, 64, 64)]); quantized.model.eval()        # doctest: +SKIP
    >>> quantized.weight_memory_bits(), quantized.activation_memory_bits((3, 64, 64))  # doctest: +SKIP
"""
import copy
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from lowpower.compress.quantize import lsq, paper_scheme
from lowpower.compress.quantize.fixed_point_layers import (  # noqa: F401 (activation_elements: part of this API)
    NOT_LAYERS,
    WEIGHTED,
    activation_elements,
    activation_tensors,
    leaf_modules,
)

FLOAT_BITS = 32

def round_half_up(values):
    """Round to the nearest integer, ties away from zero for the non-negative magnitudes used here.

    ``torch.round`` rounds ties to even; the paper's fixed-point rounding adds half an LSB and
    truncates, which on exact ties goes up. Both operations below are exact in floating point.

    Example:
        >>> round_half_up(torch.tensor([0.5, 1.5, 2.5, 2.4])).tolist()
        [1.0, 2.0, 3.0, 2.0]
    """
    floor = torch.floor(values)
    return torch.where(values - floor == 0.5, floor + 1, torch.round(values))


def fixed_point_format(max_abs, bits, signed):
    """(integer bits, fractional bits) of a ``bits``-wide format that holds ``max_abs``.

    Example:
        >>> fixed_point_format(3.2, 8, signed=True)    # 1 sign + 2 integer + 5 fractional bits
        (2, 5)
        >>> fixed_point_format(0.05, 4, signed=True)   # small weights: binary point left of the MSB
        (-4, 7)
    """
    magnitude_bits = bits - (1 if signed else 0)
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 0, magnitude_bits  # an all-zero tensor: any split represents it exactly
    int_bits = math.floor(math.log2(max_abs)) + 1
    return int_bits, magnitude_bits - int_bits


class FixedPointSTE(torch.autograd.Function):
    """Round-and-clamp to a fixed-point grid; straight-through gradient inside the clamp range.

    Example:
        >>> x = torch.tensor([0.3, 5.0], requires_grad=True)
        >>> y = FixedPointSTE.apply(x, 1, 2, True)   # grid step 0.25, largest magnitude 1.75
        >>> y.tolist(); y.sum().backward(); x.grad.tolist()
        [0.25, 1.75]
        [1.0, 0.0]
    """

    @staticmethod
    def forward(ctx, values, int_bits, frac_bits, signed):
        scale = 2.0 ** frac_bits
        top = (2.0 ** (int_bits + frac_bits) - 1) / scale  # largest representable magnitude
        magnitude = values.abs() if signed else values.clamp(min=0)
        levels = torch.clamp(round_half_up(magnitude * scale), max=2.0 ** (int_bits + frac_bits) - 1)
        lower = -top if signed else 0.0
        ctx.save_for_backward((values >= lower) & (values <= top))
        quantized = levels / scale
        return quantized * torch.sign(values) if signed else quantized

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return grad_output * inside.to(grad_output.dtype), None, None, None


def fixed_point(values, bits, max_abs=None, signed=None):
    """``values`` fake-quantized to ``bits`` by the module rule (see the module docstring).

    Args:
        values: any float tensor.
        bits: total width, sign bit included.
        max_abs: the magnitude the format must hold; default: the tensor's own.
        signed: keep a sign bit; default: whether the tensor has negative values.

    Example:
        >>> fixed_point(torch.tensor([0.7, -0.2]), 4).tolist()   # 1 sign, 0 integer, 3 fractional
        [0.75, -0.25]
    """
    detached = values.detach()
    if signed is None:
        signed = bool((detached < 0).any())
    if max_abs is None:
        max_abs = float(detached.abs().max()) if detached.numel() else 0.0
    int_bits, frac_bits = fixed_point_format(max_abs, bits, signed)
    return FixedPointSTE.apply(values, int_bits, frac_bits, signed)


class WeightQuantizer(nn.Module):
    """A parametrization: the weight as the network sees it is its fixed-point version (the range scheme).

    Args:
        bits: total width.
        weight: the tensor it will quantize (unused: the range follows the weight on every forward).
    """

    def __init__(self, bits, weight=None):
        super().__init__()
        self.bits = bits

    def forward(self, weight):
        return fixed_point(weight, self.bits)


class ActivationQuantizer(nn.Module):
    """Fake-quantizes activations with a range learnt from the data it sees.

    ``max_abs`` is the running maximum magnitude, ``signed`` whether a negative value was seen;
    both are updated when ``observe`` is true (calibration, training) and fixed otherwise.
    """

    def __init__(self, bits):
        super().__init__()
        self.bits = bits
        self.register_buffer("max_abs", torch.zeros(()))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def forward(self, values, observe=False):
        if observe:
            detached = values.detach()
            self.max_abs.copy_(torch.maximum(self.max_abs, detached.abs().max().float()))
            self.signed.copy_(self.signed | (detached < 0).any())
        return fixed_point(values, self.bits, float(self.max_abs), bool(self.signed))


def fold_batchnorm(model):
    """Fold every BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential`` into the conv.

    The conv gets the per-channel scale and shift (and a bias), the BatchNorm becomes an Identity,
    so the network computes the same in eval mode. Returns the number of folded pairs.

    Example:
        >>> seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> fold_batchnorm(seq), type(seq[1]).__name__
        (1, 'Identity')
    """
    folded = 0
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = sequential._modules[first], sequential._modules[second]
            if not (type(conv) is nn.Conv2d and type(norm) is nn.BatchNorm2d and norm.track_running_stats):
                continue
            with torch.no_grad():
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
                conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)
            sequential._modules[second] = nn.Identity()
            folded += 1
    return folded


SCHEMES = ("range", "paper", "lsq")
# Schemes that quantize only the output of each conv block (its nonlinearity), not every tensor: the
# authors quantize only the block outputs (conv -> ReLU -> BatchNorm -> quantize, paper_scheme's
# docstring); our blocks end conv -> BatchNorm -> ReLU, so their quantizer goes after the ReLU.
BLOCK_OUTPUTS_ONLY = ("paper",)
NONLINEAR = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU, nn.Sigmoid)


def fused_into_next(model):
    """The modules whose output a device never stores, because it fuses them with the next module of
    their ``nn.Sequential``: a conv or linear layer followed by a BatchNorm (folded into it), and a
    BatchNorm followed by a nonlinearity (conv-BN-ReLU runs as one kernel). Their outputs are not
    quantized; quantizing a conv's output before its BatchNorm adds error no fused device has.

    Example:
        >>> block = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        >>> [type(module).__name__ for module in fused_into_next(block)]
        ['Conv2d', 'BatchNorm2d']
    """
    fused = []
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(sequential.children())
        for first, second in zip(children, children[1:]):
            if (isinstance(first, WEIGHTED) and isinstance(second, nn.BatchNorm2d)) or (
                    isinstance(first, nn.BatchNorm2d) and isinstance(second, NONLINEAR)):
                fused.append(first)
    return fused


def scheme_quantizers(scheme):
    """(weight quantizer class, activation quantizer class) of a scheme; see the module docstrings.

    range: this module's rule, the split from each tensor's range; paper: the authors' quantizer and
    splits (``paper_scheme``); lsq: learned step sizes (``lsq``, Esser et al. 2020).

    Example:
        >>> scheme_quantizers("range") == (WeightQuantizer, ActivationQuantizer)
        True
    """
    if scheme == "range":
        return WeightQuantizer, ActivationQuantizer
    if scheme == "paper":
        return paper_scheme.PaperWeightQuantizer, paper_scheme.PaperActivationQuantizer
    if scheme == "lsq":
        return lsq.LsqWeightQuantizer, lsq.LsqActivationQuantizer
    raise ValueError("unknown fixed-point scheme %r; choose one of %s" % (scheme, ", ".join(SCHEMES)))


class FixedPointModel:
    """A deep copy of ``model`` with fixed-point weights and activations (the float model is kept).

    Weights: a parametrization on every parameter of every leaf module (``torch.nn.utils.
    parametrize``), so gradients reach the float weights through the straight-through estimator.
    Activations: a forward hook on every leaf module quantizes its output, and a pre-hook on every
    weighted layer quantizes its input; not the outputs of modules a device fuses with the next
    (:func:`fused_into_next`), and under the paper scheme only the nonlinearities' outputs
    (:data:`BLOCK_OUTPUTS_ONLY`). No network file changes. The memory figures count every stored
    tensor at its width either way, as a device that fuses conv, BatchNorm and activation stores them.

    Args:
        model: a float network (left untouched).
        weight_bits, act_bits: total widths.
        fold_bn: fold conv-BatchNorm pairs first (see :func:`fold_batchnorm`).
        scheme: the quantizers, one of :data:`SCHEMES` (see :func:`scheme_quantizers`).
        edge_bits: when given, the first and the last weighted layer (in registration order: the
            stem and the classifier of the zoo's networks) use this width for their weights, their
            inputs and their outputs, as low-bit networks usually keep them; 32 keeps them float.
        weights_only: quantize only the weights of the weighted layers (:data:`WEIGHTED`); biases and
            normalisation parameters stay float and count 32 bits in the memory figures (as the
            authors and LSQ train; a training run keeps BatchNorm, which cannot be folded while its
            statistics still move).

    Example:
        >>> fp = FixedPointModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 4, 6)
        >>> fp.calibrate([torch.rand(1, 3, 8, 8)]); fp.model(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, model, weight_bits, act_bits, fold_bn=True, scheme="range", edge_bits=None,
                 weights_only=False):
        self.model = copy.deepcopy(model).eval()
        self.weight_bits, self.act_bits, self.scheme, self.edge_bits = weight_bits, act_bits, scheme, edge_bits
        self.folded = fold_batchnorm(self.model) if fold_bn else 0
        self.quantizers = nn.ModuleList()
        self.calibrating = False
        self.enabled = True
        self.weight_quantizer, self.activation_quantizer = scheme_quantizers(scheme)
        self.edges = self._edge_modules()
        self.param_bits = []  # (elements, bits) of every parameter, for the memory figures
        fused = fused_into_next(self.model)
        for _, module in leaf_modules(self.model):
            bits, act = (edge_bits, edge_bits) if module in self.edges else (weight_bits, act_bits)
            if bits >= FLOAT_BITS:  # an edge layer kept float, as the authors kept theirs
                self.param_bits.extend((param.numel(), FLOAT_BITS) for param in module.parameters(recurse=False))
                continue
            for name, param in list(module.named_parameters(recurse=False)):
                if weights_only and not (isinstance(module, WEIGHTED) and name == "weight"):
                    self.param_bits.append((param.numel(), FLOAT_BITS))  # a bias or a norm's scale: float
                    continue
                self.param_bits.append((param.numel(), bits))
                parametrize.register_parametrization(module, name, self.weight_quantizer(bits, param.detach()))
            if isinstance(module, WEIGHTED) and scheme not in BLOCK_OUTPUTS_ONLY:
                module.fixed_point_input = self._new_quantizer(act)
                module.register_forward_pre_hook(self._input_hook)
            if module not in fused and (scheme not in BLOCK_OUTPUTS_ONLY or isinstance(module, NONLINEAR)):
                module.fixed_point_output = self._new_quantizer(act)
                module.register_forward_hook(self._output_hook)

    def _edge_modules(self):
        """The first and last weighted leaf modules when ``edge_bits`` is set, else none."""
        weighted = [module for _, module in leaf_modules(self.model) if isinstance(module, WEIGHTED)]
        return [weighted[0], weighted[-1]] if self.edge_bits and weighted else []

    def _new_quantizer(self, bits):
        self.quantizers.append(self.activation_quantizer(bits))
        return self.quantizers[-1]

    def _quantize(self, quantizer, module, values):
        if not torch.is_tensor(values) or not values.is_floating_point():
            return values
        if not self.enabled:
            return values
        return quantizer(values, observe=self.calibrating or module.training)

    # The hooks find their quantizer on the module they run for, so that a copy of the network
    # (copy.deepcopy) quantizes with its own quantizers, not the original's.
    def _input_hook(self, module, inputs):
        return (self._quantize(module.fixed_point_input, module, inputs[0]),) + tuple(inputs[1:])

    def _output_hook(self, module, inputs, output):
        return self._quantize(module.fixed_point_output, module, output)

    @torch.no_grad()
    def calibrate(self, batches):
        """Learn the activation ranges from ``batches`` of images (eval mode, no gradients)."""
        self.model.eval()
        self.calibrating = True
        try:
            for images in batches:
                self.model(images)
        finally:
            self.calibrating = False

    def weight_memory_bits(self):
        """Bits to store every parameter: its layer's width (``weight_bits``, or ``edge_bits``) x its elements,
        32 for a parameter left float (``weights_only``).
        A learned scheme's own parameters (step sizes) are not counted: one number per tensor or channel."""
        return sum(elements * bits for elements, bits in self.param_bits)

    def activation_elements(self, input_shape):
        """Elements of the activations of one image of ``input_shape`` (C, H, W), see
        :func:`activation_elements`; counted with the activation quantizers switched off."""
        self.enabled = False
        try:
            return activation_elements(self.model, input_shape)
        finally:
            self.enabled = True

    def activation_memory_bits(self, input_shape):
        """Bits to hold every activation of one image: each tensor's elements x the width it is stored
        at (``edge_bits`` for the inputs and outputs of the edge layers, ``act_bits`` otherwise)."""
        self.enabled = False
        try:
            tensors = activation_tensors(self.model, input_shape, self.edges)
        finally:
            self.enabled = True
        return sum(elements * (self.edge_bits if wide else self.act_bits) for elements, wide in tensors)
