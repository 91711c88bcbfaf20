"""Cityscapes on a small fake tree: label ids -> train ids, the data set, and mIoU that equals
cityscapesscripts' own pixel-level evaluation, both for label-id prediction files and for the
predictions test.py writes from a checkpoint."""
import copy
import json

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
from cityscapesscripts.helpers.labels import labels as cs_labels

import networks
from lowpower.checkpoint import save_checkpoint
from lowpower.config import load_config
from lowpower.data.build import build_dataset
from lowpower.data.cityscapes import (
    CLASS_NAMES,
    LABEL_TO_TRAIN_ID,
    CityscapesDataset,
    label_id_scores,
    score_predictions,
)
from lowpower.train import tester as test_cli

pytestmark = pytest.mark.usefixtures("single_torch_thread")

# City, sequence, frame of the fake val images (64x128, the 1:2 frame of the real 1024x2048).
FRAMES = [("aachen", "000000", "000019"), ("aachen", "000001", "000019"), ("bochum", "000000", "000313")]
SHAPE = (64, 128)
# Label ids the fake ground truth uses: every evaluated class but 'train' (31) and 'bus' (28),
# which stay absent (NaN IoU unless predicted), plus ignored ids (0 unlabeled, 4 static, 9 parking).
GT_IDS = [0, 4, 9] + [label.id for label in cs_labels if not label.ignoreInEval and label.id not in (28, 31)]


