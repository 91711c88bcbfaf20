"""The authors' fixed-point quantizer, as their code runs it: the ``paper`` scheme of ``fixed_point``.

AskariHemmat et al., "U-Net Fixed-Point Quantization for Medical Image Segmentation" (arXiv 1908.01073);
code: github.com/hossein1387/U-Net-Fixed-Point-Quantization-for-Medical-Image-Segmentation, commit 9e46e3f.
Paths below are in that repository (EM = UNET_EM_DATASET, GM = UNET_GM_DATASET, NIH = UNET_NIH_DATASET);
every run folder symlinks the code of its dataset's BASE folder and keeps only its own config.yaml.
The ``range`` scheme (``fixed_point.WeightQuantizer``/``ActivationQuantizer``) is ours, not theirs: a
b-bit uniform grid whose split follows each tensor's range, round half up, gradient 0 where clipped.

The repository holds TWO different ``fixed_nn`` quantizers; both are here, both for weights
(layers.py L86, ``Conv2dQuant.forward``) and activations (layers.py L17, ``QuantLayer.forward``):

``pow2`` -- EM/UNET_EM_DATASET_BASE/quantize.py (the EM runs): ``PaperWeightQuantizer``,
``PaperActivationQuantizer``, the ``paper`` scheme.
    L69  forward: ``to_fixed_point(to_nearest_power_of_two(x), i, f)``: round, THEN clamp.
    L10  ``sign(v) * 2**round(log(|v|) / log(2))``: the exponent is rounded (torch.round, ties to
         even), so the threshold between 2**k and 2**(k+1) is the geometric mean 2**(k+1/2): the
         arithmetic midpoint (0.75, 1.5, 3) goes UP. Sign kept; 0 stays 0 (log 0 = -inf). There is
         no smallest exponent: 1e-30 stays 2**-100, f never sets a resolution.
    L16-24  symmetric clamp to +-(M_i + M_f), M_i = 2**(i-1) (0 when i = 0), M_f = sum 2**-k for
         k = 1..f = 1 - 2**-f (0 when f = 0). w0_4: +-0.9375, so |w| >= 0.75 gives 0.9375, not a
         power of two; a6_0: +-32, a8_8: +-128.996. (The masks there turn +-inf into NaN; we clamp.)
``uniform`` -- GM/UNET_Quant_Base/quantize.py = NIH/UNET_QUANT_NIH_BASE/quantize.py (the GM and NIH
runs): ``PaperUniformWeightQuantizer``, ``PaperUniformActivationQuantizer``.
    L79  forward: ``to_fixed_point(x, i, f)``; the power-of-two line is commented out (L80) and the
         clamp above renamed ``_to_fixed_point`` (L18), unused.
    L31-35  sign-magnitude: ``sign(v) * round_clamp(frac(|v|), f) + sign(v) * round_clamp(floor(|v|), i)``
    L13-16  ``round_clamp(W, n) = W.clamp(0, 2**n - 1) * 2**n, torch.round (ties to even), / 2**n``.
         So the integer part saturates at 2**i - 1 but the fraction is kept (i = 0: |v| is taken
         modulo 1, 1.3 -> 0.25 at w0_2); the fraction rounds to 2**-f and may round up to 1
         (0.9 -> 1.0 at w0_2); f = 0 clamps the fraction to 0, so a6_0 is sign * min(floor|v|, 63).
Backward, both: identity, ``return dx, None, None`` (EM quantize.py L72-74; GM/NIH L83-85): the
gradient passes unchanged everywhere, also where the value was clamped (the ``range`` scheme zeroes
it there, and ``fixed_point``'s docstring says the paper does).

Splits (``PAPER_SPLITS``): folder ``a<i>_<f>_w<i>_<f>`` (GM: ``UNET_Quant_<ai>_<af>_<wi>_<wf>``) =
config.yaml L8-11 ``activation_f_width``, ``activation_i_width``, ``weight_f_width``, ``weight_i_width``;
their width is i + f (the sign is not counted): the abstract's "4 bits for weights and 6 bits for
activations" is w0_4 / a6_0. Trained runs (operation_mode "normal"): EM a4_0_w0_2, a6_0_w0_2
(nested in a4_0_w0_2), a6_0_w0_4, a8_0_w0_8; NIH a4_0_w0_2, a6_0_w0_4, a8_0_w0_8, a8_8_w8_8; GM 2_0_0_2,
4_0_0_2, 6_0_0_4, 8_0_0_8, 8_8_8_8 (and *_with_drop_out copies). Only for "visualize" (left out):
GM Base a5_1_w0_3, a4_0_w0_3 (named a4_0_w0_4), a3_3_w3_3 (named a8_8_w8_8).

Where the code differs from the paper's and the issue's summary (the paper body was not at hand;
its abstract only gives w4/a6):
- the power of two is only in EM's quantizer; GM and NIH ran the uniform sign-magnitude one;
- "tanh": GM configs (6_0_0_4 L14, 8_0_0_8 L13, 4_0_0_2 L13, 8_8_8_8 L13) and EM a6_0_w0_4 L13 say
  ``activation: "tanh"``, but models.py (GM Base L45-48, NIH BASE L44-47) only knows "ternarytanh";
  anything else is ``F.relu`` -- the "tanh" runs ran ReLU (EM's models.py is not in the index; EM
  a8_0_w0_8 L17 says "ternarytanh"; NIH configs L14 say "relu");
- layout (GM models.py L44-59): conv -> ReLU -> BatchNorm -> quantize; the first stage's two convs
  (``firstlayer``, L28-33, L92) and the last conv (L115) are float; biases are float
  (layers.py L91 passes ``self.bias``), BatchNorm is neither folded nor quantized, and only the
  BatchNorm outputs are quantized (not the input, pooling, upsampling or the logits);
- weight init: ``uniform(-1, 1)`` (layers.py L70 with ``H=1``, models.py L29), not Glorot;
- pairs: w4/a6 and w8/a8 ran; w4/a8 and w6/a6 never did (no 6-bit weights at all: ``paper_split``
  extends their pattern to them).
Training (for the docs): from scratch with the quantizer in place (operation_mode "normal" loads no
checkpoint: EM em_unet.py L133-142, GM gmchallenge_unet.py L98-103, NIH nih_unet.py L86-87), Adam at
config lr (L3: 1e-3; NIH a8_8_w8_8 2.5e-3; GM 2_0_0_2 1e-4 for 400 epochs; GM *_with_drop_out
4_0_0_2, 6_0_0_4, 8_0_0_8 1e-4), num_epochs L4: 200 (EM a4_0_w0_2: 40). Schedule: EM MultiStepLR
x0.1 at epochs 40, 80, 120, 160 (em_unet.py L156-160), loss 0.5 BCE-with-logits + 0.5 dice on the
sigmoid outputs (L34-35, L193), batch 5; GM and NIH CosineAnnealingLR(T_max=epochs)
(gmchallenge_unet.py L122-123, nih_unet.py L112-113), dice loss, batch 16.
"""
import torch
from torch import nn

