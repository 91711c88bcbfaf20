"""BiSeNet V2 (Yu, Gao, Wang, Yu, Shen & Sang, "BiSeNet V2: Bilateral Network
with Guided Aggregation for Real-time Semantic Segmentation", IJCV 2021,
arXiv:2004.02147).

Two branches run side by side on the image:

- Detail branch: wide and shallow, plain 3x3 conv-BN-ReLU layers,
  64-64-128 channels, output stride 8 (paper Table 1, stages S1-S3).
- Semantic branch: narrow and deep, output stride 32: a stem block (16
  channels, stride 4), gather-and-expansion layers (expansion 6) at
  32, 64 and 128 channels, and a context embedding block (global average
  pooling, residual) at the end.

The bilateral guided aggregation layer lets each branch gate the other
(sigmoid attention at both 1/8 and 1/32) and the segmentation head (3x3
conv to ``head_channels``, 1x1 classifier) works at 1/8; its logits are
upsampled bilinearly to the input size.

Booster training (paper section 3.4, Fig. 3): four auxiliary segmentation
heads on the semantic branch, built always but run only in ``train()`` when
the trainer asks for them (``aux_outputs``, set from ``loss.aux_weights``);
``eval()`` returns the main logits alone. Their names are the authors'
(CoinCheung/BiSeNet ``lib/models/bisenetv2.py``: ``aux2``, ``aux3``,
``aux4``, ``aux5_4``), each on one stage's output, returned at that stage's
resolution (the loss resizes them):

- ``aux2``: the stem (S1-S2), 16 channels, stride 4;
- ``aux3``: S3, 32 channels, stride 8;
- ``aux4``: S4, 64 channels, stride 16;
- ``aux5_4``: S5 before the context embedding, 128 channels, stride 32.

Each head is the main head's layers (3x3 conv-BN-ReLU to a mid width,
dropout 0.1, 1x1 classifier with bias), mid widths ``aux_channels`` =
16 / 64 / 256 / 1024, the ``channels`` of mmsegmentation's four
``auxiliary_head`` FCNHeads in ``configs/_base_/models/bisenetv2.py``.
Differences: mmsegmentation's aux FCNHeads have two 3x3 convs
(``num_convs=2``), here one, as the paper's head (Fig. 3: 3x3 conv-BN-ReLU
to C_t, 1x1 conv); the authors' own code uses mid width 128 for all four
and a x2 upsample with a second conv-BN-ReLU before the classifier.

A state dict without any key of an auxiliary head (a checkpoint written
before the heads existed) loads with ``strict=True``: that head keeps its
fresh initialisation (``_load_from_state_dict`` below). A state dict with
some but not all of a head's keys is still an error.

Upsampling is to the exact size of the other branch rather than by a fixed
factor, so sizes that are not multiples of 32 work. Batch norm after the
global pooling needs more than one image per batch in training mode.

Quantizable in eager mode: every add, product and concatenation between
activations goes through its own ``FloatFunctional``.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.blocks import ConvBNReLU, resize_to
from networks.fusion import QuantizableNetwork, float_functional, keep_missing_heads


def conv_bn(in_channels, out_channels, kernel_size=3, stride=1, groups=1):
    """Conv2d (no bias) followed by BatchNorm2d, no activation."""
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride=stride,
                      groups=groups, activation=False)


class DetailBranch(nn.Sequential):
    """Stages S1-S3 of the detail branch: 3x3 conv-BN-ReLU, stride 2 at each stage start."""

    def __init__(self, in_channels=3):
        layers = []
        previous = in_channels
        for channels, repeats in ((64, 2), (64, 3), (128, 3)):
            for index in range(repeats):
                layers.append(ConvBNReLU(previous, channels, 3, stride=2 if index == 0 else 1))
                previous = channels
        super(DetailBranch, self).__init__(*layers)


class StemBlock(nn.Module):
    """Semantic-branch stem: conv stride 2, then strided conv and max-pool branches, fused; output stride 4."""

    def __init__(self, in_channels=3, out_channels=16):
        super(StemBlock, self).__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3, stride=2)
        self.left = nn.Sequential(
            ConvBNReLU(out_channels, out_channels // 2, 1),
            ConvBNReLU(out_channels // 2, out_channels, 3, stride=2),
        )
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(2 * out_channels, out_channels, 3)
        self.merge = float_functional()

    def forward(self, x):
        x = self.conv(x)
        return self.fuse(self.merge.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-expansion layer (paper Fig. 5 b, c).

    3x3 conv-BN-ReLU, depthwise 3x3 expanding the channels ``expansion``
    times (stride 2 variant: a strided depthwise conv, then a second
    depthwise conv), 1x1 projection with BN, residual add, ReLU. The stride
    2 shortcut is a strided depthwise 3x3 and a 1x1 conv, each with BN.
    """

    def __init__(self, in_channels, out_channels, stride=1, expansion=6):
        super(GatherExpansion, self).__init__()
        expanded = in_channels * expansion
        layers = [
            ConvBNReLU(in_channels, in_channels, 3),
            conv_bn(in_channels, expanded, 3, stride=stride, groups=in_channels),
        ]
        if stride == 2:
            layers.append(conv_bn(expanded, expanded, 3, groups=expanded))
        layers.append(conv_bn(expanded, out_channels, 1))
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, stride=stride, groups=in_channels),
                conv_bn(in_channels, out_channels, 1),
            )
        self.residual = float_functional()  # add then ReLU, one int8 op

    def forward(self, x):
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.residual.add_relu(self.body(x), shortcut)


