"""Cityscapes: the ``leftImg8bit``/``gtFine`` layout, label ids -> the 19 train ids, transforms, scoring.

Layout (as the official archives unpack under ``data.root``)::

    leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png

Masks are read as label ids (0..33) and mapped to the 19 train ids of
``cityscapesscripts.helpers.labels``; every label with ``ignoreInEval`` becomes 255 (ignored).
Predictions go back the other way (train id -> label id) so that
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` can score them.

Evaluation is at the native mask size (1024x2048): the model sees the image resized so that its
short side is ``data.input_size`` (aspect ratio kept), and the logits are upsampled to the mask.

Example:
    >>> ds = CityscapesDataset("data/cityscapes", "val")   # doctest: +SKIP
    >>> image, mask = ds.load_pair(0)                        # doctest: +SKIP
    >>> image.shape, mask.max() <= 18 or mask.max() == 255   # doctest: +SKIP
    ((1024, 2048, 3), True)
"""
from pathlib import Path

import cv2
import numpy as np
import torch
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from torchvision import tv_tensors
from torchvision.transforms import v2

from evaluation.contract import IGNORE_INDEX
from evaluation.metrics import confusion_matrix, nanmean, safe_ratio
from lowpower.data.lpcvc import DataError, read_rgb
from lowpower.data.photometric import PhotometricDistortion
from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairTransform, as_image

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# The 19 evaluated classes, in train-id order.
_EVALUATED = sorted((label for label in CS_LABELS if not label.ignoreInEval), key=lambda label: label.trainId)
CLASS_NAMES = tuple(label.name for label in _EVALUATED)
NUM_CLASSES = len(CLASS_NAMES)
TRAIN_TO_LABEL_ID = np.array([label.id for label in _EVALUATED], np.uint8)


def _label_to_train_lut():
    """256-entry lookup: label id -> train id, 255 for ignored or unknown ids."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label in _EVALUATED:
        lut[label.id] = label.trainId
    return lut


LABEL_TO_TRAIN_ID = _label_to_train_lut()


def label_ids_to_train_ids(label_ids):
    """Map a Cityscapes label-id mask to train ids (0..18, 255 ignored).

    Example:
        >>> label_ids_to_train_ids(np.array([[7, 26, 0]], np.uint8)).tolist()
        [[0, 13, 255]]
    """
    return LABEL_TO_TRAIN_ID[np.asarray(label_ids, np.uint8)]


def train_ids_to_label_ids(train_ids):
    """Map predicted train ids (0..18) to label ids, the format cityscapesscripts evaluates.

    Example:
        >>> train_ids_to_label_ids(np.array([[0, 13, 18]])).tolist()
        [[7, 26, 33]]
    """
    train_ids = np.asarray(train_ids)
    if train_ids.size and (train_ids.min() < 0 or train_ids.max() >= NUM_CLASSES):
        raise ValueError("train ids must be in [0, %d), got %d..%d"
                         % (NUM_CLASSES, train_ids.min(), train_ids.max()))
    return TRAIN_TO_LABEL_ID[train_ids]


def find_pairs(root, split):
    """``(name, image_path, label_path)`` per image of a split, sorted by name.

    ``name`` is ``CITY_SEQ_FRAME`` (unique: it starts with the city).

    Raises:
        DataError: unknown split, missing folder, no images, or an image without its label file.
    """
    if split not in SPLITS:
        raise DataError("unknown split %r: expected one of %s" % (split, ", ".join(SPLITS)))
    root = Path(root).expanduser()
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise DataError("no Cityscapes %r split under %s: %s is missing (expected "
                            "leftImg8bit/%s/CITY/*%s and gtFine/%s/CITY/*%s)"
                            % (split, root, folder, split, IMAGE_SUFFIX, split, LABEL_SUFFIX))
    images = sorted(image_dir.glob("*/*" + IMAGE_SUFFIX))
    if not images:
        raise DataError("no *%s images in %s/CITY/" % (IMAGE_SUFFIX, image_dir))
    pairs = []
    for image in images:
        name = image.name[:-len(IMAGE_SUFFIX)]
        label = label_dir / image.parent.name / (name + LABEL_SUFFIX)
        if not label.is_file():
            raise DataError("image %s has no label file %s" % (image, label))
        pairs.append((name, image, label))
    return sorted(pairs)


def read_label_ids(path):
    """A ``*_gtFine_labelIds.png`` (or a label-id prediction) as an HxW uint8 array."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2:
        raise DataError("cannot read %s as a 1-channel label-id PNG" % path)
    return mask.astype(np.uint8)


