"""Issue 23, one safe loader: a crafted weight file never runs, wherever a lowpower command reads one.

A crafted file here is a torch file whose pickle, when unpickled, calls ``open(MARKER, "w")``: all the
"code" it runs is creating an empty marker file, and every test asserts the marker never appears. Each
place a command reads a weight file from (the torch hub cache of a pretrained backbone, ``--resume``,
``model.init_from``, a distillation teacher and the checkpoint of test, package, quantize ptq, prune,
export, quantize study and bench sweep) refuses it in one line and exits non-zero. The hub cache's
files are checked against the sha256 prefix in their names before they are unpickled; a backbone file
that matches none of the backbone's keys is an error; a partial match names the keys it lacked. And
two tracebacks that became one line: an int8 teacher under bf16 autocast, test.py on a corrupt
checkpoint. The hub cache is a temporary ``torch.hub.set_dir`` with files the tests write; nothing is
downloaded (``torch.hub.download_url_to_file`` is replaced).
"""
import hashlib
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

import networks
from lowpower.checkpoint import FLOAT, INT8, load_checkpoint
from lowpower.cli import run as cli_run
from lowpower.config import ConfigError
from lowpower.safe.load import WeightsFileError
from lowpower.train import distill, engine, pretrained

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_torch_thread")

BACKBONE_ARCH = "lraspp_mbv3_small"  # the smallest zoo network with an ImageNet backbone
# the tiny UNet of TINY_TRAINING swapped for the backbone network, pretrained
PRETRAINED = ["model.arch=%s" % BACKBONE_ARCH, "model.kwargs={}", "model.pretrained=true", "train.epochs=1"]


class Payload:
    """Unpickled, it calls ``open(marker, "w")``: the "code" a crafted file runs creates an empty file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def craft(path, marker, checkpoint=True):
    """Write a crafted torch file at ``path``: a checkpoint (or a backbone state dict) with a payload."""
    payload = {"features.0.0.weight": Payload(marker)}
    torch.save({"arch": "unet", "arch_kwargs": {}, "model": payload} if checkpoint else payload, str(path))
    return Path(path)


def hub_name(stem, content_path):
    """A torch hub file name for the file at ``content_path``: ``STEM-<first 8 hex of its sha256>.pth``."""
    return "%s-%s.pth" % (stem, hashlib.sha256(Path(content_path).read_bytes()).hexdigest()[:8])


def one_error_line(err, name):
    """The one error line of a command's stderr (log lines may precede it), which names ``name``."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    assert name in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache, and no network: a download attempt fails as offline."""
    previous = torch.hub.get_dir()
    folder = tmp_path / "torch_home" / "hub"
    torch.hub.set_dir(str(folder))
    monkeypatch.setenv("TORCH_HOME", str(folder.parent))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield folder
    torch.hub.set_dir(previous)


def cached(hub_dir, name):
    folder = hub_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def published_name(arch=BACKBONE_ARCH):
    return pretrained.backbone_weights_url(arch).rsplit("/", 1)[-1]


def serve_as_published(monkeypatch, hub_dir, state, stem="mobilenet_v3_small"):
    """Put ``state`` in the hub cache under a name whose hash prefix is its own, and make it the
    published file of every arch (``backbone_weights_url``); returns its path."""
    scratch = cached(hub_dir, "scratch")
    torch.save(state, str(scratch))
    path = cached(hub_dir, hub_name(stem, scratch))
    scratch.rename(path)
    monkeypatch.setattr(pretrained, "backbone_weights_url",
                        lambda arch, weights="IMAGENET1K_V1": "https://example.invalid/models/" + path.name)
    return path


