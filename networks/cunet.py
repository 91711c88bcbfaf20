"""Compact UNet after C-UNet (Bahl, Daniel, Moretti & Lafarge, "Low-power
neural networks for semantic segmentation of satellite images", ICCV
Workshops 2019).

C-UNet makes U-Net fit low-power hardware by cutting the number of stages
and filters and by using depthwise-separable convolutions. This network
keeps those three ideas; the exact layer counts are ours:

- ``depth`` 2x downsamplings (3 by default, against U-Net's 4), widths
  ``base_width * 2**i`` (16-32-64-128 by default, against 32-...-512);
- every 3x3 conv but the very first (3 input channels) is
  depthwise-separable;
- parameter-free bilinear upsampling instead of transposed convs, so any
  input size works without padding.

Quantizable in eager mode: concatenations through ``FloatFunctional``.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import ConvBNReLU, DepthwiseSeparableConv, resize_to
from networks.fusion import QuantizableNetwork, float_functional


class CompactUNet(QuantizableNetwork, nn.Module):
    """Compact UNet returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        base_width: channels of the full-resolution stage.
        depth: number of stages below full resolution (2x downsamplings).

    Example:
        >>> CompactUNet(14, base_width=8, depth=2)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, in_channels=3, base_width=16, depth=3):
        super(CompactUNet, self).__init__()
        if depth < 1:
            raise ValueError('CompactUNet depth must be >= 1, got {}'.format(depth))
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, widths[0], 3),
            DepthwiseSeparableConv(widths[0], widths[0]),
        )
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList([
            nn.Sequential(DepthwiseSeparableConv(widths[i], widths[i + 1]),
                          DepthwiseSeparableConv(widths[i + 1], widths[i + 1]))
            for i in range(depth)])
        self.up = nn.ModuleList([
            nn.Sequential(DepthwiseSeparableConv(widths[i] + widths[i + 1], widths[i]),
                          DepthwiseSeparableConv(widths[i], widths[i]))
            for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        # One FloatFunctional per concatenation: each gets its own int8 output scale.
        self.merge = nn.ModuleList([float_functional() for _ in range(depth)])
        self.add_quant_stubs()

    def forward(self, x):
        skips = [self.stem(self.quant(x))]
        for stage in self.down:
            skips.append(stage(self.pool(skips[-1])))
        x = skips.pop()
        for stage, merge in zip(self.up, self.merge):
            skip = skips.pop()
            x = stage(merge.cat([skip, resize_to(x, skip.shape[-2:])], dim=1))
        return self.dequant(self.head(x))


def cunet(num_classes=14, in_channels=3, base_width=16, depth=3):
    """Build a :class:`CompactUNet`; the registry entry ``cunet``.

    Example:
        >>> cunet(14)(torch.zeros(1, 3, 50, 70)).shape
        torch.Size([1, 14, 50, 70])
    """
    return CompactUNet(num_classes=num_classes, in_channels=in_channels,
                       base_width=base_width, depth=depth)
