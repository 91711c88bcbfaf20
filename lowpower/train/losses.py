"""Training losses: cross-entropy with an ignore index and class weights (or its OHEM / focal forms,
:mod:`lowpower.train.hard_pixels`), plus an optional soft Dice.

The referee averages Dice over the classes present in each image, so rare classes weigh as much
as background; class weights and a Dice term are the usual ways to tell the loss so.

Example:
    >>> criterion = SegmentationLoss(num_classes=14, dice_weight=0.5)
    >>> criterion(torch.zeros(2, 14, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)).item() > 0
    True
"""
import numpy as np
import torch
import torch.nn.functional as F

from evaluation.contract import IGNORE_INDEX
from lowpower.train.hard_pixels import hard_pixel_loss


def inverse_sqrt_weights(pixel_counts):
    """Class weights proportional to 1/sqrt(pixel share), normalised to mean 1 over seen classes.

    Classes never seen get weight 0 (they cannot be learned from this data anyway).

    Example:
        >>> inverse_sqrt_weights([900, 100, 0]).round(3).tolist()
        [0.5, 1.5, 0.0]
    """
    counts = np.asarray(pixel_counts, np.float64)
    seen = counts > 0
    weights = np.zeros_like(counts)
    weights[seen] = 1.0 / np.sqrt(counts[seen] / counts.sum())
    weights[seen] /= weights[seen].mean()
    return weights


def mask_pixel_counts(dataset, num_classes):
    """Pixels per class over a dataset's raw masks (``load_pair``), ignoring other ids."""
    counts = np.zeros(num_classes, np.int64)
    for index in range(len(dataset)):
        mask = dataset.load_pair(index)[1]
        counts += np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes)
    return counts


def soft_dice_loss(logits, target, ignore_index=IGNORE_INDEX):
    """1 - soft Dice averaged, image by image, over the classes present in that image's target.

    Per image, like the referee's mean Dice, so a small class counts as much in an image as a
    large one. Built from a gather and a scatter-add rather than a one-hot tensor, which would
    cost as much as a quarter of a small CPU model's training step.

    Args:
        logits: (N, C, H, W) raw scores.
        target: (N, H, W) class ids; ``ignore_index`` pixels do not count.

    Example:
        >>> soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        tensor(0.3200)
    """
    n, num_classes = logits.shape[:2]
    valid = (target != ignore_index).unsqueeze(1)
    ids = target.unsqueeze(1) * valid  # ignored pixels read class 0; their terms are zeroed below
    probs = logits.float().softmax(1) * valid
    hits = probs.gather(1, ids).flatten(1)
    flat_ids = ids.flatten(1)
    intersection = logits.new_zeros((n, num_classes), dtype=torch.float32).scatter_add_(1, flat_ids, hits)
    counts = logits.new_zeros((n, num_classes), dtype=torch.float32).scatter_add_(
        1, flat_ids, valid.flatten(1).float())
    dice = (2 * intersection + 1.0) / (probs.sum((2, 3)) + counts + 1.0)
    present = counts > 0
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class SegmentationLoss(torch.nn.Module):
    """Cross-entropy (ignore index, optional class weights) plus ``dice_weight`` times soft Dice.

    Args:
        num_classes: C.
        class_weights: None or C weights.
        dice_weight: weight of the soft Dice term; 0 disables it.
        ignore_index: label id that does not count.
        focal_gamma: focal exponent of the cross-entropy term; 0 keeps plain cross-entropy.
        ohem: None, or ``(thresh, min_kept)``: the cross-entropy term over the hard pixels only.
    """

    def __init__(self, num_classes, class_weights=None, dice_weight=0.0, ignore_index=IGNORE_INDEX,
                 focal_gamma=0.0, ohem=None):
        super().__init__()
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weight is not None and weight.numel() != num_classes:
            raise ValueError("class_weights has %d values for %d classes" % (weight.numel(), num_classes))
        self.register_buffer("weight", weight)
        self.dice_weight = float(dice_weight)
        self.ignore_index = ignore_index
        self.focal_gamma = float(focal_gamma)
        self.ohem = None if ohem is None else (float(ohem[0]), int(ohem[1]))
        self.terms = {}  # the last call's weighted terms, see forward

    def term_name(self):
        """Name of the pixel term: 'ce', 'ohem', 'focal' or 'ohem_focal' (both options on).

        Example:
            >>> SegmentationLoss(3, focal_gamma=2.0).term_name()
            'focal'
        """
        names = [name for name, on in (("ohem", self.ohem is not None), ("focal", bool(self.focal_gamma))) if on]
        return "_".join(names) or "ce"

    def forward(self, logits, target):
        """The loss; its weighted terms, detached, are left in ``self.terms`` until the next call.

        ``self.terms`` is ``{pixel term name: value, "dice": dice_weight * soft Dice}`` ("dice" only when
        ``dice_weight`` > 0) as 0-d tensors that sum to the returned loss, so a log of the terms adds up.
        """
        if self.focal_gamma or self.ohem is not None:
            loss = hard_pixel_loss(logits, target, self.weight, self.ignore_index, self.focal_gamma, self.ohem)
        else:
            loss = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index)
        terms = {self.term_name(): loss.detach()}
        if self.dice_weight > 0:
            dice = self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
            terms["dice"] = dice.detach()
            loss = loss + dice
        self.terms = terms
        return loss


def criterion_from_config(cfg, train_set, device, log=None):
    """The loss a run config asks for; 'inverse_sqrt' class weights come from the training masks.

    Args:
        cfg: resolved run config (``train.class_weights``, ``train.dice_weight``, ``data.num_classes``).
        train_set: the training split, with ``load_pair(i)`` (only read for 'inverse_sqrt').
        device: where the loss (its weight tensor) lives.
        log: called with a line naming the computed weights.

    Example:
        >>> criterion_from_config({"train": {"class_weights": None, "dice_weight": 0.5},
        ...                        "data": {"num_classes": 3}}, [], "cpu").dice_weight
        0.5
    """
    weights = cfg["train"]["class_weights"]
    if weights == "inverse_sqrt":
        weights = inverse_sqrt_weights(mask_pixel_counts(train_set, cfg["data"]["num_classes"])).tolist()
        if log:
            log("class weights (inverse sqrt of pixel share): %s" % " ".join("%.2f" % w for w in weights))
    loss = cfg.get("loss", {})
    ohem = (loss["ohem_thresh"], loss["ohem_min_kept"]) if loss.get("ohem") else None
    return SegmentationLoss(cfg["data"]["num_classes"], weights, cfg["train"]["dice_weight"],
                            focal_gamma=loss.get("focal", 0.0), ohem=ohem).to(device)
