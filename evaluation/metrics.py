"""Segmentation metrics that follow the LPCVC 2023 referee (numpy only).

Ships with the scoring harness and is also used by training validation and
test.py, so the numbers seen while training are the referee's numbers.
Python 3.6 syntax; numpy 1.19 API; OpenCV is imported only to resize
arrays that are not already at the referee's size.

The referee's rule (lpcvai/23LPCVC_Segmentation_Track-Sample_Solution,
evaluation/main.py and evaluation/accuracy.py): both the prediction and the
ground truth PNG are read, cast to uint8, reduced to channel 0 if 3-D, resized
to 512x512 with INTER_AREA and then resized again to 512x512 with
INTER_NEAREST (a no-op, the array is already 512x512); a 14x14 confusion
matrix counts pixels whose GT is in [0, 14); per-class dice is
2*TP / (row sum + column sum) with 0/0 = NaN; an image scores the NaN-mean
over classes and the final score is the plain mean over images.

Example:
    >>> meter = SegmentationMeter()
    >>> gt = np.zeros((4, 4), np.uint8); gt[:2] = 1
    >>> meter.update(gt, gt)
    >>> meter.summary()['mean_dice']
    1.0
"""
import numpy as np

if __package__:
    from .contract import CLASS_NAMES, NUM_CLASSES
    from .contract import OUTPUT_SIZE as REFEREE_SIZE
else:  # run beside score.py as a script: Python put this folder first on sys.path
    from contract import CLASS_NAMES, NUM_CLASSES
    from contract import OUTPUT_SIZE as REFEREE_SIZE


def referee_prepare(arr, size=REFEREE_SIZE):
    """Apply the referee's preprocessing to a label map read from a PNG.

    uint8 cast, channel 0 of a 3-D array, resize to (size, size) with
    INTER_AREA and then INTER_NEAREST. An array already at (size, size) is
    returned unchanged (both resizes are identities there).

    Args:
        arr: (H, W) or (H, W, C) array of class ids.
        size: side of the square the referee resizes to.

    Returns:
        (size, size) uint8 array.

    Example:
        >>> referee_prepare(np.ones((256, 256, 3), np.uint8)).shape
        (512, 512)
    """
    arr = np.asarray(arr).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    if arr.shape == (size, size):
        return np.ascontiguousarray(arr)
    import cv2  # only needed off the common path; keeps the module numpy-only
    arr = cv2.resize(np.ascontiguousarray(arr), (size, size), interpolation=cv2.INTER_AREA)
    return cv2.resize(arr, (size, size), interpolation=cv2.INTER_NEAREST)


def confusion_matrix(gt, pred, num_classes=NUM_CLASSES):
    """Count pixels by (GT class, predicted class).

    Pixels whose GT is outside [0, num_classes) (e.g. 255 = ignore) are skipped.

    Args:
        gt: integer array of GT class ids.
        pred: integer array of predicted ids, same shape as ``gt``.
        num_classes: number of classes C.

    Returns:
        (C, C) int64 array; rows are GT, columns are predictions.

    Raises:
        ValueError: shapes differ, or a counted pixel has a prediction outside [0, C).

    Example:
        >>> confusion_matrix(np.array([0, 1, 255]), np.array([0, 0, 5]), 2)
        array([[1, 0],
               [1, 0]])
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError('gt and pred shapes differ: {} vs {}'.format(gt.shape, pred.shape))
    gt = gt.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    counted = (gt >= 0) & (gt < num_classes)
    gt, pred = gt[counted], pred[counted]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = pred[(pred < 0) | (pred >= num_classes)]
        raise ValueError('prediction ids must be in [0, {}); found {}'.format(
            num_classes, sorted(set(bad.tolist()))[:10]))
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def safe_ratio(numerator, denominator):
    """Elementwise numerator / denominator as float64, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    defined = denominator != 0
    np.divide(numerator, denominator, out=out, where=defined)
    return out


def nanmean(values):
    """Mean of the non-NaN values; NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float('nan')


def dice_per_class(cm):
    """Per-class dice 2*TP / (GT pixels + predicted pixels); NaN for 0/0.

    Example:
        >>> dice_per_class(np.array([[2, 1], [0, 0]]))
        array([0.8, 0. ])
    """
    cm = np.asarray(cm)
    return safe_ratio(2 * np.diag(cm), cm.sum(axis=1) + cm.sum(axis=0))


def iou_per_class(cm):
    """Per-class IoU TP / (GT pixels + predicted pixels - TP); NaN for 0/0.

    Example:
        >>> iou_per_class(np.array([[2, 1], [0, 0]]))
        array([0.66666667, 0.        ])
    """
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return safe_ratio(tp, cm.sum(axis=1) + cm.sum(axis=0) - tp)


def image_mean_dice(cm):
    """The referee's image score: NaN-mean of the per-class dice (NaN if none defined)."""
    return nanmean(dice_per_class(cm))


