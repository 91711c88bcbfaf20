"""DeepLabV3 on ResNet-18/50/101 built from torchvision classes.

Device-side code: Python 3.6 syntax and the torch 1.10 / torchvision 0.11 API
only. Only classes whose constructors are the same in torchvision 0.11 and
today are used, and nothing is downloaded here: the workstation loads
ImageNet weights into ``model.backbone`` (see ``lowpower.pretrained``).

Quantizable in eager mode: the ResNet blocks are torchvision's
``QuantizableBasicBlock`` / ``QuantizableBottleneck`` (present in 0.11; the
same state-dict keys as ``BasicBlock`` / ``Bottleneck``, the residual add
through ``FloatFunctional.add_relu``) and the ASPP concatenation goes through
``FloatFunctional``.
"""
import torch.nn as nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.quantization.resnet import QuantizableBasicBlock, QuantizableBottleneck
from torchvision.models.resnet import ResNet
from torchvision.models.segmentation.deeplabv3 import ASPP

from networks.blocks import resize_to
from networks.fusion import QuantizableNetwork, float_functional

RESNET_SPECS = {
    18: (QuantizableBasicBlock, [2, 2, 2, 2]),
    50: (QuantizableBottleneck, [3, 4, 6, 3]),
    101: (QuantizableBottleneck, [3, 4, 23, 3]),
}
# torchvision's DeepLabHead rates.
ATROUS_RATES = (12, 24, 36)


class QuantizableASPP(ASPP):
    """torchvision's ASPP (same layers and keys) with its concatenation through ``FloatFunctional``."""

    def __init__(self, in_channels, atrous_rates, out_channels=256):
        super(QuantizableASPP, self).__init__(in_channels, list(atrous_rates), out_channels)
        self.merge = float_functional()

    def forward(self, x):
        return self.project(self.merge.cat([branch(x) for branch in self.convs], dim=1))


def deeplab_head(in_channels, num_classes):
    """torchvision's ``DeepLabHead`` layers in its order (same keys, same random init), int8-aware ASPP.

    Example:
        >>> deeplab_head(512, 14)(torch.zeros(2, 512, 8, 8)).shape
        torch.Size([2, 14, 8, 8])
    """
    return nn.Sequential(
        QuantizableASPP(in_channels, ATROUS_RATES),
        nn.Conv2d(256, 256, 3, padding=1, bias=False),
        nn.BatchNorm2d(256),
        nn.ReLU(),
        nn.Conv2d(256, num_classes, 1),
    )

# Which of layer2..layer4 trade their stride 2 for dilation.
DILATED_LAYERS = {8: ('layer3', 'layer4'), 16: ('layer4',)}


def dilate_layer(layer, previous_dilation, dilation):
    """Turn a stride-2 ResNet layer into a stride-1 dilated one, in place.

    Follows torchvision's ``replace_stride_with_dilation`` convention: the
    first block keeps the previous dilation, later blocks use the new one.
    Done by hand because torchvision's BasicBlock refuses ``dilation > 1``.
    """
    for index, block in enumerate(layer):
        rate = previous_dilation if index == 0 else dilation
        for module in block.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                module.stride = (1, 1)
                module.dilation = (rate, rate)
                module.padding = (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def dilate_resnet(resnet, output_stride):
    """Set a ResNet's output stride to 8 or 16 (32 leaves it unchanged)."""
    if output_stride == 32:
        return
    if output_stride not in DILATED_LAYERS:
        raise ValueError('output_stride must be 8, 16 or 32, got {}'.format(output_stride))
    dilation = 1
    for name in DILATED_LAYERS[output_stride]:
        previous, dilation = dilation, dilation * 2
        dilate_layer(getattr(resnet, name), previous, dilation)


class DeepLabV3(QuantizableNetwork, nn.Module):
    """DeepLabV3: dilated ResNet, ASPP head, bilinear upsampling to the input size.

    ``backbone`` holds the torchvision-named ResNet layers (conv1, bn1,
    layer1..layer4) so an ImageNet ResNet state dict loads into it with
    ``strict=False``. ``forward`` returns a plain logits tensor.

    Args:
        depth: ResNet depth, one of 18, 50, 101.
        num_classes: output channels (logits).
        output_stride: 8 or 16 (or 32, undilated).

    Example:
        >>> DeepLabV3(18, num_classes=14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, depth, num_classes=14, output_stride=16):
        super(DeepLabV3, self).__init__()
        if depth not in RESNET_SPECS:
            raise ValueError('ResNet depth must be one of {}, got {}'.format(
                sorted(RESNET_SPECS), depth))
        block, layers = RESNET_SPECS[depth]
        resnet = ResNet(block, layers)
        dilate_resnet(resnet, output_stride)
        self.output_stride = output_stride
        self.backbone = IntermediateLayerGetter(resnet, return_layers={'layer4': 'out'})
        self.head = deeplab_head(512 * block.expansion, num_classes)
        self.add_quant_stubs()

    def forward(self, x):
        features = self.backbone(self.quant(x))['out']
        return self.dequant(resize_to(self.head(features), x.shape[-2:]))


def deeplabv3_r18(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-18; the registry entry ``deeplabv3_r18``."""
    return DeepLabV3(18, num_classes=num_classes, output_stride=output_stride)


def deeplabv3_r50(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-50; the registry entry ``deeplabv3_r50``."""
    return DeepLabV3(50, num_classes=num_classes, output_stride=output_stride)


def deeplabv3_r101(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-101; the registry entry ``deeplabv3_r101``."""
    return DeepLabV3(101, num_classes=num_classes, output_stride=output_stride)
