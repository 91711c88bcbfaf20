"""Judge a solution's run the way evaluate.bash reports it: exit status, timeout, stdout, outputs.

evaluate.bash runs ``timeout T python SOLUTION.pyz -i IMG -o PRED``, keeps stdout and stderr in
files and passes them here (``score.py --solution-status ...``). The referee loses the exit status
and greps stdout for ``[0-9]+\\.[0-9]+``; here a non-zero exit, a timeout, or a stdout that is not
exactly one such float fails the run, and the outputs are scored by ``folders.score_folders``.

score = mean Dice / (printed seconds / images), the referee's formula; ``score_wall`` uses the
wall clock instead. Both, and the mean Dice, are null unless the status is ``scored``.

Python 3.6 syntax; the standard library, numpy, OpenCV and Pillow only.

Example:
    >>> parse_reported_seconds('12.5\\n')
    (12.5, None)
"""
import os
import sys

if __package__:
    from .contract import OUTPUT_SIZE, REFEREE_FLOAT, only_a_float
    from .folders import RANKING_FIGURES, json_number, score_folders, withhold_unless_scored
    from .pairing import list_pngs
else:  # run as a script beside score.py: Python put this folder first on sys.path
    from contract import OUTPUT_SIZE, REFEREE_FLOAT, only_a_float
    from folders import RANKING_FIGURES, json_number, score_folders, withhold_unless_scored
    from pairing import list_pngs

EXIT_SCORED, EXIT_FAILED, EXIT_TIMED_OUT = 0, 1, 2


def parse_reported_seconds(text):
    """The solution's printed inference seconds, or a problem.

    The referee greps stdout for ``[0-9]+\\.[0-9]+``; stdout must be exactly one such float
    (``contract.only_a_float``). The problem says what else was there.

    Args:
        text: the solution's whole stdout.

    Returns:
        (seconds or None, problem text or None).

    Example:
        >>> parse_reported_seconds('1.5\\n2.5\\n')[1][:17]
        'stdout has 2 numb'
    """
    seconds = only_a_float(text)
    if seconds is not None:
        return seconds, None
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
    """The last lines of a text file (at most its last 8 KiB); '' when there is no such file."""
    if not path or not os.path.isfile(path):
        return ''
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 8192))
        text = handle.read().decode('utf-8', 'replace')
    return '\n'.join(text.splitlines()[-lines:])


def _exit_description(status):
    """'exited with status N', or the signal for the shell's 128+N statuses."""
    if status > 128:
        number = status - 128
        hint = ' (SIGKILL: often the out-of-memory killer)' if number == 9 else ''
        return 'was killed by signal {}{}'.format(number, hint)
    return 'exited with status {}'.format(status)


def run_facts(args):
    """What is known about the run before any output is read: the report's common keys.

    Args:
        args: score.py's parsed arguments (``--solution-status`` and friends).

    Returns:
        (dict: name, solution, exit status, wall seconds, stdout (first 2000 characters), the
        stderr log and its tail, outputs written, the scorer's Python; the whole stdout text).
    """
    stdout_text = ''
    if args.solution_stdout and os.path.isfile(args.solution_stdout):
        with open(args.solution_stdout, 'rb') as handle:
            stdout_text = handle.read().decode('utf-8', 'replace')
    return {
        'name': args.name,
        'solution': args.solution,
        'data_dir': args.data_dir,
        'timeout': args.timeout,
        'solution_exit_status': args.solution_status,
        'wall_seconds': round(args.wall_seconds, 3),
        'stdout': stdout_text[:2000],
        'stderr_log': args.stderr_log,
        'stderr_tail': _tail(args.stderr_log),
        'outputs_written': len(list_pngs(args.pred)[0]) if os.path.isdir(args.pred) else 0,
        'python': sys.version.split()[0],
    }, stdout_text


