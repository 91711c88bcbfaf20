"""PP-LiteSeg-T (Peng, Liu, Tang, Hao, Chu, Chen, Wu, Chen, Yu, Du, Dang, Lai, Liu, Hu, Yu & Ma,
"PP-LiteSeg: A Superior Real-Time Semantic Segmentation Model", arXiv:2204.02681, 2022).

Reference code: PaddleSeg (github.com/PaddlePaddle/PaddleSeg), ``paddleseg/models/pp_liteseg.py``,
``paddleseg/models/layers/tensor_fusion.py`` (UAFM) and ``paddleseg/models/backbones/stdcnet.py``
(STDC1); the T model is ``configs/pp_liteseg/pp_liteseg_stdc1_cityscapes_1024x512_scale0.5_160k.yml``.

- Encoder: STDC1 (Fan et al., CVPR 2021): two strided 3x3 conv-BN-ReLU, then three stages of two
  CatBottlenecks (4 convs whose outputs are concatenated; a stride-2 block downsamples with a
  depthwise 3x3 and pools its first branch), 256 / 512 / 1024 channels at 1/8, 1/16, 1/32.
- SPPM (simple pyramid pooling): average pooling to 1x1, 2x2 and 4x4, 1x1 conv-BN-ReLU to 128 each,
  upsampled and summed, 3x3 conv-BN-ReLU to 128.
- Flexible lightweight decoder of three UAFMs with spatial attention (``UAFM_SpAtten``): the high
  level feature is upsampled, the low level one goes through a 3x3 conv-BN-ReLU, the mean and max over
  channels of both (4 maps) give a one-channel weight ``a`` (3x3 conv-BN-ReLU, 3x3 conv-BN, sigmoid),
  and the fusion is ``x * a + y * (1 - a)``, then a 3x3 conv-BN-ReLU. Decoder widths 128 / 64 / 32 at
  1/32, 1/16, 1/8 (the T config's ``arm_out_chs [32, 64, 128]``, ``seg_head_inter_chs [32, 64, 64]``).
- Seg heads (3x3 conv-BN-ReLU, 1x1 conv without bias) on each decoder output. ``eval()`` uses the 1/8
  one; in training PaddleSeg also returns the 1/16 and 1/32 logits with the same loss weight: here they
  are the auxiliary outputs ``aux16`` and ``aux32`` (``aux_heads``), returned at their own resolution.

Differences from the reference, and why:

- STDCNet's ``conv_last`` (1x1, 1024 -> 1024, 1.05 M parameters) is not built: PaddleSeg builds it
  but PP-LiteSeg never calls it (``use_conv_last=False``), so it would only be dead weight on the device.
- Module names: the backbone follows PaddleSeg's and STDC-Seg's STDCNet exactly (``features.N`` with
  ``conv`` / ``bn`` in ``ConvBNRelu``, ``conv_list``, ``avd_layer``), so the STDC1 ImageNet file of
  STDC-Seg (MichaelFan01/STDC-Seg, ``STDCNet813M_73.91.tar``, keys like ``features.0.conv.weight``,
  ``features.2.conv_list.0.conv.weight``, ``features.2.avd_layer.0.weight``) loads through
  ``authors_key_map``; its ``x2..x32`` keys are the same tensors again (``nn.Sequential`` views of
  ``features``) and its ``conv_last`` / ``fc`` / ``bn`` / ``linear`` are the classifier, so they are
  ignored. Decoder blocks use this zoo's ``ConvBNReLU`` (keys ``0`` / ``1``, Paddle's ``_conv`` /
  ``_batch_norm`` cannot be torch names anyway) and the heads are ``seg_head`` / ``seg_head16`` /
  ``seg_head32`` instead of PaddleSeg's list ``seg_heads`` so ``aux_modules`` can name the two
  training-only heads.
- The SPPM convs keep PaddleSeg's conv bias (Paddle's ``ConvBNReLU`` default), the other convs have none.
- CatBottleneck's pooled skip averages without the zero padding (Paddle's ``AvgPool2D`` default
  ``exclusive=True``; STDC-Seg's torch copy counts the padding).
- A feature map smaller than a pyramid bin count that divides it is pooled to its own size: the stage
  output is identical (each bin would copy one pixel and the resize back averages equal pixels) and it
  exports to ONNX at the tiny sizes the tests use (32 and 64 px inputs).

FLOPs: the paper gives no FLOPs or parameter count for PP-LiteSeg-T (only mIoU and FPS); the test
checks the parameter count against a hand count of the reference code's layers and states the FLOPs
we count at 1x3x1024x2048.

Int8 (eager mode): every add, product and concatenation goes through its own ``FloatFunctional``,
``1 - a`` is ``add_scalar(mul_scalar(a, -1), 1)`` on int8 data. One op group stays float: the mean and
max over the channel dimension in each UAFM's attention (``ChannelStats`` in a ``FloatIsland``):
torch 2.x's QuantizedCPU runs ``mean`` and ``max`` over dim 1 but has no ``amax``, and which of them the
Jetson's torch 1.10 qnnpack build has cannot be checked off the device (C-level kernels are not in the
device API index), so they run in float: dequantize, reduce, quantize the 2-channel result. The sigmoid,
the pooling, the bilinear resizes and the products are int8.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.blocks import ConvBNReLU, resize_to
from networks.fusion import QuantizableNetwork, float_functional
from networks.quant import FloatIsland


class ConvBNRelu(nn.Module):
    """STDCNet's conv-BN-ReLU with the authors' attribute names (``conv``, ``bn``, ``relu``).

    Example:
        >>> ConvBNRelu(3, 32, 3, 2)(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 32, 32, 32])
    """

    fuse_groups = (('conv', 'bn', 'relu'),)

    def __init__(self, in_planes, out_planes, kernel=3, stride=1):
        super(ConvBNRelu, self).__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class CatBottleneck(nn.Module):
    """STDC module: ``block_num`` convs in a chain (1x1 to out/2, then 3x3 halving), outputs concatenated.

    A stride-2 block puts a depthwise 3x3 conv-BN (``avd_layer``) after the first conv and pools the
    first branch (``skip``) so all branches meet at half the size.

    Example:
        >>> CatBottleneck(64, 256, 4, stride=2)(torch.zeros(1, 64, 16, 16)).shape
        torch.Size([1, 256, 8, 8])
    """

    def __init__(self, in_planes, out_planes, block_num=4, stride=1):
        super(CatBottleneck, self).__init__()
        self.stride = stride
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(out_planes // 2, out_planes // 2, 3, stride=2, padding=1,
                          groups=out_planes // 2, bias=False),
                nn.BatchNorm2d(out_planes // 2),
            )
            self.skip = nn.AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)
        widths = [out_planes // 2] + [out_planes // 2 ** (index + 1) for index in range(1, block_num - 1)]
        widths.append(widths[-1])
        self.conv_list = nn.ModuleList([ConvBNRelu(in_planes, widths[0], kernel=1)] + [
            ConvBNRelu(widths[index - 1], widths[index]) for index in range(1, block_num)])
        self.merge = float_functional()

    def forward(self, x):
        first = self.conv_list[0](x)
        out = self.avd_layer(first) if self.stride == 2 else first
        outputs = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            outputs.append(out)
        if self.stride == 2:
            first = self.skip(first)
        return self.merge.cat([first] + outputs, dim=1)


class STDCNet(nn.Module):
    """STDC1 (``layers=(2, 2, 2)``, base 64, 4 convs per block) returning the 1/8, 1/16 and 1/32 features.

    Example:
        >>> [f.shape[1] for f in STDCNet()(torch.zeros(1, 3, 64, 64))]
        [256, 512, 1024]
    """

    def __init__(self, in_channels=3, base=64, layers=(2, 2, 2), block_num=4):
        super(STDCNet, self).__init__()
        features = [ConvBNRelu(in_channels, base // 2, 3, 2), ConvBNRelu(base // 2, base, 3, 2)]
        self.stage_ends = []
        previous = base
        for stage, repeats in enumerate(layers):
            width = base * 4 * 2 ** stage
            for index in range(repeats):
                features.append(CatBottleneck(previous, width, block_num, 2 if index == 0 else 1))
                previous = width
            self.stage_ends.append(len(features))
        self.features = nn.Sequential(*features)

    def forward(self, x):
        outputs = []
        start = 0
        for end in self.stage_ends:
            for index in range(start, end):
                x = self.features[index](x)
            outputs.append(x)
            start = end
        return outputs


def conv_bn_relu_b(in_channels, out_channels, kernel_size):
    """Conv2d with bias (PaddleSeg's ``layers.ConvBNReLU`` default in the SPPM), BN, ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class PyramidPool(nn.Module):
    """Adaptive average pooling to ``bins`` x ``bins``; a smaller map that divides ``bins`` keeps its size."""

    def __init__(self, bins):
        super(PyramidPool, self).__init__()
        self.bins = bins

    def forward(self, x):
        size = [side if side < self.bins and self.bins % side == 0 else self.bins for side in x.shape[-2:]]
        return F.adaptive_avg_pool2d(x, size)


class PPContextModule(nn.Module):
    """SPPM: pyramid pooling stages summed after upsampling, then a 3x3 conv-BN-ReLU.

    Example:
        >>> PPContextModule(64, 16, 16, (1, 2, 4))(torch.zeros(2, 64, 2, 2)).shape
        torch.Size([2, 16, 2, 2])
    """

    def __init__(self, in_channels, inter_channels, out_channels, bin_sizes):
        super(PPContextModule, self).__init__()
        self.stages = nn.ModuleList([nn.Sequential(PyramidPool(bins), conv_bn_relu_b(in_channels, inter_channels, 1))
                                     for bins in bin_sizes])
        self.sums = nn.ModuleList([float_functional() for _ in bin_sizes[1:]])
        self.conv_out = conv_bn_relu_b(inter_channels, out_channels, 3)

    def forward(self, x):
        size = x.shape[-2:]
        out = resize_to(self.stages[0](x), size)
        for stage, total in zip(self.stages[1:], self.sums):
            out = total.add(out, resize_to(stage(x), size))
        return self.conv_out(out)


class ChannelStats(nn.Module):
    """Mean and max over channels, ``(N, 2, H, W)``; runs in float inside a ``FloatIsland``."""

    def __init__(self):
        super(ChannelStats, self).__init__()
        self.merge = float_functional()  # float: the island sets qconfig None for this module

    def forward(self, x):
        return self.merge.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)


