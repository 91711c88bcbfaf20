"""Lay out, zip and verify a package: the build step of ``lowpower.ship.package``.

``build_package`` reads the checkpoint (``manifest``), finds the model's source
(``closure``), writes the build folder, zips it and, unless told not to, runs presubmit's
checks on two sample images before the pyz is moved into place.

Example:
    >>> info = build_package("runs/demo/best.pt", "/tmp/s.pyz", precision="fp16")  # doctest: +SKIP
    >>> info["manifest"]["precision"], info["checks"][0][:30]  # doctest: +SKIP
    ('fp16', 'presubmit on 2 sample images: ')
"""
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from lowpower.checkpoint import build_model, kind_of
from lowpower.compress.quantize.npz import differences
from lowpower.paths import REPO_ROOT
from lowpower.safe.write import atomic_output, check_output
from lowpower.ship.closure import SOURCE_ROOT, WIDTHS_MODULE, find_builder, generated_init, import_closure
from lowpower.ship.export import MAX_OPSET, ExportError, export_and_verify
from lowpower.ship.manifest import (
    PackageError,
    describe_checkpoint,
    export_weights,
    int8_ships_in_fp16,
    program_settings,
    read_checkpoint,
    resolve_precision,
    sha256_of,
)
from lowpower.ship.presubmit.cli import check
from lowpower.ship.presubmit.run import RunOptions
from solution.int8 import Int8WeightsError, decode_state_dict

TEMPLATE_DIR = REPO_ROOT / "solution"
DEFAULT_PYTHON = "/usr/bin/env python3.6"
VERIFY_TIMEOUT = 600.0
BACKENDS = ("pytorch", "tensorrt")
# Images per forward pass. Measured 2026-12-01 on the 2-core CPU (bench compare, 50 synthetic images,
# 5 runs in turns): batch 4 against 1 printed 0.83x the model time for the demo UNet and 0.77x for
# lraspp_mbv3_small at 256 (wall 0.94x and 0.91x; peak memory +8% and +6%); the 2023 winner ran batch 4.
DEFAULT_BATCH_SIZE = 4
# What the printed number sums (solution/main.py): the model's work (network and post-processing),
# the network calls alone (as the LPCVC 2023 sample and the winners timed), or the whole run.
TIMERS = ("model", "network", "wall")
# Said in the manifest, the build summary and presubmit's report of every TensorRT package.
TENSORRT_NOT_PROVEN = ("the TensorRT path (model.onnx -> engine) has not been run on a GPU by lowpower: it was "
                       "tested only through its PyTorch fallback, so nothing is known here of the engine's "
                       "speed or of its agreement with PyTorch")


# ----------------------------------------------------------------------------- build

def check_options(precision, timer, batch_size, min_class_area):
    """PackageError for an option outside its range, before any work is done."""
    if precision not in (None, "fp32", "fp16", "int8"):
        raise PackageError("precision must be fp32, fp16 or int8, got %r" % precision)
    if timer not in TIMERS:
        raise PackageError("timer must be one of %s, got %r" % (", ".join(TIMERS), timer))
    if int(batch_size) < 1:
        raise PackageError("batch size must be at least 1, got %s" % batch_size)
    if min_class_area is not None and not 0 <= min_class_area < 1:
        raise PackageError("min class area must be in [0, 1), got %s" % min_class_area)


def rebuild_model(state, checkpoint):
    """The checkpoint's model in eval mode, as its kind builds it; PackageError when its weights do not
    fit its arch.

    An int8 checkpoint is rebuilt as the device does: the float model, ``networks.quant.int8_skeleton``
    for the engine it was calibrated for, then its state dict loaded strictly (``build_model``). A QAT
    run's best.pt / last.pt never gets here: ``resolve_precision`` refuses it (its int8 form is
    best_int8.pt).
    """
    try:
        return build_model(state).eval()
    except Exception as error:  # noqa: BLE001 -- a size mismatch, an unknown kwarg ...
        raise PackageError("%s: cannot rebuild %s(%s) from it: %s" % (
            checkpoint, state["arch"], state["arch_kwargs"], str(error).strip().splitlines()[0])) from None


