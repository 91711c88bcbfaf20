"""FCN (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015) on a dilated ResNet-50, as torchvision's
``fcn_resnet50``: output stride 8, torchvision's ``FCNHead`` (3x3 conv to
``in_channels / 4``, dropout, 1x1 classifier), bilinear upsampling.

Device-side code: Python 3.6 syntax and the torch 1.10 API only; torchvision's
layers are written out (``networks.resnet`` and :func:`fcn_head`, same keys),
so nothing imports torchvision. Nothing is downloaded: ``model.backbone``
takes torchvision's ImageNet ResNet-50 weights (see ``lowpower.train.pretrained``).
Quantizable in eager mode: the quantizable bottleneck blocks of ``networks.resnet``.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import resize_to
from networks.fusion import QuantizableNetwork
from networks.resnet import IntermediateLayerGetter, QuantizableBottleneck, resnet_trunk


def fcn_head(in_channels, channels):
    """torchvision's ``FCNHead`` layers in its order: 3x3 conv to ``in_channels / 4``, BN, ReLU,
    dropout 0.1, 1x1 classifier (same keys, same default init).

    Example:
        >>> fcn_head(64, 14)(torch.zeros(2, 64, 8, 8)).shape
        torch.Size([2, 14, 8, 8])
    """
    inter_channels = in_channels // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(inter_channels),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Conv2d(inter_channels, channels, 1),
    )


class FCN(QuantizableNetwork, nn.Module):
    """FCN head on a dilated ResNet-50, returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        output_stride: 8 (torchvision's choice), 16 or 32.

    Example:
        >>> FCN(14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, output_stride=8):
        super(FCN, self).__init__()
        self.output_stride = output_stride
        self.backbone = IntermediateLayerGetter(resnet_trunk(QuantizableBottleneck, [3, 4, 6, 3], output_stride),
                                                return_layers={'layer4': 'out'})
        self.head = fcn_head(2048, num_classes)
        self.add_quant_stubs()

    def forward(self, x):
        return self.dequant(resize_to(self.head(self.backbone(self.quant(x))['out']), x.shape[-2:]))


def fcn_r50(num_classes=14, output_stride=8):
    """FCN on ResNet-50; the registry entry ``fcn_r50``."""
    return FCN(num_classes=num_classes, output_stride=output_stride)
