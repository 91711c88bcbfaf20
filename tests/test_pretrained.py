"""lowpower.train.pretrained: offline error message and loading from the torch hub cache."""
import os
import urllib.error

import pytest
import torch

import networks
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


def test_download_failure_explains_where_to_put_the_file(hub_dir, no_network):
    model = networks.create_model("deeplabv3_r18")
    with pytest.raises(RuntimeError) as info:
        pretrained.load_pretrained_backbone(model, "deeplabv3_r18")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert os.path.join(str(hub_dir), "checkpoints") in message
    assert "model.pretrained=false" in message


def test_cached_file_is_loaded_without_network(hub_dir, no_network):
    model = networks.create_model("deeplabv3_r18")
    file_name = os.path.basename(pretrained.backbone_weights_url("deeplabv3_r18"))
    fake_conv1 = torch.full_like(model.backbone.conv1.weight, 0.5)
    (hub_dir / "checkpoints").mkdir()
    torch.save({"conv1.weight": fake_conv1, "fc.weight": torch.zeros(1000, 512)},
               str(hub_dir / "checkpoints" / file_name))
    missing = pretrained.load_pretrained_backbone(model, "deeplabv3_r18")
    assert torch.equal(model.backbone.conv1.weight, fake_conv1)
    assert "layer1.0.conv1.weight" in missing and "conv1.weight" not in missing


def test_arch_without_pretrained_weights_is_a_value_error():
    with pytest.raises(ValueError, match="unet"):
        pretrained.load_pretrained_backbone(networks.create_model("unet", base_width=8, depth=2), "unet")


@pytest.mark.parametrize("arch", sorted(pretrained.BACKBONE_WEIGHTS))
def test_every_backbone_arch_is_registered_and_has_a_url(arch):
    assert arch in networks.MODELS
    assert pretrained.backbone_weights_url(arch).endswith(".pth")
