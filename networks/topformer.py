"""TopFormer-T (Zhang, Yang, Zhang, Lin, Zhang, Wu, Yu & Shen, "TopFormer: Token Pyramid Transformer
for Mobile Semantic Segmentation", CVPR 2022, arXiv:2204.05525), after the authors' code
(github.com/hustvl/TopFormer: mmseg/models/backbones/topformer.py, decode_heads/simple_head.py,
local_configs/topformer/topformer_tiny.py).

- Token pyramid module (``tpm``): a stride-2 stem and nine MobileNetV2 inverted residuals; the
  outputs at strides 4, 8, 16 and 32 (16, 32, 64, 96 channels) are the token pyramid.
- Pyramid pool aggregation (``ppa``): every level average-pooled to the size of the stride-32
  map reduced by ``c2t_stride`` 2 (``(H - 1) // 2 + 1``), concatenated: 208-channel tokens at 1/64.
- Semantics extractor (``trans``): four transformer blocks on the tokens, all in conv form:
  1x1 conv-BN q, k (4 heads x 16) and v (4 x 32), softmax over the tokens, ReLU6 + 1x1 conv-BN
  projection; MLP 1x1 conv-BN, depthwise 3x3, ReLU6, 1x1 conv-BN (ratio 2); stochastic depth
  rising to 0.1. As in the authors' code the attention logits are not scaled by key_dim ** -0.5.
- Semantics injection (``SIM``): for the 1/8, 1/16 and 1/32 levels, the local tokens (1x1 conv-BN)
  times the hard-sigmoid of the level's slice of the global semantics (1x1 conv-BN, upsampled), plus
  that slice embedded (1x1 conv-BN, upsampled), 128 channels each.
- Simple head (``decode_head``): the three injected maps summed at 1/8, a depthwise 1x1 conv-BN-ReLU,
  dropout 0.1 and the 1x1 classifier; the logits are upsampled bilinearly to the input size.

State-dict keys are the authors' (``tpm.layer3.conv.0.c.weight``, ``trans.transformer_blocks.0.
attn.to_q.bn.running_mean``, ``SIM.1.global_act.conv.weight``, ``decode_head.conv_seg.weight``), so
their ImageNet file ``topformer-T-224-66.2.pth`` (keys ``tpm.*``, ``trans.*`` and its classifier
``head.*``) loads as it is.

Differences from the reference, none of which changes the float outputs:

- h_sigmoid is ``F.hardsigmoid`` (= ReLU6(x + 3) / 6), which has an int8 kernel.
- Pooling to the token size is ``avg_pool2d`` when the sizes divide (always at multiples of 64
  px), the same numbers as ``adaptive_avg_pool2d`` but exportable to ONNX; other sizes keep the
  adaptive pool.
- Int8 (eager mode): everything is int8 except the attention core, run in float between a
  dequantize after the q/k/v convs and a quantize before the projection: the two matmuls and the
  softmax have no eager int8 kernels in torch. The conv-BN of the authors' nested ``Conv2d_BN`` is
  fused together with the ReLU that follows it in the parent block (``fuse_model``).

Cost: 1.39 M parameters at 150 classes (the paper's 1.4 M; 1.37 M at 19 classes) and 0.534 G
multiply-adds of convs and matmuls at 512x512, under the paper's 0.6 GFLOPs because that figure is rounded
to one decimal and its counter (mmcv/fvcore) also counts BatchNorm and activation elements (0.577 G with them).
Torch-Pruning cannot trace it: its index mapping fails on the split of the tokens into the four levels.

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import collections
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.blocks import resize_to
from networks.fusion import QuantizableNetwork, float_functional, fuse_groups
from networks.quant import api, fuse_modules

# The authors' topformer_tiny.py: (kernel, expansion, channels, stride) of the inverted residuals.
TINY_CFGS = ((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
             (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1))
TINY_CHANNELS = (16, 32, 64, 96)
EMBED_OUT_INDICES = (2, 4, 6, 8)
DECODE_OUT_INDICES = (1, 2, 3)


class Conv2dBN(nn.Sequential):
    """The authors' ``Conv2d_BN``: conv (no bias) ``c`` and BatchNorm ``bn``."""

    def __init__(self, a, b, ks=1, stride=1, pad=0, groups=1, bn_weight_init=1):
        super(Conv2dBN, self).__init__()
        self.add_module('c', nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module('bn', nn.BatchNorm2d(b))
        nn.init.constant_(self.bn.weight, bn_weight_init)


def conv_module(inp, oup, groups=1, activate=False):
    """mmcv's ``ConvModule`` with a 1x1 conv and BN (keys ``conv``, ``bn``), ReLU if ``activate``."""
    layers = [('conv', nn.Conv2d(inp, oup, 1, groups=groups, bias=False)), ('bn', nn.BatchNorm2d(oup))]
    if activate:
        layers.append(('activate', nn.ReLU(inplace=True)))
    return nn.Sequential(collections.OrderedDict(layers))


class DropPath(nn.Module):
    """Stochastic depth per sample in training; identity in eval."""

    def __init__(self, drop_prob=0.0):
        super(DropPath, self).__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x.div(keep) * (mask + keep).floor()


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand-ReLU], depthwise kxk-ReLU, linear 1x1; residual at stride 1."""

    def __init__(self, inp, oup, ks, stride, expand_ratio):
        super(InvertedResidual, self).__init__()
        hidden = int(round(inp * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers += [Conv2dBN(inp, hidden), nn.ReLU()]
        layers += [Conv2dBN(hidden, hidden, ks, stride, ks // 2, groups=hidden), nn.ReLU(),
                   Conv2dBN(hidden, oup)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == oup
        self.skip = float_functional() if self.use_res_connect else None

    def forward(self, x):
        return self.skip.add(x, self.conv(x)) if self.use_res_connect else self.conv(x)


class TokenPyramidModule(nn.Module):
    """Stem and inverted residuals ``layer1``..``layer9``; returns the outputs at ``out_indices``."""

    def __init__(self, cfgs, out_indices, in_channels=3, inp_channel=16):
        super(TokenPyramidModule, self).__init__()
        self.out_indices = out_indices
        self.stem = nn.Sequential(Conv2dBN(in_channels, inp_channel, 3, 2, 1), nn.ReLU())
        self.layers = []
        for index, (k, t, c, s) in enumerate(cfgs):
            self.add_module('layer%d' % (index + 1), InvertedResidual(inp_channel, c, k, s, t))
            inp_channel = c
            self.layers.append('layer%d' % (index + 1))

    def forward(self, x):
        outs = []
        x = self.stem(x)
        for index, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outs.append(x)
        return outs


class Attention(nn.Module):
    """Multi-head attention over the pixels of a map; the matmul-softmax core runs in float."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio):
        super(Attention, self).__init__()
        self.num_heads, self.key_dim = num_heads, key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        self.to_q = Conv2dBN(dim, key_dim * num_heads)
        self.to_k = Conv2dBN(dim, key_dim * num_heads)
        self.to_v = Conv2dBN(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2dBN(self.dh, dim, bn_weight_init=0))
        self.dequant = api().DeQuantStub()  # stateless: one serves q, k and v
        self.quant = api().QuantStub()

    def forward(self, x):
        b, _, h, w = x.shape
        q = self.dequant(self.to_q(x)).reshape(b, self.num_heads, self.key_dim, h * w).permute(0, 1, 3, 2)
        k = self.dequant(self.to_k(x)).reshape(b, self.num_heads, self.key_dim, h * w)
        v = self.dequant(self.to_v(x)).reshape(b, self.num_heads, self.d, h * w).permute(0, 1, 3, 2)
        attn = torch.matmul(q, k).softmax(dim=-1)
        xx = torch.matmul(attn, v).permute(0, 1, 3, 2).reshape(b, self.dh, h, w)
        return self.proj(self.quant(xx))


