"""Score predicted label PNGs against ground truth exactly as the LPCVC 2023 referee does.

    python evaluation/score.py -i PRED_DIR -g GT_DIR [--json FILE] [--classes 14]

The referee's rule (see ../../shared/DESIGN.md section 2 and metrics.py): every
PNG is read with imageio.imread, cast to uint8, reduced to channel 0 if 3-D,
resized to 512x512 with INTER_AREA (then INTER_NEAREST, a no-op); a 14x14
confusion matrix counts the pixels whose GT is in [0, 14); an image scores the
NaN-mean over classes of 2*TP / (GT pixels + predicted pixels); the final
score is the plain mean over images.

Unlike the referee, this script pairs files by name (and says where the
referee's sorted-order pairing would pair them differently), reports missing
and extra files, treats predicted ids outside [0, classes) as an error naming
the file, and never assumes 600 images.

Reading: imageio 2.x reads PNGs through Pillow and converts some modes on the
way (a palette PNG becomes its RGB(A) colours, or 8-bit grey when the palette
is grey; 1-bit becomes 0/255; 16-bit stays uint16). ``read_png_like_imageio``
re-states that conversion with Pillow, so no imageio is needed and the arrays
are identical (8-bit greyscale PNGs, where no conversion applies, are decoded
with OpenCV: same array, twice as fast). Plain ``np.array(Image.open(f))``
(palette indices, 1-bit booleans) and ``cv2.imread(f, cv2.IMREAD_UNCHANGED)``
(BGR channel order, palettes expanded to colours) differ from imageio on
palette, 1-bit and colour PNGs; see README.md.

When run by evaluate.bash (the ``--solution-status`` options), it also judges
the solution's run: exit status, the single float on stdout, timeout, outputs
of the wrong size, and writes the full report.

Python 3.6 syntax; numpy, OpenCV and Pillow only. Works both as a script and
imported as ``evaluation.score``.
"""
import argparse
import io
import json
import math
import os
import re
import struct
import sys
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
from PIL import Image

if __package__:
    from . import metrics
    from .contract import CLASS_NAMES, NUM_CLASSES, ONLY_A_FLOAT, OUTPUT_SIZE as REFEREE_SIZE, REFEREE_FLOAT
else:  # run as a script: Python put this folder first on sys.path
    import metrics
    from contract import CLASS_NAMES, NUM_CLASSES, ONLY_A_FLOAT, OUTPUT_SIZE as REFEREE_SIZE, REFEREE_FLOAT

EXIT_SCORED, EXIT_FAILED, EXIT_TIMED_OUT = 0, 1, 2
SHOWN = 5  # names shown on screen per list; the JSON has them all


# ----------------------------------------------------------------------------- reading

def _palette_is_grayscale(image):
    """imageio's test: a palette image whose used palette entries are all grey."""
    if image.mode != 'P':
        return False
    if image.info.get('transparency', None):
        return False
    palette = np.asarray(image.getpalette()).reshape((-1, 3))
    start, stop = image.getextrema()
    return bool(np.allclose(np.diff(palette[start:stop + 1]), 0))


