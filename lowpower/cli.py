"""The one ``lowpower`` command: every tool of the toolkit as ``lowpower <command> [<subcommand>] ...``.

``lowpower --help`` lists every command, grouped by job; ``lowpower <command> --help`` explains one.
``python -m lowpower`` is the same program. Each command is a module's ``main(argv)``, imported only
when that command runs, so ``lowpower --help`` starts without torch.

Example:
    >>> main(["--help"])  # doctest: +ELLIPSIS
    usage: lowpower <command> [<subcommand>] [options]
    ...
    0
"""
import importlib
import os
import sys

from lowpower.safe import UserError

PROG = "lowpower"
# (job, [(command words, "module:function", one line)]). The order is the order of the workflow.
COMMANDS = [
    ("data", [
        ("data synthetic", "lowpower.data.synthetic.cli:main", "write the built-in synthetic LPCVC data set"),
        ("data check", "lowpower.data.check:main", "check a data set's layout, sizes and class ids before training"),
    ]),
    ("train and test (also ./train.py and ./test.py)", [
        ("train", "lowpower.train.trainer:main", "train a network from a YAML config"),
        ("test", "lowpower.train.tester:main", "score a checkpoint on the val split by the referee's rule"),
    ]),
    ("compress", [
        ("quantize ptq", "lowpower.compress.quantize.ptq:main", "post-training static int8: fuse, calibrate, convert"),
        ("quantize qat-convert", "lowpower.compress.quantize.qat:main", "a QAT checkpoint -> the int8 checkpoint"),
        ("quantize study", "lowpower.compress.quantize.study:main",
         "fixed-point study: val mean Dice over weight/activation bit widths"),
        ("prune", "lowpower.compress.prune.cli:main", "structured channel pruning with Torch-Pruning"),
        ("import-sample", "lowpower.compress.import_sample:main",
         "the official sample's FANet checkpoint -> a lowpower checkpoint"),
    ]),
    ("ship (./compress.sh wraps package)", [
        ("package", "lowpower.ship.package:main", "checkpoint -> self-contained solution.pyz, verified"),
        ("export", "lowpower.ship.export:main", "checkpoint -> ONNX (opset 13), checked with onnxruntime"),
        ("presubmit", "lowpower.ship.presubmit.cli:main", "check a solution.pyz as the referee would run it"),
        ("device-api fetch", "lowpower.ship.device_api.cli:main_fetch",
         "download the device's torch 1.10.2 wheels once and index their API"),
        ("device-api check", "lowpower.ship.device_api.cli:main_check",
         "check device-side code against the device's real torch/torchvision API"),
    ]),
    ("measure", [
        ("bench models", "lowpower.measure.bench:main", "params, GFLOPs, latency and memory of the zoo's networks"),
        ("bench compare", "lowpower.measure.compare:main", "two packages run in turns: B/A ratios of time and memory"),
        ("bench sweep", "lowpower.measure.sweep:main", "one checkpoint at several input sizes: Dice, time, score"),
        ("bench pareto", "lowpower.measure.pareto:main", "packages' Dice against time, and the Pareto front"),
        ("bench zoo", "lowpower.measure.zoo:main", "one table from make zoo: Dice, ms/img fp32 and int8, GFLOPs"),
        ("bench recipes", "lowpower.measure.recipes:main", "arms x seeds of a recipe study: val Dice vs the baseline"),
        ("bench variants", "lowpower.measure.variants:main", "precision variants of one checkpoint: Dice and time"),
        ("bench pipeline", "lowpower.measure.pipeline:main", "the steps of a compression pipeline side by side"),
        ("bench solution", "lowpower.measure.solution:main", "where a package's time goes: start-up, model, writes"),
        ("bench sample", "lowpower.measure.sample:main", "our package against the official sample, in turns"),
    ]),
    ("reference", [
        ("config", "lowpower.config:main", "every config key, its type, default and meaning"),
        ("demo", "lowpower.measure.demo:main", "summarise a demo run: val Dice, package score, files"),
    ]),
]
TABLE = {words: target for _, rows in COMMANDS for words, target, _ in rows}


def usage(prefix=""):
    """The help text: every command under ``prefix`` (all when empty), grouped by job, a line each."""
    lines = ["usage: %s %s<command> [<subcommand>] [options]" % (PROG, prefix + " " if prefix else ""), ""]
    if not prefix:
        lines += ["The lowpower toolkit: train, compress, package and score LPCVC-style segmentation entries.",
                  "Each command has its own --help.", ""]
    width = max(len(words) for words in TABLE) + 2
    for job, rows in COMMANDS:
        shown = [(words, summary) for words, _, summary in rows if not prefix or words.startswith(prefix + " ")]
        if shown:
            lines.append("%s:" % job)
            lines += ["  %-*s %s" % (width, words, summary) for words, summary in shown]
            lines.append("")
    return "\n".join(lines).rstrip()


def find(argv):
    """The longest command in the table that ``argv`` starts with: ``(words, rest)``, or ``(None, argv)``.

    Example:
        >>> find(["quantize", "ptq", "runs/demo/best.pt"])
        ('quantize ptq', ['runs/demo/best.pt'])
    """
    for length in (2, 1):
        words = " ".join(argv[:length])
        if len(argv) >= length and words in TABLE:
            return words, list(argv[length:])
    return None, list(argv)


def load(target):
    """Import ``"module:function"`` and return the function."""
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def run(words, argv):
    """Run one command; a refusal (``UserError``) or a failed read or write (OSError) is one line and exit 1.

    ``LOWPOWER_TRACEBACK=1`` shows the whole traceback instead.

    Example:
        >>> run("package", ["no/such/best.pt", "-o", "/tmp/x.pyz"])  # doctest: +SKIP
        1
    """
    try:
        status = load(TABLE[words])(argv)
    except (UserError, OSError) as error:
        if os.environ.get("LOWPOWER_TRACEBACK"):
            raise
        text = " ".join(str(error).split()) or type(error).__name__
        print("%s %s: error: %s" % (PROG, words, text), file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


def main(argv=None):
    """Run ``lowpower ARGV``; returns the exit status (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    words, rest = find(argv)
    if words is not None:
        return run(words, rest)
    group = argv[0] if argv and not argv[0].startswith("-") else ""
    if group and not any(w.startswith(group + " ") for w in TABLE):
        print("%s: error: unknown command %r; `%s --help` lists them" % (PROG, group, PROG), file=sys.stderr)
        return 2
    print(usage(group))
    wants_help = any(arg in ("-h", "--help") for arg in argv[:2])
    return 0 if wants_help else 2
