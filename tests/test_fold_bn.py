"""The shipped program folds BatchNorm into the convolutions of a float model (issue 15).

Every zoo network is rebuilt through ``solution.model.build_float_model`` (the package's float path)
with random BN statistics, so a fold that got BN wrong shows in the logits; LOWPOWER_FOLD_BN=0 and
networks without ``fuse_model`` must keep their BN.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

import networks
from networks.fusion import fuse_groups
from solution import foldbn
from solution import model as package_model
from tests.conftest import randomize_batchnorm, zoo_params

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SIZE = 64
NUM_CLASSES = 14
# The networks the issue names: every BN of theirs follows a conv, so none may be left.
FULLY_FOLDED = ["unet", "fanet_r18_sample"]


def state_of(name, seed=0):
    """A state dict of network ``name`` with random weights and BN statistics."""
    torch.manual_seed(seed)
    model = networks.create_model(name, num_classes=NUM_CLASSES)
    return randomize_batchnorm(model, seed + 1).state_dict()


def manifest_of(name):
    return {"arch": name, "arch_kwargs": {"num_classes": NUM_CLASSES}}


def load(name, state, monkeypatch, fold):
    """The package's float model of ``name`` with ``state``, folded or not (LOWPOWER_FOLD_BN)."""
    monkeypatch.setenv(foldbn.FOLD_ENV, "1" if fold else "0")
    return package_model.build_float_model(manifest_of(name), state)


def logits(model, images):
    with torch.no_grad():
        out = model(images)
    if isinstance(out, dict):
        return out["out"]
    return out[0] if isinstance(out, (list, tuple)) else out


def images(seed, batch=2):
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def conv_led_batchnorms(model):
    """Names of the BN modules that follow a Conv2d in one of ``model``'s fusion groups."""
    modules = dict(model.named_modules())
    return [group[1] for group in fuse_groups(model)
            if type(modules[group[0]]) is nn.Conv2d and isinstance(modules[group[1]], nn.BatchNorm2d)]


@pytest.mark.parametrize("name", zoo_params(networks.list_models()))
def test_folding_keeps_the_logits_and_removes_every_conv_led_batchnorm(name, monkeypatch):
    state = state_of(name)
    unfolded = load(name, state, monkeypatch, fold=False)
    groups = conv_led_batchnorms(unfolded)
    assert groups, "%s has no conv-BN group: the test would prove nothing" % name
    folded = load(name, state, monkeypatch, fold=True)
    assert not folded.training
    modules = dict(folded.named_modules())
    assert [bn for bn in groups if isinstance(modules.get(bn), nn.BatchNorm2d)] == []
    assert foldbn.batchnorm_count(folded) <= foldbn.batchnorm_count(unfolded) - len(groups)

    x = images(seed=3)
    expected, actual = logits(unfolded, x), logits(folded, x)
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((actual - expected).abs().max()) <= 1e-3 * scale, name
    agreement = float((actual.argmax(1) == expected.argmax(1)).float().mean())
    assert agreement >= 0.999, (name, agreement)


@pytest.mark.parametrize("name", FULLY_FOLDED)
def test_no_batchnorm_is_left_in_the_named_networks(name, monkeypatch):
    state = state_of(name)
    assert any(key.endswith("running_var") for key in state)
    assert foldbn.batchnorm_count(load(name, state, monkeypatch, fold=True)) == 0


@pytest.mark.parametrize("name", FULLY_FOLDED)
def test_fold_bn_0_keeps_every_batchnorm(name, monkeypatch):
    state = state_of(name)
    expected = sum(key.endswith("running_var") for key in state)
    model = load(name, state, monkeypatch, fold=False)
    assert foldbn.batchnorm_count(model) == expected > 0
    assert sum(type(module) is nn.BatchNorm2d for module in model.modules()) == expected


def test_build_model_folds_the_weights_it_loads(monkeypatch):
    """The package's entry point goes through the fold: weights.npz in, no BN out."""
    state = state_of("unet", seed=4)
    monkeypatch.setattr(package_model, "load_weights", lambda: state)
    monkeypatch.setenv(foldbn.FOLD_ENV, "1")
    manifest = dict(manifest_of("unet"), precision="fp32")
    assert foldbn.batchnorm_count(package_model.build_model(manifest)) == 0
    monkeypatch.setenv(foldbn.FOLD_ENV, "0")
    assert foldbn.batchnorm_count(package_model.build_model(manifest)) > 0


def test_segmenter_masks_agree_folded_and_unfolded(monkeypatch):
    """The timed path (normalise, forward, upsample, argmax) gives the same masks either way."""
    name = "fanet_r18_sample"
    state = state_of(name, seed=5)
    manifest = dict(manifest_of(name), mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                    referee_classes=NUM_CLASSES, output_size=128)
    batch = np.random.default_rng(6).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    masks = {}
    for fold in (False, True):
        model = load(name, state, monkeypatch, fold)
        masks[fold] = package_model.Segmenter(model, manifest, torch.device("cpu"), False)(batch)
    assert len(np.unique(masks[False])) >= 2  # the comparison means something
    assert np.mean(masks[True] == masks[False]) >= 0.999


class BatchNormNet(nn.Module):
    """A user's own network: conv-BN-ReLU but no ``fuse_model``, so it must run unfolded."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


class BrokenFusionNet(BatchNormNet):
    """Has a ``fuse_model`` that fails half-way, after replacing one module."""

    def fuse_model(self, qat=False):
        self.body[1] = nn.Identity()
        raise RuntimeError("cannot fuse this")


@pytest.mark.parametrize("kind", [BatchNormNet, BrokenFusionNet])
def test_a_network_that_cannot_fold_loads_unfolded(kind, monkeypatch, capsys):
    monkeypatch.setitem(networks.MODELS, "own_net", lambda num_classes=NUM_CLASSES: kind(num_classes))
    torch.manual_seed(7)
    reference = randomize_batchnorm(kind(), 8).eval()
    model = load("own_net", reference.state_dict(), monkeypatch, fold=True)
    assert type(model) is kind and not model.training
    assert foldbn.batchnorm_count(model) == 1
    x = images(seed=9)
    assert torch.equal(logits(model, x), logits(reference, x))
    warned = "BatchNorm not folded (RuntimeError: cannot fuse this)" in capsys.readouterr().err
    assert warned == (kind is BrokenFusionNet)


def test_a_network_without_batchnorm_or_fuse_model_loads(plain_network, monkeypatch):
    torch.manual_seed(10)
    reference = networks.create_model(plain_network).eval()
    model = load(plain_network, reference.state_dict(), monkeypatch, fold=True)
    x = images(seed=11)
    assert torch.equal(logits(model, x), logits(reference, x))


@pytest.mark.parametrize("value, enabled", [(None, True), ("1", True), ("", True), ("0", False),
                                            ("off", False), (" False ", False)])
def test_fold_enabled_reads_lowpower_fold_bn(value, enabled):
    environ = {} if value is None else {foldbn.FOLD_ENV: value}
    assert foldbn.fold_enabled(environ) is enabled
