"""PIDNet-S (Xu, Xiong & Bhattacharyya, "PIDNet: A Real-time Semantic Segmentation Network Inspired by
PID Controllers", CVPR 2023, arXiv:2206.02066); reference code: github.com/XuJiacong/PIDNet,
``models/pidnet.py`` and ``models/model_utils.py``.

Three branches share a ResNet-like stem (``conv1``, ``layer1``, ``layer2``; output stride 8):

- I (integral, context): ``layer3``..``layer5`` down to 1/64, then the parallel aggregation pyramid
  pooling module ``spp`` (PAPPM);
- P (proportional, detail): ``layer3_``..``layer5_`` at 1/8, pulling context from the I branch through
  the pixel-attention-guided fusions ``pag3``/``pag4`` (sigmoid of the channel-summed product of the
  two branches' 1x1 embeddings);
- D (derivative, boundary): ``layer3_d``..``layer5_d`` at 1/8, adding the I branch's ``diff3``/``diff4``.

``dfm`` (Light-Bag) mixes P and I under the sigmoid of the D features (boundary attention) and
``final_layer`` predicts at 1/8; the logits are upsampled bilinearly to the input. PIDNet-S is m=2,
n=3, planes=32, ppm_planes=96, head_planes=128 (``planes=64`` gives PIDNet-M). In training the two
auxiliary heads of the paper can be asked for: ``seghead_p`` on the P branch after stage 3 ('aux',
class logits) and ``seghead_d`` on the D branch after stage 4 ('boundary', one logit), both at 1/8.

Layer names follow the authors' code, so their ``PIDNet_S_ImageNet.pth.tar`` loads by name (their
own loader copies every key whose name and shape match). Differences from the reference, none of
which changes the float function:

- the heads see the ReLU'd P and D features: the reference stores them before an in-place ReLU
  that rewrites the same tensor, so this is what its heads see too;
- adds, products and concatenations go through ``FloatFunctional`` (add then ReLU as ``add_relu``)
  and every ReLU is its own module, so conv-BN-ReLU runs fuse for int8;
- the two gates are computed in a float island, i.e. ``(1 - s) * x + s * y`` is
  ``keep * x + s * y`` where ``s`` and ``keep = 1 - s`` are both made in float and quantized by
  their own stubs: torch has no int8 channel sum (PagFM) nor an int8 ``1 - s`` (no quantized
  subtraction; a negative ``mul_scalar`` is not supported on every engine), and the blend itself
  stays int8. Only these element-wise sigmoids and the PagFM channel sum run in float;
- the three classifier 1x1 convs (``conv2`` of the heads) keep torch's default initialisation: the
  reference's Kaiming fan-out init gives them weights of std sqrt(2 / num_classes), so untrained logits
  reach the hundreds (and fused-vs-unfused float rounding exceeds 1e-4); the ImageNet file never
  holds them;
- the unused ``features`` list of the reference forward is not returned.

Size: 7.63 M parameters without the auxiliary heads at 19 classes (paper: 7.6 M; the same count as
the reference code) and 47.2 G multiply-adds at 1024x2048 (94.4 GFLOPs on torch's counter, convs
only), 0.9% under the paper's 47.6 "GFLOPs", which are multiply-adds and include the ops we do not count.

Torch-Pruning cannot prune it (``lowpower prune`` says so): it traces PagFM's channel sum and the
broadcast of its one-channel gate as element-wise ops, so it ties the 32-channel embeddings to the
64-channel P features. BN folding, int8 and ONNX export work.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch
import torch.nn as nn

from networks.blocks import add_pyramid_scales, bn_relu_conv, resize_to
from networks.fusion import QuantizableNetwork, float_functional
from networks.quant import api


def conv_bn(in_channels, out_channels, kernel_size=1, bias=False):
    """The reference's Conv2d (padding keeps the size) + BatchNorm2d pair, no activation."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); ``no_relu`` leaves out the ReLU after the residual add."""

    expansion = 1
    fuse_groups = (('conv1', 'bn1', 'relu'), ('conv2', 'bn2'))

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=False):
        super(BasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu
        self.skip = float_functional()

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.skip.add(out, residual) if self.no_relu else self.skip.add_relu(out, residual)


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1 to ``2 * planes``); no ReLU after the add unless ``no_relu=False``."""

    expansion = 2
    fuse_groups = (('conv1', 'bn1', 'relu'), ('conv2', 'bn2', 'relu2'), ('conv3', 'bn3'))

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=True):
        super(Bottleneck, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)  # the reference reuses ``relu``; fusion needs one per conv
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample
        self.no_relu = no_relu
        self.skip = float_functional()

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu2(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        out = self.bn3(self.conv3(out))
        return self.skip.add(out, residual) if self.no_relu else self.skip.add_relu(out, residual)


def make_layer(block, inplanes, planes, blocks, stride=1, single=False):
    """The reference's ``_make_layer`` (the last block without the final ReLU) or, with ``single``,
    its ``_make_single_layer`` (one block, no final ReLU, not wrapped in a Sequential)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    if single:
        return block(inplanes, planes, stride, downsample, no_relu=True)
    layers = [block(inplanes, planes, stride, downsample)]
    for index in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, no_relu=index == blocks - 1))
    return nn.Sequential(*layers)


