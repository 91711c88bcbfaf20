"""Inspect and run a package: the one home of the import scan, the vermin check and the pyz run.

The packager's verification, presubmit and ``lowpower bench solution`` all go through here, so a rule about
what a submission may import, or how the referee starts it, is written once.

- ``scan_folder``: every import of every ``.py`` file, guarded by ``try/except ImportError`` or
  not, and every dynamic import whose target the source does not show (a dynamic import of a
  string literal is resolved and reported as an ordinary import); ``device_has`` judges them.
- ``vermin_check``: vermin with ``evaluation.contract.VERMIN_FLAGS``, violations as ``file:L3 ...``.
- ``run_pyz``: the referee's command in its own process group, peak memory sampled -> ``PyzRun``
  (written in ``lowpower.ship.runner``, imported from here).
"""
import ast
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.contract import DEVICE_PACKAGES, VERMIN_FLAGS

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
# What an except clause must name for the import above it to be optional.
CATCHES_IMPORT_ERROR = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
# Calls that import a module named by their first argument: a literal name can be checked.
IMPORT_BY_NAME = {"import_module", "__import__", "run_module"}
# Calls that load code from a file path: inside a zip there is no such file, so always worth a look.
LOAD_FROM_PATH = {"spec_from_file_location", "spec_from_loader", "SourceFileLoader", "SourcelessFileLoader",
                  "ExtensionFileLoader", "load_source", "load_compiled", "load_dynamic", "load_module",
                  "run_path"}
IMPORT_MODULES = {"importlib", "importlib.util", "importlib.machinery", "imp", "runpy"}


def device_has(module):
    """True when the top-level ``module`` exists on the device (3.6 stdlib or DEVICE_PACKAGES)."""
    top = module.split(".")[0]
    return top in STDLIB_36 or top in DEVICE_PACKAGES


# ----------------------------------------------------------------------------- import scan

@dataclass(frozen=True)
class Import:
    """One imported module: ``from .blocks import conv`` is module ``blocks``, level 1, names ``("conv",)``."""
    file: str
    line: int
    module: str
    names: tuple = ()
    level: int = 0
    guarded: bool = False  # in the body of a try whose handler catches ImportError
    dynamic: bool = False  # from importlib.import_module("literal") and the like

    @property
    def top(self):
        return self.module.split(".")[0]

    def __str__(self):
        return "{}:{} {}".format(self.file, self.line, "." * self.level + self.module)


@dataclass(frozen=True)
class DynamicImport:
    """A dynamic import whose target the source does not show, e.g. ``import_module("ti" + "mm")``."""
    file: str
    line: int
    call: str
    reason: str

    def __str__(self):
        return "{}:{} {}".format(self.file, self.line, self.call)


@dataclass
class Scan:
    """What ``scan_folder`` found: imports, dynamic imports, and files that do not parse."""
    files: list = field(default_factory=list)
    imports: list = field(default_factory=list)
    dynamic: list = field(default_factory=list)
    unparsable: list = field(default_factory=list)


def guarded(node, parents):
    """True when ``node`` sits in the body of a ``try`` whose handlers catch ImportError.

    Args:
        node: an ``ast`` node.
        parents: ``{child: parent}`` for the whole tree (see ``parent_map``).
    """
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.Try) and any(child is statement for statement in parent.body):
            for handler in parent.handlers:
                if handler.type is None:  # a bare except catches it too
                    return True
                caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if {getattr(item, "id", getattr(item, "attr", "")) for item in caught} & CATCHES_IMPORT_ERROR:
                    return True
        child = parent
    return False


def parent_map(tree):
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _dynamic_call(node, aliases):
    """The canonical name of a dynamic-import call (``import_module`` ...), or None."""
    function = node.func
    if isinstance(function, ast.Name):
        name = aliases.get(function.id, function.id if function.id == "__import__" else None)
    elif isinstance(function, ast.Attribute):
        name = function.attr
    else:
        return None
    return name if name in IMPORT_BY_NAME | LOAD_FROM_PATH else None


def scan_source(text, filename="<source>"):
    """``(imports, dynamic)`` of one file's source; raises SyntaxError when it does not parse.

    Example:
        >>> imports, dynamic = scan_source("import importlib\\nimportlib.import_module('ti' + 'mm')\\n")
        >>> [str(i) for i in imports], [str(d) for d in dynamic]
        (['<source>:1 importlib'], ["<source>:2 importlib.import_module('ti' + 'mm')"])
    """
    tree = ast.parse(text, filename=filename)
    parents = parent_map(tree)
    # from importlib import import_module as load  ->  load(...) is import_module(...)
    aliases = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module in IMPORT_MODULES for alias in node.names}
    imports, dynamic = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [Import(filename, node.lineno, alias.name, guarded=guarded(node, parents))
                        for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append(Import(filename, node.lineno, node.module or "", tuple(a.name for a in node.names),
                                  node.level, guarded(node, parents)))
        elif isinstance(node, ast.Call) and _dynamic_call(node, aliases):
            name = _dynamic_call(node, aliases)
            first = node.args[0] if node.args else None
            target = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
            if name in IMPORT_BY_NAME and target:
                stripped = target.lstrip(".")
                imports.append(Import(filename, node.lineno, stripped, level=len(target) - len(stripped),
                                      guarded=guarded(node, parents), dynamic=True))
                continue
            reason = ("loads code from a file path, which is inside the zip on the device"
                      if name in LOAD_FROM_PATH else "the module name is computed at run time")
            call = ast.unparse(node)
            dynamic.append(DynamicImport(filename, node.lineno, call if len(call) <= 70 else call[:67] + "...",
                                         reason))
    key = lambda item: (item.line, str(item))  # noqa: E731 -- ast.walk is breadth-first; report in file order
    return sorted(imports, key=key), sorted(dynamic, key=key)


def scan_folder(folder):
    """``Scan`` of every ``.py`` file under ``folder`` (a package's root), naming files relative to it."""
    folder = Path(folder)
    result = Scan(files=sorted(folder.rglob("*.py")))
    for path in result.files:
        relative = path.relative_to(folder).as_posix()
        try:
            imports, dynamic = scan_source(path.read_text(encoding="utf-8", errors="replace"), relative)
        except SyntaxError as error:
            result.unparsable.append("{}: {}".format(relative, error.msg))
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
