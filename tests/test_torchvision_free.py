"""The zoo's own copies of torchvision's layers (networks/resnet.py, networks/mobilenet_blocks.py, the
heads) are torchvision's: the same state-dict keys in the same order, the same shapes and layer
settings, the same outputs for the same weights in float and in int8; and building the converted
networks never imports torchvision (issue 15: its import costs about a second at start-up).

The references are built here from torchvision's classes the way the networks were built before
(torchvision's ResNet and IntermediateLayerGetter, the by-hand dilation of deeplabv3_r18, the
sample's stride-2 layer1), so a checkpoint written then has the reference's keys.
"""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torchvision.models import mobilenetv3 as tv_mobilenet
from torchvision.models import resnet as tv_resnet
from torchvision.models import segmentation as tv_segmentation
from torchvision.models._utils import IntermediateLayerGetter as TvGetter
from torchvision.models.quantization import mobilenetv3 as tv_qmobilenet
from torchvision.models.quantization import resnet as tv_qresnet
from torchvision.models.quantization.utils import _fuse_modules as tv_fuse
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPP, LRASPPHead

import networks
from networks import quant
from networks.deeplabv3 import deeplab_head
from networks.fcn import fcn_head
from networks.fusion import fuse_for_quantization
from networks.mobilenet_blocks import QuantizableLRASPPHead
from tests.conftest import REPO_ROOT, randomize_batchnorm

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NUM_CLASSES = 5
CONVERTED = ("deeplabv3_r18", "deeplabv3_r50", "deeplabv3_r101", "fcn_r50", "fanet_r18", "fanet_r18_sample",
             "deeplabv3_mbv3", "lraspp_mbv3_large", "lraspp_mbv3_small")


def leaves(model):
    """``(name, repr)`` of every module without children: the layers and all their settings. The
    identity inside a FloatFunctional is left out: it holds nothing, and torchvision's float heads
    have no FloatFunctional (the int8 tests compare the converted modules)."""
    return [(name, repr(module)) for name, module in model.named_modules()
            if not list(module.children()) and not name.endswith("activation_post_process")]


def assert_same_layers(ours, reference):
    """Same state-dict keys in the same order, same shapes, same leaf layers with the same settings."""
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert list(mine) == list(theirs)
    assert [mine[key].shape for key in mine] == [theirs[key].shape for key in theirs]
    assert leaves(ours) == leaves(reference)


def outputs(model, images):
    """The model's output(s) as a list of tensors (an IntermediateLayerGetter returns a dict)."""
    with torch.no_grad():
        result = model(images)
    return list(result.values()) if isinstance(result, dict) else [result]


def assert_same_outputs(ours, reference, images, seed=1):
    """Our module, given the reference's weights (random BN statistics), computes what it computes."""
    randomize_batchnorm(reference, seed)
    ours.load_state_dict(reference.state_dict(), strict=True)
    mine, theirs = outputs(ours.eval(), images), outputs(reference.eval(), images)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def images(seed=0, size=64):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- references: the backbones as the networks built them from torchvision before issue 15 ---

def dilated_by_hand(resnet, output_stride):
    """deeplabv3.py's former dilate_resnet: torchvision's BasicBlock refuses dilation, so it was set
    on the built layers (first block of a layer at the previous rate, the others at the new one)."""
    dilation = 1
    for name in {8: ("layer3", "layer4"), 16: ("layer4",), 32: ()}[output_stride]:
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(getattr(resnet, name)):
            rate = previous if index == 0 else dilation
            for module in block.modules():
                if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                    module.stride, module.dilation, module.padding = (1, 1), (rate, rate), (rate, rate)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    return resnet