PAPER_SPLITS = {  # width -> (integer bits, fractional bits), from the trained runs' config.yaml
    "weight": {2: (0, 2), 4: (0, 4), 8: (0, 8), 16: (8, 8)},
    "activation": {2: (2, 0), 4: (4, 0), 6: (6, 0), 8: (8, 0), 16: (8, 8)},
}
# (weight bits, activation bits) the authors trained, and on which datasets.
PAPER_PAIRS = {(2, 2): ("GM",), (2, 4): ("EM", "GM", "NIH"), (2, 6): ("EM",), (4, 6): ("EM", "GM", "NIH"),
               (8, 8): ("EM", "GM", "NIH"), (16, 16): ("GM", "NIH")}


def paper_split(kind, bits):
    """(integer bits, fractional bits) the authors used for a ``bits``-wide ``kind`` ('weight' or 'activation').

    A width up to 8 that they never ran (6-bit weights, 5-bit activations) follows the pattern of the
    ones they did (:func:`follows_their_pattern`): weights all fractional, activations all integer.

    Example:
        >>> paper_split("weight", 4), paper_split("activation", 6), paper_split("weight", 6)
        ((0, 4), (6, 0), (0, 6))
    """
    table = PAPER_SPLITS[kind]
    if bits in table:
        return table[bits]
    if bits <= 8:
        return (0, bits) if kind == "weight" else (bits, 0)
    raise ValueError("the authors ran no %s-bit %ss, and above 8 bits their splits follow no pattern (their %s "
                     "widths are %s, arXiv 1908.01073 configs)"
                     % (bits, kind, kind, ", ".join(str(width) for width in sorted(table))))


def follows_their_pattern(kind, bits):
    """True for a width the authors never ran whose split :func:`paper_split` extends from theirs:
    every weight width up to 8 is Q0.b in their configs (w0_2, w0_4, w0_8), every activation width
    Qb.0 (a2_0, a4_0, a6_0, a8_0).

    Example:
        >>> follows_their_pattern("weight", 6), follows_their_pattern("weight", 4)
        (True, False)
    """
    return bits not in PAPER_SPLITS[kind] and bits <= 8


def power_of_two_round(values):
    """``sign(v) * 2**round(log(|v|) / log(2))`` (EM quantize.py L10), in ``values``' dtype; 0 stays 0.

    Example:
        >>> power_of_two_round(torch.tensor([0.75, 0.7, -3.0, 0.0])).tolist()
        [1.0, 0.5, -4.0, 0.0]
    """
    exponent = torch.round(torch.log(values.abs()) / torch.log(values.new_tensor(2.0)))
    return torch.sign(values) * 2 ** exponent


