"""Score a folder of predicted label PNGs against a folder of ground truth, as the referee does.

The referee's rule (metrics.py, DESIGN.md section 2): each pair is read like ``imageio.imread``,
cast to uint8, reduced to channel 0, resized to 512x512; a 14x14 confusion matrix counts the pixels
whose GT is in [0, 14); an image scores the NaN-mean of the per-class Dice; the result is the plain
mean over images. Unlike the referee, files are paired by name, missing and extra files are named,
and a predicted id outside [0, 14) is an error naming the file.

A report whose status is not ``scored`` carries no figure that ranks a submission (``mean_dice``,
``miou``, per-class ``dice`` and ``iou``: all null); what the files that could be scored give is
kept apart, under ``partial``, so that a script reading ``mean_dice`` is never handed a number
computed on a subset. See ``withhold_unless_scored``.

Python 3.6 syntax; numpy, OpenCV and Pillow only.

Example (skipped as a doctest: it reads the folders of a solution's run):
    >>> report = score_folders('output/solution/pred', 'test/GT')  # doctest: +SKIP
    >>> report['status'], report['mean_dice']  # doctest: +SKIP
    ('scored', 0.5012)
"""
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

if __package__:
    from . import metrics
    from .contract import CLASS_NAMES, NUM_CLASSES, OUTPUT_SIZE
    from .pairing import list_pngs, pair_by_name, pairing_problems, shown
    from .readpng import read_label
else:  # run as a script beside score.py: Python put this folder first on sys.path
    import metrics
    from contract import CLASS_NAMES, NUM_CLASSES, OUTPUT_SIZE
    from pairing import list_pngs, pair_by_name, pairing_problems, shown
    from readpng import read_label

# Figures that rank a submission: numbers only when the status is 'scored' (fault 9 of issue 12).
RANKING_FIGURES = ('mean_dice', 'miou', 'score', 'score_wall')
PARTIAL_NOTE = 'over the images that could be scored; not a result: the evaluation failed'


# ----------------------------------------------------------------------------- one pair

def referee_confusion_matrix(gt, pred, num_classes=NUM_CLASSES):
    """Confusion matrix of two prepared uint8 maps; GT outside [0, C) is skipped.

    Same result as ``metrics.confusion_matrix`` for in-range predictions, about
    ten times faster on 512x512 uint8 maps (one bincount). The caller checks prediction ids.

    Example:
        >>> gt = np.array([[0, 1], [255, 1]], np.uint8)
        >>> int(referee_confusion_matrix(gt, np.zeros_like(gt), 2)[1, 0])
        2
    """
    code = gt.astype(np.intp) * num_classes
    code += pred
    code[gt >= num_classes] = num_classes * num_classes
    counts = np.bincount(code.ravel(), minlength=num_classes * num_classes + 1)
    return counts[:num_classes * num_classes].reshape(num_classes, num_classes).astype(np.int64)


def _ids_error(name, pred, num_classes):
    """Why a prediction's ids cannot be scored (some outside [0, C)), or None."""
    if pred.max() < num_classes:
        return None
    bad = np.unique(pred[pred >= num_classes])
    return '{}: predicted ids outside [0, {}): {}{} ({} pixels); the referee crashes or ' \
           'miscounts on these'.format(name, num_classes, ', '.join(str(v) for v in bad[:10].tolist()),
                                      ' ...' if bad.size > 10 else '', int((pred >= num_classes).sum()))


def _score_pair(job):
    """Read, prepare and count one (prediction, GT) pair; runs in a worker thread.

    Returns:
        dict with ``name``, ``cm`` (the confusion matrix, or None), ``error``, ``warning``.
    """
    name, pred_path, gt_path, num_classes, size, expect_size = job
    out = {'name': name, 'error': None, 'warning': None, 'cm': None}
    try:
        gt, _ = read_label(gt_path, size)
    except Exception as error:  # noqa: BLE001 - any reader failure is reported by name
        out['error'] = '{}: cannot read the ground truth {}: {}'.format(name, gt_path, error)
        return out
    try:
        pred, raw = read_label(pred_path, size)
    except Exception as error:  # noqa: BLE001
        out['error'] = '{}: cannot read the prediction {}: {}'.format(name, pred_path, error)
        return out
    if expect_size and raw.shape[:2] != (expect_size, expect_size):
        out['error'] = '{}: prediction is {}x{} (width x height), expected {}x{}'.format(
            name, raw.shape[1], raw.shape[0], expect_size, expect_size)
        return out
    if raw.ndim == 3 or raw.dtype != np.uint8:
        out['warning'] = '{}: prediction is {} {} as read; the referee keeps channel 0 cast to ' \
                         'uint8; write 1-channel 8-bit PNGs'.format(
                             name, 'x'.join(str(n) for n in raw.shape), raw.dtype)
    out['error'] = _ids_error(name, pred, num_classes)
    if out['error'] is None:
        out['cm'] = referee_confusion_matrix(gt, pred, num_classes)
    return out