def sample_resnet18():
    """fanet_sample.py's former stride2_resnet18: torchvision's ResNet-18, layer1 rebuilt at stride 2."""
    block = tv_qresnet.QuantizableBasicBlock
    resnet = tv_resnet.ResNet(block, [2, 2, 2, 2])
    downsample = nn.Sequential(nn.Conv2d(64, 64, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(64))
    resnet.layer1 = nn.Sequential(block(64, 64, stride=2, downsample=downsample), block(64, 64))
    return resnet


def tv_resnet_of(depth, output_stride=32):
    block, layers = {18: (tv_qresnet.QuantizableBasicBlock, [2, 2, 2, 2]),
                     50: (tv_qresnet.QuantizableBottleneck, [3, 4, 6, 3]),
                     101: (tv_qresnet.QuantizableBottleneck, [3, 4, 23, 3])}[depth]
    return dilated_by_hand(tv_resnet.ResNet(block, layers), output_stride)


ALL_LEVELS = {"layer1": "4", "layer2": "8", "layer3": "16", "layer4": "32"}
# (registry name, builder arguments, reference backbone)
# Their cases run in make test only (slow): the ResNet-18 ones check the same code in a fraction of the time.
RESNET_50_101 = {"deeplabv3_r50", "deeplabv3_r101", "fcn_r50"}
BACKBONES = [
    ("deeplabv3_r18", {}, lambda: TvGetter(tv_resnet_of(18, 16), {"layer4": "out"})),
    ("deeplabv3_r18", {"output_stride": 8}, lambda: TvGetter(tv_resnet_of(18, 8), {"layer4": "out"})),
    ("deeplabv3_r18", {"output_stride": 32}, lambda: TvGetter(tv_resnet_of(18, 32), {"layer4": "out"})),
    ("deeplabv3_r50", {}, lambda: TvGetter(tv_resnet_of(50, 16), {"layer4": "out"})),
    ("deeplabv3_r101", {}, lambda: TvGetter(tv_resnet_of(101, 16), {"layer4": "out"})),
    ("fcn_r50", {}, lambda: TvGetter(tv_resnet.ResNet(tv_qresnet.QuantizableBottleneck, [3, 4, 6, 3],
                                                      replace_stride_with_dilation=[False, True, True]),
                                     {"layer4": "out"})),
    ("fanet_r18", {}, lambda: TvGetter(tv_resnet_of(18), ALL_LEVELS)),
    ("fanet_r18_sample", {}, lambda: TvGetter(sample_resnet18(), {"layer1": "8", "layer2": "16",
                                                                  "layer3": "32", "layer4": "64"})),
]


@pytest.mark.parametrize("name, kwargs, reference",
                         [pytest.param(*case, marks=pytest.mark.slow) if case[0] in RESNET_50_101 else case
                          for case in BACKBONES],
                         ids=[name + "".join("_os%d" % v for v in kw.values()) for name, kw, _ in BACKBONES])
def test_resnet_backbone_is_torchvisions(name, kwargs, reference):
    torch.manual_seed(0)
    ours = networks.create_model(name, num_classes=NUM_CLASSES, **kwargs).backbone
    assert_same_layers(ours, reference())
    assert_same_outputs(ours, reference(), images(size=48))


def test_resnet_init_is_torchvisions():
    # Same distributions (not the same random stream): He-normal fan_out convs, BN at 1 and 0.
    torch.manual_seed(0)
    ours = dict(networks.create_model("deeplabv3_r18").backbone.named_modules())
    theirs = dict(TvGetter(tv_resnet_of(18, 16), {"layer4": "out"}).named_modules())
    for name, module in ours.items():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 4096:
            assert 0.9 < module.weight.std() / theirs[name].weight.std() < 1.1, name
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any()


@pytest.mark.parametrize("ours, reference, in_channels", [
    (lambda: deeplab_head(64, NUM_CLASSES), lambda: DeepLabHead(64, NUM_CLASSES), 64),
    (lambda: fcn_head(64, NUM_CLASSES), lambda: FCNHead(64, NUM_CLASSES), 64),
], ids=["deeplab_head", "fcn_head"])
def test_head_is_torchvisions(ours, reference, in_channels):
    torch.manual_seed(0)
    assert_same_layers(ours(), reference())
    features = torch.randn(2, in_channels, 9, 9, generator=torch.Generator().manual_seed(2))
    assert_same_outputs(ours(), reference(), features)


@pytest.mark.slow  # a ResNet-50 network (RESNET_50_101)
def test_deeplabv3_r50_is_torchvisions_network():
    # The whole network against torchvision's builder (output stride 8, as torchvision dilates).
    torch.manual_seed(0)
    reference = tv_segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                                   aux_loss=True).eval()
    randomize_batchnorm(reference, 3)
    # torchvision's aux_classifier is ours too (the FCN aux head on layer3); only its main head is renamed
    state = {"head." + key[len("classifier."):] if key.startswith("classifier.") else key: value
             for key, value in reference.state_dict().items()}
    ours = networks.create_model("deeplabv3_r50", num_classes=NUM_CLASSES, output_stride=8).eval()
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.allclose(ours(images(size=48)), reference(images(size=48))["out"], rtol=1e-5, atol=1e-5)