def _frame_like_imageio(image, is_gray):
    """imageio 2.x ``pil_get_frame`` for a still image with default arguments."""
    frame = image
    if image.mode == 'P' and is_gray:
        frame = image.convert('L')
    elif image.mode == 'P':
        palette = image.palette
        if image.info.get('transparency', None) is not None:
            frame = image.convert('RGBA')
        elif palette.mode in ('RGB', 'RGBA'):
            colours = np.frombuffer(palette.getdata()[1], np.uint8)
            if hasattr(palette, 'rawmode_saved'):
                palette.rawmode = palette.rawmode_saved
            mode = palette.rawmode if getattr(palette, 'rawmode', None) else palette.mode
            colours = colours.reshape(-1, len(mode))
            if colours.shape[1] == 3 or (colours.shape[1] == 4 and mode[-1] == 'X'):
                colours = np.column_stack(
                    (colours[:, :3], 255 * np.ones(colours.shape[0], colours.dtype)))
            if mode.startswith('BGR'):
                colours = colours[:, [2, 1, 0]] if colours.shape[1] == 3 else colours[:, [2, 1, 0, 3]]
            try:
                frame = colours[np.array(image, np.uint8)]
            except Exception:  # imageio falls back to Pillow here too
                frame = image.convert('RGBA')
        else:
            frame = image.convert('RGBA')
    elif 'A' in image.mode:
        frame = image.convert('RGBA')
    elif image.mode == 'CMYK':
        frame = image.convert('RGB')
    elif image.format == 'GIF' and image.mode == 'RGB':
        frame = image.convert('RGBA')
    if not isinstance(frame, np.ndarray) and frame.mode == '1':
        frame = frame.convert('L')  # 1-bit becomes 0/255
    if image.mode.startswith('I;16'):
        dtype = '>u2' if image.mode.endswith('B') else '<u2'
        if 'S' in image.mode:
            dtype = dtype.replace('u', 'i')
        array = np.frombuffer(frame.tobytes(), dtype).copy()
        return array.reshape(image.size[::-1])
    dtype = 'uint16' if image.format == 'PNG' and image.mode == 'I' else None
    return np.array(frame, dtype=dtype)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def is_plain_grey8_png(data):
    """True for an 8-bit greyscale PNG without a tRNS chunk (the usual label map).

    For these, OpenCV's decoder returns exactly imageio's array (no conversion applies), about
    twice as fast and without holding the GIL.
    """
    if data[:8] != PNG_SIGNATURE or data[12:16] != b'IHDR' or len(data) < 26:
        return False
    if data[24] != 8 or data[25] != 0:  # bit depth, colour type 0 = greyscale
        return False
    position = 8
    while position + 8 <= len(data):
        length = struct.unpack('>I', data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        if kind == b'IDAT':
            return True
        if kind == b'tRNS':
            return False
        position += 12 + length
    return False


def read_png_like_imageio(path):
    """The array ``imageio.imread(path)`` returns for a PNG (imageio 2.x, Pillow reader).

    Args:
        path: a PNG file.

    Returns:
        numpy array: (H, W) for grey, 1-bit and grey-palette PNGs; (H, W, 3)
        for RGB; (H, W, 4) for RGBA, grey+alpha and colour palettes (the
        palette's colours, not its indices); uint8, or uint16 for 16-bit PNGs.

    Example:
        >>> read_png_like_imageio('GT/img_001.png').shape  # doctest: +SKIP
        (512, 512)
    """
    with open(path, 'rb') as handle:
        data = handle.read()
    if is_plain_grey8_png(data):
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is not None and array.ndim == 2 and array.dtype == np.uint8:
            return array
    with Image.open(io.BytesIO(data)) as image:
        palette = image.palette
        if palette is not None and getattr(palette, 'dirty', False):
            palette.rawmode_saved = palette.rawmode
        image.load()  # decode now; raises on a truncated file, as imageio does
        is_gray = _palette_is_grayscale(image)
        return _frame_like_imageio(image, is_gray)


def read_label(path, size=REFEREE_SIZE):
    """Read a label PNG as the referee does: imageio read, uint8, channel 0, resize to size x size.

    Returns:
        (prepared (size, size) uint8 array, raw array as read).
    """
    raw = read_png_like_imageio(path)
    return metrics.referee_prepare(raw, size), raw


def referee_confusion_matrix(gt, pred, num_classes=NUM_CLASSES):
    """Confusion matrix of two prepared uint8 maps; GT outside [0, C) is skipped.

    Same result as ``metrics.confusion_matrix`` for in-range predictions, about
    ten times faster on 512x512 uint8 maps. The caller checks prediction ids.
    """
    code = gt.astype(np.intp) * num_classes
    code += pred
    code[gt >= num_classes] = num_classes * num_classes
    counts = np.bincount(code.ravel(), minlength=num_classes * num_classes + 1)
    return counts[:num_classes * num_classes].reshape(num_classes, num_classes).astype(np.int64)


# ----------------------------------------------------------------------------- pairing

def list_pngs(folder):
    """Sorted names of the PNG files in folder, and the sorted names of everything else."""
    pngs, others = [], []
    for name in os.listdir(folder):
        if name.lower().endswith('.png') and os.path.isfile(os.path.join(folder, name)):
            pngs.append(name)
        else:
            others.append(name)
    return sorted(pngs), sorted(others)


def pair_by_name(pred_names, gt_names):
    """Pair predictions with ground truth by file name.

    Returns:
        dict: ``paired`` (names in both, sorted), ``missing`` (GT names with no
        prediction), ``extra`` (predictions with no GT), ``referee_mispairs``
        (list of (prediction, GT) pairs the referee's sorted-order pairing would
        make between different names, when the counts match).

    Example:
        >>> pair_by_name(['a.png', 'c.png'], ['a.png', 'b.png'])['referee_mispairs']
        [('c.png', 'b.png')]
    """
    pred_set, gt_set = set(pred_names), set(gt_names)
    result = {
        'paired': sorted(pred_set & gt_set),
        'missing': sorted(gt_set - pred_set),
        'extra': sorted(pred_set - gt_set),
        'referee_mispairs': [],
    }
    if len(pred_names) == len(gt_names) and pred_set != gt_set:
        result['referee_mispairs'] = [(p, g) for p, g in zip(sorted(pred_names), sorted(gt_names))
                                      if p != g]
    return result


# ----------------------------------------------------------------------------- scoring

def _score_pair(job):
    """Read, prepare and count one (prediction, GT) pair; runs in a worker thread."""
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
    if pred.max() >= num_classes:
        bad = np.unique(pred[pred >= num_classes])
        out['error'] = '{}: predicted ids outside [0, {}): {}{} ({} pixels); the referee ' \
                       'crashes or miscounts on these'.format(
                           name, num_classes, ', '.join(str(v) for v in bad[:10].tolist()),
                           ' ...' if bad.size > 10 else '', int((pred >= num_classes).sum()))
        return out
    out['cm'] = referee_confusion_matrix(gt, pred, num_classes)
    return out


def _json_number(value):
    """float for JSON; None for NaN or infinity (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def class_names(num_classes):
    if num_classes == NUM_CLASSES:
        return list(CLASS_NAMES)
    return [str(index) for index in range(num_classes)]


def score_folders(pred_dir, gt_dir, num_classes=NUM_CLASSES, size=REFEREE_SIZE, workers=None,
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
        ``problems``, ``mean_dice`` (the referee's number over the scored
        images), ``miou``, ``per_class``, ``confusion_matrix``,
        ``per_image_dice``, ``images``, ``missing``, ``extra``,
        ``referee_pairing_differs`` and more; plus ``_summary``, the
        SegmentationMeter summary (numpy arrays; dropped when written to JSON).
    """
    started = time.time()
    pred_names, pred_others = list_pngs(pred_dir)
    gt_names, gt_others = list_pngs(gt_dir)
    pairing = pair_by_name(pred_names, gt_names)
    problems, warnings = [], []
    if not gt_names:
        problems.append('no PNG files in the ground-truth folder {}'.format(gt_dir))
    if pairing['missing']:
        problems.append('{} of {} ground-truth images have no prediction: {}{}'.format(
            len(pairing['missing']), len(gt_names), ', '.join(pairing['missing'][:SHOWN]),
            ' ...' if len(pairing['missing']) > SHOWN else ''))
    if pairing['extra']:
        problems.append('{} predictions have no ground truth of the same name: {}{}'.format(
            len(pairing['extra']), ', '.join(pairing['extra'][:SHOWN]),
            ' ...' if len(pairing['extra']) > SHOWN else ''))
    if pairing['referee_mispairs']:
        first = pairing['referee_mispairs'][0]
        problems.append('names differ but counts match: the referee pairs by sorted order and would '
                        'score {} of the {} pairs across different names (e.g. prediction {} '
                        'against ground truth {})'.format(
                            len(pairing['referee_mispairs']), len(gt_names), first[0], first[1]))
    elif gt_names and (pairing['missing'] or pairing['extra']):
        problems.append('counts differ ({} predictions, {} ground truths): the referee, which pairs '
                        'by sorted order and expects a fixed count, would mis-pair or fail'.format(
                            len(pred_names), len(gt_names)))
    if pred_others:
        warnings.append('ignored non-PNG entries in the prediction folder: {}{}'.format(
            ', '.join(pred_others[:SHOWN]), ' ...' if len(pred_others) > SHOWN else ''))

    jobs = [(name, os.path.join(pred_dir, name), os.path.join(gt_dir, name), num_classes, size,
             expect_size) for name in pairing['paired']]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(_score_pair, jobs))
    else:
        results = [_score_pair(job) for job in jobs]

    meter = metrics.SegmentationMeter(num_classes)
    per_image, errors = {}, []
    image_scores = []
    for result in results:  # sorted by name: the referee's summation order
        if result['warning']:
            warnings.append(result['warning'])
        if result['error']:
            errors.append(result['error'])
            continue
        meter.update_confusion_matrix(result['cm'])
        image_score = metrics.image_mean_dice(result['cm'])
        image_scores.append(image_score)
        per_image[result['name']] = _json_number(image_score)
    if errors:
        problems.append('{} file{} could not be scored; first: {}'.format(
            len(errors), '' if len(errors) == 1 else 's', errors[0]))
    undefined = sum(1 for value in image_scores if math.isnan(value))
    if undefined:
        warnings.append('{} images have no GT pixel in [0, {}) and no prediction there: their score '
                        'is NaN, and so is the referee\'s mean'.format(undefined, num_classes))
    # The referee adds image scores in sorted order and divides by the count.
    mean_dice = sum(image_scores) / len(image_scores) if image_scores else float('nan')

    summary = meter.summary()
    cm = summary['confusion_matrix']
    names = class_names(num_classes)
    gt_pixels, pred_pixels = cm.sum(axis=1), cm.sum(axis=0)
    per_class = {}
    for index, name in enumerate(names):
        per_class[name] = {
            'id': index,
            'dice': _json_number(summary['per_class_dice'][index]),
            'iou': _json_number(summary['per_class_iou'][index]),
            'gt_pixels': int(gt_pixels[index]),
            'pred_pixels': int(pred_pixels[index]),
        }
    report = {
        'status': 'failed' if problems else 'scored',
        'reason': problems[0] if problems else 'scored {} images'.format(len(image_scores)),
        'problems': problems,
        'warnings': warnings,
        'mean_dice': _json_number(mean_dice),
        'miou': _json_number(summary['miou']),
        'images': len(image_scores),
        'classes': num_classes,
        'per_class': per_class,
        'confusion_matrix': cm.tolist(),
        'per_image_dice': per_image,
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
    return report


# ----------------------------------------------------------------------------- a solution's run

def parse_reported_seconds(text):
    """The solution's printed inference seconds, or a problem.

    The referee greps stdout for ``[0-9]+\\.[0-9]+``; stdout must be exactly one such float.

    Returns:
        (seconds or None, problem text or None).

    Example:
        >>> parse_reported_seconds('12.5\\n')
        (12.5, None)
    """
    match = ONLY_A_FLOAT.match(text)
    if match:
        return float(match.group(1)), None
    shown = text.strip()
    shown = repr(shown if len(shown) <= 120 else shown[:117] + '...')
    numbers = REFEREE_FLOAT.findall(text)
    if not text.strip():
        return None, ('stdout is empty: the solution must print its summed inference seconds as one '
                      'float such as 12.345')
    if not numbers:
        return None, ('stdout has no number of the form 12.345 (the referee greps [0-9]+\\.[0-9]+): '
                      '{}'.format(shown))
    if len(numbers) > 1:
        return None, ('stdout has {} numbers, the referee needs exactly one: {}; print only the '
                      'summed inference seconds and send everything else to stderr'.format(
                          len(numbers), shown))
    return None, ('stdout has text besides the one float: {}; print only the float (e.g. '
                  'print("%.6f" % seconds)) and send everything else to stderr'.format(shown))


def _tail(path, lines=20):
    if not path or not os.path.isfile(path):
        return ''
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 8192))
        text = handle.read().decode('utf-8', 'replace')
    return '\n'.join(text.splitlines()[-lines:])


