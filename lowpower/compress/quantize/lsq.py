"""LSQ, Learned Step Size Quantization (Esser et al., ICLR 2020, arXiv 1902.08153), as the
``lsq`` fixed-point scheme (see the contract of ``fixed_point.scheme_quantizers``).

A b-bit tensor v with step size s becomes ``v_hat = round(clip(v / s, -Q_N, Q_P)) * s``; signed:
Q_N = 2**(b-1), Q_P = 2**(b-1) - 1; unsigned: Q_N = 0, Q_P = 2**b - 1. ``round`` is ``torch.round``,
round half to even: the paper writes round-to-nearest and its public PyTorch code calls ``.round()``.
(The ``range`` scheme rounds halves up; on the grid of s the two differ only on exact ties.)

Gradients, with r = v / s ("inside" means -Q_N < r < Q_P strictly, as ``F.hardtanh`` does):
    d v_hat / d v = 1 inside, 0 otherwise (straight-through round, clipped outside);
    d v_hat / d s = -r + round(r) inside, -Q_N if r <= -Q_N, Q_P if r >= Q_P   (paper eq. 3),
and the step-size gradient is multiplied by g = 1 / sqrt(N * Q_P) (paper section 2.2: N_W, "the
number of weights in a layer", for weight steps; N_F, "the number of features in a layer", for
activation steps). Here N is, per step size:
    weights, per-channel (dim 0): the elements of one output channel (numel / channels), since each
        channel's step only sees those; a 1-D or 0-D tensor (bias) is per-tensor: numel.
    activations: the elements of one example, numel / batch (C*H*W of a conv map), read as the
        paper's "features in a layer". Public code (torch's ``_LearnableFakeQuantize``, zhutmost/
        lsq-net) uses the whole batch's numel, a factor sqrt(batch) smaller g; ours does not change
        with the batch size.
Init: s = 2 * mean(|v|) / sqrt(Q_P) (paper section 2.1): weights at construction (per channel),
activations from the first batch seen (whether or not ``observe`` is set), with its signedness
(signed if that batch has a negative value), both then frozen in buffers.

Departures from the paper: per-channel weight steps (the paper learns one step per weight tensor);
the modules use max(|s|, 1e-8) in place of s, so a step pushed to or through zero by SGD cannot give
NaNs (the gradient is unchanged for s > 1e-8); an all-zero tensor or channel gets a fallback step.

Why not torch's ``torch.ao.quantization._learnable_fake_quantize._LearnableFakeQuantize``: it inits s
from an observer's min/max (not 2<|v|>/sqrt(Q_P)), carries a learned zero point, takes N from the
whole tensor even per channel, and writes ``scale.data`` in forward. Its op
(``torch._fake_quantize_learnable_per_tensor_affine``, with ``grad_factor``) rounds before it clamps,
so for Q_P < r < Q_P + 1/2 (and r = -Q_N, r = Q_P) it passes the value gradient and gives the inside
step gradient -r + round(r) instead of Q_P (measured on torch 2.14: its d/ds differs from eq. 3 x g
there), and it accepts float32 only. A 40-line autograd function matches eq. 3 exactly. Brevitas is
not installed, and a dependency for this much math is not worth it; its quantizers are configured by
injectors rather than the (bits, weight) constructor the contract asks for.

Example:
    >>> conv = nn.Conv2d(3, 4, 3)
    >>> from torch.nn.utils import parametrize
    >>> _ = parametrize.register_parametrization(conv, "weight", LsqWeightQuantizer(4, conv.weight.detach()))
    >>> act = LsqActivationQuantizer(6)
    >>> conv(act(torch.rand(2, 3, 8, 8))).shape
    torch.Size([2, 4, 6, 6])
"""
import math

import torch
from torch import nn

MIN_STEP = 1e-8


def lsq_bounds(bits, signed):
    """(Q_N, Q_P): the clip range is [-Q_N, Q_P] in steps.

    Example:
        >>> lsq_bounds(4, True), lsq_bounds(4, False)
        ((8, 7), (0, 15))
    """
    if bits < 2:
        raise ValueError("LSQ needs at least 2 bits (a signed 1-bit grid has Q_P = 0), got %r" % bits)
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def lsq_grad_scale(count, q_p):
    """g = 1 / sqrt(N * Q_P), the factor on a step size's gradient (paper section 2.2).

    Example:
        >>> lsq_grad_scale(100, 4)
        0.05
    """
    return 1.0 / math.sqrt(max(int(count), 1) * q_p)


def lsq_init_step(values, q_p, per_channel=False):
    """2 * mean(|v|) / sqrt(Q_P) (paper section 2.1); ``per_channel``: one per index of dim 0, shaped
    to broadcast against ``values``.

    Example:
        >>> lsq_init_step(torch.tensor([[1.0, -3.0], [0.5, 0.5]]), 4, per_channel=True).flatten().tolist()
        [2.0, 0.5]
    """
    magnitude = values.detach().abs()
    if per_channel:
        mean = magnitude.reshape(magnitude.shape[0], -1).mean(dim=1)
        return (2.0 * mean / math.sqrt(q_p)).reshape((-1,) + (1,) * (values.dim() - 1))
    return 2.0 * magnitude.mean() / math.sqrt(q_p)