def imagenet_like(arch=BACKBONE_ARCH):
    """A state dict with the keys and shapes of ``arch``'s ImageNet file (its backbone under ``features.``
    plus a classifier)."""
    backbone = networks.create_model(arch).backbone.state_dict()
    state = {"features." + key: torch.full_like(value, 0.25) if value.is_floating_point() else value
             for key, value in backbone.items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


# ----------------------------------------------------------------------------- every place a weight file is read

def train_place(train_args, data, tmp_path, crafted, *overrides):
    return "train", train_args(data, tmp_path / "run", "train.epochs=1", *overrides)


PLACES = {
    # place: (what to craft, a function (train_args, data, tmp_path, crafted file) -> (command words, argv))
    "hub cache": ("hub", lambda ta, data, tmp, f: train_place(ta, data, tmp, f, *PRETRAINED)),
    "--resume": ("checkpoint", lambda ta, data, tmp, f: ("train", ta(data, tmp / "run", "train.epochs=1")
                                                         + ["--resume", str(f)])),
    "init_from": ("checkpoint", lambda ta, data, tmp, f: train_place(ta, data, tmp, f, "model.init_from=%s" % f)),
    "distill teacher": ("checkpoint", lambda ta, data, tmp, f: train_place(
        ta, data, tmp, f, "distill.teacher=%s" % f, "distill.kd_weight=1.0")),
    "test": ("checkpoint", lambda ta, data, tmp, f: ("test", ["--checkpoint", str(f), "--no-progress"])),
    "package": ("checkpoint", lambda ta, data, tmp, f: ("package", [str(f), "-o", str(tmp / "s.pyz"), "--no-verify"])),
    "quantize ptq": ("checkpoint", lambda ta, data, tmp, f: ("quantize ptq", [str(f), "--out", str(tmp / "q.pt"),
                                                                             "--no-progress"])),
    "prune": ("checkpoint", lambda ta, data, tmp, f: ("prune", [str(f), "--out", str(tmp / "p.pt"), "--no-progress"])),
    "export": ("checkpoint", lambda ta, data, tmp, f: ("export", [str(f), "--onnx", str(tmp / "m.onnx")])),
    "quantize study": ("checkpoint", lambda ta, data, tmp, f: ("quantize study", [str(f), "--out", str(tmp / "st"),
                                                                                 "--no-progress"])),
    "bench sweep": ("checkpoint", lambda ta, data, tmp, f: ("bench sweep", [str(f), "--out", str(tmp / "sw"),
                                                                           "--no-progress"])),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_a_crafted_file_never_runs_wherever_a_command_reads_weights(place, hub_dir, trained_data, train_args,
                                                                    tmp_path, capsys, restore_signal_handlers):
    marker = tmp_path / "MARKER"
    kind, command = PLACES[place]
    if kind == "hub":  # at the very name train looks for; its content is not the published file's
        crafted = craft(cached(hub_dir, published_name()), marker, checkpoint=False)
    else:
        crafted = craft(tmp_path / "crafted.pt", marker)
    words, argv = command(train_args, trained_data, tmp_path, crafted)
    status = cli_run(words, argv)
    err = capsys.readouterr().err
    assert not marker.exists(), "the crafted file ran"
    assert status != 0
    one_error_line(err, crafted.name)


@pytest.mark.slow  # a fresh interpreter that imports torch; the in-process cases above cover every place
def test_a_crafted_checkpoint_is_one_line_and_a_nonzero_exit_status_in_a_fresh_process(tmp_path):
    marker = tmp_path / "MARKER"
    crafted = craft(tmp_path / "crafted.pt", marker)
    result = subprocess.run([sys.executable, str(ROOT / "test.py"), "--checkpoint", str(crafted)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore"))
    assert not marker.exists(), "the crafted file ran"
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "crafted.pt" in lines[0] and "error" in lines[0], result.stderr


# ----------------------------------------------------------------------------- the hub cache's checks

def test_a_hub_file_with_a_wrong_hash_is_refused_before_unpickling(hub_dir, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    craft(cached(hub_dir, published_name()), marker, checkpoint=False)
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: unpickled.append(args))
    model = networks.create_model(BACKBONE_ARCH)
    with pytest.raises(WeightsFileError, match="sha256 .* not the expected 047dcff4") as error:
        pretrained.load_pretrained_backbone(model, BACKBONE_ARCH)
    assert published_name() in str(error.value) and "\n" not in str(error.value)
    assert unpickled == [] and not marker.exists()


def test_a_plain_state_dict_under_another_files_hash_is_refused_too(hub_dir):
    torch.save(imagenet_like(), str(cached(hub_dir, published_name())))
    with pytest.raises(WeightsFileError, match="not the published file"):
        pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH)


def test_a_crafted_hub_file_with_its_own_hash_is_refused_unrun(hub_dir, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    path = serve_as_published(monkeypatch, hub_dir, {"features.0.0.weight": Payload(marker)})
    with pytest.raises(WeightsFileError, match="pickled Python objects") as error:
        pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH)
    assert path.name in str(error.value) and not marker.exists()


@pytest.mark.parametrize("state, words", [
    ({"features.nothing.weight": torch.zeros(2)}, "match none of the network's keys"),
    ({"conv1.weight": torch.zeros(2), "fc.bias": torch.zeros(2)}, "no features. keys"),  # a ResNet file
    ([torch.zeros(2)], "not a state dict"),
])
def test_a_hub_file_that_matches_no_backbone_key_is_an_error(hub_dir, monkeypatch, state, words):
    path = serve_as_published(monkeypatch, hub_dir, state)
    with pytest.raises(WeightsFileError, match=words) as error:
        pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH)
    assert path.name in str(error.value) and "model.pretrained=false" in str(error.value)


def test_train_with_a_backbone_file_that_matches_nothing_fails_in_one_line(hub_dir, trained_data, train_args,
                                                                            tmp_path, monkeypatch, capsys,
                                                                            restore_signal_handlers):
    path = serve_as_published(monkeypatch, hub_dir, {"features.nothing.weight": torch.zeros(2)})
    assert cli_run("train", train_args(trained_data, tmp_path / "run", *PRETRAINED)) != 0
    assert "match none" in one_error_line(capsys.readouterr().err, path.name)


def test_a_partial_match_names_the_missing_and_unexpected_keys(hub_dir, monkeypatch):
    state = imagenet_like()
    dropped = sorted(key for key in state if key.startswith("features.12."))
    for key in dropped:
        del state[key]
    state["features.99.weight"] = torch.zeros(3)
    path = serve_as_published(monkeypatch, hub_dir, state)
    model, lines = networks.create_model(BACKBONE_ARCH), []
    missing, unexpected = pretrained.load_pretrained_backbone(model, BACKBONE_ARCH, log=lines.append)
    # BatchNorm fills in a missing num_batches_tracked itself (old checkpoints lack it), so it is not missing
    assert missing == sorted(key[len("features."):] for key in dropped if "num_batches_tracked" not in key)
    assert unexpected == ["99.weight"]  # the classifier is dropped before matching
    assert torch.all(model.backbone.state_dict()["0.0.weight"] == 0.25)
    (line,) = lines
    total = len(model.backbone.state_dict())
    assert "%d of %d backbone keys from %s" % (total - len(missing), total, path) in line
    assert "missing from the file, left as initialised: %s" % missing[0] in line
    assert "%d in all" % len(missing) in line and "ignored: 99.weight" in line


def test_the_published_file_loads_every_key_and_logs_it(hub_dir, monkeypatch):
    path = serve_as_published(monkeypatch, hub_dir, imagenet_like())
    lines = []
    assert pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH,
                                               log=lines.append) == ([], [])
    assert lines == ["IMAGENET1K_V1 backbone weights: 240 of 240 backbone keys from %s (sha256 checked)" % path]


def test_a_download_goes_through_the_same_checks(hub_dir, tmp_path, monkeypatch):
    """A downloader that ignores the hash (a mirror, a proxy) still cannot get a crafted file read."""
    marker = tmp_path / "MARKER"
    asked = []

    def careless_download(url, dst, hash_prefix=None, progress=True):
        asked.append((url, Path(dst).name, hash_prefix))
        craft(dst, marker, checkpoint=False)

    monkeypatch.setattr(torch.hub, "download_url_to_file", careless_download)
    with pytest.raises(WeightsFileError, match="not the expected 047dcff4"):
        pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH)
    assert asked == [(pretrained.backbone_weights_url(BACKBONE_ARCH), published_name(), "047dcff4")]
    assert not marker.exists()