def clamp_bound(int_bits, frac_bits):
    """The magnitude EM's ``to_fixed_point`` clamps to (L16-20): ``2**(i-1)`` (0 if i = 0) + ``1 - 2**-f``.

    Example:
        >>> clamp_bound(0, 4), clamp_bound(6, 0), clamp_bound(8, 8)
        (0.9375, 32.0, 128.99609375)
    """
    whole = 2.0 ** (int_bits - 1) if int_bits != 0 else 0.0
    return whole + sum(2.0 ** -k for k in range(1, frac_bits + 1))


def pow2_fixed_point(values, int_bits, frac_bits):
    """EM's forward (quantize.py L69): the nearest power of two, then the symmetric clamp."""
    bound = clamp_bound(int_bits, frac_bits)
    return torch.clamp(power_of_two_round(values), -bound, bound)


def round_clamp(values, bits):
    """GM/NIH ``round_clamp`` (quantize.py L13-16): clamp to [0, 2**bits - 1], round to a multiple of 2**-bits."""
    return values.clamp(0, 2 ** bits - 1).mul(2 ** bits).round().div(2 ** bits)


def uniform_fixed_point(values, int_bits, frac_bits):
    """GM/NIH forward (``to_fixed_point``, quantize.py L31-35): sign-magnitude integer and fraction.

    Example:
        >>> uniform_fixed_point(torch.tensor([0.3, 0.9, 1.3, -2.7]), 0, 2).tolist()
        [0.25, 1.0, 0.25, -0.75]
    """
    sign, magnitude = torch.sign(values), values.abs()
    fraction = sign * round_clamp(magnitude - magnitude.floor(), frac_bits)
    whole = sign * round_clamp(magnitude.floor(), int_bits)
    return whole + fraction


RULES = {"pow2": pow2_fixed_point, "uniform": uniform_fixed_point}


class StraightThrough(torch.autograd.Function):
    """``rule(values, i, f)`` forward; the gradient passes unchanged (their ``FixedNN.backward``)."""

    @staticmethod
    def forward(ctx, values, rule, int_bits, frac_bits):
        return RULES[rule](values, int_bits, frac_bits)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None, None, None


def paper_weight_quantize(values, int_bits, frac_bits, rule="pow2"):
    """Weights as ``Conv2dQuant`` sees them (layers.py L86): ``fixed_nn(w, weight_i, weight_f)``.

    Example:
        >>> paper_weight_quantize(torch.tensor([0.8, 0.3, -0.05, 2.0]), 0, 4).tolist()
        [0.9375, 0.25, -0.0625, 0.9375]
    """
    return StraightThrough.apply(values, rule, int_bits, frac_bits)


def paper_activation_quantize(values, int_bits, frac_bits, rule="pow2"):
    """Activations as ``QuantLayer`` makes them (layers.py L17): the same ``fixed_nn`` with the
    activation widths.

    Example:
        >>> paper_activation_quantize(torch.tensor([0.3, 40.0, -3.0]), 6, 0).tolist()
        [0.25, 32.0, -4.0]
    """
    return StraightThrough.apply(values, rule, int_bits, frac_bits)


class PaperWeightQuantizer(nn.Module):
    """A parametrization: the weight through the authors' EM quantizer (power of two, then clamp).

    No parameters or buffers: the split is fixed by ``bits`` (:data:`PAPER_SPLITS`), so the state
    dict is empty. ``weight`` is not used (the contract passes it).
    """

    rule = "pow2"

    def __init__(self, bits, weight):
        super().__init__()
        self.bits = bits
        self.int_bits, self.frac_bits = paper_split("weight", bits)

    def forward(self, weight):
        return paper_weight_quantize(weight, self.int_bits, self.frac_bits, self.rule)

    def extra_repr(self):
        extended = ", their pattern" if follows_their_pattern("weight", self.bits) else ""
        return "bits=%d, Q%d.%d, rule=%s%s" % (self.bits, self.int_bits, self.frac_bits, self.rule, extended)


class PaperActivationQuantizer(nn.Module):
    """Activations through the authors' EM quantizer; nothing is observed (``observe`` is ignored)."""

    rule = "pow2"

    def __init__(self, bits):
        super().__init__()
        self.bits = bits
        self.int_bits, self.frac_bits = paper_split("activation", bits)

    def forward(self, values, observe=False):
        return paper_activation_quantize(values, self.int_bits, self.frac_bits, self.rule)

    def extra_repr(self):
        extended = ", their pattern" if follows_their_pattern("activation", self.bits) else ""
        return "bits=%d, Q%d.%d, rule=%s%s" % (self.bits, self.int_bits, self.frac_bits, self.rule, extended)


class PaperUniformWeightQuantizer(PaperWeightQuantizer):
    """The GM/NIH quantizer (sign-magnitude, no power of two) for weights."""

    rule = "uniform"


class PaperUniformActivationQuantizer(PaperActivationQuantizer):
    """The GM/NIH quantizer (sign-magnitude, no power of two) for activations."""

    rule = "uniform"