class LsqQuantize(torch.autograd.Function):
    """``round(clip(v / s, -q_n, q_p)) * s`` with the LSQ gradients (module docstring). ``step`` is
    positive and broadcastable to ``values``; its gradient is summed to its shape and times ``grad_scale``."""

    @staticmethod
    def forward(ctx, values, step, q_n, q_p, grad_scale):
        ctx.save_for_backward(values, step)
        ctx.bounds = (q_n, q_p, grad_scale)
        levels = torch.round(torch.clamp(values / step, -q_n, q_p))
        return (levels * step).to(values.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        values, step = ctx.saved_tensors
        q_n, q_p, grad_scale = ctx.bounds
        ratio = values / step
        below, above = ratio <= -q_n, ratio >= q_p
        inside = ~(below | above)
        grad_values = None
        if ctx.needs_input_grad[0]:
            grad_values = (grad_output * inside).to(values.dtype)
        grad_step = None
        if ctx.needs_input_grad[1]:
            slope = torch.where(inside, torch.round(ratio) - ratio,
                                torch.where(below, torch.full_like(ratio, -q_n), torch.full_like(ratio, q_p)))
            grad_step = (grad_output * slope * grad_scale).sum_to_size(step.shape).to(step.dtype)
        return grad_values, grad_step, None, None, None


def lsq_quantize(values, step, q_n, q_p, grad_scale=1.0):
    """Fake-quantize ``values`` on the grid of ``step`` (see :class:`LsqQuantize`).

    Args:
        values: float tensor.
        step: positive step size(s), a tensor broadcastable to ``values`` (scalar, or (C, 1, ...)).
        q_n, q_p: the clip range in steps, from :func:`lsq_bounds`.
        grad_scale: g, from :func:`lsq_grad_scale`.

    Example:
        >>> lsq_quantize(torch.tensor([0.25, 0.75, 1.25, 9.0]), torch.tensor(0.5), 8, 7).tolist()
        [0.0, 1.0, 1.0, 3.5]
    """
    return LsqQuantize.apply(values, step, q_n, q_p, grad_scale)


def _positive(step):
    return step.abs().clamp_min(MIN_STEP)


class LsqWeightQuantizer(nn.Module):
    """A parametrization: the weight fake-quantized, signed, with a learned step per output channel.

    Args:
        bits: total width of this tensor (per instance: edge layers may get other widths).
        weight: the float parameter (its values set the initial steps; no reference is kept).
            Tensors of 2+ dims get one step per index of dim 0, 1-D / 0-D tensors (biases) one step.

    Example:
        >>> quantizer = LsqWeightQuantizer(4, torch.randn(8, 3, 3, 3))
        >>> quantizer.step.shape, quantizer(torch.randn(8, 3, 3, 3)).shape
        (torch.Size([8]), torch.Size([8, 3, 3, 3]))
    """

    def __init__(self, bits, weight):
        super().__init__()
        self.bits = bits
        self.q_n, self.q_p = lsq_bounds(bits, signed=True)
        weight = weight.detach()
        self.per_channel = weight.dim() >= 2
        # stored 1-D, (channels,): the trainer's optimizer exempts tensors of <= 1 dim from weight decay
        step = lsq_init_step(weight, self.q_p, self.per_channel).flatten() if self.per_channel else \
            lsq_init_step(weight, self.q_p)
        fallback = lsq_init_step(weight, self.q_p)  # a zero channel takes the tensor's step,
        if not fallback > 0:
            fallback = torch.tensor(1.0 / self.q_n)  # an all-zero tensor the grid of [-1, 1)
        step = torch.where(step > 0, step, fallback.to(step))
        self.step = nn.Parameter(step.to(device=weight.device, dtype=weight.dtype))

    def grad_scale(self, weight):
        """g for this tensor: N = elements of one channel (per-channel) or of the tensor."""
        count = weight.numel() // weight.shape[0] if self.per_channel else weight.numel()
        return lsq_grad_scale(count, self.q_p)

    def forward(self, weight):
        step = self.step.reshape((-1,) + (1,) * (weight.dim() - 1)) if self.per_channel else self.step
        return lsq_quantize(weight, _positive(step), self.q_n, self.q_p, self.grad_scale(weight))


class LsqActivationQuantizer(nn.Module):
    """Fake-quantizes activations with one learned step, initialised from the first batch it sees.

    ``initialized`` and ``signed`` are buffers (so a resumed model neither re-initialises nor changes
    sign); ``signed`` is whether that first batch had a negative value (ReLU outputs are unsigned).
    An all-zero first batch initialises nothing (any step holds it exactly). ``observe`` is accepted
    for the contract and ignored: the step is learned by the optimizer, not from statistics.

    Args:
        bits: total width (per instance).

    Example:
        >>> act = LsqActivationQuantizer(4)
        >>> _ = act(torch.rand(2, 3, 4, 4)); bool(act.initialized), bool(act.signed)
        (True, False)
    """

    def __init__(self, bits):
        super().__init__()
        self.bits = bits
        lsq_bounds(bits, signed=True)  # validates bits
        self.step = nn.Parameter(torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def bounds(self):
        """(Q_N, Q_P) for the signedness fixed at initialisation."""
        return lsq_bounds(self.bits, bool(self.signed))

    @staticmethod
    def features(values):
        """N_F: elements of one example (all of them for a tensor of fewer than 2 dims)."""
        return values.numel() // values.shape[0] if values.dim() >= 2 and values.shape[0] else values.numel()

    def forward(self, values, observe=False):
        if not bool(self.initialized):
            self._initialize(values.detach())
        q_n, q_p = self.bounds()
        grad_scale = lsq_grad_scale(self.features(values), q_p)
        return lsq_quantize(values, _positive(self.step), q_n, q_p, grad_scale)

    @torch.no_grad()
    def _initialize(self, values):
        if values.numel() == 0 or not bool((values != 0).any()):
            return
        signed = bool((values < 0).any())
        self.signed.fill_(signed)
        self.step.copy_(lsq_init_step(values.float(), lsq_bounds(self.bits, signed)[1]))
        self.initialized.fill_(True)
