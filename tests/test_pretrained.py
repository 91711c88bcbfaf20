"""lowpower.train.pretrained: the offline message, loading from the torch hub cache with its hash
checked, and a download through the same checks. The crafted-file and key-matching cases are in
tests/test_safe_load.py."""
import hashlib
import os
import urllib.error

import pytest
import torch

import networks
from lowpower.config import ConfigError
from lowpower.safe.load import WeightsFileError
from lowpower.train import pretrained


@pytest.fixture
def hub_dir(tmp_path):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(previous)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def hashed_name(stem, data):
    """A torch hub file name for ``data``: ``STEM-<first 8 hex of its sha256>.pth``."""
    return "%s-%s.pth" % (stem, hashlib.sha256(data).hexdigest()[:8])


def test_download_failure_explains_where_to_put_the_file(hub_dir, no_network):
    model = networks.create_model("deeplabv3_r18")
    with pytest.raises(WeightsFileError) as info:
        pretrained.load_pretrained_backbone(model, "deeplabv3_r18")
    message = str(info.value)
    assert os.path.join(str(hub_dir), "checkpoints", "resnet18-f37072fd.pth") in message
    assert "sha256 must start with f37072fd" in message and "checked" in message
    assert "model.pretrained=false" in message


def test_cached_file_with_its_hash_is_loaded_without_network(hub_dir, no_network, monkeypatch):
    model = networks.create_model("deeplabv3_r18")
    fake_conv1 = torch.full_like(model.backbone.conv1.weight, 0.5)
    scratch = hub_dir / "scratch.pth"
    torch.save({"conv1.weight": fake_conv1, "fc.weight": torch.zeros(1000, 512)}, str(scratch))
    (hub_dir / "checkpoints").mkdir()
    name = hashed_name("resnet18", scratch.read_bytes())
    scratch.rename(hub_dir / "checkpoints" / name)
    monkeypatch.setattr(pretrained, "backbone_weights_url", lambda arch, weights: "https://example.invalid/" + name)
    missing, unexpected = pretrained.load_pretrained_backbone(model, "deeplabv3_r18")
    assert torch.equal(model.backbone.conv1.weight, fake_conv1)
    assert "layer1.0.conv1.weight" in missing and "conv1.weight" not in missing
    assert unexpected == [], "the ImageNet classifier (fc) is dropped before matching"


def test_cached_file_at_the_published_name_with_other_content_is_refused(hub_dir, no_network):
    (hub_dir / "checkpoints").mkdir()
    torch.save({"conv1.weight": torch.zeros(1)}, str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth"))
    with pytest.raises(WeightsFileError, match="resnet18-f37072fd.pth has sha256 .*not the expected f37072fd"):
        pretrained.load_pretrained_backbone(networks.create_model("deeplabv3_r18"), "deeplabv3_r18")


def test_a_download_is_saved_in_the_cache_and_read_from_there(hub_dir, monkeypatch, tmp_path):
    model = networks.create_model("deeplabv3_r18")
    payload = tmp_path / "payload.pth"
    torch.save({"conv1.weight": torch.full_like(model.backbone.conv1.weight, 0.5)}, str(payload))
    name = hashed_name("resnet18", payload.read_bytes())
    url = "https://example.invalid/" + name
    monkeypatch.setattr(pretrained, "backbone_weights_url", lambda arch, weights: url)
    asked = []

    def download(source, dst, hash_prefix=None, progress=True):
        asked.append((source, dst, hash_prefix))
        os.replace(payload, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    pretrained.load_pretrained_backbone(model, "deeplabv3_r18")
    assert asked == [(url, str(hub_dir / "checkpoints" / name), name[9:17])]
    assert torch.all(model.backbone.conv1.weight == 0.5)


def test_a_download_with_a_wrong_hash_is_one_line(hub_dir, monkeypatch):
    def wrong_hash(url, dst, hash_prefix=None, progress=True):  # what torch hub raises, having removed its file
        raise RuntimeError('invalid hash value (expected "%s", got "0123abcd...")' % hash_prefix)

    monkeypatch.setattr(torch.hub, "download_url_to_file", wrong_hash)
    with pytest.raises(WeightsFileError, match="cannot download .*invalid hash value") as info:
        pretrained.load_pretrained_backbone(networks.create_model("deeplabv3_r18"), "deeplabv3_r18")
    assert "\n" not in str(info.value)


def test_arch_without_pretrained_weights_is_a_config_error():
    with pytest.raises(ConfigError, match="unet"):
        pretrained.load_pretrained_backbone(networks.create_model("unet", base_width=8, depth=2), "unet")


@pytest.mark.parametrize("arch", sorted(pretrained.BACKBONE_WEIGHTS))
def test_every_backbone_arch_is_registered_and_has_a_url(arch):
    assert arch in networks.MODELS
    assert pretrained.backbone_weights_url(arch).endswith(".pth")
    assert pretrained.hub_hash_prefix(pretrained.backbone_weights_url(arch)), "its hash is checked"
