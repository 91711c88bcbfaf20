"""ResNet trunk pieces written out so that no network imports torchvision (issue 15).

Importing torchvision costs about a second at start-up (it pulls torch._dynamo and sympy on new
versions), so the zoo builds its ResNets from these copies of torchvision's classes instead:
``QuantizableBasicBlock`` and ``QuantizableBottleneck`` (torchvision.models.quantization.resnet:
torchvision's ``BasicBlock`` / ``Bottleneck`` layers with the residual add through
``FloatFunctional.add_relu``), the stem and ``layer1..layer4`` of ``torchvision.models.resnet.ResNet``
(its ``avgpool`` and ``fc`` are never built: ``IntermediateLayerGetter`` drops them anyway) and
``IntermediateLayerGetter`` (torchvision.models._utils). Module names, order, state-dict keys,
shapes, hyper-parameters and init are torchvision's, so ImageNet weights, checkpoints, width plans
and int8 state dicts written with the torchvision-built networks load unchanged
(tests/test_torchvision_free.py compares both).

Dilation follows torchvision's ``replace_stride_with_dilation``: a dilated layer keeps stride 1, its
first block uses the previous dilation and the others the new one; unlike torchvision, the
BasicBlock accepts ``dilation > 1`` (both 3x3 convs, as ``deeplabv3_r18`` has always done).

Device-side code: Python 3.6 syntax and the torch 1.10 API only.

Example:
    >>> trunk = resnet_trunk(QuantizableBasicBlock, [2, 2, 2, 2], output_stride=16)
    >>> getter = IntermediateLayerGetter(trunk, {'layer4': 'out'})
    >>> getter(torch.zeros(1, 3, 64, 64))['out'].shape
    torch.Size([1, 512, 4, 4])
"""
from collections import OrderedDict

import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.fusion import float_functional

# Which of layer2..layer4 trade their stride 2 for dilation, by output stride.
DILATED_LAYERS = {8: ('layer3', 'layer4'), 16: ('layer4',), 32: ()}
LAYER_PLANES = (('layer1', 64), ('layer2', 128), ('layer3', 256), ('layer4', 512))


