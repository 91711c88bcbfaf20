"""Auxiliary outputs in training (loss.aux_weights): the boundary target and loss against restatements,
the heads asked for are the heads computed, their losses reach their weights, and the config names bad keys."""
import math

import pytest
import torch
import torch.nn as nn

import networks
from lowpower.config import ConfigError, load_config
from lowpower.train.aux_loss import (
    AuxiliaryLoss,
    aux_heads,
    boundary_loss,
    boundary_target,
    split_outputs,
    unused_heads,
)
from lowpower.train.losses import SegmentationLoss
from lowpower.train.trainer import main as train_main

NUM_CLASSES = 4


class TwoHeadNet(nn.Module):
    """A tiny network with the zoo's auxiliary-output interface: one segmentation and one boundary head."""

    aux_heads = (("aux", "segmentation"), ("boundary", "boundary"))
    aux_modules = ("aux_head", "boundary_head")

    def __init__(self, num_classes=NUM_CLASSES, in_channels=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux_head = nn.Conv2d(8, num_classes, 1)
        self.boundary_head = nn.Conv2d(8, 1, 1)
        self.aux_outputs = ()

    def forward(self, x):
        features = self.body(x)
        logits = nn.functional.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear")
        if not (self.training and self.aux_outputs):
            return logits
        outputs = {"out": logits}
        if "aux" in self.aux_outputs:
            outputs["aux"] = self.aux_head(features)
        if "boundary" in self.aux_outputs:
            outputs["boundary"] = self.boundary_head(features)
        return outputs


def two_head_net(num_classes=NUM_CLASSES, in_channels=3):
    return TwoHeadNet(num_classes, in_channels)


def edges_by_loop(mask, width=1):
    """The boundary rule restated: a pixel is an edge when a label within ``width`` (clamped to the image) differs."""
    height, wide = mask.shape
    out = torch.zeros(height, wide)
    for y in range(height):
        for x in range(wide):
            window = mask[max(0, y - width):y + width + 1, max(0, x - width):x + width + 1]
            out[y, x] = float(bool((window != mask[y, x]).any()))
    return out


@pytest.mark.parametrize("width", [1, 2])
def test_boundary_target_matches_a_pixel_loop(width):
    generator = torch.Generator().manual_seed(width)
    masks = torch.randint(0, 3, (2, 9, 7), generator=generator)
    masks[0, :3, :3] = 255  # the ignore id is a label of its own: its border is an edge
    target = boundary_target(masks, width)
    assert target.shape == (2, 1, 9, 7)
    for index in range(2):
        assert torch.equal(target[index, 0], edges_by_loop(masks[index], width))


def test_boundary_loss_is_bce_weighted_by_the_other_class_share():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 5, 6, generator=generator)
    target = (torch.rand(1, 1, 5, 6, generator=generator) > 0.8).float()
    share = float(target.mean())
    expected = 0.0
    for z, t in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        weight = (1 - share) if t else share
        expected -= weight * (t * math.log(p) + (1 - t) * math.log(1 - p))
    expected /= target.numel()
    assert boundary_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_only_the_weighted_heads_are_computed_and_each_reaches_its_own_weights():
    torch.manual_seed(0)
    model = TwoHeadNet().train()
    criterion = SegmentationLoss(NUM_CLASSES)
    aux_loss = AuxiliaryLoss.from_config({"loss": {"aux_weights": {"aux": 0.4, "boundary": 0}}}, model, criterion)
    assert model.aux_outputs == ("aux",) and unused_heads(model)  # DDP must then look for unused parameters
    images, masks = torch.randn(2, 3, 16, 16), torch.randint(0, NUM_CLASSES, (2, 16, 16))
    logits, aux = split_outputs(model(images))
    assert logits.shape == (2, NUM_CLASSES, 16, 16) and set(aux) == {"aux"}
    (criterion(logits, masks) + aux_loss(aux, masks)).backward()
    assert model.aux_head.weight.grad.abs().sum() > 0
    assert model.boundary_head.weight.grad is None  # weight 0: not computed, no gradient
    assert aux_loss(aux, masks).item() == pytest.approx(
        0.4 * criterion(nn.functional.interpolate(aux["aux"], size=(16, 16), mode="bilinear"), masks).item(), rel=1e-6)


