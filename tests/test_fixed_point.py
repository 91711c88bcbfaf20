"""The fixed-point quantizer of arXiv 1908.01073 and the study built on it.

- the tensor quantizer equals a pure-Python restatement of the rule on random values;
- its straight-through gradient is 1 inside the clamp range and 0 outside;
- every weight and activation of a network is quantized without editing the network;
- ``study`` on a tiny checkpoint writes CSV, Markdown and PNG with the right rows and memory, and a
  rerun skips the rows already written.
"""
import csv
import math
import random

import pytest
import torch
from torch import nn

import networks
from lowpower.checkpoint import load_checkpoint
from lowpower.compress.quantize import fixed_point as fxp
from lowpower.compress.quantize import study

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def paper_rule(x, int_bits, frac_bits, signed):
    """One value by the paper's rule, in plain Python floats: sign, integer and fractional parts,
    the magnitude rounded (ties up) to a multiple of 2**-frac_bits and clamped to what the bits hold."""
    if not signed and x < 0:
        return 0.0
    step = 2.0 ** -frac_bits
    levels = math.floor(abs(x) / step + 0.5)
    levels = min(levels, 2 ** (int_bits + frac_bits) - 1)
    return math.copysign(levels * step, x) if signed else levels * step


@pytest.mark.parametrize("bits,signed", [(2, True), (4, True), (6, False), (8, True), (16, False)])
def test_quantizer_equals_the_scalar_rule(bits, signed):
    rng = random.Random(bits)
    # A spread of magnitudes, exact ties on the grid, and values beyond the clamp range.
    values = [rng.gauss(0, 10 ** rng.uniform(-3, 1)) for _ in range(400)] + [0.375, -0.125, 2.5, 1e4, -1e4]
    tensor = torch.tensor(values, dtype=torch.float32)
    max_abs = float(tensor.abs().max()) / 4  # a quarter of the range: the clamp is exercised too
    int_bits, frac_bits = fxp.fixed_point_format(max_abs, bits, signed)
    assert int_bits + frac_bits == bits - (1 if signed else 0)
    assert 2.0 ** (int_bits - 1) <= max_abs < 2.0 ** int_bits  # the fewest integer bits that hold it
    got = fxp.fixed_point(tensor, bits, max_abs=max_abs, signed=signed).tolist()
    expected = [paper_rule(float(v), int_bits, frac_bits, signed) for v in tensor.tolist()]
    assert got == expected
    assert len(set(got)) <= 2 ** bits  # a b-bit format has at most 2**b values


def test_default_format_holds_the_largest_value_exactly_when_on_grid():
    x = torch.tensor([-3.5, 0.25, 1.0])  # 4 bits: sign + 2 integer + 1 fractional
    assert fxp.fixed_point(x, 4).tolist() == [-3.5, 0.5, 1.0]
    assert fxp.fixed_point(torch.tensor([0.0, 0.0]), 4).tolist() == [0.0, 0.0]


def test_straight_through_gradient_is_one_inside_the_clamp_range_and_zero_outside():
    # int 1, frac 2, signed: grid step 0.25, representable magnitudes up to 1.75.
    x = torch.tensor([-3.0, -1.75, -0.3, 0.0, 0.6, 1.74, 1.76, 9.0], requires_grad=True)
    y = fxp.FixedPointSTE.apply(x, 1, 2, True)
    (y * torch.arange(1.0, 9.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]
    assert y.tolist() == [-1.75, -1.75, -0.25, 0.0, 0.5, 1.75, 1.75, 1.75]
    unsigned = torch.tensor([-1.0, 0.5, 3.0], requires_grad=True)
    fxp.FixedPointSTE.apply(unsigned, 1, 2, False).sum().backward()  # range [0, 1.75]
    assert unsigned.grad.tolist() == [0.0, 1.0, 0.0]


def on_grid(values, bits):
    """Whether every value is a multiple of the format's step for its largest magnitude."""
    values = values.detach()
    int_bits, frac_bits = fxp.fixed_point_format(float(values.abs().max()), bits, bool((values < 0).any()))
    scaled = values * 2.0 ** frac_bits
    return bool(torch.equal(scaled, torch.round(scaled)))


def test_every_weight_and_activation_is_quantized_and_bn_folded():
    torch.manual_seed(0)
    model = networks.create_model("unet", num_classes=5, base_width=4, depth=2).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding has something to do
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    images = torch.rand(2, 3, 32, 32)
    folded_only = fxp.FixedPointModel(model, 32, 32)
    folded_only.enabled = False
    for module in folded_only.model.modules():  # no weight quantization either: float, folded
        if hasattr(module, "parametrizations"):
            for name in list(module.parametrizations):
                torch.nn.utils.parametrize.remove_parametrizations(module, name, leave_parametrized=False)
    with torch.no_grad():
        assert torch.allclose(folded_only.model(images), model(images), atol=1e-4)
    assert folded_only.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0

    quantized = fxp.FixedPointModel(model, 4, 6)
    quantized.calibrate([images])
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for _, m in fxp.leaf_modules(quantized.model)]
    with torch.no_grad():
        logits = quantized.model(images)
    for hook in hooks:
        hook.remove()
    weights = [getattr(m, name) for _, m in fxp.leaf_modules(quantized.model)
               for name in getattr(m, "parametrizations", {})]
    assert len(weights) == len(list(quantized.model.parameters())) > 0
    assert all(on_grid(w, 4) for w in weights)
    assert all(len(torch.unique(w)) <= 15 for w in weights)  # 4-bit sign-magnitude: 15 values
    assert outputs and all(len(torch.unique(o)) <= 64 for o in outputs)  # 6-bit activations
    assert len(torch.unique(logits)) <= 64
    assert not torch.equal(logits, model(images).detach())