class ContextEmbedding(nn.Module):
    """Context embedding block: global average pool, BN, 1x1 conv-BN-ReLU, broadcast add, 3x3 conv-BN-ReLU."""

    def __init__(self, channels):
        super(ContextEmbedding, self).__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.gap_conv = ConvBNReLU(channels, channels, 1)
        self.conv = ConvBNReLU(channels, channels, 3)
        self.merge = float_functional()

    def forward(self, x):
        context = self.gap_conv(self.bn(F.adaptive_avg_pool2d(x, 1)))
        return self.conv(self.merge.add(x, context.expand_as(x)))


class SemanticBranch(nn.Sequential):
    """Stem (S1-S2), GE layers (S3-S5) and the context embedding block; output stride 32.

    Children (their indices are the state-dict keys): 0 the stem, 1-2 S3, 3-4 S4, 5-8 S5's GE
    layers, 9 the context embedding. ``forward`` runs them all; :meth:`forward_stages` also
    returns the stage outputs the booster heads read.

    Example:
        >>> out, stages = SemanticBranch().forward_stages(torch.zeros(2, 3, 64, 64))
        >>> [tuple(f.shape[1:]) for f in stages]
        [(16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]
    """

    # index of the last child of the stem, S3, S4 and S5's GE layers
    stage_ends = (0, 2, 4, 8)

    def __init__(self, in_channels=3):
        super(SemanticBranch, self).__init__(
            StemBlock(in_channels, 16),
            GatherExpansion(16, 32, stride=2), GatherExpansion(32, 32),
            GatherExpansion(32, 64, stride=2), GatherExpansion(64, 64),
            GatherExpansion(64, 128, stride=2), GatherExpansion(128, 128),
            GatherExpansion(128, 128), GatherExpansion(128, 128),
            ContextEmbedding(128),
        )

    def forward_stages(self, x):
        """``(output, [stem, S3, S4, S5 before the context embedding])``: the same output as ``forward``."""
        stages = []
        for index, module in enumerate(self):
            x = module(x)
            if index in self.stage_ends:
                stages.append(x)
        return x, stages


