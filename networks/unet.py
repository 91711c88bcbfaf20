"""The classic UNet (Ronneberger et al., 2015) with batch norm, and its depthwise-separable variants.

``unet_light`` and ``unet_lighter`` swap 3x3 convolutions of every stage for
depthwise-separable ones (depthwise 3x3 + pointwise 1x1, Howard et al. 2017,
"MobileNets"); at base width 32 that takes the UNet from 7.76 M to 4.29 M and
1.52 M parameters.

Quantizable in eager mode (``networks.quant``): the input is padded in float,
then quantized; the skip concatenations go through ``FloatFunctional``.

``UNet(activation='tanh')`` puts tanh after every BN in place of ReLU (the fixed-point
study's configs of AskariHemmat et al., arXiv 1908.01073, name tanh; their models.py ran
ReLU for it, see ``lowpower.compress.quantize.paper_scheme``); int8 fusion then fuses
conv-bn only and leaves the tanh. The default 'relu' builds the same network as before.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import ConvBNReLU, DepthwiseSeparableConv, pad_to_multiple
from networks.fusion import QuantizableNetwork, float_functional

# The activation after every BN: ReLU (the default) or tanh.
ACTIVATIONS = ('relu', 'tanh')

# Which of the two 3x3 convs of a stage are depthwise-separable.
SEPARABLE_CHOICES = {
    'none': (False, False),
    'first': (True, False),
    'second': (False, True),
    'both': (True, True),
}


def conv_activation(activation):
    """The ``activation`` argument of ConvBNReLU for a name of :data:`ACTIVATIONS`.

    Example:
        >>> conv_activation('relu'), conv_activation('tanh')
        (True, Tanh())
    """
    if activation == 'relu':
        return True
    if activation == 'tanh':
        return nn.Tanh()
    raise ValueError('activation must be one of {}, got {!r}'.format(list(ACTIVATIONS), activation))


def conv3x3(in_channels, out_channels, separable, activation='relu'):
    """A 3x3 conv-BN-activation, or its depthwise-separable replacement."""
    if separable:
        return DepthwiseSeparableConv(in_channels, out_channels, activation=conv_activation(activation))
    return ConvBNReLU(in_channels, out_channels, 3, activation=conv_activation(activation))


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers: one UNet stage.

    Args:
        in_channels: input channels (the first conv maps them to ``out_channels``).
        out_channels: output channels of both convs.
        separable: which convs are depthwise-separable: 'none', 'first',
            'second' (the ``out -> out`` conv) or 'both'.
        activation: after every BN, 'relu' or 'tanh'.
    """

    def __init__(self, in_channels, out_channels, separable='none', activation='relu'):
        if separable not in SEPARABLE_CHOICES:
            raise ValueError('separable must be one of {}, got {!r}'.format(
                sorted(SEPARABLE_CHOICES), separable))
        first, second = SEPARABLE_CHOICES[separable]
        super(DoubleConv, self).__init__(
            conv3x3(in_channels, out_channels, first, activation),
            conv3x3(out_channels, out_channels, second, activation),
        )


class UpStage(nn.Module):
    """Transposed-conv x2 upsampling, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels, out_channels, separable='none', activation='relu'):
        super(UpStage, self).__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels, separable, activation)
        self.merge = float_functional()  # the skip concatenation, int8-aware

    def forward(self, x, skip):
        return self.conv(self.merge.cat([skip, self.up(x)], dim=1))


class UNet(QuantizableNetwork, nn.Module):
    """UNet returning logits at the input resolution.

    Widths are ``base_width * 2**i`` for ``i = 0..depth``. Inputs whose sides
    are not multiples of ``2**depth`` are zero-padded internally and the
    logits cropped back.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        base_width: channels of the first stage.
        depth: number of 2x downsamplings.
        separable: which 3x3 conv of every stage is depthwise-separable
            ('none', 'first', 'second' or 'both'; see :class:`DoubleConv`).
        activation: after every BN, 'relu' (the default) or 'tanh' (no parameters either way,
            so the state dict is the same).

    Example:
        >>> UNet(14, base_width=16, depth=3)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    def __init__(self, num_classes=14, in_channels=3, base_width=32, depth=4, separable='none',
                 activation='relu'):
        super(UNet, self).__init__()
        if depth < 1:
            raise ValueError('UNet depth must be >= 1, got {}'.format(depth))
        conv_activation(activation)  # a clear error before any layer is built
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.size_multiple = 2 ** depth
        self.activation = activation
        self.stem = DoubleConv(in_channels, widths[0], separable, activation)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(
            [DoubleConv(widths[i], widths[i + 1], separable, activation) for i in range(depth)])
        self.up = nn.ModuleList(
            [UpStage(widths[i + 1], widths[i], separable, activation) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.add_quant_stubs()

    def forward(self, x):
        # Padding and cropping stay in float, outside the int8 part of the network.
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        skips = [self.stem(self.quant(x))]
        for stage in self.down:
            skips.append(stage(self.pool(skips[-1])))
        x = skips.pop()
        for stage in self.up:
            x = stage(x, skips.pop())
        return self.dequant(self.head(x))[:, :, :height, :width]


def unet(num_classes=14, in_channels=3, base_width=32, depth=4, activation='relu'):
    """Build a :class:`UNet`; the registry entry ``unet``. ``activation='tanh'`` (``model.kwargs:
    {activation: tanh}``) is the activation the fixed-point paper's configs name, though its code ran
    ReLU (lowpower/compress/quantize/paper_scheme.py).

    Example:
        >>> unet(14, base_width=16, depth=3)(torch.zeros(1, 3, 50, 70)).shape
        torch.Size([1, 14, 50, 70])
    """
    return UNet(num_classes=num_classes, in_channels=in_channels,
                base_width=base_width, depth=depth, activation=activation)


def unet_light(num_classes=14, in_channels=3, base_width=32, depth=4):
    """UNet with one depthwise-separable 3x3 conv per stage; registry entry ``unet_light``.

    The separable conv is the stage's ``out -> out`` conv (the second). That
    reproduces the reported 7.76 M -> 4.29 M parameters at base width 32
    (1.81x fewer); making the ``in -> out`` conv separable instead
    (``UNet(separable='first')``) gives 4.99 M (1.55x), because the
    ``out -> out`` convs hold more weights in total.

    Example:
        >>> unet_light(14, base_width=16, depth=3)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return UNet(num_classes=num_classes, in_channels=in_channels,
                base_width=base_width, depth=depth, separable='second')


def unet_lighter(num_classes=14, in_channels=3, base_width=32, depth=4):
    """UNet with both 3x3 convs of every stage depthwise-separable; registry entry ``unet_lighter``.

    7.76 M -> 1.52 M parameters at base width 32 (5.1x fewer).

    Example:
        >>> unet_lighter(14, base_width=16, depth=3)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return UNet(num_classes=num_classes, in_channels=in_channels,
                base_width=base_width, depth=depth, separable='both')
