"""evaluation.metrics against hand-computed values and a loop re-statement of the referee rule."""
import math

import numpy as np
import pytest

from evaluation import metrics
from evaluation.contract import CLASS_NAMES as LPCVC_CLASSES
from evaluation.metrics import (
    SegmentationMeter,
    confusion_matrix,
    dice_per_class,
    format_table,
    image_mean_dice,
    iou_per_class,
    referee_prepare,
)


def referee_score_by_loops(gt_images, pred_images, num_classes=14):
    """The referee's rule written out with explicit loops, as an independent oracle."""
    image_scores = []
    for gt, pred in zip(gt_images, pred_images):
        dices = []
        for c in range(num_classes):
            tp = gt_pixels = pred_pixels = 0
            for g, p in zip(gt.ravel().tolist(), pred.ravel().tolist()):
                if not 0 <= g < num_classes:
                    continue
                gt_pixels += g == c
                pred_pixels += p == c
                tp += g == c and p == c
            if gt_pixels + pred_pixels:
                dices.append(2.0 * tp / (gt_pixels + pred_pixels))
        image_scores.append(sum(dices) / len(dices))
    return sum(image_scores) / len(image_scores)


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    cm = confusion_matrix(gt, pred, num_classes=3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, expected)


def test_dice_and_iou_by_hand_with_absent_and_spurious_classes():
    # class 0: TP 2, FN 1, FP 0 | class 1: only predicted (spurious) | class 2: absent from both
    gt = np.array([0, 0, 0, 3])
    pred = np.array([0, 0, 1, 3])
    cm = confusion_matrix(gt, pred, num_classes=4)
    dice = dice_per_class(cm)
    iou = iou_per_class(cm)
    assert dice[0] == pytest.approx(2 * 2 / (3 + 2))
    assert dice[1] == 0.0 and iou[1] == 0.0
    assert math.isnan(dice[2]) and math.isnan(iou[2])
    assert dice[3] == 1.0 and iou[3] == 1.0
    assert iou[0] == pytest.approx(2 / 3)
    assert image_mean_dice(cm) == pytest.approx((0.8 + 0.0 + 1.0) / 3)


def test_no_runtime_warnings_and_all_nan_gives_nan(recwarn):
    empty = np.zeros((3, 3), np.int64)
    assert np.isnan(dice_per_class(empty)).all()
    assert np.isnan(iou_per_class(empty)).all()
    assert math.isnan(image_mean_dice(empty))
    assert len(recwarn) == 0


def test_ignore_value_is_skipped():
    gt = np.array([[255, 255], [1, 0]], np.uint8)
    pred = np.array([[13, 200], [1, 0]], np.uint8)  # ids under ignored pixels are not checked
    cm = confusion_matrix(gt, pred, num_classes=14)
    assert cm.sum() == 2
    assert cm[0, 0] == 1 and cm[1, 1] == 1


def test_out_of_range_prediction_raises():
    with pytest.raises(ValueError, match="prediction ids"):
        confusion_matrix(np.array([0, 1]), np.array([0, 14]), num_classes=14)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))


def test_referee_prepare_keeps_512_input_unchanged():
    labels = np.random.RandomState(0).randint(0, 14, size=(512, 512)).astype(np.uint8)
    out = referee_prepare(labels)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


def test_referee_prepare_uses_channel_0_of_three_channel_gt():
    labels = np.random.RandomState(1).randint(0, 14, size=(512, 512)).astype(np.uint8)
    rgb = np.stack([labels, labels + 1, np.zeros_like(labels)], axis=-1)
    np.testing.assert_array_equal(referee_prepare(rgb), labels)


