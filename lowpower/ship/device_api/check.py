"""Check device-side sources against the device's real torch/torchvision/numpy/PIL/imageio API.

Every import of a package the index knows, and every attribute chain rooted at such an import
(aliases followed: ``import torch.nn.functional as F`` makes ``F.interpolate`` mean
``torch.nn.functional.interpolate``), is looked up in the index built from the device's wheels;
every keyword of a call to such a chain is checked against the callee's parameters. A use the
device lacks is "missing", unless it sits under a feature test (``hasattr``/``getattr`` with a
default, ``try`` with an ``except AttributeError/ImportError/TypeError``), where it is "guarded".
Names the index cannot know (numpy's C-level names, members of a class with a base outside the
index) are "unverified".

Example:
    >>> findings = check_paths(["networks", "solution.pyz"], load_index(DEFAULT_CACHE))  # doctest: +SKIP
    >>> [str(f) for f in findings if f.status == "missing"]  # doctest: +SKIP
    ["networks/x.py:12: torch.compile: the device's torch 1.10.2 has no torch.compile"]
"""
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lowpower.ship.device_api.check_visit import Checker


@dataclass(frozen=True)
class Finding:
    """One use the device lacks or that could not be verified.

    file: the path (for an archive member ``archive.pyz/inner/file.py``); line: 1-based;
    name: the dotted name (aliases expanded) or ``name(keyword=)``; status: "missing", "guarded"
    or "unverified"; reason: a sentence naming the device's version.
    """
    file: str
    line: int
    name: str
    status: str
    reason: str

    def __str__(self):
        return "{}:{}: {}: {}".format(self.file, self.line, self.name, self.reason)


class CheckError(ValueError):
    """A path that is not a folder, a ``.py`` file or a ``.pyz`` archive."""


class Findings(list):
    """A list of ``Finding``, plus ``files``: how many source files were read."""
    files = 0


def iter_sources(paths):
    """Yield ``(display_name, source_bytes)`` for every ``.py`` under ``paths``.

    Args:
        paths: folders (searched recursively, hidden folders and ``__pycache__`` skipped), ``.py``
            files, or ``.pyz`` archives (their ``.py`` members are read without extracting).

    Raises:
        CheckError: for a path that is none of these; raised before anything is yielded.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not (path.is_dir() or (path.is_file() and path.suffix == ".py")
                or (path.is_file() and path.suffix == ".pyz" and zipfile.is_zipfile(str(path)))):
            raise CheckError("{}: not a folder, a .py file or a .pyz archive".format(path))
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*.py")):
                inner = file.relative_to(path).parts[:-1]
                if not any(part.startswith(".") or part == "__pycache__" for part in inner):
                    yield str(file), file.read_bytes()
        elif path.suffix == ".pyz":
            with zipfile.ZipFile(str(path)) as archive:
                for member in sorted(archive.namelist()):
                    if member.endswith(".py"):
                        yield "{}/{}".format(path, member), archive.read(member)
        else:
            yield str(path), path.read_bytes()


def check_source(source, file, index):
    """Check one module's source.

    Args:
        source: its text or bytes (bytes honour a coding cookie).
        file: the name findings carry.
        index: the loaded device API index.

    Returns:
        A list of ``Finding``, in line order. A file that does not parse gives one "unverified".

    Example:
        >>> check_source("import torch\\ntorch.compile(m)\\n", "a.py", index)[0].name  # doctest: +SKIP
        'torch.compile'
    """
    checker = Checker(index)
    try:
        raw = checker.check(source)
    except (SyntaxError, ValueError) as error:
        return [Finding(file, getattr(error, "lineno", None) or 1, "<source>", "unverified",
                        "could not parse, so not checked: {}".format(error))]
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
        CheckError: a path that is not a folder, a ``.py`` file or a ``.pyz`` archive.

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
