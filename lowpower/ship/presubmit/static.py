"""presubmit's checks that read the archive without running it: layout, Python 3.6, imports, and
the device's torch/torchvision/numpy/Pillow/imageio API (``lowpower.ship.device_api``).

Each check adds rows to a ``report.Report``; the rules themselves (the device's packages,
Python 3.6's standard library, the vermin flags, the import scan) live in ``lowpower.ship.pyz`` and
``evaluation.contract``; the scan takes imports written as code (exec, eval, __import__, importlib)
from ``lowpower.ship.imports_as_code``.

Example:
    >>> report = Report()  # doctest: +SKIP
    >>> folder = static_checks("solution.pyz", report, Path("/tmp/work"))  # doctest: +SKIP
    >>> [row["result"] for row in report.rows]  # doctest: +SKIP
    ['PASS', 'INFO', 'PASS', 'PASS']
"""
import os
import re
import zipfile

from evaluation.contract import DEVICE_PACKAGES
from lowpower.ship.device_api import DeviceApiError
from lowpower.ship.device_api.check import CheckError, check_paths
from lowpower.ship.device_api.fetch import DEFAULT_CACHE
from lowpower.ship.device_api.index import load_index
from lowpower.ship.presubmit.report import mib
from lowpower.ship.pyz import device_has, own_modules, scan_folder, vermin_check

SHOWN = 4  # findings listed per row; the rest are counted


def static_checks(solution, report, workdir):
    """Check the archive, extract it under ``workdir``, check its sources.

    Args:
        solution: path of the pyz.
        report: the ``Report`` to add rows to.
        workdir: an empty folder for the extracted files.

    Returns:
        The folder it was extracted to, or None when it is not a usable archive.
    """
    if check_archive(solution, report) is None:
        return None
    extracted = workdir / "extracted"
    with zipfile.ZipFile(solution) as archive:
        archive.extractall(str(extracted))
    check_python36(extracted, report)
    check_imports(extracted, report)
    check_device_api(extracted, report)
    return extracted


def check_archive(path, report):
    """Zip structure and interpreter line; returns the member names or None."""
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        report.add("archive", "FAIL", "{} is not a zip archive".format(path),
                   "build it with zipapp (python -m zipapp DIR -o solution.pyz -p '/usr/bin/env python3')")
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    with open(path, "rb") as handle:
        first_line = handle.readline(200)
    if "__main__.py" not in names:
        report.add("archive", "FAIL", "no __main__.py at the root of the archive ({} files)".format(
            len(names)), "put the entry point in __main__.py at the top of the folder you zip")
        return None
    if first_line.startswith(b"#!"):
        interpreter = first_line[2:].strip().decode("utf-8", "replace")
        if re.search(r"python3\.(?!6\b)\d+", interpreter):
            report.add("archive", "WARN", "interpreter line names another Python: {}".format(
                interpreter), "use '/usr/bin/env python3' or '/usr/bin/env python3.6'")
        else:
            report.add("archive", "PASS", "__main__.py present, interpreter line '#!{}'".format(
                interpreter))
    else:
        report.add("archive", "WARN", "__main__.py present but no interpreter line (#!...); the "
                   "referee calls python3.6 explicitly, so it still runs",
                   "zipapp.create_archive(..., interpreter='/usr/bin/env python3')")
    report.add("size", "INFO", "{} in {} files".format(mib(size), len(names)))
    return names


