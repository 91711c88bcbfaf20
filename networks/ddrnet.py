"""DDRNet-23-slim (Hong, Pan, Sun & Jia, "Deep Dual-resolution Networks for Real-time and Accurate
Semantic Segmentation of Road Scenes", arXiv:2101.06085, 2021; IEEE T-ITS 2023).

Reference code: github.com/ydhongHIT/DDRNet, ``segmentation/DDRNet_23_slim.py`` (the network) and
``classification/DDRNet_23_slim.py`` (the ImageNet model of ``DDRNet23s_imagenet.pth``).

A ResNet-like stem (two stride-2 convs, layer1, layer2) splits at 1/8 into two deep branches: a
high-resolution one that stays at 1/8 (64 channels: layer3_, layer4_, layer5_) and a low-resolution
one that goes to 1/16, 1/32 and 1/64 (layer3, layer4, layer5). After stages 3 and 4 the branches
exchange features both ways (bilateral fusion: strided 3x3 convs ``down3``/``down4`` into the low
branch, 1x1 ``compression3``/``compression4`` plus bilinear upsampling into the high one). The
Deep Aggregation Pyramid Pooling Module (DAPPM: average pools 5/9/17 with strides 2/4/8 and a global
pool, each upsampled and added to the previous scale before a 3x3 conv) ends the low branch; its
output, upsampled to 1/8, is added to the high branch and ``final_layer`` predicts the classes.
``seghead_extra`` predicts them from the high branch after the first fusion; the authors train it
as an auxiliary loss with weight 0.4 and drop it at inference.

Module names, BN placement (pre-activation BN-ReLU-conv in DAPPM and the heads), biased stem convs,
``no_relu`` on the last block of each stage (and on the single Bottlenecks) and init are the
authors', so their ImageNet file loads by name (its ``down5``, ``last_layer`` and ``linear`` are the
classifier and are ignored).

Differences from the reference, none of which changes the float function:

- every residual / fusion add and the DAPPM concatenation go through their own ``FloatFunctional``
  and the ReLUs used twice in a block are separate modules, so the network converts to eager int8;
  no op stays float (bilinear resize, average pooling and the pre-activation BN-ReLU, fused to
  BNReLU2d, have int8 kernels);
- the 1/8 size the low branch is resized to is the high branch's own size, not ``input // 8``:
  the same for the multiples of 8 the network takes, and right for odd sizes too;
- the logits are resized to the input size (the authors' trainer does that outside the network);
- BatchNorm2d instead of SyncBatchNorm (the trainer converts for multi-GPU runs);
- the two classifier convs (``conv2`` of the heads) start from N(0, 0.01) and zero bias instead of He
  init, so untrained logits are near zero rather than in the hundreds (the float function of a
  trained or loaded network is unchanged).

Figures: 5.7 M parameters and 36.3 GFLOPs (multiply-adds) at 1024x2048 in the paper's Cityscapes
table; ours are 5,695,987 deployed parameters at 19 classes (``seghead_extra`` excluded) and 36.28 G
multiply-adds (tests/test_ddrnet.py).

Device-side code: Python 3.6 syntax and the torch 1.10 API only.
"""
import torch  # noqa: F401 -- the docstring examples use it
import torch.nn as nn

from networks.blocks import add_pyramid_scales, bn_relu_conv, resize_to
from networks.fusion import QuantizableNetwork, float_functional