def test_offline_the_message_says_where_the_file_goes_and_that_its_hash_is_checked(hub_dir):
    with pytest.raises(WeightsFileError) as error:
        pretrained.load_pretrained_backbone(networks.create_model(BACKBONE_ARCH), BACKBONE_ARCH)
    message = str(error.value)
    assert str(hub_dir / "checkpoints" / published_name()) in message
    assert "sha256 must start with 047dcff4" in message and "checked before the file is read" in message
    assert "model.pretrained=false" in message and "\n" not in message


# ----------------------------------------------------------------------------- tracebacks that became one line

def test_an_int8_teacher_under_bf16_autocast_is_refused_in_one_line(int8_checkpoint, trained_data, train_args,
                                                                      tmp_path, monkeypatch, capsys,
                                                                      restore_signal_handlers):
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: True)  # train.amp means bf16 on this CPU
    args = train_args(trained_data, tmp_path / "run", "train.epochs=1", "train.amp=true",
                      "distill.teacher=%s" % int8_checkpoint, "distill.kd_weight=1.0")
    assert cli_run("train", args) != 0
    line = one_error_line(capsys.readouterr().err, str(int8_checkpoint))
    assert "int8 checkpoint" in line and "bfloat16 autocast" in line and "train.amp=false" in line
    assert "float checkpoint it came from" in line


def test_an_int8_teacher_runs_only_on_the_cpu_without_autocast(monkeypatch):
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: True)
    cpu = torch.device("cpu")
    distill.check_teacher_runs(INT8, "int8.pt", cpu, amp=False)
    distill.check_teacher_runs(FLOAT, "best.pt", cpu, amp=True)
    with pytest.raises(ConfigError, match="int8.pt is an int8 checkpoint.*train.amp=false"):
        distill.check_teacher_runs(INT8, "int8.pt", cpu, amp=True)
    with pytest.raises(ConfigError, match="runs on the CPU only, and training runs on cuda"):
        distill.check_teacher_runs(INT8, "int8.pt", torch.device("cuda"), amp=False)
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: False)  # amp stays fp32 on such a CPU
    distill.check_teacher_runs(INT8, "int8.pt", cpu, amp=True)


def corrupt(kind, source, path):
    """A damaged copy of checkpoint ``source`` at ``path``."""
    data = Path(source).read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    else:  # readable, but its weights do not fit its own arch
        state = load_checkpoint(source)
        name = next(iter(state["model"]))
        state["model"][name] = torch.zeros(3)
        torch.save(state, str(path))
    return path


@pytest.mark.parametrize("kind", ["truncated", "garbage", "wrong shapes"])
def test_test_py_on_a_corrupt_checkpoint_is_one_line_and_nonzero(kind, float_checkpoint, tmp_path, capsys):
    path = corrupt(kind, float_checkpoint, tmp_path / "broken.pt")
    assert cli_run("test", ["--checkpoint", str(path), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    one_error_line(err, "broken.pt")
