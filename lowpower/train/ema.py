"""``train.ema``: an exponential moving average (EMA) of the weights, for validation and ``best.pt``.

After every optimiser step the average moves towards the trained weights:
``ema = d_t * ema + (1 - d_t) * weights``, with ``d_t = decay * (1 - exp(-t / warmup))`` at its
``t``-th update (the first update copies the weights). The warm-up keeps the average from
remembering the random initial weights: early on ``d_t`` is near 0. BatchNorm running statistics
are averaged the same way; integer buffers (``num_batches_tracked``) are copied.

The average lives in torch's own :class:`torch.optim.swa_utils.AveragedModel`; only the update rule
is ours, because torch's ``get_ema_multi_avg_fn`` has no warm-up. The raw weights keep training and
stay in ``last.pt`` (with the average beside them, so a resumed run continues both bit for bit);
validation and ``best.pt`` use the average. Under torchrun every rank updates its own copy from the
same all-reduced weights, so the copies stay in step without communication.

Example:
    >>> model = torch.nn.Linear(2, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> ema = WeightAverage(model, decay=0.99, warmup=10).follow(opt)
    >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> torch.equal(ema.module.weight, model.weight)  # the first update copies
    True
"""
import math

import torch
from torch.optim.swa_utils import AveragedModel


def decay_at(update, decay, warmup):
    """The EMA decay of the ``update``-th update (1 = the first after the copy).

    Example:
        >>> round(decay_at(100, 0.999, 100), 4), decay_at(5, 0.9, 0)
        (0.6315, 0.9)
    """
    return decay * (1.0 - math.exp(-update / warmup)) if warmup > 0 else decay


def ema_update(decay, warmup):
    """A ``multi_avg_fn`` for :class:`AveragedModel`: float tensors lerp by ``1 - d_t``, others copy."""

    @torch.no_grad()
    def update(averaged, current, num_averaged):
        weight = 1.0 - decay_at(int(num_averaged), decay, warmup)
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)

    return update


class WeightAverage:
    """The EMA of a model's parameters and buffers.

    Args:
        model: the unwrapped model being trained (not a DDP wrapper).
        decay: the decay once warmed up (0.999 in mmsegmentation and timm).
        warmup: e-folding length of the warm-up, in optimiser steps; 0: no warm-up.
    """

    def __init__(self, model, decay, warmup):
        self.model = model
        self.averaged = AveragedModel(model, multi_avg_fn=ema_update(decay, warmup), use_buffers=True)

    @classmethod
    def from_config(cls, cfg, model):
        """The run's average when ``train.ema`` is on, else None."""
        train = cfg["train"]
        return cls(model, train["ema_decay"], train["ema_warmup"]) if train["ema"] else None

    @property
    def module(self):
        """The averaged network (validate it, save it as ``best.pt``'s weights)."""
        return self.averaged.module

    def update(self):
        self.averaged.update_parameters(self.model)

    def follow(self, optimizer):
        """Update after every step ``optimizer`` takes (a step that AMP's scaler skips does not count)."""
        optimizer.register_step_post_hook(lambda *_: self.update())
        return self

    def state_dict(self):
        return self.averaged.state_dict()

    def load_state_dict(self, state):
        self.averaged.load_state_dict(state)
