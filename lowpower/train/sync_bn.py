"""BatchNorm statistics over the global batch of a torchrun run, on GPUs and on the CPU (gloo).

``torch.nn.SyncBatchNorm`` is CUDA-only: its forward raises for CPU tensors (it needs
``torch.batch_norm_stats`` and friends, which have no CPU kernel). :class:`CpuSyncBatchNorm` does
the same job on the CPU with one differentiable all-reduce per layer, so ``train.sync_bn`` also
works for gloo runs (tests/test_sync_bn.py checks it against a single process on the whole batch).

Example:
    >>> model = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), "cpu")
    >>> type(model[0]).__name__
    'CpuSyncBatchNorm'
"""
import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over all processes, whose backward sums the gradients over all processes too.

    The same as ``torch.distributed.nn.functional.all_reduce``, which torch deprecates (a
    FutureWarning) for a private replacement: this keeps to the public ``dist.all_reduce``.
    """

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        # Every rank's output depends on this rank's input, so its gradient is the sum of theirs.
        return _AllReduceSum.apply(grad.contiguous())


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are those of all processes' batches together.

    In training mode, with a process group initialised, the mean and (biased) variance come from
    every rank's per-channel sum, sum of squares and pixel count, added up by a differentiable
    all-reduce, so the gradients cross ranks as with ``torch.nn.SyncBatchNorm``; the running
    statistics follow ``nn.BatchNorm2d``'s rule for the global batch. In eval mode, or without a
    process group, it is ``nn.BatchNorm2d``. Its state_dict is ``nn.BatchNorm2d``'s.

    Every rank must call forward and backward the same number of times (they are collectives).

    Args: those of ``nn.BatchNorm2d``.

    Example:
        >>> norm = CpuSyncBatchNorm(3).train()   # no process group here: plain BatchNorm2d
        >>> norm(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        channels, count = x.shape[1], x.numel() // x.shape[1]
        dims, shape = [0, 2, 3], (1, channels, 1, 1)
        # float32 values even under autocast (bf16 loses the variance), sums in float64: E[x^2] - E[x]^2
        # cancels badly when the mean is large against the spread. The squares are taken about a constant
        # c (this rank's mean, detached), as sum(x^2) = sum((x - c)^2) + 2c sum(x) - n c^2 for any c.
        with torch.autocast(x.device.type, enabled=False):
            values = x.float()
            local_sum = values.sum(dims, dtype=torch.float64)
            shift = (local_sum.detach() / max(count, 1)).float()
            squares = (values - shift.view(shape)).square().sum(dims, dtype=torch.float64)
            shift = shift.double()
            squares = squares + 2 * shift * local_sum - count * shift * shift
            total = _AllReduceSum.apply(torch.cat([local_sum, squares, local_sum.new_full((1,), count)]))
            everywhere = total[-1].item()
            if everywhere <= 1:
                raise ValueError("Expected more than 1 value per channel when training, got input size %s "
                                 "on this process and %d values in all" % (tuple(x.shape), everywhere))
            mean = total[:channels] / everywhere
            var = (total[channels:2 * channels] / everywhere - mean * mean).clamp(min=0)
            self._update_running_stats(mean.detach(), var.detach(), everywhere)
            scale = torch.rsqrt(var.float() + self.eps)
            if self.weight is not None:
                scale = scale * self.weight.float()
            # Centred first, as BatchNorm2d does: x * scale - mean * scale loses digits when |mean| >> std.
            centred = values - mean.float().view(shape)
            if self.bias is None:
                out = centred * scale.view(shape)
            else:
                out = torch.addcmul(self.bias.float().view(shape), centred, scale.view(shape))
        return out.to(x.dtype)

    def _update_running_stats(self, mean, var, count):
        """nn.BatchNorm2d's update: momentum, or the cumulative average when momentum is None."""
        if not self.track_running_stats:
            return
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        with torch.no_grad():
            if self.running_mean is not None:
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
            if self.running_var is not None:
                unbiased = var * (count / (count - 1))
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def convert_sync_batchnorm(model, device):
    """Make ``model``'s BatchNorm layers compute their statistics over all processes' batches.

    Args:
        model: an ``nn.Module``; on the CPU it is changed in place (and returned).
        device: the training device (``torch.device`` or its name). On CUDA the result is
            ``torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)``; elsewhere every ``nn.BatchNorm2d``
            (or subclass) that is not already a :class:`CpuSyncBatchNorm` becomes one, holding the
            same parameters and buffers (the same tensors), eps, momentum, train/eval mode and
            ``qconfig``. Hooks registered on the old layers are not carried over (as with torch's).

    Returns:
        The model, whose state_dict has the same keys and values as before.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> model = convert_sync_batchnorm(model, torch.device("cpu"))
        >>> isinstance(model[1], CpuSyncBatchNorm), list(model.state_dict())[2:4]
        (True, ['1.weight', '1.bias'])
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, nn.BatchNorm2d) and not isinstance(model, CpuSyncBatchNorm):
        return _synced_copy(model)
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, device))
    return model


def _synced_copy(norm):
    synced = CpuSyncBatchNorm(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
    # The same Parameter objects: requires_grad, device and any optimiser reference stay valid.
    synced.weight, synced.bias = norm.weight, norm.bias
    synced.running_mean, synced.running_var = norm.running_mean, norm.running_var
    synced.num_batches_tracked = norm.num_batches_tracked
    synced.training = norm.training
    if hasattr(norm, "qconfig"):
        synced.qconfig = norm.qconfig
    return synced


def count_synchronised(model):
    """How many of ``model``'s BatchNorm layers compute their statistics over every process."""
    return sum(isinstance(m, (nn.SyncBatchNorm, CpuSyncBatchNorm)) for m in model.modules())