class GuidedAggregation(nn.Module):
    """Bilateral guided aggregation layer (paper Fig. 6).

    Detail features are gated by upsampled semantic features at 1/8; the
    detail features downsampled to 1/32 are gated by the semantic features,
    then upsampled; the sum goes through a 3x3 conv and BN.
    """

    def __init__(self, channels=128):
        super(GuidedAggregation, self).__init__()
        self.detail_keep = nn.Sequential(
            conv_bn(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.detail_down = nn.Sequential(
            conv_bn(channels, channels, 3, stride=2),
            nn.AvgPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.semantic_up = conv_bn(channels, channels, 3)
        self.semantic_keep = nn.Sequential(
            conv_bn(channels, channels, 3, groups=channels),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.fuse = conv_bn(channels, channels, 3)
        self.gate_high = float_functional()
        self.gate_low = float_functional()
        self.merge = float_functional()

    def forward(self, detail, semantic):
        size = detail.shape[-2:]
        high = self.gate_high.mul(self.detail_keep(detail),
                                  torch.sigmoid(resize_to(self.semantic_up(semantic), size)))
        low = self.detail_down(detail)
        low = self.gate_low.mul(low, torch.sigmoid(resize_to(self.semantic_keep(semantic), low.shape[-2:])))
        return self.fuse(self.merge.add(high, resize_to(low, size)))


def seg_head(in_channels, mid_channels, num_classes):
    """3x3 conv-BN-ReLU to ``mid_channels``, dropout 0.1, 1x1 classifier (with bias).

    Example:
        >>> seg_head(16, 16, 14)(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 14, 8, 8])
    """
    return nn.Sequential(
        ConvBNReLU(in_channels, mid_channels, 3),
        nn.Dropout(0.1),
        nn.Conv2d(mid_channels, num_classes, kernel_size=1),
    )


class BiSeNetV2(QuantizableNetwork, nn.Module):
    """BiSeNet V2 returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        head_channels: channels of the segmentation head's 3x3 conv (1024 in
            the paper's Cityscapes model; the head holds most of the FLOPs).
        aux_channels: mid widths of the booster heads ``aux2``, ``aux3``,
            ``aux4``, ``aux5_4`` (mmsegmentation's 16, 64, 256, 1024).

    Example:
        >>> BiSeNetV2(14, head_channels=128)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    # (name, kind) of each auxiliary output: the booster heads, strides 4, 8, 16, 32
    aux_heads = (('aux2', 'segmentation'), ('aux3', 'segmentation'), ('aux4', 'segmentation'),
                 ('aux5_4', 'segmentation'))
    # submodules used only to make auxiliary outputs (excluded from the deployed parameter count)
    aux_modules = ('aux2', 'aux3', 'aux4', 'aux5_4')

    def __init__(self, num_classes=14, in_channels=3, head_channels=1024, aux_channels=(16, 64, 256, 1024)):
        super(BiSeNetV2, self).__init__()
        self.detail = DetailBranch(in_channels)
        self.semantic = SemanticBranch(in_channels)
        self.aggregation = GuidedAggregation(128)
        self.head = seg_head(128, head_channels, num_classes)
        # registered after the main modules: the earlier keys and their order are unchanged
        for name, stage_channels, mid in zip(self.aux_modules, (16, 32, 64, 128), aux_channels):
            setattr(self, name, seg_head(stage_channels, mid, num_classes))
        self.aux_outputs = ()
        self.add_quant_stubs()

    def forward(self, x):
        x_int8 = self.quant(x)
        wanted = [name for name in self.aux_modules if name in self.aux_outputs] if self.training else []
        if wanted:
            semantic, stages = self.semantic.forward_stages(x_int8)
        else:
            semantic = self.semantic(x_int8)
        features = self.aggregation(self.detail(x_int8), semantic)
        logits = self.dequant(resize_to(self.head(features), x.shape[-2:]))
        if not wanted:
            return logits
        outputs = {'out': logits}
        for name, stage in zip(self.aux_modules, stages):
            if name in wanted:
                outputs[name] = self.dequant(getattr(self, name)(stage))
        return outputs

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        keep_missing_heads(self, state_dict, prefix)
        super(BiSeNetV2, self)._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def bisenetv2(num_classes=14, in_channels=3, head_channels=1024, aux_channels=(16, 64, 256, 1024)):
    """Build a :class:`BiSeNetV2`; the registry entry ``bisenetv2``.

    Example:
        >>> bisenetv2(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return BiSeNetV2(num_classes=num_classes, in_channels=in_channels, head_channels=head_channels,
                     aux_channels=tuple(aux_channels))
