"""LSQ, the ``lsq`` fixed-point scheme (Esser et al., ICLR 2020), against plain-Python restatements.

- forward equals a scalar loop (ties round half to even, both clip sides and their boundaries);
- the step-size gradient equals the paper's eq. 3 times g = 1/sqrt(N Q_P), per tensor, per channel
  and for activations (N = elements of one example); the value gradient is straight-through inside;
- initial steps are 2 mean|v| / sqrt(Q_P); activations initialise once, and the flag survives a
  state_dict round trip;
- SGD on a toy regression lowers the loss and moves the steps;
- the modules follow the scheme contract (signatures, parameters, state_dict, FixedPointModel).
"""
import doctest
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lowpower.compress.quantize import fixed_point as fxp
from lowpower.compress.quantize import lsq

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def scalar_lsq(v, s, q_n, q_p):
    """(v_hat, d v_hat / d v, d v_hat / d s before g) of one value, in Python floats (paper eq. 3).
    Python's round() rounds half to even, as torch.round and the paper's PyTorch code do."""
    r = v / s
    if r <= -q_n:
        return -q_n * s, 0.0, float(-q_n)
    if r >= q_p:
        return q_p * s, 0.0, float(q_p)
    k = round(r)
    return k * s, 1.0, k - r


def step_grad_loop(values, upstream, s, q_n, q_p, g):
    """sum_i upstream_i * (eq. 3)_i * g over flat lists."""
    return sum(u * scalar_lsq(v, s, q_n, q_p)[2] for v, u in zip(values, upstream)) * g


def test_forward_equals_scalar_rule_ties_to_even_and_both_clip_sides():
    s, (q_n, q_p) = 0.5, lsq.lsq_bounds(4, signed=True)  # s a power of two: v / s is exact
    assert (q_n, q_p) == (8, 7)
    values = [0.25, 0.75, 1.25, -0.25, -0.75, -1.25, 3.25, 0.3, -1.1,   # ties, inside
              3.5, 3.6, 3.76, 100.0, -4.0, -4.2, -4.3, -100.0]           # top / bottom boundary and beyond
    out = lsq.lsq_quantize(torch.tensor(values), torch.tensor(s), q_n, q_p).tolist()
    assert out == [scalar_lsq(v, s, q_n, q_p)[0] for v in values]
    # the ties spelt out: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 6.5 -> 6 steps (half up would give 1, 2, 3, 7)
    assert out[:7] == [0.0, 1.0, 1.0, -0.0, -1.0, -1.0, 3.0]
    assert out[9:] == [3.5, 3.5, 3.5, 3.5, -4.0, -4.0, -4.0, -4.0]
    unsigned = lsq.lsq_bounds(3, signed=False)
    assert unsigned == (0, 7)
    assert lsq.lsq_quantize(torch.tensor([-1.0, 0.2, 9.0]), torch.tensor(0.5), *unsigned).tolist() == [0.0, 0.0, 3.5]


def test_forward_equals_scalar_rule_on_random_values():
    torch.manual_seed(0)
    values, s = torch.randn(500, dtype=torch.float64) * 3, 0.37
    out = lsq.lsq_quantize(values, torch.tensor(s, dtype=torch.float64), 4, 3)
    assert out.tolist() == [scalar_lsq(v, s, 4, 3)[0] for v in values.tolist()]


