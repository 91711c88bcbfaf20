#!/usr/bin/env python3
"""Score a checkpoint with the referee's rules: see `python test.py --help`."""
import sys

from lowpower.cli import run

if __name__ == "__main__":
    sys.exit(run('test', sys.argv[1:]))
