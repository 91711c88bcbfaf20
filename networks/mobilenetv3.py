"""DeepLabV3 and LR-ASPP on MobileNetV3 (Howard et al., "Searching for
MobileNetV3", ICCV 2019), with torchvision's layers written out (no torchvision import).

The backbones are the ``features`` of torchvision's ``MobileNetV3``, built by
``networks.mobilenet_blocks`` (a copy of torchvision's classes: same keys,
settings and init) from the block tables written out here (the rows of the
paper's Tables 1 and 2). As in torchvision's segmentation models, the last
stage trades its stride 2 for dilation 2 (output stride 16), and the heads
are torchvision's ``DeepLabHead`` (``networks.deeplabv3``) and ``LRASPPHead``
(``networks.mobilenet_blocks``).

Device-side code: Python 3.6 syntax and the torch 1.10 API only. Nothing is
downloaded: ``model.backbone`` takes the ImageNet weights of torchvision's
MobileNetV3 ``features`` (see ``lowpower.train.pretrained``).

Quantizable in eager mode: the blocks are quantizable inverted residuals
(residual add and squeeze-excitation product through ``FloatFunctional``, as
torchvision's ``QuantizableInvertedResidual``), and the heads' add/cat/product
go through ``FloatFunctional`` too.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import resize_to
from networks.deeplabv3 import deeplab_head
from networks.fusion import QuantizableNetwork
from networks.mobilenet_blocks import InvertedResidualConfig, QuantizableLRASPPHead, mobilenet_v3_trunk
from networks.resnet import IntermediateLayerGetter

# (input, kernel, expanded, output, squeeze-excite, activation, stride) per
# inverted-residual block; "RE" is ReLU, "HS" hard-swish.
LARGE_BLOCKS = [
    (16, 3, 16, 16, False, 'RE', 1),
    (16, 3, 64, 24, False, 'RE', 2),
    (24, 3, 72, 24, False, 'RE', 1),
    (24, 5, 72, 40, True, 'RE', 2),
    (40, 5, 120, 40, True, 'RE', 1),
    (40, 5, 120, 40, True, 'RE', 1),
    (40, 3, 240, 80, False, 'HS', 2),
    (80, 3, 200, 80, False, 'HS', 1),
    (80, 3, 184, 80, False, 'HS', 1),
    (80, 3, 184, 80, False, 'HS', 1),
    (80, 3, 480, 112, True, 'HS', 1),
    (112, 3, 672, 112, True, 'HS', 1),
    (112, 5, 672, 160, True, 'HS', 2),
    (160, 5, 960, 160, True, 'HS', 1),
    (160, 5, 960, 160, True, 'HS', 1),
]
SMALL_BLOCKS = [
    (16, 3, 16, 16, True, 'RE', 2),
    (16, 3, 72, 24, False, 'RE', 2),
    (24, 3, 88, 24, False, 'RE', 1),
    (24, 5, 96, 40, True, 'HS', 2),
    (40, 5, 240, 40, True, 'HS', 1),
    (40, 5, 240, 40, True, 'HS', 1),
    (40, 5, 120, 48, True, 'HS', 1),
    (48, 5, 144, 48, True, 'HS', 1),
    (48, 5, 288, 96, True, 'HS', 2),
    (96, 5, 576, 96, True, 'HS', 1),
    (96, 5, 576, 96, True, 'HS', 1),
]
BLOCKS = {'large': LARGE_BLOCKS, 'small': SMALL_BLOCKS}


def mobilenet_v3_features(arch, width_mult=1.0, dilated=True):
    """Return MobileNetV3 ``features`` and the indices of its stage outputs.

    Args:
        arch: 'large' or 'small'.
        width_mult: channel multiplier (ImageNet weights exist for 1.0).
        dilated: replace the stride of the last stage by dilation 2.

    Returns:
        ``(features, stage_indices)``: the ``nn.Sequential`` of layers (stem,
        inverted residual blocks, final 1x1 conv) and torchvision's stage
        indices: the stem, every block with stride 2 in its configuration
        (the first block at output strides 4, 8, 16 and 32, the last one
        dilated), and the final conv.
    """
    if arch not in BLOCKS:
        raise ValueError('arch must be one of {}, got {!r}'.format(sorted(BLOCKS), arch))
    rows = BLOCKS[arch]
    last_strided = max(i for i, row in enumerate(rows) if row[6] == 2)
    configs = []
    for index, (cin, kernel, expanded, cout, use_se, activation, stride) in enumerate(rows):
        dilation = 2 if dilated and index >= last_strided else 1
        configs.append(InvertedResidualConfig(cin, kernel, expanded, cout, use_se, activation,
                                              stride, dilation, width_mult))
    features = mobilenet_v3_trunk(configs)
    # features[0] is the stem and block i is features[i + 1].
    strided = [i + 1 for i, row in enumerate(rows) if row[6] == 2]
    return features, [0] + strided + [len(features) - 1]


class DeepLabV3MobileNet(QuantizableNetwork, nn.Module):
    """DeepLabV3 head on a dilated MobileNetV3-Large (output stride 16).

    Args:
        num_classes: output channels (logits).
        width_mult: backbone channel multiplier.

    Example:
        >>> DeepLabV3MobileNet(14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, width_mult=1.0):
        super(DeepLabV3MobileNet, self).__init__()
        features, stage_indices = mobilenet_v3_features('large', width_mult)
        high = stage_indices[-1]
        self.backbone = IntermediateLayerGetter(features, return_layers={str(high): 'out'})
        self.head = deeplab_head(features[high].out_channels, num_classes)
        self.add_quant_stubs()

    def forward(self, x):
        return self.dequant(resize_to(self.head(self.backbone(self.quant(x))['out']), x.shape[-2:]))


