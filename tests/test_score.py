"""evaluation/score.py against hand-computed cases and a plain re-statement of the referee's rule."""
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from evaluation import contract, metrics, score
from evaluation.folders import referee_confusion_matrix, score_folders, withhold_unless_scored
from evaluation.judge import parse_reported_seconds
from evaluation.pairing import pair_by_name
from evaluation.readpng import is_plain_grey8_png, read_png_like_imageio
from evaluation.report import report_json

REPO_ROOT = Path(__file__).resolve().parent.parent
SCORE_PY = REPO_ROOT / "evaluation" / "score.py"


# ----------------------------------------------------------------------------- the oracle

def imageio_read_grey_or_rgb(path):
    """imageio.imread for an 8-bit grey or RGB PNG: Pillow's array, unconverted.

    (Checked against imageio 2.15 on Pillow 8.4; palette, 1-bit and RGBA PNGs are where the
    readers part ways and are tested separately below.)
    """
    with Image.open(path) as image:
        assert image.mode in ("L", "RGB"), image.mode
        return np.array(image)


def referee_mean_dice(pred_paths, gt_paths, num_classes=14):
    """The referee's rule, re-stated plainly: per-class loops, nothing from evaluation/."""
    def load(path):
        image = imageio_read_grey_or_rgb(path).astype(np.uint8)
        if len(image.shape) == 3:
            image = image[:, :, 0]
        image = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
        return cv2.resize(image, (512, 512), interpolation=cv2.INTER_NEAREST)

    total = 0.0
    for pred_path, gt_path in zip(sorted(pred_paths), sorted(gt_paths)):
        gt, pred = load(gt_path), load(pred_path)
        counted = gt < num_classes
        dices = []
        for c in range(num_classes):
            tp = int(np.sum((gt == c) & (pred == c) & counted))
            gt_pixels = int(np.sum((gt == c) & counted))
            pred_pixels = int(np.sum((pred == c) & counted))
            if gt_pixels + pred_pixels > 0:
                dices.append(2.0 * tp / (gt_pixels + pred_pixels))
        total += sum(dices) / len(dices)
    return total / len(gt_paths)


