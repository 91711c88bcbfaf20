"""Small building blocks shared by the models in ``networks``.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import copy

import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn
import torch.nn.functional as F

from networks.fusion import float_functional


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
        activation: as in :class:`ConvBNReLU`, for both convs (an ``nn.Module`` is copied for the
            second, so each conv has its own).

    Example:
        >>> DepthwiseSeparableConv(16, 32)(torch.zeros(1, 16, 64, 64)).shape
        torch.Size([1, 32, 64, 64])
    """

    def __init__(self, in_channels, out_channels, stride=1, dilation=1, activation=True):
        second = copy.deepcopy(activation) if isinstance(activation, nn.Module) else activation
        super(DepthwiseSeparableConv, self).__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride=stride,
                       dilation=dilation, groups=in_channels, activation=activation),
            ConvBNReLU(in_channels, out_channels, 1, activation=second),
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


class Fire(nn.Module):
    """SqueezeNet fire module with batch norm: 1x1 squeeze, then parallel 1x1 and 3x3 expands.

    Output channels are ``expand1x1 + expand3x3`` (the two expands concatenated).

    Args:
        in_channels: input channels.
        squeeze: channels of the 1x1 squeeze conv.
        expand1x1: channels of the 1x1 expand conv.
        expand3x3: channels of the 3x3 expand conv.

    Example:
        >>> Fire(64, 16, 32, 32)(torch.zeros(1, 64, 32, 32)).shape
        torch.Size([1, 64, 32, 32])
    """

    def __init__(self, in_channels, squeeze, expand1x1, expand3x3):
        super(Fire, self).__init__()
        self.squeeze = ConvBNReLU(in_channels, squeeze, 1)
        self.expand1x1 = ConvBNReLU(squeeze, expand1x1, 1)
        self.expand3x3 = ConvBNReLU(squeeze, expand3x3, 3)
        self.merge = float_functional()  # the concatenation, int8-aware

    def forward(self, x):
        x = self.squeeze(x)
        return self.merge.cat([self.expand1x1(x), self.expand3x3(x)], dim=1)


class TransposedFire(nn.Module):
    """Transposed fire module (Squeeze U-Net): 1x1 squeeze, then two transposed-conv expands that upsample x2.

    The squeeze runs at the input resolution. The expands are a 1x1 and a
    2x2 transposed convolution, both with stride 2, so the output is exactly
    twice the input size; their outputs are concatenated. The 1x1 branch
    writes each input pixel to one corner of its 2x2 output block, the 2x2
    branch fills the whole block.

    Args:
        in_channels: input channels.
        squeeze: channels of the 1x1 squeeze conv.
        expand1x1: channels of the 1x1 transposed expand.
        expand2x2: channels of the 2x2 transposed expand.

    Example:
        >>> TransposedFire(128, 32, 32, 32)(torch.zeros(1, 128, 16, 16)).shape
        torch.Size([1, 64, 32, 32])
    """

    def __init__(self, in_channels, squeeze, expand1x1, expand2x2):
        super(TransposedFire, self).__init__()
        self.squeeze = ConvBNReLU(in_channels, squeeze, 1)
        self.expand1x1 = nn.Sequential(
            nn.ConvTranspose2d(squeeze, expand1x1, kernel_size=1, stride=2,
                               output_padding=1, bias=False),
            nn.BatchNorm2d(expand1x1),
            nn.ReLU(inplace=True),
        )
        self.expand2x2 = nn.Sequential(
            nn.ConvTranspose2d(squeeze, expand2x2, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(expand2x2),
            nn.ReLU(inplace=True),
        )
        self.merge = float_functional()  # the concatenation, int8-aware

    def forward(self, x):
        x = self.squeeze(x)
        return self.merge.cat([self.expand1x1(x), self.expand2x2(x)], dim=1)


def bn_relu_conv(in_channels, out_channels, kernel_size=1, groups=1, pool=None):
    """Pre-activation unit of DDRNet's DAPPM and PIDNet's PAPPM: [pool ->] BN -> ReLU -> conv (no bias).

    Example:
        >>> bn_relu_conv(8, 4, 3, pool=nn.AvgPool2d(2))(torch.zeros(1, 8, 8, 8)).shape
        torch.Size([1, 4, 4, 4])
    """
    layers = [] if pool is None else [pool]
    layers += [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
               nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)]
    return nn.Sequential(*layers)


def add_pyramid_scales(module, inplanes, branch_planes):
    """Give ``module`` the five branches DAPPM and PAPPM share, under the authors' names: ``scale1``-``scale3``
    average-pool with kernels 5/9/17 and strides 2/4/8 (padding half the kernel, so a 1x1 map pools to
    1x1), ``scale4`` pools globally, ``scale0`` does not pool; each then runs :func:`bn_relu_conv` (1x1).

    Example:
        >>> holder = nn.Module(); add_pyramid_scales(holder, 8, 4); holder.scale3[0].kernel_size
        17
    """
    pools = ((5, 2), (9, 4), (17, 8))
    for index, (kernel, stride) in enumerate(pools, 1):
        pool = nn.AvgPool2d(kernel, stride=stride, padding=kernel // 2)
        setattr(module, 'scale%d' % index, bn_relu_conv(inplanes, branch_planes, pool=pool))
    module.scale4 = bn_relu_conv(inplanes, branch_planes, pool=nn.AdaptiveAvgPool2d((1, 1)))
    module.scale0 = bn_relu_conv(inplanes, branch_planes)
