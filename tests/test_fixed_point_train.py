"""Training with the fixed-point quantizer in place (quant.fixed_point): config rules, a run from a float
checkpoint, its checkpoint kind (scored by test.py, refused by the packager), the training form's
memory, and a copy of the network quantizing with its own quantizers. Resume: tests/test_resume.py."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import networks
from lowpower.checkpoint import build_model, kind_of, load_checkpoint
from lowpower.compress.kinds import KindError
from lowpower.compress.quantize import fixed_point_train
from lowpower.compress.quantize.fixed_point import FLOAT_BITS, FixedPointModel
from lowpower.config import ConfigError, load_config
from lowpower.train.trainer import main as train_main
from tests.conftest import zoo_params

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")
LSQ = ["train.amp=false", "quant.fixed_point=lsq", "quant.weight_bits=4", "quant.act_bits=6", "quant.edge_bits=8",
       "quant.calib_batches=2"]


@pytest.mark.parametrize("overrides, message", [
    (["quant.fixed_point=lsq", "quant.qat=true", "train.amp=false"], "two fake quantizations"),
    (["quant.fixed_point=lsq", "train.amp=true"], "trains in fp32; set train.amp=false"),
    (["quant.fixed_point=paper", "train.amp=false", "train.ema=true"], "train.ema and quant.fixed_point"),
    (["quant.fixed_point=pact"], "quant.fixed_point must be one of range, paper, lsq"),
    (["quant.fixed_point=lsq", "quant.weight_bits=1"], "quant.weight_bits must be at least 2"),
    (["quant.fixed_point=lsq", "quant.act_bits=17"], "quant.act_bits must be at most 16"),
])
def test_a_config_fixed_point_cannot_train_is_refused_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(ROOT / "configs/synthetic/demo.yaml", overrides)
    assert "--set" in str(caught.value) and "\n" not in str(caught.value)


def test_the_training_form_quantizes_weights_and_leaves_biases_and_batchnorm_float():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    fixed = fixed_point_train.quantize(model, {"scheme": "lsq", "weight_bits": 4, "act_bits": 6, "edge_bits": None})
    quantized = {name for name, _ in fixed.model.named_modules() if name.endswith("parametrizations.weight")}
    assert quantized == {"0.parametrizations.weight", "3.parametrizations.weight"}
    assert not hasattr(fixed.model[0].parametrizations, "bias") and isinstance(fixed.model[1], nn.BatchNorm2d)
    weights, floats = 3 * 4 * 9 + 4 * 2, 4 + 4 + 4 + 2  # conv weights; conv biases, BN weight and bias
    assert fixed.weight_memory_bits() == 4 * weights + FLOAT_BITS * floats
    assert fixed_point_train.ratio_to_float(fixed) == pytest.approx(32 * (weights + floats) /
                                                                     (4 * weights + 32 * floats))


def test_a_copy_of_the_network_quantizes_with_its_own_quantizers():
    torch.manual_seed(0)
    fixed = FixedPointModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 4, 6, scheme="range")
    images = torch.rand(2, 3, 8, 8)
    fixed.calibrate([images])
    twin = copy.deepcopy(fixed.model)
    twin[0].fixed_point_output.max_abs.fill_(1e-3)  # the copy's range only: the original must not see it
    assert torch.equal(fixed.model(images), copy.deepcopy(fixed.model)(images))
    assert not torch.equal(fixed.model(images), twin(images))
    assert twin(images).abs().max() <= 1e-3


@pytest.fixture(scope="module")
def fixed_point_run(synthetic_data, tmp_path_factory, train_args):
    """A float run of 1 epoch, then a fixed-point (LSQ w4/a6, edges 8) run of 1 epoch from its weights."""
    data = synthetic_data(train=8, val=2, test=2, seed=11)
    folder = tmp_path_factory.mktemp("fixed_point_run")
    assert train_main(train_args(data, folder / "float", "train.epochs=1")) == 0
    argv = train_args(data, folder / "lsq", "train.epochs=1", "model.init_from=%s" % (folder / "float/best.pt"),
                      *LSQ)
    assert train_main(argv) == 0
    return data, folder


def test_a_run_trains_from_a_float_checkpoint_and_saves_a_fixed_point_kind(fixed_point_run):
    data, folder = fixed_point_run
    log = (folder / "lsq/log.txt").read_text()
    assert "quant.fixed_point: lsq w4/a6, first and last layers 8 bits" in log
    assert "activation ranges set from 2 training batches" in log
    state = load_checkpoint(folder / "lsq/best.pt")
    kind = kind_of(state)
    assert kind.name == "fixed_point" and not kind.trainable
    assert kind.describe(state) == "fixed-point training state (lsq w4/a6, first and last layers 8 bits) of float unet"
    model = build_model(state)
    assert not model.training and any(name.endswith("fixed_point_input.step") for name in state["model"])
    # the float run's weights went in: its first conv is what the fixed-point run started from
    start = load_checkpoint(folder / "float/best.pt")["model"]
    assert state["model"]["stem.0.0.parametrizations.weight.original"].shape == start["stem.0.0.weight"].shape


def test_test_py_scores_the_fixed_point_checkpoint_as_validation_did(fixed_point_run):
    data, folder = fixed_point_run
    state = load_checkpoint(folder / "lsq/best.pt")
    done = subprocess.run([sys.executable, "test.py", "--checkpoint", str(folder / "lsq/best.pt"), "--data",
                           str(data), "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "%.4f" % state["metrics"]["mean_dice"] in done.stdout


def test_the_packager_refuses_a_fixed_point_checkpoint_in_one_line(fixed_point_run):
    _, folder = fixed_point_run
    state = load_checkpoint(folder / "lsq/best.pt")
    with pytest.raises(KindError, match="no fixed-point runtime. Package the float run"):
        kind_of(state).package_precision(state, None, folder / "lsq/best.pt")


@pytest.mark.parametrize("name", zoo_params(networks.list_models()))
def test_every_zoo_network_trains_under_the_fixed_point_quantizer(name):
    torch.manual_seed(0)
    model = networks.create_model(name, num_classes=3)
    fixed = fixed_point_train.quantize(model, {"scheme": "lsq", "weight_bits": 4, "act_bits": 6, "edge_bits": 8})
    fixed.calibrate([torch.rand(2, 3, 64, 64)])
    fixed.model.train()
    out = fixed.model(torch.rand(2, 3, 64, 64))
    logits = out[0] if isinstance(out, (tuple, list)) else out
    assert logits.shape[:2] == (2, 3)
    logits.float().mean().backward()
    steps = [(n, p) for n, p in fixed.model.named_parameters() if n.endswith(".step")]
    assert steps, "no learned step sizes"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in steps)


@pytest.mark.slow  # torchrun: two training processes (gloo)
def test_torchrun_trains_a_fixed_point_run(synthetic_data, tmp_path):
    from tests.test_distributed import tiny_overrides, torchrun

    out = tmp_path / "run"
    overrides = tiny_overrides(synthetic_data(train=16, val=5, test=0, seed=3)) + LSQ
    done = subprocess.run(torchrun(out, overrides), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (out / "log.txt").read_text()
    assert "quant.fixed_point: lsq w4/a6" in log and "2 process(es)" in log
    state = load_checkpoint(out / "last.pt")
    assert kind_of(state).name == "fixed_point" and state["epoch"] == 1
    steps = [value for name, value in state["model"].items() if name.endswith(".step")]
    assert steps and all(torch.isfinite(step).all() for step in steps)  # used as |step|: any sign
    build_model(state)  # the state dict of the DDP-trained network loads strictly into a fresh one
