"""``lowpower device-api``: fetch the device's wheels and index them, or check sources.

Example:
    lowpower device-api fetch                       # once; later runs use the cache
    lowpower device-api check networks solution evaluation solution.pyz
"""
import argparse
import json
import sys

from lowpower.ship.device_api import DeviceApiError
from lowpower.ship.device_api.check import FAILING, CheckError, check_paths, partial_note
from lowpower.ship.device_api.check_resolve import version
from lowpower.ship.device_api.fetch import DEFAULT_CACHE
from lowpower.ship.device_api.index import load_index

DESCRIPTION = """\
Check device-side code against the APIs of the device's own torch, torchvision, numpy, Pillow and
imageio (read from their wheels, downloaded once into a cache), not against what runs here.

  fetch   download the wheels (about 90 MB, once), record their sha256, build the index.
  check   look up every name and call keyword rooted at an import of those packages; print each use
          the device lacks, and each file that does not parse, as file:line: name: reason, then a
          summary. Exit 1 when anything is missing or a file does not parse (it could not be
          checked), 0 when not, 2 for a bad path, a path with no .py file, or a failed fetch.

A use under a feature test (hasattr, getattr with a default, try/except AttributeError,
ImportError or TypeError) is guarded, not missing. This checks names and keywords only, not
behaviour. numpy's C-level names are in no .py file, so numpy is checked only where its .py
files define names.
"""


def _index_api():
    """The FETCH + INDEX half: ``(load_index, DEFAULT_CACHE, DeviceApiError)`` (tests stand in for it)."""
    return load_index, DEFAULT_CACHE, DeviceApiError


def parse_fetch(argv):
    parser = argparse.ArgumentParser(prog="lowpower device-api fetch", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="cache folder (default: lowpower.ship.device_api.DEFAULT_CACHE)")
    return parser.parse_args(argv)


def parse_check(argv):
    parser = argparse.ArgumentParser(prog="lowpower device-api check", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a folder, a .py file or a .pyz archive")
    parser.add_argument("--cache", help="cache folder; fetched there first if it holds no index")
    parser.add_argument("--index", help="an index.json to use as is, instead of the cache (offline, tests)")
    parser.add_argument("--show-guarded", action="store_true", help="also list guarded and unverified uses")
    return parser.parse_args(argv)


def load(args):
    """The index: ``--index`` as is, or the cache's, fetched on first use."""
    if getattr(args, "index", None):
        with open(args.index) as handle:
            return json.load(handle)
    load_index, default_cache, _ = _index_api()
    return load_index(args.cache or default_cache, fetch=True, progress=True)


def run_check(args, index):
    """Print the findings and the summary; return the exit code."""
    findings = check_paths(args.paths, index)
    counts = {status: sum(1 for f in findings if f.status == status)
              for status in ("missing", "guarded", "unverified", "unparsable")}
    for finding in findings:
        if finding.status in FAILING:
            print(finding)
        elif args.show_guarded:
            print("{} [{}]".format(finding, finding.status))
    packages = ", ".join(version(index, name) for name in sorted(index.get("packages", {})))
    note = partial_note(index)
    files = "{} file{}".format(findings.files, "" if findings.files == 1 else "s")
    unparsable = ", {} not parsed (not checked)".format(counts["unparsable"]) if counts["unparsable"] else ""
    print("device API check: {} against {}: {missing} missing, {guarded} guarded, {unverified} unverified{}{}."
          .format(files, packages or "an empty index", unparsable, "; " + note if note else "", **counts))
    return 1 if any(counts[status] for status in FAILING) else 0


def _errors():
    """What a command turns into a one-line error and exit status 2."""
    return (CheckError, OSError, ValueError, _index_api()[2])


def main_fetch(argv=None):
    """``lowpower device-api fetch``: download the wheels once and index them; returns the exit code."""
    args = parse_fetch(argv)
    try:
        load_index, default_cache, _ = _index_api()
        cache = args.cache or default_cache
        index = load_index(cache, fetch=True, progress=True)
    except _errors() as error:
        print("lowpower device-api fetch: {}".format(error), file=sys.stderr)
        return 2
    print("index: {}/index.json".format(cache))
    for name in sorted(index.get("packages", {})):
        print("  {}".format(version(index, name)))
    return 0


def main_check(argv=None):
    """``lowpower device-api check``: exit code 0 pass, 1 missing uses or unparsable files, 2 error
    (a bad path, a path without .py files, no index: nothing checked), printed as one line."""
    args = parse_check(argv)
    try:
        return run_check(args, load(args))
    except _errors() as error:
        print("lowpower device-api check: {}".format(error), file=sys.stderr)
        return 2
