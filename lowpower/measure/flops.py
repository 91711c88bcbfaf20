"""What a network costs, counted rather than timed: forward FLOPs and the size of its weights.

Example:
    >>> import torch
    >>> count_flops(torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 16, 16))  # 2 x 8*27*16*16
    110592
    >>> weights_megabytes(torch.nn.Linear(1000, 1000))
    (4.004, 2.002)
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

MB = 1e6


def count_flops(model, images):
    """The forward FLOPs of ``model(images)`` counted by torch's ``FlopCounterMode``: convolutions and
    matrix products, 2 FLOPs per multiply-add; element-wise ops, normalisation and interpolation are
    not counted."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(images)
    return counter.get_total_flops()


def weights_megabytes(model):
    """The state dict's size in MB (10^6 bytes) with floating tensors as fp32 and as fp16."""
    fp32 = fp16 = 0
    for tensor in model.state_dict().values():
        if tensor.is_floating_point():
            fp32 += tensor.numel() * 4
            fp16 += tensor.numel() * 2
        else:
            fp32 += tensor.numel() * tensor.element_size()
            fp16 += tensor.numel() * tensor.element_size()
    return fp32 / MB, fp16 / MB
