"""The official LPCVC 2023 sample solution's network, exactly (registry: ``fanet_r18_sample``).

FANet on ResNet-18 (Hu, Perazzi, Heilbron, Wang, Lin, Saenko & Sclaroff,
"Real-time Semantic Segmentation with Fast Attention", IEEE RA-L 2021,
arXiv:2007.03815) as the sample solution
(lpcvai/23LPCVC_Segmentation_Track-Sample_Solution) builds it. Our own code,
written from these facts of the sample:

- Its ResNet-18 has stride 2 in layer1 as well (so layer1's first block has
  a 1x1 stride-2 downsample): features at 1/8, 1/16, 1/32, 1/64.
- Each level: fast attention ``Q (K^T V)`` with L2-normalised 32-channel
  query and key and NO division by the pixel count, 1x1 conv-BN-ReLU on the
  result, plus the input. The coarser level is added after a bilinear
  upsampling with ``align_corners=True``.
- Top-down "up" convs are 1x1 conv-BN-ReLU halving the channels, padded by 1
  (so they grow the map by 2 pixels a side before the next upsampling).
- 3x3 conv-BN-ReLU "smooth" convs to 128 channels at 1/32 and 1/8; both are
  concatenated at 1/8 (coarse first) and classified by 3x3 256->256
  conv-BN-ReLU then 1x1 256->classes: 64x64 logits for a 512 input,
  upsampled bilinearly (``align_corners=True``, as the sample's main.py).

The sample holds 13,968,256 parameters at 14 classes. Not built here: the
modules it never calls (two auxiliary heads, the 1/16 smooth and the 1/8 up
conv: 299,328 parameters) and the 3x3 512->128 smooth conv at 1/64, which it
calls and then discards (590,080 parameters; its output cannot reach the
logits, and a parameter without a gradient breaks DDP and our tests). So this
network has 13,078,848 parameters, all of which reach the logits, and gives
the sample's logits for the sample's weights (``python -m
lowpower.compress.import_sample`` converts its weight file). 11.77 GFLOPs at 512x512
by torch.utils.flop_counter (2 per multiply-add); the sample's 11.85 include
the discarded branch's 0.08.

Device-side code: Python 3.6 syntax and the torch 1.10 API; the ResNet-18 is
``networks.resnet``'s copy of torchvision's (same keys), so a package of this
network never imports torchvision.
"""
import torch  # noqa: F401 -- the docstring example uses it
import torch.nn as nn
import torch.nn.functional as F

from networks.blocks import ConvBNReLU
from networks.fanet import FANet, FastAttention
from networks.resnet import IntermediateLayerGetter, QuantizableBasicBlock, resnet_trunk

# Levels by their true stride (the sample's code names them 4, 8, 16, 32).
LEVELS = ('8', '16', '32', '64')
CHANNELS = {'8': 64, '16': 128, '32': 256, '64': 512}
LATERAL_LEVELS = ('64', '32', '16')  # levels whose fused map feeds the next finer one
SMOOTH_LEVELS = ('32', '8')  # levels whose smoothed map reaches the classifier


def upsample(x, size):
    """Bilinear resize with ``align_corners=True``, as every resize of the sample."""
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def padded_lateral(in_channels, out_channels):
    """The sample's 1x1 "up" conv-BN-ReLU, padded by 1 (it grows the map by 2 a side)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FANetSample(FANet):
    """The LPCVC 2023 sample's FANet-ResNet-18; logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        key_channels: query/key channels of the attention (the sample: 32).
        smooth_channels: channels of each smoothed level (the sample: 128).

    Example:
        >>> FANetSample(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    def __init__(self, num_classes=14, key_channels=32, smooth_channels=128):
        nn.Module.__init__(self)  # FANet's layers are not built: the forward pass is all it shares
        # The sample's ResNet-18 has stride 2 in layer1 as well (with its 1x1 downsample).
        trunk = resnet_trunk(QuantizableBasicBlock, [2, 2, 2, 2], layer1_stride=2)
        self.backbone = IntermediateLayerGetter(trunk, return_layers={
            'layer1': '8', 'layer2': '16', 'layer3': '32', 'layer4': '64'})
        self.attention = nn.ModuleDict([
            (level, FastAttention(CHANNELS[level], key_channels, divide_by_pixels=False)) for level in LEVELS])
        self.lateral = nn.ModuleDict([
            (level, padded_lateral(CHANNELS[level], CHANNELS[level] // 2)) for level in LATERAL_LEVELS])
        self.smooth = nn.ModuleDict([
            (level, ConvBNReLU(CHANNELS[level], smooth_channels, 3)) for level in SMOOTH_LEVELS])
        self.classifier = nn.Sequential(
            ConvBNReLU(2 * smooth_channels, 2 * smooth_channels, 3),
            nn.Conv2d(2 * smooth_channels, num_classes, kernel_size=1, bias=False),
        )
        self.add_merges()

    levels, fine_level, coarse_level = LEVELS, '8', '32'

    def resize(self, x, size):
        return upsample(x, size)


def fanet_r18_sample(num_classes=14, key_channels=32, smooth_channels=128):
    """Build :class:`FANetSample`, the registry entry ``fanet_r18_sample``.

    Args:
        num_classes: output channels (logits).
        key_channels: query/key channels of the attention.
        smooth_channels: channels of each smoothed level.

    Example:
        >>> fanet_r18_sample(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return FANetSample(num_classes=num_classes, key_channels=key_channels, smooth_channels=smooth_channels)