def _exit_description(status):
    if status > 128:
        number = status - 128
        hint = ' (SIGKILL: often the out-of-memory killer)' if number == 9 else ''
        return 'was killed by signal {}{}'.format(number, hint)
    return 'exited with status {}'.format(status)


def evaluate_run(args):
    """Judge a solution's run (evaluate.bash's data) and score its outputs; returns (report, exit)."""
    stdout_text = ''
    if args.solution_stdout and os.path.isfile(args.solution_stdout):
        with open(args.solution_stdout, 'rb') as handle:
            stdout_text = handle.read().decode('utf-8', 'replace')
    stderr_tail = _tail(args.stderr_log)
    last_stderr = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else 'no stderr'
    gt_names = list_pngs(args.gt)[0] if os.path.isdir(args.gt) else []
    written = len(list_pngs(args.pred)[0]) if os.path.isdir(args.pred) else 0
    base = {
        'name': args.name,
        'solution': args.solution,
        'data_dir': args.data_dir,
        'timeout': args.timeout,
        'solution_exit_status': args.solution_status,
        'wall_seconds': round(args.wall_seconds, 3),
        'stdout': stdout_text[:2000],
        'stderr_log': args.stderr_log,
        'stderr_tail': stderr_tail,
        'outputs_written': written,
        'python': sys.version.split()[0],
    }
    status = args.solution_status
    timed_out = status in (124, 137) and args.timeout is not None and \
        args.wall_seconds >= args.timeout - 0.05
    if timed_out:
        reason = 'timed out: still running after {:g} s (TIMEOUT={:g}); {} of {} outputs written'.format(
            args.timeout, args.timeout, written, len(gt_names))
        base.update(status='timed_out', reason=reason, problems=[reason], images=len(gt_names))
        return base, EXIT_TIMED_OUT
    if status != 0:
        reason = 'the solution {}: {}'.format(_exit_description(status), last_stderr)
        base.update(status='failed', reason=reason, problems=[reason], images=len(gt_names))
        return base, EXIT_FAILED

    seconds, stdout_problem = parse_reported_seconds(stdout_text)
    report = score_folders(args.pred, args.gt, args.classes, workers=args.workers,
                           expect_size=REFEREE_SIZE)
    problems = ([stdout_problem] if stdout_problem else []) + report['problems']
    images = report['gt_images']
    if seconds is not None and seconds <= 0:
        problems.append('the solution reported {} seconds; the referee divides by it'.format(seconds))
    timing = {'reported_seconds': seconds}
    per_image_reported = seconds / images if seconds and images else None
    per_image_wall = args.wall_seconds / images if images else None
    dice = report['mean_dice']
    timing['ms_per_image_reported'] = _json_number(per_image_reported * 1000) \
        if per_image_reported else None
    timing['ms_per_image_wall'] = _json_number(per_image_wall * 1000) if per_image_wall else None
    timing['score'] = _json_number(dice / per_image_reported) \
        if dice is not None and per_image_reported else None
    timing['score_wall'] = _json_number(dice / per_image_wall) \
        if dice is not None and per_image_wall else None
    report.update(base)
    report.update(timing)
    report['images'] = images
    report['scored_images'] = len(report['per_image_dice'])
    report['problems'] = problems
    if problems:
        report['status'], report['reason'] = 'failed', problems[0]
        return report, EXIT_FAILED
    report['status'] = 'scored'
    report['reason'] = 'scored {} images: mean Dice {:.4f}, {:.1f} ms per image reported, ' \
                       'score {:.2f}'.format(images, dice, per_image_reported * 1000, timing['score'])
    return report, EXIT_SCORED


