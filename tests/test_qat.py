"""Quantization-aware training through train.py (issue 13): a tiny QAT run validates the
fake-quantized model and writes an int8 best_int8.pt that reloads strictly; resume is exact with
the observer and fake-quant state; the freeze epochs take effect; init_from starts from a float
checkpoint; a network that cannot be quantized is refused in one line at config time."""
import pytest
import torch

import networks
from lowpower import checkpoint as ckpt
from lowpower.compress.quantize import qat
from lowpower.ship.build import PackageError, build_package
from lowpower.train import trainer as train_module
from lowpower.train.trainer import main as train_main
from networks import quant
from tests.conftest import PlainNet
from tests.test_resume import stop_after_steps

pytestmark = pytest.mark.usefixtures("single_torch_thread", "restore_signal_handlers")

QAT = ["quant.qat=true", "train.lr=0.003", "train.optimizer=adamw", "train.class_weights=null"]


@pytest.fixture(scope="module")
def tiny_data(synthetic_data):
    return synthetic_data(train=8, val=2, test=0, seed=11)


def record_validation(monkeypatch):
    """Wrap train.py's validate_ranks: record the fake-quant flags it sees and whether it changed
    the model's state (observer ranges included)."""
    seen = []
    real = train_module.validate_ranks

    def wrapped(model, *args, **kwargs):
        before = {name: value.clone() for name, value in model.state_dict().items()}
        modules = qat.fake_quant_modules(model)
        seen.append({"fake_quant": [int(m.fake_quant_enabled.item()) for m in modules],
                     "observers": [int(m.observer_enabled.item()) for m in modules]})
        summary = real(model, *args, **kwargs)
        seen[-1]["unchanged"] = all(torch.equal(value, model.state_dict()[name]) for name, value in before.items())
        return summary

    monkeypatch.setattr(train_module, "validate_ranks", wrapped)
    return seen


def test_tiny_qat_run_validates_fake_quant_and_writes_a_strict_int8_checkpoint(train_args, tiny_data, tmp_path,
                                                                             monkeypatch):
    out = tmp_path / "qat"
    seen = record_validation(monkeypatch)
    args = train_args(tiny_data, out, *QAT, "train.epochs=2", "train.val_every=1", "quant.engine=x86")
    assert train_main(args) == 0
    assert len(seen) == 2 and all(len(record["fake_quant"]) > 10 for record in seen)
    for record in seen:  # fake quant on, observers paused, nothing moved by the validation images
        assert set(record["fake_quant"]) == {1} and set(record["observers"]) == {0} and record["unchanged"]
    last = ckpt.load_checkpoint(out / "last.pt")
    observer_flags = [value for name, value in last["model"].items() if name.endswith("observer_enabled")]
    assert observer_flags and all(int(flag) == 1 for flag in observer_flags), "observers back on after validation"

    best = ckpt.load_checkpoint(out / "best.pt")
    int8 = ckpt.load_checkpoint(out / qat.INT8_NAME)
    assert int8["quant"] == {"engine": "x86", "mode": "qat", "per_channel": True}
    assert int8["epoch"] == best["epoch"] and int8["metrics"]["mean_dice"] == best["metrics"]["mean_dice"]
    assert int8["optimizer"] is None and "rng" not in int8, "an int8 checkpoint is not resumable"
    model = ckpt.build_model(int8)  # int8_skeleton + strict load
    convs = [m for m in model.modules() if isinstance(m, quant.nnq().Conv2d)]
    assert convs and all(m.weight().is_quantized for m in convs)
    # the int8 model computes what the fake-quantized one validated
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fake, real = ckpt.build_model(best)(images), model(images)
    assert not real.is_quantized and real.shape == fake.shape
    agree = (fake.argmax(1) == real.argmax(1)).float().mean().item()
    assert agree > 0.95, "int8 and fake-quant predictions agree on %.3f of the pixels" % agree
    # the converter's command line writes the same kind of file from last.pt
    assert qat.main([str(out / "last.pt"), "-o", str(tmp_path / "last_int8.pt")]) == 0
    assert ckpt.load_checkpoint(tmp_path / "last_int8.pt")["quant"]["mode"] == "qat"
    # the packager points from the QAT training state to its int8 form, in one line
    with pytest.raises(PackageError, match="QAT training checkpoint .*best_int8.pt --precision int8"):
        build_package(out / "best.pt", tmp_path / "qat.pyz", verify=False)


