"""The built-in synthetic data set: layout, determinism, class coverage, imbalance, difficulty."""
import hashlib

import cv2
import numpy as np
import pytest

from evaluation.metrics import confusion_matrix, image_mean_dice
from lowpower.data.lpcvc import LPCVCDataset
from lowpower.data.synthetic import SPLIT_DIRS, generate
from lowpower.data.synthetic.cli import main as synthetic_main
from lowpower.data.synthetic.colour_baseline import fit_class_means, predict_by_colour
from lowpower.data.synthetic.scene import SCENES, make_scene

NUM_CLASSES = 14


def digest(folder):
    """SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn"), train=4, val=2, test=2, seed=7, size=128,
                    workers=1, progress=False)


def test_layout_is_the_competition_one(small_set):
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        img_dir, gt_dir = (small_set / d for d in SPLIT_DIRS[split])
        images, masks = sorted(p.name for p in img_dir.glob("*.png")), sorted(p.name for p in gt_dir.glob("*.png"))
        assert len(images) == count and images == masks
    assert (small_set / "test/IMG").is_dir() and (small_set / "LPCVC_Val/GT/val").is_dir()
    assert (small_set / ".complete").is_file()


def test_gt_is_one_channel_class_ids(small_set):
    for path in (small_set / "LPCVC_Train/GT/train").glob("*.png"):
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert mask.ndim == 2 and mask.dtype == np.uint8 and mask.max() < NUM_CLASSES
        image = cv2.imread(str(small_set / "LPCVC_Train/IMG/train" / path.name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (128, 128, 3)
    assert len(LPCVCDataset(small_set, "train")) == 4, "the project's own loader reads it"


def test_same_seed_gives_byte_identical_files(small_set, tmp_path):
    again = generate(tmp_path / "again", train=4, val=2, test=2, seed=7, size=128, workers=2, progress=False)
    assert digest(again) == digest(small_set), "a second run (and more workers) must not change a byte"
    other = generate(tmp_path / "other", train=4, val=0, test=0, seed=8, size=128, workers=1, progress=False)
    ours = {k: v for k, v in digest(small_set).items() if "train" in k}
    assert digest(other) != ours


def test_more_images_keep_the_first_ones(small_set, tmp_path):
    bigger = generate(tmp_path / "bigger", train=5, val=2, test=2, seed=7, size=128, workers=1, progress=False)
    first = digest(small_set)
    assert {k: v for k, v in digest(bigger).items() if k in first} == first


@pytest.fixture(scope="module")
def scenes():
    """Two 256-pixel scenes of every type: (scene name, image, label)."""
    rng = np.random.default_rng(11)
    return [(name,) + make_scene(rng, (256, 256), name) for name in SCENES for _ in range(2)]


def test_every_class_appears(scenes):
    seen = set()
    for _, _, label in scenes:
        seen.update(np.unique(label).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_background_dominates_and_people_and_vehicles_are_small(scenes):
    counts = np.zeros(NUM_CLASSES)
    for _, _, label in scenes:
        counts += np.bincount(label.ravel(), minlength=NUM_CLASSES)
    share = counts / counts.sum()
    assert share[0] == share.max() and share[0] > 0.4
    for small in (10, 13):  # person, vehicle
        assert share[small] < 0.02, "person and vehicle stay rare, as in the real data"


def test_confusable_pairs_share_colours():
    """Intact and damaged roofs, water and ice plates draw from the same palettes."""
    from lowpower.data.synthetic import textures

    rng = np.random.default_rng(0)
    roof_colour = textures.pick(rng, textures.ROOF_COLOURS, 0)
    rubble = textures.rubble(rng, (64, 64), roof_colour)
    roof = textures.roof(np.random.default_rng(0), (64, 64), 30)
    assert np.abs(rubble.reshape(-1, 3).mean(0) - roof.reshape(-1, 3).mean(0)).max() < 60


def test_cli_writes_the_data_set(tmp_path, capsys):
    synthetic_main(["--out", str(tmp_path / "d"), "--train", "2", "--val", "1", "--test", "1",
                    "--size", "64", "--workers", "1"])
    assert len(list((tmp_path / "d/test/GT").glob("*.png"))) == 1
    assert "wrote 2 train, 1 val, 1 test" in capsys.readouterr().err


@pytest.mark.slow  # generates 110 full-size images
def test_a_colour_classifier_stays_at_or_below_045_on_the_val_split(tmp_path):
    """The demo's val split (seed 0, the first 50 images) defeats a per-pixel colour lookup.

    Images are pure functions of (seed, split, index), so these are the very images
    ``make demo`` validates on. The class means are fitted on 60 training images: they
    settle long before 300.
    """
    root = generate(tmp_path, train=60, val=50, test=0, seed=0, workers=2, progress=False)
    train, val = LPCVCDataset(root, "train"), LPCVCDataset(root, "val")
    means = fit_class_means(train.load_pair(i) for i in range(len(train)))
    assert not np.isnan(means).any(), "every class occurs in 60 training images"
    scores = []
    for i in range(len(val)):
        image, mask = val.load_pair(i)
        scores.append(image_mean_dice(confusion_matrix(mask, predict_by_colour(image, means), NUM_CLASSES)))
    baseline = float(np.mean(scores))
    print("colour baseline, val mean Dice: %.4f" % baseline)
    assert 0.0 < baseline <= 0.45


def test_generate_refuses_a_folder_holding_other_files(tmp_path):
    from lowpower.data.synthetic import ForeignFilesError

    root = tmp_path / "photos"
    (root / "LPCVC_Val/IMG/val").mkdir(parents=True)
    own = root / "LPCVC_Val/IMG/val/val_00000.png"   # a generator-like name, but in a folder of user data
    own.write_bytes(b"mine")
    (root / "LPCVC_Val/IMG/val/DSC_0001.JPG").write_bytes(b"mine too")
    with pytest.raises(ForeignFilesError, match="photos.*DSC_0001.JPG"):
        generate(root, train=1, val=1, test=0, size=64, workers=1, progress=False)
    assert own.read_bytes() == b"mine" and not (root / "LPCVC_Train").exists()


def test_colour_baseline_labels_each_pixel_with_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    means = rng.uniform(0, 255, (14, 3))
    means[[3, 9]] = np.nan  # classes never seen in the fit are never predicted
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    # An independent restatement: every pixel against every seen class, by the definition.
    pixels = image.reshape(-1, 3).astype(np.float64)
    seen = [c for c in range(14) if not np.isnan(means[c]).any()]
    nearest = [min(seen, key=lambda c: ((p - means[c]) ** 2).sum()) for p in pixels]
    assert predict_by_colour(image, means).reshape(-1).tolist() == nearest
