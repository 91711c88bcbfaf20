"""lowpower presubmit SOLUTION.pyz: catch every reason the referee could reject a submission.

Checks, in order (FAIL = the referee would reject it or score it as invalid; WARN = legal but
likely to score badly or to break on the device; INFO = numbers to know):

- archive: a zip with ``__main__.py`` at its root (FAIL); an interpreter line (WARN); its size (INFO).
- python 3.6: every ``.py`` inside passes ``vermin --target=3.6- --violations`` (FAIL).
- imports: only the standard library of Python 3.6, the device's packages (DESIGN.md section 2)
  and the archive's own modules (FAIL; an import guarded by ``try/except ImportError`` is a WARN;
  a file that does not parse is a FAIL). Imports written as code are resolved where the source
  shows the name (``exec("import x")``, ``eval("__import__('x')")``, ``__import__("x")``,
  ``importlib.import_module("x")``, ``getattr(importlib, "import_module")("x")``, aliases,
  ``__builtins__["__import__"]``) and judged like import statements; one it cannot resolve (a
  computed name or code string, an import function passed on as a value, code loaded from a file
  path) is a WARN with its file:line.
- run: the archive alone in an empty temporary folder, ``python -I -W ignore solution.pyz -i IMG
  -o OUT`` on sample images (synthetic by default), within --timeout (FAIL). OUT exists before the
  run, as the referee makes it (``evaluation.contract.prepare_output``, evaluate.bash's rule too).
- stdout: exactly one float such as ``12.345`` (FAIL).
- outputs: one PNG per input with the same name, 512x512, ids in [0, 14) (FAIL); 1 channel, 8 bit
  (WARN); files left in the working folder (WARN); mean Dice on the samples when they have GT (INFO).
- memory: peak resident memory of the run against --memory-budget (FAIL).
- time: projected wall-clock for 600 images on the device against the referee's 900 s.

The checks live in ``static`` (archive, Python 3.6, imports) and ``run``
(the run and what it wrote); the table in ``report``; the rules in ``lowpower.ship.pyz`` and
``evaluation.contract``. ``check(...)`` runs them all from Python (the packager verifies every
package with it on two images).

Example:
    .venv/bin/lowpower presubmit runs/demo/solution.pyz
    .venv/bin/lowpower presubmit solution.pyz --samples 20
    .venv/bin/lowpower presubmit solution.pyz --images evaluation/test  # IMG/ and GT/
"""
import argparse
import json
import os
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

from evaluation.contract import REFEREE_TIMEOUT
from lowpower.safe.bounds import bounded
from lowpower.ship.presubmit.report import Report, parse_size
from lowpower.ship.presubmit.run import DEFAULT_BUDGET, DEFAULT_SLOWDOWN, RunOptions, run_checks, sample_images
from lowpower.ship.presubmit.static import static_checks

SLOWDOWN_HELP = (
    "Rough factor from wall-clock here to wall-clock on the Jetson Nano (default {}). The run "
    "here uses this machine's CPU; the device runs the model on its Maxwell GPU (about 472 GFLOP/s "
    "fp16: the official FANet-ResNet-18 sample took 108 ms/image there, while a bare ResNet-18 "
    "forward pass at 512 took about 2 s on this workstation's 2 shared cores), but it reads and "
    "writes PNGs, starts Python, imports torch and initialises CUDA on four Cortex-A57 cores, "
    "roughly 3-5x slower than a desktop core. So the true factor is well below 1 for heavy "
    "models and above 1 for light, I/O-bound ones; {} is a pessimistic guess for the light "
    "models this check matters most for. Measure your own (time on the device / time here) "
    "when you can. With the default an over-limit projection is a WARN; with a factor you "
    "pass, it is a FAIL.").format(DEFAULT_SLOWDOWN, DEFAULT_SLOWDOWN)

# The limits of the numeric options, each with its reason (lowpower.safe.bounds).
SAMPLES = bounded(int, 1, 1000, "every sample is rendered and run; beyond 1000 the run takes many minutes "
                                "and proves nothing more (the referee's set is 600)")
TIMEOUT = bounded(float, 1.0, 86400.0, "seconds for the sample run; under 1 s not even Python starts, over a "
                                       "day the run is stuck (the referee's limit is 900)")
SLOWDOWN = bounded(float, 0.01, 10000.0, "a factor from this machine to the Jetson Nano; outside 0.01-10000 it "
                                         "is a typo, not a measurement")
MEMORY_BUDGET = bounded(parse_size, 2 ** 20, 64 * 2 ** 30, "bytes, 1 MiB to 64 GiB (the Nano has 2 GB); "
                                                          "e.g. 1.5GiB")

