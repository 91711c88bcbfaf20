"""Auxiliary heads of bisenetv2 (the paper's booster heads aux2, aux3, aux4, aux5_4) and of every deeplabv3
network (torchvision's FCN head on layer3, aux): eval() unchanged, only the asked heads computed and trained,
the old state-dict keys unchanged (old checkpoints load strict), loss.aux_weights names them, int8 still works.

The deeplabv3 cases are slow (tests/conftest.py OVER_10M), as in the zoo-wide tests.
"""
import hashlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import networks
from lowpower.config import ConfigError, load_config
from lowpower.measure.zoo import deployed_parameters
from lowpower.train.aux_loss import AuxiliaryLoss, aux_heads, split_outputs, unused_heads
from lowpower.train.losses import SegmentationLoss
from networks import quant
from tests.conftest import randomize_batchnorm, zoo_params

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NUM_CLASSES = 5
SIZE = 64
DEEPLABS = ["deeplabv3_r18", "deeplabv3_r50", "deeplabv3_r101"]
NAMES = ["bisenetv2"] + DEEPLABS
# Narrow widths where the builder has them, so the tests stay fast on a CPU.
SMALL = {"bisenetv2": {"head_channels": 32, "aux_channels": (8, 8, 8, 8)}}
# name -> {head name: (module, output stride)}
BISENET_HEADS = {"aux2": ("aux2", 4), "aux3": ("aux3", 8), "aux4": ("aux4", 16), "aux5_4": ("aux5_4", 32)}
DEEPLAB_HEADS = {"aux": ("aux_classifier", 16)}  # layer3: stride 16 at output_stride 16 (the default)
HEADS = dict({"bisenetv2": BISENET_HEADS}, **{name: DEEPLAB_HEADS for name in DEEPLABS})
# The state dicts before the heads existed (git HEAD e3350bf, num_classes=5, default widths): key count, sha1 of
# the keys joined by newlines in order, a few keys, and the deployed parameter count.
OLD = {
    "bisenetv2": (327, "18fb2b48eb086fec3024092549729675e02d280b",
                  ("detail.0.0.weight", "semantic.4.body.0.1.weight", "head.2.bias"), 3344277),
    "deeplabv3_r18": (164, "b7e50b5b5689c3323d8ca3af60ce9bbe992d6236",
                      ("backbone.conv1.weight", "backbone.layer3.1.bn1.running_var", "head.4.bias"), 15899973),
    "deeplabv3_r50": (362, "8a2937d812c108beaab35829b894562667cf1347",
                      ("backbone.conv1.weight", "backbone.layer3.1.bn3.weight", "head.4.bias"), 39634757),
    "deeplabv3_r101": (668, "dbfea389f410623001107594082e583ade6ee4b1",
                       ("backbone.conv1.weight", "backbone.layer3.10.bn1.running_var", "head.4.bias"), 58626885),
}


def build(name, seed=0, small=True):
    torch.manual_seed(seed)
    return networks.create_model(name, num_classes=NUM_CLASSES, **(SMALL.get(name, {}) if small else {}))


def aux_prefixes(model):
    return tuple(name + "." for name in type(model).aux_modules)


def images(seed, batch=2, size=SIZE):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def engine():
    """x86 where this torch has it (torch 2.x), else fbgemm (as tests/test_quantizable.py)."""
    chosen, _ = quant.select_engine("x86" if "x86" in quant.supported_engines() else "fbgemm")
    return chosen


@pytest.mark.parametrize("name", NAMES)
def test_the_classes_declare_their_heads(name):
    model_class = networks.model_class(name)
    heads = HEADS[name]
    assert model_class.aux_heads == tuple((head, "segmentation") for head in heads)
    assert model_class.aux_modules == tuple(module for module, _ in heads.values())


