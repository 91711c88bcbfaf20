"""One safe writer: never onto an input, never over an existing file without ``--force``, atomic.

Every command that writes a file asks :func:`check_output` before any work is done, so a refusal costs
nothing, and writes through :func:`atomic_output`, so a killed command leaves either the old file or
the new one, never half of one, and no temporary file behind it.

Example:
    >>> out = check_output("runs/demo/int8_ptq.pt", inputs=["runs/demo/best.pt"], force=False)  # doctest: +SKIP
    >>> with atomic_output(out) as temp:  # doctest: +SKIP
    ...     torch.save(state, temp)
"""
import contextlib
import glob
import os
import tempfile
from pathlib import Path

from lowpower.safe import UserError

FORCE_HELP = "replace OUTPUT when it exists (never allowed when it is one of the inputs)"


class OutputError(UserError, ValueError):
    """An output path that would destroy something: an input, an existing file, a folder."""


def add_force_argument(parser, help=FORCE_HELP):
    """Add ``--force`` (replace an existing output) to an argparse parser."""
    parser.add_argument("--force", action="store_true", help=help)


def same_file(a, b):
    """True when paths ``a`` and ``b`` name one file (links and ``..`` followed)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(path, inputs=(), force=False, what="output", flag="--force"):
    """Refuse an output path that is an input, a folder, unwritable, or (without ``force``) an existing file.

    Args:
        path: the file the command will write.
        inputs: the files the command reads; the output may be none of them, even with ``force``.
        force: replacing an existing file (not an input) is allowed.
        what: what the output is, for the message ("output", "-o").
        flag: the option that allows replacing, named in the message.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: one line naming the file and the fix.

    Example:
        >>> check_output("best.pt", inputs=["./best.pt"])
        Traceback (most recent call last):
        ...
        lowpower.safe.write.OutputError: output best.pt is also this command's input ./best.pt; write to another file
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError("%s %s is also this command's input %s; write to another file" % (what, path, source))
    if path.is_dir():
        raise OutputError("%s %s is a folder; give a file name inside it, e.g. %s" % (what, path, path / "out"))
    if path.exists() and not force:
        raise OutputError("%s %s exists; pass %s to replace it, or write to another file" % (what, path, flag))
    folder = _existing_parent(path)
    if not folder.is_dir():
        raise OutputError("%s %s: %s is a file, not a folder" % (what, path, folder))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError("%s %s: cannot write in %s (permission denied); write somewhere else" % (what, path, folder))
    return path


def _existing_parent(path):
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def temp_pattern(path):
    """The glob of the temporary files :func:`atomic_output` makes for ``path`` (``NAME.*.tmp``)."""
    path = Path(path)
    return str(Path(glob.escape(str(path.parent))) / (glob.escape(path.name) + ".*.tmp"))


def remove_stale_temps(path):
    """Delete temporary files a killed write of ``path`` left; returns their paths.

    Only one lowpower process writes a given output, so any ``NAME.*.tmp`` beside it is garbage.
    """
    stale = sorted(Path(name) for name in glob.glob(temp_pattern(path)) if os.path.isfile(name))
    for name in stale:
        name.unlink()
    return stale


def default_mode():
    """The mode a new file gets under this process's umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path, mkdir=True):
    """Yield a temporary path beside ``path``; on success it becomes ``path``, on failure it is removed.

    The temporary file is ``NAME.<random>.tmp`` in the same folder (so the rename is atomic), made with
    the mode the umask gives a new file (``mkstemp`` alone would give 0600). Stale temporaries of
    the same name are removed first.

    Args:
        path: the final file.
        mkdir: create its folder when missing.

    Example:
        >>> with atomic_output("/tmp/lowpower-doc.txt") as temp:
        ...     _ = Path(temp).write_text("hello")
        >>> Path("/tmp/lowpower-doc.txt").read_text()
        'hello'
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    handle, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(handle)
    try:
        os.chmod(temp, default_mode())
        yield Path(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
