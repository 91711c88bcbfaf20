"""Fixtures that several test files share: small synthetic data sets, a seconds-long training
command line, one torch thread for tiny models, signal handlers given back after train.py
installs its own, and one checkpoint of each kind (float, pruned, QAT, int8) and one package, each
built once per session.

A test that needs "some trained checkpoint of kind K" asks for the session's one; a test of
training itself (resume, SIGTERM, DDP, what a config key does) trains on its own.

Example (in a test)::

    def test_something(synthetic_data, train_args, tmp_path):
        data = synthetic_data(train=6, val=2, test=2, seed=3)
        assert train_main(train_args(data, tmp_path / "run", "train.epochs=1")) == 0

    def test_reads_a_trained_unet(float_checkpoint):
        assert load_checkpoint(float_checkpoint)["arch"] == "unet"
"""
import contextlib
import hashlib
import signal
import zipapp
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


def make_pyz(folder, name, source, extra_files=None, interpreter="/usr/bin/env python3"):
    """A solution archive ``folder/NAME.pyz`` built with zipapp from one ``__main__.py`` (``source``) and
    ``extra_files`` ({relative path: text}): the fake packages the runner, harness and presubmit tests run."""
    src = folder / (name + "_src")
    src.mkdir(parents=True)
    (src / "__main__.py").write_text(source)
    for relative, text in (extra_files or {}).items():
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text(text)
    target = folder / (name + ".pyz")
    zipapp.create_archive(str(src), str(target), interpreter=interpreter)
    return target


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


# ----------------------------------------------------------------------------- the zoo, fast and slow
# Zoo networks of more than 10 M parameters (ResNet and FANet backbones, DeepLabV3's ASPP head): built,
# pruned, exported or run at 512 they take seconds each where the others take a fraction, so their
# cases of a zoo-wide parametrisation run in ``make test`` only (slow).
OVER_10M = {"deeplabv3_mbv3", "deeplabv3_r18", "deeplabv3_r50", "deeplabv3_r101", "fanet_r18", "fanet_r18_sample",
            "fcn_r50"}
# Wider members of a family whose smallest member stays in the fast tier (the same code at other widths):
# slow too, so ``make test-fast`` keeps one network per family and its 3-minute budget.
WIDER_SIBLINGS = {"unet": "unet_lighter", "unet_light": "unet_lighter", "lraspp_mbv3_large": "lraspp_mbv3_small"}
SLOW_NETWORKS = OVER_10M | set(WIDER_SIBLINGS)


def zoo_params(names):
    """``names`` (zoo network names) for ``pytest.mark.parametrize``, those in SLOW_NETWORKS marked slow.

    Example::

        @pytest.mark.parametrize("name", zoo_params(networks.list_models()))
    """
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_NETWORKS else name for name in names]


# ----------------------------------------------------------------------------- one checkpoint of each kind
# Built once per session, by the first test that asks, under one torch thread, and shared by every test
# after it: a test must not change them. One that writes (a file next to a checkpoint, an edited
# copy) copies first: ``shutil.copy(float_checkpoint, tmp_path)``. At the end of the session each
# fixture checks that its folder holds the very files it wrote, and fails the run if not.

# The synthetic set the session's runs train on: 8 train images (4 steps an epoch), 3 val, 2 test.
TRAINED_DATA = {"train": 8, "val": 3, "test": 2, "seed": 5}
# 24 steps: enough for masks that are not one constant class (test_int8_package), a mean Dice above 0.
FLOAT_EPOCHS = 6
QAT_TRAINING = ["quant.qat=true", "quant.engine=x86", "train.lr=0.003", "train.optimizer=adamw",
                "train.class_weights=null", "train.epochs=2"]


def digest_tree(folder):
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


