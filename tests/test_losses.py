"""The training losses: soft Dice against a one-hot restatement, ignore pixels, class weights."""
import pytest
import torch
import torch.nn.functional as F

from lowpower.train.losses import IGNORE_INDEX, SegmentationLoss, soft_dice_loss


def one_hot_soft_dice(logits, target):
    """Per image, per class present in the target: the plain one-hot formula, loop by loop."""
    probs = logits.float().softmax(1)
    scores = []
    for image in range(logits.shape[0]):
        valid = target[image] != IGNORE_INDEX
        for cls in range(logits.shape[1]):
            truth = ((target[image] == cls) & valid).float()
            if truth.sum() == 0:
                continue
            prob = probs[image, cls] * valid
            scores.append((2 * (prob * truth).sum() + 1) / (prob.sum() + truth.sum() + 1))
    return 1 - torch.stack(scores).mean()


def random_case(seed, n=3, classes=5, size=9):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, size, size, generator=gen) * 3
    target = torch.randint(0, classes - 1, (n, size, size), generator=gen)  # last class never present
    target[0, :2] = IGNORE_INDEX
    return logits, target


@pytest.mark.parametrize("seed", range(5))
def test_soft_dice_equals_the_one_hot_formula(seed):
    logits, target = random_case(seed)
    assert torch.allclose(soft_dice_loss(logits, target), one_hot_soft_dice(logits, target), atol=1e-6)


def test_soft_dice_gradient_matches_the_one_hot_formula():
    logits, target = random_case(7)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    soft_dice_loss(a, target).backward()
    one_hot_soft_dice(b, target).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_soft_dice_ignores_ignored_pixels():
    logits, target = random_case(3)
    changed = logits.clone()
    changed[0, :, :2] = torch.randn_like(changed[0, :, :2]) * 10  # only under ignored pixels
    assert torch.allclose(soft_dice_loss(logits, target), soft_dice_loss(changed, target))


def test_soft_dice_is_near_zero_for_confident_correct_predictions():
    target = torch.randint(0, 4, (2, 8, 8))
    logits = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(logits, target) < 0.02


def test_soft_dice_counts_a_small_class_like_a_large_one():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    target[0, 0, 0] = 1  # one pixel of class 1
    logits = torch.zeros(1, 2, 10, 10)
    logits[0, 0] = 20  # everything predicted as class 0: class 1 scores 1/(1+1+...) ~ 0.5
    loss = soft_dice_loss(logits, target)
    assert 0.2 < loss < 0.3  # (1 - ~1.0 for class 0 + 1 - 0.5 for class 1) / 2


def test_segmentation_loss_adds_the_weighted_dice_term():
    logits, target = random_case(11)
    weights = torch.rand(5) + 0.5
    plain = SegmentationLoss(5, class_weights=weights)(logits, target)
    combined = SegmentationLoss(5, class_weights=weights, dice_weight=0.5)(logits, target)
    expected_ce = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)
    assert torch.allclose(plain, expected_ce)
    assert torch.allclose(combined, expected_ce + 0.5 * soft_dice_loss(logits, target))


def test_segmentation_loss_rejects_a_wrong_number_of_weights():
    with pytest.raises(ValueError, match="3 values for 5 classes"):
        SegmentationLoss(5, class_weights=[1, 2, 3])
