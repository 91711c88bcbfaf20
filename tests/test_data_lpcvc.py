"""Tests for lowpower.data.lpcvc: folder layouts, pairing by name, and the errors users will meet."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lowpower.data.lpcvc import DataError, LPCVCDataset, find_split_dirs


def write_pair(img_dir, gt_dir, stem, value=0, size=(8, 8), img_ext=".png", gt_channels=1,
               mask_value=None):
    """Write an image whose pixels all equal ``value`` (BGR = value, value+1, value+2) and a mask
    whose ids all equal ``mask_value`` (default ``value``), so a test can tell which image a mask
    was paired with."""
    img_dir, gt_dir = Path(img_dir), Path(gt_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    h, w = size
    bgr = np.empty((h, w, 3), np.uint8)
    bgr[:] = (value, value + 1, value + 2)
    assert cv2.imwrite(str(img_dir / (stem + img_ext)), bgr)
    mask = np.full((h, w), value if mask_value is None else mask_value, np.uint8)
    if gt_channels > 1:
        mask = np.repeat(mask[:, :, None], gt_channels, axis=2)
    assert cv2.imwrite(str(gt_dir / (stem + ".png")), mask)


@pytest.mark.parametrize(
    "split, img_rel, gt_rel",
    [
        ("train", "LPCVC_Train/IMG/train", "LPCVC_Train/GT/train"),
        ("train", "LPCVC_Train_Updated/IMG/train", "LPCVC_Train_Updated/GT/train"),
        ("train", "LPCVC_Train/IMG/train", "LPCVC_Train/GT_Updated/train"),
        ("train", "LPCVC_Train_Updated/IMG/train", "LPCVC_Train_Updated/GT_Updated/train"),
        ("val", "LPCVC_Val/IMG/val", "LPCVC_Val/GT/val"),
        ("val", "LPCVC_Val_Updated/IMG/val", "LPCVC_Val_Updated/GT_Updated/val"),
        ("test", "test/IMG", "test/GT"),
        ("val", "IMG", "GT"),
        ("train", "IMG/train", "GT/train"),
    ],
)
def test_find_split_dirs_layouts(tmp_path, split, img_rel, gt_rel):
    write_pair(tmp_path / img_rel, tmp_path / gt_rel, "a")
    assert find_split_dirs(tmp_path, split) == (tmp_path / img_rel, tmp_path / gt_rel)
    assert len(LPCVCDataset(str(tmp_path), split)) == 1


def test_updated_folders_win_when_both_exist(tmp_path):
    write_pair(tmp_path / "LPCVC_Train/IMG/train", tmp_path / "LPCVC_Train/GT/train", "a")
    (tmp_path / "LPCVC_Train/GT_Updated/train").mkdir(parents=True)
    _, gt_dir = find_split_dirs(tmp_path, "train")
    assert gt_dir == tmp_path / "LPCVC_Train/GT_Updated/train"


def test_missing_layout_lists_tried_paths(tmp_path):
    (tmp_path / "LPCVC_Train/IMG/train").mkdir(parents=True)  # image folder without GT
    with pytest.raises(FileNotFoundError) as info:
        find_split_dirs(tmp_path, "train")
    message = str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    for rel in ("LPCVC_Train/IMG/train", "LPCVC_Train/GT/train", "LPCVC_Train_Updated/GT_Updated/train",
                "IMG", "GT"):
        assert str(tmp_path / rel) in message
    assert "Expected" in message


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown split"):
        find_split_dirs(tmp_path, "training")


def test_item_types_shapes_and_rgb_order(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a", value=5, size=(6, 10))
    image, mask = LPCVCDataset(tmp_path, "val")[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 6, 10)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == (6, 10)
    assert image[:, 0, 0].tolist() == [7, 6, 5]  # written as BGR (5, 6, 7)
    assert mask.unique().tolist() == [5]


def test_pairs_by_name_not_listing_order(tmp_path, monkeypatch):
    img_dir, gt_dir = tmp_path / "IMG", tmp_path / "GT"
    for label, stem in enumerate(["c", "a", "b10", "b2"]):
        write_pair(img_dir, gt_dir, stem, value=40 * label, mask_value=label,
                   img_ext=".jpg" if stem == "a" else ".png")
    (gt_dir / "notes.txt").write_text("not an image: ignored")
    real_iterdir = Path.iterdir

    def gt_listed_backwards(self):
        entries = list(real_iterdir(self))
        return iter(sorted(entries, reverse=True) if self == gt_dir else entries)

    monkeypatch.setattr(Path, "iterdir", gt_listed_backwards)
    ds = LPCVCDataset(tmp_path, "train")
    assert ds.names == ["a", "b10", "b2", "c"]
    for name, (img_path, gt_path) in zip(ds.names, ds.paths):
        assert img_path.stem == gt_path.stem == name
    for i in range(len(ds)):
        image, mask = ds[i]
        # JPEG is lossy, hence the rounding: blue = 40 * mask id for a correctly paired item.
        assert round(image[2].float().mean().item() / 40) == int(mask[0, 0])


def test_three_and_four_channel_gt_keep_channel_0(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "rgb", value=7, gt_channels=3)
    write_pair(tmp_path / "IMG", tmp_path / "GT", "rgba", value=9, gt_channels=4)
    ds = LPCVCDataset(tmp_path, "train")
    assert [ds[i][1].unique().tolist() for i in range(2)] == [[7], [9]]
    assert ds[0][1].ndim == 2


def test_grayscale_image_becomes_rgb(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    cv2.imwrite(str(tmp_path / "IMG" / "a.png"), np.full((8, 8), 40, np.uint8))
    image, _ = LPCVCDataset(tmp_path, "train")[0]
    assert tuple(image.shape) == (3, 8, 8) and image.unique().tolist() == [40]


def test_missing_mask_names_the_image_and_folder(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    cv2.imwrite(str(tmp_path / "IMG" / "lonely.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError) as info:
        LPCVCDataset(tmp_path, "train")
    assert "lonely.png" in str(info.value) and str(tmp_path / "GT") in str(info.value)


def test_mask_without_image_is_an_error_and_long_lists_are_cut(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    for i in range(7):
        cv2.imwrite(str(tmp_path / "GT" / ("extra%d.png" % i)), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError) as info:
        LPCVCDataset(tmp_path, "train")
    message = str(info.value)
    assert "extra0.png" in message and "extra4.png" in message and "extra6.png" not in message
    assert "and 2 more" in message


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "IMG").mkdir()
    (tmp_path / "GT").mkdir()
    with pytest.raises(DataError, match="no images"):
        LPCVCDataset(tmp_path, "train")


def test_unreadable_image_names_the_file(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    (tmp_path / "IMG" / "a.png").write_bytes(b"not a png")
    ds = LPCVCDataset(tmp_path, "train")
    with pytest.raises(ValueError, match="a.png"):
        ds[0]


def test_unreadable_mask_names_the_file(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    (tmp_path / "GT" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="mask .*a.png"):
        LPCVCDataset(tmp_path, "train")[0]


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a", size=(8, 8))
    cv2.imwrite(str(tmp_path / "GT" / "a.png"), np.zeros((4, 6), np.uint8))
    with pytest.raises(DataError) as info:
        LPCVCDataset(tmp_path, "train")[0]
    message = str(info.value)
    assert str(tmp_path / "IMG" / "a.png") in message and str(tmp_path / "GT" / "a.png") in message
    assert "8x8" in message and "4x6" in message


def test_label_id_too_large_names_file_and_ids(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    mask = np.zeros((8, 8), np.uint8)
    mask[0, :3] = (14, 200, 255)
    cv2.imwrite(str(tmp_path / "GT" / "a.png"), mask)
    with pytest.raises(DataError) as info:
        LPCVCDataset(tmp_path, "train")[0]
    message = str(info.value)
    assert "a.png" in message and "[14, 200]" in message and "255]" not in message


def test_ignore_index_is_allowed(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a")
    mask = np.full((8, 8), 255, np.uint8)
    mask[0, 0] = 13
    cv2.imwrite(str(tmp_path / "GT" / "a.png"), mask)
    assert LPCVCDataset(tmp_path, "train")[0][1].unique().tolist() == [13, 255]


def test_transforms_receive_numpy_rgb_and_uint8_mask(tmp_path):
    write_pair(tmp_path / "IMG", tmp_path / "GT", "a", value=3, size=(4, 5))
    seen = {}

    def record(image, mask):
        seen.update(image=image, mask=mask)
        return "done"

    assert LPCVCDataset(tmp_path, "train", transforms=record)[0] == "done"
    assert isinstance(seen["image"], np.ndarray) and seen["image"].shape == (4, 5, 3)
    assert seen["image"].dtype == np.uint8 and seen["image"][0, 0].tolist() == [5, 4, 3]
    assert seen["mask"].dtype == np.uint8 and seen["mask"].shape == (4, 5)