@pytest.fixture(scope="module")
def fake_cityscapes(tmp_path_factory):
    """A leftImg8bit/gtFine tree with random label ids; returns (root, ground-truth files)."""
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    gt_files = []
    for city, seq, frame in FRAMES:
        stem = "%s_%s_%s" % (city, seq, frame)
        for folder in (root / "leftImg8bit" / "val" / city, root / "gtFine" / "val" / city):
            folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, SHAPE + (3,), dtype=np.uint8)
        cv2.imwrite(str(root / "leftImg8bit" / "val" / city / (stem + "_leftImg8bit.png")), image)
        # Blocks of 8x8 pixels, so classes form regions rather than salt and pepper.
        blocks = rng.choice(GT_IDS, (SHAPE[0] // 8, SHAPE[1] // 8)).astype(np.uint8)
        gt = np.kron(blocks, np.ones((8, 8), np.uint8))
        gt_file = root / "gtFine" / "val" / city / (stem + "_gtFine_labelIds.png")
        cv2.imwrite(str(gt_file), gt)
        gt_files.append(str(gt_file))
    return root, gt_files


def cityscapesscripts_scores(prediction_dir, gt_files):
    """cityscapesscripts' pixel-level evaluation of the predictions it finds for ``gt_files``.

    Its own ``getPrediction`` pairs files by the ``CITY_SEQ_FRAME*.png`` pattern; instance-level
    scores (which need ``*_instanceIds.png``), the JSON export and printing are switched off.
    """
    args = copy.copy(cs_eval.args)
    args.predictionPath, args.predictionWalk = str(prediction_dir), None
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    predictions = [cs_eval.getPrediction(args, gt) for gt in gt_files]
    return cs_eval.evaluateImgLists(predictions, gt_files, args)


def assert_same_scores(ours_per_class_iou, ours_miou, theirs):
    """Per-class IoU (NaN where cityscapesscripts has NaN) and the class average agree."""
    for train_id, name in enumerate(CLASS_NAMES):
        expected = theirs["classScores"][name]
        if np.isnan(expected):
            assert np.isnan(ours_per_class_iou[train_id]), name
        else:
            assert ours_per_class_iou[train_id] == pytest.approx(expected, abs=1e-12), name
    assert ours_miou == pytest.approx(theirs["averageScoreClasses"], abs=1e-12)


def test_label_ids_map_to_the_19_train_ids_of_cityscapesscripts():
    assert len(CLASS_NAMES) == 19 and CLASS_NAMES[0] == "road" and CLASS_NAMES[18] == "bicycle"
    for label in cs_labels:
        if label.id >= 0:
            assert LABEL_TO_TRAIN_ID[label.id] == (255 if label.ignoreInEval else label.trainId), label.name
    assert (LABEL_TO_TRAIN_ID[34:] == 255).all()


def test_dataset_reads_the_layout_and_maps_masks(fake_cityscapes):
    root, gt_files = fake_cityscapes
    dataset = CityscapesDataset(root, "val")
    assert dataset.names == ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"]
    image, mask = dataset.load_pair(2)
    assert image.shape == SHAPE + (3,) and mask.shape == SHAPE
    np.testing.assert_array_equal(mask, LABEL_TO_TRAIN_ID[cv2.imread(gt_files[2], cv2.IMREAD_UNCHANGED)])
    assert set(np.unique(mask)) <= set(range(19)) | {255} and 255 in mask

    cfg = load_config("configs/cityscapes/deeplabv3_r50_769.yaml",
                      ["data.root=%s" % root, "data.input_size=32", "data.crop_size=24"])
    image, mask = build_dataset(cfg, "val")[0]
    assert tuple(image.shape) == (3, 32, 64) and tuple(mask.shape) == SHAPE  # scored at native size
    image, mask = build_dataset(cfg, "val", train=True)[0]
    assert tuple(image.shape) == (3, 24, 24) and tuple(mask.shape) == (24, 24)


def test_label_id_predictions_score_as_cityscapesscripts_scores_them(fake_cityscapes, tmp_path):
    root, gt_files = fake_cityscapes
    rng = np.random.default_rng(1)
    # Predictions over every label id 0..33: void ids (a miss for the GT class, no false positive),
    # 'bus' (a class absent from the GT: IoU 0), never 'train' (absent from both: NaN, skipped).
    predicted_ids = [label.id for label in cs_labels if label.id >= 0 and label.id != 31]
    for gt_file in gt_files:
        gt = cv2.imread(gt_file, cv2.IMREAD_UNCHANGED)
        pred = np.where(rng.random(gt.shape) < 0.5, gt, rng.choice(predicted_ids, gt.shape)).astype(np.uint8)
        name = gt_file.split("/")[-1].replace("_gtFine_labelIds.png", "_pred.png")
        cv2.imwrite(str(tmp_path / name), pred)

    ours = score_predictions(tmp_path, root, "val")
    theirs = cityscapesscripts_scores(tmp_path, gt_files)
    assert_same_scores(ours["per_class_iou"], ours["miou"], theirs)
    assert np.isnan(ours["per_class_iou"][CLASS_NAMES.index("train")])
    assert ours["per_class_iou"][CLASS_NAMES.index("bus")] == 0.0
    assert ours["images"] == 3


def test_nan_classes_are_left_out_of_the_mean():
    cm = np.zeros((19, 20), np.int64)
    cm[0, 0], cm[0, 19], cm[1, 0] = 6, 2, 2  # road: 6 / (6 + 2 + 2); sidewalk: 0; the rest NaN
    scores = label_id_scores(cm)
    assert scores["per_class_iou"][0] == pytest.approx(0.6) and scores["per_class_iou"][1] == 0.0
    assert np.isnan(scores["per_class_iou"][2:]).all()
    assert scores["miou"] == pytest.approx(0.3)


def tiny_checkpoint(path, root):
    """A randomly initialised 19-class UNet with a Cityscapes config, as train.py would save it."""
    cfg = load_config("configs/cityscapes/deeplabv3_r50_769.yaml", [
        "data.root=%s" % root, "data.input_size=32", "data.workers=0", "model.arch=unet",
        "model.kwargs={base_width: 4, depth: 2}", "model.pretrained=false", "train.amp=false",
        "train.channels_last=false", "eval.batch_size=2"])
    torch.manual_seed(0)
    arch_kwargs = dict(cfg["model"]["kwargs"], num_classes=19)
    model = networks.create_model("unet", **arch_kwargs)
    # Untrained, its classifier's bias would pick one class everywhere; strong weights and no
    # bias make the prediction follow the (random) image, so the maps hold many classes.
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 19][-1]
    with torch.no_grad():
        classifier.weight.normal_(0, 1)
        classifier.bias.zero_()
    save_checkpoint({"arch": "unet", "arch_kwargs": arch_kwargs, "model": model.state_dict(), "config": cfg}, path)


def test_test_py_miou_equals_cityscapesscripts_on_its_predictions(fake_cityscapes, tmp_path):
    root, gt_files = fake_cityscapes
    tiny_checkpoint(tmp_path / "best.pt", root)
    predictions, report = tmp_path / "pred", tmp_path / "scores.json"
    assert test_cli.main(["--checkpoint", str(tmp_path / "best.pt"), "--device", "cpu", "--no-progress",
                          "--save-predictions", str(predictions), "--json", str(report)]) == 0
    written = sorted(p.name for p in predictions.iterdir())
    assert written == ["aachen_000000_000019.png", "aachen_000001_000019.png", "bochum_000000_000313.png"]
    label_ids = np.concatenate([cv2.imread(str(predictions / n), cv2.IMREAD_UNCHANGED).ravel() for n in written])
    assert len(np.unique(label_ids)) >= 3  # a real mix of classes, not one constant map
    assert set(np.unique(label_ids)) <= {label.id for label in cs_labels if not label.ignoreInEval}

    ours = json.loads(report.read_text())
    theirs = cityscapesscripts_scores(predictions, gt_files)
    per_class = np.array([np.nan if v is None else v for v in ours["per_class_iou"]], np.float64)
    assert_same_scores(per_class, ours["miou"], theirs)
    assert ours["images"] == 3
