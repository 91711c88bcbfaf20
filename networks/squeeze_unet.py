"""Squeeze U-Net (Beheshti & Johnsson, "Squeeze U-Net: A Memory and Energy
Efficient Image Segmentation Network", CVPR Workshops 2020).

A U-Net whose stages are SqueezeNet fire modules: two fire modules per
stage on the contracting path, and on the expansive path a transposed fire
module that upsamples x2, concatenation with the skip, then two fire
modules. The full-resolution stem and the last stage keep two plain 3x3
convs. Batch norm follows every conv.

At ``base_width=64`` the widths are expands 64-128-256-512 per branch and
squeezes 32-48-64-80 (the configuration public reimplementations use for
the paper's network, about 2.6 M parameters, in line with the paper's 12x
fewer than a 31 M U-Net); the default ``base_width=32`` matches ``unet``'s
default so the two compare at the same width.

Quantizable in eager mode: padding in float, concatenations through
``FloatFunctional``; the transposed convs keep their BN unfused (torch 1.10
cannot fold BN into a transposed conv), fused with the ReLU instead.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import ConvBNReLU, Fire, TransposedFire, pad_to_multiple
from networks.fusion import QuantizableNetwork, float_functional


class SqueezeUNet(QuantizableNetwork, nn.Module):
    """Squeeze U-Net returning logits at the input resolution.

    Stage ``i`` (1..depth, at 1/2**i resolution) has ``2 * expand_i``
    channels with ``expand_i = base_width * 2**(i-1)`` per expand branch and
    ``squeeze_i = base_width / 2 + (i - 1) * base_width / 4`` squeeze channels.
    Downsampling is 2x2 max-pooling as in U-Net. Inputs whose sides are not
    multiples of ``2**depth`` are zero-padded internally and cropped back.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        base_width: stem channels; the paper's network is ``base_width=64``.
        depth: number of 2x downsamplings.

    Example:
        >>> SqueezeUNet(14, base_width=16, depth=3)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, in_channels=3, base_width=32, depth=4):
        super(SqueezeUNet, self).__init__()
        if depth < 2:
            raise ValueError('SqueezeUNet depth must be >= 2, got {}'.format(depth))
        if base_width % 4:
            raise ValueError('base_width must be a multiple of 4, got {}'.format(base_width))
        expand = [base_width * 2 ** i for i in range(depth)]
        squeeze = [base_width // 2 + i * base_width // 4 for i in range(depth)]
        self.size_multiple = 2 ** depth
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, base_width, 3),
            ConvBNReLU(base_width, base_width, 3),
        )
        self.pool = nn.MaxPool2d(2)
        down = []
        previous = base_width
        for e, s in zip(expand, squeeze):
            down.append(nn.Sequential(Fire(previous, s, e, e), Fire(2 * e, s, e, e)))
            previous = 2 * e
        self.down = nn.ModuleList(down)
        up = []
        for i in reversed(range(depth - 1)):
            e, s = expand[i], squeeze[i]
            up.append(nn.ModuleDict({
                'up': TransposedFire(2 * expand[i + 1], squeeze[i + 1], e, e),
                'conv': nn.Sequential(Fire(4 * e, s, e, e), Fire(2 * e, s, e, e)),
            }))
        self.up = nn.ModuleList(up)
        self.last_up = nn.Sequential(
            nn.ConvTranspose2d(2 * expand[0], base_width, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(base_width),
            nn.ReLU(inplace=True),
        )
        self.last = nn.Sequential(
            ConvBNReLU(2 * base_width, base_width, 3),
            ConvBNReLU(base_width, base_width, 3),
        )
        self.head = nn.Conv2d(base_width, num_classes, kernel_size=1)
        # One FloatFunctional per concatenation: each gets its own int8 output scale.
        self.merge = nn.ModuleList([float_functional() for _ in range(depth)])
        self.add_quant_stubs()

    def forward(self, x):
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        stem = self.stem(self.quant(x))
        skips = []
        x = stem
        for stage in self.down:
            x = stage(self.pool(x))
            skips.append(x)
        x = skips.pop()
        for stage, merge in zip(self.up, self.merge):
            x = stage['conv'](merge.cat([skips.pop(), stage['up'](x)], dim=1))
        x = self.last(self.merge[-1].cat([stem, self.last_up(x)], dim=1))
        return self.dequant(self.head(x))[:, :, :height, :width]


def squeeze_unet(num_classes=14, in_channels=3, base_width=32, depth=4):
    """Build a :class:`SqueezeUNet`; the registry entry ``squeeze_unet``.

    Example:
        >>> squeeze_unet(14)(torch.zeros(1, 3, 50, 70)).shape
        torch.Size([1, 14, 50, 70])
    """
    return SqueezeUNet(num_classes=num_classes, in_channels=in_channels,
                       base_width=base_width, depth=depth)