class SegmentationMeter(object):
    """Accumulates referee-style scores over images.

    Keeps the total confusion matrix (for dataset-level IoU), the sum and
    count of per-image mean dice (the referee's final score), and per-class
    sums and counts of per-image dice. Images whose score is undefined
    (no counted GT pixel and no prediction) are counted in ``images`` but not
    in the mean; the referee would turn the final score into NaN instead.

    Args:
        num_classes: number of classes C.

    Example:
        >>> meter = SegmentationMeter(2)
        >>> meter.update(np.array([[0, 1]]), np.array([[0, 0]]))
        >>> round(meter.summary()['mean_dice'], 4)
        0.3333
    """

    def __init__(self, num_classes=NUM_CLASSES):
        self.num_classes = num_classes
        self._state = self.empty_state(num_classes)

    @staticmethod
    def empty_state(num_classes):
        """Zeroed state; every value is a numpy array so states add elementwise."""
        return {
            'confusion_matrix': np.zeros((num_classes, num_classes), np.int64),
            'dice_sum': np.zeros((), np.float64),
            'scored_images': np.zeros((), np.int64),
            'images': np.zeros((), np.int64),
            'class_dice_sum': np.zeros(num_classes, np.float64),
            'class_dice_count': np.zeros(num_classes, np.int64),
        }

    def update(self, gt, pred):
        """Add one image: 2-D integer arrays of the same shape."""
        self.update_confusion_matrix(confusion_matrix(gt, pred, self.num_classes))

    def update_confusion_matrix(self, cm):
        """Add one image given as its (C, C) confusion matrix (rows GT, columns predictions)."""
        cm = np.asarray(cm, dtype=np.int64)
        if cm.shape != (self.num_classes, self.num_classes):
            raise ValueError('expected a {0}x{0} confusion matrix, got shape {1}'.format(
                self.num_classes, cm.shape))
        dice = dice_per_class(cm)
        defined = ~np.isnan(dice)
        state = self._state
        state['confusion_matrix'] += cm
        state['images'] += 1
        if defined.any():
            state['dice_sum'] += dice[defined].mean()
            state['scored_images'] += 1
        state['class_dice_sum'][defined] += dice[defined]
        state['class_dice_count'] += defined

    def update_batch(self, gts, preds):
        """Add a batch: (N, H, W) arrays, one image per leading index."""
        gts = np.asarray(gts)
        preds = np.asarray(preds)
        if gts.shape != preds.shape or gts.ndim != 3:
            raise ValueError('expected two (N, H, W) arrays of one shape, got {} and {}'.format(
                gts.shape, preds.shape))
        for gt, pred in zip(gts, preds):
            self.update(gt, pred)

    def state(self):
        """A copy of the accumulators: a dict of numpy arrays summable across processes."""
        return dict((key, value.copy()) for key, value in self._state.items())

    @classmethod
    def from_state(cls, state):
        """Rebuild a meter from :meth:`state` (or an elementwise sum of states)."""
        num_classes = int(np.asarray(state['confusion_matrix']).shape[0])
        meter = cls(num_classes)
        for key, empty in meter._state.items():
            meter._state[key] = np.asarray(state[key]).astype(empty.dtype).reshape(empty.shape)
        return meter

    def merge(self, other):
        """Add another meter's accumulators into this one; returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError('cannot merge meters with {} and {} classes'.format(
                self.num_classes, other.num_classes))
        for key, value in other._state.items():
            self._state[key] += value
        return self

    def summary(self):
        """Scores so far.

        Returns:
            dict with ``mean_dice`` (the referee's final score), ``miou``
            (NaN-mean of dataset-level IoU), ``per_class_dice`` (mean over the
            images where defined), ``per_class_iou``, ``confusion_matrix`` and
            ``images``.
        """
        state = self._state
        cm = state['confusion_matrix'].copy()
        per_class_iou = iou_per_class(cm)
        scored = int(state['scored_images'])
        return {
            'mean_dice': float(state['dice_sum']) / scored if scored else float('nan'),
            'miou': nanmean(per_class_iou),
            'per_class_dice': safe_ratio(state['class_dice_sum'], state['class_dice_count']),
            'per_class_iou': per_class_iou,
            'confusion_matrix': cm,
            'images': int(state['images']),
        }


def format_number(value, digits=4):
    """Fixed-point number, or '-' for NaN and for None (a JSON report's null: NaN or withheld).

    Example:
        >>> format_number(0.51234), format_number(None), format_number(float('nan'), 2)
        ('0.5123', '-', '-')
    """
    return '-' if value is None or np.isnan(value) else '{:.{}f}'.format(value, digits)


def format_table(summary, class_names=CLASS_NAMES):
    """Plain-text per-class table of a :meth:`SegmentationMeter.summary`.

    Columns: class id, name, Dice (mean over images where defined), IoU
    (dataset level), share of counted GT pixels; then the totals.

    Example:
        >>> meter = SegmentationMeter(2)
        >>> meter.update(np.array([[0, 1]]), np.array([[0, 0]]))
        >>> print(format_table(meter.summary(), ['background', 'avalanche']))
         id  class          Dice      IoU  GT share
          0  background   0.6667   0.5000    50.00%
          1  avalanche    0.0000   0.0000    50.00%
        mean Dice (referee): 0.3333   mIoU: 0.2500   images: 1
    """
    cm = summary['confusion_matrix']
    gt_pixels = cm.sum(axis=1)
    share = safe_ratio(gt_pixels, gt_pixels.sum())
    name_width = max([len('class')] + [len(name) for name in class_names])
    row = '{:>3}  {:<' + str(name_width) + '}  {:>7}  {:>7}  {:>8}'
    lines = [row.format('id', 'class', 'Dice', 'IoU', 'GT share')]
    for index in range(cm.shape[0]):
        name = class_names[index] if index < len(class_names) else str(index)
        lines.append(row.format(
            index, name, format_number(summary['per_class_dice'][index]),
            format_number(summary['per_class_iou'][index]),
            '-' if np.isnan(share[index]) else '{:.2%}'.format(share[index])))
    lines.append('mean Dice (referee): {}   mIoU: {}   images: {}'.format(
        format_number(summary['mean_dice']), format_number(summary['miou']),
        summary['images']))
    return '\n'.join(lines)
