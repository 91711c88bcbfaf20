"""Small-class removal (solution.postprocess.drop_small_classes / segment): shared by validation, test.py
and the package."""
import torch
import torch.nn.functional as F

from lowpower.train.engine import predict_masks
from solution.postprocess import class_areas, class_ids, drop_small_classes, segment


def logits_with_blob(blob_pixels, side=20, classes=4):
    """Class 1 everywhere, class 2 on the first `blob_pixels` pixels, class 3 second best there."""
    logits = torch.zeros(1, classes, side * side)
    logits[0, 1] = 2.0
    logits[0, 2, :blob_pixels] = 5.0
    logits[0, 3, :blob_pixels] = 3.0
    return logits.view(1, classes, side, side)


def dropped(logits, fraction, rounds=2):
    return drop_small_classes(class_ids(logits), logits, fraction, rounds)


def masked_argmax(logits, fraction, rounds):
    """The plain statement: push small classes' logits out of reach, take the argmax, repeat."""
    limit = fraction * logits.shape[2] * logits.shape[3]
    for _ in range(rounds):
        ids = logits.argmax(1)
        areas = F.one_hot(ids, logits.shape[1]).sum((1, 2))
        small = (areas > 0) & (areas < limit)
        logits = logits.masked_fill(small[:, :, None, None], -1e4)
    return logits.argmax(1)


def test_a_small_class_goes_to_its_pixels_next_best_class():
    logits = logits_with_blob(4)  # 4 of 400 pixels = 1 %
    kept = dropped(logits, 0.005)
    assert (kept[0, 0, :4] == 2).all()
    once = dropped(logits, 0.02, rounds=1)
    assert (once[0, 0, :4] == 3).all(), "the blob takes its second most likely class, not background"
    assert (once == 2).sum() == 0


def test_a_second_round_catches_classes_left_small_by_the_first():
    logits = logits_with_blob(4)
    # class 3 is the runner-up on the blob only, so after class 2 goes it is small too
    assert (dropped(logits, 0.02, rounds=2) == 3).sum() == 0
    assert (dropped(logits, 0.02, rounds=1) == 3).sum() == 4


def test_zero_disables_and_images_are_independent():
    logits = torch.cat([logits_with_blob(4), logits_with_blob(200)])
    ids = class_ids(logits)
    assert drop_small_classes(ids, logits, 0.0) is ids
    result = dropped(logits, 0.02)
    assert (result[0] == 2).sum() == 0
    assert (result[1] == 2).sum() == 200, "half the image is not small"


def test_reassigning_only_the_dropped_pixels_equals_masking_every_logit():
    gen = torch.Generator().manual_seed(0)
    for fraction in (0.01, 0.03, 0.08, 0.9):  # 0.9: every class small at first
        logits = torch.randn(3, 6, 24, 24, generator=gen)
        logits[:, 0] += 1.5  # a dominant class, the rest scattered
        for rounds in (1, 2, 3):
            expected = masked_argmax(logits, fraction, rounds)
            assert torch.equal(dropped(logits, fraction, rounds).long(), expected)


def test_class_areas_counts_each_image_separately():
    ids = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 0]]], dtype=torch.uint8)
    assert class_areas(ids, 3).tolist() == [[1, 3, 0], [1, 0, 3]]


def test_fp16_logits_are_handled():
    logits = logits_with_blob(4).half()
    assert (dropped(logits, 0.02) == 2).sum() == 0


def test_areas_are_counted_at_the_scored_size():
    # one isolated winning pixel at 8x8 is 1/64 of the image there, far less after upsampling
    logits = torch.zeros(1, 3, 8, 8)
    logits[0, 0] = 1.0
    logits[0, 2, 4, 4] = 1.2
    at_model_size = (class_ids(logits) == 2).float().mean().item()
    upsampled = segment(logits, 64)
    assert at_model_size > 0.01 and 0 < (upsampled == 2).float().mean().item() < 0.01
    assert not (segment(logits, 64, 0.01) == 2).any()


def test_predict_masks_upsamples_then_filters():
    logits = logits_with_blob(4)
    assert (predict_masks(logits, (40, 40)) == 2).any()
    masks = predict_masks(logits, (40, 40), min_class_area=0.02)
    assert masks.shape == (1, 40, 40) and not (masks == 2).any()
    assert predict_masks(logits, (30, 50)).shape == (1, 30, 50)
