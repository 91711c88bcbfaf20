"""FANet-style network on torchvision's ResNet-18, head at 1/4 (registry: ``fanet_r18``).

After FANet (Hu, Perazzi, Heilbron, Wang, Lin, Saenko & Sclaroff, "Real-time
Semantic Segmentation with Fast Attention", IEEE RA-L 2021, arXiv:2007.03815).
It is NOT the official LPCVC 2023 sample's network: torchvision's ResNet-18
keeps layer1 at stride 1, so every level here is one octave finer than the
sample's (features at 1/4..1/32, head at 1/4, about 3.7x the sample's FLOPs).
The sample's network, exactly, is ``fanet_r18_sample`` in
``networks/fanet_sample.py``; this one stays for the checkpoints trained with it.

Every ResNet stage output (1/4, 1/8, 1/16, 1/32) goes through a fast
attention module: cosine-similarity attention computed as
``Q (K^T V) / n`` instead of ``(Q K^T) V``, which is linear in the number of
pixels ``n``. The attended maps are fused top-down (1x1 conv, upsample, add)
and the 1/16 and 1/4 levels are smoothed by 3x3 convs, concatenated at 1/4
and classified. The logits are bilinearly upsampled to the input size.

Compared with the sample solution
(lpcvai/23LPCVC_Segmentation_Track-Sample_Solution), besides the strides:
the attention is divided by ``n`` as in the paper (the sample omits it;
batch norm absorbs the scale at a fixed input size); the 1x1 "up" convs use
no padding (the sample pads a 1x1 conv by 1, which shifts features); and the
sample's unused auxiliary heads and discarded coarsest smoothing conv are not
built. So the sample's checkpoints do not load here (they load into
``fanet_r18_sample`` through ``lowpower.compress.import_sample``).

Device-side code: Python 3.6 syntax and the torch 1.10 API only; the ResNet-18
is ``networks.resnet``'s copy of torchvision's (same keys, no torchvision
import), and ``model.backbone`` takes torchvision ImageNet ResNet-18 weights
(see ``lowpower.train.pretrained``).

Quantizable in eager mode: the quantizable basic blocks of ``networks.resnet``,
adds and the concatenation through ``FloatFunctional``; the attention
products (normalise, bmm) have no int8 kernels, so they run in float between
a dequantize and a quantize stub, and the convs around them stay int8.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks import quant
from networks.blocks import ConvBNReLU, resize_to
from networks.fusion import QuantizableNetwork, float_functional
from networks.resnet import IntermediateLayerGetter, QuantizableBasicBlock, resnet_trunk

LEVELS = ('4', '8', '16', '32')
RESNET18_CHANNELS = {'4': 64, '8': 128, '16': 256, '32': 512}


class FastAttention(nn.Module):
    """Fast spatial attention with a residual connection.

    ``y = Q (K^T V) / n`` with ``Q`` and ``K`` L2-normalised over channels
    (cosine similarity, no softmax), then ``x + conv1x1(y)``.

    Args:
        channels: input and output channels.
        key_channels: channels of the query and key projections.
        divide_by_pixels: divide by ``n`` as the paper does; the LPCVC sample
            does not (``False`` reproduces it).

    Example:
        >>> FastAttention(64)(torch.zeros(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(self, channels, key_channels=32, divide_by_pixels=True):
        super(FastAttention, self).__init__()
        self.divide_by_pixels = divide_by_pixels
        self.query = ConvBNReLU(channels, key_channels, 1, activation=False)
        self.key = ConvBNReLU(channels, key_channels, 1, activation=False)
        self.value = ConvBNReLU(channels, channels, 1)
        self.out = ConvBNReLU(channels, channels, 1)
        # int8 island boundaries: the products below run in float (stubs are identity in float mode).
        self.to_float = quant.api().DeQuantStub()
        self.to_int8 = quant.api().QuantStub()
        self.residual = float_functional()

    def forward(self, x):
        batch, channels, height, width = x.shape
        query = F.normalize(self.to_float(self.query(x)).flatten(2), p=2, dim=1)  # N, k, n
        key = F.normalize(self.to_float(self.key(x)).flatten(2), p=2, dim=1)  # N, k, n
        value = self.to_float(self.value(x)).flatten(2)  # N, C, n
        context = torch.bmm(key, value.transpose(1, 2))  # N, k, C
        attended = torch.bmm(query.transpose(1, 2), context)  # N, n, C
        attended = attended.transpose(1, 2).reshape(batch, channels, height, width)
        if self.divide_by_pixels:
            attended = attended / float(height * width)
        return self.residual.add(x, self.out(self.to_int8(attended)))


class FANet(QuantizableNetwork, nn.Module):
    """FANet with a ResNet-18 backbone, returning logits at the input resolution.

    Output stride of the head is 4; its logits are upsampled bilinearly.
    ``backbone`` holds the torchvision-named ResNet-18 layers so ImageNet
    weights load into it with ``strict=False``.

    Args:
        num_classes: output channels (logits).
        key_channels: query/key channels of the fast attention modules.
        fuse_channels: channels of the two smoothed levels (1/16, 1/4)
            that are concatenated before the classifier.

    Example:
        >>> FANet(14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, key_channels=32, fuse_channels=128):
        super(FANet, self).__init__()
        self.backbone = IntermediateLayerGetter(resnet_trunk(QuantizableBasicBlock, [2, 2, 2, 2]), return_layers={
            'layer1': '4', 'layer2': '8', 'layer3': '16', 'layer4': '32'})
        channels = RESNET18_CHANNELS
        self.attention = nn.ModuleDict(
            [(level, FastAttention(channels[level], key_channels)) for level in LEVELS])
        # Top-down path: 1x1 conv halving the channels to match the next finer level.
        self.lateral = nn.ModuleDict(
            [(level, ConvBNReLU(channels[level], channels[level] // 2, 1)) for level in ('32', '16', '8')])
        self.smooth = nn.ModuleDict(
            [(level, ConvBNReLU(channels[level], fuse_channels, 3)) for level in ('16', '4')])
        self.classifier = nn.Sequential(
            ConvBNReLU(2 * fuse_channels, 2 * fuse_channels, 3),
            nn.Conv2d(2 * fuse_channels, num_classes, kernel_size=1, bias=False),
        )
        self.add_merges()

    def add_merges(self):
        """The int8-aware top-down adds (one per level that receives one), concatenation and stubs."""
        self.merge = nn.ModuleDict([(level, float_functional()) for level in self.levels[:-1]])
        self.concat = float_functional()
        self.add_quant_stubs()

    # The decoder's levels and resize; the sample's variant (fanet_sample.py) sets its own.
    levels, fine_level, coarse_level = LEVELS, '4', '16'

    def resize(self, x, size):
        return resize_to(x, size)

    def forward(self, x):
        features = self.backbone(self.quant(x))
        smoothed = {}
        top_down = None
        for level in reversed(self.levels):
            fused = self.attention[level](features[level])
            if top_down is not None:
                fused = self.merge[level].add(fused, self.resize(top_down, fused.shape[-2:]))
            if level in self.lateral:
                top_down = self.lateral[level](fused)
            if level in self.smooth:
                smoothed[level] = self.smooth[level](fused)
        fine = smoothed[self.fine_level]
        coarse = self.resize(smoothed[self.coarse_level], fine.shape[-2:])
        logits = self.classifier(self.concat.cat([coarse, fine], dim=1))
        return self.dequant(self.resize(logits, x.shape[-2:]))


def fanet_r18(num_classes=14, key_channels=32, fuse_channels=128):
    """Build a :class:`FANet` on ResNet-18; the registry entry ``fanet_r18``.

    FANet-style, torchvision ResNet-18 strides, head at 1/4 (not the sample's
    network: see ``fanet_r18_sample``).

    Args:
        num_classes: output channels (logits).
        key_channels: query/key channels of the fast attention modules.
        fuse_channels: channels of the smoothed 1/16 and 1/4 levels.

    Example:
        >>> fanet_r18(14)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return FANet(num_classes=num_classes, key_channels=key_channels, fuse_channels=fuse_channels)
