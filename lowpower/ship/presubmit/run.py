"""presubmit's checks that run the archive: exit status, stdout, masks, memory, projected time.

The archive runs alone in an empty folder through ``lowpower.ship.runner.run_pyz`` (the referee's
command); each check below reads the ``PyzRun`` and adds rows to a ``Report``.

Example:
    >>> options = RunOptions(python="python3", timeout=60.0)  # doctest: +SKIP
    >>> images, gt, about = sample_images(None, 2, workdir)  # doctest: +SKIP
    >>> run_checks("solution.pyz", report, workdir, images, gt, about, options)  # doctest: +SKIP
"""
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation import metrics
from evaluation.contract import INTERPRETER_FLAGS, NUM_CLASSES, OUTPUT_SIZE, REFEREE_IMAGES, REFEREE_TIMEOUT
from evaluation.folders import score_folders
from evaluation.judge import parse_reported_seconds
from evaluation.pairing import list_pngs
from evaluation.readpng import read_png_like_imageio
from lowpower.paths import REPO_ROOT
from lowpower.ship.presubmit.report import mib, parse_size
from lowpower.ship.runner import run_pyz

DEFAULT_SLOWDOWN = 2.0
DEFAULT_BUDGET = "1.5GiB"  # of the Nano's 2 GB, shared by CPU and GPU


@dataclass
class RunOptions:
    """How to run the archive and what to hold it to.

    ``slowdown_given``: the user measured ``device_slowdown``, so an over-limit projection FAILs
    (with the rough default it only WARNs).
    """
    python: str = sys.executable
    timeout: float = REFEREE_TIMEOUT
    memory_budget: int = parse_size(DEFAULT_BUDGET)
    device_slowdown: float = DEFAULT_SLOWDOWN
    slowdown_given: bool = False


def sample_images(images, samples, workdir):
    """``(IMG folder, GT folder or None, description)``.

    Args:
        images: a folder of PNGs, or one holding IMG/ (and GT/); None: render ``samples``
            synthetic images with GT under ``workdir``.
    """
    if images:
        folder = Path(images)
        if (folder / "IMG").is_dir():
            gt = folder / "GT"
            return folder / "IMG", gt if gt.is_dir() else None, str(folder)
        return folder, None, str(folder)
    # A fresh process renders them: forking this one (which may hold OpenCV's threads) can hang.
    out = Path(workdir) / "samples"
    command = [sys.executable, "-m", "lowpower", "data", "synthetic", "--out", str(out), "--train", "0",
               "--val", "0", "--test", str(samples), "--workers", str(min(2, os.cpu_count() or 1))]
    project_root = str(REPO_ROOT)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [project_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   env=environment, timeout=600)
    return out / "test" / "IMG", out / "test" / "GT", "{} synthetic images".format(samples)


def run_checks(solution, report, workdir, images, gt, description, options):
    """Run ``solution`` alone in an empty folder on ``images`` and check everything it did."""
    input_names = list_pngs(str(images))[0]
    if not input_names:
        report.add("run", "FAIL", "no PNG images in {}".format(images), "pass --images DIR")
        return
    run_dir, out = Path(workdir) / "run", Path(workdir) / "out"
    run_dir.mkdir()
    archive = run_dir / Path(solution).name
    shutil.copy2(str(solution), str(archive))
    run = run_pyz(archive, images, out, python=options.python, cwd=run_dir, timeout=options.timeout)
    if not check_exit(run, report, description, options):
        return
    reported = check_stdout(run, report, len(input_names))
    mtimes = check_outputs(input_names, out, run.outputs, report)
    if run.strays:
        report.add("working folder", "WARN", "left files in its working folder: {}".format(
            ", ".join(run.strays[:5])), "write only into the -o folder (the referee's folder may be read-only)")
    if gt is not None and out.is_dir():
        scored = score_folders(str(out), str(gt), workers=1)
        if scored["mean_dice"] is not None:
            report.add("accuracy", "INFO", "mean Dice {:.4f} (referee rule) on {}, {} scored".format(
                scored["mean_dice"], description, scored["images"]))
    check_memory(run, report, options.memory_budget)
    check_time(run, report, mtimes, reported, len(input_names), options)


def check_exit(run, report, description, options):
    """The run ended by itself with status 0; returns whether the later checks make sense."""
    shown = "{} {} {} -i IMG -o OUT".format(options.python, " ".join(INTERPRETER_FLAGS), Path(run.command[-5]).name)
    stderr_lines = run.stderr_tail(8)
    if run.timed_out:
        report.add("run", "FAIL", "still running after {:g} s on {} ({})".format(
            options.timeout, description, shown), "make it faster, or raise --timeout if the samples are many")
        return False
    if run.exit_code != 0:
        report.add("run", "FAIL", "exit status {} on {}: {}".format(
            run.exit_code, description, stderr_lines[-1] if stderr_lines else "no stderr"),
            "run it by hand: {} (stderr tail below)\n    {}".format(shown, "\n    ".join(stderr_lines)))
        return False
    report.add("run", "PASS", "{} in an empty folder: exit 0 on {} in {:.1f} s".format(
        shown, description, run.wall_seconds))
    if stderr_lines:
        report.add("stderr", "INFO", "{} lines on stderr (the referee discards them); last: {}".format(
            len(run.stderr.strip().splitlines()), stderr_lines[-1][:100]))
    return True