class CityscapesDataset(torch.utils.data.Dataset):
    """Cityscapes image/mask pairs of one split, masks in train ids (255 ignored).

    Same interface as :class:`lowpower.data.lpcvc.LPCVCDataset`: ``names``, ``load_pair(i)``
    giving ``(HxWx3 uint8 RGB, HxW uint8 train ids)``, and ``transforms(image, mask)`` applied
    by ``__getitem__``.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``'train'``, ``'val'`` or ``'test'``.
        transforms: optional callable ``(image, mask) -> item``.

    Example:
        >>> ds = CityscapesDataset("data/cityscapes", "train")  # doctest: +SKIP
        >>> len(ds), ds.names[0]                                 # doctest: +SKIP
        (2975, 'aachen_000000_000019')
    """

    def __init__(self, root, split, transforms=None):
        self.root, self.split, self.transforms = Path(root), split, transforms
        pairs = find_pairs(root, split)
        self.names = [name for name, _, _ in pairs]
        self.paths = [(image, label) for _, image, label in pairs]

    def __len__(self):
        return len(self.paths)

    def load_pair(self, index):
        """Decode one pair: ``(HxWx3 uint8 RGB, HxW uint8 train ids)``."""
        image_path, label_path = self.paths[index]
        image, mask = read_rgb(image_path), label_ids_to_train_ids(read_label_ids(label_path))
        if image.shape[:2] != mask.shape:
            raise DataError("image %s is %dx%d but its labels %s are %dx%d" % (
                image_path, image.shape[0], image.shape[1], label_path, mask.shape[0], mask.shape[1]))
        return image, mask

    def __getitem__(self, index):
        image, mask = self.load_pair(index)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask).long()

    @staticmethod
    def encode_prediction(train_ids):
        """A predicted train-id mask as the label-id PNG content cityscapesscripts reads."""
        return train_ids_to_label_ids(train_ids)

    def __repr__(self):
        return "%s(split=%r, n=%d, root=%s)" % (type(self).__name__, self.split, len(self), self.root)


def _normalise(mean, std):
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transforms(input_size, crop_size=None, scale=(0.5, 2.0), hflip=0.5, jitter=0.2,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, photometric=False):
    """Training augmentation that keeps the 1:2 aspect ratio (no square squash).

    The short side is resized to ``input_size`` times a factor uniform in ``scale``, then a random
    ``crop_size`` square is cut (padded with 0 / 255 where the image is smaller), flipped, given
    mmsegmentation's photometric distortion when ``photometric`` and colour-jittered.

    Example:
        >>> img, mask = train_transforms(64, 48)(np.zeros((64, 128, 3), np.uint8), np.zeros((64, 128), np.uint8))
        >>> tuple(img.shape), tuple(mask.shape)
        ((3, 48, 48), (48, 48))
    """
    crop_size = crop_size or input_size
    low, high = int(round(input_size * scale[0])), int(round(input_size * scale[1]))
    steps = [v2.RandomResize(low, high + 1, antialias=True),
             v2.RandomCrop(crop_size, pad_if_needed=True,
                           fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX})]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    if photometric:
        steps.append(PhotometricDistortion())
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 10))
    return PairTransform(v2.Compose(steps + _normalise(mean, std)))


