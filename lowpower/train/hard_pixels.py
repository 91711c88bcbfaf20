"""Cross-entropy that looks harder at the hard pixels: OHEM (``loss.ohem``) and focal loss (``loss.focal``).

Both replace the plain cross-entropy term of :class:`lowpower.train.losses.SegmentationLoss`; the Dice
term adds to either as before. Both keep the ignore id and the class weights, and average like the plain
term: the class-weighted mean over the pixels that count.

- **OHEM** (online hard example mining) with mmsegmentation's ``OHEMPixelSampler`` rule: the softmax
  probability of each valid pixel's true class is sorted; the threshold is the larger of ``thresh`` and
  the probability at position ``min_kept`` (0-based, clamped to the last); the pixels below it are
  kept. So every pixel the network is less sure of than ``thresh`` counts, and never fewer than about
  ``min_kept`` per batch. The selection takes no gradient.
- **Focal** (Lin et al., ICCV 2017): each pixel's cross-entropy times ``(1 - p)^gamma``, ``p`` its
  true class's probability, so pixels already right weigh little. ``gamma`` 0 is the plain term.

Example:
    >>> logits, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
    >>> round(hard_pixel_loss(logits, target, focal_gamma=2.0).item(), 4)  # ln 3 * (2/3)^2
    0.4883
"""
import torch
import torch.nn.functional as F


def true_class_log_probs(logits, target, ignore_index):
    """``(log p of each pixel's true class, valid mask)``, both N x H x W; ignored pixels read class 0."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    log_probs = F.log_softmax(logits.float(), dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    return log_probs, valid, safe


def ohem_keep(probs, valid, thresh, min_kept):
    """The pixels OHEM keeps: valid ones whose true-class probability is below the threshold.

    Args:
        probs: N x H x W true-class probabilities.
        valid: N x H x W bool, the pixels that are not the ignore id.
        thresh: the probability under which a pixel always counts.
        min_kept: pixels per batch the threshold is raised to keep, at least (about: ties at the
            threshold are left out, as in mmsegmentation).

    Example:
        >>> ohem_keep(torch.tensor([[0.9, 0.2, 0.6, 0.95]]), torch.ones(1, 4, dtype=torch.bool), 0.5, 2).tolist()
        [[False, True, True, False]]
    """
    ranked = probs[valid].sort().values
    if ranked.numel() == 0:
        return valid
    floor = ranked[min(min_kept, ranked.numel() - 1)]
    threshold = torch.clamp(floor, min=thresh)
    return valid & (probs < threshold)


def hard_pixel_loss(logits, target, weight=None, ignore_index=255, focal_gamma=0.0, ohem=None):
    """Class-weighted mean of per-pixel (focal) cross-entropy over the valid (and, with OHEM, kept) pixels.

    Args:
        logits: N x C x H x W scores.
        target: N x H x W class ids.
        weight: None or C class weights.
        ignore_index: the label id that does not count.
        focal_gamma: the focal exponent; 0 is plain cross-entropy.
        ohem: None, or ``(thresh, min_kept)``.

    Returns:
        A scalar; 0 (with a gradient path) when no pixel counts.
    """
    log_probs, counted, safe = true_class_log_probs(logits, target, ignore_index)
    if ohem is not None:
        with torch.no_grad():
            counted = ohem_keep(log_probs.exp(), counted, *ohem)
    terms = -log_probs
    if focal_gamma:
        terms = terms * (1 - log_probs.exp()).clamp(min=0) ** focal_gamma
    pixel_weights = counted.float() if weight is None else weight.float()[safe] * counted
    total = pixel_weights.sum()
    if total <= 0:
        return logits.sum() * 0
    return (terms * pixel_weights).sum() / total
