"""lowpower data synthetic: write the built-in synthetic LPCVC data set.

    lowpower data synthetic --out data/synthetic --train 300 --val 50 --test 50

It writes only into a new or empty folder, or into one it made itself with the same parameters
(a half-made set is finished, a finished one left alone); anything else is refused in one line.
"""
import argparse
import os
import sys

from lowpower.data.synthetic import check_destination, generate
from lowpower.safe.bounds import bounded

# Bounds of the arguments, each with its reason (``lowpower.safe.bounds``).
COUNT = bounded(int, 0, 100000, "100000 images of 512x512 already take about 50 GB; 0 leaves a split empty")
SEED = bounded(int, 0, 2 ** 32 - 1, "numpy seeds are non-negative; 32 bits give plenty of data sets")
SIZE = bounded(int, 64, 4096, "the scenes' smallest objects need 64 pixels; a 4096x4096 image is 50 MB of pixels")
WORKERS = bounded(int, 1, 4 * (os.cpu_count() or 1), "more processes than 4 per core only contend")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower data synthetic",
        description="Generate procedural 14-class aerial disaster scenes in the LPCVC folder layout "
                    "(LPCVC_Train/{IMG,GT}/train, LPCVC_Val/{IMG,GT}/val, test/{IMG,GT}). "
                    "GT PNGs are 1-channel class ids 0..13. Same seed, same files. OUT must be new or empty, "
                    "or a folder this command made with the same parameters (its .complete marker records "
                    "them): nothing of anyone else's is overwritten, and two data sets never mix.")
    parser.add_argument("--out", required=True, help="destination folder, e.g. data/synthetic")
    parser.add_argument("--train", type=COUNT, default=300, help="training images (default 300)")
    parser.add_argument("--val", type=COUNT, default=50, help="validation images (default 50)")
    parser.add_argument("--test", type=COUNT, default=50, help="test images, referee layout (default 50)")
    parser.add_argument("--seed", type=SEED, default=0, help="data set seed (default 0)")
    parser.add_argument("--size", type=SIZE, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--workers", type=WORKERS, default=None, help="processes (default: all cores)")
    return parser.parse_args(argv)


def main(argv=None):
    """Generate as the arguments say; a refused folder raises ``ForeignFilesError`` (one line from ``lowpower``)."""
    args = parse_args(argv)
    params = dict(train=args.train, val=args.val, test=args.test, seed=args.seed, size=args.size)
    if check_destination(args.out, params) == "done":
        print("%s already holds this data set (%d train, %d val, %d test, seed %d, size %d): nothing to do"
              % (args.out, args.train, args.val, args.test, args.seed, args.size), file=sys.stderr)
        return 0
    out = generate(args.out, args.train, args.val, args.test, args.seed, args.size, args.workers)
    print("wrote %d train, %d val, %d test images to %s" % (args.train, args.val, args.test, out),
          file=sys.stderr)
    return 0