def tv_mobilenet_getter(arch, quantizable=False, high_only=False):
    """torchvision's dilated MobileNetV3 ``features`` in a getter with the networks' return layers."""
    if quantizable:
        configs, last = tv_mobilenet._mobilenet_v3_conf("mobilenet_v3_" + arch, dilated=True)
        features = tv_qmobilenet.QuantizableMobileNetV3(
            configs, last, block=tv_qmobilenet.QuantizableInvertedResidual).features
    else:
        features = getattr(tv_mobilenet, "mobilenet_v3_" + arch)(weights=None, dilated=True).features
    # torchvision's segmentation builders: the first block at stride 8 and the final conv.
    stages = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    layers = {str(stages[-1]): "out"} if high_only else {str(stages[-4]): "low", str(stages[-1]): "high"}
    return TvGetter(features, layers)


@pytest.mark.parametrize("name, arch", [("lraspp_mbv3_small", "small"), ("lraspp_mbv3_large", "large"),
                                        ("deeplabv3_mbv3", "large")])
def test_mobilenet_backbone_is_torchvisions(name, arch):
    torch.manual_seed(0)
    ours = networks.create_model(name, num_classes=NUM_CLASSES).backbone
    high_only = name.startswith("deeplab")
    assert_same_layers(ours, tv_mobilenet_getter(arch, high_only=high_only))
    assert_same_layers(ours, tv_mobilenet_getter(arch, quantizable=True, high_only=high_only))
    assert_same_outputs(ours, tv_mobilenet_getter(arch, high_only=high_only), images(size=48))


def test_mobilenet_init_is_torchvisions():
    torch.manual_seed(0)
    ours = dict(networks.create_model("lraspp_mbv3_small").backbone.named_modules())
    theirs = dict(tv_mobilenet_getter("small").named_modules())
    for name, module in ours.items():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 4096:
            assert 0.9 < module.weight.std() / theirs[name].weight.std() < 1.1, name
            assert module.bias is None or not module.bias.any()


def test_lraspp_head_is_torchvisions():
    torch.manual_seed(0)
    features = {"low": torch.randn(2, 24, 12, 12), "high": torch.randn(2, 96, 6, 6)}
    assert_same_layers(QuantizableLRASPPHead(24, 96, NUM_CLASSES, 32), LRASPPHead(24, 96, NUM_CLASSES, 32))
    assert_same_outputs(QuantizableLRASPPHead(24, 96, NUM_CLASSES, 32), LRASPPHead(24, 96, NUM_CLASSES, 32),
                        features)


