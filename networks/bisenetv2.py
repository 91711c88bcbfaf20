"""BiSeNet V2 (Yu, Gao, Wang, Yu, Shen & Sang, "BiSeNet V2: Bilateral Network
with Guided Aggregation for Real-time Semantic Segmentation", IJCV 2021,
arXiv:2004.02147).

Two branches run side by side on the image:

- Detail branch: wide and shallow, plain 3x3 conv-BN-ReLU layers,
  64-64-128 channels, output stride 8 (paper Table 1, stages S1-S3).
- Semantic branch: narrow and deep, output stride 32: a stem block (16
  channels, stride 4), gather-and-expansion layers (expansion 6) at
  32, 64 and 128 channels, and a context embedding block (global average
  pooling, residual) at the end.

The bilateral guided aggregation layer lets each branch gate the other
(sigmoid attention at both 1/8 and 1/32) and the segmentation head (3x3
conv to ``head_channels``, 1x1 classifier) works at 1/8; its logits are
upsampled bilinearly to the input size. The auxiliary heads of the paper's
booster training are not built: the model returns only the main logits.

Upsampling is to the exact size of the other branch rather than by a fixed
factor, so sizes that are not multiples of 32 work. Batch norm after the
global pooling needs more than one image per batch in training mode.

Quantizable in eager mode: every add, product and concatenation between
activations goes through its own ``FloatFunctional``.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.blocks import ConvBNReLU, resize_to
from networks.fusion import QuantizableNetwork, float_functional


def conv_bn(in_channels, out_channels, kernel_size=3, stride=1, groups=1):
    """Conv2d (no bias) followed by BatchNorm2d, no activation."""
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride=stride,
                      groups=groups, activation=False)


class DetailBranch(nn.Sequential):
    """Stages S1-S3 of the detail branch: 3x3 conv-BN-ReLU, stride 2 at each stage start."""

    def __init__(self, in_channels=3):
        layers = []
        previous = in_channels
        for channels, repeats in ((64, 2), (64, 3), (128, 3)):
            for index in range(repeats):
                layers.append(ConvBNReLU(previous, channels, 3, stride=2 if index == 0 else 1))
                previous = channels
        super(DetailBranch, self).__init__(*layers)


class StemBlock(nn.Module):
    """Semantic-branch stem: conv stride 2, then strided conv and max-pool branches, fused; output stride 4."""

    def __init__(self, in_channels=3, out_channels=16):
        super(StemBlock, self).__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3, stride=2)
        self.left = nn.Sequential(
            ConvBNReLU(out_channels, out_channels // 2, 1),
            ConvBNReLU(out_channels // 2, out_channels, 3, stride=2),
        )
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels, 3)
        self.merge = float_functional()

    def forward(self, x):
        x = self.conv(x)
        return self.fuse(self.merge.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer (paper Fig. 5 b, c).

    3x3 conv-BN-ReLU, depthwise 3x3 expanding the channels ``expansion``
    times (stride 2 variant: a strided depthwise conv, then a second
    depthwise conv), 1x1 projection with BN, residual add, ReLU. The stride
    2 shortcut is a strided depthwise 3x3 and a 1x1 conv, each with BN.
    """

    def __init__(self, in_channels, out_channels, stride=1, expansion=6):
        super(GatherExpansion, self).__init__()
        expanded = in_channels * expansion
        layers = [
            ConvBNReLU(in_channels, in_channels, 3),
            conv_bn(in_channels, expanded, 3, stride=stride, groups=in_channels),
        ]
        if stride == 2:
            layers.append(conv_bn(expanded, expanded, 3, groups=expanded))
        layers.append(conv_bn(expanded, out_channels, 1))
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride=stride, groups=in_channels),
                conv_bn(in_channels, out_channels, 1),
            )
        self.residual = float_functional()  # add then ReLU, one int8 op

    def forward(self, x):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.residual.add_relu(self.body(x), shortcut)


