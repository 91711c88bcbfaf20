"""drop_small_classes: the per-image small-class filter shared by validation, test.py and the package."""
import torch

from lowpower.engine import predict_masks
from solution.main import drop_small_classes


def logits_with_blob(blob_pixels, side=20, classes=4):
    """Class 1 everywhere, class 2 on the first `blob_pixels` pixels, class 3 second best there."""
    logits = torch.zeros(1, classes, side * side)
    logits[0, 1] = 2.0
    logits[0, 2, :blob_pixels] = 5.0
    logits[0, 3, :blob_pixels] = 3.0
    return logits.view(1, classes, side, side)


def test_a_small_class_goes_to_its_pixels_next_best_class():
    logits = logits_with_blob(4)  # 4 of 400 pixels = 1 %
    kept = drop_small_classes(logits, 0.005).argmax(1)
    assert (kept[0, 0, :4] == 2).all()
    dropped = drop_small_classes(logits, 0.02, rounds=1).argmax(1)
    assert (dropped[0, 0, :4] == 3).all(), "the blob takes its second most likely class, not background"
    assert (dropped == 2).sum() == 0


def test_a_second_round_catches_classes_left_small_by_the_first():
    logits = logits_with_blob(4)
    # class 3 is the runner-up on the blob only, so after class 2 goes it is small too
    assert (drop_small_classes(logits, 0.02, rounds=2).argmax(1) == 3).sum() == 0
    assert (drop_small_classes(logits, 0.02, rounds=1).argmax(1) == 3).sum() == 4


def test_zero_disables_and_images_are_independent():
    logits = torch.cat([logits_with_blob(4), logits_with_blob(200)])
    assert drop_small_classes(logits, 0.0) is logits
    result = drop_small_classes(logits, 0.02).argmax(1)
    assert (result[0] == 2).sum() == 0
    assert (result[1] == 2).sum() == 200, "half the image is not small"


def test_fp16_logits_stay_finite_through_upsampling():
    logits = logits_with_blob(4).half()
    masked = drop_small_classes(logits, 0.02)
    assert torch.isfinite(masked.float()).all()
    up = torch.nn.functional.interpolate(masked.float(), size=(40, 40), mode="bilinear", align_corners=False)
    assert torch.isfinite(up).all()


def test_predict_masks_applies_the_filter_before_upsampling():
    logits = logits_with_blob(4)
    assert (predict_masks(logits, (40, 40)) == 2).any()
    masks = predict_masks(logits, (40, 40), min_class_area=0.02)
    assert masks.shape == (1, 40, 40) and not (masks == 2).any()