def test_activation_elements_counts_each_storage_once():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1), nn.ReLU())
    # input 3x5x5 + conv 4x5x5 (the in-place ReLU shares it) + conv 2x5x5 + ReLU 2x5x5
    assert fxp.activation_elements(model, (3, 5, 5)) == 75 + 100 + 50 + 50


def table_rows(markdown):
    """The body rows of study.md's table."""
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| scheme")]


def test_study_writes_rows_memory_and_plot_and_skips_done_rows(float_checkpoint, tmp_path, capsys):
    checkpoint = float_checkpoint  # the session's tiny trained UNet (tests/conftest.py)
    out = tmp_path / "study"
    argv = [str(checkpoint), "--weight-bits", "4", "--act-bits", "6,8", "--calib-batches", "1",
            "--out", str(out), "--no-progress"]
    assert study.main(argv + ["--qat-epochs", "0"]) == 0
    with open(out / "study.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["weight_bits"], r["act_bits"], r["qat_epochs"]) for r in rows] == [
        ("32", "32", "0"), ("4", "6", "0"), ("4", "8", "0")]
    fp32, w4a6, w4a8 = rows
    assert float(fp32["weight_memory_kib"]) == pytest.approx(8 * float(w4a6["weight_memory_kib"]), rel=1e-3)
    assert float(w4a6["weight_memory_ratio"]) == 8.0
    assert float(w4a8["act_memory_kib_per_image"]) == pytest.approx(
        float(w4a6["act_memory_kib_per_image"]) * 8 / 6, rel=1e-3)
    assert float(fp32["act_memory_kib_per_image"]) > float(w4a8["act_memory_kib_per_image"]) > 0
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    assert float(fp32["dice_drop"]) == 0.0
    table = (out / "study.md").read_text()
    assert len(table_rows(table)) == 3 and "| range | 4 | 6 | - | 0 |" in table
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    assert study.main(argv + ["--qat-epochs", "1"]) == 0  # three trained rows: fp32 is trained too
    with open(out / "study.csv", newline="") as handle:
        trained = list(csv.DictReader(handle))[3:]
    assert [(r["weight_bits"], r["act_bits"], r["qat_epochs"], r["fold_bn"]) for r in trained] == [
        ("32", "32", "1", "0"), ("4", "6", "1", "0"), ("4", "8", "1", "0")]
    runs = sorted(path.name for path in (out / "runs").iterdir() if path.is_dir())
    assert len(runs) == 3 and runs[0].startswith("fp32_1ep_") and runs[1].startswith("range_w4_a6_1ep_")
    for row, run in zip(trained, [runs[0], runs[1], runs[2]]):  # each row is its train.py run's final score
        state = load_checkpoint(out / "runs" / run / "last.pt")
        assert "%.5f" % state["metrics"]["mean_dice"] == row["val_mean_dice"] and state["epoch"] == 1
        assert state["config"]["quant"]["fixed_point"] == (None if run.startswith("fp32") else "range")
        assert state["config"]["model"]["init_from"] == str(checkpoint.resolve())
    assert float(trained[1]["dice_drop"]) == pytest.approx(float(trained[0]["val_mean_dice"]) -
                                                           float(trained[1]["val_mean_dice"]), abs=2e-5)
    table = (out / "study.md").read_text()  # the trained rows: BatchNorm kept, unlike the calibrated ones'
    assert len(table_rows(table)) == 3 and "| range | 4 | 6 | - | 1 |" in table and "BatchNorm kept" in table
    capsys.readouterr()
    assert study.main(argv + ["--qat-epochs", "1"]) == 0  # nothing is trained again
    assert "3 of 3 rows already in" in capsys.readouterr().err