# Said on every report, so that a PASS is never read as more than it is.
NOT_PROVEN = ("the run used this machine's interpreter and CPU; Python 3.6.9 with torch 1.10 / "
              "torchvision 0.11 at run time, TensorRT 8.2, CUDA on the Maxwell GPU and the Nano's "
              "speed cannot be tested here (syntax and imports are checked statically against them, "
              "the time is a projection)")


def not_proven(solution):
    """NOT_PROVEN, plus the TensorRT sentence when the archive's manifest asks for that backend."""
    try:
        with zipfile.ZipFile(solution) as archive:
            manifest = json.loads(archive.read("solution/manifest.json").decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return NOT_PROVEN  # not a lowpower package: the archive checks say what is wrong
    if manifest.get("backend") != "tensorrt":
        return NOT_PROVEN
    return NOT_PROVEN + "; " + manifest.get("tensorrt", {}).get(
        "not_proven", "this package's TensorRT path has not been run on a GPU")


def check(solution, images=None, samples=8, options=None, description=None):
    """Every check on ``solution``; returns the ``Report``.

    Args:
        solution: the pyz.
        images: a folder of PNGs, or one with IMG/ (and GT/ for accuracy); None: ``samples``
            synthetic images with GT.
        samples: how many synthetic images when ``images`` is None.
        options: ``RunOptions`` (interpreter, timeout, memory budget, device slowdown).
        description: how the rows name the images (default: their folder).

    Example:
        >>> report = check("runs/demo/solution.pyz", samples=2)  # doctest: +SKIP
        >>> report.failed  # doctest: +SKIP
        []
    """
    options = options or RunOptions()
    report = Report()
    if not os.path.isfile(solution):
        report.add("archive", "FAIL", "no such file: {}".format(solution))
        return report
    with tempfile.TemporaryDirectory(prefix="presubmit-") as temp:
        workdir = Path(temp)
        if static_checks(solution, report, workdir) is not None:
            folder, gt, about = sample_images(images, samples, workdir)
            run_checks(solution, report, workdir, folder, gt, description or about, options)
    report.add("not proven here", "INFO", not_proven(solution))
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower presubmit",
        description=textwrap.fill(
                    "Check a solution.pyz for everything that would get it rejected by the LPCVC "
                    "referee or scored badly: archive layout, Python 3.6 syntax (vermin), imports "
                    "the device lacks (dynamic imports it cannot see are a warning with file:line), "
                    "a run alone in an empty folder on sample images, the single "
                    "float on stdout, the output PNGs, peak memory and the projected time for 600 "
                    "images. Exit status 1 when a hard check fails.", 100),
        epilog="examples:\n"
               "  lowpower presubmit runs/demo/solution.pyz\n"
               "  lowpower presubmit solution.pyz --samples 20 --json presubmit.json\n"
               "  lowpower presubmit solution.pyz --images evaluation/test --device-slowdown 0.5"
               "   # IMG/ + GT/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("solution", help="the archive to check, e.g. runs/demo/solution.pyz")
    parser.add_argument("--images", help="sample images: a folder of PNGs, or a folder with IMG/ "
                                         "(and GT/ to report accuracy); default: synthetic images")
    parser.add_argument("--samples", type=SAMPLES, default=8,
                        help="number of synthetic sample images when --images is not given "
                             "(1 to 1000; default 8)")
    parser.add_argument("--memory-budget", type=MEMORY_BUDGET, default=parse_size(DEFAULT_BUDGET),
                        help="peak resident memory allowed (the Nano has 2 GB shared with its GPU); "
                             "e.g. 1.5GiB, 1200MiB (default {})".format(DEFAULT_BUDGET))
    parser.add_argument("--device-slowdown", type=SLOWDOWN, default=None, help=SLOWDOWN_HELP)
    parser.add_argument("--timeout", type=TIMEOUT, default=REFEREE_TIMEOUT,
                        help="seconds the sample run may take (1 to 86400; default 900)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the archive, e.g. a Python 3.6 environment "
                             "with the device's packages (default: this interpreter)")
    parser.add_argument("--json", help="also write the table as JSON to this file")
    args = parser.parse_args(argv)
    args.slowdown_given = args.device_slowdown is not None
    if not args.slowdown_given:
        args.device_slowdown = DEFAULT_SLOWDOWN
    return args


def main(argv=None):
    args = parse_args(argv)
    options = RunOptions(python=args.python, timeout=args.timeout, memory_budget=args.memory_budget,
                         device_slowdown=args.device_slowdown, slowdown_given=args.slowdown_given)
    report = check(args.solution, images=args.images, samples=args.samples, options=options)
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps({"passed": not report.failed, "checks": report.rows},
                                              indent=1) + "\n")
    return 1 if report.failed else 0