# ----------------------------------------------------------------------------- output

def _fmt(value, pattern='{:.4f}'):
    return '-' if value is None else pattern.format(value)


def format_report(report, class_table=True):
    """Human-readable text of a report from score_folders or evaluate_run."""
    lines = []
    summary = report.get('_summary')
    if class_table and summary is not None and summary['images']:
        lines.append(metrics.format_table(summary, class_names(report['classes'])))
        lines.append('')
    if 'wall_seconds' in report and 'mean_dice' not in report:  # the run failed: nothing scored
        rows = [('solution', report.get('solution')), ('images', report.get('images')),
                ('outputs written', report.get('outputs_written')),
                ('wall seconds', _fmt(report.get('wall_seconds'), '{:.3f}'))]
        width = max(len(key) for key, _ in rows)
        lines.extend('{:<{}}  {}'.format(key, width, value) for key, value in rows)
    elif 'wall_seconds' in report:
        rows = [
            ('solution', report.get('solution')),
            ('images', report.get('images')),
            ('images scored', report.get('scored_images')),
            ('mean Dice (referee)', _fmt(report.get('mean_dice'))),
            ('mIoU', _fmt(report.get('miou'))),
            ('reported seconds', _fmt(report.get('reported_seconds'), '{:.3f}')),
            ('wall seconds', _fmt(report.get('wall_seconds'), '{:.3f}')),
            ('ms per image (reported)', _fmt(report.get('ms_per_image_reported'), '{:.1f}')),
            ('ms per image (wall)', _fmt(report.get('ms_per_image_wall'), '{:.1f}')),
            ('score = Dice / s per image (reported)', _fmt(report.get('score'), '{:.3f}')),
            ('score with wall-clock', _fmt(report.get('score_wall'), '{:.3f}')),
        ]
        width = max(len(key) for key, _ in rows)
        lines.extend('{:<{}}  {}'.format(key, width, value) for key, value in rows)
    else:
        lines.append('images {}   mean Dice (referee) {}   mIoU {}'.format(
            report.get('images'), _fmt(report.get('mean_dice')), _fmt(report.get('miou'))))
    for warning in report.get('warnings', [])[:SHOWN]:
        lines.append('warning: ' + warning)
    for problem in report.get('problems', [])[1:]:
        lines.append('problem: ' + problem)
    if report.get('status') != 'scored' and report.get('stderr_tail'):
        lines.append('last lines of {}:'.format(report.get('stderr_log')))
        lines.extend('    ' + line for line in report['stderr_tail'].splitlines()[-8:])
    lines.append('{}: {}'.format(report.get('status', '?').upper().replace('_', ' '),
                                 report.get('reason')))
    return '\n'.join(lines)