class LRASPPMobileNet(QuantizableNetwork, nn.Module):
    """Lite R-ASPP head (MobileNetV3 paper) on a dilated MobileNetV3.

    The head takes the 1/8 features of the first block at that stride and
    the 1/16 features of the final 1x1 conv (the layers torchvision's
    ``lraspp_mobilenet_v3_large`` uses), and its 1/8 logits are upsampled
    bilinearly. ``forward`` returns a plain tensor.

    Args:
        arch: 'large' or 'small'.
        num_classes: output channels (logits).
        width_mult: backbone channel multiplier.
        inter_channels: channels of the head's high-level branch.

    Example:
        >>> LRASPPMobileNet('small', 14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, arch, num_classes=14, width_mult=1.0, inter_channels=128):
        super(LRASPPMobileNet, self).__init__()
        features, stage_indices = mobilenet_v3_features(arch, width_mult)
        # As torchvision: the first block at output stride 8, and the final conv.
        low, high = stage_indices[-4], stage_indices[-1]
        self.backbone = IntermediateLayerGetter(
            features, return_layers={str(low): 'low', str(high): 'high'})
        self.head = QuantizableLRASPPHead(features[low].out_channels, features[high].out_channels,
                                          num_classes, inter_channels)
        self.add_quant_stubs()

    def forward(self, x):
        return self.dequant(resize_to(self.head(self.backbone(self.quant(x))), x.shape[-2:]))


def deeplabv3_mbv3(num_classes=14, width_mult=1.0):
    """DeepLabV3 on MobileNetV3-Large; the registry entry ``deeplabv3_mbv3``."""
    return DeepLabV3MobileNet(num_classes=num_classes, width_mult=width_mult)


def lraspp_mbv3_large(num_classes=14, width_mult=1.0, inter_channels=128):
    """LR-ASPP on MobileNetV3-Large; the registry entry ``lraspp_mbv3_large``."""
    return LRASPPMobileNet('large', num_classes=num_classes, width_mult=width_mult,
                           inter_channels=inter_channels)


def lraspp_mbv3_small(num_classes=14, width_mult=1.0, inter_channels=128):
    """LR-ASPP on MobileNetV3-Small; the registry entry ``lraspp_mbv3_small``."""
    return LRASPPMobileNet('small', num_classes=num_classes, width_mult=width_mult,
                           inter_channels=inter_channels)
