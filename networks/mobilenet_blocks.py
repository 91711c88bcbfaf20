"""MobileNetV3 pieces and the LR-ASPP head, written out so that no network imports torchvision (issue 15).

Copies of torchvision's classes (torchvision.models.mobilenetv3, .quantization.mobilenetv3,
torchvision.ops.misc, .segmentation.lraspp): the conv-BN-activation unit (``Conv2dNormActivation``),
the quantizable squeeze-excitation and inverted residual (product and residual add through
``FloatFunctional``), the block configuration (``InvertedResidualConfig``, plain data), the
``features`` trunk of ``MobileNetV3`` (its pooling and classifier are never built: the networks
use ``features`` only) and the quantizable LR-ASPP head. Module names, order, state-dict keys,
shapes and hyper-parameters (BatchNorm eps 0.001 and momentum 0.01 in the trunk, squeeze channels
``make_divisible(c // 4, 8)``, Hardswish / Hardsigmoid) and init are torchvision's, so ImageNet
weights, checkpoints, width plans and int8 state dicts load unchanged
(tests/test_torchvision_free.py compares both).

Device-side code: Python 3.6 syntax and the torch 1.10 API only.

Example:
    >>> configs = [InvertedResidualConfig(16, 3, 16, 16, True, 'RE', 2, 1, 1.0)]
    >>> mobilenet_v3_trunk(configs)(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 96, 16, 16])
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn
import torch.nn.functional as F

from networks.fusion import float_functional


def make_divisible(value, divisor, min_value=None):
    """The channel count nearest ``value`` that is a multiple of ``divisor`` and not 10% below it
    (torchvision's ``_make_divisible``, from the TensorFlow MobileNet code).

    Example:
        >>> make_divisible(72 // 4, 8), make_divisible(240 * 0.75, 8)
        (24, 184)
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def trunk_norm(channels):
    """The BatchNorm of MobileNetV3's trunk (torchvision: eps 0.001, momentum 0.01).

    Example:
        >>> trunk_norm(16).eps
        0.001
    """
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


class InvertedResidualConfig(object):
    """One inverted-residual block's settings, channel counts scaled by ``width_mult``.

    Args:
        input_channels, kernel, expanded_channels, out_channels: as in the paper's tables.
        use_se: with squeeze-excitation.
        activation: 'RE' (ReLU) or 'HS' (hard-swish).
        stride: 1 or 2.
        dilation: dilation of the depthwise conv (a dilated block keeps stride 1).
        width_mult: channel multiplier.

    Example:
        >>> InvertedResidualConfig(16, 3, 64, 24, False, 'RE', 2, 1, 0.5).expanded_channels
        32
    """

    def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, activation,
                 stride, dilation, width_mult):
        self.input_channels = make_divisible(input_channels * width_mult, 8)
        self.kernel = kernel
        self.expanded_channels = make_divisible(expanded_channels * width_mult, 8)
        self.out_channels = make_divisible(out_channels * width_mult, 8)
        self.use_se = use_se
        self.use_hs = activation == 'HS'
        self.stride = stride
        self.dilation = dilation


class ConvBNActivation(nn.Sequential):
    """torchvision's ``Conv2dNormActivation`` as MobileNetV3 uses it: conv (no bias), trunk BN, and
    an in-place activation unless ``activation`` is None; the padding keeps the size at stride 1.

    Example:
        >>> ConvBNActivation(3, 16, 3, stride=2, activation=nn.Hardswish)(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 16, 4, 4])
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, dilation=1,
                 activation=nn.ReLU):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2 * dilation,
                      dilation=dilation, groups=groups, bias=False),
            trunk_norm(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super(ConvBNActivation, self).__init__(*layers)
        self.out_channels = out_channels


class QuantizableSqueezeExcitation(nn.Module):
    """Squeeze-excitation with a hard-sigmoid gate, the product through ``FloatFunctional``.

    Example:
        >>> QuantizableSqueezeExcitation(16, 8)(torch.ones(1, 16, 4, 4)).shape
        torch.Size([1, 16, 4, 4])
    """

    _version = 2  # torchvision's, written into state-dict metadata
    # Read by networks.fusion (torchvision's QuantizableSqueezeExcitation.fuse_model group).
    fuse_groups = (('fc1', 'activation'),)

    def __init__(self, input_channels, squeeze_channels):
        super(QuantizableSqueezeExcitation, self).__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()
        self.skip_mul = float_functional()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return self.skip_mul.mul(scale, x)


class QuantizableInvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expansion, depthwise conv, squeeze-excitation, 1x1 projection, and
    the residual add (through ``FloatFunctional``) when the shape allows.

    Args:
        cnf: an :class:`InvertedResidualConfig`.

    Example:
        >>> block = QuantizableInvertedResidual(InvertedResidualConfig(16, 3, 64, 16, True, 'HS', 1, 1, 1.0))
        >>> block(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, cnf):
        super(QuantizableInvertedResidual, self).__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError('illegal stride value')
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(ConvBNActivation(cnf.input_channels, cnf.expanded_channels, 1, activation=activation))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(ConvBNActivation(cnf.expanded_channels, cnf.expanded_channels, cnf.kernel, stride=stride,
                                       groups=cnf.expanded_channels, dilation=cnf.dilation, activation=activation))
        if cnf.use_se:
            layers.append(QuantizableSqueezeExcitation(cnf.expanded_channels,
                                                       make_divisible(cnf.expanded_channels // 4, 8)))
        layers.append(ConvBNActivation(cnf.expanded_channels, cnf.out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1  # torchvision's mark of a stage's first block
        self.skip_add = float_functional()

    def forward(self, x):
        if self.use_res_connect:
            return self.skip_add.add(x, self.block(x))
        return self.block(x)


def init_mobilenet(model):
    """torchvision's MobileNetV3 init, in place: He-normal (fan_out) convs with zero bias, BN at 1 and 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out')
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def mobilenet_v3_trunk(configs):
    """``MobileNetV3.features``: hard-swish stem, the blocks of ``configs``, 1x1 conv to 6x channels.

    Args:
        configs: list of :class:`InvertedResidualConfig`.

    Returns:
        ``nn.Sequential``: ``[0]`` the stem, block ``i`` at ``[i + 1]``, the final conv last.

    Example:
        >>> trunk = mobilenet_v3_trunk([InvertedResidualConfig(16, 3, 16, 24, False, 'RE', 2, 1, 1.0)])
        >>> trunk[-1].out_channels
        144
    """
    layers = [ConvBNActivation(3, configs[0].input_channels, 3, stride=2, activation=nn.Hardswish)]
    layers.extend(QuantizableInvertedResidual(cnf) for cnf in configs)
    last = configs[-1].out_channels
    layers.append(ConvBNActivation(last, 6 * last, 1, activation=nn.Hardswish))
    return init_mobilenet(nn.Sequential(*layers))


class QuantizableLRASPPHead(nn.Module):
    """torchvision's LR-ASPP head (same layers and keys) with its product and sum through ``FloatFunctional``.

    Takes ``{'low': 1/8 features, 'high': 1/16 features}`` and returns 1/8 logits.

    Example:
        >>> head = QuantizableLRASPPHead(24, 96, 14, 32)
        >>> head({'low': torch.zeros(1, 24, 8, 8), 'high': torch.zeros(1, 96, 4, 4)}).shape
        torch.Size([1, 14, 8, 8])
    """

    def __init__(self, low_channels, high_channels, num_classes, inter_channels):
        super(QuantizableLRASPPHead, self).__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.BatchNorm2d(inter_channels),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(high_channels, inter_channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)
        self.gate = float_functional()
        self.merge = float_functional()

    def forward(self, features):
        low, high = features['low'], features['high']
        x = self.gate.mul(self.cbr(high), self.scale(high))
        x = F.interpolate(x, size=low.shape[-2:], mode='bilinear', align_corners=False)
        return self.merge.add(self.low_classifier(low), self.high_classifier(x))
