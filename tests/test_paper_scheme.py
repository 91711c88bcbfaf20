"""The authors' fixed-point quantizer (``paper_scheme``) against scalar restatements of their code,
and the UNet's tanh option.

The restatements are plain-Python loops written from the authors' quantize.py (repository
hossein1387/U-Net-Fixed-Point-Quantization-for-Medical-Image-Segmentation, commit 9e46e3f):
EM/UNET_EM_DATASET_BASE/quantize.py L10, L13-25 (power of two, then clamp) and
GM/UNET_Quant_Base/quantize.py L13-16, L31-35 (sign-magnitude). Python's ``round`` rounds ties to
even, as ``torch.round`` does.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import networks
from lowpower.compress.quantize import paper_scheme as ps
from networks.blocks import DepthwiseSeparableConv
from networks.fusion import fuse_groups
from networks.unet import UNet

# Exact powers of two, arithmetic midpoints between them (0.75, 1.5, 3, 6, 12, 24, 48), values on
# either side of the geometric midpoints 2**-0.5 = 0.7071 and 2**0.5 = 1.4142 (the real threshold),
# values beyond every clamp (both signs), zeros, tiny values.
POW2_VALUES = [1.0, 0.5, 0.25, 2.0, 4.0, 2.0 ** -10, -0.125, 0.75, -0.75, 1.5, 3.0, -3.0, 0.375, 6.0, 12.0,
               24.0, 48.0, 0.7, 0.72, 1.40, -1.43, 5.0, -5.0, 100.0, -100.0, 1e6, -1e6, 0.0, -0.0, 1e-30,
               -3e-8, 1e-38, 0.3, 0.05]
# Ties of the fraction (0.125, 0.375, 0.625 at f = 2), a fraction rounding up to 1 (0.9, 0.999),
# integer parts beyond 2**i - 1, wrap-around at i = 0 (1.3, -2.7), zeros, tiny values.
UNIFORM_VALUES = [0.3, 0.9, 0.999, 0.99, 1.3, -2.7, 0.125, 0.375, 0.625, -0.625, 100.7, -100.7, 63.9, 64.5,
                  255.5, 300.25, 0.0, -0.0, 1e-30, -3e-8, 2.0, -4.0, 0.5, 7.0625]
WIDTHS = sorted({split for table in ps.PAPER_SPLITS.values() for split in table.values()})


def as_float32(values):
    return torch.tensor(values, dtype=torch.float32).tolist()


def sign_of(value):
    return (value > 0) - (value < 0)


def authors_pow2(value, int_bits, frac_bits):
    """One value through EM's ``to_fixed_point(to_nearest_power_of_two(v), i, f)``."""
    if value == 0:
        rounded = 0.0  # sign(0) * 2**round(log(0)) = 0 * 2**-inf
    else:
        rounded = sign_of(value) * 2.0 ** round(math.log(abs(value)) / math.log(2.0))
    max_int = 2.0 ** (int_bits - 1) if int_bits != 0 else 0.0
    max_float = sum(2.0 ** power for power in range(-frac_bits, 0)) if frac_bits != 0 else 0.0
    top = max_int + max_float
    if rounded > top:
        rounded = top
    if rounded < -top:
        rounded = -top
    return rounded


def authors_uniform(value, int_bits, frac_bits):
    """One value through GM/NIH's ``to_fixed_point(v, i, f)`` (``round_clamp`` of each part)."""
    def round_clamp(part, bits):
        part = min(max(part, 0), 2 ** bits - 1)
        return round(part * 2 ** bits) / 2 ** bits

    magnitude = abs(value)
    whole = math.floor(magnitude)
    fraction = sign_of(value) * round_clamp(magnitude - whole, frac_bits)
    return sign_of(value) * round_clamp(whole, int_bits) + fraction


def test_the_chosen_values_keep_away_from_the_geometric_midpoints():
    # float32 (torch) and float64 (the restatement) logs may round differently within ~1e-7 of
    # 2**(k + 1/2); the chosen values keep a margin, so a mismatch below is a real difference.
    for value in as_float32(POW2_VALUES):
        if value != 0:
            position = math.log2(abs(value)) % 1.0
            assert abs(position - 0.5) > 1e-3, value