def conv3x3(in_planes, out_planes, stride=1):
    """The authors' 3x3 conv: padding 1, no bias (BN follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """The authors' basic residual block; ``no_relu`` leaves the sum without ReLU.

    Example:
        >>> BasicBlock(32, 32)(torch.zeros(1, 32, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """

    expansion = 1
    fuse_groups = (('conv1', 'bn1', 'relu'), ('conv2', 'bn2'))  # read by networks.fusion

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=False):
        super(BasicBlock, self).__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.no_relu = no_relu
        self.skip = float_functional()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.skip.add(out, residual) if self.no_relu else self.skip.add_relu(out, residual)


class Bottleneck(nn.Module):
    """The authors' bottleneck (expansion 2); in the segmentation net ``no_relu`` defaults to True.

    Example:
        >>> Bottleneck(128, 64)(torch.zeros(1, 128, 8, 8)).shape
        torch.Size([1, 128, 8, 8])
    """

    expansion = 2
    fuse_groups = (('conv1', 'bn1', 'relu1'), ('conv2', 'bn2', 'relu2'), ('conv3', 'bn3'))

    def __init__(self, inplanes, planes, stride=1, downsample=None, no_relu=True):
        super(Bottleneck, self).__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        # The authors reuse one ReLU; fusion replaces each fused ReLU, so each use has its own.
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.no_relu = no_relu
        self.skip = float_functional()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.skip.add(out, residual) if self.no_relu else self.skip.add_relu(out, residual)


def make_layer(block, inplanes, planes, blocks, stride=1):
    """The authors' ``_make_layer``: the last of several blocks has ``no_relu``; a single block keeps
    its class default (True for the segmentation Bottleneck, False for BasicBlock)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample)]
    for index in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, no_relu=index == blocks - 1))
    return nn.Sequential(*layers)


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling Module (paper Fig. 5), the authors' layout.

    The pools pad by half the kernel with ``count_include_pad`` (PyTorch's default, as the authors),
    so a 1x1 map (the 1/64 map of a 32 or 64 px input) pools to 1x1.

    Example:
        >>> DAPPM(512, 128, 128)(torch.zeros(2, 512, 1, 1)).shape
        torch.Size([2, 128, 1, 1])
    """

    def __init__(self, inplanes, branch_planes, outplanes):
        super(DAPPM, self).__init__()
        add_pyramid_scales(self, inplanes, branch_planes)
        self.process1 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process2 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process3 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.process4 = bn_relu_conv(branch_planes, branch_planes, 3)
        self.compression = bn_relu_conv(branch_planes * 5, outplanes)
        self.shortcut = bn_relu_conv(inplanes, outplanes)
        self.adds = nn.ModuleList([float_functional() for _ in range(4)])  # one per scale
        self.cat = float_functional()
        self.merge = float_functional()

    def forward(self, x):
        size = x.shape[-2:]
        outs = [self.scale0(x)]
        scales = (self.scale1, self.scale2, self.scale3, self.scale4)
        processes = (self.process1, self.process2, self.process3, self.process4)
        for scale, process, add in zip(scales, processes, self.adds):
            outs.append(process(add.add(resize_to(scale(x), size), outs[-1])))
        return self.merge.add(self.compression(self.cat.cat(outs, dim=1)), self.shortcut(x))


class SegmentHead(nn.Module):
    """The authors' ``segmenthead``: BN-ReLU-3x3 conv, BN-ReLU-1x1 conv (with bias) to the classes.

    Example:
        >>> SegmentHead(128, 64, 19)(torch.zeros(1, 128, 8, 8)).shape
        torch.Size([1, 19, 8, 8])
    """

    # conv1 -> bn2 -> ReLU is an ordinary conv-BN-ReLU run; bn1 leads, so it fuses with its ReLU only.
    fuse_groups = (('bn1', 'relu1'), ('conv1', 'bn2', 'relu2'))

    def __init__(self, inplanes, interplanes, outplanes):
        super(SegmentHead, self).__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(interplanes, outplanes, kernel_size=1, bias=True)

    def forward(self, x):
        return self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))


class DDRNet(QuantizableNetwork, nn.Module):
    """DDRNet (the authors' ``DualResNet``) returning logits at the input resolution.

    Args:
        num_classes: output channels (logits).
        in_channels: input image channels.
        planes: width of the stem; the high branch has ``2 * planes`` channels (32: slim, 64: DDRNet-23).
        spp_planes: channels of each DAPPM branch.
        head_planes: channels of the heads' 3x3 conv.
        layers: BasicBlocks in layer1..layer4 (and, per the authors, 2 in layer3_ and layer4_).

    Example:
        >>> DDRNet(14).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 14, 64, 64])
    """

    aux_heads = (('aux', 'segmentation'),)
    aux_modules = ('seghead_extra',)
    # The authors' ImageNet classifier: a stride-4 path from the high branch, a 1x1 conv and a linear layer.
    authors_ignored = ('down5.', 'last_layer.', 'linear.')

    def __init__(self, num_classes=14, in_channels=3, planes=32, spp_planes=128, head_planes=64,
                 layers=(2, 2, 2, 2)):
        super(DDRNet, self).__init__()
        high = planes * 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, planes, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True))
        self.relu = nn.ReLU(inplace=False)  # applied to tensors that are used again, never in place
        self.layer1 = make_layer(BasicBlock, planes, planes, layers[0])
        self.layer2 = make_layer(BasicBlock, planes, planes * 2, layers[1], stride=2)
        self.layer3 = make_layer(BasicBlock, planes * 2, planes * 4, layers[2], stride=2)
        self.layer4 = make_layer(BasicBlock, planes * 4, planes * 8, layers[3], stride=2)
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, high, 1, bias=False), nn.BatchNorm2d(high))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, high, 1, bias=False), nn.BatchNorm2d(high))
        self.down3 = nn.Sequential(conv3x3(high, planes * 4, 2), nn.BatchNorm2d(planes * 4))
        self.down4 = nn.Sequential(
            conv3x3(high, planes * 4, 2), nn.BatchNorm2d(planes * 4), nn.ReLU(inplace=True),
            conv3x3(planes * 4, planes * 8, 2), nn.BatchNorm2d(planes * 8))
        self.layer3_ = make_layer(BasicBlock, planes * 2, high, 2)
        self.layer4_ = make_layer(BasicBlock, high, high, 2)
        self.layer5_ = make_layer(Bottleneck, high, high, 1)
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.seghead_extra = SegmentHead(high, head_planes, num_classes)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)
        self.fuse3_low, self.fuse3_high = float_functional(), float_functional()
        self.fuse4_low, self.fuse4_high = float_functional(), float_functional()
        self.fuse_out = float_functional()
        self.add_quant_stubs()
        self.aux_outputs = ()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
        # Classifiers start near zero (the common segmentation-head init, e.g. mmsegmentation's
        # conv_seg): with the authors' He init the untrained logits reach hundreds.
        for head in (self.final_layer, self.seghead_extra):
            nn.init.normal_(head.conv2.weight, std=0.01)
            nn.init.constant_(head.conv2.bias, 0)

    def forward(self, images):
        relu = self.relu
        x = self.layer1(self.conv1(self.quant(images)))
        stage2 = self.layer2(relu(x))
        x = self.layer3(relu(stage2))
        x_ = self.layer3_(relu(stage2))
        size = x_.shape[-2:]
        low3 = x
        x = self.fuse3_low.add(x, self.down3(relu(x_)))
        x_ = self.fuse3_high.add(x_, resize_to(self.compression3(relu(low3)), size))
        extra = x_
        x = self.layer4(relu(x))
        x_ = self.layer4_(relu(x_))
        low4 = x
        x = self.fuse4_low.add(x, self.down4(relu(x_)))
        x_ = self.fuse4_high.add(x_, resize_to(self.compression4(relu(low4)), size))
        x_ = self.layer5_(relu(x_))
        x = resize_to(self.spp(self.layer5(relu(x))), size)
        logits = self.dequant(resize_to(self.final_layer(self.fuse_out.add(x, x_)), images.shape[-2:]))
        if not (self.training and self.aux_outputs):
            return logits
        outputs = {'out': logits}
        if 'aux' in self.aux_outputs:
            outputs['aux'] = self.dequant(self.seghead_extra(extra))
        return outputs


def ddrnet23_slim(num_classes=14, in_channels=3, planes=32, spp_planes=128, head_planes=64):
    """Build DDRNet-23-slim (the paper's defaults); the registry entry ``ddrnet23_slim``.

    ``planes=64, head_planes=128`` gives DDRNet-23 (the authors' ``DDRNet_23.py``).

    Example:
        >>> ddrnet23_slim(19).eval()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 19, 32, 32])
    """
    return DDRNet(num_classes=num_classes, in_channels=in_channels, planes=planes,
                  spp_planes=spp_planes, head_planes=head_planes)
