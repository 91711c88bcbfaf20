"""Small building blocks shared by the models in ``networks``.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch.nn as nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias, BN follows) -> BatchNorm2d -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the size at stride 1.
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups (``in_channels`` gives a depthwise conv).
        activation: ``True`` for ReLU, ``False`` for none, or an ``nn.Module``.

    Example:
        >>> ConvBNReLU(3, 16, stride=2)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 16, 32, 32])
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1,
                 dilation=1, groups=1, activation=True):
        padding = dilation * (kernel_size - 1) // 2
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is True:
            layers.append(nn.ReLU(inplace=True))
        elif isinstance(activation, nn.Module):
            layers.append(activation)
        super(ConvBNReLU, self).__init__(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv-BN-ReLU followed by pointwise 1x1 conv-BN-ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise conv.
        dilation: dilation of the depthwise conv.

    Example:
        >>> DepthwiseSeparableConv(16, 32)(torch.zeros(1, 16, 64, 64)).shape
        torch.Size([1, 32, 64, 64])
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1):
        super(DepthwiseSeparableConv, self).__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride=stride,
                       dilation=dilation, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


def resize_to(x, size):
    """Bilinearly resize a feature map to ``size`` (H, W), align_corners=False.

    Example:
        >>> resize_to(torch.zeros(1, 14, 8, 8), (64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def pad_to_multiple(x, multiple):
    """Zero-pad the bottom and right of ``x`` so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) so the caller can crop back.

    Example:
        >>> y, hw = pad_to_multiple(torch.zeros(1, 3, 60, 64), 16)
        >>> y.shape, hw
        (torch.Size([1, 3, 64, 64]), (60, 64))
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x, (height, width)