def test_step_gradient_per_tensor_is_eq3_times_g():
    torch.manual_seed(1)
    # ties (r = 0.5, 1.5, -2.5), both boundaries (r = -4, 3), just beyond them and far beyond
    extra = [0.25, 0.75, -1.25, -2.0, 1.5, 1.6, -2.1, 5.0, -7.0]
    bias = torch.cat([torch.randn(40, dtype=torch.float64), torch.tensor(extra, dtype=torch.float64)])
    quantizer = lsq.LsqWeightQuantizer(3, bias)  # 1-D: one step; Q_N, Q_P = 4, 3
    with torch.no_grad():
        quantizer.step.fill_(0.5)
    upstream = torch.randn_like(bias)
    (quantizer(bias) * upstream).sum().backward()
    g = 1 / math.sqrt(bias.numel() * 3)
    expected = step_grad_loop(bias.tolist(), upstream.tolist(), 0.5, 4, 3, g)
    assert quantizer.step.grad.shape == ()
    assert quantizer.step.grad.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_step_gradient_per_channel_is_eq3_times_g_with_n_of_one_channel():
    torch.manual_seed(2)
    weight = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    quantizer = lsq.LsqWeightQuantizer(4, weight)
    steps = [0.3, 0.5, 0.05]  # the last clips most of its channel
    with torch.no_grad():
        quantizer.step.copy_(torch.tensor(steps, dtype=torch.float64))
    upstream = torch.randn_like(weight)
    (quantizer(weight) * upstream).sum().backward()
    g = 1 / math.sqrt(8 * 7)  # N = elements of one output channel
    for c in range(3):
        expected = step_grad_loop(weight[c].flatten().tolist(), upstream[c].flatten().tolist(), steps[c], 8, 7, g)
        assert quantizer.step.grad[c].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_activation_step_gradient_uses_the_features_of_one_example():
    torch.manual_seed(3)
    values = torch.randn(2, 3, 2, 2, dtype=torch.float64)  # negatives: signed, Q_N, Q_P = 8, 7
    act = lsq.LsqActivationQuantizer(4).double()
    act(values)
    with torch.no_grad():
        act.step.fill_(0.25)
    upstream = torch.randn_like(values)
    (act(values, observe=True) * upstream).sum().backward()
    g = 1 / math.sqrt(12 * 7)  # N_F = 3 * 2 * 2, not the batch's 24
    expected = step_grad_loop(values.flatten().tolist(), upstream.flatten().tolist(), 0.25, 8, 7, g)
    assert act.step.grad.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_value_gradient_is_straight_through_inside_and_zero_outside():
    values = torch.tensor([-9.0, -4.0, -3.9, -1.25, 0.0, 0.3, 2.5, 3.4, 3.5, 3.6, 8.0], requires_grad=True)
    out = lsq.lsq_quantize(values, torch.tensor(1.0), 4, 3.5)  # q_p 3.5 only to put a boundary at 3.5
    out.backward(torch.full_like(out, 2.0))
    assert values.grad.tolist() == [0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]
    assert values.grad.tolist() == [2.0 * scalar_lsq(v, 1.0, 4, 3.5)[1] for v in values.tolist()]


def test_torch_learnable_fake_quantize_differs_from_eq3_where_documented():
    op = getattr(torch, "_fake_quantize_learnable_per_tensor_affine", None)
    if op is None:
        pytest.skip("torch no longer has the op")
    values = torch.tensor([1.6])  # r = 3.2 with s = 0.5, Q_P = 3: clipped for LSQ, not for torch's op
    step = torch.tensor([0.5], requires_grad=True)
    op(values, step, torch.tensor([0.0]), -4, 3, 1.0).sum().backward()
    ours = torch.tensor(0.5, requires_grad=True)
    lsq.lsq_quantize(values, ours, 4, 3).sum().backward()
    assert ours.grad.item() == 3.0 and step.grad.item() == pytest.approx(-0.2)


def test_weight_init_per_channel_and_fallbacks():
    torch.manual_seed(4)
    weight = torch.randn(4, 3, 3, 3)
    weight[2] = 0.0
    quantizer = lsq.LsqWeightQuantizer(4, weight)
    assert quantizer.step.shape == (4,)  # 1-D: no weight decay from the trainer's optimizer
    tensor_step = 2 * sum(abs(x) for x in weight.flatten().tolist()) / weight.numel() / math.sqrt(7)
    for c in range(4):
        flat = weight[c].flatten().tolist()
        expected = 2 * sum(abs(x) for x in flat) / len(flat) / math.sqrt(7) if c != 2 else tensor_step
        assert quantizer.step[c].item() == pytest.approx(expected, rel=1e-6)
    bias = torch.tensor([0.5, -1.5, 1.0])
    assert lsq.LsqWeightQuantizer(8, bias).step.item() == pytest.approx(2 * 1.0 / math.sqrt(127))
    assert lsq.LsqWeightQuantizer(8, torch.zeros(5)).step.item() == 1 / 128


def test_activation_init_from_the_first_batch_only_and_it_survives_a_state_dict_round_trip():
    torch.manual_seed(5)
    first = torch.relu(torch.randn(2, 4, 3, 3))
    act = lsq.LsqActivationQuantizer(4)
    act(torch.zeros(2, 4, 3, 3))  # an all-zero batch does not initialise
    assert not bool(act.initialized)
    act(first)
    flat = first.flatten().tolist()
    expected = 2 * sum(abs(x) for x in flat) / len(flat) / math.sqrt(15)  # unsigned 4 bits: Q_P = 15
    assert bool(act.initialized) and not bool(act.signed)
    assert act.step.item() == pytest.approx(expected, rel=1e-6)
    second = 5 * torch.randn(2, 4, 3, 3)  # other scale, negatives: changes nothing now
    act(second, observe=True)
    assert act.step.item() == pytest.approx(expected, rel=1e-6) and not bool(act.signed)
    assert act(second).min().item() == 0.0  # still unsigned

    resumed = lsq.LsqActivationQuantizer(4)
    resumed.load_state_dict(act.state_dict())
    assert bool(resumed.initialized) and not bool(resumed.signed)
    assert torch.equal(resumed(second), act(second))
    assert resumed.step.item() == act.step.item()

    signed = lsq.LsqActivationQuantizer(4)
    signed(second)
    assert bool(signed.signed) and signed.bounds() == (8, 7)
    assert signed.step.item() == pytest.approx(2 * second.abs().mean().item() / math.sqrt(7), rel=1e-6)