class SegmentHead(nn.Module):
    """The reference's ``segmenthead``: BN, ReLU, 3x3 conv to ``interplanes``, BN, ReLU, 1x1 conv (bias)."""

    fuse_groups = (('bn1', 'relu'), ('conv1', 'bn2', 'relu2'))

    def __init__(self, inplanes, interplanes, outplanes):
        super(SegmentHead, self).__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x):
        return self.conv2(self.relu2(self.bn2(self.conv1(self.relu(self.bn1(x))))))


class PAPPM(nn.Module):
    """Parallel aggregation PPM: four average-pooled scales added to ``scale0``, one grouped 3x3 conv
    over all four, concatenated with ``scale0``, compressed, plus a 1x1 shortcut."""

    def __init__(self, inplanes, branch_planes, outplanes):
        super(PAPPM, self).__init__()
        add_pyramid_scales(self, inplanes, branch_planes)
        self.scale_process = bn_relu_conv(branch_planes * 4, branch_planes * 4, 3, groups=4)
        self.compression = bn_relu_conv(branch_planes * 5, outplanes)
        self.shortcut = bn_relu_conv(inplanes, outplanes)
        self.scale_adds = nn.ModuleList([float_functional() for _ in range(4)])
        self.scale_cat = float_functional()
        self.out_cat = float_functional()
        self.out_add = float_functional()

    def forward(self, x):
        size = x.shape[-2:]
        x_ = self.scale0(x)
        scales = [add.add(resize_to(scale(x), size), x_) for add, scale in
                  zip(self.scale_adds, (self.scale1, self.scale2, self.scale3, self.scale4))]
        scale_out = self.scale_process(self.scale_cat.cat(scales, dim=1))
        return self.out_add.add(self.compression(self.out_cat.cat([x_, scale_out], dim=1)), self.shortcut(x))