class EvalTransform:
    """Image with its short side at ``input_size`` (aspect kept), normalised; mask untouched.

    Cityscapes is scored at the masks' native size, as cityscapesscripts does.

    Example:
        >>> img, mask = EvalTransform(32)(np.zeros((64, 128, 3), np.uint8), np.zeros((64, 128), np.uint8))
        >>> tuple(img.shape), tuple(mask.shape)
        ((3, 32, 64), (64, 128))
    """

    def __init__(self, input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.pipeline = v2.Compose([v2.Resize(input_size, antialias=True)] + _normalise(mean, std))

    def __call__(self, image, mask):
        image = self.pipeline(as_image(image)).as_subclass(torch.Tensor)
        mask = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mask))
        return image, mask.long()


def split_transforms(data_cfg, train):
    """The transforms a run config's ``data`` section asks for (see ``lowpower.data.build``)."""
    if train:
        return train_transforms(data_cfg["input_size"], data_cfg["crop_size"],
                                (data_cfg["scale_min"], data_cfg["scale_max"]),
                                data_cfg["hflip"], data_cfg["jitter"], photometric=data_cfg["photometric"])
    return EvalTransform(data_cfg["input_size"])


def label_id_confusion(gt_label_ids, pred_label_ids):
    """19x20 pixel counts of one image: rows GT train id, columns predicted train id, column 19
    for predicted label ids that are not evaluated (void, e.g. 0 'unlabeled').

    GT pixels with an ignored label do not count; a void prediction on an evaluated GT pixel is a
    miss for that class and a false positive for none (cityscapesscripts' rule).
    """
    gt = label_ids_to_train_ids(gt_label_ids)
    pred = label_ids_to_train_ids(pred_label_ids)
    pred = np.where(pred == IGNORE_INDEX, NUM_CLASSES, pred)
    return confusion_matrix(gt, pred, NUM_CLASSES + 1)[:NUM_CLASSES]


def label_id_scores(cm):
    """Per-class IoU and mIoU of a :func:`label_id_confusion` sum, as cityscapesscripts computes them.

    IoU = TP / (TP + FP + FN) with FN including void predictions; a class with TP + FP + FN = 0 is
    NaN and left out of the mean, exactly as cityscapesscripts' ``getScoreAverage`` skips NaN.

    Example:
        >>> cm = np.zeros((19, 20), np.int64); cm[0, 0] = 3; cm[0, 19] = 1
        >>> label_id_scores(cm)["miou"]
        0.75
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm[:, :NUM_CLASSES])
    iou = safe_ratio(tp, cm.sum(axis=1) + cm[:, :NUM_CLASSES].sum(axis=0) - tp)
    return {"per_class_iou": iou, "miou": nanmean(iou), "confusion_matrix": cm}


def score_predictions(prediction_dir, root, split="val"):
    """Score a folder of label-id prediction PNGs (``NAME*.png``) against ``gtFine``.

    Args:
        prediction_dir: folder searched recursively for ``CITY_SEQ_FRAME*.png``, one per image.
        root, split: the Cityscapes tree and split holding the ground truth.

    Returns:
        :func:`label_id_scores` of the whole split, plus ``images``.

    Example:
        >>> score_predictions("runs/cs/pred", "data/cityscapes")["miou"]  # doctest: +SKIP
    """
    files = sorted(Path(prediction_dir).rglob("*.png"))
    total = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    pairs = find_pairs(root, split)
    for name, _, label_path in pairs:
        matches = [path for path in files if path.name.startswith(name)]
        if len(matches) != 1:
            raise DataError("expected one prediction %s*.png in %s, found %d" % (name, prediction_dir, len(matches)))
        gt, pred = read_label_ids(label_path), read_label_ids(matches[0])
        if gt.shape != pred.shape:
            raise DataError("prediction %s is %s but the labels are %s" % (matches[0], pred.shape, gt.shape))
        total += label_id_confusion(gt, pred)
    return dict(label_id_scores(total), images=len(pairs))