def score_pairs(names, pred_dir, gt_dir, num_classes, size, expect_size, workers=None):
    """``_score_pair`` for every name, in name order, on a thread pool (the readers release the GIL).

    Args:
        names: the paired file names, sorted (the referee's summation order).
        workers: threads (default: up to 8, one per core); 1 runs in this thread.
    """
    jobs = [(name, os.path.join(pred_dir, name), os.path.join(gt_dir, name), num_classes, size,
             expect_size) for name in names]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(_score_pair, jobs))
    return [_score_pair(job) for job in jobs]


# ----------------------------------------------------------------------------- the figures

def json_number(value):
    """float for JSON; None for None, NaN or infinity (JSON has no NaN).

    Example:
        >>> json_number(float('nan')) is None, json_number(np.float32(0.5))
        (True, 0.5)
    """
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def class_names(num_classes):
    """The LPCVC names for the referee's class count, else the ids as text."""
    if num_classes == NUM_CLASSES:
        return list(CLASS_NAMES)
    return [str(index) for index in range(num_classes)]


def tally(results, num_classes):
    """Sum the pairs' confusion matrices in name order and compute the referee's mean.

    Args:
        results: ``score_pairs`` output.
        num_classes: C.

    Returns:
        dict: ``summary`` (SegmentationMeter summary), ``mean_dice`` (the referee's number:
        image scores added in name order, divided by their count; NaN when any image is
        undefined, as with the referee), ``per_image`` ({name: dice or None}), ``scored``
        (how many pairs were counted), ``errors`` and ``warnings`` (lists of lines).
    """
    meter = metrics.SegmentationMeter(num_classes)
    per_image, errors, warnings, image_scores = {}, [], [], []
    for result in results:
        if result['warning']:
            warnings.append(result['warning'])
        if result['error']:
            errors.append(result['error'])
            continue
        meter.update_confusion_matrix(result['cm'])
        image_scores.append(metrics.image_mean_dice(result['cm']))
        per_image[result['name']] = json_number(image_scores[-1])
    undefined = sum(1 for value in image_scores if math.isnan(value))
    if undefined:
        warnings.append('{} images have no GT pixel in [0, {}) and no prediction there: their score '
                        'is NaN, and so is the referee\'s mean'.format(undefined, num_classes))
    mean_dice = sum(image_scores) / len(image_scores) if image_scores else float('nan')
    return {'summary': meter.summary(), 'mean_dice': mean_dice, 'per_image': per_image,
            'scored': len(image_scores), 'errors': errors, 'warnings': warnings}


def per_class_figures(summary, num_classes):
    """{class name: {id, dice, iou, gt_pixels, pred_pixels}} from a SegmentationMeter summary.

    Dice is the mean over the images where the class is defined; IoU comes from the summed matrix.
    """
    cm = summary['confusion_matrix']
    gt_pixels, pred_pixels = cm.sum(axis=1), cm.sum(axis=0)
    return dict((name, {'id': index,
                        'dice': json_number(summary['per_class_dice'][index]),
                        'iou': json_number(summary['per_class_iou'][index]),
                        'gt_pixels': int(gt_pixels[index]),
                        'pred_pixels': int(pred_pixels[index])})
                for index, name in enumerate(class_names(num_classes)))