def check_stdout(run, report, images):
    """Exactly one float on stdout; returns the printed seconds or None."""
    reported, problem = parse_reported_seconds(run.stdout)
    if problem:
        report.add("stdout", "FAIL", problem, "print exactly one float (the summed inference seconds) "
                   "on stdout and nothing else; log to stderr")
    else:
        report.add("stdout", "PASS", "one float: {} s for {} images ({:.1f} ms per image)".format(
            reported, images, 1000 * reported / images))
    return reported


def check_outputs(input_names, out, outputs, report):
    """Names, size, channels and ids of the masks; returns their mtimes (seconds since the epoch)."""
    written = sorted(name for name in outputs if name.lower().endswith(".png"))
    missing = sorted(set(input_names) - set(written))
    extra = sorted(set(written) - set(input_names))
    errors, warnings = [], []
    matched = sorted(set(input_names) & set(written))
    for name in matched:
        try:
            raw = read_png_like_imageio(str(out / name))
        except Exception as error:  # noqa: BLE001 - any unreadable output is reported by name
            errors.append("{}: unreadable ({})".format(name, error))
            continue
        if raw.shape[:2] != (OUTPUT_SIZE, OUTPUT_SIZE):
            errors.append("{}: {}x{} (width x height), must be 512x512".format(name, raw.shape[1], raw.shape[0]))
        prepared = metrics.referee_prepare(raw)
        if prepared.max() >= NUM_CLASSES:
            errors.append("{}: ids {} outside 0..13".format(
                name, sorted(set(prepared[prepared >= NUM_CLASSES].tolist()))[:5]))
        if raw.ndim != 2 or raw.dtype.name != "uint8":
            warnings.append("{}: {} {}".format(name, "x".join(map(str, raw.shape)), raw.dtype))
    problems = []
    if missing:
        problems.append("{} of {} inputs have no output PNG of the same name (e.g. {})".format(
            len(missing), len(input_names), ", ".join(missing[:3])))
    if extra:
        problems.append("{} PNGs with no input of that name (e.g. {})".format(len(extra), ", ".join(extra[:3])))
    if errors:
        problems.append("{} bad file{}: {}".format(len(errors), "" if len(errors) == 1 else "s",
                                                     "; ".join(errors[:3])))
    if problems:
        report.add("outputs", "FAIL", "; ".join(problems),
                   "write one 512x512 1-channel uint8 PNG per input, same file name, into -o, pixel "
                   "= class id in 0..13")
    else:
        report.add("outputs", "PASS", "{} PNGs, same names as the inputs, 512x512, ids in 0..13".format(
            len(written)))
    if warnings:
        report.add("output format", "WARN", "not 1-channel 8-bit ({} files, e.g. {}); the referee keeps "
                   "channel 0 cast to uint8".format(len(warnings), warnings[0]),
                   "write 1-channel uint8 PNGs: smaller, faster to write, no ambiguity")
    return [outputs[name] for name in matched]


def check_memory(run, report, budget):
    """Peak resident memory of the run against the budget (the Nano's 2 GB are shared with its GPU)."""
    detail = "peak {} (largest process {}, whole process group {}) against {}; measured on this " \
             "CPU: on the Nano the CUDA context and GPU tensors share the same 2 GB".format(
                 mib(run.peak_memory), mib(run.peak_process), mib(run.peak_group), mib(budget))
    if run.peak_memory > budget:
        report.add("memory", "FAIL", detail, "load fewer things at once (smaller pools, fp16 weights, "
                   "free the checkpoint after loading)")
    elif run.peak_memory > 0.8 * budget:
        report.add("memory", "WARN", detail, "little headroom for the device's CUDA context")
    else:
        report.add("memory", "PASS", detail)


def project_time(started, wall, mtimes, reported, images, slowdown):
    """(startup seconds, seconds per image) here, and projected seconds for 600 images on the device.

    Per image: the slope of the outputs' write times (first to last), at least the reported
    inference seconds per image; startup: the rest of the wall-clock.

    Example:
        >>> project_time(100.0, 12.0, [102.0, 102.5, 103.0], None, 3, 2.0)
        (10.5, 0.5, 621.0)
    """
    per_image = 0.0
    times = sorted(t - started for t in mtimes)
    if len(times) >= 2:
        per_image = (times[-1] - times[0]) / (len(times) - 1)
    if reported:
        per_image = max(per_image, reported / images)
    if per_image <= 0:
        per_image = wall / images
    startup = max(0.0, wall - per_image * images)
    return startup, per_image, slowdown * (startup + REFEREE_IMAGES * per_image)


def check_time(run, report, mtimes, reported, images, options):
    """The projected time for the referee's 600 images against its 900 s."""
    startup, per_image, projected = project_time(run.started, run.wall_seconds, mtimes, reported, images,
                                                 options.device_slowdown)
    detail = "{:.0f} s projected for {} images on the device = {:g} x ({:.1f} s startup + {} x {:.0f} " \
             "ms per image measured here); limit {:.0f} s".format(
                 projected, REFEREE_IMAGES, options.device_slowdown, startup, REFEREE_IMAGES,
                 per_image * 1000, REFEREE_TIMEOUT)
    if reported:
        detail += "; reported inference {:.0f} ms per image here".format(1000 * reported / images)
    if projected > REFEREE_TIMEOUT:
        report.add("time", "FAIL" if options.slowdown_given else "WARN",
                   detail + ("" if options.slowdown_given else " (rough default factor, so not a hard failure)"),
                   "speed it up (smaller input, fp16/TensorRT, overlapped PNG I/O), or measure the "
                   "real factor on the device and pass --device-slowdown")
    elif projected > 0.5 * REFEREE_TIMEOUT:
        report.add("time", "WARN", detail, "little margin against the referee's 900 s")
    else:
        report.add("time", "PASS", detail)
