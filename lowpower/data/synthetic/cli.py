"""lowpower data synthetic: write the built-in synthetic LPCVC data set."""
import argparse
import sys

from lowpower.data.synthetic import ForeignFilesError, generate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="lowpower data synthetic",
        description="Generate procedural 14-class aerial disaster scenes in the LPCVC folder layout "
                    "(LPCVC_Train/{IMG,GT}/train, LPCVC_Val/{IMG,GT}/val, test/{IMG,GT}). "
                    "GT PNGs are 1-channel class ids 0..13. Same seed, same files.")
    parser.add_argument("--out", required=True, help="destination folder, e.g. data/synthetic")
    parser.add_argument("--train", type=int, default=300, help="training images (default 300)")
    parser.add_argument("--val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--test", type=int, default=50, help="test images, referee layout (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    for name in ("train", "val", "test"):
        if getattr(args, name) < 0:
            sys.exit("--%s must be 0 or more, got %d" % (name, getattr(args, name)))
    try:
        out = generate(args.out, args.train, args.val, args.test, args.seed, args.size, args.workers)
    except ForeignFilesError as error:
        sys.exit("lowpower data synthetic: error: %s" % error)
    print("wrote %d train, %d val, %d test images to %s" % (args.train, args.val, args.test, out),
          file=sys.stderr)