def _listed(items):
    items = [str(item) for item in items]
    return "; ".join(items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")


def check_python36(folder, report):
    """vermin over every .py file: a construct newer than Python 3.6 is a FAIL with file:line."""
    files = sorted(folder.rglob("*.py"))
    result = vermin_check(folder, files)
    if result.ok is None:
        report.add("python 3.6", "WARN", result.text, "pip install vermin")
    elif result.ok:
        report.add("python 3.6", "PASS", "vermin --target=3.6-: {} .py files need nothing newer".format(
            len(files)))
    else:
        report.add("python 3.6", "FAIL", "needs a newer Python: {}".format(
            _listed(result.violations) or result.text[-300:]),
            "the device runs Python 3.6.9: rewrite these constructs (no walrus, f-string '=', "
            "dataclasses-free, no 'from __future__ import annotations', no list[int] hints)")


def _import_shown(item):
    """``file:line module``, marked when the import is written as code (exec, __import__ ...)."""
    return "{} (written as code)".format(item) if item.dynamic else str(item)


def check_imports(folder, report):
    """Every import must exist on the device or in the archive; what cannot be resolved is a WARN.

    Every import comes from one scan, ``lowpower.ship.pyz.scan_folder``: the import statements and
    the imports written as code (``exec("import x")``, ``__import__("x")``,
    ``importlib.import_module("x")``, their aliases and the builtins they hide behind) whose constant
    names and code strings it resolves: those are judged like import statements. An import guarded by
    ``try/except ImportError`` is only a WARN (the fallback runs on the device). A file that does
    not parse is a FAIL: its imports could not be checked.

    Example:
        >>> check_imports(Path("build/solution"), report)  # doctest: +SKIP
        >>> report.rows[-1]["check"], report.rows[-1]["result"]  # doctest: +SKIP
        ('imports', 'PASS')
    """
    scan = scan_folder(folder)
    own = own_modules(folder)
    missing, optional = [], []
    for item in scan.imports:
        if item.level or device_has(item.module) or item.top in own:
            continue
        (optional if item.guarded else missing).append(item)
    problems = []
    if missing:
        problems.append("not on the device: {} ({})".format(
            ", ".join(sorted({item.top for item in missing})), _listed(map(_import_shown, missing))))
    if scan.unparsable:
        problems.append("does not parse, so its imports were not checked: {}".format(_listed(scan.unparsable)))
    if problems:
        report.add("imports", "FAIL", "; ".join(problems),
                   "the device has only Python 3.6's standard library and {}; remove these imports or "
                   "ship the code inside the archive, and fix what does not parse".format(
                       ", ".join(sorted(DEVICE_PACKAGES))))
    else:
        report.add("imports", "PASS", "only the standard library, the device's packages and the "
                   "archive's own modules")
    if optional:
        report.add("optional imports", "WARN", "guarded by try/except, absent on the device: {}".format(
            _listed(map(_import_shown, optional))), "make sure the fallback path is the one you tested")
    if scan.dynamic:
        report.add("dynamic imports", "WARN", "{} cannot be checked before the run: {}".format(
            len(scan.dynamic), "; ".join("{} ({})".format(item, item.reason) for item in scan.dynamic[:SHOWN])
            + (" ..." if len(scan.dynamic) > SHOWN else "")),
            "import by name (import x) or pass a constant name, so the check can see it, or make sure "
            "every module it may load is in the archive or on the device")


_INDEXES = {}  # the device API index by cache folder: a package build runs presubmit once per package


def device_api_index():
    """The index of the device's wheels (fetched and built on first use), or a DeviceApiError."""
    if DEFAULT_CACHE not in _INDEXES:
        _INDEXES[DEFAULT_CACHE] = load_index(DEFAULT_CACHE, fetch=True, progress=False)
    return _INDEXES[DEFAULT_CACHE]


def check_device_api(folder, report):
    """Every torch/torchvision/numpy/PIL/imageio name and keyword must exist in the device's versions.

    A use the device's wheels lack, or a file that does not parse (so was not checked), is a FAIL
    with file:line (a use under hasattr/getattr or try/except is guarded and passes); when the
    wheels cannot be fetched the check is a WARN.
    """
    try:
        index = device_api_index()
    except DeviceApiError as error:
        report.add("device API", "WARN", "not checked: {}".format(error),
                   "run lowpower device-api fetch once with access to PyPI")
        return
    try:
        findings = check_paths([str(folder)], index)
    except CheckError as error:  # an archive with no .py file: nothing to check is no pass
        report.add("device API", "FAIL", "not checked: {}".format(error), "ship the program's .py sources")
        return
    where = lambda item: "{}:{}".format(item.file[len(str(folder)) + 1:], item.line)  # noqa: E731
    missing = ["{} {}".format(where(item), item.name) for item in findings if item.status == "missing"]
    unparsable = [where(item) for item in findings if item.status == "unparsable"]
    versions = ", ".join("{} {}".format(name, version) for name, version in sorted(index["packages"].items()))
    if missing or unparsable:
        parts = (["the device lacks: {}".format(_listed(missing))] if missing else []) + (
            ["does not parse, so not checked: {}".format(_listed(unparsable))] if unparsable else [])
        report.add("device API", "FAIL", "; ".join(parts),
                   "the device has {}; use what they have, or guard the newer API with hasattr/getattr or "
                   "try/except (lowpower device-api check FILE lists every use)".format(versions))
    else:
        guarded = sum(item.status == "guarded" for item in findings)
        report.add("device API", "PASS", "every name and keyword exists in {} ({} guarded; numpy's C-level "
                   "names are not in its wheel and stay unchecked)".format(versions, guarded))