def test_lraspp_mbv3_small_is_torchvisions_network():
    # torchvision has no lraspp builder for -Small; its LRASPP class on its dilated -Small features.
    torch.manual_seed(0)
    backbone = tv_mobilenet_getter("small")
    reference = LRASPP(backbone, 24, 576, NUM_CLASSES, inter_channels=128).eval()
    randomize_batchnorm(reference, 4)
    state = {key.replace("classifier.", "head.", 1): value for key, value in reference.state_dict().items()}
    ours = networks.create_model("lraspp_mbv3_small", num_classes=NUM_CLASSES).eval()
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.allclose(ours(images(size=48)), reference(images(size=48))["out"], rtol=1e-5, atol=1e-5)


# --- int8: fused and quantized like torchvision's quantizable classes ---

class Stubbed(nn.Module):
    """quant -> backbone -> dequant, fused by ``fuse`` (ours: networks.fusion; reference: torchvision's)."""

    def __init__(self, backbone, fuse):
        super().__init__()
        self.quant, self.backbone, self.dequant = quant.api().QuantStub(), backbone, quant.api().DeQuantStub()
        self.fuse = fuse

    def fuse_model(self, qat=False):
        self.fuse(self, qat)

    def forward(self, x):
        return [self.dequant(value) for value in self.backbone(self.quant(x)).values()]


def tv_resnet_fuse(model, qat):
    """torchvision's QuantizableResNet.fuse_model on a backbone getter."""
    tv_fuse(model.backbone, ["conv1", "bn1", "relu"], qat, inplace=True)
    for module in model.modules():
        if type(module) in (tv_qresnet.QuantizableBasicBlock, tv_qresnet.QuantizableBottleneck):
            module.fuse_model(qat)


def assert_same_int8(ours, reference, calibration, seed=1):
    """After fuse + PTQ prepare + calibration + convert, the same int8 state-dict keys and outputs."""
    randomize_batchnorm(reference.backbone, seed)
    ours.backbone.load_state_dict(reference.backbone.state_dict(), strict=True)
    converted = []
    for model in (ours, reference):
        quant.prepare_ptq(model, quant.select_engine("x86")[0])  # x86, or this torch's fallback
        with torch.no_grad():
            model(calibration)
        converted.append(quant.convert_int8(model))
    assert list(converted[0].state_dict()) == list(converted[1].state_dict())
    with torch.no_grad():
        for a, b in zip(converted[0](calibration), converted[1](calibration)):
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name, depth", [("deeplabv3_r18", 18),
                                         pytest.param("deeplabv3_r50", 50, marks=pytest.mark.slow)])
def test_resnet_backbone_int8_is_torchvisions(name, depth):
    torch.manual_seed(0)
    ours = Stubbed(networks.create_model(name, num_classes=NUM_CLASSES).backbone, fuse_for_quantization)
    reference = Stubbed(TvGetter(tv_resnet_of(depth, 16), {"layer4": "out"}), tv_resnet_fuse)
    assert_same_int8(ours, reference, images(size=32))


def test_mobilenet_backbone_int8_is_torchvisions():
    torch.manual_seed(0)
    ours = Stubbed(networks.create_model("lraspp_mbv3_small", num_classes=NUM_CLASSES).backbone,
                   fuse_for_quantization)
    # torchvision's QuantizableMobileNetV3.fuse_model only walks self.modules(), so it fuses any model.
    reference = Stubbed(tv_mobilenet_getter("small", quantizable=True), tv_qmobilenet.QuantizableMobileNetV3.fuse_model)
    assert_same_int8(ours, reference, images(size=32))


# --- no torchvision on the device side ---

@pytest.mark.slow  # a fresh interpreter builds every converted network; test_lean_solution checks a package fast
def test_building_the_converted_networks_does_not_import_torchvision():
    code = ("import sys; sys.path.insert(0, {root!r}); import networks\n"
            "for name in {names!r}:\n    networks.create_model(name)\n"
            "assert 'torchvision' not in sys.modules, sorted(m for m in sys.modules if 'torchvision' in m)[:5]\n"
            "print('clean')").format(root=str(REPO_ROOT), names=CONVERTED)
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr[-2000:]