def conv3x3(in_planes, out_planes, stride=1, dilation=1):
    """torchvision's ResNet 3x3 conv: no bias, padding equal to the dilation.

    Example:
        >>> conv3x3(64, 64, dilation=2).padding
        (2, 2)
    """
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def conv1x1(in_planes, out_planes, stride=1):
    """torchvision's ResNet 1x1 conv (no bias).

    Example:
        >>> conv1x1(64, 256).kernel_size
        (1, 1)
    """
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class QuantizableBasicBlock(nn.Module):
    """torchvision's quantizable ResNet basic block: two 3x3 conv-BN, residual add and ReLU.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first conv.
        downsample: module mapping the input to the residual's shape, or None.
        dilation: dilation of both 3x3 convs.

    Example:
        >>> QuantizableBasicBlock(64, 64)(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    expansion = 1
    # Read by networks.fusion (torchvision's QuantizableBasicBlock.fuse_model groups).
    fuse_groups = (('conv1', 'bn1', 'relu'), ('conv2', 'bn2'))

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super(QuantizableBasicBlock, self).__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.add_relu = float_functional()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.add_relu.add_relu(out, identity)


class QuantizableBottleneck(nn.Module):
    """torchvision's quantizable ResNet bottleneck: 1x1, 3x3 (strided, dilated), 1x1 x4, residual.

    Args:
        inplanes: input channels.
        planes: channels of the 3x3 conv; the block outputs ``4 * planes``.
        stride: stride of the 3x3 conv.
        downsample: module mapping the input to the residual's shape, or None.
        dilation: dilation of the 3x3 conv.

    Example:
        >>> QuantizableBottleneck(256, 64)(torch.zeros(1, 256, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    expansion = 4
    # Read by networks.fusion (torchvision's QuantizableBottleneck.fuse_model groups).
    fuse_groups = (('conv1', 'bn1', 'relu1'), ('conv2', 'bn2', 'relu2'), ('conv3', 'bn3'))

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super(QuantizableBottleneck, self).__init__()
        # Registration order is torchvision's (Bottleneck's layers, then the quantizable extras).
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)  # unused in forward, kept as torchvision has it
        self.downsample = downsample
        self.stride = stride
        self.skip_add_relu = float_functional()
        self.relu1 = nn.ReLU(inplace=False)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add_relu.add_relu(out, identity)


class IntermediateLayerGetter(nn.ModuleDict):
    """torchvision's ``IntermediateLayerGetter``: runs ``model``'s children in order up to the last
    one named in ``return_layers`` and returns those outputs under their new names.

    Args:
        model: a module whose direct children are applied one after the other.
        return_layers: ``{child name: output name}``.

    Example:
        >>> getter = IntermediateLayerGetter(nn.Sequential(nn.ReLU(), nn.ReLU()), {'0': 'low'})
        >>> list(getter(torch.zeros(1)))
        ['low']
    """

    _version = 2  # torchvision's, written into state-dict metadata
    runs_children_in_order = True  # read by networks.fusion

    def __init__(self, model, return_layers):
        names = [name for name, _ in model.named_children()]
        if not set(return_layers).issubset(names):
            raise ValueError('return_layers are not present in model')
        wanted = set(str(name) for name in return_layers)
        layers = OrderedDict()
        for name, module in model.named_children():
            layers[name] = module
            wanted.discard(name)
            if not wanted:
                break
        super(IntermediateLayerGetter, self).__init__(layers)
        self.return_layers = return_layers

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


def make_layer(block, inplanes, planes, blocks, stride=1, previous_dilation=1, dilation=1):
    """One ResNet stage as torchvision's ``ResNet._make_layer`` builds it.

    Args:
        block: :class:`QuantizableBasicBlock` or :class:`QuantizableBottleneck`.
        inplanes: input channels.
        planes: block width (the stage outputs ``planes * block.expansion``).
        blocks: number of blocks.
        stride: stride of the first block (1 when the stage is dilated).
        previous_dilation: dilation of the first block.
        dilation: dilation of the other blocks.

    Example:
        >>> make_layer(QuantizableBasicBlock, 64, 128, 2, stride=2)[0].downsample[0].stride
        (2, 2)
    """
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(conv1x1(inplanes, planes * block.expansion, stride),
                                   nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample, previous_dilation)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, dilation=dilation))
    return nn.Sequential(*layers)


def init_resnet(model):
    """torchvision's ResNet init, in place: He-normal (fan_out) convs, BN weight 1 and bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return model


def resnet_trunk(block, layers, output_stride=32, layer1_stride=1):
    """The stem and four stages of torchvision's ResNet, under its names, in an ``nn.Sequential``.

    Args:
        block: :class:`QuantizableBasicBlock` (ResNet-18/34) or :class:`QuantizableBottleneck` (50/101).
        layers: blocks per stage, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        output_stride: 8, 16 or 32; layer3/layer4 trade their stride for dilation below 32.
        layer1_stride: 2 makes layer1 strided too (the LPCVC sample's ResNet-18).

    Returns:
        ``nn.Sequential`` with children conv1, bn1, relu, maxpool, layer1..layer4.

    Raises:
        ValueError: an output stride other than 8, 16 or 32.

    Example:
        >>> trunk = resnet_trunk(QuantizableBottleneck, [3, 4, 6, 3], output_stride=8)
        >>> trunk(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 2048, 8, 8])
    """
    if output_stride not in DILATED_LAYERS:
        raise ValueError('output_stride must be 8, 16 or 32, got {}'.format(output_stride))
    modules = [
        ('conv1', nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)),
        ('bn1', nn.BatchNorm2d(64)),
        ('relu', nn.ReLU(inplace=True)),
        ('maxpool', nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
    ]
    inplanes, dilation = 64, 1
    for index, (name, planes) in enumerate(LAYER_PLANES):
        stride = layer1_stride if index == 0 else 2
        previous_dilation = dilation
        if name in DILATED_LAYERS[output_stride]:
            dilation, stride = dilation * stride, 1
        modules.append((name, make_layer(block, inplanes, planes, layers[index], stride,
                                         previous_dilation, dilation)))
        inplanes = planes * block.expansion
    return init_resnet(nn.Sequential(OrderedDict(modules)))
