"""Inspect a package: the import scan, the device's modules and the vermin check.

The packager's walk of a model's imports, its verification and presubmit all go through here, so a
rule about what a submission may import is written once.

- ``scan_source``/``scan_folder``: every import of every ``.py`` file, guarded by ``try/except
  ImportError`` or not: the import statements (read by ``lowpower.ship.imports``) and the imports
  written as code (``exec("import x")``, ``__import__("x")``, ``importlib.import_module("x")``, their
  aliases; read by ``lowpower.ship.imports_as_code``, the one home of that rule), a resolved one as an
  ``Import`` with ``dynamic=True``, an unresolved one as a ``DynamicImport``; ``device_has`` judges them.
- ``vermin_check``: vermin with ``evaluation.contract.VERMIN_FLAGS``, violations as ``file:L3 ...``.

Running a package as the referee does is ``lowpower.ship.runner.run_pyz``.
"""
import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from evaluation.contract import DEVICE_PACKAGES, VERMIN_FLAGS
from lowpower.ship.imports import Scan, in_file_order, scan_statements
from lowpower.ship.imports_as_code import scan_as_code

# Standard library of Python 3.6: this interpreter's list, less what came later, plus what left since.
ADDED_AFTER_36 = {"contextvars", "_contextvars", "graphlib", "zoneinfo", "_zoneinfo", "tomllib",
                  "_tokenize", "_typing", "_posixshmem", "_xxsubinterpreters", "_xxinterpchannels",
                  "_interpreters", "_interpchannels", "_interpqueues", "_pylong", "_colorize",
                  "_pyrepl", "_opcode_metadata", "_suggestions", "_sysconfig", "_ios_support",
                  "_android_support", "_apple_support", "annotationlib", "compression", "_zstd",
                  "string.templatelib"}
REMOVED_SINCE_36 = {"formatter", "parser", "symbol", "macpath", "binhex", "dummy_threading",
                    "_dummy_thread", "asynchat", "asyncore", "smtpd", "imp", "distutils"}
STDLIB_36 = (set(getattr(sys, "stdlib_module_names", ())) - ADDED_AFTER_36) | REMOVED_SINCE_36 | {
    "__future__", "__main__"}


def device_has(module):
    """True when the top-level ``module`` exists on the device (3.6 stdlib or DEVICE_PACKAGES)."""
    top = module.split(".")[0]
    return top in STDLIB_36 or top in DEVICE_PACKAGES


# ----------------------------------------------------------------------------- import scan

def scan_source(text, filename="<source>"):
    """``(imports, dynamic)`` of one file's source; raises SyntaxError when it does not parse.

    The import statements are read by ``lowpower.ship.imports``, the imports written as code by
    ``lowpower.ship.imports_as_code``; both come back in one list, the second kind with ``dynamic=True``.

    Args:
        text: the source.
        filename: the name the findings carry.

    Returns:
        ``imports``: every ``Import``, in file order; ``dynamic``: every ``DynamicImport`` (an import
        written as code whose target the source does not show).

    Example:
        >>> imports, dynamic = scan_source("import importlib\\nimportlib.import_module('ti' + 'mm')\\n")
        >>> [str(i) for i in imports], [str(d) for d in dynamic]
        (['<source>:1 importlib'], ["<source>:2 importlib.import_module('ti' + 'mm')"])
    """
    tree = ast.parse(text, filename=filename)  # parsed once, read twice
    written, dynamic = scan_as_code(tree, filename)
    return sorted(scan_statements(tree, filename) + written, key=in_file_order), dynamic


def scan_folder(folder):
    """``Scan`` of every ``.py`` file under ``folder`` (a package's root), naming files relative to it.

    Args:
        folder: the package's root.

    Example:
        >>> scan = scan_folder("build/solution")  # doctest: +SKIP
        >>> scan.unparsable  # doctest: +SKIP
        ['helpers/broken.py: invalid syntax']
    """
    folder = Path(folder)
    result = Scan(files=sorted(folder.rglob("*.py")))
    for path in result.files:
        relative = path.relative_to(folder).as_posix()
        try:
            imports, dynamic = scan_source(path.read_text(encoding="utf-8", errors="replace"), relative)
        except (SyntaxError, ValueError) as error:  # ValueError: a null byte, on some Pythons
            result.unparsable.append("{}: {}".format(relative, getattr(error, "msg", error)))
            continue
        result.imports += imports
        result.dynamic += dynamic
    return result


def own_modules(folder):
    """Top-level names importable from the package itself (its root modules and folders)."""
    return {entry.stem if entry.suffix == ".py" else entry.name for entry in Path(folder).iterdir()
            if entry.suffix == ".py" or entry.is_dir()}


# ----------------------------------------------------------------------------- vermin

@dataclass
class VerminResult:
    """``ok`` is None when vermin is not installed; ``violations`` read ``file:L3 message``."""
    ok: object
    violations: list
    text: str


def vermin_check(folder, files=None):
    """Run vermin with the contract's flags over ``files`` (default: every .py under ``folder``).

    Example:
        >>> vermin_check("build/solution").ok  # doctest: +SKIP
        True
    """
    try:
        import vermin  # noqa: F401
    except ImportError:
        return VerminResult(None, [], "vermin is not installed (pip install vermin)")
    folder = Path(folder).resolve()
    targets = [str(Path(f).resolve().relative_to(folder)) for f in files] if files is not None else ["."]
    # vermin has no __main__; -vvv adds the line numbers the violations are reported with
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"] + list(VERMIN_FLAGS) + ["-vvv"]
    result = subprocess.run(command + targets, cwd=str(folder), capture_output=True, text=True, timeout=300)
    text = (result.stdout + result.stderr).strip()
    violations = vermin_violations(text, folder)
    return VerminResult(result.returncode == 0 and not violations, violations, text)


def vermin_violations(text, folder):
    """``'file:L3 named expressions require 3.8'`` lines from vermin -vvv output."""
    violations, current = [], "?"
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and str(folder) in line:
            current = line.split(str(folder), 1)[1].lstrip("/\\")
        elif line[0].isspace() and "require" in line:
            found = line.strip().replace("!2, ", "")
            location, _, message = found.partition(": ")
            if message:  # "L3 C4: ..." -> "file:L3 ..."
                violations.append("{}:{} {}".format(current, location.split()[0], message))
            else:
                violations.append("{}: {}".format(current, found))
    return violations
