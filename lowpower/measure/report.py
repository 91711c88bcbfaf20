"""What every report of the toolkit shares: the machine it ran on, the CSV writer, and matplotlib set up
for files only.

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


def write_csv(path, rows, fields):
    """Write ``rows`` (dicts) under the header ``fields``; keys outside ``fields`` are left out."""
    with open(str(path), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """``matplotlib.pyplot`` drawing to files (Agg): there is no display on clusters and CI.

    matplotlib is imported here, on first use, so that commands that draw nothing do not pay its
    start-up time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
