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
the file, and never assumes 600 images. A failed report carries no figure that
ranks a submission: ``mean_dice``, ``miou``, ``score`` are null (see README.md).

When run by evaluate.bash (the ``--solution-status`` options), it also judges
the solution's run: exit status, the single float on stdout, timeout, outputs
of the wrong size, and writes the full report.

This file is the command line. The work is done by one module per job; import
what you need from them (``from evaluation.folders import score_folders``):

    readpng.py    reading a PNG exactly as imageio does (read_png_like_imageio, read_label)
    pairing.py    pairing folders by name (list_pngs, pair_by_name)
    folders.py    scoring a pair and a folder (score_folders, referee_confusion_matrix)
    judge.py      judging a solution's run (parse_reported_seconds, evaluate_run)
    report.py     the text and JSON reports (format_report, report_json, write_json)

Python 3.6 syntax; numpy, OpenCV and Pillow only. Works both as a script and
imported as ``evaluation.score``.

Example (skipped as a doctest: it reads the folders of a solution's run):
    >>> from evaluation.folders import score_folders  # doctest: +SKIP
    >>> score_folders('output/solution/pred', 'test/GT')['status']  # doctest: +SKIP
    'scored'
"""
import argparse
import os
import sys

if __package__:
    from .contract import NUM_CLASSES, OUTPUT_SIZE
    from .folders import score_folders
    from .judge import EXIT_FAILED, EXIT_SCORED, evaluate_run
    from .report import format_report, write_json
else:  # run as a script (evaluate.bash): Python put this folder first on sys.path
    from contract import NUM_CLASSES, OUTPUT_SIZE
    from folders import score_folders
    from judge import EXIT_FAILED, EXIT_SCORED, evaluate_run
    from report import format_report, write_json



def parse_args(argv=None):
    """score.py's command line (see --help)."""
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


def score_only(args):
    """score.py without --solution-status: score the two folders; returns (report, exit code)."""
    for folder in (args.pred, args.gt):
        if not os.path.isdir(folder):
            reason = 'no such folder: {}'.format(folder)
            return {'status': 'failed', 'reason': reason, 'problems': [reason],
                    'mean_dice': None, 'miou': None}, EXIT_FAILED
    report = score_folders(args.pred, args.gt, args.classes, workers=args.workers,
                           expect_size=OUTPUT_SIZE if args.strict_size else None)
    return report, EXIT_SCORED if report['status'] == 'scored' else EXIT_FAILED


def main(argv=None):
    """Score (and, with --solution-status, judge a run); print the report; returns the exit code.

    Example (skipped as a doctest: it reads a folder of predictions and one of GT):
        >>> main(['-i', 'pred', '-g', 'GT', '--json', 'report.json', '-q'])  # doctest: +SKIP
        SCORED: scored 100 images
        0
    """
    args = parse_args(argv)
    report, status = evaluate_run(args) if args.solution_status is not None else score_only(args)
    report['exit_status'] = status
    if args.json:
        write_json(report, args.json)
    text = format_report(report)
    print(text.splitlines()[-1] if args.quiet else text)
    return status


if __name__ == '__main__':
    sys.exit(main())