class Gate(nn.Module):
    """Float island making a sigmoid gate ``s`` and its complement ``1 - s``, each quantized by its own stub.

    With two inputs the gate is the sigmoid of their channel-summed product (PagFM), broadcast to
    ``like``'s channels (int8 products do not broadcast on every engine); with one, its sigmoid (Light-Bag).
    """

    def __init__(self):
        super(Gate, self).__init__()
        self.dequant = api().DeQuantStub()
        self.quant_gate = api().QuantStub()
        self.quant_keep = api().QuantStub()

    def forward(self, x, y=None, like=None):
        x = self.dequant(x)
        if y is not None:
            x = (x * self.dequant(y)).sum(dim=1, keepdim=True)
        gate = torch.sigmoid(x)
        if like is not None:
            gate = gate.expand(-1, like.shape[1], -1, -1)
        return self.quant_gate(gate), self.quant_keep(1.0 - gate)


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: ``(1 - s) * x + s * up(y)`` with ``s = sigmoid(sum_c f_x(x) * up(f_y(y)))``."""

    def __init__(self, in_channels, mid_channels):
        super(PagFM, self).__init__()
        self.f_x = conv_bn(in_channels, mid_channels)
        self.f_y = conv_bn(in_channels, mid_channels)
        self.gate = Gate()
        self.keep_x = float_functional()
        self.take_y = float_functional()
        self.blend = float_functional()

    def forward(self, x, y):
        size = x.shape[-2:]
        sim, keep = self.gate(self.f_x(x), resize_to(self.f_y(y), size), like=x)
        return self.blend.add(self.keep_x.mul(keep, x), self.take_y.mul(sim, resize_to(y, size)))


class Light_Bag(nn.Module):  # noqa: N801 -- the reference's class name
    """Light boundary-attention-guided fusion: ``conv_p((1 - e) * i + p) + conv_i(i + e * p)``, ``e = sigmoid(d)``."""

    def __init__(self, in_channels, out_channels):
        super(Light_Bag, self).__init__()
        self.conv_p = conv_bn(in_channels, out_channels)
        self.conv_i = conv_bn(in_channels, out_channels)
        self.gate = Gate()
        self.mul_i = float_functional()
        self.add_p = float_functional()
        self.mul_p = float_functional()
        self.add_i = float_functional()
        self.merge = float_functional()

    def forward(self, p, i, d):
        edge, keep = self.gate(d)
        p_add = self.conv_p(self.add_p.add(self.mul_i.mul(keep, i), p))
        i_add = self.conv_i(self.add_i.add(i, self.mul_p.mul(edge, p)))
        return self.merge.add(p_add, i_add)


class PIDNet(QuantizableNetwork, nn.Module):
    """PIDNet (m=2 variants: S and M) returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        planes: base width C (32: PIDNet-S, 64: PIDNet-M).
        ppm_planes: branch width of the PAPPM.
        head_planes: width of the 3x3 conv of the segmentation heads.

    Example:
        >>> PIDNet(14, planes=16)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 14, 64, 64])
    """

    # (name, kind) of each auxiliary output
    aux_heads = (('aux', 'segmentation'), ('boundary', 'boundary'))
    # used only for the auxiliary outputs
    aux_modules = ('seghead_p', 'seghead_d')
    # why lowpower prune refuses it (Torch-Pruning's own error would name an index, not the cause)
    prune_reason = ("Torch-Pruning takes PagFM's channel-summed gate for an element-wise op and couples "
                    "its 32-channel embeddings with the 64-channel P features")
    # the ImageNet file's classifier (DDRNet-style down5, last_layer, linear); everything else loads by name
    authors_key_map = ()
    authors_ignored = ('down4.', 'down5.', 'last_layer.', 'linear.')

    def __init__(self, num_classes=14, in_channels=3, planes=32, ppm_planes=96, head_planes=128):
        super(PIDNet, self).__init__()
        m, n = 2, 3  # blocks per stage of the S and M variants (L: 3, 4 with DAPPM and Bag, not built here)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, planes, 3, stride=2, padding=1), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride=2, padding=1), nn.BatchNorm2d(planes), nn.ReLU(inplace=True))
        self.relu = nn.ReLU()  # not in place: the heads keep the tensors it is applied to
        self.layer1 = make_layer(BasicBlock, planes, planes, m)
        self.layer2 = make_layer(BasicBlock, planes, planes * 2, m, stride=2)
        self.layer3 = make_layer(BasicBlock, planes * 2, planes * 4, n, stride=2)
        self.layer4 = make_layer(BasicBlock, planes * 4, planes * 8, n, stride=2)
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 2, stride=2)
        self.compression3 = conv_bn(planes * 4, planes * 2)
        self.compression4 = conv_bn(planes * 8, planes * 2)
        self.pag3 = PagFM(planes * 2, planes)
        self.pag4 = PagFM(planes * 2, planes)
        self.layer3_ = make_layer(BasicBlock, planes * 2, planes * 2, m)
        self.layer4_ = make_layer(BasicBlock, planes * 2, planes * 2, m)
        self.layer5_ = make_layer(Bottleneck, planes * 2, planes * 2, 1)
        self.layer3_d = make_layer(BasicBlock, planes * 2, planes, 1, single=True)
        self.layer4_d = make_layer(Bottleneck, planes, planes, 1)
        self.diff3 = conv_bn(planes * 4, planes, 3)
        self.diff4 = conv_bn(planes * 8, planes * 2, 3)
        self.add_d3 = float_functional()
        self.add_d4 = float_functional()
        self.spp = PAPPM(planes * 16, ppm_planes, planes * 4)
        self.dfm = Light_Bag(planes * 4, planes * 4)
        self.layer5_d = make_layer(Bottleneck, planes * 2, planes * 2, 1)
        self.seghead_p = SegmentHead(planes * 2, head_planes, num_classes)
        self.seghead_d = SegmentHead(planes * 2, planes, 1)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)
        self.add_quant_stubs()
        self.aux_outputs = ()
        classifiers = [head.conv2 for head in (self.seghead_p, self.seghead_d, self.final_layer)]
        for module in self.modules():  # the reference's initialisation, but torch's default for the classifiers
            if isinstance(module, nn.Conv2d) and all(module is not conv for conv in classifiers):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x):
        size = x.shape[-2:]
        x = self.relu(self.layer2(self.relu(self.layer1(self.conv1(self.quant(x))))))
        p = self.layer3_(x)
        d = self.layer3_d(x)
        branch_size = d.shape[-2:]
        x = self.relu(self.layer3(x))
        p = self.relu(self.pag3(p, self.compression3(x)))
        d = self.add_d3.add_relu(d, resize_to(self.diff3(x), branch_size))
        aux_p = p
        x = self.relu(self.layer4(x))
        p = self.relu(self.pag4(self.layer4_(p), self.compression4(x)))
        d = self.add_d4.add_relu(self.layer4_d(d), resize_to(self.diff4(x), branch_size))
        aux_d = d
        i = resize_to(self.spp(self.layer5(x)), branch_size)
        out = self.final_layer(self.dfm(self.layer5_(p), i, self.layer5_d(d)))
        logits = resize_to(self.dequant(out), size)
        if not (self.training and self.aux_outputs):
            return logits
        outputs = {'out': logits}
        if 'aux' in self.aux_outputs:
            outputs['aux'] = self.dequant(self.seghead_p(aux_p))
        if 'boundary' in self.aux_outputs:
            outputs['boundary'] = self.dequant(self.seghead_d(aux_d))
        return outputs


def pidnet_s(num_classes=14, in_channels=3, planes=32, ppm_planes=96, head_planes=128):
    """Build PIDNet-S (:class:`PIDNet` with m=2, n=3); the registry entry ``pidnet_s``.

    Example:
        >>> pidnet_s(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """
    return PIDNet(num_classes=num_classes, in_channels=in_channels, planes=planes, ppm_planes=ppm_planes,
                  head_planes=head_planes)