def judge_exit(args, base):
    """(report, exit code) when the run timed out or exited non-zero, else None.

    A timeout is exit status 124 (SIGTERM) or 137 (SIGKILL after --kill-after) with a wall clock
    at the limit: a solution that exits 124 by itself early is a plain failure.
    """
    status = args.solution_status
    images = len(list_pngs(args.gt)[0]) if os.path.isdir(args.gt) else 0
    if status in (124, 137) and args.timeout is not None and args.wall_seconds >= args.timeout - 0.05:
        reason = 'timed out: still running after {:g} s (TIMEOUT={:g}); {} of {} outputs written'.format(
            args.timeout, args.timeout, base['outputs_written'], images)
        base.update(dict.fromkeys(RANKING_FIGURES), status='timed_out', reason=reason, problems=[reason],
                    images=images)  # nothing was scored: the ranking figures are null
        return base, EXIT_TIMED_OUT
    if status != 0:
        tail = base['stderr_tail'].strip()
        reason = 'the solution {}: {}'.format(_exit_description(status),
                                              tail.splitlines()[-1] if tail else 'no stderr')
        base.update(dict.fromkeys(RANKING_FIGURES), status='failed', reason=reason, problems=[reason],
                    images=images)
        return base, EXIT_FAILED
    return None


def timing_figures(seconds, images, wall_seconds, dice):
    """Milliseconds per image both ways and the referee's score = Dice / (seconds per image).

    Args:
        seconds: the printed seconds (None when stdout was invalid).
        images: the GT image count (the referee divides by its fixed count).
        wall_seconds: the wall clock of the run.
        dice: the mean Dice, or None.

    Example:
        >>> timing_figures(3.0, 100, 10.0, 0.5)['score']
        16.666666666666668
    """
    per_image = seconds / images if seconds and images else None
    per_image_wall = wall_seconds / images if images else None
    return {
        'reported_seconds': seconds,
        'ms_per_image_reported': json_number(per_image * 1000) if per_image else None,
        'ms_per_image_wall': json_number(per_image_wall * 1000) if per_image_wall else None,
        'score': json_number(dice / per_image) if dice is not None and per_image else None,
        'score_wall': json_number(dice / per_image_wall) if dice is not None and per_image_wall else None,
    }


def evaluate_run(args):
    """Judge a solution's run (evaluate.bash's data) and score its outputs.

    Args:
        args: score.py's parsed arguments: -i PRED, -g GT, --solution-status, --solution-stdout,
            --stderr-log, --wall-seconds, --timeout, --name, --solution, --data-dir.

    Returns:
        (report dict, exit code): EXIT_SCORED, EXIT_FAILED or EXIT_TIMED_OUT. A report whose status
        is not 'scored' has null ``mean_dice``, ``miou``, ``score`` and ``score_wall``.
    """
    base, stdout_text = run_facts(args)
    ended = judge_exit(args, base)
    if ended is not None:
        return ended

    seconds, stdout_problem = parse_reported_seconds(stdout_text)
    report = score_folders(args.pred, args.gt, args.classes, workers=args.workers, expect_size=OUTPUT_SIZE)
    problems = ([stdout_problem] if stdout_problem else []) + report['problems']
    images = report['gt_images']
    if seconds is not None and seconds <= 0:
        problems.append('the solution reported {} seconds; the referee divides by it'.format(seconds))
    dice = report['mean_dice'] if report['status'] == 'scored' else None
    report.update(base)
    report.update(timing_figures(seconds, images, args.wall_seconds, dice))
    report.update(images=images, scored_images=len(report['per_image_dice']), problems=problems)
    if problems:
        report['status'], report['reason'] = 'failed', problems[0]
        return withhold_unless_scored(report), EXIT_FAILED
    report['status'] = 'scored'
    report['reason'] = 'scored {} images: mean Dice {:.4f}, {:.1f} ms per image reported, ' \
                       'score {:.2f}'.format(images, dice, report['ms_per_image_reported'], report['score'])
    return report, EXIT_SCORED
