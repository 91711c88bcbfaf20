"""Checkpoint -> self-contained ``solution.pyz`` for the device (``./compress.sh`` wraps this).

    python -m lowpower.package runs/demo/best.pt -o solution.pyz --precision fp16

Steps:

1. read the checkpoint (``lowpower.checkpoint``) and rebuild its model, which checks the weights;
2. lay out a fresh build folder (default ``build/<output stem>/``, git-ignored)::

       __main__.py                 the template's entry point (solution/__main__.py)
       solution/__init__.py        the template (solution/*.py), copied unmodified
       solution/main.py
       solution/manifest.json      generated: what the program needs besides the weights
       solution/weights.npz        generated: the state dict as plain arrays (fp16 when asked)
       networks/__init__.py        generated: a registry of the one shipped model
       networks/<model>.py ...     the model's file and every ``networks`` module it imports,
                                   found by walking the imports with ``ast``

3. zip it with ``zipapp`` (deflate) behind the interpreter line;
4. verify it (unless ``--no-verify``): ``vermin --target=3.6-`` over the build folder, then the
   pyz run with ``python -I`` from an empty folder on two generated images, checking the
   stdout contract and the masks. The pyz is moved into place only when this passes.

Example:
    >>> info = build_package("runs/demo/best.pt", "/tmp/s.pyz", precision="fp16")  # doctest: +SKIP
    >>> info["parameters"]  # doctest: +SKIP
    1940654
"""
import argparse
import ast
import hashlib
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipapp
from pathlib import Path

import numpy as np
import torch

import networks
from evaluation.contract import CLASS_NAMES, DEVICE_PACKAGES, NUM_CLASSES, OUTPUT_SIZE, VERMIN_FLAGS, only_a_float
from lowpower.checkpoint import build_model, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / "solution"
NETWORKS_DIR = Path(networks.__file__).resolve().parent
SOURCE_ROOT = NETWORKS_DIR.parent  # the folder that holds the networks package
DEFAULT_PYTHON = "/usr/bin/env python3.6"
FP16_MAX = 65504.0

# Knobs of the shipped program, never set by the referee (documented in solution/README.md).
PROGRAM_ENVIRONMENT = {
    "LOWPOWER_SEQUENTIAL": "1: no reader/writer pools, read-segment-write one batch at a time",
    "LOWPOWER_THREADS": "torch CPU threads (default: all cores)",
    "LOWPOWER_STATS": "path: write the run's timings as JSON there",
}


class PackageError(Exception):
    """The package cannot be built; the message says why."""


# ----------------------------------------------------------------------------- import closure

def module_file(name, root=SOURCE_ROOT):
    """``networks.x.y`` -> its source file under ``root`` (module or package), or None."""
    base = Path(root).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _guarded(node, parents):
    """True when ``node`` sits in the body of a ``try`` that catches ImportError."""
    child = node
    for parent in reversed(parents):
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = []
                if handler.type is None:
                    return True
                for item in (handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]):
                    names.append(getattr(item, "id", getattr(item, "attr", "")))
                if {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} & set(names):
                    return True
        child = parent
    return False


def _import_nodes(tree):
    """Yield ``(node, guarded)`` for every import statement, nested ones included."""
    stack = [(tree, [])]
    while stack:
        node, parents = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, _guarded(node, parents)
        for child in ast.iter_child_nodes(node):
            stack.append((child, parents + [node]))