def test_referee_prepare_resizes_other_sizes_to_512():
    labels = np.random.RandomState(2).randint(0, 14, size=(512, 512)).astype(np.uint8)
    # INTER_AREA halving averages 2x2 blocks, so a 2x-replicated map comes back exactly
    doubled = labels.repeat(2, axis=0).repeat(2, axis=1)
    np.testing.assert_array_equal(referee_prepare(doubled), labels)
    small = referee_prepare(np.full((100, 300, 3), 7, np.uint8))
    assert small.shape == (512, 512) and small.dtype == np.uint8
    assert (small == 7).all()


def test_meter_matches_loop_restatement_on_random_images():
    rng = np.random.RandomState(3)
    gts, preds = [], []
    for _ in range(5):
        gt = rng.randint(0, 6, size=(12, 10))  # few classes so several are absent
        gt[rng.rand(12, 10) < 0.1] = 255
        pred = np.where(rng.rand(12, 10) < 0.6, gt % 14, rng.randint(0, 8, size=(12, 10)))
        gts.append(gt)
        preds.append(pred)
    meter = SegmentationMeter(14)
    for gt, pred in zip(gts, preds):
        meter.update(gt, pred)
    expected = referee_score_by_loops(gts, preds)
    assert abs(meter.summary()["mean_dice"] - expected) < 1e-12


def test_merged_meters_equal_one_meter_over_all_images():
    rng = np.random.RandomState(4)
    gts = rng.randint(0, 14, size=(6, 16, 16))
    preds = rng.randint(0, 14, size=(6, 16, 16))
    whole = SegmentationMeter()
    whole.update_batch(gts, preds)
    first, second = SegmentationMeter(), SegmentationMeter()
    first.update_batch(gts[:2], preds[:2])
    second.update_batch(gts[2:], preds[2:])
    summed_state = {key: value + second.state()[key] for key, value in first.state().items()}
    for combined in (first.merge(second), SegmentationMeter.from_state(summed_state)):
        got, want = combined.summary(), whole.summary()
        assert got["images"] == want["images"] == 6
        assert got["mean_dice"] == pytest.approx(want["mean_dice"], abs=1e-12)
        assert got["miou"] == pytest.approx(want["miou"], abs=1e-12)
        np.testing.assert_array_equal(got["confusion_matrix"], want["confusion_matrix"])
        np.testing.assert_allclose(got["per_class_dice"], want["per_class_dice"], atol=1e-12)


def test_summary_per_class_dice_is_mean_over_images_where_defined():
    meter = SegmentationMeter(3)
    meter.update(np.array([[0, 1]]), np.array([[0, 1]]))  # dice 1, 1, NaN
    meter.update(np.array([[0, 0]]), np.array([[0, 2]]))  # dice 2/3, NaN, 0
    summary = meter.summary()
    np.testing.assert_allclose(summary["per_class_dice"], [(1 + 2 / 3) / 2, 1.0, 0.0])
    assert summary["mean_dice"] == pytest.approx((1.0 + (2 / 3 + 0) / 2) / 2)
    np.testing.assert_allclose(summary["per_class_iou"], [2 / 3, 1.0, 0.0])


def test_format_table_lists_every_class_and_totals():
    meter = SegmentationMeter()
    meter.update(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    table = format_table(meter.summary(), LPCVC_CLASSES)
    for name in LPCVC_CLASSES:
        assert name in table
    assert "mean Dice (referee): 1.0000" in table
    assert "100.00%" in table


def test_class_names_follow_design():
    assert len(LPCVC_CLASSES) == 14
    assert LPCVC_CLASSES[0] == "background" and LPCVC_CLASSES[13] == "vehicle"
    assert metrics.REFEREE_SIZE == 512


def test_format_number_shows_a_dash_for_nan_and_for_a_json_null():
    """A report's null (NaN, or a figure withheld from a failed evaluation) prints as '-', not a crash."""
    assert metrics.format_number(0.51234) == "0.5123"
    assert metrics.format_number(2.0, 2) == "2.00"
    assert metrics.format_number(float("nan")) == "-"
    assert metrics.format_number(None) == "-"
