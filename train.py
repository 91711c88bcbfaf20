#!/usr/bin/env python3
"""Train a segmentation network from a YAML config: see `python train.py --help`."""
import sys

from lowpower.cli import run

if __name__ == "__main__":
    sys.exit(run('train', sys.argv[1:]))
