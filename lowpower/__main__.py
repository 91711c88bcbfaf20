"""``python -m lowpower``: the same program as the ``lowpower`` command (see ``lowpower --help``)."""
import sys

from lowpower.cli import main

if __name__ == "__main__":
    sys.exit(main())
