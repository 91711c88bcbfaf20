"""The docstring examples (``>>>``) of the device-side folders and of a few lowpower modules run as
doctests in a plain ``pytest`` (pyproject's testpaths name their folders), in the fast tier.

Each module is imported by its package name (``evaluation.metrics``), the way the tests and lowpower
import it. pytest's ``--doctest-modules`` would import a file of evaluation/ (no ``__init__.py``) as
a top-level ``metrics`` with evaluation/ put on sys.path; and it would run the examples of every
lowpower module, most of which are written for reading, not running. ``__main__.py`` is never imported.
An example may use ``torch``, ``np`` and ``networks`` without importing them.

    .venv/bin/python -m pytest networks evaluation solution          # the doctests alone
"""
import importlib
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule  # pytest's doctest collector; only how it imports a module changes

ROOT = Path(__file__).resolve().parent
# Every module under these folders, and these single files.
DOCTEST_FOLDERS = ("networks", "evaluation", "solution")
DOCTEST_FILES = ("lowpower/cli.py", "lowpower/paths.py", "lowpower/measure/flops.py", "lowpower/measure/report.py")


def doctest_module_name(path):
    """``evaluation.metrics`` for ROOT/evaluation/metrics.py; None for a file whose examples do not run."""
    path = Path(path)
    if path.suffix != ".py" or path.name == "__main__.py":
        return None
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    if relative.parts[0] not in DOCTEST_FOLDERS and relative.as_posix() not in DOCTEST_FILES:
        return None
    parts = relative.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class PackageDoctestModule(DoctestModule):
    """pytest's DoctestModule with the module imported by its package name."""

    def _getobj(self):
        return importlib.import_module(doctest_module_name(self.path))


def pytest_collect_file(file_path, parent):
    if parent.config.option.doctestmodules:
        return None  # --doctest-modules given: pytest's own collector takes every module
    if doctest_module_name(file_path) is None:
        return None
    return PackageDoctestModule.from_parent(parent, path=file_path)


@pytest.fixture(scope="session", autouse=True)
def doctest_names(doctest_namespace):
    """``torch``, ``np`` and ``networks`` for every example."""
    import numpy
    import torch

    import networks

    doctest_namespace.update(torch=torch, np=numpy, networks=networks)


@pytest.fixture(autouse=True)
def doctest_keeps_the_quantized_engine(request):
    """networks.quant's examples set the process-wide quantized engine; a doctest gives it back."""
    if not isinstance(request.node, pytest.DoctestItem):
        yield
        return
    import torch

    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine
