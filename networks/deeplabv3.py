"""DeepLabV3 on ResNet-18/50/101, with torchvision's layers written out (no torchvision import).

Device-side code: Python 3.6 syntax and the torch 1.10 API only. The ResNet
trunk comes from ``networks.resnet`` and the ASPP head below copies
torchvision's ``ASPP`` / ``ASPPConv`` / ``ASPPPooling`` / ``DeepLabHead``
(same module names, order, keys and init), so checkpoints written when these
networks were built from torchvision's classes load unchanged. Nothing is
downloaded here: the workstation loads ImageNet weights into
``model.backbone`` (see ``lowpower.train.pretrained``).

Quantizable in eager mode: the ResNet blocks are the quantizable ones of
``networks.resnet`` (residual add through ``FloatFunctional.add_relu``) and
the ASPP concatenation goes through ``FloatFunctional``.

Auxiliary output ``aux`` (``loss.aux_weights: {aux: 0.5}``: torchvision's
reference training weights it 0.5, mmsegmentation's configs 0.4): torchvision's
``FCNHead`` (``networks.fcn.fcn_head``: 3x3 conv to a quarter of the
channels, BN, ReLU, dropout 0.1, 1x1 classifier) on ``layer3``, stride 16
(8 at ``output_stride=8``), returned at that resolution in ``train()`` when
asked. The module is torchvision's ``aux_classifier`` (same keys, registered
after ``head`` as torchvision registers it after ``classifier``), so
torchvision's ``deeplabv3_resnet50(aux_loss=True)`` state dict loads with
only ``classifier.`` renamed to ``head.``. A state dict with no
``aux_classifier.`` key (written before the head existed, or torchvision's
``aux_loss=False``) still loads with ``strict=True``: the head keeps its
fresh initialisation.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import resize_to
from networks.fcn import fcn_head
from networks.fusion import QuantizableNetwork, float_functional, keep_missing_heads
from networks.resnet import IntermediateLayerGetter, QuantizableBasicBlock, QuantizableBottleneck, resnet_trunk

RESNET_SPECS = {
    18: (QuantizableBasicBlock, [2, 2, 2, 2]),
    50: (QuantizableBottleneck, [3, 4, 6, 3]),
    101: (QuantizableBottleneck, [3, 4, 23, 3]),
}
# torchvision's DeepLabHead rates.
ATROUS_RATES = (12, 24, 36)


def conv_bn_relu(in_channels, out_channels, kernel_size=1, dilation=1):
    """torchvision's ASPP branch layers: conv (no bias), BN, ReLU (not in place), padding keeps the size.

    Example:
        >>> conv_bn_relu(64, 256, 3, dilation=12)[0].padding
        (12, 12)
    """
    padding = dilation if kernel_size == 3 else 0
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class ASPPPooling(nn.Sequential):
    """torchvision's ASPP image-pooling branch: global average, 1x1 conv-BN-ReLU, upsampled back.

    Example:
        >>> ASPPPooling(64, 256)(torch.zeros(2, 64, 8, 8)).shape
        torch.Size([2, 256, 8, 8])
    """

    def __init__(self, in_channels, out_channels):
        super(ASPPPooling, self).__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x):
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return resize_to(x, size)


class QuantizableASPP(nn.Module):
    """torchvision's ASPP (same layers and keys) with its concatenation through ``FloatFunctional``.

    Args:
        in_channels: input channels.
        atrous_rates: dilations of the 3x3 branches.
        out_channels: channels of every branch and of the projection.

    Example:
        >>> QuantizableASPP(64, (12, 24, 36)).eval()(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    def __init__(self, in_channels, atrous_rates, out_channels=256):
        super(QuantizableASPP, self).__init__()
        branches = [conv_bn_relu(in_channels, out_channels)]
        branches.extend(conv_bn_relu(in_channels, out_channels, 3, rate) for rate in atrous_rates)
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
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


class DeepLabV3(QuantizableNetwork, nn.Module):
    """DeepLabV3: dilated ResNet, ASPP head, bilinear upsampling to the input size.

    ``backbone`` holds the torchvision-named ResNet layers (conv1, bn1,
    layer1..layer4) so an ImageNet ResNet state dict loads into it with
    ``strict=False``. ``forward`` returns a plain logits tensor, or in
    ``train()`` with ``aux_outputs = ('aux',)`` the dict ``{'out': logits,
    'aux': layer3 logits}`` (``aux_classifier``, not resized).

    Args:
        depth: ResNet depth, one of 18, 50, 101.
        num_classes: output channels (logits).
        output_stride: 8 or 16 (or 32, undilated).

    Example:
        >>> DeepLabV3(18, num_classes=14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    aux_heads = (('aux', 'segmentation'),)
    # submodules used only to make auxiliary outputs (excluded from the deployed parameter count)
    aux_modules = ('aux_classifier',)

    def __init__(self, depth, num_classes=14, output_stride=16):
        super(DeepLabV3, self).__init__()
        if depth not in RESNET_SPECS:
            raise ValueError('ResNet depth must be one of {}, got {}'.format(
                sorted(RESNET_SPECS), depth))
        block, layers = RESNET_SPECS[depth]
        self.output_stride = output_stride
        self.backbone = IntermediateLayerGetter(resnet_trunk(block, layers, output_stride),
                                                return_layers={'layer4': 'out'})
        self.head = deeplab_head(512 * block.expansion, num_classes)
        self.aux_classifier = fcn_head(256 * block.expansion, num_classes)
        self.aux_outputs = ()
        self.add_quant_stubs()

    def forward(self, x):
        wants_aux = self.training and 'aux' in self.aux_outputs
        if wants_aux:  # the getter's children in its order (as its forward), keeping layer3's output
            features = self.quant(x)
            for name, module in self.backbone.items():
                features = module(features)
                if name == 'layer3':
                    low = features
        else:
            features = self.backbone(self.quant(x))['out']
        logits = self.dequant(resize_to(self.head(features), x.shape[-2:]))
        if not wants_aux:
            return logits
        return {'out': logits, 'aux': self.dequant(self.aux_classifier(low))}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        keep_missing_heads(self, state_dict, prefix)
        super(DeepLabV3, self)._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def deeplabv3_r18(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-18; the registry entry ``deeplabv3_r18``."""
    return DeepLabV3(18, num_classes=num_classes, output_stride=output_stride)


def deeplabv3_r50(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-50; the registry entry ``deeplabv3_r50``."""
    return DeepLabV3(50, num_classes=num_classes, output_stride=output_stride)


def deeplabv3_r101(num_classes=14, output_stride=16):
    """DeepLabV3 on ResNet-101; the registry entry ``deeplabv3_r101``."""
    return DeepLabV3(101, num_classes=num_classes, output_stride=output_stride)
