"""``python -m lowpower.data check ROOT``: see :mod:`lowpower.data.check`."""
import sys

from lowpower.data import check


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "check":
        print("usage: python -m lowpower.data check ROOT [--dataset lpcvc|synthetic|cityscapes] "
              "[--num-classes N] [--no-progress]\n"
              "Checks a data set before training (python -m lowpower.data check --help).", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return check.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
