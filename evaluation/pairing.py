"""Pair predicted label PNGs with ground truth by file name, and say where the referee would not.

The referee pairs the two folders by sorted order and assumes 600 images, so one missing mask shifts
every later pair. Here files are paired by name; missing and extra names are reported, and when the
counts match but the names differ, the pairs the referee would make across different names are
listed.

Python 3.6 syntax; the standard library only.

Example:
    >>> pairing = pair_by_name(['a.png', 'c.png'], ['a.png', 'b.png'])
    >>> pairing['missing'], pairing['extra']
    (['b.png'], ['c.png'])
"""
import os

SHOWN = 5  # names shown on screen per list; the JSON has them all


def list_pngs(folder):
    """Sorted names of the PNG files in folder, and the sorted names of everything else.

    Args:
        folder: a folder; ``.png`` is matched case-insensitively, sub-folders count as "else".

    Example (skipped as a doctest: it lists a folder of predictions):
        >>> list_pngs('pred')  # doctest: +SKIP
        (['a.png', 'b.png'], ['notes.txt'])
    """
    pngs, others = [], []
    for name in os.listdir(folder):
        if name.lower().endswith('.png') and os.path.isfile(os.path.join(folder, name)):
            pngs.append(name)
        else:
            others.append(name)
    return sorted(pngs), sorted(others)


def pair_by_name(pred_names, gt_names):
    """Pair predictions with ground truth by file name.

    Args:
        pred_names, gt_names: file names (any order).

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


def shown(names):
    """The first SHOWN names, comma-separated, with ' ...' when there are more."""
    return ', '.join(names[:SHOWN]) + (' ...' if len(names) > SHOWN else '')


def pairing_problems(pairing, pred_names, gt_names, gt_dir):
    """One-line problems of a pairing: no GT, missing and extra names, how the referee would pair.

    Args:
        pairing: ``pair_by_name(pred_names, gt_names)``.
        pred_names, gt_names: the PNG names of both folders.
        gt_dir: the ground-truth folder, for the message.
    """
    problems = []
    if not gt_names:
        problems.append('no PNG files in the ground-truth folder {}'.format(gt_dir))
    if pairing['missing']:
        problems.append('{} of {} ground-truth images have no prediction: {}'.format(
            len(pairing['missing']), len(gt_names), shown(pairing['missing'])))
    if pairing['extra']:
        problems.append('{} predictions have no ground truth of the same name: {}'.format(
            len(pairing['extra']), shown(pairing['extra'])))
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
    return problems
