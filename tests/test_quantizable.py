"""Every zoo network either quantizes to int8 in eager mode (PTQ and QAT) or says in one line why not."""
import pytest
import torch
import torch.nn as nn

import networks
from networks import quant
from tests.conftest import randomize_batchnorm, zoo_params

pytestmark = pytest.mark.usefixtures("single_torch_thread")

NUM_CLASSES = 5
SIZE = 64
# Issue 13: these must quantize.
REQUIRED = ["unet", "unet_light", "unet_lighter", "squeeze_unet", "cunet", "lraspp_mbv3_small",
            "lraspp_mbv3_large", "deeplabv3_r18", "fanet_r18", "bisenetv2"]
# Narrow variants where the builder has width options, so the suite stays fast on a CPU.
SMALL = {
    "unet": {"base_width": 8, "depth": 3},
    "unet_light": {"base_width": 8, "depth": 3},
    "unet_lighter": {"base_width": 8, "depth": 3},
    "squeeze_unet": {"base_width": 8, "depth": 3},
    "cunet": {"base_width": 8, "depth": 2},
    "bisenetv2": {"head_channels": 32},
    "fanet_r18": {"key_channels": 8, "fuse_channels": 32},
    "fanet_r18_sample": {"key_channels": 8, "smooth_channels": 32},
    "lraspp_mbv3_small": {"inter_channels": 32},
    "lraspp_mbv3_large": {"inter_channels": 32},
}
# ResNet-50/101 networks take tens of seconds per step on a CPU; they share their blocks
# (QuantizableBottleneck) and heads with code the fast networks cover, and
# test_a_bottleneck_resnet_quantizes checks one of them.
HEAVY = {"deeplabv3_r50", "deeplabv3_r101", "fcn_r50"}
QUANTIZABLE = [name for name in networks.list_models() if networks.quantizable(name)[0] and name not in HEAVY]
# networks.quant keeps ConvTranspose2d in float on purpose (FloatIsland); every Conv2d must be int8.
FLOAT_LAYERS = (nn.Conv2d,)


def engine():
    """x86 where this torch has it (torch 2.x), else fbgemm."""
    chosen, _ = quant.select_engine("x86" if "x86" in quant.supported_engines() else "fbgemm")
    return chosen


def build(name, seed=0):
    """The network with random BN statistics, so folding BN into convs changes the weights."""
    torch.manual_seed(seed)
    model = networks.create_model(name, num_classes=NUM_CLASSES, **SMALL.get(name, {}))
    return randomize_batchnorm(model, seed + 1)


def images(seed, batch=2):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, SIZE, SIZE, generator=generator)


def count_batch_norms(model):
    return sum(type(module) is nn.BatchNorm2d for module in model.modules())


def calibrated_int8(name):
    """(float model, its PTQ int8 copy calibrated on two random batches)."""
    float_model = build(name).eval()
    model = quant.prepare_ptq(build(name), engine())
    with torch.no_grad():
        for seed in range(2):
            model(images(seed))
    return float_model, quant.convert_int8(model)


def test_the_networks_the_issue_names_are_quantizable():
    for name in REQUIRED:
        assert networks.quantizable(name) == (True, ""), name


@pytest.mark.parametrize("name", networks.list_models())
def test_quantizable_answers_true_or_a_one_line_reason(name):
    ok, reason = networks.quantizable(name)
    model_class = type(networks.create_model(name))
    assert ok == (getattr(model_class, "quantizable", False) and hasattr(model_class, "fuse_model"))
    if not ok:
        assert reason.strip() and "\n" not in reason


class Undeclared(nn.Module):
    def forward(self, x):
        return x


class Declined(nn.Module):
    quantizable = False
    quantize_reason = "its attention has no int8 kernels"


def test_a_network_without_the_flag_or_with_false_gives_its_reason(monkeypatch):
    monkeypatch.setitem(networks.MODELS, "undeclared_net", lambda num_classes=14: Undeclared())
    monkeypatch.setitem(networks.MODELS, "declined_net", lambda num_classes=14: Declined())
    ok, reason = networks.quantizable("undeclared_net")
    assert not ok and "undeclared_net" in reason and "\n" not in reason
    assert networks.quantizable("declined_net") == (False, "its attention has no int8 kernels")


@pytest.mark.parametrize("name", zoo_params(QUANTIZABLE))
def test_fuse_model_keeps_the_float_output_in_eval_mode(name):
    model = build(name).eval()
    batch = images(10)
    batch_norms = count_batch_norms(model)
    with torch.no_grad():
        before = model(batch)
        model.fuse_model()
        after = model(batch)
    assert count_batch_norms(model) < batch_norms  # BN folded into convs (or fused with its ReLU)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", zoo_params(QUANTIZABLE))
def test_ptq_quantizes_every_conv_and_the_int8_state_dict_reloads(name):
    float_model, model = calibrated_int8(name)
    batch = images(11)
    with torch.no_grad():
        expected, got = float_model(batch), model(batch)
    assert got.shape == expected.shape == (2, NUM_CLASSES, SIZE, SIZE)
    left = [key for key, module in model.named_modules() if type(module) in FLOAT_LAYERS]
    assert left == [], "float convs left after convert: {}".format(left[:5])
    assert any(isinstance(module, quant.nnq().Conv2d) for module in model.modules())
    # A broken scale or a float op on int8 data shows as a large error; rounding does not.
    relative_error = (got - expected).abs().mean() / expected.abs().mean()
    assert relative_error < 0.25
    # The contract's loading path: a fresh skeleton takes the int8 state dict and gives the same output.
    skeleton = quant.int8_skeleton(build(name, seed=1), engine())
    skeleton.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(got, skeleton(batch))


@pytest.mark.parametrize("name", zoo_params(QUANTIZABLE))
def test_qat_step_trains_the_fake_quantized_network(name):
    model = quant.prepare_qat(build(name), engine())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = model(images(13))
    assert logits.shape == (2, NUM_CLASSES, SIZE, SIZE)
    nn.functional.cross_entropy(logits, torch.zeros(2, SIZE, SIZE, dtype=torch.long)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    assert any("FakeQuantize" in type(module).__name__ for module in model.modules())


@pytest.mark.slow  # a ResNet-50 network (HEAVY)
def test_a_bottleneck_resnet_quantizes():
    float_model, model = calibrated_int8("deeplabv3_r50")
    with torch.no_grad():
        got = model(images(14))
    assert got.shape == (2, NUM_CLASSES, SIZE, SIZE)
    assert not [key for key, module in model.named_modules() if type(module) in FLOAT_LAYERS]