@pytest.mark.parametrize("int_bits, frac_bits", WIDTHS)
def test_power_of_two_quantizer_equals_the_scalar_restatement(int_bits, frac_bits):
    values = as_float32(POW2_VALUES)
    expected = [authors_pow2(value, int_bits, frac_bits) for value in values]
    weights = ps.paper_weight_quantize(torch.tensor(values), int_bits, frac_bits).tolist()
    activations = ps.paper_activation_quantize(torch.tensor(values), int_bits, frac_bits).tolist()
    assert weights == expected
    assert activations == expected


@pytest.mark.parametrize("int_bits, frac_bits", WIDTHS)
def test_uniform_quantizer_equals_the_scalar_restatement(int_bits, frac_bits):
    values = as_float32(UNIFORM_VALUES)
    expected = [authors_uniform(value, int_bits, frac_bits) for value in values]
    got = ps.paper_weight_quantize(torch.tensor(values), int_bits, frac_bits, rule="uniform").tolist()
    assert got == expected


def test_power_of_two_hand_checked_values():
    w4 = ps.paper_weight_quantize(torch.tensor([0.75, 0.7, 0.72, 2.0, -5.0, 1e-30, 0.0, -0.3]), 0, 4)
    # 0.75 rounds up to 1 (log-domain threshold 0.7071), then clamps to 1 - 2**-4; tiny stays a power of 2
    assert w4.tolist() == [0.9375, 0.5, 0.9375, 0.9375, -0.9375, 2.0 ** -100, 0.0, -0.25]
    a6 = ps.paper_activation_quantize(torch.tensor([48.0, 40.0, 0.3, -100.0, 3.0, 1.5]), 6, 0)
    assert a6.tolist() == [32.0, 32.0, 0.25, -32.0, 4.0, 2.0]
    a16 = ps.paper_activation_quantize(torch.tensor([200.0, -1000.0, 128.0]), 8, 8)
    assert a16.tolist() == [128.99609375, -128.99609375, 128.0]


def test_uniform_hand_checked_values():
    w2 = ps.uniform_fixed_point(torch.tensor([1.3, 0.9, 0.125, 0.375, -2.7, 0.0]), 0, 2)
    assert w2.tolist() == [0.25, 1.0, 0.0, 0.5, -0.75, 0.0]  # wraps modulo 1; ties to even
    a6 = ps.uniform_fixed_point(torch.tensor([0.9, -2.7, 100.0, 63.5]), 6, 0)
    assert a6.tolist() == [0.0, -2.0, 63.0, 63.0]  # f = 0 drops the fraction


@pytest.mark.parametrize("rule", sorted(ps.RULES))
def test_the_gradient_passes_unchanged_even_where_clamped(rule):
    values = torch.tensor([0.0, 0.3, 0.75, 5.0, -7.0, 1e-30, -0.9], requires_grad=True)
    upstream = torch.tensor([1.0, -2.0, 0.5, 3.0, -4.0, 0.25, 7.0])
    ps.paper_weight_quantize(values, 0, 4, rule=rule).backward(upstream)
    assert torch.equal(values.grad, upstream)
    values.grad = None
    ps.paper_activation_quantize(values, 6, 0, rule=rule).backward(upstream)
    assert torch.equal(values.grad, upstream)


def test_the_splits_are_the_authors_configs():
    assert ps.PAPER_SPLITS == {
        "weight": {2: (0, 2), 4: (0, 4), 8: (0, 8), 16: (8, 8)},
        "activation": {2: (2, 0), 4: (4, 0), 6: (6, 0), 8: (8, 0), 16: (8, 8)},
    }
    # The pairs the issue names: w4/a6 and w8/a8 ran; w4/a8 and w6/a6 are in no config.
    assert (4, 6) in ps.PAPER_PAIRS and (8, 8) in ps.PAPER_PAIRS
    assert (4, 8) not in ps.PAPER_PAIRS and (6, 6) not in ps.PAPER_PAIRS
    for weight_bits, act_bits in ps.PAPER_PAIRS:
        assert weight_bits in ps.PAPER_SPLITS["weight"] and act_bits in ps.PAPER_SPLITS["activation"]