@pytest.mark.parametrize("name", zoo_params(NAMES))
def test_the_old_keys_are_unchanged_and_the_heads_only_add_keys(name):
    count, digest, samples, deployed = OLD[name]
    model = build(name, small=False)
    keys = list(model.state_dict())
    old = [key for key in keys if not key.startswith(aux_prefixes(model))]
    assert len(old) == count and set(samples) <= set(old)
    assert hashlib.sha1("\n".join(old).encode()).hexdigest() == digest
    assert keys[:count] == old  # the heads' keys come after every old key
    assert deployed_parameters(model) == deployed  # the zoo table's count leaves the heads out
    assert sum(p.numel() for p in model.parameters()) > deployed


@pytest.mark.parametrize("name", zoo_params(["bisenetv2", "deeplabv3_r18"]))
def test_a_checkpoint_without_the_heads_loads_strict_and_a_partial_head_does_not(name):
    source, target = build(name, seed=0), build(name, seed=1)
    fresh = {key: value.clone() for key, value in target.state_dict().items()}
    prefixes = aux_prefixes(source)
    old = {key: value for key, value in source.state_dict().items() if not key.startswith(prefixes)}
    target.load_state_dict(old, strict=True)
    for key, value in target.state_dict().items():
        expected = fresh[key] if key.startswith(prefixes) else old[key]
        assert torch.equal(value, expected), key  # the heads keep their own initialisation
    partial = dict(old)
    first = [key for key in source.state_dict() if key.startswith(prefixes)][0]
    partial[first] = source.state_dict()[first]
    with pytest.raises(RuntimeError, match="Missing key"):
        target.load_state_dict(partial, strict=True)


@pytest.mark.parametrize("name", zoo_params(NAMES))
def test_eval_returns_the_same_logits_alone_and_train_logits_do_not_change(name):
    model = randomize_batchnorm(build(name), 1).eval()
    x = images(2, batch=1)
    with torch.no_grad():
        plain = model(x)
        model.aux_outputs = tuple(HEADS[name])
        asked = model(x)
    assert torch.is_tensor(asked) and asked.shape == (1, NUM_CLASSES, SIZE, SIZE)
    assert torch.equal(plain, asked)
    model.train()
    x = images(3)
    with torch.no_grad():
        model.aux_outputs = ()
        torch.manual_seed(5)  # the same dropout masks: the heads run after the main logits
        alone = model(x)
        model.aux_outputs = tuple(HEADS[name])
        torch.manual_seed(5)
        outputs = model(x)
    assert torch.is_tensor(alone) and isinstance(outputs, dict)
    assert torch.equal(alone, outputs["out"])


@pytest.mark.parametrize("name, head", [(name, head) for name in ["bisenetv2"] for head in BISENET_HEADS]
                         + [pytest.param(name, "aux", marks=pytest.mark.slow) for name in DEEPLABS])
def test_only_the_asked_head_is_computed_at_its_stride_and_trained(name, head):
    model = build(name).train()
    model.aux_outputs = (head,)
    outputs = model(images(4))
    assert sorted(outputs) == sorted(["out", head])
    module, stride = HEADS[name][head]
    assert outputs["out"].shape == (2, NUM_CLASSES, SIZE, SIZE)
    assert outputs[head].shape == (2, NUM_CLASSES, SIZE // stride, SIZE // stride)
    outputs[head].logsumexp(dim=1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, module).parameters())
    assert all(p.grad is None for p in model.head.parameters())  # the main head is not on this path
    for other, _ in HEADS[name].values():
        if other != module:
            assert all(p.grad is None for p in getattr(model, other).parameters()), other


def test_all_bisenet_heads_at_once_at_an_odd_size():
    model = build("bisenetv2").train()
    model.aux_outputs = tuple(BISENET_HEADS)
    outputs = model(images(5, size=50)[..., :38])  # 50 x 38: not multiples of 32
    assert outputs["out"].shape == (2, NUM_CLASSES, 50, 38)
    assert [tuple(outputs[head].shape[-2:]) for head in BISENET_HEADS] == [(13, 10), (7, 5), (4, 3), (2, 2)]