@contextlib.contextmanager
def shared_build():
    """One torch thread while a session fixture builds (tiny models; two threads on a shared 2-core
    machine are many times slower), and train.py's signal handlers and the process-wide quantized
    engine given back afterwards."""
    threads, engine = torch.get_num_threads(), torch.backends.quantized.engine
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.quantized.engine = engine
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def kept_unchanged(folder, name):
    """Around a session fixture's ``yield``: at its teardown the files under ``folder`` are what they were."""
    before = digest_tree(folder)
    yield
    after = digest_tree(folder)
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    assert not changed, "a test changed the shared %s (copy it to tmp_path first): %s" % (name, changed)


@pytest.fixture(scope="session")
def trained_data(synthetic_data):
    """The synthetic set (TRAINED_DATA) the session's checkpoints were trained on: its test/IMG
    holds scenes like the training ones."""
    return synthetic_data(**TRAINED_DATA)


@pytest.fixture(scope="session")
def float_checkpoint(trained_data, train_args, tmp_path_factory):
    """best.pt of the session's float run: the tiny UNet (TINY_TRAINING: base width 4, depth 2,
    input 32) trained FLOAT_EPOCHS epochs on ``trained_data``; the run's other files beside it."""
    from lowpower.train.trainer import main as train_main

    out = tmp_path_factory.mktemp("shared_float")
    with shared_build():
        assert train_main(train_args(trained_data, out, "train.epochs=%d" % FLOAT_EPOCHS)) == 0
    with kept_unchanged(out, "float run"):
        yield out / "best.pt"


@pytest.fixture(scope="session")
def pruned_checkpoint(float_checkpoint, tmp_path_factory):
    """``lowpower prune`` of ``float_checkpoint`` to 60% of its FLOPs (any channel count): a float
    checkpoint whose arch_kwargs carry a width plan."""
    from lowpower.compress.prune import cli as prune

    out = tmp_path_factory.mktemp("shared_pruned")
    with shared_build():
        assert prune.main([str(float_checkpoint), "--target-flops", "0.6", "--round-to", "0", "--out",
                           str(out / "pruned.pt"), "--repeats", "1", "--no-progress"]) == 0
    with kept_unchanged(out, "pruned checkpoint"):
        yield out / "pruned.pt"


@pytest.fixture(scope="session")
def int8_checkpoint(float_checkpoint, tmp_path_factory):
    """``lowpower quantize ptq`` of ``float_checkpoint``: x86 engine, calibrated on 4 training images."""
    from lowpower.compress.quantize import ptq

    out = tmp_path_factory.mktemp("shared_int8")
    with shared_build():
        assert ptq.main([str(float_checkpoint), "--calib", "4", "--engine", "x86", "--out", str(out / "int8.pt"),
                         "--no-progress"]) == 0
    with kept_unchanged(out, "int8 checkpoint"):
        yield out / "int8.pt"


@pytest.fixture(scope="session")
def qat_checkpoint(trained_data, train_args, tmp_path_factory):
    """best.pt of the session's QAT run (QAT_TRAINING: quant.qat true, x86, 2 epochs of the tiny UNet):
    the fake-quant training state. Its int8 form, best_int8.pt, lies beside it."""
    from lowpower.train.trainer import main as train_main

    out = tmp_path_factory.mktemp("shared_qat")
    with shared_build():
        assert train_main(train_args(trained_data, out, *QAT_TRAINING)) == 0
    with kept_unchanged(out, "QAT run"):
        yield out / "best.pt"


@pytest.fixture(scope="session")
def float_package(float_checkpoint, tmp_path_factory):
    """``build_package`` of ``float_checkpoint`` (fp32, min_class_area 0, not verified): its result,
    ``{"path": the .pyz, "build_dir": ..., "manifest": ..., "files": ...}``."""
    from lowpower.ship.build import build_package

    folder = tmp_path_factory.mktemp("shared_package")
    with shared_build():
        built = build_package(float_checkpoint, folder / "solution.pyz", precision="fp32", min_class_area=0.0,
                              build_dir=folder / "build", verify=False)
    with kept_unchanged(folder, "package"):
        yield built


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