def test_a_width_they_never_ran_follows_their_pattern_up_to_8_bits():
    weight, act = ps.PaperWeightQuantizer(6, torch.zeros(3)), ps.PaperActivationQuantizer(5)
    assert (weight.int_bits, weight.frac_bits, act.int_bits, act.frac_bits) == (0, 6, 5, 0)
    assert "their pattern" in repr(weight) and "their pattern" in repr(act)
    assert "their pattern" not in repr(ps.PaperWeightQuantizer(4, torch.zeros(3)))
    with pytest.raises(ValueError, match=r"no 12-bit weights.*2, 4, 8, 16"):
        ps.PaperWeightQuantizer(12, torch.zeros(3))
    with pytest.raises(ValueError, match=r"no 10-bit activations.*2, 4, 6, 8, 16"):
        ps.PaperActivationQuantizer(10)


@pytest.mark.parametrize("classes", [(ps.PaperWeightQuantizer, ps.PaperActivationQuantizer, ps.pow2_fixed_point),
                                     (ps.PaperUniformWeightQuantizer, ps.PaperUniformActivationQuantizer,
                                      ps.uniform_fixed_point)])
def test_the_modules_follow_the_contract(classes):
    weight_class, activation_class, rule = classes
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 3, 3, 3), torch.randn(4)
    quantizer = weight_class(4, weight)
    assert list(quantizer.parameters()) == [] and quantizer.state_dict() == {}
    assert torch.equal(quantizer(weight), rule(weight, 0, 4)) and quantizer(bias).shape == (4,)
    clone = weight_class(4, torch.zeros(1))
    clone.load_state_dict(quantizer.state_dict())
    assert torch.equal(clone(weight), quantizer(weight))

    activations = torch.randn(2, 4, 5, 5) * 20
    act = activation_class(6)
    assert torch.equal(act(activations, observe=True), rule(activations, 6, 0))
    assert torch.equal(act(activations), act(activations, observe=True)) and act.state_dict() == {}

    conv = nn.Conv2d(3, 4, 3)
    parametrize.register_parametrization(conv, "weight", weight_class(4, conv.weight.detach()))
    conv(torch.randn(1, 3, 6, 6)).sum().backward()
    assert conv.parametrizations.weight.original.grad is not None
    assert torch.equal(conv.weight, rule(conv.parametrizations.weight.original.detach(), 0, 4))


def test_fixed_point_model_takes_the_paper_scheme():
    from lowpower.compress.quantize.fixed_point import FixedPointModel, scheme_quantizers

    assert scheme_quantizers("paper") == (ps.PaperWeightQuantizer, ps.PaperActivationQuantizer)
    fp = FixedPointModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 4, 6, scheme="paper")
    fp.calibrate([torch.rand(1, 3, 8, 8)])
    weight = fp.model[0].weight
    assert torch.equal(weight, ps.pow2_fixed_point(fp.model[0].parametrizations.weight.original, 0, 4))
    assert fp.model(torch.rand(1, 3, 8, 8)).shape == (1, 4, 6, 6)


def test_the_paper_scheme_quantizes_block_outputs_only_as_the_authors_did():
    from lowpower.compress.quantize.fixed_point import FixedPointModel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    paper = FixedPointModel(model, 4, 6, fold_bn=False, scheme="paper", weights_only=True)
    assert len(paper.quantizers) == 1 and hasattr(paper.model[2], "fixed_point_output")
    assert not any(hasattr(paper.model[i], name) for i in (0, 1, 3)
                   for name in ("fixed_point_input", "fixed_point_output"))
    seen = {}
    paper.model[2].register_forward_hook(lambda module, inputs, output: seen.update(relu=output))
    paper.model(torch.rand(1, 3, 8, 8) * 5)
    values = seen["relu"][seen["relu"] != 0]  # EM's rule: powers of two, clamped to +-32 at Q6.0
    assert values.numel() and torch.equal(values, 2 ** torch.log2(values).round()) and values.max() <= 32
    ours = FixedPointModel(model, 4, 6, fold_bn=False, scheme="range", weights_only=True)
    # both convs' inputs, the ReLU's and the last conv's outputs: conv-BN-ReLU is fused, nothing inside it
    assert len(ours.quantizers) == 4 and not hasattr(ours.model[0], "fixed_point_output")