def test_study_names_a_missing_checkpoint(tmp_path, capsys):
    assert study.main([str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "nope.pt" in error and error.count("\n") == 1


def three_convs():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(5, 2, 1))


def test_edge_bits_widen_the_first_and_last_layers_only():
    model = three_convs()
    sizes = [sum(p.numel() for p in layer.parameters()) for layer in (model[0], model[2], model[4])]
    quantized = fxp.FixedPointModel(model, 4, 6, edge_bits=8)
    assert quantized.weight_memory_bits() == 8 * sizes[0] + 4 * sizes[1] + 8 * sizes[2]
    assert fxp.FixedPointModel(model, 4, 6).weight_memory_bits() == 4 * sum(sizes)
    # activations of one 2x2 image: the image (3x4) and conv0's output (4x4) touch the first layer;
    # the last reads relu1's output (5x4) and writes 2x4; relu0's output and conv2's (4x4, 5x4) are
    # inner. The weights as the layers see them (the quantizers' outputs) are no activations.
    assert quantized.activation_memory_bits((3, 2, 2)) == 8 * (12 + 16) + 8 * (20 + 8) + 6 * (16 + 20)
    assert quantized.activation_elements((3, 2, 2)) == fxp.activation_elements(model, (3, 2, 2)) == 92
    quantized.calibrate([torch.rand(2, 3, 2, 2)])
    assert quantized.quantizers[0].bits == 8 and quantized.quantizers[2].bits == 6


def test_an_unknown_scheme_is_refused_naming_the_schemes():
    with pytest.raises(ValueError, match="range, paper, lsq"):
        fxp.FixedPointModel(three_convs(), 4, 6, scheme="log")


def test_a_study_csv_from_before_the_schemes_is_continued_as_range_rows(tmp_path):
    from lowpower.compress.quantize import study_files

    path = tmp_path / "study.csv"
    row = {name: "1" for name in study_files.BEFORE_SCHEMES}
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=study_files.BEFORE_SCHEMES)
        writer.writeheader()
        writer.writerow(row)
    assert study_files.csv_format(path) == "study"
    (read,) = study_files.read_rows(path)
    assert (read["scheme"], read["edge_bits"]) == ("range", "")
    study_files.write_rows(path, [read])
    assert study_files.csv_format(path) == "study" and study_files.read_rows(path) == [read]


def test_the_study_keys_rows_by_scheme_and_edge_bits(float_checkpoint, tmp_path):
    out = tmp_path / "study"
    argv = [str(float_checkpoint), "--weight-bits", "4", "--act-bits", "6", "--calib-batches", "1",
            "--out", str(out), "--no-progress"]
    assert study.main(argv) == 0 and study.main(argv + ["--edge-bits", "8"]) == 0
    with open(out / "study.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["weight_bits"], r["scheme"], r["edge_bits"]) for r in rows] == [
        ("32", "range", ""), ("4", "range", ""), ("4", "range", "8")]
    plain, edges = rows[1], rows[2]
    # the stem's and the classifier's weights at 8 bits: more memory than all at 4, less than all at 8
    assert float(plain["weight_memory_kib"]) < float(edges["weight_memory_kib"]) < 2 * float(
        plain["weight_memory_kib"])
    assert float(edges["act_memory_kib_per_image"]) > float(plain["act_memory_kib_per_image"])


@pytest.mark.parametrize("scheme", ["range", "lsq"])
def test_activation_quantizers_live_in_the_network(scheme):
    quantized = fxp.FixedPointModel(three_convs(), 4, 6, scheme=scheme)
    quantized.calibrate([torch.rand(2, 3, 4, 4)])
    keys = quantized.model.state_dict()
    assert "0.fixed_point_input.%s" % ("max_abs" if scheme == "range" else "step") in keys
    assert "4.fixed_point_output.%s" % ("max_abs" if scheme == "range" else "step") in keys
    own = {id(p) for q in quantized.quantizers for p in q.parameters()}
    assert own <= {id(p) for p in quantized.model.parameters()}  # an optimizer of the model trains them
    assert bool(own) == (scheme == "lsq")
    again = fxp.FixedPointModel(three_convs(), 4, 6, scheme=scheme)
    again.model.load_state_dict(keys)  # the steps and ranges resume with the weights
    torch.testing.assert_close(again.model(torch.ones(1, 3, 4, 4)), quantized.model(torch.ones(1, 3, 4, 4)))
