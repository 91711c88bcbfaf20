"""The training-trick study's arms (configs/synthetic/recipe/): each is the baseline plus its own keys
only, and the baseline is the demo recipe at 16 epochs, so a difference in the table is the trick's."""
from pathlib import Path

import pytest

from lowpower.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "recipe"
EMA = {"train.ema", "train.ema_decay"}  # train.ema_warmup stays at its default, 100
OHEM = {"loss.ohem", "loss.ohem_min_kept"}  # loss.ohem_thresh stays at its default, 0.7
ARMS = {"ema": EMA, "ohem": OHEM, "focal": {"loss.focal"}, "photometric": {"data.photometric", "data.jitter"},
        "all": EMA | OHEM}


def flat(cfg):
    return {"%s.%s" % (section, key): value for section, keys in cfg.items() for key, value in keys.items()}


def test_every_arm_file_is_listed_here():
    assert {path.stem for path in RECIPES.glob("*.yaml")} == set(ARMS) | {"baseline"}


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_an_arm_is_the_baseline_plus_its_own_keys(arm):
    baseline, config = flat(load_config(RECIPES / "baseline.yaml")), flat(load_config(RECIPES / (arm + ".yaml")))
    assert {key for key in config if config[key] != baseline[key]} == ARMS[arm]


def test_the_baseline_is_the_demo_recipe_at_16_epochs():
    demo = flat(load_config(RECIPES.parent / "demo_unet.yaml"))
    baseline = flat(load_config(RECIPES / "baseline.yaml"))
    assert {key for key in demo if demo[key] != baseline[key]} == {"train.epochs"}
    assert baseline["train.epochs"] == 16 and baseline["train.val_every"] == 16