def test_qat_resume_is_exact_with_observers_and_freezes(train_args, tiny_data, tmp_path, monkeypatch):
    extra = (*QAT, "train.epochs=2", "quant.freeze_observers_epoch=1", "quant.freeze_bn_epoch=1")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train_main(train_args(tiny_data, straight, *extra)) == 0
    with monkeypatch.context() as patch:
        stop_after_steps(patch, 6)  # 4 steps per epoch: stops in epoch 2, after the freezes, at its 2nd step
        assert train_main(train_args(tiny_data, split, *extra)) == train_module.EXIT_STOPPED
    assert ckpt.load_checkpoint(split / "last.pt")["step_in_epoch"] == 2
    assert train_main(train_args(tiny_data, split, *extra) + ["--resume", "auto"]) == 0
    a, b = ckpt.load_checkpoint(straight / "last.pt"), ckpt.load_checkpoint(split / "last.pt")
    assert set(a["model"]) == set(b["model"])
    assert any("fake_quant" in name for name in a["model"]) and any("min_val" in name for name in a["model"])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    int8_a, int8_b = (ckpt.load_checkpoint(run / qat.INT8_NAME)["model"] for run in (straight, split))
    assert torch.equal(int8_a["head.weight"].int_repr(), int8_b["head.weight"].int_repr())