def check_int8_arrays(model, arrays):
    """PackageError unless the device's decoder (``solution.int8``) gives back ``model``'s state dict
    exactly: bit for bit, except the float weights that ship in fp16 (``int8_ships_in_fp16``)."""
    try:
        decoded = decode_state_dict(arrays)
    except Int8WeightsError as error:
        raise PackageError("the int8 weights.npz would not load on the device: %s" % error) from None
    shipped = {key: value.detach().half().float() if value is not None and not value.is_quantized
               and int8_ships_in_fp16(key, value.detach().numpy()) else value
               for key, value in model.state_dict().items()}
    problems = differences(shipped, decoded)
    if problems:
        raise PackageError("the int8 weights.npz does not round-trip through solution/int8.py: %s"
                           % ", ".join(problems[:5]))


def default_build_dir(output):
    return REPO_ROOT / "build" / (Path(output).stem or "solution")


def lay_out(build_dir, manifest, arrays, closure, builder_module, builder_name, pruned=False):
    """Write the package tree into a fresh ``build_dir``; returns its files (relative, sorted).

    ``pruned``: the package's registry narrows the network with ``networks.widths`` (see ``generated_init``).
    """
    build_dir = Path(build_dir)
    if build_dir.exists():
        ours = (build_dir / "__main__.py").is_file() and (build_dir / "solution" / "manifest.json").is_file()
        if not build_dir.is_dir() or (any(build_dir.iterdir()) and not ours):
            raise PackageError("refusing to replace %s: it is not an empty folder or an earlier package "
                               "build; pick another --build-dir" % build_dir)
        shutil.rmtree(build_dir)
    (build_dir / "solution").mkdir(parents=True)
    (build_dir / "networks").mkdir()
    for source in sorted(TEMPLATE_DIR.glob("*.py")):
        target = build_dir / ("__main__.py" if source.name == "__main__.py" else "solution/" + source.name)
        shutil.copyfile(source, target)
    (build_dir / "solution" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    np.savez(build_dir / "solution" / "weights.npz", **arrays)
    (build_dir / "networks" / "__init__.py").write_text(
        generated_init(manifest["arch"], builder_module, builder_name, pruned),
        encoding="utf-8")
    for _, source in closure:
        target = build_dir / source.relative_to(SOURCE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file())


def check_backend(backend, precision):
    """PackageError for an unknown backend, or one that cannot run ``precision``."""
    if backend not in BACKENDS:
        raise PackageError("backend must be %s, got %r" % (" or ".join(BACKENDS), backend))
    if backend == "tensorrt" and precision not in (None, "fp32", "fp16"):
        raise PackageError("--backend tensorrt builds an fp16 or fp32 engine from the float network; "
                           "package with --precision fp16 (or fp32), not %s" % precision)


def add_onnx_model(build_dir, model, manifest, onnx_name="model.onnx"):
    """Export ``model`` to ``build_dir/solution/<onnx_name>`` for the device's TensorRT backend.

    ``lowpower.ship.export.export_and_verify`` writes it (opset 13, batch 1, the manifest's input size)
    and checks it: onnx.checker, bilinear Resize modes that match PyTorch, onnxruntime's argmax
    agreement. The manifest gains ``backend`` and a ``tensorrt`` section and is rewritten.

    Raises:
        PackageError: the export or one of its checks failed (one line).
    """
    path = Path(build_dir) / "solution" / onnx_name
    try:
        row = export_and_verify(model, path, manifest["input_size"], MAX_OPSET, threads=1)
    except ExportError as error:
        raise PackageError("--backend tensorrt: cannot export %s to ONNX: %s" % (manifest["arch"], error)) from None
    if row["problem"]:
        raise PackageError("--backend tensorrt: the exported ONNX file fails its check: %s" % row["problem"])
    manifest["backend"] = "tensorrt"
    manifest["tensorrt"] = {
        "onnx": onnx_name, "onnx_sha256": sha256_of(path), "opset": MAX_OPSET, "batch": 1,
        "onnxruntime_agreement": row["agreement"], "onnxruntime_max_diff": row["max_diff"],
        "resize": row["resize"], "engine_cache": "<package>.engine beside the package",
        "not_proven": TENSORRT_NOT_PROVEN,
    }
    (Path(build_dir) / "solution" / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n",
                                                                encoding="utf-8")
    return path


def write_sample_images(folder):
    """Two inputs that exercise the reader: a 512x512 RGB PNG and an odd-sized RGBA one."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "b.png"), rng.integers(0, 256, (300, 417, 4), dtype=np.uint8))
    return folder


def verify_package(pyz, python=sys.executable, timeout=VERIFY_TIMEOUT):
    """presubmit's checks on ``pyz`` with two sample images; returns the lines for the summary.

    Raises:
        PackageError: one line naming each failed check and why.
    """
    about = "2 sample images"
    with tempfile.TemporaryDirectory(prefix="lowpower-verify-") as temp:
        images = write_sample_images(Path(temp) / "img")
        report = check(str(pyz), images=images, options=RunOptions(python=python, timeout=timeout),
                       description=about)
    if report.failed:
        reasons = "; ".join("%s: %s" % (row["check"], " ".join(row["detail"].split())) for row in report.failed)
        raise PackageError("the built package fails presubmit on %s: %s (build it with --no-verify, then "
                           "run lowpower presubmit on it for the full report)" % (about, reasons))
    passed = ", ".join(row["check"] for row in report.rows_with("PASS"))
    warned = ["presubmit WARN %s: %s" % (row["check"], row["detail"]) for row in report.rows_with("WARN")]
    return ["presubmit on %s: passed %s" % (about, passed)] + warned


# Read whole at every start-up: inflating fanet_r18_sample's 50 MB of weights took 0.45-0.6 s of
# it, reading them stored 0.09-0.19 s (2-core CPU); deflate saved only 8-11% of their size.
STORED_SUFFIXES = (".npz", ".onnx")


def write_archive(build_dir, output, python):
    """Write ``build_dir`` as an executable zip application, as ``zipapp`` does, weights stored.

    Source files are deflated; the weight files (``STORED_SUFFIXES``) are stored as they are.

    Example:
        >>> write_archive(Path("build/solution"), Path("solution.pyz"), "/usr/bin/env python3.6")  # doctest: +SKIP
    """
    with open(output, "wb") as handle:
        handle.write(b"#!" + python.encode("utf-8") + b"\n")
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(build_dir).rglob("*")):
                kind = zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED
                archive.write(path, path.relative_to(build_dir).as_posix(), compress_type=kind)
    os.chmod(output, os.stat(output).st_mode | stat.S_IEXEC)


def zip_package(build_dir, output, python, verify):
    """Zip ``build_dir`` into ``output`` (verified first when asked); returns the check lines.

    The pyz is written and verified as a temporary file beside ``output`` (``atomic_output``) and
    renamed into place only when every check passed, so a failed build leaves the old ``output``
    (or none) and no temporary file.

    Example:
        >>> zip_package(Path("build/s"), Path("s.pyz"), DEFAULT_PYTHON, verify=False)  # doctest: +SKIP
        []
    """
    with atomic_output(output) as temp:
        write_archive(build_dir, temp, python)
        checks = verify_package(temp) if verify else []
    return checks


def build_package(checkpoint, output="solution.pyz", precision=None, input_size=None, timer="model",
                  python=DEFAULT_PYTHON, batch_size=DEFAULT_BATCH_SIZE, build_dir=None, verify=True,
                  min_class_area=None, backend="pytorch", force=True):
    """Build ``output`` from ``checkpoint``; returns a dict describing it (see ``summary``).

    Args:
        checkpoint: a checkpoint written by train.py (``lowpower.checkpoint``).
        output: the pyz to write; its folder is created.
        precision: ``fp32`` or ``fp16`` (weights stored in fp16; computed in fp16 on CUDA, in fp32
            with the fp16-rounded weights on a CPU) for a float checkpoint, ``int8`` for an int8 one
            (``lowpower.compress.quantize``; run on the CPU); None: int8 for an int8 checkpoint, else fp32.
        input_size: square model input size; default the checkpoint's.
        timer: ``model`` (summed synchronised seconds of network and post-processing), ``network``
            (the network calls alone, as the LPCVC 2023 sample and the winners timed) or ``wall``.
        python: the interpreter line of the pyz.
        batch_size: images per forward pass (DEFAULT_BATCH_SIZE: measured, see its comment).
        build_dir: where the package tree is laid out (default ``build/<output stem>``).
        verify: run presubmit's checks on two images before moving the pyz into place.
        min_class_area: per-image share below which a predicted class is dropped (see
            ``solution.postprocess.drop_small_classes``); default the checkpoint config's
            ``eval.min_class_area``, so the package scores what validation scored.
        backend: ``pytorch``, or ``tensorrt``: ship ``solution/model.onnx`` too, from which the
            device builds a TensorRT engine (``solution/tensorrt.py``; PyTorch is its fallback).
        force: replace an existing ``output``. True by default for the callers that rebuild their
            own packages (bench pipeline, variants, pareto, sample); ``lowpower package`` passes
            its ``--force``. ``output`` is never allowed to be ``checkpoint`` or a folder.

    Raises:
        PackageError: with the reason, naming the file at fault.
        lowpower.safe.write.OutputError: ``output`` is the checkpoint, a folder, in a folder that
            cannot be written, or (without ``force``) an existing file; asked before any work.
    """
    check_output(output, inputs=[checkpoint], force=force, flag="--force")  # before any work: a refusal costs nothing
    check_options(precision, timer, batch_size, min_class_area)
    checkpoint, output = Path(checkpoint), Path(output)
    state = read_checkpoint(checkpoint)
    precision = resolve_precision(state, precision, checkpoint)
    check_backend(backend, precision)
    manifest = describe_checkpoint(state, checkpoint, input_size)
    builder_module, builder_name = find_builder(state["arch"])
    model = rebuild_model(state, checkpoint)
    kind = kind_of(state)
    # What the kind ships besides the builder's imports: networks.widths for a pruned network (the
    # generated registry narrows it), networks.quant for an int8 one (the device's decoder).
    extra = kind.ship_modules(state)
    closure = sorted(dict(import_closure(builder_module)
                          + [item for module in extra for item in import_closure(module)]).items())
    arrays = export_weights(model, precision)
    if precision == "int8":  # the npz must decode exactly
        check_int8_arrays(model, arrays)
    parameters = kind.parameters(state, model)
    manifest.update(program_settings(state, precision, timer, batch_size, min_class_area, parameters))
    build_dir = Path(build_dir) if build_dir else default_build_dir(output)
    files = lay_out(build_dir, manifest, arrays, closure, builder_module, builder_name, WIDTHS_MODULE in extra)
    if backend == "tensorrt":
        files = sorted(files + [add_onnx_model(build_dir, model, manifest).relative_to(build_dir).as_posix()])
    checks = zip_package(build_dir, output, python, verify)
    return {
        "path": str(output),
        "bytes": output.stat().st_size,
        "build_dir": str(build_dir),
        "files": files,
        "modules": [source.relative_to(SOURCE_ROOT).as_posix() for _, source in closure],
        "weights_bytes": (build_dir / "solution" / "weights.npz").stat().st_size,
        "parameters": parameters,
        "manifest": manifest,
        "checks": checks,
    }
