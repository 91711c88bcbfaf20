"""OHEM and focal loss (loss.ohem, loss.focal) against restatements written as plain loops, and their wiring:
off by default (the plain cross-entropy, bit for bit), on from the config, and a run that trains with them."""
import math

import pytest
import torch
import torch.nn.functional as F

from lowpower.config import ConfigError, load_config
from lowpower.train.hard_pixels import hard_pixel_loss, ohem_keep
from lowpower.train.losses import SegmentationLoss, criterion_from_config
from lowpower.train.trainer import main as train_main

IGNORE = 255


def batch(seed, classes=4, size=(2, 5, 6)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(size[0], classes, *size[1:], generator=generator) * 2
    target = torch.randint(0, classes, size, generator=generator)
    target[0, 0, :3] = IGNORE
    return logits, target


def pixels(logits, target):
    """(true-class probability, class id) of every valid pixel, in a plain list."""
    probs = logits.softmax(1)
    out = []
    for n in range(target.shape[0]):
        for y in range(target.shape[1]):
            for x in range(target.shape[2]):
                label = int(target[n, y, x])
                if label != IGNORE:
                    out.append(((n, y, x), float(probs[n, label, y, x]), label))
    return out


def kept_by_sorting(logits, target, thresh, min_kept):
    """mmsegmentation's rule restated: sort the probabilities, take the threshold, keep those under it."""
    listed = pixels(logits, target)
    ranked = sorted(prob for _, prob, _ in listed)
    threshold = max(ranked[min(min_kept, len(ranked) - 1)], thresh)
    return {where for where, prob, _ in listed if prob < threshold}


@pytest.mark.parametrize("thresh, min_kept", [(0.7, 5), (0.05, 20), (0.99, 1), (0.3, 1000)])
def test_ohem_keeps_the_pixels_a_sort_based_loop_keeps(thresh, min_kept):
    logits, target = batch(seed=min_kept)
    probs = logits.softmax(1).gather(1, torch.where(target == IGNORE, 0, target).unsqueeze(1)).squeeze(1)
    kept = ohem_keep(probs, target != IGNORE, thresh, min_kept)
    assert {tuple(index) for index in kept.nonzero().tolist()} == kept_by_sorting(logits, target, thresh, min_kept)
    assert int(kept.sum()) >= min(min_kept, int((target != IGNORE).sum()) - 1)  # never fewer (no ties here)


def test_the_ohem_loss_is_the_weighted_mean_over_the_kept_pixels():
    logits, target = batch(seed=3)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    kept = kept_by_sorting(logits, target, 0.6, 10)
    listed = {where: (prob, label) for where, prob, label in pixels(logits, target)}
    total = sum(weight[listed[w][1]] * -math.log(listed[w][0]) for w in kept)
    expected = total / sum(weight[listed[w][1]] for w in kept)
    assert hard_pixel_loss(logits, target, weight, IGNORE, ohem=(0.6, 10)).item() == pytest.approx(float(expected),
                                                                                                     rel=1e-5)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_equals_the_formula(gamma):
    logits, target = batch(seed=7)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5])
    listed = pixels(logits, target)
    numerator = sum(float(weight[label]) * (1 - prob) ** gamma * -math.log(prob) for _, prob, label in listed)
    expected = numerator / sum(float(weight[label]) for _, _, label in listed)
    assert hard_pixel_loss(logits, target, weight, IGNORE, focal_gamma=gamma).item() == pytest.approx(expected,
                                                                                                       rel=1e-5)


def test_gamma_zero_without_ohem_is_torchs_cross_entropy_and_the_default_loss_is_unchanged():
    logits, target = batch(seed=11)
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    reference = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    assert hard_pixel_loss(logits, target, weight, IGNORE).item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.equal(SegmentationLoss(4, weight.tolist(), ignore_index=IGNORE)(logits, target), reference)


def test_only_ignored_pixels_give_zero_with_a_gradient_path():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = hard_pixel_loss(logits, torch.full((1, 2, 2), IGNORE), ignore_index=IGNORE, ohem=(0.7, 4))
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


def test_the_config_turns_them_on_and_bounds_them():
    cfg = load_config(None, ["loss.ohem=true", "loss.ohem_thresh=0.5", "loss.ohem_min_kept=64", "loss.focal=2"])
    criterion = criterion_from_config(cfg, [], "cpu")
    assert criterion.ohem == (0.5, 64) and criterion.focal_gamma == 2.0
    assert criterion_from_config(load_config(None), [], "cpu").ohem is None
    for bad in ("loss.ohem_thresh=1.5", "loss.ohem_min_kept=0", "loss.focal=-1"):
        with pytest.raises(ConfigError):
            load_config(None, [bad])


def test_a_run_trains_with_ohem_and_focal_on(synthetic_data, train_args, tmp_path):
    data = synthetic_data(train=4, val=2, test=2, seed=3)
    argv = train_args(data, tmp_path / "run", "train.epochs=1", "loss.ohem=true", "loss.ohem_min_kept=256",
                      "loss.focal=2", "train.dice_weight=0.5")
    assert train_main(argv) == 0 and (tmp_path / "run" / "best.pt").is_file()