def withhold_unless_scored(report):
    """Null every ranking figure of a report whose status is not 'scored'; keep them under ``partial``.

    A failed evaluation must not hand a script a ``mean_dice`` or ``score`` computed on a subset
    (say 1 of 600 masks). The figures the scored files give are kept for the person reading the
    report as ``partial`` = {``mean_dice``, ``miou``, ``images`` (scored), ``of`` (GT images),
    ``note``}, only when at least one image was scored. Per-class ``dice`` and ``iou`` become null;
    counts (pixels, confusion matrix) and ``per_image_dice`` (each value belongs to its named
    file) stay. Calling it twice changes nothing more.

    Args:
        report: a dict from ``score_folders`` or ``judge.evaluate_run``; changed in place.

    Returns:
        the report.

    Example:
        >>> withhold_unless_scored({'status': 'failed', 'mean_dice': 0.8, 'miou': 0.7, 'images': 1,
        ...                         'per_image_dice': {'a.png': 0.8}, 'gt_images': 3})['mean_dice'] is None
        True
    """
    if report.get('status') == 'scored':
        return report
    scored = len(report.get('per_image_dice') or {})
    if scored and 'partial' not in report:
        report['partial'] = {'mean_dice': report.get('mean_dice'), 'miou': report.get('miou'),
                             'images': scored, 'of': report.get('gt_images'), 'note': PARTIAL_NOTE}
    for key in RANKING_FIGURES:
        if key in report:
            report[key] = None
    for row in (report.get('per_class') or {}).values():
        row['dice'] = row['iou'] = None
    return report


# ----------------------------------------------------------------------------- a whole folder

def score_folders(pred_dir, gt_dir, num_classes=NUM_CLASSES, size=OUTPUT_SIZE, workers=None,
                  expect_size=None):
    """Score every prediction PNG in pred_dir against the GT PNG of the same name in gt_dir.

    Args:
        pred_dir: folder of predicted label PNGs.
        gt_dir: folder of ground-truth label PNGs.
        num_classes: C; GT pixels outside [0, C) are ignored, predictions there are errors.
        size: the referee's resize target.
        workers: reader threads (default: up to 8, one per core).
        expect_size: if set, a prediction that is not expect_size x expect_size is an error
            (the referee would silently resize it).

    Returns:
        dict ready for JSON: ``status`` ('scored' or 'failed'), ``reason``,
        ``problems``, ``mean_dice`` (the referee's number; null unless scored),
        ``miou``, ``per_class``, ``confusion_matrix``, ``per_image_dice``,
        ``images``, ``missing``, ``extra``, ``referee_pairing_differs``,
        ``partial`` (when failed) and more; plus ``_summary``, the
        SegmentationMeter summary (numpy arrays; dropped when written to JSON).

    Example (skipped as a doctest: it reads a folder of predictions and one of GT):
        >>> score_folders('pred', 'GT')['reason']  # doctest: +SKIP
        'scored 100 images'
    """
    started = time.time()
    pred_names, pred_others = list_pngs(pred_dir)
    gt_names = list_pngs(gt_dir)[0]
    pairing = pair_by_name(pred_names, gt_names)
    problems = pairing_problems(pairing, pred_names, gt_names, gt_dir)
    warnings = ['ignored non-PNG entries in the prediction folder: ' + shown(pred_others)] \
        if pred_others else []
    counted = tally(score_pairs(pairing['paired'], pred_dir, gt_dir, num_classes, size, expect_size,
                                workers), num_classes)
    errors = counted['errors']
    if errors:
        problems.append('{} file{} could not be scored; first: {}'.format(
            len(errors), '' if len(errors) == 1 else 's', errors[0]))
    summary = counted['summary']
    report = {
        'status': 'failed' if problems else 'scored',
        'reason': problems[0] if problems else 'scored {} images'.format(counted['scored']),
        'problems': problems,
        'warnings': warnings + counted['warnings'],
        'mean_dice': json_number(counted['mean_dice']),
        'miou': json_number(summary['miou']),
        'images': counted['scored'],
        'classes': num_classes,
        'per_class': per_class_figures(summary, num_classes),
        'confusion_matrix': summary['confusion_matrix'].tolist(),
        'per_image_dice': counted['per_image'],
        'gt_images': len(gt_names),
        'pred_images': len(pred_names),
        'missing': pairing['missing'],
        'extra': pairing['extra'],
        'referee_pairing_differs': bool(pairing['referee_mispairs']),
        'referee_mispairs': [list(pair) for pair in pairing['referee_mispairs']],
        'errors': errors,
        'pred_dir': os.path.abspath(pred_dir),
        'gt_dir': os.path.abspath(gt_dir),
        'scoring_seconds': round(time.time() - started, 3),
        '_summary': summary,
    }
    return withhold_unless_scored(report)