def snapshot_each_epoch(monkeypatch):
    """Per epoch, at its first step (after model.train()): observer flags, BN modes and a copy of
    the observer ranges and BN statistics."""
    snapshots = []
    real = train_module.train_one_epoch

    def wrapped(model, loader, *args, **kwargs):
        class First:
            def __init__(self, inner):
                self.inner, self.sampler = inner, inner.sampler

            def __len__(self):
                return len(self.inner)

            def __iter__(self):
                for index, batch in enumerate(self.inner):
                    if index == 0:
                        snapshots.append(epoch_state(model))
                    yield batch
        return real(model, First(loader), *args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", wrapped)
    return snapshots


def epoch_state(model):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    tracked = {name: value.clone() for name, value in model.state_dict().items()
               if name.endswith(("min_val", "max_val", "running_mean", "running_var"))}
    return {"observers": {int(m.observer_enabled.item()) for m in qat.fake_quant_modules(model)},
            "bn_training": {m.training for m in norms}, "tracked": tracked}


@pytest.mark.parametrize("freeze", ["observers", "bn"])
def test_freeze_epochs_take_effect_from_their_epoch(train_args, tiny_data, tmp_path, monkeypatch, freeze):
    key = "quant.freeze_observers_epoch=1" if freeze == "observers" else "quant.freeze_bn_epoch=1"
    snapshots = snapshot_each_epoch(monkeypatch)
    assert train_main(train_args(tiny_data, tmp_path / "run", *QAT, "train.epochs=2", key)) == 0
    first, second = snapshots
    final = ckpt.load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    frozen_suffix = ("min_val", "max_val") if freeze == "observers" else ("running_mean", "running_var")
    other_suffix = ("running_mean", "running_var") if freeze == "observers" else ("min_val", "max_val")
    frozen = [name for name in second["tracked"] if name.endswith(frozen_suffix)]
    other = [name for name in second["tracked"] if name.endswith(other_suffix)]
    assert frozen and other
    assert first["observers"] == {1} and first["bn_training"] == {True}
    if freeze == "observers":
        assert second["observers"] == {0} and second["bn_training"] == {True}
    else:
        assert second["observers"] == {1} and second["bn_training"] == {False}
    # epoch 1 moved them; in epoch 2 the frozen ones stay, the others still move
    assert any(not torch.equal(first["tracked"][name], second["tracked"][name]) for name in frozen)
    assert all(torch.equal(second["tracked"][name], final[name]) for name in frozen)
    assert any(not torch.equal(second["tracked"][name], final[name]) for name in other)


def test_init_from_starts_qat_from_a_float_checkpoint(train_args, tiny_data, float_checkpoint, tmp_path, capsys):
    source = float_checkpoint  # the session's tiny trained UNet (tests/conftest.py): base width 4, depth 2
    # an lr of 1e-12 leaves the weights where init_from put them
    args = train_args(tiny_data, tmp_path / "qat", *QAT, "train.epochs=1", "train.lr=1e-12",
                      "quant.init_from=%s" % source)
    assert train_main(args) == 0
    float_weights, qat_weights = ckpt.load_checkpoint(source)["model"], ckpt.load_checkpoint(
        tmp_path / "qat" / "last.pt")["model"]
    shared = [name for name, value in float_weights.items() if value.ndim == 4 and name in qat_weights]
    assert len(shared) > 5
    for name in shared:
        assert torch.allclose(float_weights[name], qat_weights[name], atol=1e-6), name
    assert "quant.init_from: started from the weights of %s" % source in (tmp_path / "qat" / "log.txt").read_text()
    # another width than the checkpoint's is refused in one line naming the file
    capsys.readouterr()
    wider = args[:-1] + ["model.kwargs={base_width: 8, depth: 2}", args[-1]]
    assert train_main([a.replace("/qat", "/qat2") for a in wider]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train.py: error: quant.init_from %s holds unet" % source)


def test_quant_qat_on_a_network_that_cannot_be_quantized_fails_in_one_line(train_args, tiny_data, tmp_path,
                                                                         capsys, plain_network):
    arch = plain_network  # every zoo network quantizes today, so the refused one is registered for this test
    assert networks.quantizable(arch) == (False, PlainNet.quantize_reason)
    args = train_args(tiny_data, tmp_path / "run", *QAT, "model.arch=%s" % arch, "model.kwargs={}")
    assert train_main(args) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert "quant.qat" in error and arch in error and PlainNet.quantize_reason in error
    assert not (tmp_path / "run").exists(), "refused before the run folder is made"
    # mixed precision is refused the same way
    assert train_main(train_args(tiny_data, tmp_path / "amp", *QAT, "train.amp=true")) == 2
    assert "train.amp=false" in capsys.readouterr().err


@pytest.mark.slow  # torchrun: two training processes (gloo)
def test_qat_under_torchrun_and_test_py_scores_what_validation_scored(tiny_data, tmp_path):
    """Two gloo processes train QAT; rank 0 alone writes best_int8.pt; test.py on the QAT best.pt
    (the fake-quantized model, one process) gives the confusion matrix validation reduced."""
    import json
    import subprocess

    from lowpower.train import tester as test_cli
    from tests.test_distributed import ROOT, tiny_overrides, torchrun

    out = tmp_path / "ddp"
    overrides = [*tiny_overrides(tiny_data), *QAT]
    done = subprocess.run(torchrun(out, overrides), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.pt*")) == ["best.pt", "best_int8.pt", "last.pt"]
    assert (done.stdout + done.stderr).count("wrote %s" % (out / qat.INT8_NAME)) == 1
    state = ckpt.load_checkpoint(out / "best.pt")
    report = tmp_path / "single.json"
    assert test_cli.main(["--checkpoint", str(out / "best.pt"), "--device", "cpu", "--no-progress",
                          "--json", str(report)]) == 0
    assert json.loads(report.read_text())["confusion_matrix"] == state["metrics"]["confusion_matrix"]
