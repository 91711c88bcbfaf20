"""The source a package ships: the model's ``networks`` modules, found from its imports.

The packager copies the model's own file and every ``networks`` module it imports (walked with
``lowpower.ship.pyz.scan_source``, the same scan presubmit uses: import statements and imports written
as code alike), never the whole repository, and replaces ``networks/__init__.py`` with a generated
registry of the one shipped model.

Example:
    >>> [name for name, _ in import_closure("networks.unet")]
    ['networks.blocks', 'networks.fusion', 'networks.quant', 'networks.unet']
    >>> find_builder("unet")
    ('networks.unet', 'unet')
"""
import importlib
from pathlib import Path

import networks
from evaluation.contract import DEVICE_PACKAGES
from lowpower.ship.manifest import PackageError
from lowpower.ship.pyz import device_has, scan_source

NETWORKS_DIR = Path(networks.__file__).resolve().parent
SOURCE_ROOT = NETWORKS_DIR.parent  # the folder that holds the networks package
WORKSTATION_PACKAGES = ("lowpower", "evaluation", "tests")
WIDTHS_MODULE = "networks.widths"  # what the generated registry of a pruned model imports


def module_file(name, root=SOURCE_ROOT):
    """``networks.x.y`` -> its source file under ``root`` (module or package), or None."""
    base = Path(root).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _absolute(item, package):
    """The absolute module an import names, or None when a relative one climbs out of ``networks``."""
    if not item.level:
        return item.module
    parts = package.split(".")
    if item.level - 1 > len(parts) - 1:
        return None
    base = ".".join(parts[: len(parts) - (item.level - 1)])
    return base + ("." + item.module if item.module else "")


def _external_problem(item, top):
    """Why an import from outside ``networks`` cannot ship, or None when the device has it."""
    if device_has(top) or item.guarded:  # a guarded import has a fallback the device runs
        return None
    reason = ("is workstation code that does not ship" if top in WORKSTATION_PACKAGES
              else "is not on the device (only the standard library and %s)" % ", ".join(sorted(DEVICE_PACKAGES)))
    return "%s line %d imports %s, which %s" % (item.file, item.line, top, reason)


def _referenced_modules(module, path, root):
    """The ``networks`` modules one file imports, and its problems (strings)."""
    where = path.relative_to(root).as_posix()
    imports, _ = scan_source(path.read_text(encoding="utf-8"), where)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found, problems = [], []
    for item in imports:
        target = _absolute(item, package)
        if target is None:
            problems.append("%s line %d: relative import beyond the networks package" % (where, item.line))
            continue
        top = target.split(".")[0]
        if top != "networks":
            problems += filter(None, [_external_problem(item, top)])
            continue
        if target != "networks":
            found.append(target)
        for name in item.names:  # from X import name: name may be a submodule
            submodule = target + "." + name
            if module_file(submodule, root) is not None:
                found.append(submodule)
            elif target == "networks":
                problems.append(
                    "%s line %d imports %s from networks/__init__.py, which the package replaces with a "
                    "generated registry of one model; import it from the module that defines it"
                    % (where, item.line, name))
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
        ['networks.blocks', 'networks.fusion', 'networks.quant', 'networks.unet']
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
    """``(module name, function name)`` of the registry builder of ``arch``.

    Raises:
        PackageError: ``arch`` is not registered, or its builder is not a top-level function of a
            ``networks`` module (the generated registry imports it by name).
    """
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


def generated_init(arch, module, builder, pruned=False):
    """Source of the package's ``networks/__init__.py``: a registry of the one shipped model.

    ``pruned``: the model is rebuilt with a width plan (``lowpower.compress.prune.cli``), so the registry
    narrows it with ``networks.widths``, which the package must then ship (:data:`WIDTHS_MODULE`).
    """
    narrow = "\nfrom networks.widths import apply_width_plan" if pruned else ""
    build = ("    width_plan = kwargs.pop('width_plan', None)\n"
             "    model = MODELS[name](num_classes=num_classes, **kwargs)\n"
             "    return apply_width_plan(model, width_plan) if width_plan else model\n" if pruned
             else "    return MODELS[name](num_classes=num_classes, **kwargs)\n")
    return '''"""Generated by lowpower.ship.package: the registry of the one model this package ships.

Do not edit; rebuild with compress.sh.
"""
from {module} import {builder}{narrow}

MODELS = {{{arch!r}: {builder}}}


def list_models():
    return sorted(MODELS)


def create_model(name, num_classes=14, **kwargs):
    if name not in MODELS:
        raise ValueError('Unknown model {{!r}}; this package ships only {{}}'.format(name, list_models()))
{build}'''.format(module=module, builder=builder, arch=arch, narrow=narrow, build=build)
