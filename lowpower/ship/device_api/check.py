"""Check device-side sources against the device's real torch/torchvision/numpy/PIL/imageio API.

Every import of a package the index knows, and every attribute chain rooted at such an import
(aliases followed: ``import torch.nn.functional as F`` makes ``F.interpolate`` mean
``torch.nn.functional.interpolate``), is looked up in the index built from the device's wheels;
every keyword of a call to such a chain is checked against the callee's parameters. A use the
device lacks is "missing", unless it sits under a feature test (``hasattr``/``getattr`` with a
default, ``try`` with an ``except AttributeError/ImportError/TypeError``), where it is "guarded".
Names the index cannot know (numpy's C-level names, members of a class with a base outside the
index) are "unverified". A file that does not parse is "unparsable": nothing in it was checked, so
it fails the check like a missing name, at the line of its syntax error. Paths that hold no ``.py``
file at all are a ``CheckError``: a check of nothing must not pass.

Example:
    >>> findings = check_paths(["networks", "solution.pyz"], load_index(DEFAULT_CACHE))  # doctest: +SKIP
    >>> [str(f) for f in findings if f.status == "missing"]  # doctest: +SKIP
    ["networks/x.py:12: torch.compile: the device's torch 1.10.2 has no torch.compile"]
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lowpower.safe import UserError
from lowpower.ship.device_api.check_visit import Checker

# The statuses that fail the check: a use the device lacks, and a file that could not be checked.
FAILING = ("missing", "unparsable")


@dataclass(frozen=True)
class Finding:
    """One use the device lacks or that could not be verified.

    file: the path (for an archive member ``archive.pyz/inner/file.py``); line: 1-based;
    name: the dotted name (aliases expanded) or ``name(keyword=)``, ``<syntax>`` for a file that
    does not parse; status: "missing", "unparsable", "guarded" or "unverified"; reason: a sentence
    naming the device's version, or the syntax error.
    """
    file: str
    line: int
    name: str
    status: str
    reason: str

    def __str__(self):
        return "{}:{}: {}: {}".format(self.file, self.line, self.name, self.reason)


class CheckError(UserError, ValueError):
    """A path that is not a folder, a ``.py`` file or a ``.pyz`` archive, or one with no ``.py`` file in it."""


class Findings(list):
    """A list of ``Finding``, plus ``files``: how many source files were read."""
    files = 0


def _python_files(path):
    """The ``.py`` sources one path holds, as ``[(display_name, source_bytes)]``.

    Args:
        path: a folder (searched recursively, hidden folders and ``__pycache__`` skipped), a ``.py``
            file or a ``.pyz`` archive (its ``.py`` members, read without extracting).

    Raises:
        CheckError: the path is none of these.
    """
    if path.is_dir():
        files = [file for file in sorted(path.rglob("*.py")) if not any(
            part.startswith(".") or part == "__pycache__" for part in file.relative_to(path).parts[:-1])]
        return [(str(file), file.read_bytes()) for file in files]
    if path.is_file() and path.suffix == ".py":
        return [(str(path), path.read_bytes())]
    if path.is_file() and path.suffix == ".pyz" and zipfile.is_zipfile(str(path)):
        with zipfile.ZipFile(str(path)) as archive:
            return [("{}/{}".format(path, member), archive.read(member))
                    for member in sorted(archive.namelist()) if member.endswith(".py")]
    raise CheckError("{}: not a folder, a .py file or a .pyz archive".format(path))


def iter_sources(paths):
    """Yield ``(display_name, source_bytes)`` for every ``.py`` under ``paths``.

    Args:
        paths: folders (searched recursively, hidden folders and ``__pycache__`` skipped), ``.py``
            files, or ``.pyz`` archives (their ``.py`` members are read without extracting).

    Raises:
        CheckError: for a path that is none of these, or one that holds no ``.py`` file (a check
            of nothing would pass); raised before anything is yielded.

    Example:
        >>> next(iter_sources(["evaluation"]))[0]  # doctest: +SKIP
        'evaluation/contract.py'
    """
    listed = [(Path(p), _python_files(Path(p))) for p in paths]
    if not listed:
        raise CheckError("no paths given: name the folders, .py files or .pyz archives to check")
    for path, files in listed:
        if not files:
            raise CheckError("{}: no .py files in it, so nothing was checked; name a folder, .py file "
                             "or .pyz archive that holds the device-side sources".format(path))
    for _, files in listed:
        yield from files


def check_source(source, file, index):
    """Check one module's source.

    Args:
        source: its text or bytes (bytes honour a coding cookie).
        file: the name findings carry.
        index: the loaded device API index.

    Returns:
        A list of ``Finding``, in line order. A file that does not parse gives one "unparsable"
        at the line of its error (nothing in it could be checked, so it fails the check).

    Example:
        >>> check_source("import torch\\ntorch.compile(m)\\n", "a.py", index)[0].name  # doctest: +SKIP
        'torch.compile'
    """
    checker = Checker(index)
    try:
        raw = checker.check(source)
    except (SyntaxError, ValueError) as error:  # ValueError: a NUL byte in the source
        message = getattr(error, "msg", None) or str(error)
        return [Finding(file, getattr(error, "lineno", None) or 1, "<syntax>", "unparsable",
                        "does not parse, so nothing in it was checked: {}; fix the syntax (the device "
                        "runs Python 3.6)".format(message))]
    return sorted((Finding(file, *item) for item in raw), key=lambda f: (f.line, f.name))


def check_paths(paths, index):
    """Check every ``.py`` under ``paths`` (folders, ``.py`` files, ``.pyz`` archives).

    Args:
        paths: what to check.
        index: the loaded device API index (``lowpower.ship.device_api.load_index``).

    Returns:
        ``Findings``: a list of ``Finding`` (missing, guarded and unverified), by file and line;
        ``.files`` says how many files were read.

    Raises:
        CheckError: a path that is not a folder, a ``.py`` file or a ``.pyz`` archive, or that
            holds no ``.py`` file.

    Example:
        >>> missing = [f for f in check_paths(["networks"], index) if f.status == "missing"]  # doctest: +SKIP
    """
    findings = Findings()
    for file, source in iter_sources(paths):
        findings.files += 1
        findings.extend(check_source(source, file, index))
    return findings


def partial_note(index):
    """The sentence saying which packages are checked only where their ``.py`` files define names."""
    partial = sorted(index.get("partial") or ())
    if not partial:
        return ""
    return ("{} checked only where {} .py files define names; C-level names are not verified".format(
        " and ".join(partial) + (" is" if len(partial) == 1 else " are"), "its" if len(partial) == 1 else "their"))
