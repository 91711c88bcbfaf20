"""What every report of the toolkit shares: the machine it ran on, the CSV and figure writers (atomic:
``lowpower.safe.write.atomic_output``), matplotlib set up for files only, and the check of a result
folder before any work (:func:`check_result_folder`).

Example:
    >>> import io, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.csv")
    >>> write_csv(path, [{"a": 1, "b": 2, "extra": 3}], ["a", "b"])
    >>> open(path).read().splitlines()
    ['a,b', '1,2']
"""
import csv
import os
import platform
from pathlib import Path

from lowpower.safe.write import OutputError, add_force_argument, atomic_output, check_output, same_file


def cpu_name():
    """The CPU model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1, 5 and 15 minute load averages as a string, or 'n/a'."""
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def add_markdown_output(parser):
    """``--md FILE`` and ``--force`` of a command that prints a Markdown table (see :func:`print_table`)."""
    parser.add_argument("--md", help="also write the table to this file")
    add_force_argument(parser, help="replace an existing --md file")


def print_table(text, path=None):
    """Print ``text`` and, when ``path`` is given, write it there atomically (``check_output`` it first,
    before the work that makes the table)."""
    print(text, end="")
    if path:
        with atomic_output(path) as temp:
            Path(temp).write_text(text)


def write_csv(path, rows, fields):
    """Write ``rows`` (dicts) under the header ``fields``, atomically; keys outside ``fields`` are left out."""
    with atomic_output(path) as temp:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def save_figure(figure, path, dpi=100):
    """``figure.savefig`` as a PNG, atomically (the temporary name ends in .tmp, so the format is named)."""
    with atomic_output(path) as temp:
        figure.savefig(str(temp), dpi=dpi, format="png")


def csv_header(path):
    """The first row of the CSV at ``path`` (a bounded read: any file may lie there), or None."""
    try:
        with open(path, newline="") as handle:
            return next(csv.reader([handle.readline(65536)]), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def check_result_folder(folder, inputs=(), force=False, products=(), results=(), header=None, flag="--force"):
    """Refuse, before any work, a result folder whose files would land on an input or on a user's file.

    A measuring command owns its ``--out`` folder: what it rebuilds on every run (``products``: its
    packages, the checkpoints it makes) is replaced, and its report (``results``, a CSV first) is
    replaced when that CSV is an earlier report of the same command (its header is ``header``), so a
    rerun updates the folder as before. A report file the command did not write is replaced only with
    ``force``; an input never, and the folder may be neither an input nor a file.

    Args:
        folder: the ``--out`` folder (made later when missing).
        inputs: the files and folders the command reads.
        force: replace report files the command did not write.
        products: names (inside ``folder``) of the files the command rebuilds on every run.
        results: names of its report files, the CSV first.
        header: the CSV's header row, which marks an earlier report of this command.
        flag: the option that allows replacing, named in the message.

    Returns:
        ``folder`` as a Path.

    Raises:
        OutputError: one line naming the file and the fix.

    Example:
        >>> check_result_folder("/tmp/no-such-sweep", inputs=["best.pt"], results=["sweep.csv"], header=["a"])
        PosixPath('/tmp/no-such-sweep')
    """
    folder = Path(folder)
    inputs = [Path(source) for source in inputs if source is not None]
    for source in inputs:
        if same_file(folder, source):
            raise OutputError("--out %s is also this command's input %s; give another folder" % (folder, source))
    if folder.exists() and not folder.is_dir():
        raise OutputError("--out %s is a file, not a folder; give a folder for the results" % folder)
    files = [source for source in inputs if not source.is_dir()]
    for name in products:
        check_output(folder / name, inputs=files, force=True)
    own = bool(results) and csv_header(folder / results[0]) == list(header or ())
    if results and (folder / results[0]).is_file() and not own and not force:
        raise OutputError("%s exists and is not a report of this command (its header differs); pass %s to "
                          "replace it, or give another --out" % (folder / results[0], flag))
    for name in results:
        check_output(folder / name, inputs=files, force=force or own, flag=flag)
    return folder


def pyplot():
    """``matplotlib.pyplot`` drawing to files (Agg): there is no display on clusters and CI.

    matplotlib is imported here, on first use, so that commands that draw nothing do not pay its
    start-up time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
