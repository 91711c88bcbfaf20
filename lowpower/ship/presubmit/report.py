"""presubmit's table of checks, and the size units its rows and flags use.

Example:
    >>> report = Report()
    >>> report.add("stdout", "FAIL", "stdout is empty", "print the seconds")
    >>> report.failed[0]["check"], report.text().splitlines()[-1]
    ('stdout', 'PRESUBMIT FAILED: 1 hard check failed (stdout)')
"""
import argparse
import re

RESULTS = ("PASS", "FAIL", "WARN", "INFO")


class Report:
    """The table of checks: rows of (check, result, detail, fix).

    FAIL: the referee would reject the submission or score it as invalid; WARN: legal but likely to
    score badly or to break on the device; INFO: numbers to know; PASS.
    """

    def __init__(self):
        self.rows = []

    def add(self, check, result, detail, fix=""):
        assert result in RESULTS, result
        self.rows.append({"check": check, "result": result, "detail": detail, "fix": fix})

    @property
    def failed(self):
        return [row for row in self.rows if row["result"] == "FAIL"]

    def rows_with(self, result):
        return [row for row in self.rows if row["result"] == result]

    def text(self):
        width = max(len(row["check"]) for row in self.rows)
        lines = ["{:<{}}  {:<6} {}".format("check", width, "result", "detail")]
        for row in self.rows:
            lines.append("{:<{}}  {:<6} {}".format(row["check"], width, row["result"], row["detail"]))
        fixes = [row for row in self.rows if row["fix"] and row["result"] in ("FAIL", "WARN")]
        if fixes:
            lines.append("")
            for row in fixes:
                lines.append("{} {}: {}".format(row["result"], row["check"], row["fix"]))
        lines.append("")
        if self.failed:
            lines.append("PRESUBMIT FAILED: {} hard check{} failed ({})".format(
                len(self.failed), "" if len(self.failed) == 1 else "s",
                ", ".join(row["check"] for row in self.failed)))
        else:
            lines.append("PRESUBMIT PASSED")
        return "\n".join(lines)


def parse_size(text):
    """Bytes from '1.5GiB', '1536MiB', '2GB', '800M', '1000000'.

    Example:
        >>> parse_size("1.5GiB")
        1610612736
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?)B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError("not a size: {!r} (examples: 1.5GiB, 800MiB)".format(text))
    number, prefix, binary = match.groups()
    base = 1024 if binary or not prefix else 1000
    exponent = " KMGT".index(prefix.upper() or " ")
    return int(float(number) * base ** exponent)


def mib(count):
    return "{:.1f} MiB".format(count / 2 ** 20)