@pytest.mark.parametrize("arch, weights", [
    ("bisenetv2", "{aux3: 0.4, aux5_4: 1}"),
    pytest.param("deeplabv3_r18", "{aux: 0.4}", marks=pytest.mark.slow),
])
def test_loss_aux_weights_names_the_heads_and_trains_them(arch, weights):
    cfg = load_config(None, ["model.arch=" + arch, "loss.aux_weights=" + weights])
    model = build(arch).train()
    criterion = SegmentationLoss(NUM_CLASSES)
    aux_loss = AuxiliaryLoss.from_config(cfg, model, criterion)
    assert set(model.aux_outputs) == set(cfg["loss"]["aux_weights"]) <= set(aux_heads(model))
    assert unused_heads(model) == (arch == "bisenetv2")  # DDP looks for unused parameters when some are left
    masks = torch.randint(0, NUM_CLASSES, (2, SIZE, SIZE), generator=torch.Generator().manual_seed(6))
    logits, aux = split_outputs(model(images(6)))
    assert set(aux) == set(model.aux_outputs)
    value = aux_loss(aux, masks)
    expected = sum(weight * criterion(F.interpolate(aux[name], size=(SIZE, SIZE), mode="bilinear"), masks).item()
                   for name, weight in aux_loss.weights.items())
    assert value.item() == pytest.approx(expected, rel=1e-5)
    (criterion(logits, masks) + value).backward()
    for name in model.aux_outputs:
        module = HEADS[arch][name][0]
        assert all(p.grad is not None for p in getattr(model, module).parameters())


def test_the_config_names_the_heads_of_each_network():
    with pytest.raises(ConfigError, match="aux5, which bisenetv2 does not return; its auxiliary outputs: "
                                          "aux2, aux3, aux4, aux5_4"):
        load_config(None, ["model.arch=bisenetv2", "loss.aux_weights={aux5: 0.4}"])
    for arch in DEEPLABS:
        cfg = load_config(None, ["model.arch=" + arch, "loss.aux_weights={aux: 0.4}"])
        assert cfg["loss"]["aux_weights"] == {"aux": 0.4}
    with pytest.raises(ConfigError, match="its auxiliary outputs: aux$"):
        load_config(None, ["model.arch=deeplabv3_r50", "loss.aux_weights={aux3: 0.4}"])


@pytest.mark.parametrize("name", zoo_params(["bisenetv2", "deeplabv3_r18"]))
def test_ptq_fuses_and_quantizes_the_heads_and_the_int8_network_runs(name):
    model = randomize_batchnorm(build(name), 1)
    model.aux_outputs = tuple(HEADS[name])  # ignored in eval: calibration and int8 run the main path only
    model = quant.prepare_ptq(model.eval(), engine())
    for module, _ in HEADS[name].values():  # conv-BN-ReLU fused like the rest of the network
        assert not [m for m in getattr(model, module).modules() if type(m) is nn.BatchNorm2d], module
    with torch.no_grad():
        model(images(7))
        int8 = quant.convert_int8(model)
        got = int8(images(8, batch=1))
    assert torch.is_tensor(got) and got.shape == (1, NUM_CLASSES, SIZE, SIZE) and torch.isfinite(got).all()
    left = [key for key, module in int8.named_modules() if type(module) is nn.Conv2d]
    assert left == [], left[:5]
    skeleton = quant.int8_skeleton(build(name, seed=1), engine())
    skeleton.load_state_dict(int8.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(got, skeleton(images(8, batch=1)))


def test_a_qat_step_trains_an_asked_bisenet_head():
    model = quant.prepare_qat(build("bisenetv2"), engine())
    model.aux_outputs = ("aux4",)
    outputs = model(images(9))
    assert sorted(outputs) == ["aux4", "out"] and outputs["aux4"].shape == (2, NUM_CLASSES, 4, 4)
    (outputs["out"].logsumexp(dim=1).mean() + outputs["aux4"].logsumexp(dim=1).mean()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux4.parameters())
    assert all(p.grad is None for p in model.aux2.parameters())