JSON_FIRST = ('name', 'status', 'reason', 'exit_status', 'images', 'mean_dice', 'miou', 'score',
              'score_wall', 'reported_seconds', 'wall_seconds', 'ms_per_image_reported',
              'ms_per_image_wall', 'problems', 'warnings')


def report_json(report):
    """JSON text of a report: headline keys first, private keys dropped, number lists on one line."""
    keys = [key for key in JSON_FIRST if key in report]
    keys += sorted(key for key in report if key not in JSON_FIRST and not key.startswith('_'))
    text = json.dumps(OrderedDict((key, report[key]) for key in keys), indent=1, allow_nan=False)
    return re.sub(r'\[\s+([-+0-9.eE,\s]+?)\s+\]',
                  lambda match: '[' + ' '.join(match.group(1).split()) + ']', text) + '\n'


def write_json(report, path):
    """Write report_json(report) to path; the folder is created."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(path, 'w') as handle:
        handle.write(report_json(report))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Score predicted label PNGs against ground truth with the LPCVC 2023 referee\'s '
                    'rule (mean over images of the NaN-mean per-class Dice, after imageio read, '
                    'channel 0, INTER_AREA resize to 512). Files are paired by name. Exit status: '
                    '0 scored, 1 failed (missing/extra files, unreadable files, ids out of range), '
                    '2 timed out (only with --solution-status).')
    parser.add_argument('-i', '--pred', required=True, help='folder of predicted PNGs')
    parser.add_argument('-g', '--gt', required=True, help='folder of ground-truth PNGs')
    parser.add_argument('--json', help='write the full report (per class, per image, '
                                       'confusion matrix) to this file')
    parser.add_argument('--classes', type=int, default=NUM_CLASSES,
                        help='number of classes (default 14)')
    parser.add_argument('--workers', type=int, default=None,
                        help='reader threads (default: up to 8, one per core)')
    parser.add_argument('--strict-size', action='store_true',
                        help='a prediction that is not 512x512 is an error (the referee resizes it)')
    parser.add_argument('-q', '--quiet', action='store_true', help='print only the last line')
    run = parser.add_argument_group('judging a solution\'s run (used by evaluate.bash)')
    run.add_argument('--solution-status', type=int, default=None,
                     help='the solution\'s exit status (124 or 137 with --wall-seconds >= --timeout '
                          'means it timed out)')
    run.add_argument('--solution-stdout', help='file holding the solution\'s stdout')
    run.add_argument('--stderr-log', help='file holding the solution\'s stderr')
    run.add_argument('--wall-seconds', type=float, default=0.0, help='wall-clock seconds of the run')
    run.add_argument('--timeout', type=float, default=None, help='the time limit it ran under')
    run.add_argument('--name', default=None, help='submission name')
    run.add_argument('--solution', default=None, help='path of the solution archive')
    run.add_argument('--data-dir', default=None, help='the data folder (IMG/ and GT/)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.solution_status is not None:
        report, status = evaluate_run(args)
    else:
        if not os.path.isdir(args.pred) or not os.path.isdir(args.gt):
            missing = args.pred if not os.path.isdir(args.pred) else args.gt
            report = {'status': 'failed', 'reason': 'no such folder: {}'.format(missing),
                      'problems': ['no such folder: {}'.format(missing)]}
        else:
            report = score_folders(args.pred, args.gt, args.classes, workers=args.workers,
                                   expect_size=REFEREE_SIZE if args.strict_size else None)
        status = EXIT_SCORED if report['status'] == 'scored' else EXIT_FAILED
    report['exit_status'] = status
    if args.json:
        write_json(report, args.json)
    if args.quiet:
        print(format_report(report).splitlines()[-1])
    else:
        print(format_report(report))
    return status


if __name__ == '__main__':
    sys.exit(main())