class Mlp(nn.Module):
    """1x1 conv-BN, depthwise 3x3 (bias), ReLU6, 1x1 conv-BN."""

    def __init__(self, dim, hidden):
        super(Mlp, self).__init__()
        self.fc1 = Conv2dBN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.ReLU6()
        self.fc2 = Conv2dBN(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """Transformer block: x + attn(x), then x + mlp(x), each branch under stochastic depth."""

    def __init__(self, dim, key_dim, num_heads, mlp_ratio, attn_ratio, drop_path):
        super(Block, self).__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.add_attn = float_functional()
        self.add_mlp = float_functional()

    def forward(self, x):
        x = self.add_attn.add(x, self.drop_path(self.attn(x)))
        return self.add_mlp.add(x, self.drop_path(self.mlp(x)))


class BasicLayer(nn.Module):
    """The semantics extractor: ``transformer_blocks`` applied in turn."""

    def __init__(self, depth, dim, key_dim, num_heads, mlp_ratio, attn_ratio, drop_paths):
        super(BasicLayer, self).__init__()
        self.transformer_blocks = nn.ModuleList(
            [Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio, drop_paths[i]) for i in range(depth)])

    def forward(self, x):
        for block in self.transformer_blocks:
            x = block(x)
        return x


def pool_to(x, size):
    """Adaptive average pooling to ``size``; a plain average pool when the sizes divide (same numbers, ONNX)."""
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if height % size[0] == 0 and width % size[1] == 0:
        kernel = (height // size[0], width // size[1])
        return F.avg_pool2d(x, kernel, kernel)
    return F.adaptive_avg_pool2d(x, size)


class PyramidPoolAgg(nn.Module):
    """Pools every pyramid level to the last level's size reduced by ``stride`` and concatenates them."""

    def __init__(self, stride):
        super(PyramidPoolAgg, self).__init__()
        self.stride = stride
        self.merge = float_functional()

    def forward(self, inputs):
        height, width = inputs[-1].shape[-2:]
        size = ((int(height) - 1) // self.stride + 1, (int(width) - 1) // self.stride + 1)
        return self.merge.cat([pool_to(x, size) for x in inputs], dim=1)


class HSigmoid(nn.Module):
    """The authors' ``h_sigmoid``, ReLU6(x + 3) / 6, as ``F.hardsigmoid`` (same function, int8 kernel)."""

    def forward(self, x):
        return F.hardsigmoid(x)


class InjectionMultiSum(nn.Module):
    """Semantics injection: local(x_l) * hsigmoid(act(x_g)) + embed(x_g), x_g upsampled to x_l's size."""

    def __init__(self, inp, oup):
        super(InjectionMultiSum, self).__init__()
        self.local_embedding = conv_module(inp, oup)
        self.global_embedding = conv_module(inp, oup)
        self.global_act = conv_module(inp, oup)
        self.act = HSigmoid()
        self.gate = float_functional()
        self.merge = float_functional()

    def forward(self, x_l, x_g):
        size = x_l.shape[-2:]
        sig_act = resize_to(self.act(self.global_act(x_g)), size)
        global_feat = resize_to(self.global_embedding(x_g), size)
        return self.merge.add(self.gate.mul(self.local_embedding(x_l), sig_act), global_feat)


class SimpleHead(nn.Module):
    """Sum of the inputs at the first one's size, depthwise 1x1 conv-BN-ReLU, dropout, classifier."""

    def __init__(self, channels, num_classes, num_inputs=3, dropout_ratio=0.1):
        super(SimpleHead, self).__init__()
        self.linear_fuse = conv_module(channels, channels, groups=channels, activate=True)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.sums = nn.ModuleList([float_functional() for _ in range(num_inputs - 1)])

    def forward(self, inputs):
        x = inputs[0]
        for pred, add in zip(inputs[1:], self.sums):
            x = add.add(x, resize_to(pred, x.shape[-2:]))
        return self.conv_seg(self.dropout(self.linear_fuse(x)))


class TopFormer(QuantizableNetwork, nn.Module):
    """TopFormer with the simple head, returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        drop_path_rate: stochastic depth of the last transformer block (0.1 in the authors' configs).
        num_heads: attention heads (4 in TopFormer-T).

    Example:
        >>> TopFormer(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    aux_heads = ()
    aux_modules = ()
    # why lowpower prune refuses it (Torch-Pruning's own error would name an index, not the cause)
    prune_reason = ("Torch-Pruning cannot follow the split of the 208 token channels into the pyramid "
                    "levels, and pruning q/k/v would break the per-head reshape of the attention")
    # Their ImageNet file holds tpm.* and trans.* under our names and a BN-linear classifier head.*.
    authors_key_map = ()
    authors_ignored = ('head.',)

    def __init__(self, num_classes=14, in_channels=3, drop_path_rate=0.1, num_heads=4, cfgs=TINY_CFGS,
                 channels=TINY_CHANNELS, out_channels=128, depths=4, key_dim=16, c2t_stride=2):
        super(TopFormer, self).__init__()
        self.channels = list(channels)
        self.tpm = TokenPyramidModule(cfgs, EMBED_OUT_INDICES, in_channels)
        self.ppa = PyramidPoolAgg(c2t_stride)
        # torch.linspace(0, rate, depths) of the authors, in Python so the model also builds on the meta device
        drop_paths = [drop_path_rate * i / max(depths - 1, 1) for i in range(depths)]
        self.trans = BasicLayer(depths, sum(channels), key_dim, num_heads, 2, 2, drop_paths)
        self.SIM = nn.ModuleList([InjectionMultiSum(c, out_channels) if i in DECODE_OUT_INDICES else nn.Identity()
                                  for i, c in enumerate(channels)])
        self.decode_head = SimpleHead(out_channels, num_classes, len(DECODE_OUT_INDICES))
        self.add_quant_stubs()
        self.aux_outputs = ()
        self.init_weights()

    def init_weights(self):
        # The authors' Topformer.init_weights (it also resets the projections' zero BN to 1), and
        # mmseg's classifier init.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
        nn.init.normal_(self.decode_head.conv_seg.weight, 0, 0.01)

    def fuse_model(self, qat=False):
        """Fuse conv-BN, with the ReLU that follows a ``Conv2dBN`` in its parent block, for int8."""
        modules = dict(self.named_modules())
        groups = []
        for group in fuse_groups(self):
            owner, _, index = group[0].rpartition('.')[0].rpartition('.')
            parent = modules.get(owner)
            if isinstance(modules[group[0].rpartition('.')[0]], Conv2dBN) and isinstance(parent, nn.Sequential):
                follower = parent._modules.get(str(int(index) + 1)) if index.isdigit() else None
                if type(follower) is nn.ReLU:
                    group = group + ['%s.%d' % (owner, int(index) + 1)]
            groups.append(group)
        fuse_modules(self, groups, qat)

    def forward(self, x):
        size = x.shape[-2:]
        pyramid = self.tpm(self.quant(x))
        tokens = self.trans(self.ppa(pyramid))
        semantics = tokens.split(self.channels, dim=1)
        injected = [self.SIM[i](pyramid[i], semantics[i]) for i in DECODE_OUT_INDICES]
        return self.dequant(resize_to(self.decode_head(injected), size))


def topformer_t(num_classes=14, in_channels=3, drop_path_rate=0.1):
    """Build TopFormer-T (:class:`TopFormer` with the authors' tiny settings); the registry entry ``topformer_t``.

    Example:
        >>> topformer_t(19).eval()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 19, 32, 32])
    """
    return TopFormer(num_classes=num_classes, in_channels=in_channels, drop_path_rate=drop_path_rate)
