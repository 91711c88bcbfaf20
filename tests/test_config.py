"""Config schema: unknown keys, types, overrides, model arguments, round trip, the reference in docs/training.md."""
from pathlib import Path

import pytest
import yaml

from lowpower.config import SCHEMA, ConfigError, defaults, load_config, reference_markdown, save_config, valid_keys

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def write(tmp_path, content):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert set(cfg) == set(SCHEMA)  # every section present, filled with defaults where the file is silent


def test_typo_names_the_key_suggests_and_lists_valid_keys(tmp_path):
    path = write(tmp_path, {"train": {"epoch": 3}})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "train.epoch'" in message and "Did you mean 'train.epochs'" in message
    assert all(key in message for key in valid_keys())
    assert str(path) in message


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'optim'"):
        load_config(write(tmp_path, {"optim": {"lr": 1}}))


@pytest.mark.parametrize("override, match", [
    ("train.epochs=abc", "train.epochs must be an integer"),
    ("train.optimizer=adam", "one of sgd, adamw"),
    ("data.scale_min=3", "scale_min <= data.scale_max"),
    ("train.batch_size=0", "at least 1"),
    ("train.class_weights=[1, 2]", "2 values for 14 classes"),
    ("train.lr", "section.key=value"),
    ("train.epochs.x=1", "unknown config key"),
])
def test_bad_values_are_errors_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_overrides_win_over_the_file_and_ints_become_floats(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 7, "lr": 1}})
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg["train"]["epochs"] == 2
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)


def test_model_kwargs_are_checked_against_the_builder(tmp_path):
    cfg = load_config(None, ["model.arch=unet", "model.kwargs.base_width=8"])
    assert cfg["model"]["kwargs"] == {"base_width": 8}
    with pytest.raises(ConfigError, match="base_widht.*accepts: in_channels, base_width, depth"):
        load_config(None, ["model.kwargs.base_widht=8"])
    with pytest.raises(ConfigError, match="Did you mean 'unet'.*Valid names"):
        load_config(None, ["model.arch=unett"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "model.kwargs.depth=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_docs_reference_matches_the_schema():
    page = (ROOT / "docs" / "training.md").read_text()
    assert reference_markdown() in page, "regenerate with: lowpower config --update-readme docs/training.md"
    assert defaults()["data"]["dataset"] == "lpcvc"


def test_yaml_1_2_floats_like_1e_3_are_numbers_in_the_file_and_in_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n  clip_grad: +2e1\n")
    cfg = load_config(path, ["train.poly_power=9e-1"])
    assert cfg["train"]["lr"] == 0.001 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["weight_decay"] == 0.0005
    assert cfg["train"]["clip_grad"] == 20.0
    assert cfg["train"]["poly_power"] == 0.9
    # integers and strings keep their types
    assert load_config(None, ["train.epochs=12", "model.arch=unet"])["train"]["epochs"] == 12


@pytest.mark.parametrize("override, key", [
    ("train.lr=-0.1", "train.lr"),
    ("data.num_classes=0", "data.num_classes"),
    ("train.weight_decay=-1e-4", "train.weight_decay"),
    ("data.workers=-1", "data.workers"),
])
def test_impossible_values_blame_the_set_argument_and_the_key(tmp_path, override, key):
    path = write(tmp_path, {"train": {"epochs": 2}})
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    message = str(error.value)
    assert message.startswith("--set %s:" % override), message
    assert key in message and str(path) not in message


def test_cross_key_errors_blame_the_set_argument_not_the_file(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"^--set train.batch_size=0: train.batch_size must be at least 1"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^--set model.kwargs.base_widht=8: model.kwargs has base_widht"):
        load_config(path, ["model.kwargs.base_widht=8"])
    # the same fault written in the file blames the file
    bad = write(tmp_path, {"train": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="^%s: train.batch_size" % bad):
        load_config(bad)
