"""Nearest class-mean colour classifier: the yardstick that proves the data needs a network.

If a per-pixel colour lookup scored well, the synthetic data could not tell a
good architecture from a bad one. The demo prints this baseline next to the
trained model; a test holds it at or below 0.45 mean Dice on the val split.
"""
import numpy as np


def fit_class_means(pairs, num_classes=14):
    """Mean RGB colour of every class over (image, label) pairs.

    Args:
        pairs: iterable of (uint8 RGB (H, W, 3), uint8 label (H, W)).
        num_classes: classes to fit; classes never seen get NaN and are never predicted.

    Example:
        >>> means = fit_class_means([(image, label)])
        >>> means.shape
        (14, 3)
    """
    sums = np.zeros((num_classes, 3), np.float64)
    counts = np.zeros(num_classes, np.int64)
    for image, label in pairs:
        flat, ids = image.reshape(-1, 3).astype(np.float64), label.reshape(-1)
        valid = ids < num_classes
        counts += np.bincount(ids[valid], minlength=num_classes)
        for channel in range(3):
            sums[:, channel] += np.bincount(ids[valid], flat[valid, channel], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def predict_by_colour(image, means):
    """Label every pixel with the class whose mean colour is nearest (Euclidean RGB).

    |x - m|^2 = |x|^2 - 2 x.m + |m|^2, and |x|^2 is the same for every class: one matrix product
    instead of a pixels x classes x 3 array of differences (6x faster at 512 x 512).

    Example:
        >>> means = np.array([[0, 0, 0], [255, 255, 255], [np.nan] * 3])
        >>> predict_by_colour(np.array([[[10, 20, 0], [200, 250, 240]]], np.uint8), means).tolist()
        [[0, 1]]
    """
    seen = ~np.isnan(means).any(1)
    centres = np.where(seen[:, None], means, 0).astype(np.float64)
    flat = image.reshape(-1, 3).astype(np.float64)
    distance = (centres ** 2).sum(1)[None] - 2 * flat @ centres.T
    distance[:, ~seen] = np.inf
    return distance.argmin(1).reshape(image.shape[:2]).astype(np.uint8)