def test_the_boundary_head_gets_the_boundary_loss_and_eval_returns_logits_alone():
    torch.manual_seed(0)
    model = TwoHeadNet().train()
    aux_loss = AuxiliaryLoss.from_config({"loss": {"aux_weights": {"boundary": 20.0}}}, model,
                                         SegmentationLoss(NUM_CLASSES))
    masks = torch.zeros(1, 16, 16, dtype=torch.long)
    masks[:, :, 8:] = 2
    _, aux = split_outputs(model(torch.randn(1, 3, 16, 16)))
    value = aux_loss(aux, masks)
    resized = nn.functional.interpolate(aux["boundary"], size=(16, 16), mode="bilinear")
    assert value.item() == pytest.approx(20 * boundary_loss(resized, boundary_target(masks)).item(), rel=1e-6)
    value.backward()
    assert model.boundary_head.weight.grad.abs().sum() > 0 and model.aux_head.weight.grad is None
    assert isinstance(model.eval()(torch.randn(1, 3, 16, 16)), torch.Tensor)


def test_no_weights_means_no_aux_outputs_and_plain_networks_have_no_heads():
    model = TwoHeadNet().train()
    assert AuxiliaryLoss.from_config({"loss": {"aux_weights": {}}}, model, None) is None
    assert model.aux_outputs == () and isinstance(model(torch.randn(1, 3, 8, 8)), torch.Tensor)
    assert aux_heads(networks.create_model("unet", base_width=4, depth=2)) == {}
    with pytest.raises(ConfigError, match="names other"):
        AuxiliaryLoss.from_config({"loss": {"aux_weights": {"other": 1.0}}}, model, None)
    model.width_plan = {"body.0": {"out_channels": 4}}  # what networks.widths leaves on a pruned network
    with pytest.raises(ConfigError, match="a pruned network"):
        AuxiliaryLoss.from_config({"loss": {"aux_weights": {"aux": 1.0}}}, model, None)
    assert AuxiliaryLoss.from_config({"loss": {"aux_weights": {}}}, model, None) is None


def test_the_config_names_an_unknown_head_and_a_negative_weight(monkeypatch):
    monkeypatch.setitem(networks.MODELS, "two_head_net", two_head_net)
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.arch=two_head_net", "loss.aux_weights={aux: 0.4, edge: 1}"])
    message = str(error.value)
    assert "edge" in message and "aux, boundary" in message and "\n" not in message
    with pytest.raises(ConfigError, match="aux must be numbers >= 0"):
        load_config(None, ["model.arch=two_head_net", "loss.aux_weights={aux: -1}"])
    with pytest.raises(ConfigError, match="unet does not return; its auxiliary outputs: none"):
        load_config(None, ["loss.aux_weights={aux: 0.4}"])
    assert load_config(None, ["model.arch=two_head_net", "loss.aux_weights={boundary: 20}"])["loss"][
        "aux_weights"] == {"boundary": 20}


def test_a_training_run_with_aux_weights_trains_and_logs_the_same_checkpoint_layout(
        monkeypatch, synthetic_data, train_args, tmp_path):
    monkeypatch.setitem(networks.MODELS, "two_head_net", two_head_net)
    data = synthetic_data(train=4, val=2, test=2, seed=3)
    argv = train_args(data, tmp_path / "run", "train.epochs=1", "model.arch=two_head_net", "model.kwargs={}",
                      "loss.aux_weights={aux: 0.4, boundary: 20}")
    assert train_main(argv) == 0
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert "aux_head.weight" in state["model"] and "boundary_head.weight" in state["model"]
