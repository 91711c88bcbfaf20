#!/usr/bin/env python3
"""Score a checkpoint with the referee's rules: see `python test.py --help`."""
import sys

from lowpower.train.tester import main

if __name__ == "__main__":
    sys.exit(main())
