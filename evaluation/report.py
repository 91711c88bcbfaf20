"""Text and JSON of a report from ``folders.score_folders`` or ``judge.evaluate_run``.

The text ends with one line, ``STATUS: reason`` (``score.py -q`` prints only that line). The JSON
puts the headline keys first, drops private keys (``_summary``) and writes NaN as null.

Python 3.6 syntax; the standard library only (and metrics.py for the class table).

Example:
    >>> print(format_report({'status': 'failed', 'reason': 'no such folder: pred', 'problems': []}))
    images None   mean Dice (referee) -   mIoU -
    FAILED: no such folder: pred
"""
import json
import os
import re
from collections import OrderedDict

if __package__:
    from . import metrics
    from .folders import class_names
    from .pairing import SHOWN
else:  # run as a script beside score.py: Python put this folder first on sys.path
    import metrics
    from folders import class_names
    from pairing import SHOWN

JSON_FIRST = ('name', 'status', 'reason', 'exit_status', 'images', 'mean_dice', 'miou', 'score',
              'score_wall', 'reported_seconds', 'wall_seconds', 'ms_per_image_reported',
              'ms_per_image_wall', 'problems', 'warnings', 'partial')


def _fmt(value, pattern='{:.4f}'):
    """A number for the text report; '-' for None (not computed, NaN, or withheld)."""
    return '-' if value is None else pattern.format(value)


def _rows(rows):
    """'key   value' lines, the keys padded to one width."""
    width = max(len(key) for key, _ in rows)
    return ['{:<{}}  {}'.format(key, width, value) for key, value in rows]


def _partial_line(report):
    """What the scored files gave, for a failed report that has ``partial`` (never a result)."""
    partial = report['partial']
    return 'partial, not a result: mean Dice {} and mIoU {} over the {} of {} images that could be ' \
           'scored'.format(_fmt(partial['mean_dice']), _fmt(partial['miou']), partial['images'], partial['of'])


def _run_rows(report):
    """The table of a judged run: all figures when scored; what is known of the run otherwise."""
    if report.get('status') != 'scored':
        return _rows([('solution', report.get('solution')), ('images', report.get('images')),
                      ('outputs written', report.get('outputs_written')),
                      ('reported seconds', _fmt(report.get('reported_seconds'), '{:.3f}')),
                      ('wall seconds', _fmt(report.get('wall_seconds'), '{:.3f}'))])
    return _rows([
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
    ])


def format_report(report, class_table=True):
    """Human-readable text of a report from score_folders or evaluate_run.

    Args:
        report: the report dict (with its private ``_summary`` for the class table).
        class_table: print the per-class Dice / IoU table first (only for a scored report: a
            failed one withholds its figures).

    Returns:
        text whose last line is ``STATUS: reason``.
    """
    lines = []
    summary = report.get('_summary')
    scored = report.get('status') == 'scored'
    if class_table and scored and summary is not None and summary['images']:
        lines.append(metrics.format_table(summary, class_names(report['classes'])))
        lines.append('')
    if 'wall_seconds' in report:
        lines.extend(_run_rows(report))
    else:
        lines.append('images {}   mean Dice (referee) {}   mIoU {}'.format(
            report.get('images'), _fmt(report.get('mean_dice')), _fmt(report.get('miou'))))
    if report.get('partial'):
        lines.append(_partial_line(report))
    for warning in report.get('warnings', [])[:SHOWN]:
        lines.append('warning: ' + warning)
    for problem in report.get('problems', [])[1:]:
        lines.append('problem: ' + problem)
    if not scored and report.get('stderr_tail'):
        lines.append('last lines of {}:'.format(report.get('stderr_log')))
        lines.extend('    ' + line for line in report['stderr_tail'].splitlines()[-8:])
    lines.append('{}: {}'.format(report.get('status', '?').upper().replace('_', ' '),
                                 report.get('reason')))
    return '\n'.join(lines)


def report_json(report):
    """JSON text of a report: headline keys first, private keys dropped, number lists on one line.

    Example:
        >>> print(report_json({'status': 'scored', 'mean_dice': 0.5, '_summary': None}), end='')
        {
         "status": "scored",
         "mean_dice": 0.5
        }
    """
    keys = [key for key in JSON_FIRST if key in report]
    keys += sorted(key for key in report if key not in JSON_FIRST and not key.startswith('_'))
    text = json.dumps(OrderedDict((key, report[key]) for key in keys), indent=1, allow_nan=False)
    # one confusion-matrix row per line instead of one number per line
    return re.sub(r'\[\s+([-+0-9.eE,\s]+?)\s+\]',
                  lambda match: '[' + ' '.join(match.group(1).split()) + ']', text) + '\n'


def write_json(report, path):
    """Write report_json(report) to path; the folder is created.

    Args:
        report: the report dict.
        path: the JSON file to write.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(path, 'w') as handle:
        handle.write(report_json(report))