def _referenced_modules(module, path, root):
    """The ``networks`` modules one file imports, and its problems (strings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found, problems = [], []
    where = path.relative_to(root).as_posix()

    def external(top, node, guarded):
        if top in sys.stdlib_module_names or top in DEVICE_PACKAGES or guarded:
            return
        reason = ("is workstation code that does not ship" if top in ("lowpower", "evaluation", "tests")
                  else "is not on the device (only the standard library and %s)" % ", ".join(sorted(DEVICE_PACKAGES)))
        problems.append("%s line %d imports %s, which %s" % (where, node.lineno, top, reason))

    for node, guarded in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "networks":
                    if alias.name != "networks":
                        found.append(alias.name)
                else:
                    external(top, node, guarded)
            continue
        if node.level:
            parts = package.split(".")
            if node.level - 1 > len(parts) - 1:
                problems.append("%s line %d: relative import beyond the networks package" % (where, node.lineno))
                continue
            base = ".".join(parts[: len(parts) - (node.level - 1)])
            target = base + ("." + node.module if node.module else "")
        else:
            target = node.module or ""
        top = target.split(".")[0]
        if top != "networks":
            external(top, node, guarded)
            continue
        if target != "networks":
            found.append(target)
        for alias in node.names:
            submodule = target + "." + alias.name
            if module_file(submodule, root) is not None:
                found.append(submodule)
            elif target == "networks":
                problems.append(
                    "%s line %d imports %s from networks/__init__.py, which the package replaces with a "
                    "generated registry of one model; import it from the module that defines it"
                    % (where, node.lineno, alias.name))
    return found, problems


def import_closure(module, root=SOURCE_ROOT):
    """The ``networks`` modules ``module`` needs, found by walking the imports with ``ast``.

    Args:
        module: dotted name of the model's module, e.g. ``networks.unet``.
        root: folder holding the ``networks`` package.

    Returns:
        Sorted list of ``(module name, source path)``; parent packages other than ``networks``
        itself (whose ``__init__.py`` the package generates) are included.

    Raises:
        PackageError: a module is missing, or a file imports something the device lacks.

    Example:
        >>> [name for name, _ in import_closure("networks.unet")]
        ['networks.blocks', 'networks.unet']
    """
    root = Path(root)
    seen, problems, todo = {}, [], [module]
    while todo:
        name = todo.pop()
        if name in seen or name == "networks":
            continue
        path = module_file(name, root)
        if path is None:
            problems.append("module %s is imported but %s does not exist"
                            % (name, Path(*name.split(".")).with_suffix(".py").as_posix()))
            continue
        seen[name] = path
        found, issues = _referenced_modules(name, path, root)
        problems += issues
        parents = [".".join(name.split(".")[:i]) for i in range(2, len(name.split(".")))]
        todo += found + parents
    if problems:
        raise PackageError("the model's source cannot ship:\n  " + "\n  ".join(problems))
    return sorted(seen.items())


def find_builder(arch):
    """``(module name, function name)`` of the registry builder of ``arch``."""
    if arch not in networks.MODELS:
        raise PackageError("the checkpoint's model %r is not in the networks registry; registered: %s"
                           % (arch, ", ".join(sorted(networks.MODELS))))
    builder = networks.MODELS[arch]
    module, name = getattr(builder, "__module__", None), getattr(builder, "__name__", None)
    if (not module or not module.startswith("networks.") or not name
            or getattr(importlib.import_module(module), name, None) is not builder):
        raise PackageError("the registry entry %r is not a function defined at the top level of a "
                           "networks/ module (got %r); register a plain builder function" % (arch, builder))
    return module, name


def generated_init(arch, module, builder):
    """Source of the package's ``networks/__init__.py``: a registry of the one shipped model."""
    return '''"""Generated by lowpower.package: the registry of the one model this package ships.

Do not edit; rebuild with compress.sh.
"""
from {module} import {builder}

MODELS = {{{arch!r}: {builder}}}


def list_models():
    return sorted(MODELS)


def create_model(name, num_classes=14, **kwargs):
    if name not in MODELS:
        raise ValueError('Unknown model {{!r}}; this package ships only {{}}'.format(name, list_models()))
    return MODELS[name](num_classes=num_classes, **kwargs)
'''.format(module=module, builder=builder, arch=arch)


# ----------------------------------------------------------------------------- checkpoint

def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path):
    """Load a lowpower checkpoint; PackageError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PackageError("checkpoint %s does not exist" % path)
    try:
        state = load_checkpoint(path)
    except ValueError as error:
        raise PackageError(str(error)) from None
    except Exception as error:  # noqa: BLE001 -- torch.load raises many types on foreign files
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PackageError("%s is not a lowpower checkpoint: torch.load cannot read it (%s: %s)"
                           % (path, type(error).__name__, first_line)) from None
    if not isinstance(state, dict) or not isinstance(state.get("arch_kwargs"), dict):
        raise PackageError("%s is not a lowpower checkpoint: expected a dict with arch, arch_kwargs "
                           "(a dict) and model" % path)
    return state


def _json_ready(value, what):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise PackageError("%s cannot be written to manifest.json: %s" % (what, error)) from None


def describe_checkpoint(state, path, input_size=None):
    """The manifest fields that come from the checkpoint (see solution/README.md)."""
    from lowpower.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    arch_kwargs = dict(state["arch_kwargs"])
    num_classes = int(arch_kwargs.get("num_classes", NUM_CLASSES))
    classes = list(state.get("classes") or (CLASS_NAMES if num_classes == NUM_CLASSES
                                            else ["class_%d" % i for i in range(num_classes)]))
    if len(classes) != num_classes:
        raise PackageError("%s: %d class names for a model of %d classes" % (path, len(classes), num_classes))
    trained_size = state.get("input_size") or (state.get("config") or {}).get("data", {}).get("input_size")
    size = input_size or trained_size
    if not size:
        raise PackageError("%s records no input size; pass --input-size" % path)
    if int(size) < 1:
        raise PackageError("input size must be positive, got %s" % size)
    metrics = state.get("metrics") or {}
    mean_dice = metrics.get("mean_dice", state.get("best_mean_dice"))
    return {
        "arch": state["arch"],
        "arch_kwargs": _json_ready(arch_kwargs, "arch_kwargs"),
        "num_classes": num_classes,
        "classes": [str(name) for name in classes],
        "mean": [float(v) for v in (state.get("mean") or IMAGENET_MEAN)],
        "std": [float(v) for v in (state.get("std") or IMAGENET_STD)],
        "input_size": int(size),
        "trained_input_size": int(trained_size) if trained_size else None,
        "output_size": OUTPUT_SIZE,
        "referee_classes": NUM_CLASSES,  # ids the referee scores; a larger one crashes it
        "checkpoint": Path(path).name,
        "checkpoint_sha256": sha256_of(path),
        "epoch": state.get("epoch"),
        "val_mean_dice": None if mean_dice is None else float(mean_dice),
        "val_miou": None if metrics.get("miou") is None else float(metrics["miou"]),
    }


def export_weights(model, precision):
    """The state dict as numpy arrays; floating tensors in fp16 when ``precision == 'fp16'``.

    Raises:
        PackageError: a weight does not fit in fp16.
    """
    arrays = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if precision == "fp16" and tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if bool((tensor[finite].abs() > FP16_MAX).any()):
                raise PackageError("weight %s has values beyond fp16's range (%.4g); package with "
                                   "--precision fp32" % (key, float(tensor[finite].abs().max())))
            tensor = tensor.half()
        arrays[key] = tensor.numpy()
    return arrays


# ----------------------------------------------------------------------------- build

def default_build_dir(output):
    return REPO_ROOT / "build" / (Path(output).stem or "solution")


def lay_out(build_dir, manifest, arrays, closure, builder_module, builder_name):
    """Write the package tree into a fresh ``build_dir``; returns its files (relative, sorted)."""
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
        generated_init(manifest["arch"], builder_module, builder_name), encoding="utf-8")
    for _, source in closure:
        target = build_dir / source.relative_to(SOURCE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return sorted(p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file())


def vermin_check(folder):
    """Run ``vermin --target=3.6-`` over ``folder``; returns (ok or None when vermin is missing, report)."""
    try:
        import vermin  # noqa: F401
    except ImportError:
        return None, "vermin is not installed"
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"] + list(VERMIN_FLAGS) + [str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    report = (result.stdout + result.stderr).strip()
    return result.returncode == 0 and "requires" not in report.lower(), report


def smoke_test(pyz, python=sys.executable, timeout=600):
    """Run ``pyz`` with ``python -I`` from an empty folder on two generated images.

    Checks: exit status 0, exactly one float on stdout, one 512x512 1-channel PNG of ids in
    0..13 per input under the same name. Returns a one-line description; raises PackageError.
    """
    import cv2

    with tempfile.TemporaryDirectory(prefix="lowpower-smoke-") as temp:
        temp = Path(temp)
        images, masks, cwd = temp / "img", temp / "out", temp / "cwd"
        images.mkdir()
        cwd.mkdir()
        rng = np.random.default_rng(0)
        cv2.imwrite(str(images / "a.png"), rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
        cv2.imwrite(str(images / "b.png"), rng.integers(0, 256, (300, 417, 4), dtype=np.uint8))
        result = subprocess.run([python, "-I", str(Path(pyz).resolve()), "-i", str(images), "-o", str(masks)],
                                cwd=str(cwd), capture_output=True, text=True, timeout=timeout)
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        if result.returncode != 0:
            raise PackageError("smoke test: the package exited with %d:\n%s" % (result.returncode, tail))
        if only_a_float(result.stdout) is None or result.stdout.count("\n") != 1:
            raise PackageError("smoke test: stdout must be one float, got %r" % result.stdout[:200])
        for name in ("a.png", "b.png"):
            mask = cv2.imread(str(masks / name), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.shape != (OUTPUT_SIZE, OUTPUT_SIZE) or mask.dtype != np.uint8 or mask.max() >= NUM_CLASSES:
                raise PackageError("smoke test: bad mask for %s: %s" % (
                    name, None if mask is None else (mask.shape, mask.dtype, int(mask.max()))))
    return "ran with %s -I on 2 images, printed %s" % (Path(python).name, result.stdout.strip())


def build_package(checkpoint, output="solution.pyz", precision="fp32", input_size=None, timer="model",
                  python=DEFAULT_PYTHON, batch_size=1, build_dir=None, verify=True, min_class_area=None):
    """Build ``output`` from ``checkpoint``; returns a dict describing it (see ``main``).

    Args:
        checkpoint: a checkpoint written by train.py (``lowpower.checkpoint``).
        output: the pyz to write; its folder is created.
        precision: ``fp32`` or ``fp16`` (weights stored in fp16; computed in fp16 on CUDA, in fp32
            with the fp16-rounded weights on a CPU).
        input_size: square model input size; default the checkpoint's.
        timer: ``model`` (summed synchronised model seconds) or ``wall`` (the whole run).
        python: the interpreter line of the pyz.
        batch_size: images per forward pass.
        build_dir: where the package tree is laid out (default ``build/<output stem>``).
        verify: run ``vermin`` and the smoke test before moving the pyz into place.
        min_class_area: per-image share below which a predicted class is dropped (see
            ``solution.main.drop_small_classes``); default the checkpoint config's
            ``eval.min_class_area``, so the package scores what validation scored.

    Raises:
        PackageError: with the reason, naming the file at fault.
    """
    if precision not in ("fp32", "fp16"):
        raise PackageError("precision must be fp32 or fp16, got %r" % precision)
    if timer not in ("model", "wall"):
        raise PackageError("timer must be model or wall, got %r" % timer)
    if int(batch_size) < 1:
        raise PackageError("batch size must be at least 1, got %s" % batch_size)
    if min_class_area is not None and not 0 <= min_class_area < 1:
        raise PackageError("min class area must be in [0, 1), got %s" % min_class_area)
    checkpoint, output = Path(checkpoint), Path(output)
    state = read_checkpoint(checkpoint)
    manifest = describe_checkpoint(state, checkpoint, input_size)
    builder_module, builder_name = find_builder(state["arch"])
    try:
        model = build_model(state).eval()
    except Exception as error:  # noqa: BLE001
        raise PackageError("%s: cannot rebuild %s(%s) from it: %s" % (
            checkpoint, state["arch"], manifest["arch_kwargs"], str(error).strip().splitlines()[0])) from None
    closure = import_closure(builder_module)
    arrays = export_weights(model, precision)
    parameters = sum(p.numel() for p in model.parameters())
    if min_class_area is None:
        min_class_area = ((state.get("config") or {}).get("eval") or {}).get("min_class_area", 0.0)
    manifest.update({
        "min_class_area": float(min_class_area),
        "precision": precision,
        "timer": timer,
        "batch_size": int(batch_size),
        "parameters": int(parameters),
        "preprocessing": "RGB; bilinear antialiased resize to input_size (Pillow's, as torchvision "
                         "Resize(antialias=True)); /255; (x - mean) / std",
        "postprocessing": "bilinear upsampling of the logits to output_size (align_corners=False); "
                          "classes under min_class_area of an image dropped; argmax",
        "environment": PROGRAM_ENVIRONMENT,
    })
    build_dir = Path(build_dir) if build_dir else default_build_dir(output)
    files = lay_out(build_dir, manifest, arrays, closure, builder_module, builder_name)

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    zipapp.create_archive(build_dir, partial, interpreter=python, compressed=True)
    checks = []
    try:
        if verify:
            ok, report = vermin_check(build_dir)
            if ok is False:
                raise PackageError("vermin finds code that needs a Python newer than 3.6 in %s:\n%s"
                                   % (build_dir, report))
            checks.append("vermin 3.6: " + ("ok" if ok else "skipped (%s)" % report))
            checks.append("smoke test: " + smoke_test(partial))
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
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


def _size(num_bytes):
    return "%.1f KiB" % (num_bytes / 1024.0) if num_bytes < 1 << 20 else "%.2f MiB" % (num_bytes / 2.0 ** 20)


def summary(info):
    """The lines the CLI prints about a built package."""
    manifest = info["manifest"]
    kwargs = ", ".join("%s=%r" % item for item in sorted(manifest["arch_kwargs"].items()))
    dice = manifest["val_mean_dice"]
    size_note = ""
    if manifest["trained_input_size"] and manifest["trained_input_size"] != manifest["input_size"]:
        size_note = " (trained at %d)" % manifest["trained_input_size"]
    lines = [
        "built %s (%s)" % (info["path"], _size(info["bytes"])),
        "  model       %s(%s): %s parameters" % (manifest["arch"], kwargs, format(info["parameters"], ",")),
        "  precision   %s (weights.npz %s), input %d%s -> output %d, timer %s, batch %d" % (
            manifest["precision"], _size(info["weights_bytes"]), manifest["input_size"], size_note,
            manifest["output_size"], manifest["timer"], manifest["batch_size"]),
        "  postprocess drop classes under %.2f%% of an image" % (100 * manifest["min_class_area"])
        if manifest["min_class_area"] else "  postprocess none (argmax)",
        "  source      networks/__init__.py (generated), %s" % ", ".join(info["modules"]),
        "  checkpoint  %s sha256 %s, epoch %s, val mean Dice %s" % (
            manifest["checkpoint"], manifest["checkpoint_sha256"][:16], manifest["epoch"],
            "n/a" if dice is None or (isinstance(dice, float) and math.isnan(dice)) else "%.4f" % dice),
        "  build       %s" % info["build_dir"],
    ]
    lines += ["  check       %s" % check for check in info["checks"]]
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lowpower.package",
        description="Package a lowpower checkpoint as a self-contained solution.pyz for the device: the "
                    "shipped program (solution/), the model's networks/ source found from its imports, "
                    "weights.npz and manifest.json, zipped with zipapp. The pyz runs as "
                    "'python3.6 solution.pyz -i IMG_DIR -o OUT_DIR' and prints one float (seconds).",
        epilog="example: ./compress.sh runs/demo/best.pt -o runs/demo/solution.pyz --precision fp16")
    parser.add_argument("checkpoint", help="checkpoint written by train.py, e.g. runs/NAME/best.pt")
    parser.add_argument("-o", "--output", default="solution.pyz", help="pyz to write (default: solution.pyz)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="weights stored as fp32 or fp16; fp16 also computes in fp16 on CUDA "
                             "(on a CPU the program computes in fp32 with the fp16 weights) (default: fp32)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="square model input size (default: the checkpoint's)")
    parser.add_argument("--timer", choices=("model", "wall"), default="model",
                        help="what the printed number measures: the summed synchronised model seconds, or "
                             "the whole run (default: model)")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help="interpreter line of the pyz (default: %r)" % DEFAULT_PYTHON)
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--min-class-area", type=float, default=None,
                        help="drop a class from an image's prediction when it covers less than this share "
                             "of the image (the referee scores a spurious class 0); default: the "
                             "checkpoint config's eval.min_class_area")
    parser.add_argument("--build-dir", default=None,
                        help="folder the package tree is laid out in, replaced on each build "
                             "(default: build/<output stem> in the repository)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the vermin check and the smoke run of the built pyz")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        info = build_package(args.checkpoint, args.output, precision=args.precision, input_size=args.input_size,
                             timer=args.timer, python=args.python, batch_size=args.batch_size,
                             build_dir=args.build_dir, verify=not args.no_verify,
                             min_class_area=args.min_class_area)
    except PackageError as error:
        print("error: %s" % error, file=sys.stderr)
        return 1
    print("\n".join(summary(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