def small_unet(seed, **kwargs):
    torch.manual_seed(seed)
    return UNet(3, base_width=4, depth=2, **kwargs).eval()


def test_unet_default_is_relu_and_unchanged():
    plain, relu = small_unet(0), small_unet(0, activation="relu")
    assert list(plain.state_dict()) == list(relu.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), relu.state_dict().values()))
    images = torch.rand(2, 3, 20, 20)
    assert torch.equal(plain(images), relu(images))
    assert fuse_groups(plain) == fuse_groups(relu)
    assert {len(group) for group in fuse_groups(plain)} == {3}  # conv-bn-relu everywhere
    assert not any(isinstance(module, nn.Tanh) for module in plain.modules())


def test_unet_tanh_bounds_every_activation_and_keeps_the_parameters():
    relu, tanh = small_unet(0), small_unet(0, activation="tanh")
    assert list(relu.state_dict()) == list(tanh.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(relu.state_dict().values(), tanh.state_dict().values()))
    assert not any(isinstance(module, nn.ReLU) for module in tanh.modules())
    outputs = []
    hooks = [module.register_forward_hook(lambda module, inputs, output: outputs.append(output))
             for module in tanh.modules() if isinstance(module, nn.Tanh)]
    images = torch.randn(2, 3, 20, 20) * 50
    with torch.no_grad():
        logits = tanh(images)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 10 and all(float(output.abs().max()) <= 1.0 for output in outputs)
    assert outputs[0].min() < 0  # tanh, not a clipped ReLU
    # The head is a 1x1 conv of values in [-1, 1]: each logit is bounded by its weights.
    bound = tanh.head.weight.abs().flatten(1).sum(1) + tanh.head.bias.abs()
    assert (logits.abs() <= bound.view(1, -1, 1, 1) + 1e-5).all()
    assert not torch.equal(logits, relu(images))


def test_unet_tanh_fuses_conv_bn_only():
    model = small_unet(0, activation="tanh")
    groups = fuse_groups(model)
    assert groups and {len(group) for group in groups} == {2}
    modules = dict(model.named_modules())
    assert all(type(modules[name]) in (nn.Conv2d, nn.BatchNorm2d) for group in groups for name in group)
    images = torch.rand(1, 3, 16, 16)
    expected = model(images)
    model.fuse_model()  # eval mode: each BN folds into its conv, the tanh stays after it
    assert sum(isinstance(module, nn.Tanh) for module in model.modules()) == 10
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    assert torch.allclose(model(images), expected, atol=1e-5)


def test_separable_tanh_gives_each_conv_its_own_tanh_and_bad_names_fail():
    model = small_unet(0, separable="both", activation="tanh")
    tanhs = [module for module in model.modules() if isinstance(module, nn.Tanh)]
    assert len(tanhs) == 20 and len({id(module) for module in tanhs}) == 20
    assert not any(isinstance(module, nn.ReLU) for module in model.modules())
    assert list(DepthwiseSeparableConv(4, 8).state_dict()) == list(
        DepthwiseSeparableConv(4, 8, activation=nn.Tanh()).state_dict())
    with pytest.raises(ValueError, match="relu.*tanh.*'gelu'"):
        UNet(3, base_width=4, depth=2, activation="gelu")


def test_the_unet_builder_takes_the_activation_from_model_kwargs():
    from lowpower.config import load_config

    cfg = load_config(None, ["model.arch=unet", "model.kwargs={base_width: 4, depth: 2, activation: tanh}"])
    model = networks.create_model("unet", num_classes=3, **cfg["model"]["kwargs"])
    assert model.activation == "tanh" and any(isinstance(module, nn.Tanh) for module in model.modules())
    assert networks.create_model("unet", num_classes=3, base_width=4, depth=2).activation == "relu"
