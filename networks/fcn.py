"""FCN (Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015) on a dilated ResNet-50, as torchvision's
``fcn_resnet50``: output stride 8, torchvision's ``FCNHead`` (3x3 conv to
``in_channels / 4``, dropout, 1x1 classifier), bilinear upsampling.

Device-side code: Python 3.6 syntax and the torch 1.10 / torchvision 0.11
API only. Nothing is downloaded: ``model.backbone`` takes torchvision's
ImageNet ResNet-50 weights (see ``lowpower.pretrained``). Quantizable in
eager mode: torchvision's ``QuantizableBottleneck`` blocks (same keys).
"""
import torch.nn as nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.quantization.resnet import QuantizableBottleneck
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.fcn import FCNHead

from networks.blocks import resize_to
from networks.deeplabv3 import dilate_resnet
from networks.fusion import QuantizableNetwork


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
        resnet = ResNet(QuantizableBottleneck, [3, 4, 6, 3])
        dilate_resnet(resnet, output_stride)
        self.output_stride = output_stride
        self.backbone = IntermediateLayerGetter(resnet, return_layers={'layer4': 'out'})
        self.head = FCNHead(2048, num_classes)
        self.add_quant_stubs()

    def forward(self, x):
        return self.dequant(resize_to(self.head(self.backbone(self.quant(x))['out']), x.shape[-2:]))


def fcn_r50(num_classes=14, output_stride=8):
    """FCN on ResNet-50; the registry entry ``fcn_r50``."""
    return FCN(num_classes=num_classes, output_stride=output_stride)
