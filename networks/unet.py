"""The classic UNet (Ronneberger et al., 2015) with batch norm.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch
import torch.nn as nn

from networks.blocks import ConvBNReLU, pad_to_multiple


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers: one UNet stage."""

    def __init__(self, in_channels, out_channels):
        super(DoubleConv, self).__init__(
            ConvBNReLU(in_channels, out_channels, 3),
            ConvBNReLU(out_channels, out_channels, 3),
        )


class UpStage(nn.Module):
    """Transposed-conv x2 upsampling, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels, out_channels):
        super(UpStage, self).__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x, skip):
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """UNet returning logits at the input resolution.

    Widths are ``base_width * 2**i`` for ``i = 0..depth``. Inputs whose sides
    are not multiples of ``2**depth`` are zero-padded internally and the
    logits cropped back.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        base_width: channels of the first stage.
        depth: number of 2x downsamplings.

    Example:
        >>> UNet(14, base_width=16, depth=3)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, in_channels=3, base_width=32, depth=4):
        super(UNet, self).__init__()
        if depth < 1:
            raise ValueError('UNet depth must be >= 1, got {}'.format(depth))
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.size_multiple = 2 ** depth
        self.stem = DoubleConv(in_channels, widths[0])
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(
            [DoubleConv(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList(
            [UpStage(widths[i + 1], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x):
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(self.pool(skips[-1])))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.head(x)[:, :, :height, :width]


def unet(num_classes=14, in_channels=3, base_width=32, depth=4):
    """Build a :class:`UNet`; the registry entry ``unet``.

    Example:
        >>> unet(14, base_width=16, depth=3)(torch.zeros(1, 3, 50, 70)).shape
        torch.Size([1, 14, 50, 70])
    """
    return UNet(num_classes=num_classes, in_channels=in_channels,
                base_width=base_width, depth=depth)
