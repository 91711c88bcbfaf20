"""Fixtures that several test files share: small synthetic data sets, a seconds-long training
command line, one torch thread for tiny models, and signal handlers given back after train.py
installs its own.

Example (in a test)::

    def test_something(synthetic_data, train_args, tmp_path):
        data = synthetic_data(train=6, val=2, test=2, seed=3)
        assert train_main(train_args(data, tmp_path / "run", "train.epochs=1")) == 0
"""
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lowpower.data.synthetic import generate

REPO_ROOT = Path(__file__).resolve().parents[1]

# `--set` values that turn the demo config into a seconds-long CPU run on 64x64 synthetic images.
TINY_TRAINING = ["model.arch=unet", "model.kwargs={base_width: 4, depth: 2}", "data.input_size=32",
                 "data.workers=0", "data.cache=false", "train.amp=false", "train.channels_last=false",
                 "train.batch_size=2", "train.warmup_iters=2", "eval.batch_size=2", "eval.output_size=64"]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A function ``(train, val, test, seed, size=64) -> root`` of a generated LPCVC-layout set.

    Sets are made once per session and shared by every test that asks for the same arguments, so a
    test that changes files must copy the set first.
    """
    made = {}

    def make(train, val, test, seed, size=64):
        key = (train, val, test, seed, size)
        if key not in made:
            root = tmp_path_factory.mktemp("synthetic_%d_%d_%d_s%d_%d" % key)
            made[key] = generate(root, train=train, val=val, test=test, seed=seed, size=size, workers=1,
                                 progress=False)
        return made[key]

    return make


@pytest.fixture(scope="session")
def gt_samples(tmp_path_factory):
    """Two 512x512 images with GT, as the referee lays them out: DIR/IMG and DIR/GT (same names)."""
    root = tmp_path_factory.mktemp("gt_samples")
    (root / "IMG").mkdir()
    (root / "GT").mkdir()
    rng = np.random.default_rng(1)
    for index in range(2):
        label = cv2.resize(rng.integers(0, 14, (8, 8)).astype(np.uint8), (512, 512),
                           interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(root / "GT" / "s{}.png".format(index)), label)
        cv2.imwrite(str(root / "IMG" / "s{}.png".format(index)), cv2.merge([label * 18] * 3))
    return root


@pytest.fixture(scope="session")
def train_args():
    """A function ``(data, out, *overrides) -> argv`` for ``lowpower.train.trainer.main``: the demo config
    made tiny (TINY_TRAINING) on the synthetic set at ``data``; later overrides win."""

    def make(data, out, *overrides):
        return ["--cfg", str(REPO_ROOT / "configs/synthetic/demo.yaml"), "--out", str(out), "--no-progress",
                "--set", *TINY_TRAINING, "data.dataset=synthetic", "data.root=%s" % data, *overrides]

    return make


@pytest.fixture(scope="module")
def single_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    inputs gain nothing from threads, and on a shared 2-core machine OpenMP oversubscription makes
    them 10-50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def restore_signal_handlers():
    """train.py installs SIGTERM/SIGINT handlers; give pytest its own back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def randomize_batchnorm(model, seed):
    """Random BN statistics and affine terms (in place; returns the model), so a fusion or a key
    mapping that got BN wrong shows in the outputs instead of hiding behind BN's identity init."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


class PlainNet(torch.nn.Module):
    """A network without the int8 convention (no stubs, no FloatFunctional, no fuse_model)."""

    quantizable = False
    quantize_reason = "its head adds activations with a bare +, not FloatFunctional (test network)"

    def __init__(self, num_classes=14):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return self.conv(x) + x.mean()


@pytest.fixture
def plain_network(monkeypatch):
    """Registers PlainNet as ``plain_net`` for one test (every zoo network quantizes) and returns
    that name."""
    import networks

    monkeypatch.setitem(networks.MODELS, "plain_net", lambda num_classes=14: PlainNet(num_classes))
    return "plain_net"