def blocky_labels(rng, height, width, classes, cell=16):
    """Label map of constant blocks (so INTER_AREA mixes ids at block edges, like real maps)."""
    small = rng.choice(classes, size=(height // cell + 1, width // cell + 1)).astype(np.uint8)
    return small.repeat(cell, axis=0).repeat(cell, axis=1)[:height, :width]


def write_png(path, array):
    Image.fromarray(array).save(str(path))
    return path


def make_random_set(folder, seed, count=6):
    """Random prediction/GT pairs: 1- and 3-channel GT, odd sizes, absent classes, ignore values."""
    rng = np.random.default_rng(seed)
    pred_dir, gt_dir = folder / "pred", folder / "gt"
    pred_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    sizes = [(512, 512), (300, 700), (1024, 1024), (97, 131), (512, 512), (640, 480)]
    for index in range(count):
        height, width = sizes[index % len(sizes)]
        classes = rng.choice(14, size=rng.integers(2, 8), replace=False)  # several classes absent
        gt = blocky_labels(rng, height, width, classes)
        if index % 3 == 1:
            gt[rng.random(gt.shape) < 0.05] = 255  # ignored pixels
        pred = np.where(rng.random(gt.shape) < 0.7, gt % 14, rng.integers(0, 14, gt.shape)).astype(np.uint8)
        if index % 2:
            # 3-channel GT whose channels differ: only channel 0 counts
            gt = np.dstack([gt, rng.integers(0, 255, gt.shape, dtype=np.uint8), np.zeros_like(gt)])
        if index == 4:
            pred = cv2.resize(pred, (256, 256), interpolation=cv2.INTER_NEAREST)  # predictions resized too
        name = "img_{:03d}.png".format(index)
        write_png(pred_dir / name, pred)
        write_png(gt_dir / name, gt)
    return pred_dir, gt_dir


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_dice_equals_plain_restatement_on_random_sets(tmp_path, seed):
    pred_dir, gt_dir = make_random_set(tmp_path, seed)
    report = score_folders(str(pred_dir), str(gt_dir))
    expected = referee_mean_dice(sorted(pred_dir.iterdir()), sorted(gt_dir.iterdir()))
    assert report["status"] == "scored", report["problems"]
    assert report["images"] == 6
    assert abs(report["mean_dice"] - expected) < 1e-9


def test_hand_computed_two_images(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    half = np.zeros((512, 512), np.uint8)
    half[:256] = 1
    # a.png: GT half class 1, prediction all 0 -> class 0: 2*131072/(131072+262144) = 2/3,
    # class 1: 0 (missed) -> image 1/3. b.png: perfect -> 1. Mean 2/3.
    write_png(gt_dir / "a.png", half)
    write_png(pred_dir / "a.png", np.zeros((512, 512), np.uint8))
    write_png(gt_dir / "b.png", half)
    write_png(pred_dir / "b.png", half)
    report = score_folders(str(pred_dir), str(gt_dir))
    assert report["mean_dice"] == pytest.approx(2 / 3, abs=1e-12)
    assert report["per_image_dice"] == {"a.png": pytest.approx(1 / 3), "b.png": 1.0}
    # per-class dice is the mean over images where defined: class 0 (2/3 + 1) / 2, class 1 (0 + 1) / 2
    assert report["per_class"]["background"]["dice"] == pytest.approx(5 / 6)
    assert report["per_class"]["avalanche"]["dice"] == pytest.approx(0.5)
    assert report["per_class"]["vehicle"]["dice"] is None  # absent from both maps: NaN -> null
    # dataset IoU from the summed matrix: class 0 TP 262144, GT 262144, pred 393216
    assert report["per_class"]["background"]["iou"] == pytest.approx(262144 / 393216)
    assert report["confusion_matrix"][1][0] == 131072 and report["confusion_matrix"][1][1] == 131072


def test_json_report_content(tmp_path):
    pred_dir, gt_dir = make_random_set(tmp_path, 5, count=3)
    out = tmp_path / "report.json"
    status = score.main(["-i", str(pred_dir), "-g", str(gt_dir), "--json", str(out), "-q"])
    data = json.loads(out.read_text())
    assert status == 0
    assert data["status"] == "scored" and data["exit_status"] == 0 and data["images"] == 3
    assert 0 < data["mean_dice"] <= 1 and 0 < data["miou"] <= 1
    assert set(data["per_class"]) == set(contract.CLASS_NAMES)
    assert set(data["per_class"]["background"]) >= {"id", "dice", "iou", "gt_pixels", "pred_pixels"}
    assert np.array(data["confusion_matrix"]).shape == (14, 14)
    assert sorted(data["per_image_dice"]) == ["img_000.png", "img_001.png", "img_002.png"]
    assert data["missing"] == [] and data["extra"] == [] and data["referee_pairing_differs"] is False


def test_pairs_by_name_and_reports_missing_and_extra(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    labels = np.zeros((512, 512), np.uint8)
    for name in ("a.png", "b.png", "c.png"):
        write_png(gt_dir / name, labels)
    for name in ("a.png", "b.png", "z.png"):
        write_png(pred_dir / name, labels)
    out = tmp_path / "r.json"
    status = score.main(["-i", str(pred_dir), "-g", str(gt_dir), "--json", str(out)])
    data = json.loads(out.read_text())
    assert status == 1 and data["status"] == "failed"
    assert data["missing"] == ["c.png"] and data["extra"] == ["z.png"]
    # a failed report ranks nothing: the pairs that exist are scored, but only under "partial"
    assert data["mean_dice"] is None and data["miou"] is None
    assert data["partial"]["mean_dice"] == 1.0 and data["partial"]["images"] == 2 and data["partial"]["of"] == 3
    assert data["images"] == 2 and sorted(data["per_image_dice"]) == ["a.png", "b.png"]
    assert data["referee_pairing_differs"] is True
    assert data["referee_mispairs"] == [["z.png", "c.png"]]
    text = capsys.readouterr().out
    assert "c.png" in text and "z.png" in text and "sorted order" in text


def test_same_names_different_order_never_mispairs():
    pairing = pair_by_name(["b.png", "a.png"], ["a.png", "b.png"])
    assert pairing["paired"] == ["a.png", "b.png"] and pairing["referee_mispairs"] == []


def test_out_of_range_prediction_is_an_error_naming_the_file(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    write_png(gt_dir / "ok.png", np.zeros((512, 512), np.uint8))
    write_png(pred_dir / "ok.png", np.zeros((512, 512), np.uint8))
    write_png(gt_dir / "bad_one.png", np.zeros((512, 512), np.uint8))
    bad = np.zeros((512, 512), np.uint8)
    bad[0, :3] = [14, 200, 13]
    write_png(pred_dir / "bad_one.png", bad)
    report = score_folders(str(pred_dir), str(gt_dir))
    assert report["status"] == "failed"
    assert "bad_one.png" in report["reason"] and "14, 200" in report["reason"]
    assert report["images"] == 1 and list(report["per_image_dice"]) == ["ok.png"]


def test_failed_report_carries_no_ranking_figure(tmp_path):
    """Fault 9 of issue 12: one good mask of three gave status failed and mean_dice 1.0 (a subset)."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    half = np.zeros((512, 512), np.uint8)
    half[:256] = 3
    for name in ("a.png", "b.png", "c.png"):
        write_png(gt_dir / name, half)
    write_png(pred_dir / "a.png", half)
    out = tmp_path / "r.json"
    assert score.main(["-i", str(pred_dir), "-g", str(gt_dir), "--json", str(out), "-q"]) == 1
    data = json.loads(out.read_text())
    assert data["status"] == "failed"
    assert data["mean_dice"] is None and data["miou"] is None
    assert all(row["dice"] is None and row["iou"] is None for row in data["per_class"].values())
    assert data["partial"] == {"mean_dice": 1.0, "miou": 1.0, "images": 1, "of": 3, "note": data["partial"]["note"]}
    assert "not a result" in data["partial"]["note"]
    # counts and the per-image value of the named file stay: they are facts about that file
    assert data["per_class"]["building_damaged"]["gt_pixels"] == 131072
    assert data["per_image_dice"] == {"a.png": 1.0}


def test_scored_report_has_no_partial_and_keeps_per_class(tmp_path):
    pred_dir, gt_dir = make_random_set(tmp_path, 11, count=2)
    report = score_folders(str(pred_dir), str(gt_dir))
    assert report["status"] == "scored" and "partial" not in report
    assert report["mean_dice"] > 0 and report["per_class"]["background"]["dice"] is not None


def test_withhold_is_idempotent_and_keeps_the_first_partial():
    report = {"status": "failed", "mean_dice": 0.4, "miou": 0.3, "score": 9.0, "per_image_dice": {"a.png": 0.4},
              "gt_images": 2, "per_class": {"background": {"dice": 0.5, "iou": 0.4, "gt_pixels": 7}}}
    withhold_unless_scored(report)
    withhold_unless_scored(report)
    assert report["mean_dice"] is None and report["score"] is None and report["miou"] is None
    assert report["partial"]["mean_dice"] == 0.4 and report["partial"]["of"] == 2
    assert report["per_class"]["background"] == {"dice": None, "iou": None, "gt_pixels": 7}


def test_strict_size_rejects_non_512_predictions(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    write_png(gt_dir / "a.png", np.zeros((512, 512), np.uint8))
    write_png(pred_dir / "a.png", np.zeros((256, 300), np.uint8))
    assert score_folders(str(pred_dir), str(gt_dir))["status"] == "scored"  # the referee resizes
    strict = score_folders(str(pred_dir), str(gt_dir), expect_size=512)
    assert strict["status"] == "failed" and "300x256" in strict["reason"]


def test_undefined_image_makes_the_mean_nan_like_the_referee(tmp_path):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    write_png(gt_dir / "a.png", np.full((512, 512), 255, np.uint8))  # nothing counted
    write_png(pred_dir / "a.png", np.zeros((512, 512), np.uint8))
    write_png(gt_dir / "b.png", np.zeros((512, 512), np.uint8))
    write_png(pred_dir / "b.png", np.zeros((512, 512), np.uint8))
    report = score_folders(str(pred_dir), str(gt_dir))
    assert report["mean_dice"] is None and report["per_image_dice"]["a.png"] is None
    assert any("NaN" in warning for warning in report["warnings"])
    json.loads(report_json(report))  # still valid JSON (no NaN literal)


def test_reader_matches_imageio_conversions(tmp_path):
    """imageio 2.x turns palettes into colours, 1-bit into 0/255, keeps 16-bit and RGBA."""
    ids = np.random.default_rng(0).integers(0, 14, (20, 30)).astype(np.uint8)
    colour = Image.fromarray(ids).convert("P")
    colour_table = [(i * 37 % 256, i * 11 % 256, i * 5 % 256) for i in range(256)]
    colour.putpalette([v for rgb in colour_table for v in rgb])
    colour.save(str(tmp_path / "palette.png"))
    got = read_png_like_imageio(str(tmp_path / "palette.png"))
    assert got.shape == (20, 30, 4)  # RGBA of the palette colours, not the indices
    np.testing.assert_array_equal(got[..., 0], np.array(colour_table)[ids, 0])
    grey = Image.fromarray(ids).convert("P")
    grey.putpalette([min(255, 2 * i) for i in range(256) for _ in range(3)])
    grey.save(str(tmp_path / "grey_palette.png"))
    np.testing.assert_array_equal(read_png_like_imageio(str(tmp_path / "grey_palette.png")), ids * 2)
    Image.fromarray((ids > 6).astype(np.uint8) * 255).convert("1").save(str(tmp_path / "bits.png"))
    np.testing.assert_array_equal(read_png_like_imageio(str(tmp_path / "bits.png")), (ids > 6) * 255)
    cv2.imwrite(str(tmp_path / "deep.png"), ids.astype(np.uint16) + 512)
    deep = read_png_like_imageio(str(tmp_path / "deep.png"))
    assert deep.dtype == np.uint16
    np.testing.assert_array_equal(deep, ids.astype(np.uint16) + 512)
    rgba = np.dstack([ids, ids + 1, ids + 2, np.full_like(ids, 255)])
    write_png(tmp_path / "rgba.png", rgba)
    np.testing.assert_array_equal(read_png_like_imageio(str(tmp_path / "rgba.png")), rgba)
    # cv2 would give BGR(A): its channel 0 is not the referee's channel 0
    assert not np.array_equal(cv2.imread(str(tmp_path / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 0], ids)


def test_fast_confusion_matrix_equals_metrics():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 16, (64, 64)).astype(np.uint8)
    gt[gt == 15] = 255
    pred = rng.integers(0, 14, (64, 64)).astype(np.uint8)
    np.testing.assert_array_equal(referee_confusion_matrix(gt, pred),
                                  metrics.confusion_matrix(gt, pred))


def test_meter_update_confusion_matrix_equals_update():
    rng = np.random.default_rng(4)
    by_maps, by_matrix = metrics.SegmentationMeter(), metrics.SegmentationMeter()
    for _ in range(3):
        gt, pred = rng.integers(0, 14, (2, 32, 32))
        by_maps.update(gt, pred)
        by_matrix.update_confusion_matrix(metrics.confusion_matrix(gt, pred))
    assert by_maps.summary()["mean_dice"] == by_matrix.summary()["mean_dice"]
    with pytest.raises(ValueError, match="14x14"):
        by_matrix.update_confusion_matrix(np.zeros((3, 3)))


@pytest.mark.parametrize("text, seconds, complaint", [
    ("12.5\n", 12.5, None),
    ("  0.001234  \n", 0.001234, None),
    ("", None, "empty"),
    ("12\n", None, "no number"),
    ("1.5\n2.5\n", None, "2 numbers"),
    ("time: 1.5\n", None, "besides"),
    ("1.5e-05\n", None, "besides"),
])
def test_parse_reported_seconds(text, seconds, complaint):
    got, problem = parse_reported_seconds(text)
    assert got == seconds
    assert (problem is None) if complaint is None else (complaint in problem)


def test_runs_as_a_script_and_reports_json(tmp_path):
    pred_dir, gt_dir = make_random_set(tmp_path, 7, count=2)
    out = tmp_path / "nested" / "r.json"
    result = subprocess.run([sys.executable, str(SCORE_PY), "-i", str(pred_dir), "-g", str(gt_dir),
                             "--json", str(out)], cwd=str(tmp_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mean Dice (referee)" in result.stdout and "SCORED" in result.stdout
    assert math.isclose(json.loads(out.read_text())["mean_dice"],
                        referee_mean_dice(sorted(pred_dir.iterdir()), sorted(gt_dir.iterdir())),
                        abs_tol=1e-9)


def test_missing_folder_fails_cleanly(tmp_path):
    out = tmp_path / "r.json"
    assert score.main(["-i", str(tmp_path / "nope"), "-g", str(tmp_path), "--json", str(out), "-q"]) == 1
    assert "no such folder" in json.loads(out.read_text())["reason"]


def test_grey_fast_path_equals_pillow(tmp_path):
    labels = np.random.default_rng(6).integers(0, 256, (64, 80)).astype(np.uint8)
    for name, save in (("cv2.png", lambda p: cv2.imwrite(str(p), labels)),
                       ("pil.png", lambda p: Image.fromarray(labels).save(str(p), optimize=True))):
        path = tmp_path / name
        save(path)
        assert is_plain_grey8_png(path.read_bytes())
        got = read_png_like_imageio(str(path))
        assert got.dtype == np.uint8 and got.shape == (64, 80)
        np.testing.assert_array_equal(got, np.array(Image.open(str(path))))
    Image.fromarray(labels).save(str(tmp_path / "trns.png"), transparency=3)
    assert not is_plain_grey8_png((tmp_path / "trns.png").read_bytes())  # Pillow path
    np.testing.assert_array_equal(read_png_like_imageio(str(tmp_path / "trns.png")), labels)
    write_png(tmp_path / "rgb.png", np.dstack([labels] * 3))
    assert not is_plain_grey8_png((tmp_path / "rgb.png").read_bytes())