class UAFM_SpAtten(nn.Module):
    """Unified attention fusion with spatial attention: ``conv_out(x * a + up(y) * (1 - a))``.

    Args:
        x_ch: channels of the low level (larger) feature ``x``.
        y_ch: channels of the high level feature ``y``; ``x`` is projected to it.
        out_ch: output channels.
        ksize: kernel of the conv on ``x``.

    Example:
        >>> UAFM_SpAtten(32, 16, 8)(torch.zeros(1, 32, 8, 8), torch.zeros(1, 16, 4, 4)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, x_ch, y_ch, out_ch, ksize=3):
        super(UAFM_SpAtten, self).__init__()
        self.conv_x = ConvBNReLU(x_ch, y_ch, ksize)
        self.conv_out = ConvBNReLU(y_ch, out_ch, 3)
        self.conv_xy_atten = nn.Sequential(ConvBNReLU(4, 2, 3), ConvBNReLU(2, 1, 3, activation=False))
        self.stats_x = FloatIsland(ChannelStats())
        self.stats_y = FloatIsland(ChannelStats())
        self.stats = float_functional()
        self.negate = float_functional()
        self.complement = float_functional()
        self.weight_x = float_functional()
        self.weight_y = float_functional()
        self.fuse = float_functional()

    def forward(self, x, y):
        x = self.conv_x(x)
        y = resize_to(y, x.shape[-2:])
        stats = self.stats.cat([self.stats_x(x), self.stats_y(y)], dim=1)
        atten = torch.sigmoid(self.conv_xy_atten(stats))
        rest = self.complement.add_scalar(self.negate.mul_scalar(atten, -1.0), 1.0)
        # Expanded to the full shape: not every int8 backend broadcasts in a quantized mul.
        out = self.fuse.add(self.weight_x.mul(x, atten.expand_as(x)), self.weight_y.mul(y, rest.expand_as(y)))
        return self.conv_out(out)


class PPLiteSegHead(nn.Module):
    """SPPM on the 1/32 feature, then UAFMs from 1/32 to 1/8; returns the fused [1/8, 1/16, 1/32] features."""

    def __init__(self, backbone_out_chs, arm_out_chs, cm_bin_sizes, cm_out_ch):
        super(PPLiteSegHead, self).__init__()
        self.cm = PPContextModule(backbone_out_chs[-1], cm_out_ch, cm_out_ch, cm_bin_sizes)
        highs = list(arm_out_chs[1:]) + [cm_out_ch]
        self.arm_list = nn.ModuleList([UAFM_SpAtten(low, high, out)
                                       for low, high, out in zip(backbone_out_chs, highs, arm_out_chs)])

    def forward(self, features):
        high = self.cm(features[-1])
        outputs = []
        for index in reversed(range(len(features))):
            high = self.arm_list[index](features[index], high)
            outputs.insert(0, high)
        return outputs


class SegHead(nn.Sequential):
    """3x3 conv-BN-ReLU and a 1x1 classifier without bias (PaddleSeg's SegHead)."""

    def __init__(self, in_chan, mid_chan, n_classes):
        super(SegHead, self).__init__(ConvBNReLU(in_chan, mid_chan, 3),
                                      nn.Conv2d(mid_chan, n_classes, 1, bias=False))


class PPLiteSeg(QuantizableNetwork, nn.Module):
    """PP-LiteSeg with an STDC1 encoder, returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        arm_out_chs: decoder (UAFM) widths at 1/8, 1/16, 1/32.
        seg_head_inter_chs: seg head widths at 1/8, 1/16, 1/32.
        cm_out_ch: SPPM width.
        cm_bin_sizes: SPPM pooled sizes.

    Example:
        >>> PPLiteSeg(14)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    # (name, kind) of each auxiliary output; kind 'segmentation' (num_classes logits) or 'boundary' (1 logit)
    aux_heads = (('aux16', 'segmentation'), ('aux32', 'segmentation'))
    # submodules used only to make auxiliary outputs (excluded from the deployed parameter count)
    aux_modules = ('seg_head16', 'seg_head32')
    # (authors' key prefix, our key prefix), first match wins: STDC-Seg's STDC1 ImageNet file
    authors_key_map = (('features.', 'backbone.features.'),)
    # its repeated views of ``features`` and its classifier
    authors_ignored = ('x2.', 'x4.', 'x8.', 'x16.', 'x32.', 'conv_last.', 'fc.', 'bn.', 'linear.')

    def __init__(self, num_classes=14, in_channels=3, arm_out_chs=(32, 64, 128),
                 seg_head_inter_chs=(32, 64, 64), cm_out_ch=128, cm_bin_sizes=(1, 2, 4)):
        super(PPLiteSeg, self).__init__()
        self.backbone = STDCNet(in_channels)
        self.ppseg_head = PPLiteSegHead((256, 512, 1024), arm_out_chs, cm_bin_sizes, cm_out_ch)
        self.seg_head = SegHead(arm_out_chs[0], seg_head_inter_chs[0], num_classes)
        self.seg_head16 = SegHead(arm_out_chs[1], seg_head_inter_chs[1], num_classes)
        self.seg_head32 = SegHead(arm_out_chs[2], seg_head_inter_chs[2], num_classes)
        self.aux_outputs = ()
        self.add_quant_stubs()

    def forward(self, x):
        features = self.ppseg_head(self.backbone(self.quant(x)))
        logits = self.dequant(resize_to(self.seg_head(features[0]), x.shape[-2:]))
        if not (self.training and self.aux_outputs):
            return logits
        outputs = {'out': logits}
        if 'aux16' in self.aux_outputs:
            outputs['aux16'] = self.dequant(self.seg_head16(features[1]))
        if 'aux32' in self.aux_outputs:
            outputs['aux32'] = self.dequant(self.seg_head32(features[2]))
        return outputs


def ppliteseg_t(num_classes=14, in_channels=3, arm_out_chs=(32, 64, 128), seg_head_inter_chs=(32, 64, 64),
                cm_out_ch=128):
    """Build PP-LiteSeg-T (STDC1 encoder, the T config's decoder widths); the registry entry ``ppliteseg_t``.

    Example:
        >>> ppliteseg_t(14).eval()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 14, 32, 32])
    """
    return PPLiteSeg(num_classes=num_classes, in_channels=in_channels, arm_out_chs=tuple(arm_out_chs),
                     seg_head_inter_chs=tuple(seg_head_inter_chs), cm_out_ch=cm_out_ch)