class ContextEmbedding(nn.Module):
    """Context embedding block: global average pool, BN, 1x1 conv-BN-ReLU, broadcast add, 3x3 conv-BN-ReLU."""

    def __init__(self, channels):
        super(ContextEmbedding, self).__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gap_conv = ConvBNReLU(channels, channels, 1)
        self.conv = ConvBNReLU(channels, channels, 3)
        self.merge = float_functional()

    def forward(self, x):
        context = self.gap_conv(self.bn(F.adaptive_avg_pool2d(x, 1)))
        return self.conv(self.merge.add(x, context.expand_as(x)))


class SemanticBranch(nn.Sequential):
    """Stem (S1-S2), GE layers (S3-S5) and the context embedding block; output stride 32."""

    def __init__(self, in_channels=3):
        super(SemanticBranch, self).__init__(
            StemBlock(in_channels, 16),
            GatherExpansion(16, 32, stride=2), GatherExpansion(32, 32),
            GatherExpansion(32, 64, stride=2), GatherExpansion(64, 64),
            GatherExpansion(64, 128, stride=2), GatherExpansion(128, 128),
            GatherExpansion(128, 128), GatherExpansion(128, 128),
            ContextEmbedding(128),
        )


class GuidedAggregation(nn.Module):
    """Bilateral guided aggregation layer (paper Fig. 6).

    Detail features are gated by upsampled semantic features at 1/8; the
    detail features downsampled to 1/32 are gated by the semantic features,
    then upsampled; the sum goes through a 3x3 conv and BN.
    """

    def __init__(self, channels=128):
        super(GuidedAggregation, self).__init__()
        self.detail_keep = nn.Sequential(
            conv_bn(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.detail_down = nn.Sequential(
            conv_bn(channels, channels, 3, stride=2),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.semantic_up = conv_bn(channels, channels, 3)
        self.semantic_keep = nn.Sequential(
            conv_bn(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.fuse = conv_bn(channels, channels, 3)
        self.gate_high = float_functional()
        self.gate_low = float_functional()
        self.merge = float_functional()

    def forward(self, detail, semantic):
        size = detail.shape[-2:]
        high = self.gate_high.mul(self.detail_keep(detail),
                                  torch.sigmoid(resize_to(self.semantic_up(semantic), size)))
        low = self.detail_down(detail)
        low = self.gate_low.mul(low, torch.sigmoid(resize_to(self.semantic_keep(semantic), low.shape[-2:])))
        return self.fuse(self.merge.add(high, resize_to(low, size)))


class BiSeNetV2(QuantizableNetwork, nn.Module):
    """BiSeNet V2 returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        head_channels: channels of the segmentation head's 3x3 conv (1024 in
            the paper's Cityscapes model; the head holds most of the FLOPs).

    Example:
        >>> BiSeNetV2(14, head_channels=128)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, in_channels=3, head_channels=1024):
        super(BiSeNetV2, self).__init__()
        self.detail = DetailBranch(in_channels)
        self.semantic = SemanticBranch(in_channels)
        self.aggregation = GuidedAggregation(128)
        self.head = nn.Sequential(
            ConvBNReLU(128, head_channels, 3),
            nn.Dropout(0.1),
            nn.Conv2d(head_channels, num_classes, kernel_size=1),
        )
        self.add_quant_stubs()

    def forward(self, x):
        x_int8 = self.quant(x)
        features = self.aggregation(self.detail(x_int8), self.semantic(x_int8))
        return self.dequant(resize_to(self.head(features), x.shape[-2:]))


def bisenetv2(num_classes=14, in_channels=3, head_channels=1024):
    """Build a :class:`BiSeNetV2`; the registry entry ``bisenetv2``.

    Example:
        >>> bisenetv2(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return BiSeNetV2(num_classes=num_classes, in_channels=in_channels, head_channels=head_channels)