def test_sgd_on_a_toy_regression_lowers_the_quantized_loss_and_learns_the_steps():
    torch.manual_seed(6)
    inputs, target_weight = torch.randn(64, 8), torch.randn(4, 8)
    targets = inputs @ target_weight.T
    layer = nn.Linear(8, 4, bias=False)
    parametrize.register_parametrization(layer, "weight", lsq.LsqWeightQuantizer(3, layer.weight.detach()))
    act = lsq.LsqActivationQuantizer(4)
    params = list(layer.parameters()) + list(act.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05)

    def loss():
        return ((layer(act(inputs, observe=True)) - targets) ** 2).mean()

    before = loss().item()
    weight_step, act_step = layer.parametrizations.weight[0].step.detach().clone(), act.step.item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    after = loss().item()
    assert after < 0.3 * before
    assert (layer.parametrizations.weight[0].step.detach() - weight_step).abs().max() > 1e-3
    assert abs(act.step.item() - act_step) > 1e-3


def test_the_step_alone_learns_to_lower_the_quantization_error():
    torch.manual_seed(7)
    weight = torch.randn(256)
    quantizer = lsq.LsqWeightQuantizer(3, weight)
    with torch.no_grad():
        quantizer.step.fill_(0.05)  # far too fine: most weights clip
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=0.5)

    def error():
        return ((quantizer(weight) - weight) ** 2).mean()

    before = error().item()
    for _ in range(100):
        optimizer.zero_grad()
        error().backward()
        optimizer.step()
    assert error().item() < 0.2 * before and quantizer.step.item() > 0.2


def test_contract_signatures_parameters_state_dict_and_bits_per_instance():
    torch.manual_seed(8)
    weight = torch.randn(6, 3, 3, 3)
    quantizer = lsq.LsqWeightQuantizer(4, weight)
    assert [name for name, _ in quantizer.named_parameters()] == ["step"]
    assert set(quantizer.state_dict()) == {"step"}
    assert all(t.data_ptr() != weight.data_ptr() for t in quantizer.state_dict().values())
    assert quantizer(weight).shape == weight.shape
    other = lsq.LsqWeightQuantizer(4, torch.randn(6, 3, 3, 3))
    other.load_state_dict(quantizer.state_dict())
    assert torch.equal(other(weight), quantizer(weight))

    act = lsq.LsqActivationQuantizer(6)
    assert [name for name, _ in act.named_parameters()] == ["step"]
    assert set(act.state_dict()) == {"step", "initialized", "signed"}
    assert act(torch.rand(2, 3, 5, 5), observe=True).shape == (2, 3, 5, 5)

    wide, narrow = lsq.LsqWeightQuantizer(8, weight), lsq.LsqWeightQuantizer(4, weight)
    assert (wide.q_n, wide.q_p, narrow.q_n, narrow.q_p) == (128, 127, 8, 7)
    assert (wide(weight) - weight).abs().mean() < (narrow(weight) - weight).abs().mean()
    with pytest.raises(ValueError, match="at least 2 bits"):
        lsq.LsqWeightQuantizer(1, weight)

    conv = nn.Conv2d(3, 6, 3)
    parametrize.register_parametrization(conv, "weight", lsq.LsqWeightQuantizer(4, conv.weight.detach()))
    assert "parametrizations.weight.0.step" in conv.state_dict()
    assert any(p is conv.parametrizations.weight[0].step for p in conv.parameters())
    conv(torch.rand(1, 3, 5, 5)).sum().backward()
    assert conv.parametrizations.weight[0].step.grad.abs().sum() > 0
    assert conv.parametrizations.weight.original.grad.abs().sum() > 0


def test_fixed_point_model_takes_the_lsq_scheme():
    torch.manual_seed(9)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    fp = fxp.FixedPointModel(net, 4, 6, fold_bn=False, scheme="lsq", edge_bits=8)
    assert fxp.scheme_quantizers("lsq") == (lsq.LsqWeightQuantizer, lsq.LsqActivationQuantizer)
    fp.calibrate([torch.rand(2, 3, 6, 6)])
    assert all(bool(q.initialized) for q in fp.quantizers)
    fp.model(torch.rand(2, 3, 6, 6)).sum().backward()
    assert all(q.step.grad is not None for q in fp.quantizers)
    assert fp.model[0].parametrizations.weight[0].bits == 8  # the edge layers' width reaches the quantizer


def test_docstring_examples_run():
    result = doctest.testmod(lsq)
    assert result.attempted >= 8 and result.failed == 0
