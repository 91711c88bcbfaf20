"""model.pretrained: FILE, an authors' ImageNet file: unwrapped, renamed by the network's key map, loaded by
name, with what did not match named, and refused in one line when it is not this network's file."""

import pytest
import torch
import torch.nn as nn

from lowpower.config import load_config
from lowpower.safe.load import WeightsFileError
from lowpower.train.init_from import model_from_config
from lowpower.train.pretrained_file import load_authors_file, map_authors_state, names_a_file, unwrap_state


class Stem(nn.Module):
    """A network whose backbone the authors called ``backbone.`` and we call ``stem.``."""

    authors_key_map = (("backbone.", "stem."),)
    authors_ignored = ("fc.",)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)


def authors_file(tmp_path, extra=None, wrap=True):
    """The state dict the authors would save: their names, their classifier, a trainer's wrapping."""
    state = {"backbone.0.weight": torch.randn(4, 3, 3, 3), "backbone.1.weight": torch.rand(4),
             "backbone.1.bias": torch.rand(4), "backbone.1.running_mean": torch.rand(4),
             "backbone.1.running_var": torch.rand(4), "backbone.1.num_batches_tracked": torch.tensor(7),
             "fc.weight": torch.randn(1000, 4), "fc.bias": torch.randn(1000)}
    state.update(extra or {})
    path = tmp_path / "authors_imagenet.pth.tar"
    if wrap:
        state = {"state_dict": {"module." + key: value for key, value in state.items()}, "epoch": 90}
    torch.save(state, path)
    return path, state


def test_the_file_fills_the_backbone_names_the_head_and_ignores_the_classifier(tmp_path):
    path, _ = authors_file(tmp_path)
    model, lines = Stem(), []
    missing, unexpected = load_authors_file(model, path, log=lines.append)
    assert missing == ["head.bias", "head.weight"] and unexpected == []
    loaded = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(model.stem[0].weight, loaded["module.backbone.0.weight"])
    assert int(model.stem[1].num_batches_tracked) == 7
    assert len(lines) == 1 and "6 of 8 network keys loaded" in lines[0] and "head.bias" in lines[0]


def test_an_unknown_key_is_named(tmp_path):
    path, _ = authors_file(tmp_path, {"backbone.9.weight": torch.zeros(1)})
    lines = []
    _, unexpected = load_authors_file(Stem(), path, log=lines.append)
    assert unexpected == ["stem.9.weight"] and "ignored: stem.9.weight" in lines[0]


def test_a_tensor_of_another_shape_is_refused_in_one_line(tmp_path):
    path, _ = authors_file(tmp_path, {"backbone.0.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(WeightsFileError) as error:
        load_authors_file(Stem(), path)
    message = str(error.value)
    assert "stem.0.weight (8, 3, 3, 3) (network (4, 3, 3, 3))" in message and "\n" not in message


def test_a_missing_file_a_foreign_file_and_a_crafted_pickle_are_refused(tmp_path):
    with pytest.raises(WeightsFileError, match="does not exist; put the file there"):
        load_authors_file(Stem(), tmp_path / "nope.pth")
    foreign = tmp_path / "foreign.pth"
    torch.save({"layer9.weight": torch.zeros(1)}, foreign)
    with pytest.raises(WeightsFileError, match="match none of the network's keys"):
        load_authors_file(Stem(), foreign)

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    crafted = tmp_path / "crafted.pth"
    torch.save({"backbone.0.weight": Payload()}, crafted)
    with pytest.raises(WeightsFileError, match="could run code"):
        load_authors_file(Stem(), crafted)


def test_key_map_unwrapping_and_what_counts_as_a_file():
    mapped, ignored = map_authors_state(Stem(), {"backbone.0.weight": 1, "fc.bias": 2, "other": 3})
    assert mapped == {"stem.0.weight": 1, "other": 3} and ignored == ["fc.bias"]
    assert unwrap_state({"model": {"state_dict": {"module.a": 1}}}) == {"a": 1}
    assert unwrap_state({"a": 1, "module.b": 2}) == {"a": 1, "module.b": 2}  # only a prefix every key has
    assert unwrap_state({"state_dict": {"a": 1}, "state_dict_ema": {"a": 2}}) == {"a": 2}  # TopFormer's files
    assert [names_a_file(v) for v in (True, False, "IMAGENET1K_V1", "x.pth", "pretrained/x")] == [
        False, False, False, True, True]


def test_model_from_config_loads_the_file_a_config_names(tmp_path):
    cfg = load_config(None, ["model.kwargs={base_width: 4, depth: 2}"])
    key, value = next(iter(model_from_config(cfg).state_dict().items()))
    path = tmp_path / "first_layer.pth"
    torch.save({key: torch.randn_like(value)}, path)
    cfg = load_config(None, ["model.kwargs={base_width: 4, depth: 2}", "model.pretrained=%s" % path])
    lines = []
    assert torch.equal(model_from_config(cfg, log=lines.append).state_dict()[key], torch.load(path)[key])
    assert "1 of" in lines[0] and str(path) in lines[0]
